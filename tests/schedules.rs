//! Task schedules on the embedded runtime: each slot fires once, as one task, even
//! when the process stops between submitting a slot's task and recording the slot;
//! a one-time schedule fires once and is gone; a firing runs for its tenant; the
//! started runtime fires due schedules by itself and the task runs to the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos::{Runtime, RuntimeConfig};
use aos_entrypoints::schedule::{submit_firing, task_id_for};
use aos_kernel::model::AgentName;
use aos_kernel::ports::{Clock, SystemClock, TaskQuery};
use aos_kernel::schedules::{Schedule, ScheduleKind, When};
use aos_kernel::{Task, TaskStatus};
use std::path::Path;
use std::time::{Duration, Instant};

const MINUTE: u64 = 60_000;

fn open(db: &Path) -> Runtime {
    let mut c = RuntimeConfig {
        db: db.to_path_buf(),
        concurrency: 1,
        poll_ms: 50,
        ..RuntimeConfig::default()
    };
    c.tools.offline = true;
    Runtime::open(c).unwrap()
}

async fn tasks_of(rt: &Runtime, tenant: &str) -> Vec<Task> {
    rt.kernel()
        .ports()
        .tasks
        .list_tasks(&TaskQuery {
            tenant: Some(tenant.into()),
            status: None,
            before: None,
            limit: 100,
        })
        .await
        .unwrap()
}

fn schedule(tenant: &str, kind: ScheduleKind, input: &str, when: &str, created: u64) -> Schedule {
    Schedule::new(
        tenant,
        AgentName::new("finance").unwrap(),
        kind,
        input,
        When::parse(when).unwrap(),
        "test",
        created,
    )
}

#[tokio::test]
async fn each_slot_fires_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aos.db");
    let now = SystemClock.now_ms();
    let created = now - 90_000;
    let slot = created + MINUTE;
    let every = schedule(
        "default",
        ScheduleKind::Task,
        "What is 10 EUR in USD?",
        "rate(1 minute)",
        created,
    );
    let rt = open(&db);
    rt.schedules().create(&every).await.unwrap();

    // The process submits the slot's task and dies before recording the slot.
    let first = submit_firing(rt.kernel(), &every, slot).await.unwrap();
    assert_eq!(first.id, task_id_for(slot, &every.id));
    drop(rt);

    let rt = open(&db);
    assert_eq!(
        rt.fire_schedules(now).await.unwrap(),
        1,
        "the slot is still owed"
    );
    assert_eq!(rt.fire_schedules(now).await.unwrap(), 0, "and now recorded");
    let tasks = tasks_of(&rt, "default").await;
    assert_eq!(
        tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![first.id],
        "the slot fired again is the same task, not a second one"
    );

    // The next slot is another task.
    assert_eq!(rt.fire_schedules(now + MINUTE).await.unwrap(), 1);
    let tasks = tasks_of(&rt, "default").await;
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0].id, task_id_for(slot + MINUTE, &every.id));
    assert_eq!(tasks[0].input, "What is 10 EUR in USD?");
    assert_eq!(rt.schedules().list("default").await.unwrap(), vec![every]);
}

#[tokio::test]
async fn a_one_time_wake_up_fires_once_for_its_tenant_then_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aos.db");
    let now = SystemClock.now_ms();
    let at = (now - 5_000) / 1000 * 1000;
    let once = schedule(
        "acme",
        ScheduleKind::Wakeup,
        "check the EUR rate",
        &format!("at({})", aos_kernel::schedules::format_utc(at)),
        now - MINUTE,
    );
    let rt = open(&db);
    rt.schedules().create(&once).await.unwrap();

    // Submitted, then the process died before recording it.
    submit_firing(rt.kernel(), &once, at).await.unwrap();
    drop(rt);
    let rt = open(&db);
    assert_eq!(rt.fire_schedules(now).await.unwrap(), 1);
    assert_eq!(rt.fire_schedules(now + 10 * MINUTE).await.unwrap(), 0);

    let tasks = tasks_of(&rt, "acme").await;
    assert_eq!(tasks.len(), 1, "one task for the one firing: {tasks:?}");
    assert_eq!(tasks[0].input, "Scheduled wake-up: check the EUR rate");
    assert_eq!(tasks[0].tenant, "acme");
    assert!(tasks_of(&rt, "default").await.is_empty());
    assert!(
        rt.schedules().list("acme").await.unwrap().is_empty(),
        "a fired one-time schedule is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_started_runtime_fires_a_due_schedule_and_the_task_runs() {
    let dir = tempfile::tempdir().unwrap();
    let rt = open(&dir.path().join("aos.db"));
    let now = SystemClock.now_ms();
    let once = schedule(
        "default",
        ScheduleKind::Task,
        "What is 1250 EUR in USD?",
        &format!("at({})", aos_kernel::schedules::format_utc(now)),
        now,
    );
    rt.schedules().create(&once).await.unwrap();
    let running = rt.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let tasks = tasks_of(&rt, "default").await;
        if let Some(t) = tasks.first().filter(|t| t.status.is_final()) {
            break t.clone();
        }
        assert!(Instant::now() < deadline, "no finished task: {tasks:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.shutdown(Duration::from_secs(10)).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{done:?}");
    assert_eq!(done.id, task_id_for(now / 1000 * 1000, &once.id));
    assert!(done.result.unwrap_or_default().contains("1356.25 USD"));
}
