//! An agent's SQS batch handler. Each record is one envelope; the kernel runs one wake
//! per record. The rule kept here: a record is reported failed only when retrying can
//! help; anything that can never be processed (text that is not an envelope, an
//! envelope for another agent) goes to the dead-letter queue with its reason and is
//! acknowledged, so one bad message never blocks its queue.
//!
//! FIFO order: records of one message group run in order, and once one fails, the
//! rest of its group in this batch are reported failed unprocessed (as Lambda requires
//! for FIFO queues). Different groups run concurrently.
//!
//! Under an invocation deadline ([`handle_batch_until`]) no record starts within the
//! margin of it: the unstarted records (and the rest of their groups) are reported
//! failed with a delay of 0, so they come back at once to the next invocation instead
//! of being cut off mid-wake by the Lambda timeout. So is a record whose wake failed
//! once the margin was reached without saying when to retry: its last model request
//! was cut short by the deadline, not refused by the provider.
//!
//! Observability: every wake runs in a `wake` span whose fields (`agent`,
//! `message_id`, then `task_id`, `tenant`, `envelope_id`, `trace_id` once the record
//! reads as an envelope) are on every line logged during it, ends with one `wake done`
//! line, and is reported in [`BatchReport::wakes`] with what it spent (model calls,
//! tokens, cost, AWS calls, duration) for the caller's metrics. Logs carry ids,
//! counts and the kernel's own words, never a body: a retry's reason is logged without
//! the provider's message, which may quote the prompt ([`loggable_reason`]).

use aos_kernel::model::Usage;
use aos_kernel::{Envelope, Kernel, Retry, WakeOutcome};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::future::join_all;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::Instrument;
use tracing::field::Empty;

tokio::task_local! {
    /// The AWS calls of the wake being polled (see [`count_aws_call`]).
    static AWS_CALLS: Arc<AtomicU64>;
}

/// Counts one AWS API call against the wake whose future is running, if any: the
/// Lambda's SDK clients call it from an interceptor. A task-local rather than a shared
/// counter, so wakes of different message groups that run concurrently in one batch
/// each count their own calls. Calls outside a wake (init, early releases) count
/// nowhere.
pub fn count_aws_call() {
    let _ = AWS_CALLS.try_with(|n| n.fetch_add(1, Ordering::Relaxed));
}

/// What happened to each record, for logs, metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub applied: usize,
    pub duplicates: usize,
    pub dead_lettered: usize,
    pub failed: usize,
    /// Failed records that should come back after a given delay (a provider's
    /// `retry-after`, or 0 to continue at once after an invocation deadline), by
    /// message id. The trigger releases them with that delay (ChangeMessageVisibility
    /// on AWS) instead of waiting out the visibility timeout. The records behind such
    /// a record in its group are listed with 0: they stay behind it (its group is
    /// locked while it is in flight) and must not hold the group up afterwards.
    pub retry_after_ms: Vec<(String, u64)>,
    /// Records not started because the invocation deadline was near (counted in
    /// `failed` too).
    pub unstarted: usize,
    /// One per record whose wake started, in the order they ended within each group.
    pub wakes: Vec<WakeReport>,
}

/// What one started record's wake did and spent: one metrics record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WakeReport {
    pub message_id: String,
    /// The envelope's task, id and trace id; `None` for a record that was not an
    /// envelope (it was dead-lettered).
    pub task_id: Option<String>,
    pub envelope_id: Option<String>,
    pub trace_id: Option<String>,
    pub result: WakeResult,
    /// SQS had delivered the record before (`ApproximateReceiveCount` > 1).
    pub redelivered: bool,
    /// Model calls answered during the wake, with their tokens and cost
    /// ([`Kernel::wake_metered`]); `wakes` is 0.
    pub usage: Usage,
    /// AWS API calls the wake made, as counted by [`count_aws_call`] (0 where nothing
    /// counts them, as in the local runtime).
    pub aws_calls: u64,
    /// From the start of the wake to its end, on the kernel's clock.
    pub duration_ms: u64,
    /// When it ended, ms since the epoch on the kernel's clock.
    pub ended_at_ms: u64,
}

/// How a started wake ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeResult {
    Applied,
    Duplicate,
    DeadLettered,
    /// The record is reported failed and comes back.
    Failed,
}

impl WakeResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::DeadLettered => "dead_lettered",
            Self::Failed => "failed",
        }
    }
}

impl BatchReport {
    /// The delay a failed record asked for, if any.
    pub fn delay_for(&self, message_id: &str) -> Option<u64> {
        self.retry_after_ms
            .iter()
            .find(|(id, _)| id == message_id)
            .map(|(_, ms)| *ms)
    }
}

/// The end of the invocation a batch runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    /// When the invocation ends, in wall-clock ms since the epoch (Lambda's
    /// `Lambda-Runtime-Deadline-Ms`), on the kernel's clock.
    pub at_ms: u64,
    /// No record starts later than this many ms before `at_ms`.
    pub margin_ms: u64,
}

impl Deadline {
    /// The last moment a record may start.
    pub fn start_by(&self) -> u64 {
        self.at_ms.saturating_sub(self.margin_ms)
    }
}

/// Handles one SQS batch for `agent` (the agent whose queue this is). `max_receives`
/// is the queue's redrive count: a record that still fails on its last receive is
/// dead-lettered here, with its task failed and the last error as the reason, rather
/// than left for the queue to park silently while its task waits forever.
pub async fn handle_batch(
    kernel: &Kernel,
    agent: &str,
    event: SqsEvent,
    max_receives: u32,
) -> (SqsBatchResponse, BatchReport) {
    handle_batch_until(kernel, agent, event, max_receives, None).await
}

/// [`handle_batch`] within an invocation that ends at `deadline`: no record starts
/// after [`Deadline::start_by`] (unless this is its last receive: then it gets its
/// last chance, and the kernel still starts no model step it has no time for), and
/// every wake gets the deadline, so none is killed between its model calls and its
/// commit.
pub async fn handle_batch_until(
    kernel: &Kernel,
    agent: &str,
    event: SqsEvent,
    max_receives: u32,
    deadline: Option<Deadline>,
) -> (SqsBatchResponse, BatchReport) {
    let mut groups: Vec<(String, Vec<SqsMessage>)> = Vec::new();
    for record in event.records {
        let group = record
            .attributes
            .get("MessageGroupId")
            .cloned()
            .unwrap_or_else(|| record.message_id.clone().unwrap_or_default());
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, v)) => v.push(record),
            None => groups.push((group, vec![record])),
        }
    }
    let chains = groups
        .into_iter()
        .map(|(_, records)| run_group(kernel, agent, records, max_receives, deadline));
    let mut response = SqsBatchResponse::default();
    let mut report = BatchReport::default();
    for (failures, r) in join_all(chains).await {
        response.batch_item_failures.extend(failures);
        report.applied += r.applied;
        report.duplicates += r.duplicates;
        report.dead_lettered += r.dead_lettered;
        report.failed += r.failed;
        report.unstarted += r.unstarted;
        report.retry_after_ms.extend(r.retry_after_ms);
        report.wakes.extend(r.wakes);
    }
    (response, report)
}

async fn run_group(
    kernel: &Kernel,
    agent: &str,
    records: Vec<SqsMessage>,
    max_receives: u32,
    deadline: Option<Deadline>,
) -> (Vec<BatchItemFailure>, BatchReport) {
    let mut failures = Vec::new();
    let mut report = BatchReport::default();
    // Set once a record of the group failed: whether it asked for a delay.
    let mut failed: Option<bool> = None;
    for record in records {
        let id = record.message_id.clone().unwrap_or_default();
        if let Some(delayed) = failed {
            if delayed {
                report.retry_after_ms.push((id.clone(), 0));
            }
            failures.push(failure(id));
            report.failed += 1;
            continue;
        }
        if let Some(d) = deadline
            && kernel.now_ms() >= d.start_by()
            && receive_count(&record) < max_receives
        {
            tracing::info!(agent, message_id = %id, "invocation deadline near; record not started");
            report.retry_after_ms.push((id.clone(), 0));
            failures.push(failure(id));
            report.failed += 1;
            report.unstarted += 1;
            failed = Some(true);
            continue;
        }
        let span = tracing::info_span!(
            "wake",
            agent,
            message_id = %id,
            task_id = Empty,
            tenant = Empty,
            envelope_id = Empty,
            trace_id = Empty,
        );
        let started = kernel.now_ms();
        let calls = Arc::new(AtomicU64::new(0));
        let woken = AWS_CALLS
            .scope(
                calls.clone(),
                handle_record(kernel, agent, &record, max_receives, deadline),
            )
            .instrument(span.clone())
            .await;
        let ended = kernel.now_ms();
        let result = match woken.outcome {
            Ok(Some(WakeOutcome::Applied { .. })) => {
                report.applied += 1;
                WakeResult::Applied
            }
            Ok(Some(WakeOutcome::Duplicate)) => {
                report.duplicates += 1;
                WakeResult::Duplicate
            }
            Ok(Some(WakeOutcome::DeadLettered { .. })) | Ok(None) => {
                report.dead_lettered += 1;
                WakeResult::DeadLettered
            }
            Err(Retry { reason, delay_ms }) => {
                // Failing once the deadline is near is the deadline's doing as a rule
                // (a model request cut short to end in time times out): the record
                // goes back at once rather than after the visibility timeout.
                let delay_ms = delay_ms.or_else(|| {
                    deadline
                        .filter(|d| kernel.now_ms() >= d.start_by())
                        .map(|_| 0)
                });
                span.in_scope(|| {
                    tracing::warn!(
                        reason = loggable_reason(&reason),
                        delay_ms,
                        "record failed; it will be retried"
                    );
                });
                if let Some(ms) = delay_ms {
                    report.retry_after_ms.push((id.clone(), ms));
                }
                failures.push(failure(id.clone()));
                report.failed += 1;
                failed = Some(delay_ms.is_some());
                WakeResult::Failed
            }
        };
        let wake = WakeReport {
            message_id: id,
            task_id: woken.envelope.as_ref().map(|e| e.task.to_string()),
            envelope_id: woken.envelope.as_ref().map(|e| e.id.to_string()),
            trace_id: woken.envelope.map(|e| e.trace_id),
            result,
            redelivered: receive_count(&record) > 1,
            usage: woken.usage,
            aws_calls: calls.load(Ordering::Relaxed),
            duration_ms: ended.saturating_sub(started),
            ended_at_ms: ended,
        };
        span.in_scope(|| {
            tracing::info!(
                outcome = result.as_str(),
                model_calls = wake.usage.llm_calls,
                aws_calls = wake.aws_calls,
                duration_ms = wake.duration_ms,
                "wake done"
            );
        });
        report.wakes.push(wake);
    }
    (failures, report)
}

pub use aos_kernel::kernel::loggable_reason;

/// A started record's wake: what became of it, what it spent, and the envelope it
/// carried (without its body) when it was one.
struct Woken {
    outcome: Result<Option<WakeOutcome>, Retry>,
    usage: Usage,
    envelope: Option<Envelope>,
}

/// How many times SQS has delivered the record, this time included.
fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// Runs one record in its `wake` span, which it fills in once the record reads as an
/// envelope. `Ok(None)`: the record was not an envelope for this agent and was
/// dead-lettered.
async fn handle_record(
    kernel: &Kernel,
    agent: &str,
    record: &SqsMessage,
    max_receives: u32,
    deadline: Option<Deadline>,
) -> Woken {
    let body = record.body.as_deref().unwrap_or_default();
    let mut woken = Woken {
        outcome: Ok(None),
        usage: Usage::default(),
        envelope: None,
    };
    let envelope = match Envelope::parse(body) {
        Ok(e) => e,
        Err(reason) => {
            woken.outcome = kernel.reject_raw(agent, body, &reason).await.map(|()| None);
            return woken;
        }
    };
    let span = tracing::Span::current();
    span.record("task_id", tracing::field::display(&envelope.task));
    span.record("tenant", envelope.tenant.as_str());
    span.record("envelope_id", tracing::field::display(&envelope.id));
    span.record("trace_id", envelope.trace_id.as_str());
    let mut head = envelope.clone();
    head.body = String::new();
    woken.envelope = Some(head);
    if envelope.to.as_str() != agent {
        let reason = format!(
            "envelope addressed to '{}' arrived on the queue of '{agent}'",
            envelope.to
        );
        woken.outcome = kernel
            .dead_letter(agent, &envelope, reason)
            .await
            .map(|_| None);
        return woken;
    }
    let receives = receive_count(record);
    // Only the last allowed receive needs the envelope again after the wake.
    let last_chance = (receives >= max_receives).then(|| envelope.clone());
    let (outcome, usage) = kernel
        .wake_metered(envelope, deadline.map(|d| d.at_ms), receives <= 1)
        .await;
    woken.usage = usage;
    woken.outcome = match (outcome, last_chance) {
        (Ok(outcome), _) => Ok(Some(outcome)),
        (Err(retry), Some(envelope)) => {
            let reason = format!("gave up after {receives} attempts: {}", retry.reason);
            kernel.dead_letter(agent, &envelope, reason).await.map(Some)
        }
        (Err(retry), None) => Err(retry),
    };
    woken
}

fn failure(id: String) -> BatchItemFailure {
    let mut f = BatchItemFailure::default();
    f.item_identifier = id;
    f
}

/// Builds the SQS record Lambda would deliver for a message: the local runtime uses it
/// so both paths run the same handler.
pub fn record(
    message_id: &str,
    body: &str,
    group: &str,
    receive_count: u32,
    sent_at: u64,
    queue_arn: &str,
) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(message_id.to_string());
    m.receipt_handle = Some(message_id.to_string());
    m.body = Some(body.to_string());
    m.attributes
        .insert("MessageGroupId".into(), group.to_string());
    m.attributes
        .insert("ApproximateReceiveCount".into(), receive_count.to_string());
    m.attributes
        .insert("SentTimestamp".into(), sent_at.to_string());
    m.event_source = Some("aws:sqs".into());
    m.event_source_arn = Some(queue_arn.to_string());
    m
}

/// An SQS event of `records`.
pub fn event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = records;
    e
}

#[cfg(test)]
mod tests {
    use super::loggable_reason;

    #[test]
    fn a_logged_reason_keeps_the_status_and_drops_the_providers_message() {
        assert_eq!(
            loggable_reason(
                "model: openai:gpt-4o: openai HTTP 500 (server_error): cannot serve <the prompt>"
            ),
            "model: openai:gpt-4o: openai HTTP 500 (server_error)"
        );
        assert_eq!(
            loggable_reason("model: anthropic HTTP 529: Overloaded"),
            "model: anthropic HTTP 529"
        );
        let own = "the invocation deadline is near; the wake goes on in the next invocation";
        assert_eq!(loggable_reason(own), own);
        assert_eq!(loggable_reason(&"x".repeat(1000)).len(), 300);
    }
}
