//! [`EventSchedules`]: the `Schedules` port on EventBridge Scheduler. Each schedule is
//! one EventBridge schedule in one group, whose target is the scheduler function; each
//! firing invokes it with the payload `aos_entrypoints::schedule` documents, and it
//! submits the task.
//!
//! The service keeps everything: the schedule's name says whose it is
//! (`<tenant>.<id>`, see [`schedule_name`]) and its target input carries the rest
//! ([`ScheduledTask`]), so there is no second copy to drift. Listing a tenant's
//! schedules is a `ListSchedules` by name prefix plus one `GetSchedule` each (the list
//! does not return inputs); a tenant has few schedules, and listing is rare.

use crate::error::{is_code, sdk_error};
use aos_kernel::ports::PortError;
use aos_kernel::schedules::{Schedule, ScheduledTask, Schedules, When};
use async_trait::async_trait;
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::error::ProvideErrorMetadata;
use aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode, Target,
};

/// Where task schedules live and what they invoke, from the environment the SAM
/// template sets for the api function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskScheduleSettings {
    /// `AOS_TASK_SCHEDULE_GROUP`: the schedule group (the api function may manage
    /// schedules in this group only).
    pub group: String,
    /// `AOS_SCHEDULER_FUNCTION_ARN`: the scheduler function every firing invokes.
    pub target_arn: String,
    /// `AOS_TASK_SCHEDULE_ROLE_ARN`: the role EventBridge Scheduler assumes to invoke it.
    pub role_arn: String,
    /// `AOS_SCHEDULE_DLQ_ARN`: where firings that could not be delivered go.
    pub dead_letter_arn: Option<String>,
}

impl Default for TaskScheduleSettings {
    /// Names that work against an emulator, which stores schedules and never fires
    /// them; on AWS the template sets every one.
    fn default() -> Self {
        Self {
            group: "aos-tasks".into(),
            target_arn: "arn:aws:lambda:us-east-1:123456789012:function:aos-scheduler".into(),
            role_arn: "arn:aws:iam::123456789012:role/aos-task-schedules".into(),
            dead_letter_arn: None,
        }
    }
}

/// EventBridge Scheduler takes at most this much target input.
const INPUT_LIMIT: usize = 8192;
/// A schedule name is at most this long.
const NAME_LIMIT: usize = 64;
/// A description is at most this long.
const DESCRIPTION_LIMIT: usize = 512;

/// The EventBridge schedule of `(tenant, id)`: `<tenant>.<id>`. A tenant name never
/// holds a `.`, so the prefix `<tenant>.` selects that tenant's schedules exactly
/// (and never the `aos-<envelope>` wake-ups). A tenant too long for the 64-character
/// name is replaced by a hash of it; the tenant inside the input decides either way.
pub fn schedule_name(tenant: &str, id: &str) -> String {
    format!("{}{id}", name_prefix(tenant, id.len()))
}

fn name_prefix(tenant: &str, id_len: usize) -> String {
    if tenant.len() + 1 + id_len <= NAME_LIMIT {
        format!("{tenant}.")
    } else {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in tenant.as_bytes() {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("h{hash:016x}.")
    }
}

/// A schedule id made by the server: a ULID (26 characters).
const ID_LEN: usize = 26;

/// The scheduler target `Input` of every firing of `s`: an EventBridge event whose
/// context attributes the service fills in.
pub fn target_input(s: &Schedule) -> Result<String, PortError> {
    let input = serde_json::json!({
        "id": "<aws.scheduler.execution-id>",
        "time": "<aws.scheduler.scheduled-time>",
        "resources": ["<aws.scheduler.schedule-arn>"],
        "source": "aos.scheduler",
        "detail-type": "Scheduled Task",
        "detail": ScheduledTask::of(s),
    })
    .to_string();
    if input.len() > INPUT_LIMIT {
        return Err(PortError::Rejected(format!(
            "the schedule's input is too large: {} bytes with its envelope, EventBridge \
             Scheduler takes {INPUT_LIMIT}; shorten the input",
            input.len()
        )));
    }
    Ok(input)
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Task schedules on EventBridge Scheduler.
#[derive(Clone)]
pub struct EventSchedules {
    client: Client,
    settings: TaskScheduleSettings,
}

impl std::fmt::Debug for EventSchedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSchedules")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn not_found<E: ProvideErrorMetadata>(e: &E) -> bool {
    is_code(e.code(), &["ResourceNotFoundException"])
}

impl EventSchedules {
    pub fn new(client: Client, settings: TaskScheduleSettings) -> Self {
        Self { client, settings }
    }

    pub fn settings(&self) -> &TaskScheduleSettings {
        &self.settings
    }

    /// The schedule named `name`, if it exists and belongs to `tenant`.
    async fn read(&self, tenant: &str, name: &str) -> Result<Option<Schedule>, PortError> {
        match self
            .client
            .get_schedule()
            .group_name(&self.settings.group)
            .name(name)
            .send()
            .await
        {
            Ok(out) => decode(name, &out).map(|s| s.filter(|s| s.tenant == tenant)),
            Err(e) if e.as_service_error().is_some_and(not_found) => Ok(None),
            Err(e) => Err(sdk_error("Scheduler GetSchedule", e)),
        }
    }
}

/// The schedule behind a `GetSchedule` answer; `None` for one not made through the
/// port (no schedule id in its input), which is not listed.
fn decode(name: &str, out: &GetScheduleOutput) -> Result<Option<Schedule>, PortError> {
    let corrupt = |why: String| PortError::Corrupt(format!("schedule {name}: {why}"));
    let Some(input) = out.target().and_then(|t| t.input()) else {
        return Ok(None);
    };
    let event: serde_json::Value =
        serde_json::from_str(input).map_err(|e| corrupt(format!("input is not JSON: {e}")))?;
    let Some(detail) = event.get("detail") else {
        return Ok(None);
    };
    let task: ScheduledTask = serde_json::from_value(detail.clone())
        .map_err(|e| corrupt(format!("input is not a scheduled task: {e}")))?;
    if task.schedule.is_none() {
        return Ok(None);
    }
    let expression = out.schedule_expression().unwrap_or_default();
    let when = When::parse(expression).map_err(|e| corrupt(e.to_string()))?;
    let created = out
        .creation_date()
        .map(|d| u64::try_from(d.to_millis().unwrap_or(0)).unwrap_or(0))
        .unwrap_or(0);
    task.to_schedule(when, created)
        .map(Some)
        .ok_or_else(|| corrupt(format!("agent {:?} is not a valid name", task.agent)))
}

#[async_trait]
impl Schedules for EventSchedules {
    async fn create(&self, s: &Schedule) -> Result<(), PortError> {
        let mut target = Target::builder()
            .arn(&self.settings.target_arn)
            .role_arn(&self.settings.role_arn)
            .input(target_input(s)?);
        if let Some(dlq) = &self.settings.dead_letter_arn {
            target = target.dead_letter_config(DeadLetterConfig::builder().arn(dlq).build());
        }
        let target = target
            .build()
            .map_err(|e| PortError::Rejected(format!("schedule target: {e}")))?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| PortError::Rejected(format!("schedule window: {e}")))?;
        let description = truncate(
            &format!(
                "AOS {} for {} (tenant {}, by {}): {}",
                s.kind.as_str(),
                s.agent.as_str(),
                s.tenant,
                s.created_by,
                s.input
            ),
            DESCRIPTION_LIMIT,
        );
        let after = if s.when.is_once() {
            ActionAfterCompletion::Delete
        } else {
            ActionAfterCompletion::None
        };
        match self
            .client
            .create_schedule()
            .name(schedule_name(&s.tenant, &s.id))
            .group_name(&self.settings.group)
            .schedule_expression(s.when.expression())
            .schedule_expression_timezone("UTC")
            .description(description)
            .flexible_time_window(window)
            .action_after_completion(after)
            .target(target)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error().is_some_and(|x| {
                    x.is_conflict_exception() || is_code(x.code(), &["ConflictException"])
                }) =>
            {
                Err(PortError::Rejected(format!(
                    "schedule {} exists already",
                    s.id
                )))
            }
            Err(e) => Err(sdk_error("Scheduler CreateSchedule", e)),
        }
    }

    async fn list(&self, tenant: &str) -> Result<Vec<Schedule>, PortError> {
        let prefix = name_prefix(tenant, ID_LEN);
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_schedules()
                .group_name(&self.settings.group)
                .name_prefix(&prefix)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error("Scheduler ListSchedules", e))?;
            names.extend(
                out.schedules()
                    .iter()
                    .filter_map(|s| s.name())
                    .filter(|n| n.starts_with(&prefix))
                    .map(str::to_string),
            );
            match out.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        let reads = names.iter().map(|n| self.read(tenant, n));
        let mut out = Vec::with_capacity(names.len());
        for read in futures::future::join_all(reads).await {
            if let Some(s) = read? {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Schedule>, PortError> {
        self.read(tenant, &schedule_name(tenant, id)).await
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<bool, PortError> {
        let name = schedule_name(tenant, id);
        // Read first: a hashed name must still be this tenant's.
        if self.read(tenant, &name).await?.is_none() {
            return Ok(false);
        }
        match self
            .client
            .delete_schedule()
            .group_name(&self.settings.group)
            .name(&name)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(not_found) => Ok(false),
            Err(e) => Err(sdk_error("Scheduler DeleteSchedule", e)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_keep_tenants_apart() {
        let id = "01JD6RAHC0ZDJ3BWNVND17WGSC";
        assert_eq!(schedule_name("acme", id), format!("acme.{id}"));
        let long = "a".repeat(64);
        let name = schedule_name(&long, id);
        assert!(name.len() <= NAME_LIMIT, "{name}");
        assert_ne!(name, schedule_name(&"b".repeat(64), id));
        assert!(!schedule_name("acme", id).starts_with(&name_prefix("acme-corp", ID_LEN)));
    }
}
