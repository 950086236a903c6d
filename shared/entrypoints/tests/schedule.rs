//! The scheduler handler with a tenant's firing payload (what `aos_aws::EventSchedules`
//! puts in a schedule's input): the task runs for that tenant with the kind's input,
//! and a retried firing (new execution id, same schedule and time) is the same task.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aos_entrypoints::schedule::{ScheduledTask, handle_scheduled};
use aos_kernel::TaskStatus;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde_json::json;

fn firing(execution: &str, time: &str) -> EventBridgeEvent<ScheduledTask> {
    serde_json::from_value(json!({
        "id": execution,
        "time": time,
        "resources": ["arn:aws:scheduler:us-east-1:123456789012:schedule/aos-tasks/acme.01JD6RAHC0ZDJ3BWNVND17WGSC"],
        "source": "aos.scheduler",
        "detail-type": "Scheduled Task",
        "detail": {
            "agent": "finance", "input": "convert 10 EUR to USD", "tenant": "acme",
            "kind": "wakeup", "schedule": "01JD6RAHC0ZDJ3BWNVND17WGSC",
            "created_by": "alice", "created_at": 1_700_000_000_000u64
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn a_tenants_firing_is_one_task_for_that_tenant() {
    let sys = common::system();
    let first = handle_scheduled(&sys.kernel, firing("exec-a", "2030-01-01T09:00:00Z"))
        .await
        .unwrap();
    let retry = handle_scheduled(&sys.kernel, firing("exec-b", "2030-01-01T09:00:00Z"))
        .await
        .unwrap();
    assert_eq!(first.id, retry.id, "a retried firing is the same task");
    assert_eq!(first.tenant, "acme");
    assert_eq!(first.input, "Scheduled wake-up: convert 10 EUR to USD");
    let next = handle_scheduled(&sys.kernel, firing("exec-c", "2030-01-02T09:00:00Z"))
        .await
        .unwrap();
    assert_ne!(next.id, first.id, "the next firing is a new task");
    assert_eq!(common::all_tasks(&sys).await.len(), 2);
    sys.drain().await;
    let done = sys
        .kernel
        .task_for("acme", first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded, "{done:?}");
    assert_eq!(
        sys.kernel.task_for("default", first.id).await.unwrap(),
        None
    );
}
