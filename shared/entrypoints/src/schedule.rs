//! EventBridge scheduled tasks: a schedule's payload names an agent and an input, and
//! each firing submits one task. EventBridge delivers at least once, so the task id is
//! derived from the event id and a repeated delivery submits nothing new.

use aos_kernel::{Kernel, SubmitError, Task, TaskId};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};

/// The `detail` (or Scheduler `Input`) of a scheduled task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledTask {
    #[serde(default = "default_agent")]
    pub agent: String,
    pub input: String,
}

fn default_agent() -> String {
    "primary".into()
}

/// Submits the task a schedule fired for.
pub async fn handle_scheduled(
    kernel: &Kernel,
    event: EventBridgeEvent<ScheduledTask>,
) -> Result<Task, SubmitError> {
    let at = event
        .time
        .map(|t| t.timestamp_millis().max(0) as u64)
        .unwrap_or_else(|| kernel.now_ms());
    let id = event.id.as_deref().map(|eid| task_id_for(at, eid));
    kernel
        .submit(&event.detail.agent, &event.detail.input, id)
        .await
}

/// A task id that is the same for every delivery of one event: the event's time, so
/// tasks still sort by creation, and an FNV-1a hash of the event id.
pub fn task_id_for(at_ms: u64, event_id: &str) -> TaskId {
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in event_id.as_bytes() {
        hash ^= u128::from(*b);
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
    }
    TaskId(ulid::Ulid::from_parts(at_ms, hash & ((1u128 << 80) - 1)))
}
