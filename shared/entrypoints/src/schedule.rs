//! EventBridge scheduled tasks: a schedule's payload names an agent and an input, and
//! each firing submits one task. EventBridge delivers at least once and Scheduler
//! retries a failed invocation, so the task id is derived from what every attempt of
//! one firing shares: the schedule (its ARN in `resources`) and the scheduled time. A
//! repeated delivery or a retry submits nothing new; the next firing is a new task.
//!
//! An EventBridge Scheduler schedule carries this shape in its target `Input`, with
//! context attributes filled in by the service:
//!
//! ```json
//! {"id": "<aws.scheduler.execution-id>", "time": "<aws.scheduler.scheduled-time>",
//!  "resources": ["<aws.scheduler.schedule-arn>"], "source": "aos.scheduler",
//!  "detail-type": "Scheduled Task", "detail": {"agent": "primary", "input": "..."}}
//! ```
//!
//! `detail` is a [`ScheduledTask`]. Schedules made through the API
//! (`aos_aws::EventSchedules`) also say whose they are and what they are, so they can
//! be listed back: `{"agent": "primary", "input": "...", "tenant": "acme", "kind":
//! "wakeup", "schedule": "<id>", "created_by": "<subject>", "created_at": <ms>}`. A
//! `wakeup` submits `Scheduled wake-up: <input>`; `tenant` defaults to `default` and
//! `kind` to `task`.
//!
//! The execution id differs on every attempt, so it names the task only when the
//! event has no `resources` (an EventBridge rule's event, whose id every retry keeps).

use aos_kernel::schedules::Schedule;
pub use aos_kernel::schedules::ScheduledTask;
use aos_kernel::{Kernel, Submission, SubmitError, Task, TaskId};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::Serialize;

/// Submits the task a schedule fired for.
pub async fn handle_scheduled(
    kernel: &Kernel,
    event: EventBridgeEvent<ScheduledTask>,
) -> Result<Task, SubmitError> {
    let id = firing_id(&event);
    if id.is_none() {
        tracing::warn!("scheduled event without a time or an id: its retries are new tasks");
    }
    let d = &event.detail;
    submit_as(kernel, &d.tenant, &d.agent, &d.task_input(), id).await
}

/// Submits the firing of `schedule` at slot `at_ms` (the embedded runtime's firing
/// loop): the task is named by the schedule id and the slot, so submitting one slot
/// again (after a crash before the slot was recorded as fired) is the same task.
pub async fn submit_firing(
    kernel: &Kernel,
    schedule: &Schedule,
    at_ms: u64,
) -> Result<Task, SubmitError> {
    let id = task_id_for(at_ms, &schedule.id);
    submit_as(
        kernel,
        &schedule.tenant,
        schedule.agent.as_str(),
        &schedule.task_input(),
        Some(id),
    )
    .await
}

/// The default tenant's firings get the derived id itself. Another tenant's are bound
/// to it through an idempotency key scoped to that tenant (the kernel makes the ids of
/// tenants' tasks), which gives a retried firing the same task all the same.
async fn submit_as(
    kernel: &Kernel,
    tenant: &str,
    agent: &str,
    input: &str,
    id: Option<TaskId>,
) -> Result<Task, SubmitError> {
    match id {
        Some(id) if tenant != "default" => {
            let key = format!("schedule-{id}");
            kernel
                .submit_for(Submission {
                    tenant,
                    agent,
                    input,
                    idempotency_key: Some(&key),
                })
                .await
                .map(|s| s.task)
        }
        id if tenant == "default" => kernel.submit(agent, input, id).await,
        _ => kernel
            .submit_for(Submission {
                tenant,
                agent,
                input,
                idempotency_key: None,
            })
            .await
            .map(|s| s.task),
    }
}

/// The task id of one firing: the scheduled time and the schedule's ARN (the event's
/// first resource), else its event id. `None` when the event has no time, or neither.
pub fn firing_id<T>(event: &EventBridgeEvent<T>) -> Option<TaskId>
where
    T: Serialize + serde::de::DeserializeOwned,
{
    let at = event.time?.timestamp_millis().max(0) as u64;
    let schedule = event
        .resources
        .as_ref()
        .and_then(|r| r.first())
        .filter(|r| !r.is_empty());
    let key = schedule.or(event.id.as_ref())?;
    Some(task_id_for(at, key))
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
