//! Recorded SQS and schedule events from `events/` through this crate's own handlers
//! (`handle_batch`, `handle_scheduled`), as the local runtime runs them. Every fixture,
//! with the outcome its `<case>.expected.json` states, is replayed through the Lambda
//! handlers in `shared/lambda/tests/fixtures.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use aos_entrypoints::SqsEvent;
use aos_entrypoints::schedule::{ScheduledTask, handle_scheduled};
use aos_entrypoints::sqs::handle_batch;
use aos_kernel::ports::{Inbox, TaskStore};
use aos_kernel::{TaskId, TaskStatus};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;

#[tokio::test]
async fn sqs_task_fixture_replays_once_and_dedupes_the_second_time() {
    let sys = common::system();
    let event: SqsEvent = serde_json::from_str(&common::fixture("sqs/new-task.json")).unwrap();
    // The API records a task before its envelope is sent; do the same here.
    let id: TaskId = "01JDA5V0K3Z8Q9WX7YB2M4N6PR".parse().unwrap();
    let body = event.records[0].body.clone().unwrap();
    let env = aos_kernel::Envelope::parse(&body).unwrap();
    sys.kernel
        .submit("primary", &env.body, Some(id))
        .await
        .unwrap();
    let (resp, report) = handle_batch(&sys.kernel, "primary", event.clone(), 5).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!(report.applied, 1);
    let (_, again) = handle_batch(&sys.kernel, "primary", event, 5).await;
    assert_eq!(
        again.duplicates, 1,
        "a redelivered record is not applied twice"
    );
    // primary delegated to both specialists exactly once.
    assert_eq!(sys.queues.depth("weather").await.unwrap(), 1);
    assert_eq!(sys.queues.depth("finance").await.unwrap(), 1);
    sys.drain().await;
    let task = sys.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}");
}

#[tokio::test]
async fn malformed_records_go_to_the_dead_letter_queue_and_are_acknowledged() {
    let sys = common::system();
    let event: SqsEvent = serde_json::from_str(&common::fixture("sqs/poison-body.json")).unwrap();
    let (resp, report) = handle_batch(&sys.kernel, "primary", event, 5).await;
    assert!(
        resp.batch_item_failures.is_empty(),
        "retrying cannot help; do not block the queue"
    );
    assert_eq!(report.dead_lettered, 3);
    let dl = sys.queues.dead_letters("primary", 10).await.unwrap();
    assert_eq!(dl.len(), 3);
    assert!(
        dl[0].reason.starts_with("envelope does not parse"),
        "{}",
        dl[0].reason
    );
    assert_eq!(dl[1].reason, "envelope is empty");
}

#[tokio::test]
async fn an_envelope_on_the_wrong_queue_is_dead_lettered_with_both_names() {
    let sys = common::system();
    let event: SqsEvent = serde_json::from_str(&common::fixture("sqs/wrong-queue.json")).unwrap();
    let (resp, report) = handle_batch(&sys.kernel, "primary", event, 5).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!(report.dead_lettered, 1);
    let dl = sys.queues.dead_letters("primary", 10).await.unwrap();
    assert_eq!(
        dl[0].reason,
        "envelope addressed to 'weather' arrived on the queue of 'primary'"
    );
}

#[tokio::test]
async fn schedule_fixture_submits_one_task_however_often_it_is_delivered() {
    let sys = common::system();
    let text = common::fixture("schedule/daily-briefing.json");
    let event: EventBridgeEvent<ScheduledTask> = serde_json::from_str(&text).unwrap();
    let first = handle_scheduled(&sys.kernel, event.clone()).await.unwrap();
    let second = handle_scheduled(&sys.kernel, event).await.unwrap();
    assert_eq!(first.id, second.id);
    assert_eq!(common::all_tasks(&sys).await.len(), 1);
    sys.drain().await;
    let task = sys.store.get_task(first.id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded);
    let answer = task.result.unwrap();
    assert!(
        answer.contains("- weather:") && answer.contains("- finance:"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_record_that_fails_on_its_last_receive_fails_its_task_with_the_reason() {
    use aos_entrypoints::sqs::{event, record};
    use aos_kernel::llm::{LlmError, ModelRequest, ModelResponse};
    use aos_kernel::testkit::{FnModel, MemSystem};
    let defs = ["name='solo'\npurpose='p'\nsystem_prompt='s'\n"];
    let agents = defs
        .iter()
        .map(|d| aos_kernel::AgentDef::from_toml(d).unwrap());
    let model = FnModel(|_: &ModelRequest| -> Result<ModelResponse, LlmError> {
        Err(LlmError::transient("503 from the provider"))
    });
    let sys = MemSystem::new(
        aos_kernel::Catalog::new(agents).unwrap(),
        aos_kernel::tools::ToolRegistry::new(),
        Some(std::sync::Arc::new(model)),
    );
    let task = sys.kernel.submit("solo", "hello", None).await.unwrap();
    for attempt in 1..=3u32 {
        let msgs = sys.queues.receive("solo", 10, 30_000).await.unwrap();
        assert_eq!(msgs.len(), 1, "attempt {attempt}");
        let m = &msgs[0];
        let ev = event(vec![record(
            &m.receipt,
            &m.body,
            &m.group,
            m.receive_count,
            m.sent_at,
            "arn",
        )]);
        let (resp, report) = handle_batch(&sys.kernel, "solo", ev, 3).await;
        if attempt < 3 {
            assert_eq!(
                resp.batch_item_failures.len(),
                1,
                "retried while attempts remain"
            );
            sys.queues.release("solo", &m.receipt, 0).await.unwrap();
        } else {
            assert!(resp.batch_item_failures.is_empty());
            assert_eq!(report.dead_lettered, 1);
            sys.queues.delete("solo", &m.receipt).await.unwrap();
        }
    }
    let t = sys.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(
        t.error.unwrap(),
        "gave up after 3 attempts: model: 503 from the provider"
    );
    assert_eq!(sys.queues.dead_letters("solo", 10).await.unwrap().len(), 1);
    assert_eq!(sys.queues.depth("solo").await.unwrap(), 0);
}
