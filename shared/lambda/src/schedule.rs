//! The scheduler function: an EventBridge Scheduler firing (its target `Input`, in the
//! shape `aos_entrypoints::schedule` documents) becomes one task. The rule kept here:
//! one firing is one task however often it is delivered or retried, because the task
//! id comes from the schedule and the scheduled time, never from the per-attempt
//! execution id; a retry finds the task and only makes sure its first envelope is sent.

use crate::WakeError;
use aos_entrypoints::schedule::{ScheduledTask, handle_scheduled};
use aos_kernel::{Kernel, TaskId, TaskStatus};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::LambdaEvent;
use serde::Serialize;

/// What a firing submitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Submitted {
    pub task: TaskId,
    pub agent: String,
    pub status: TaskStatus,
}

/// The Lambda handler. A bad payload (unknown agent, empty input) is `Terminal`: the
/// firing goes to the schedule's dead-letter queue after its retries, with the reason.
pub async fn handle(
    kernel: &Kernel,
    event: LambdaEvent<EventBridgeEvent<ScheduledTask>>,
) -> Result<Submitted, WakeError> {
    let (payload, _context) = event.into_parts();
    let schedule = payload
        .resources
        .as_ref()
        .and_then(|r| r.first().cloned())
        .unwrap_or_default();
    let task = handle_scheduled(kernel, payload).await.map_err(|e| {
        let e = WakeError::from(e);
        tracing::error!(%schedule, error = %e, kind = e.error_type(), "scheduled task not submitted");
        e
    })?;
    tracing::info!(%schedule, task = %task.id, agent = %task.agent, "scheduled task submitted");
    Ok(Submitted {
        task: task.id,
        agent: task.agent.to_string(),
        status: task.status,
    })
}
