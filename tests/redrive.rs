//! Dead-letter redrive on the embedded runtime: a task whose first envelope was
//! dead-lettered (received the maximum number of times without being settled) stays
//! queued; redriving it puts it back on the agent's queue and the task runs to the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos::{Runtime, RuntimeConfig};
use aos_kernel::TaskStatus;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_dead_letter_is_processed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RuntimeConfig {
        db: dir.path().join("aos.db"),
        concurrency: 1,
        poll_ms: 50,
        max_receives: 2,
        ..RuntimeConfig::default()
    };
    config.tools.offline = true;
    let rt = Runtime::open(config).unwrap();
    let task = rt
        .kernel()
        .submit("finance", "What is 1250 EUR in USD?", None)
        .await
        .unwrap();

    // Two receives that never settle (a crashing consumer), then the queue parks it.
    let inbox = rt.inbox();
    for _ in 0..2 {
        assert_eq!(inbox.receive("finance", 10, 0).await.unwrap().len(), 1);
    }
    assert!(inbox.receive("finance", 10, 0).await.unwrap().is_empty());
    let dead = inbox.dead_letters("finance", 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");

    let running = rt.start().await.unwrap();
    let tasks = rt.kernel().ports().tasks.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        tasks.get_task(task.id).await.unwrap().unwrap().status,
        TaskStatus::Queued,
        "nothing runs the task while its envelope is dead-lettered"
    );

    assert_eq!(
        inbox
            .redrive("finance", Some(&[dead[0].id.clone()]))
            .await
            .unwrap(),
        1
    );
    assert!(inbox.dead_letters("finance", 10).await.unwrap().is_empty());
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let t = tasks.get_task(task.id).await.unwrap().unwrap();
        if t.status.is_final() {
            break t;
        }
        assert!(Instant::now() < deadline, "task still {}", t.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.shutdown(Duration::from_secs(10)).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{done:?}");
    assert!(done.result.unwrap_or_default().contains("1356.25 USD"));
}
