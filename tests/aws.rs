//! The whole local stack on the AWS backend (DynamoDB, SQS, S3, EventBridge Scheduler
//! through the official SDK) against moto server, installed and started by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos::runtime::{Runtime, RuntimeConfig};
use aos_aws::emulator::Moto;
use aos_aws::{
    AwsBackend, AwsClients, AwsSettings, CallCounts, QueueSettings, emulator_sdk_config, provision,
};
use aos_kernel::ports::{Clock, SystemClock};
use aos_kernel::{Envelope, Event, EventKind, Task, TaskStatus, WakeOutcome};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEMO: &str = "What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?";
const AGENTS: [&str; 3] = ["primary", "weather", "finance"];

fn endpoint() -> String {
    Moto::shared_endpoint()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string()
}

/// Settings naming fresh resources, so tests on one emulator never meet.
fn fresh_settings() -> AwsSettings {
    let id = ulid::Ulid::new().to_string().to_lowercase();
    AwsSettings {
        table: format!("aos-{id}"),
        bucket: format!("aos-{id}"),
        schedule_group: format!("aos-{id}"),
        queues: QueueSettings {
            prefix: format!("t{}-", &id[20..]),
            ..QueueSettings::default()
        },
        ..AwsSettings::default()
    }
}

async fn aws_backend() -> AwsBackend {
    let sdk = emulator_sdk_config(&endpoint()).await;
    let aws = AwsBackend::new(
        AwsClients::new(&sdk),
        fresh_settings(),
        Arc::new(SystemClock) as Arc<dyn Clock>,
    );
    provision(&aws, &AGENTS).await.unwrap();
    aws
}

fn config(db: std::path::PathBuf) -> RuntimeConfig {
    let mut c = RuntimeConfig {
        db,
        concurrency: 2,
        poll_ms: 50,
        ..RuntimeConfig::default()
    };
    c.tools.offline = true;
    c
}

/// Submits the request, waits for the task to end, stops the runtime.
async fn run_to_end(rt: &Runtime, request: &str) -> (Task, Vec<Event>) {
    let running = rt.start().await.unwrap();
    let kernel = rt.kernel().clone();
    let task = kernel.submit("primary", request, None).await.unwrap();
    let tasks = kernel.ports().tasks.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let t = tasks.get_task(task.id).await.unwrap().unwrap();
        if t.status.is_final() {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "task still {} after 60 s",
            t.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.shutdown(Duration::from_secs(10)).await;
    let events = tasks.timeline(task.id).await.unwrap();
    (done, events)
}

/// The timeline without times and ids: (agent, kind, detail), sorted, since the two
/// specialists' replies may arrive in either order.
fn shape(events: &[Event]) -> Vec<(String, EventKind, String)> {
    let mut s: Vec<_> = events
        .iter()
        .map(|e| (e.agent.clone(), e.kind, e.detail.clone()))
        .collect();
    s.sort_by(|a, b| (&a.0, a.1.as_str(), &a.2).cmp(&(&b.0, b.1.as_str(), &b.2)));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_gives_the_same_answer_and_timeline_on_aws_as_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let local = Runtime::open(config(dir.path().join("aos.db"))).unwrap();
    let (local_task, local_events) = run_to_end(&local, DEMO).await;
    assert_eq!(local_task.status, TaskStatus::Succeeded, "{local_task:?}");

    let aws = aws_backend().await;
    let counter = aws.counter().clone();
    let rt = Runtime::open_aws(config(dir.path().join("unused.db")), aws).unwrap();
    let (aws_task, aws_events) = run_to_end(&rt, DEMO).await;
    assert_eq!(
        aws_task.status,
        TaskStatus::Succeeded,
        "the demo succeeds on the AWS backend: {aws_task:?}"
    );
    assert_eq!(
        aws_task.result, local_task.result,
        "the same answer on both backends"
    );
    assert!(
        aws_task
            .result
            .as_deref()
            .is_some_and(|r| r.contains("1356.25 USD") && r.contains("Tokyo")),
        "{aws_task:?}"
    );
    assert_eq!(
        shape(&aws_events),
        shape(&local_events),
        "the same timeline on both backends"
    );
    assert_eq!(aws_task.usage.wakes, 5, "five wakes, none twice");
    let sent = counter.snapshot().calls_of("SQS.SendMessageBatch");
    assert!(sent >= 5, "the task went through SQS: {sent} batch sends");
    assert!(
        !rt.kernel()
            .ports()
            .tasks
            .list_tasks(&aos_kernel::TaskQuery {
                tenant: None,
                status: None,
                before: None,
                limit: 10,
            })
            .await
            .unwrap()
            .is_empty(),
        "the task is listed from the index"
    );
}

/// Drives the wakes by hand (what Lambda's event source mapping does) so each wake's
/// own AWS calls can be counted apart from the receive and delete around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_makes_one_read_one_transactional_write_and_one_send_per_destination() {
    let dir = tempfile::tempdir().unwrap();
    let aws = aws_backend().await;
    let counter = aws.counter().clone();
    let rt = Runtime::open_aws(config(dir.path().join("unused.db")), aws).unwrap();
    let kernel = rt.kernel().clone();
    let inbox = rt.inbox();
    let task = kernel.submit("primary", DEMO, None).await.unwrap();

    let mut per_wake: Vec<(String, CallCounts)> = Vec::new();
    for _round in 0..50 {
        let mut any = false;
        for agent in AGENTS {
            for m in inbox.receive(agent, 10, 30_000).await.unwrap() {
                any = true;
                let envelope = Envelope::parse(&m.body).unwrap();
                let before = counter.snapshot();
                // As Lambda's trigger delivers it: a first delivery reads no journal.
                let outcome = kernel
                    .wake_until(envelope, None, m.receive_count <= 1)
                    .await
                    .unwrap();
                per_wake.push((agent.to_string(), counter.snapshot().since(&before)));
                assert!(
                    matches!(outcome, WakeOutcome::Applied { .. }),
                    "{outcome:?}"
                );
                inbox.delete(agent, &m.receipt).await.unwrap();
            }
        }
        if !any {
            break;
        }
    }
    let done = kernel
        .ports()
        .tasks
        .get_task(task.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded, "{done:?}");
    assert_eq!(per_wake.len(), 5, "five wakes: {per_wake:#?}");

    let mut sends = 0;
    for (agent, calls) in &per_wake {
        let mut other: BTreeMap<String, u64> = calls.calls.clone();
        assert_eq!(
            other.remove("DynamoDB.BatchGetItem"),
            Some(1),
            "{agent}: one read (session, marker, task and memory together): {calls:?}"
        );
        assert_eq!(
            other.remove("DynamoDB.TransactWriteItems"),
            Some(1),
            "{agent}: one transactional write: {calls:?}"
        );
        // The journal takes no write here: the offline model's steps and the offline
        // tools' results are pure (running them again is free and exact). A paid
        // model step or a tool with I/O adds one S3.PutObject each.
        let batch_sends = other.remove("SQS.SendMessageBatch").unwrap_or(0);
        sends += batch_sends;
        assert!(
            other.is_empty(),
            "{agent}: nothing else on the wake's path: {calls:?}"
        );
        assert_eq!(
            calls.total_attempts(),
            calls.total_calls(),
            "no retries against a healthy emulator"
        );
        assert!(
            batch_sends <= 2,
            "{agent}: one batch per destination: {calls:?}"
        );
    }
    // primary → weather and → finance (2 queues, 2 batches), each reply (1 each), and
    // the answer sends nothing.
    assert_eq!(
        sends, 4,
        "one batch send per destination queue: {per_wake:#?}"
    );
}

/// `aos run --backend aws` with the standard `AWS_ENDPOINT_URL`: the binary points
/// every client at the emulator with no code change and creates what it needs there.
#[test]
fn aos_run_on_the_aws_backend_follows_aws_endpoint_url() {
    let endpoint = endpoint();
    let dir = tempfile::tempdir().unwrap();
    let s = fresh_settings();
    let out = Command::new(env!("CARGO_BIN_EXE_aos"))
        .args([
            "run",
            "--backend",
            "aws",
            "What is 12 * (3 + 4)?",
            "--agent",
            "finance",
        ])
        .current_dir(dir.path())
        .env("AOS_OFFLINE", "true")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("AOS_MODEL")
        .env_remove("AOS_DEFAULT_MODEL")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AOS_TABLE", &s.table)
        .env("AOS_BUCKET", &s.bucket)
        .env("AOS_SCHEDULE_GROUP", &s.schedule_group)
        .env("AOS_QUEUE_PREFIX", &s.queues.prefix)
        .env_remove("AOS_DB")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("84"), "12 * (3 + 4) = 84: {stdout}");
    assert!(
        stdout.contains("AWS calls for this run") && stdout.contains("DynamoDB.TransactWriteItems"),
        "the run reports its AWS calls: {stdout}"
    );
    assert!(
        stderr.contains(&s.table) && stderr.contains(&endpoint),
        "it says where the state lives: {stderr}"
    );
    assert!(
        !dir.path().join(".aos/aos.db").exists(),
        "the AWS backend writes no embedded store"
    );
}

/// A message no agent can read, put on the primary queue by hand: the trigger loop
/// hands it to the same batch handler Lambda calls, which parks it on the agent's
/// dead-letter queue with a reason; the stack keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_on_the_aws_backend_is_dead_lettered_and_the_stack_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let aws = aws_backend().await;
    let primary = aws.queues.queue("primary").await.unwrap();
    aws.clients
        .sqs
        .send_message()
        .queue_url(&primary.url)
        .message_body("{this is not an envelope")
        .message_group_id("poison")
        .message_deduplication_id("poison-1")
        .send()
        .await
        .unwrap();
    let rt = Runtime::open_aws(config(dir.path().join("unused.db")), aws).unwrap();
    let (task, _) = run_to_end(&rt, "What is 1250 EUR in USD?").await;
    assert_eq!(
        task.status,
        TaskStatus::Succeeded,
        "the stack keeps serving: {task:?}"
    );
    let dead = rt.inbox().dead_letters("primary", 10).await.unwrap();
    assert_eq!(dead.len(), 1, "the poison message is parked: {dead:?}");
    assert_eq!(dead[0].body, "{this is not an envelope", "with its body");
    assert!(
        dead[0].reason.contains("not") || dead[0].reason.contains("parse"),
        "and a reason a person can read: {:?}",
        dead[0].reason
    );
    assert_eq!(
        rt.inbox().depth("primary").await.unwrap(),
        0,
        "nothing is left on the queue"
    );
    assert_eq!(
        rt.inbox().dead_letters("primary", 10).await.unwrap().len(),
        1,
        "listing dead letters takes nothing away"
    );
}
