//! [`EventScheduler`]: one-time EventBridge Scheduler schedules that deliver a wake
//! envelope to its agent's FIFO queue, then delete themselves.
//!
//! The schedule is named after the envelope id, so scheduling twice is a
//! `ConflictException`, taken as success. Emulators store schedules but never fire
//! them; [`EventScheduler::deliver_due`] does the service's part for local runs.

use crate::error::{is_code, sdk_error};
use crate::s3::S3Blobs;
use crate::sqs::SqsQueues;
use aos_kernel::model::Envelope;
use aos_kernel::ports::{BlobStore, Clock, Mailbox, PortError, Scheduler};
use aos_kernel::schedules::When;
use async_trait::async_trait;
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::error::ProvideErrorMetadata;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, SqsParameters, Target,
};
use std::sync::Arc;

/// EventBridge Scheduler takes at most this much target input.
pub const INPUT_LIMIT: usize = 8192;

#[derive(Clone)]
pub struct EventScheduler {
    client: Client,
    queues: SqsQueues,
    blobs: S3Blobs,
    group: String,
    role_arn: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for EventScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventScheduler")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

/// `at(yyyy-mm-ddThh:mm:ss)` in UTC for epoch milliseconds, rounded down to the
/// second (the service's resolution).
pub fn at_expression(at_ms: u64) -> String {
    When::At(at_ms).expression()
}

/// The epoch milliseconds of an `at(...)` expression in UTC.
pub fn parse_at_expression(expr: &str) -> Option<u64> {
    if !expr.starts_with("at(") {
        return None;
    }
    match When::parse(expr) {
        Ok(When::At(ms)) => Some(ms),
        _ => None,
    }
}

/// The schedule of an envelope: its id is a ULID, so the name is unique and short.
pub fn schedule_name(envelope: &Envelope) -> String {
    format!("aos-{}", envelope.id)
}

impl EventScheduler {
    pub fn new(
        client: Client,
        queues: SqsQueues,
        blobs: S3Blobs,
        group: impl Into<String>,
        role_arn: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            client,
            queues,
            blobs,
            group: group.into(),
            role_arn: role_arn.into(),
            clock,
        }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// What EventBridge Scheduler does on AWS, for an emulator that stores schedules
    /// but never fires them: sends every schedule of the group due at `now_ms` to its
    /// target queue, then deletes it. Returns how many were delivered. A crash between
    /// the send and the delete sends again later, which the queue's deduplication (by
    /// envelope id) and the kernel's applied markers absorb.
    pub async fn deliver_due(&self, now_ms: u64) -> Result<usize, PortError> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_schedules()
                .group_name(&self.group)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error("Scheduler ListSchedules", e))?;
            names.extend(
                out.schedules()
                    .iter()
                    .filter_map(|s| s.name().map(str::to_string)),
            );
            match out.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        let mut delivered = 0;
        for name in names {
            let schedule = match self
                .client
                .get_schedule()
                .group_name(&self.group)
                .name(&name)
                .send()
                .await
            {
                Ok(s) => s,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    continue;
                }
                Err(e) => return Err(sdk_error("Scheduler GetSchedule", e)),
            };
            let due = schedule
                .schedule_expression()
                .and_then(parse_at_expression)
                .is_some_and(|at| at <= now_ms);
            if !due {
                continue;
            }
            let input = schedule
                .target()
                .and_then(|t| t.input())
                .unwrap_or_default();
            match Envelope::parse(input) {
                Ok(envelope) => {
                    self.queues_send(&envelope).await?;
                    delivered += 1;
                }
                Err(e) => {
                    tracing::warn!(schedule = %name, error = %e, "dropping a schedule whose input is not an envelope");
                }
            }
            match self
                .client
                .delete_schedule()
                .group_name(&self.group)
                .name(&name)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) => {}
                Err(e) => return Err(sdk_error("Scheduler DeleteSchedule", e)),
            }
        }
        Ok(delivered)
    }

    async fn queues_send(&self, envelope: &Envelope) -> Result<(), PortError> {
        self.queues.send(std::slice::from_ref(envelope)).await
    }
}

#[async_trait]
impl Scheduler for EventScheduler {
    async fn schedule(&self, at_ms: u64, envelope: &Envelope) -> Result<(), PortError> {
        // A wake-up already due (the outbox is flushed after the model's turn, or
        // re-sent after a crash) goes straight to the queue: a schedule in the past
        // would not fire. The queue deduplicates by envelope id as for any send.
        if at_ms <= self.clock.now_ms() {
            return self.queues_send(envelope).await;
        }
        let queue = self.queues.queue(envelope.to.as_str()).await?;
        let mut input = envelope.to_json();
        if input.len() > INPUT_LIMIT {
            let mut e = envelope.clone();
            // Not `bodies/`, which expires after 30 days: a wake-up may be a year out.
            let key = format!("wakes/{}", e.id);
            self.blobs.put(&key, e.body.as_bytes()).await?;
            e.body = String::new();
            e.body_ref = Some(key);
            input = e.to_json();
        }
        let target = Target::builder()
            .arn(queue.arn)
            .role_arn(&self.role_arn)
            .input(input)
            .sqs_parameters(
                SqsParameters::builder()
                    .message_group_id(envelope.session.as_str())
                    .build(),
            )
            .build()
            .map_err(|e| PortError::Rejected(format!("schedule target: {e}")))?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| PortError::Rejected(format!("schedule window: {e}")))?;
        match self
            .client
            .create_schedule()
            .name(schedule_name(envelope))
            .group_name(&self.group)
            .schedule_expression(at_expression(at_ms))
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .action_after_completion(ActionAfterCompletion::Delete)
            .target(target)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already scheduled under this envelope id: idempotent.
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_conflict_exception() || is_code(s.code(), &["ConflictException"])
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error("Scheduler CreateSchedule", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_expressions_round_trip() {
        assert_eq!(at_expression(0), "at(1970-01-01T00:00:00)");
        assert_eq!(at_expression(1_700_000_000_999), "at(2023-11-14T22:13:20)");
        assert_eq!(at_expression(951_782_400_000), "at(2000-02-29T00:00:00)");
        for ms in [0, 1_700_000_000_000, 951_782_400_000, 4_102_444_800_000] {
            assert_eq!(parse_at_expression(&at_expression(ms)), Some(ms));
        }
        assert_eq!(parse_at_expression("rate(5 minutes)"), None);
    }
}
