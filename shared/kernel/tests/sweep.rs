//! The sweep: what `recover()` does at a local start, run on a schedule on AWS, plus
//! the task deadline no envelope enforces. A task whose message is lost waits no
//! longer than its deadline, and a task recorded but never sent is sent again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_kernel::llm::{Content, LlmError, ModelRequest, ModelResponse, StopReason};
use aos_kernel::model::{AgentDef, EventKind, TaskStatus, Usage};
use aos_kernel::ports::{Inbox, TaskStore};
use aos_kernel::testkit::{FnModel, MemSystem};
use aos_kernel::tools::ToolRegistry;
use aos_kernel::{Catalog, SubmitError};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// One agent with a 60 s task limit whose model asks to be woken in an hour on its
/// first step (so the task waits on a wake that, in this test, never comes) unless the
/// request says "quick", and answers on any other step.
fn system() -> MemSystem {
    let def = AgentDef::from_toml(
        "name='sleeper'\npurpose='p'\nsystem_prompt='s'\n[budget]\ntimeout_secs=60\n",
    )
    .unwrap();
    let model = FnModel(|r: &ModelRequest| -> Result<ModelResponse, LlmError> {
        let first = r.messages.len() == 1;
        let quick = format!("{:?}", r.messages[0]).contains("quick");
        let content = if first && !quick {
            vec![Content::ToolUse {
                id: "w1".into(),
                name: "schedule_wakeup".into(),
                input: json!({"after_seconds": 3600, "note": "check again"}),
            }]
        } else {
            vec![Content::Text {
                text: "done".into(),
            }]
        };
        let stop = if matches!(content[0], Content::ToolUse { .. }) {
            StopReason::ToolUse
        } else {
            StopReason::EndTurn
        };
        Ok(ModelResponse {
            content,
            stop,
            usage: Usage::default(),
            model: "offline".into(),
        })
    });
    MemSystem::new(
        Catalog::new(vec![def]).unwrap(),
        ToolRegistry::new(),
        Some(Arc::new(model)),
    )
}

#[tokio::test]
async fn the_sweep_fails_an_overdue_waiting_task_once_with_a_readable_reason() {
    let sys = system();
    let task = sys
        .kernel
        .submit("sleeper", "wait for me", None)
        .await
        .unwrap();
    sys.drain().await;
    let waiting = sys.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(waiting.status, TaskStatus::Waiting);

    // Before the deadline the sweep leaves it alone.
    let report = sys.kernel.sweep().await.unwrap();
    assert!(report.timed_out.is_empty(), "{report:?}");
    assert_eq!(
        sys.store.get_task(task.id).await.unwrap().unwrap().status,
        TaskStatus::Waiting
    );

    // The wake-up is lost (never delivered); the deadline passes.
    sys.clock.advance(61_000);
    let report = sys.kernel.sweep().await.unwrap();
    assert_eq!(report.timed_out, vec![task.id]);
    let failed = sys.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    let reason = failed.error.unwrap();
    assert!(
        reason.starts_with("timed out: the task was still waiting when its limit of 60 s ran out"),
        "{reason}"
    );
    let events = sys.store.timeline(task.id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.kind, EventKind::Failed);
    assert_eq!(last.detail, reason);

    // A second sweep finds nothing and writes nothing.
    let again = sys.kernel.sweep().await.unwrap();
    assert!(again.timed_out.is_empty() && again.resent == 0, "{again:?}");
    assert_eq!(
        sys.store.timeline(task.id).await.unwrap().len(),
        events.len()
    );
}

#[tokio::test]
async fn the_sweep_resends_a_queued_task_that_was_never_sent_and_fails_an_overdue_one() {
    let sys = system();
    // Recorded, but the send of its first envelope fails: nothing is on the queue.
    sys.queues.fail_sends.store(2, Ordering::SeqCst);
    let stale = match sys.kernel.submit("sleeper", "quick one", None).await {
        Err(SubmitError::NotSent { task, .. }) => task,
        other => panic!("{other:?}"),
    };
    sys.clock.advance(61_000);
    let fresh = match sys.kernel.submit("sleeper", "quick two", None).await {
        Err(SubmitError::NotSent { task, .. }) => task,
        other => panic!("{other:?}"),
    };
    assert_eq!(sys.queues.depth("sleeper").await.unwrap(), 0);

    let report = sys.kernel.sweep().await.unwrap();
    // The stale one passed its deadline: failed, not sent.
    assert_eq!(report.timed_out, vec![stale]);
    assert_eq!(report.resent, 1);
    assert_eq!(sys.queues.depth("sleeper").await.unwrap(), 1);
    sys.drain().await;
    let done = sys.store.get_task(fresh).await.unwrap().unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(done.result.as_deref(), Some("done"));
    let failed = sys.store.get_task(stale).await.unwrap().unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    assert!(
        failed
            .error
            .unwrap()
            .starts_with("timed out: the task was still queued")
    );
}
