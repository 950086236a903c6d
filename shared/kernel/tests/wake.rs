//! The wake cycle's guarantees, over in-memory ports: the three-agent fan-out/fan-in
//! finishes with the right answer; duplicated and reordered delivery changes nothing;
//! a crash at any commit or flush loses nothing and runs nothing twice; loops and
//! runaway agents are stopped with a readable reason; bad envelopes are dead-lettered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_kernel::llm::{
    Content, LlmError, Model, ModelRequest, ModelResponse, StopReason, ToolSpec,
};
use aos_kernel::model::{AgentDef, Envelope, EventKind, Kind, TaskStatus, Usage};
use aos_kernel::ports::{Clock, Inbox, Mailbox, TaskStore};
use aos_kernel::testkit::{FnModel, MemSystem};
use aos_kernel::tools::{Tool, ToolContext, ToolError, ToolRegistry};
use aos_kernel::{Catalog, TaskId, WakeOutcome};
use async_trait::async_trait;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const DEMO: &str = "What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?";

/// A tool that answers from a fixed table and counts its calls.
struct Counted {
    name: &'static str,
    arg: &'static str,
    calls: Arc<AtomicU64>,
}

#[async_trait]
impl Tool for Counted {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name.into(),
            description: "test tool".into(),
            input_schema: json!({"type": "object"}),
        }
    }
    async fn call(&self, input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.name {
            "get_weather" => Ok(format!(
                "{}: 12 °C, overcast",
                input[self.arg].as_str().unwrap_or("?")
            )),
            _ => Ok(format!(
                "{} {} = {:.2} {}",
                input["amount"],
                input["from"].as_str().unwrap_or("?"),
                input["amount"].as_f64().unwrap_or(0.0) * 1.085,
                input["to"].as_str().unwrap_or("?")
            )),
        }
    }
}

fn agent(toml: &str) -> AgentDef {
    AgentDef::from_toml(toml).unwrap()
}

fn reference_agents() -> Vec<AgentDef> {
    vec![
        agent(
            "name='primary'\npurpose='orchestrator'\nsystem_prompt='split'\nmay_message=['weather','finance']\n",
        ),
        agent(
            "name='weather'\npurpose='weather'\nsystem_prompt='w'\ntools=['get_weather']\nkeywords=['weather','forecast']\n",
        ),
        agent(
            "name='finance'\npurpose='money'\nsystem_prompt='f'\ntools=['convert_currency']\nkeywords=['eur','usd']\n",
        ),
    ]
}

struct System {
    sys: MemSystem,
    tool_calls: Arc<AtomicU64>,
}

impl std::ops::Deref for System {
    type Target = MemSystem;
    fn deref(&self) -> &MemSystem {
        &self.sys
    }
}

fn system_with(agents: Vec<AgentDef>, model: Option<Arc<dyn Model>>) -> System {
    let tool_calls = Arc::new(AtomicU64::new(0));
    let tools = ToolRegistry::new()
        .with(Arc::new(Counted {
            name: "get_weather",
            arg: "city",
            calls: tool_calls.clone(),
        }))
        .with(Arc::new(Counted {
            name: "convert_currency",
            arg: "amount",
            calls: tool_calls.clone(),
        }));
    let sys = MemSystem::new(Catalog::new(agents).unwrap(), tools, model);
    System { sys, tool_calls }
}

fn system() -> System {
    system_with(reference_agents(), None)
}

impl System {
    async fn task(&self, id: TaskId) -> aos_kernel::Task {
        self.store.get_task(id).await.unwrap().unwrap()
    }

    async fn timeline(&self, id: TaskId) -> Vec<(String, EventKind, String)> {
        let mut v: Vec<_> = self
            .store
            .timeline(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.agent, e.kind, e.detail))
            .collect();
        v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        v
    }
}

#[tokio::test]
async fn three_agents_fan_out_and_fan_in_to_one_answer() {
    let sys = system();
    let task = sys.kernel.submit("primary", DEMO, None).await.unwrap();
    assert_eq!(task.status, TaskStatus::Queued);
    let wakes = sys.drain().await;
    let task = sys.task(task.id).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}");
    let answer = task.result.unwrap();
    assert!(answer.starts_with("[offline model]"), "{answer}");
    assert!(answer.contains("weather: Paris: 12 °C"), "{answer}");
    assert!(answer.contains("Tokyo: 12 °C"), "{answer}");
    assert!(answer.contains("finance: 1250"), "{answer}");
    assert!(answer.contains("1356.25 USD"), "{answer}");
    // primary (task), weather, finance, primary (reply 1), primary (reply 2).
    assert_eq!(wakes, 5);
    assert_eq!(task.usage.wakes, 5);
    assert_eq!(task.usage.llm_calls, 6, "primary 2 + each specialist 2");
    let events = sys.store.timeline(task.id).await.unwrap();
    let delegated: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Delegated)
        .collect();
    assert_eq!(delegated.len(), 2);
    assert!(delegated[0].detail.starts_with("→ weather"));
    assert!(delegated[1].detail.starts_with("→ finance"));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::Replied)
            .count(),
        2
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::Answer)
            .count(),
        1
    );
    assert_eq!(
        sys.tool_calls.load(Ordering::SeqCst),
        3,
        "Paris, Tokyo, one conversion"
    );
}

/// Delivers every envelope twice, in a random order across sessions (FIFO kept within
/// a session, as SQS FIFO groups guarantee), with no queue dedupe to help.
async fn chaotic_run(seed: u64) -> (String, Vec<(String, EventKind, String)>, u64, u64, usize) {
    let sys = system();
    let task = sys.kernel.submit("primary", DEMO, None).await.unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    // Per session: envelopes not yet delivered the first time, in order.
    let mut firsts: BTreeMap<String, Vec<Envelope>> = BTreeMap::new();
    let mut seconds: Vec<Envelope> = Vec::new();
    let mut seen = 0usize;
    let mut deliveries = 0usize;
    loop {
        let sent = sys.queues.sent.lock().unwrap().clone();
        for e in &sent[seen..] {
            firsts
                .entry(e.session.to_string())
                .or_default()
                .push(e.clone());
        }
        seen = sent.len();
        let mut choices: Vec<(bool, usize, String)> = firsts
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| (true, 0, k.clone()))
            .collect();
        choices.extend((0..seconds.len()).map(|i| (false, i, String::new())));
        let Some((first, idx, session)) = choices.choose(&mut rng).cloned() else {
            break;
        };
        let env = if first {
            let env = firsts.get_mut(&session).unwrap().remove(0);
            seconds.push(env.clone());
            env
        } else {
            seconds.swap_remove(idx)
        };
        deliveries += 1;
        let outcome = sys.kernel.wake(env).await.unwrap();
        if !first {
            assert_eq!(outcome, WakeOutcome::Duplicate);
        }
    }
    let unique: std::collections::HashSet<_> = sys
        .queues
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        deliveries,
        unique.len() * 2,
        "every envelope delivered twice"
    );
    let t = sys.task(task.id).await;
    assert_eq!(t.status, TaskStatus::Succeeded);
    (
        t.result.unwrap(),
        sys.timeline(task.id).await,
        sys.tool_calls.load(Ordering::SeqCst),
        sys.store.commits.load(Ordering::SeqCst),
        unique.len(),
    )
}

#[tokio::test]
async fn duplicated_and_shuffled_delivery_gives_the_same_result_and_timeline() {
    let reference = {
        let sys = system();
        let task = sys.kernel.submit("primary", DEMO, None).await.unwrap();
        sys.drain().await;
        let t = sys.task(task.id).await;
        (
            t.result.unwrap(),
            sys.timeline(task.id).await,
            sys.tool_calls.load(Ordering::SeqCst),
            sys.store.commits.load(Ordering::SeqCst),
            sys.queues.sent.lock().unwrap().len(),
        )
    };
    for seed in 0..25 {
        let run = chaotic_run(seed).await;
        assert_eq!(run.0, reference.0, "answer differs with seed {seed}");
        assert_eq!(run.1, reference.1, "timeline differs with seed {seed}");
        assert_eq!(run.2, reference.2, "a tool ran twice with seed {seed}");
        assert_eq!(
            run.3, reference.3,
            "an envelope was applied twice with seed {seed}"
        );
        assert_eq!(
            run.4, reference.4,
            "an outbox envelope was produced twice with seed {seed}"
        );
    }
}

#[tokio::test]
async fn a_crash_before_any_commit_or_flush_loses_nothing_and_duplicates_nothing() {
    let reference = {
        let sys = system_with(reference_agents(), Some(counting()));
        let t = sys.kernel.submit("primary", DEMO, None).await.unwrap();
        sys.drain().await;
        (
            sys.task(t.id).await.result.unwrap(),
            sys.timeline(t.id).await,
        )
    };
    // Crash the n-th commit, then separately the n-th flush, for every wake of the task.
    for n in 0..5u64 {
        for crash_flush in [false, true] {
            let model = counting();
            let sys = system_with(reference_agents(), Some(model.clone()));
            let t = sys.kernel.submit("primary", DEMO, None).await.unwrap();
            // Let n wakes succeed, then inject one failure.
            let mut done = 0;
            while done < n {
                let mut progressed = false;
                for a in ["primary", "weather", "finance"] {
                    if done >= n {
                        break;
                    }
                    if let Some(m) = sys.queues.receive(a, 1, 30_000).await.unwrap().pop() {
                        sys.kernel
                            .wake(Envelope::parse(&m.body).unwrap())
                            .await
                            .unwrap();
                        sys.queues.delete(a, &m.receipt).await.unwrap();
                        done += 1;
                        progressed = true;
                    }
                }
                assert!(progressed);
            }
            if crash_flush {
                sys.queues.fail_sends.store(1, Ordering::SeqCst);
            } else {
                sys.store.fail_commits.store(1, Ordering::SeqCst);
            }
            sys.drain().await;
            let task = sys.task(t.id).await;
            assert_eq!(
                task.status,
                TaskStatus::Succeeded,
                "crash at wake {n} (flush: {crash_flush})"
            );
            assert_eq!(task.result.unwrap(), reference.0);
            assert_eq!(sys.timeline(t.id).await, reference.1);
            assert_eq!(sys.store.commits.load(Ordering::SeqCst), 5);
            // The re-run wake replays its model steps and tool results from the
            // journal: nothing is paid or run twice, and the task's usage counts every
            // step once.
            assert_eq!(sys.tool_calls.load(Ordering::SeqCst), 3);
            assert_eq!(model.calls.load(Ordering::SeqCst), 6, "crash at wake {n}");
            assert_eq!(task.usage.llm_calls, 6);
        }
    }
}

/// The offline model as a paid provider, counting the requests that reach it.
struct CountingModel {
    inner: aos_kernel::offline::OfflineModel,
    calls: AtomicU64,
}

#[async_trait]
impl Model for CountingModel {
    async fn complete(&self, r: &ModelRequest) -> Result<ModelResponse, LlmError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut response = self.inner.complete(r).await?;
        // Stands for a paid provider, whose responses are journaled.
        response.model = "counted:offline".into();
        Ok(response)
    }
}

fn counting() -> Arc<CountingModel> {
    Arc::new(CountingModel {
        inner: aos_kernel::offline::OfflineModel::new(&Catalog::new(reference_agents()).unwrap()),
        calls: AtomicU64::new(0),
    })
}

fn tool_use(id: &str, name: &str, input: Value) -> ModelResponse {
    ModelResponse {
        content: vec![Content::ToolUse {
            id: id.into(),
            name: name.into(),
            input,
        }],
        stop: StopReason::ToolUse,
        usage: Usage {
            llm_calls: 1,
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        },
        model: "scripted".into(),
    }
}

#[tokio::test]
async fn two_agents_messaging_each_other_are_stopped_by_the_hop_limit() {
    let agents = vec![
        agent(
            "name='ping'\npurpose='p'\nsystem_prompt='s'\nmay_message=['pong']\n[budget]\nmax_hops=6\n",
        ),
        agent("name='pong'\npurpose='p'\nsystem_prompt='s'\nmay_message=['ping']\n"),
    ];
    let model = FnModel(|req: &ModelRequest| {
        let other = if req.agent == "ping" { "pong" } else { "ping" };
        let n = req.messages.len();
        Ok(tool_use(
            &format!("c{n}"),
            "send_message",
            json!({"agent": other, "request": "your turn"}),
        ))
    });
    let sys = system_with(agents, Some(Arc::new(model)));
    let t = sys
        .kernel
        .submit("ping", "start the rally", None)
        .await
        .unwrap();
    let wakes = sys.drain().await;
    let task = sys.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    let err = task.error.unwrap();
    assert!(err.contains("hop limit reached"), "{err}");
    assert!(err.contains("over the task's limit of 6"), "{err}");
    assert!(err.contains("in a loop"), "{err}");
    assert_eq!(wakes, 8, "hops 0..=6 run, hop 7 is refused");
    assert_eq!(
        sys.queues.depth("ping").await.unwrap() + sys.queues.depth("pong").await.unwrap(),
        0
    );
}

/// One agent that calls a tool on every model turn and never answers.
fn tool_looper(extra_toml: &str) -> System {
    let agents = vec![agent(&format!(
        "name='busy'\npurpose='p'\nsystem_prompt='s'\ntools=['get_weather']\n{extra_toml}"
    ))];
    let model = FnModel(|req: &ModelRequest| {
        Ok(tool_use(
            &format!("c{}", req.messages.len()),
            "get_weather",
            json!({"city": "Oslo"}),
        ))
    });
    system_with(agents, Some(Arc::new(model)))
}

#[tokio::test]
async fn an_agent_that_never_stops_calling_tools_fails_with_a_reason() {
    let sys = tool_looper("[limits]\nmax_steps_per_wake=3\n");
    let t = sys
        .kernel
        .submit("busy", "loop forever", None)
        .await
        .unwrap();
    sys.drain().await;
    let task = sys.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert!(
        task.error
            .unwrap()
            .contains("made 3 model calls in one wake")
    );
    assert_eq!(task.usage.llm_calls, 3);
}

#[tokio::test]
async fn the_task_budget_stops_model_calls() {
    let sys = tool_looper("[budget]\nmax_llm_calls=2\n");
    let t = sys.kernel.submit("busy", "spend", None).await.unwrap();
    sys.drain().await;
    let task = sys.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(
        task.error.unwrap(),
        "budget exhausted: 2 model calls reached the task's limit of 2"
    );
    assert_eq!(task.usage.llm_calls, 2);
}

#[tokio::test]
async fn a_permanent_model_error_fails_the_task_and_a_transient_one_retries() {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let model = FnModel(
        move |_req: &ModelRequest| match c.fetch_add(1, Ordering::SeqCst) {
            0 => Err(LlmError::transient("429 throttled")),
            _ => Err(LlmError::Permanent("400 model not found".into())),
        },
    );
    let agents = vec![agent("name='solo'\npurpose='p'\nsystem_prompt='s'\n")];
    let sys = system_with(agents, Some(Arc::new(model)));
    let t = sys.kernel.submit("solo", "hi", None).await.unwrap();
    sys.drain().await;
    let task = sys.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(
        task.error.unwrap(),
        "agent solo: model call failed: 400 model not found"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "retried once after the transient error"
    );
}

#[tokio::test]
async fn envelopes_that_can_never_run_are_dead_lettered_with_a_reason() {
    let sys = system();
    let t = sys.kernel.submit("primary", DEMO, None).await.unwrap();
    let mut env = aos_kernel::kernel::first_envelope(&sys.task(t.id).await);
    env.id = aos_kernel::EnvelopeId::new(5);
    env.to = aos_kernel::AgentName::new("nobody").unwrap();
    let out = sys.kernel.wake(env.clone()).await.unwrap();
    assert_eq!(
        out,
        WakeOutcome::DeadLettered {
            reason: "unknown agent 'nobody'; known agents: finance, primary, weather".into()
        }
    );
    let dl = sys.queues.dead_letters("nobody", 10).await.unwrap();
    assert_eq!(dl.len(), 1);
    assert!(dl[0].body.contains(&env.id.to_string()));
    let task = sys.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    assert!(task.error.unwrap().contains("unknown agent 'nobody'"));

    // An envelope for a task that does not exist.
    let mut orphan = env.clone();
    orphan.to = aos_kernel::AgentName::new("weather").unwrap();
    orphan.task = TaskId::new(9);
    let out = sys.kernel.wake(orphan).await.unwrap();
    assert!(
        matches!(out, WakeOutcome::DeadLettered { ref reason } if reason.contains("does not exist"))
    );

    // A body over the limit.
    let mut huge = env;
    huge.id = aos_kernel::EnvelopeId::new(6);
    huge.to = aos_kernel::AgentName::new("weather").unwrap();
    huge.kind = Kind::Message;
    huge.body = "x".repeat(aos_kernel::model::MAX_BODY_BYTES + 1);
    let out = sys.kernel.wake(huge).await.unwrap();
    assert!(
        matches!(out, WakeOutcome::DeadLettered { ref reason } if reason.contains("exceeds the limit"))
    );
    let parked = sys.queues.dead_letters("weather", 10).await.unwrap();
    let last = parked.last().unwrap();
    assert!(
        last.body.len() < 70 * 1024,
        "the dead letter keeps a preview, not 4 MB"
    );
    assert!(last.body.contains("bytes omitted from the dead letter"));

    // A body sent by reference is parked as the reference, not as the fetched text.
    use aos_kernel::ports::BlobStore;
    sys.blobs
        .put("bodies/big", "y".repeat(300_000).as_bytes())
        .await
        .unwrap();
    let mut by_ref = parked_env_template(&sys, t.id).await;
    by_ref.task = TaskId::new(10);
    by_ref.body_ref = Some("bodies/big".into());
    let out = sys.kernel.wake(by_ref).await.unwrap();
    assert!(
        matches!(out, WakeOutcome::DeadLettered { ref reason } if reason.contains("does not exist"))
    );
    let parked = sys.queues.dead_letters("weather", 10).await.unwrap();
    let last = Envelope::parse(&parked.last().unwrap().body).unwrap();
    assert_eq!(last.body_ref.as_deref(), Some("bodies/big"));
    assert!(last.body.is_empty());
}

async fn parked_env_template(sys: &System, task: TaskId) -> Envelope {
    let mut env = aos_kernel::kernel::first_envelope(&sys.task(task).await);
    env.id = aos_kernel::EnvelopeId::new(7);
    env.to = aos_kernel::AgentName::new("weather").unwrap();
    env.kind = Kind::Message;
    env.body = String::new();
    env
}

#[tokio::test]
async fn large_replies_travel_through_the_blob_store_intact() {
    let big = "word ".repeat(60_000); // 300 KB, over the inline limit
    let b = big.clone();
    let model = FnModel(move |req: &ModelRequest| {
        let last = req.messages.last().unwrap();
        let has_result = last
            .content
            .iter()
            .any(|c| matches!(c, Content::ToolResult { .. }));
        Ok(match (req.agent.as_str(), has_result) {
            ("boss", false) => tool_use(
                "c1",
                "send_message",
                json!({"agent": "writer", "request": "write a lot"}),
            ),
            ("boss", true) => {
                let Content::ToolResult { content, .. } = &last.content[0] else {
                    panic!()
                };
                text(&format!("got {} bytes", content.len()))
            }
            _ => text(&b),
        })
    });
    let agents = vec![
        agent("name='boss'\npurpose='p'\nsystem_prompt='s'\nmay_message=['writer']\n"),
        agent("name='writer'\npurpose='p'\nsystem_prompt='s'\n"),
    ];
    let sys = system_with(agents, Some(Arc::new(model)));
    let t = sys.kernel.submit("boss", "go", None).await.unwrap();
    sys.drain().await;
    let task = sys.task(t.id).await;
    assert_eq!(task.result.unwrap(), format!("got {} bytes", big.len()));
    let sent = sys.queues.sent.lock().unwrap();
    let reply = sent.iter().find(|e| e.kind == Kind::Reply).unwrap();
    assert!(
        reply.body.is_empty() && reply.body_ref.is_some(),
        "reply went by reference"
    );
}

fn text(t: &str) -> ModelResponse {
    ModelResponse {
        content: vec![Content::Text { text: t.into() }],
        stop: StopReason::EndTurn,
        usage: Usage {
            llm_calls: 1,
            ..Usage::default()
        },
        model: "scripted".into(),
    }
}

/// The long-term memory of agent `solo`, as its next wake on task `task` loads it.
async fn solo_memory(sys: &System, task: TaskId) -> Vec<aos_kernel::model::MemoryNote> {
    use aos_kernel::ports::SessionStore;
    let key = aos_kernel::model::SessionKey {
        agent: aos_kernel::AgentName::new("solo").unwrap(),
        session: aos_kernel::kernel::root_session(task),
    };
    sys.store
        .load(&key, task, aos_kernel::EnvelopeId::new(0), "solo", 10)
        .await
        .unwrap()
        .memory
}

#[tokio::test]
async fn scheduled_wakeups_resume_the_session_and_remember_persists() {
    let model = FnModel(|req: &ModelRequest| {
        let n = req.messages.len();
        Ok(match n {
            1 => tool_use(
                "c1",
                "schedule_wakeup",
                json!({"after_seconds": 60, "note": "check again"}),
            ),
            3 => tool_use("c2", "remember", json!({"note": "the user likes brevity"})),
            _ => {
                let mem = req.system.contains("the user likes brevity");
                text(&format!("done (memory: {mem})"))
            }
        })
    });
    let agents = vec![agent("name='solo'\npurpose='p'\nsystem_prompt='s'\n")];
    let sys = system_with(agents, Some(Arc::new(model)));
    let t = sys
        .kernel
        .submit("solo", "wait a minute", None)
        .await
        .unwrap();
    sys.drain().await;
    assert_eq!(sys.task(t.id).await.status, TaskStatus::Waiting);
    let scheduled: Vec<(u64, Envelope)> = sys
        .scheduler
        .scheduled
        .lock()
        .unwrap()
        .values()
        .cloned()
        .collect();
    assert_eq!(scheduled.len(), 1);
    // Due 60 s after the wake that asked (its time is the envelope's sent_at).
    assert_eq!(scheduled[0].0, scheduled[0].1.sent_at + 60_000);
    assert!(scheduled[0].1.sent_at >= sys.clock.now_ms());
    sys.clock.advance(60_000);
    sys.queues.send(&[scheduled[0].1.clone()]).await.unwrap();
    sys.drain().await;
    let task = sys.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Succeeded);
    // Memory written in this wake is visible from the next load on.
    assert_eq!(task.result.unwrap(), "done (memory: false)");
    let memory = solo_memory(&sys, t.id).await;
    assert_eq!(memory.len(), 1);
    assert_eq!(memory[0].text, "the user likes brevity");
}

#[tokio::test]
async fn an_over_long_memory_note_is_refused_to_the_model_and_nothing_is_stored() {
    let model = FnModel(|req: &ModelRequest| {
        Ok(match req.messages.len() {
            1 => tool_use("c1", "remember", json!({"note": "x".repeat(1001)})),
            _ => {
                let told = serde_json::to_string(&req.messages).unwrap();
                text(&format!(
                    "told: {}",
                    told.contains("at most 1000 characters")
                ))
            }
        })
    });
    let agents = vec![agent("name='solo'\npurpose='p'\nsystem_prompt='s'\n")];
    let sys = system_with(agents, Some(Arc::new(model)));
    let t = sys
        .kernel
        .submit("solo", "remember this", None)
        .await
        .unwrap();
    sys.drain().await;
    let task = sys.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}");
    assert_eq!(
        task.result.as_deref(),
        Some("told: true"),
        "the model is told why, and can shorten the note"
    );
    let memory = solo_memory(&sys, t.id).await;
    assert!(memory.is_empty(), "nothing is stored");
}

#[tokio::test]
async fn resubmitting_a_task_id_is_idempotent_and_recovery_resends_queued_tasks() {
    let sys = system();
    let id = TaskId::new(1_800_000_000_000);
    sys.queues.fail_sends.store(1, Ordering::SeqCst);
    let err = sys
        .kernel
        .submit("primary", DEMO, Some(id))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("task {id} was recorded but could not be started")),
        "{err}"
    );
    assert_eq!(
        sys.task(id).await.status,
        TaskStatus::Queued,
        "recorded, not lost"
    );
    assert_eq!(sys.kernel.recover().await.unwrap(), 1);
    let again = sys.kernel.submit("primary", DEMO, Some(id)).await.unwrap();
    assert_eq!(again.id, id);
    sys.drain().await;
    let task = sys.task(id).await;
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(
        task.usage.wakes, 5,
        "the first envelope ran once despite three sends"
    );
    assert_eq!(sys.kernel.recover().await.unwrap(), 0);
}
