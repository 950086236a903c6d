//! Wakes that respect the invocation deadline, end to end through the agent
//! function's handler: a slow model, short invocations and full batches, with this
//! test playing Lambda's SQS event source mapping (receive up to 10, invoke with a
//! deadline, delete what succeeded).
//!
//! What it proves, as a user would see it: no task is lost and every one finishes;
//! no model step is paid twice, though most tasks need more than one invocation; no
//! invocation runs past its deadline; records the batch could not start are reported
//! failed and come back; FIFO order holds within a group; and a record that failed
//! with a delay (a provider's retry-after, or 0 after the deadline) is released with
//! that delay instead of waiting out the visibility timeout. It holds both when steps
//! fit an invocation exactly and when the last step of an invocation starts with too
//! little time and its request is cut short.
//!
//! Time is tokio's paused clock: the model really sleeps 200 ms per step on it, groups
//! really run concurrently, and the kernel's clock reads the same time, so deadlines
//! are exact and the test takes milliseconds. (`MemSystem` has a hand-moved clock,
//! under which concurrent groups would seem to run one after another; the kernel here
//! is built from the same testkit parts with this clock instead.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_entrypoints::sqs;
use aos_kernel::kernel::root_session;
use aos_kernel::llm::{
    Content, LlmError, Model, ModelRequest, ModelResponse, StopReason, ToolSpec,
};
use aos_kernel::model::{AgentDef, AgentName, Envelope, EventKind, Kind, TaskStatus, Usage};
use aos_kernel::ports::{Clock, DeadLetter, Inbox, Mailbox, PortError, Received, TaskStore};
use aos_kernel::testkit::{MemBlobs, MemQueues, MemScheduler, MemStore};
use aos_kernel::tools::{Tool, ToolContext, ToolError, ToolMeta, ToolRegistry};
use aos_kernel::{Catalog, EnvelopeId, Kernel, KernelConfig, Ports, TaskId};
use aos_lambda::SqsHandler;
use async_trait::async_trait;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The function's timeout.
const TIMEOUT_MS: u64 = 1_000;
/// What each model step takes.
const LATENCY_MS: u64 = 200;
/// The queue's visibility timeout (6 × the function timeout, as the template has it).
const VISIBILITY_MS: u64 = 6 * TIMEOUT_MS;
const MAX_RECEIVES: u32 = 10;
const RETRY_AFTER_MS: u64 = 3_000;
const ARN: &str = "arn:aws:sqs:us-east-1:123456789012:aos-worker.fifo";

/// Wall-clock milliseconds on tokio's (paused) clock.
struct TokioClock {
    base: u64,
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base + self.start.elapsed().as_millis() as u64
    }
}

/// A model that takes `LATENCY_MS` per step, as a real client would give up when the
/// request's timeout is shorter, and answers a task asking for `steps=N` after N steps
/// (N-1 rounds of the `tick` tool). A task whose input says `flaky` is throttled once.
#[derive(Default)]
struct Slow {
    requests: AtomicU64,
    /// Steps paid for, as (session, step number): a second payment of a step shows
    /// as a repeat here.
    paid: Mutex<Vec<(String, usize)>>,
    /// Requests that got less time than a step takes.
    cut_short: AtomicU64,
    throttled: Mutex<HashSet<String>>,
}

#[async_trait]
impl Model for Slow {
    async fn complete(&self, r: &ModelRequest) -> Result<ModelResponse, LlmError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let input = match r.messages[0].content.first() {
            Some(Content::Text { text }) => text.clone(),
            other => panic!("first message is not the task: {other:?}"),
        };
        if input.contains("flaky") && self.throttled.lock().unwrap().insert(input.clone()) {
            return Err(LlmError::Transient {
                reason: "429 slow down".into(),
                retry_after_ms: Some(RETRY_AFTER_MS),
            });
        }
        let latency = Duration::from_millis(LATENCY_MS);
        if let Some(t) = r.timeout_ms.map(Duration::from_millis)
            && t < latency
        {
            self.cut_short.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(t).await;
            return Err(LlmError::transient("request timed out"));
        }
        tokio::time::sleep(latency).await;
        let need: usize = input
            .split("steps=")
            .nth(1)
            .and_then(|n| n.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("steps=N in the task");
        let step = r
            .messages
            .iter()
            .filter(|m| m.role == aos_kernel::llm::Role::Assistant)
            .count()
            + 1;
        let session = r.cache_key.clone().unwrap_or_default();
        self.paid.lock().unwrap().push((session, step));
        let (content, stop) = if step < need {
            (
                vec![Content::ToolUse {
                    id: format!("tick-{step}"),
                    name: "tick".into(),
                    input: json!({ "step": step }),
                }],
                StopReason::ToolUse,
            )
        } else {
            (
                vec![Content::Text {
                    text: format!("done after {need} steps"),
                }],
                StopReason::EndTurn,
            )
        };
        Ok(ModelResponse {
            content,
            stop,
            usage: Usage {
                llm_calls: 1,
                input_tokens: 10,
                output_tokens: 5,
                ..Usage::default()
            },
            model: "scripted:slow".into(),
        })
    }
}

/// A pure tool the model calls between steps.
struct Tick;

#[async_trait]
impl Tool for Tick {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "tick".into(),
            description: "counts".into(),
            input_schema: json!({"type": "object"}),
        }
    }
    fn meta(&self) -> ToolMeta {
        ToolMeta::pure()
    }
    async fn call(&self, input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        Ok(format!("tick {}", input["step"]))
    }
}

/// The agent's queue, counting the handler's early releases.
struct CountingInbox {
    inner: Arc<MemQueues>,
    releases: Mutex<Vec<(String, u64)>>,
}

#[async_trait]
impl Inbox for CountingInbox {
    async fn receive(
        &self,
        agent: &str,
        max: usize,
        visibility_ms: u64,
    ) -> Result<Vec<Received>, PortError> {
        self.inner.receive(agent, max, visibility_ms).await
    }
    async fn delete(&self, agent: &str, receipt: &str) -> Result<(), PortError> {
        self.inner.delete(agent, receipt).await
    }
    async fn release(&self, agent: &str, receipt: &str, delay_ms: u64) -> Result<(), PortError> {
        self.releases
            .lock()
            .unwrap()
            .push((receipt.to_string(), delay_ms));
        self.inner.release(agent, receipt, delay_ms).await
    }
    async fn dead_letters(&self, agent: &str, limit: usize) -> Result<Vec<DeadLetter>, PortError> {
        self.inner.dead_letters(agent, limit).await
    }
    async fn redrive(&self, agent: &str, ids: Option<&[String]>) -> Result<usize, PortError> {
        self.inner.redrive(agent, ids).await
    }
    async fn depth(&self, agent: &str) -> Result<u64, PortError> {
        self.inner.depth(agent).await
    }
}

/// One invocation as the test saw it.
#[derive(Debug)]
struct Invocation {
    started: u64,
    deadline: u64,
    ended: u64,
    /// Envelope ids of the records, in batch order.
    records: Vec<String>,
    failed: HashSet<String>,
    report: sqs::BatchReport,
}

/// A finished run of the scenario.
struct Run {
    /// (task, steps it needs)
    tasks: Vec<(TaskId, usize)>,
    /// The second record in the group of tasks 2 and 3.
    followers: HashMap<TaskId, EnvelopeId>,
    invocations: Vec<Invocation>,
    most_receives: u32,
    model: Arc<Slow>,
    inbox: Arc<CountingInbox>,
    store: Arc<MemStore>,
    queues: Arc<MemQueues>,
}

/// Ten tasks in ten groups, two of them with a second record in their group (a request
/// that arrives behind the task's own envelope), run to the end by the event source
/// mapping with `margin_ms` as the margin of the handler and of the kernel.
async fn run_scenario(margin_ms: u64) -> Run {
    let clock: Arc<TokioClock> = Arc::new(TokioClock {
        base: 1_800_000_000_000,
        start: tokio::time::Instant::now(),
    });
    let worker = AgentDef::from_toml(
        "name='worker'\npurpose='works'\nsystem_prompt='work'\ntools=['tick']\n\
         [limits]\nmax_steps_per_wake=20\n",
    )
    .unwrap();
    let store = Arc::new(MemStore::default());
    let queues = Arc::new(MemQueues::new(clock.clone(), MAX_RECEIVES));
    let model = Arc::new(Slow::default());
    let kernel = Kernel::new(
        Catalog::new(vec![worker]).unwrap(),
        ToolRegistry::new().with(Arc::new(Tick)),
        Ports {
            sessions: store.clone(),
            tasks: store.clone(),
            mailbox: queues.clone(),
            blobs: Arc::new(MemBlobs::default()),
            scheduler: Arc::new(MemScheduler::default()),
            model: model.clone(),
            clock: clock.clone(),
        },
        KernelConfig {
            default_model: "scripted:slow".into(),
            deadline_margin_ms: margin_ms,
            ..KernelConfig::default()
        },
    )
    .unwrap();
    let inbox = Arc::new(CountingInbox {
        inner: queues.clone(),
        releases: Mutex::new(Vec::new()),
    });
    let handler = SqsHandler::new(
        kernel.clone(),
        inbox.clone(),
        "worker",
        MAX_RECEIVES,
        margin_ms,
    )
    .with_metrics(std::sync::Arc::new(|_: &str| {}));

    let mut tasks: Vec<(TaskId, usize)> = Vec::new();
    let mut followers: HashMap<TaskId, EnvelopeId> = HashMap::new();
    for (i, n) in STEPS.iter().enumerate() {
        let flaky = if i == 0 { " flaky" } else { "" };
        let input = format!("task {i}{flaky} steps={n}");
        let t = kernel.submit("worker", &input, None).await.unwrap();
        tasks.push((t.id, *n));
        if i == 2 || i == 3 {
            let id = EnvelopeId::new(kernel.now_ms());
            queues
                .send(&[Envelope {
                    tenant: "default".into(),
                    id,
                    task: t.id,
                    session: root_session(t.id),
                    from: "user".into(),
                    to: AgentName::new("worker").unwrap(),
                    kind: Kind::Message,
                    body: format!("and also, for task {i}"),
                    body_ref: None,
                    hop: 1,
                    trace_id: t.trace_id.clone(),
                    sent_at: kernel.now_ms(),
                    reply_to: None,
                    in_reply_to: None,
                    is_error: false,
                }])
                .await
                .unwrap();
            followers.insert(t.id, id);
        }
    }
    assert_eq!(queues.depth("worker").await.unwrap(), 12);

    // The event source mapping.
    let mut invocations: Vec<Invocation> = Vec::new();
    let mut most_receives = 0;
    for _ in 0..1_000 {
        let batch = inbox.receive("worker", 10, VISIBILITY_MS).await.unwrap();
        if batch.is_empty() {
            if queues.depth("worker").await.unwrap() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        most_receives = most_receives.max(batch.iter().map(|m| m.receive_count).max().unwrap());
        let records = batch
            .iter()
            .map(|m| {
                let mut r = sqs::record(
                    &m.message_id,
                    &m.body,
                    &m.group,
                    m.receive_count,
                    m.sent_at,
                    ARN,
                );
                r.receipt_handle = Some(m.receipt.clone());
                r
            })
            .collect();
        let started = kernel.now_ms();
        let mut context = Context::default();
        context.deadline = started + TIMEOUT_MS;
        let (response, report) = handler
            .run(LambdaEvent::new(sqs::event(records), context))
            .await;
        let failed: HashSet<String> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        let done: Vec<String> = batch
            .iter()
            .filter(|m| !failed.contains(&m.message_id))
            .map(|m| m.receipt.clone())
            .collect();
        inbox.inner.delete_batch("worker", &done).await.unwrap();
        invocations.push(Invocation {
            started,
            deadline: started + TIMEOUT_MS,
            ended: kernel.now_ms(),
            records: batch.iter().map(|m| m.message_id.clone()).collect(),
            failed,
            report,
        });
    }
    Run {
        tasks,
        followers,
        invocations,
        most_receives,
        model,
        inbox,
        store,
        queues,
    }
}

/// Steps each of the ten tasks needs; a wake fits 4 in one invocation at most.
const STEPS: [usize; 10] = [3, 2, 4, 6, 5, 8, 4, 6, 3, 7];

/// What holds whatever the margin: nothing lost, no step paid twice, no invocation
/// past its deadline, long tasks finished across invocations, and every failed record
/// released early (none waited out the visibility timeout).
async fn assert_the_promises(run: &Run, margin_ms: u64) {
    // Nothing lost: every task finished with its answer, the queue is empty, and
    // nothing was dead-lettered (no record came near its last receive).
    for (id, n) in &run.tasks {
        let task = run.store.get_task(*id).await.unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Succeeded, "{id}: {:?}", task.error);
        assert_eq!(task.result, Some(format!("done after {n} steps")));
        // The task's bill counts each step once, however many invocations it took.
        assert_eq!(task.usage.llm_calls, *n as u64, "{id}");
    }
    assert_eq!(run.queues.depth("worker").await.unwrap(), 0);
    assert!(
        run.inbox
            .dead_letters("worker", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(run.most_receives < MAX_RECEIVES, "{}", run.most_receives);

    // No model step paid twice: one paid request per distinct step; every other
    // request was the throttled one or one cut short, neither of which is billed.
    let paid = run.model.paid.lock().unwrap().clone();
    let distinct: HashSet<_> = paid.iter().cloned().collect();
    let all_steps: usize = STEPS.iter().sum();
    assert_eq!(distinct.len(), paid.len(), "a step was paid twice");
    assert_eq!(paid.len(), all_steps);
    let cut_short = run.model.cut_short.load(Ordering::SeqCst);
    assert_eq!(
        run.model.requests.load(Ordering::SeqCst),
        all_steps as u64 + 1 + cut_short
    );

    // No invocation ran past its deadline: each ended by the deadline less the margin.
    for inv in &run.invocations {
        assert!(inv.ended <= inv.deadline - margin_ms, "{inv:?}");
    }

    // Tasks too long for one invocation finished across several.
    for (id, n) in run.tasks.iter().filter(|(_, n)| *n > 4) {
        let first = run
            .store
            .get_task(*id)
            .await
            .unwrap()
            .unwrap()
            .first_envelope;
        let seen = run
            .invocations
            .iter()
            .filter(|i| i.records.contains(&first.to_string()))
            .count();
        assert!(seen >= 2, "task of {n} steps seen in {seen} invocation(s)");
    }

    // Early releases: the throttled record once, with the provider's delay; all other
    // failed records at once, as the batch reports said.
    let releases = run.inbox.releases.lock().unwrap().clone();
    assert_eq!(
        releases
            .iter()
            .filter(|(_, d)| *d == RETRY_AFTER_MS)
            .count(),
        1,
        "{releases:?}"
    );
    let at_once = releases.iter().filter(|(_, d)| *d == 0).count();
    let reported_at_once: usize = run
        .invocations
        .iter()
        .map(|i| {
            i.report
                .retry_after_ms
                .iter()
                .filter(|(_, d)| *d == 0)
                .count()
        })
        .sum();
    assert!(at_once >= 3, "{releases:?}");
    assert_eq!(at_once, reported_at_once);
    let failures: usize = run.invocations.iter().map(|i| i.failed.len()).sum();
    assert_eq!(releases.len(), failures, "{releases:?}");
    // So the whole run took a few invocations plus the retry-after.
    let elapsed = run.invocations.last().unwrap().ended - run.invocations[0].started;
    assert!(elapsed < VISIBILITY_MS, "took {elapsed} ms");
}

#[tokio::test(start_paused = true)]
async fn slow_wakes_finish_across_invocations_without_loss_or_paying_twice() {
    // A 200 ms margin: four steps fit an invocation exactly, and no request is cut.
    let run = run_scenario(200).await;
    assert_the_promises(&run, 200).await;
    assert_eq!(run.model.cut_short.load(Ordering::SeqCst), 0);

    // A record the batch could not start before the deadline was reported failed and
    // came back: task 2's follower (task 2 takes the whole first invocation).
    let (t2, _) = run.tasks[2];
    let f2 = run.followers[&t2].to_string();
    let first = &run.invocations[0];
    assert!(first.report.unstarted >= 1, "{:?}", first.report);
    assert!(first.records.contains(&f2) && first.failed.contains(&f2));
    assert_eq!(first.report.delay_for(&f2), Some(0));
    // FIFO within the group: the follower was applied only after its task's answer.
    let events = run.store.timeline(t2).await.unwrap();
    let answer = events
        .iter()
        .position(|e| e.kind == EventKind::Answer)
        .unwrap();
    let ignored = events
        .iter()
        .position(|e| {
            e.kind == EventKind::Ignored && e.envelope.map(|x| x.to_string()) == Some(f2.clone())
        })
        .unwrap();
    assert!(answer < ignored, "{events:#?}");
}

#[tokio::test(start_paused = true)]
async fn requests_cut_short_by_the_deadline_come_back_at_once() {
    // A 300 ms margin: the fourth step of a wake starts with 100 ms left, and the
    // model gives up when its request times out, as a provider client would.
    let run = run_scenario(300).await;
    assert_the_promises(&run, 300).await;
    assert!(run.model.cut_short.load(Ordering::SeqCst) >= 5);
}

/// Near the deadline a record is not started, unless this is its last receive: then
/// it gets its last chance rather than a silent trip to the dead-letter queue (the
/// kernel still starts no model step it has no time for).
#[tokio::test]
async fn near_the_deadline_only_a_record_on_its_last_receive_starts() {
    use aos_kernel::testkit::MemSystem;
    let sys = MemSystem::new(
        Catalog::new(aos_agents::reference_agents().unwrap()).unwrap(),
        aos_agents::reference_tools(&aos_agents::ToolsConfig {
            offline: true,
            ..Default::default()
        }),
        None,
    );
    let task = sys
        .kernel
        .submit("weather", "Weather in Rome?", None)
        .await
        .unwrap();
    sys.drain().await;
    let handler = SqsHandler::new(sys.kernel.clone(), sys.queues.clone(), "weather", 5, 2_000)
        .with_metrics(std::sync::Arc::new(|_: &str| {}));
    let body = aos_kernel::kernel::first_envelope(&task).to_json();
    let run = |receives: u32| {
        let record = sqs::record("m-1", &body, "g-1", receives, 0, ARN);
        let mut context = Context::default();
        // 500 ms left, with a 2 s margin.
        context.deadline = sys.kernel.now_ms() + 500;
        handler.run(LambdaEvent::new(sqs::event(vec![record]), context))
    };
    let (response, report) = run(1).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!((report.unstarted, report.delay_for("m-1")), (1, Some(0)));
    // On its last receive it runs: already applied, so it is acknowledged.
    let (response, report) = run(5).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((report.duplicates, report.unstarted), (1, 0));
}
