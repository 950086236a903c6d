//! Model steps meet the real world: each step paid for once however often a wake is
//! retried, stop reasons that never pass as answers, the kernel's tool allow-list and
//! per-response limit, tools with effects run at most once, retry-after and the
//! invocation deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_kernel::llm::{
    Content, LlmError, Model, ModelRequest, ModelResponse, StopReason, ToolSpec,
};
use aos_kernel::model::{AgentDef, Envelope, Kind, TaskStatus, Usage};
use aos_kernel::ports::{Clock, Inbox, TaskStore};
use aos_kernel::testkit::MemSystem;
use aos_kernel::tools::{Tool, ToolContext, ToolError, ToolMeta, ToolRegistry};
use aos_kernel::{Catalog, Retry, TaskId, WakeOutcome};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A tool that echoes its input and counts its calls.
struct Echo {
    name: &'static str,
    meta: ToolMeta,
    calls: AtomicU64,
}

#[async_trait]
impl Tool for Echo {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name.into(),
            description: "echo".into(),
            input_schema: json!({"type": "object"}),
        }
    }
    fn meta(&self) -> ToolMeta {
        self.meta.clone()
    }
    async fn call(&self, input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(format!("{} got {}", self.name, input))
    }
}

/// A scripted model: answers each request from a function, counts requests, keeps
/// them, and bills each call 100 input + 10 output + 50 cached tokens and $0.001.
struct Scripted<F> {
    script: F,
    requests: Mutex<Vec<ModelRequest>>,
}

impl<F> Scripted<F> {
    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

#[async_trait]
impl<F> Model for Scripted<F>
where
    F: Fn(&ModelRequest) -> Result<(Vec<Content>, StopReason), LlmError> + Send + Sync,
{
    async fn complete(&self, r: &ModelRequest) -> Result<ModelResponse, LlmError> {
        self.requests.lock().unwrap().push(r.clone());
        let (content, stop) = (self.script)(r)?;
        Ok(ModelResponse {
            content,
            stop,
            usage: billed(),
            // A paid provider's route: its responses are journaled.
            model: "scripted:model-1".into(),
        })
    }
}

fn billed() -> Usage {
    Usage {
        llm_calls: 1,
        input_tokens: 100,
        output_tokens: 10,
        cache_read_tokens: 50,
        cost_micros: 1_000,
        ..Usage::default()
    }
}

fn text(t: &str) -> (Vec<Content>, StopReason) {
    (vec![Content::Text { text: t.into() }], StopReason::EndTurn)
}

fn calls(list: &[(&str, &str, Value)]) -> (Vec<Content>, StopReason) {
    let content = list
        .iter()
        .map(|(id, name, input)| Content::ToolUse {
            id: (*id).into(),
            name: (*name).into(),
            input: input.clone(),
        })
        .collect();
    (content, StopReason::ToolUse)
}

/// The tool results of the request's last message: (is_error, content).
fn last_results(r: &ModelRequest) -> Vec<(bool, String)> {
    r.messages
        .last()
        .map(|m| {
            m.content
                .iter()
                .filter_map(|c| match c {
                    Content::ToolResult {
                        content, is_error, ..
                    } => Some((*is_error, content.clone())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

struct Rig<F> {
    sys: MemSystem,
    model: Arc<Scripted<F>>,
    lookup: Arc<Echo>,
    ticket: Arc<Echo>,
    secret: Arc<Echo>,
}

fn rig<F>(extra_toml: &str, script: F) -> Rig<F>
where
    F: Fn(&ModelRequest) -> Result<(Vec<Content>, StopReason), LlmError> + Send + Sync + 'static,
{
    let toml = format!(
        "name='clerk'\npurpose='files tickets'\nsystem_prompt='be a clerk'\n\
         tools=['lookup','file_ticket']\n{extra_toml}"
    );
    let clerk = AgentDef::from_toml(&toml).unwrap();
    let echo = |name, meta| {
        Arc::new(Echo {
            name,
            meta,
            calls: AtomicU64::new(0),
        })
    };
    let lookup = echo("lookup", ToolMeta::default());
    let ticket = echo(
        "file_ticket",
        ToolMeta {
            idempotent: false,
            read_only: false,
            ..ToolMeta::default()
        },
    );
    // Registered, but on no agent's list.
    let secret = echo("secret", ToolMeta::default());
    let tools = ToolRegistry::new()
        .with(lookup.clone())
        .with(ticket.clone())
        .with(secret.clone());
    let model = Arc::new(Scripted {
        script,
        requests: Mutex::new(Vec::new()),
    });
    let sys = MemSystem::new(
        Catalog::new(vec![clerk]).unwrap(),
        tools,
        Some(model.clone()),
    );
    Rig {
        sys,
        model,
        lookup,
        ticket,
        secret,
    }
}

/// Three steps: two lookups, then an answer quoting both results.
fn three_steps(r: &ModelRequest) -> Result<(Vec<Content>, StopReason), LlmError> {
    Ok(match r.messages.len() {
        1 => calls(&[("call-a", "lookup", json!({"q": "a"}))]),
        3 => calls(&[("call-b", "lookup", json!({"q": "b"}))]),
        _ => {
            let got: Vec<String> = r
                .messages
                .iter()
                .flat_map(|m| m.content.iter())
                .filter_map(|c| match c {
                    Content::ToolResult { content, .. } => Some(content.clone()),
                    _ => None,
                })
                .collect();
            text(&format!("done: {}", got.join(" | ")))
        }
    })
}

impl<F> Rig<F> {
    async fn task(&self, id: TaskId) -> aos_kernel::Task {
        self.sys.store.get_task(id).await.unwrap().unwrap()
    }
    async fn next(&self, agent: &str) -> Envelope {
        let m = self.sys.queues.receive(agent, 1, 30_000).await.unwrap();
        let m = m.into_iter().next().expect("a message waits");
        self.sys.queues.delete(agent, &m.receipt).await.unwrap();
        Envelope::parse(&m.body).unwrap()
    }
}

#[tokio::test]
async fn a_commit_conflict_and_a_crash_in_a_multi_step_wake_pay_for_each_step_once() {
    for (conflicts, crashes) in [(1, 0), (0, 1), (2, 1)] {
        let rig = rig("", three_steps);
        let t = rig
            .sys
            .kernel
            .submit("clerk", "file it", None)
            .await
            .unwrap();
        rig.sys
            .store
            .conflict_commits
            .store(conflicts, Ordering::SeqCst);
        rig.sys.store.fail_commits.store(crashes, Ordering::SeqCst);
        rig.sys.drain().await;
        let task = rig.task(t.id).await;
        assert_eq!(task.status, TaskStatus::Succeeded, "{conflicts}/{crashes}");
        let answer = task.result.unwrap();
        assert!(answer.contains(r#"lookup got {"q":"a"}"#), "{answer}");
        assert!(answer.contains(r#"lookup got {"q":"b"}"#), "{answer}");
        // Three distinct steps, three requests, whatever was retried.
        assert_eq!(rig.model.count(), 3, "{conflicts}/{crashes}");
        assert_eq!(rig.lookup.calls.load(Ordering::SeqCst), 2);
        // The task's usage is exactly what the provider billed.
        let mut expected = Usage::default();
        for _ in 0..3 {
            expected.add(&billed());
        }
        assert_eq!(task.usage.llm_calls, expected.llm_calls);
        assert_eq!(task.usage.input_tokens, expected.input_tokens);
        assert_eq!(task.usage.output_tokens, expected.output_tokens);
        assert_eq!(task.usage.cache_read_tokens, expected.cache_read_tokens);
        assert_eq!(task.usage.cost_micros, expected.cost_micros);
    }
}

#[tokio::test]
async fn memory_rides_after_the_cached_prefix_and_the_session_is_the_cache_key() {
    let rig = rig("", |_r: &ModelRequest| Ok(text("ok")));
    let t = rig.sys.kernel.submit("clerk", "hello", None).await.unwrap();
    rig.sys.drain().await;
    assert_eq!(rig.task(t.id).await.status, TaskStatus::Succeeded);
    let r = rig.model.requests.lock().unwrap()[0].clone();
    assert_eq!(
        r.cache_key.as_deref(),
        Some(format!("clerk/{}", t.id).as_str())
    );
    assert!(
        !r.system.contains("memory"),
        "memory must not break the cached system prompt"
    );
    assert!(r.tools.iter().any(|t| t.name == "recall"));
}

#[tokio::test]
async fn a_cut_off_answer_never_runs_its_tool_call_and_fails_the_task() {
    let rig = rig("", |_r: &ModelRequest| {
        let (c, _) = calls(&[("x", "lookup", json!({"q": "tru"}))]);
        Ok((c, StopReason::MaxTokens))
    });
    let t = rig.sys.kernel.submit("clerk", "go", None).await.unwrap();
    rig.sys.drain().await;
    let task = rig.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    let e = task.error.unwrap();
    assert!(e.contains("cut off") && e.contains("were not run"), "{e}");
    assert_eq!(rig.lookup.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_refusal_or_a_content_filter_is_a_failure_with_a_reason() {
    for (stop, words) in [
        (StopReason::Refusal, "refused"),
        (StopReason::ContentFilter, "content filter"),
    ] {
        let rig = rig("", move |_r: &ModelRequest| {
            Ok((
                vec![Content::Text {
                    text: "I can't help with that.".into(),
                }],
                stop,
            ))
        });
        let t = rig.sys.kernel.submit("clerk", "go", None).await.unwrap();
        rig.sys.drain().await;
        let task = rig.task(t.id).await;
        assert_eq!(task.status, TaskStatus::Failed);
        assert_eq!(task.result, None);
        assert!(task.error.unwrap().contains(words));
    }
}

#[tokio::test]
async fn a_disallowed_tool_and_bad_arguments_go_back_to_the_model_and_the_task_goes_on() {
    let rig = rig("", |r: &ModelRequest| {
        Ok(match r.messages.len() {
            1 => calls(&[
                ("s", "secret", json!({})),
                ("m", "send_message", json!("not an object")),
            ]),
            _ => {
                let results = last_results(r);
                assert!(results.iter().all(|(err, _)| *err), "{results:?}");
                text(&format!("recovered after: {}", results[0].1))
            }
        })
    });
    let t = rig.sys.kernel.submit("clerk", "go", None).await.unwrap();
    rig.sys.drain().await;
    let task = rig.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert!(task.result.unwrap().contains("no tool named \"secret\""));
    assert_eq!(rig.secret.calls.load(Ordering::SeqCst), 0, "never the tool");
}

#[tokio::test]
async fn tool_calls_past_the_per_response_limit_are_not_run() {
    let rig = rig(
        "[limits]\nmax_tool_calls_per_step = 2\n",
        |r: &ModelRequest| {
            Ok(match r.messages.len() {
                1 => calls(&[
                    ("1", "lookup", json!({"q": 1})),
                    ("2", "lookup", json!({"q": 2})),
                    ("3", "lookup", json!({"q": 3})),
                ]),
                _ => {
                    let results = last_results(r);
                    assert_eq!(results.len(), 3, "every call gets a result");
                    assert!(!results[1].0 && results[2].0, "{results:?}");
                    text(&results[2].1)
                }
            })
        },
    );
    let t = rig.sys.kernel.submit("clerk", "go", None).await.unwrap();
    rig.sys.drain().await;
    let task = rig.task(t.id).await;
    assert!(task.result.unwrap().contains("at most 2 tool calls"));
    assert_eq!(rig.lookup.calls.load(Ordering::SeqCst), 2);
}

fn ticket_then_answer(r: &ModelRequest) -> Result<(Vec<Content>, StopReason), LlmError> {
    Ok(match r.messages.len() {
        1 => calls(&[("t1", "file_ticket", json!({"title": "printer"}))]),
        _ => text(&format!("ticket: {}", last_results(r)[0].1)),
    })
}

#[tokio::test]
async fn a_tool_with_effects_runs_once_in_a_wake_of_its_own_even_when_delivered_twice() {
    let rig = rig("", ticket_then_answer);
    let t = rig
        .sys
        .kernel
        .submit("clerk", "file a ticket", None)
        .await
        .unwrap();
    let first = rig.next("clerk").await;
    rig.sys.kernel.wake(first).await.unwrap();
    let tool_env = rig.next("clerk").await;
    assert_eq!(tool_env.kind, Kind::Tool);
    assert_eq!(rig.ticket.calls.load(Ordering::SeqCst), 0, "not run inline");
    let out = rig.sys.kernel.wake(tool_env.clone()).await.unwrap();
    assert_eq!(out, WakeOutcome::Applied { outbox: 1 });
    // SQS delivers it again: nothing runs.
    let again = rig.sys.kernel.wake(tool_env).await.unwrap();
    assert_eq!(again, WakeOutcome::Duplicate);
    rig.sys.drain().await;
    let task = rig.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(
        task.result.unwrap(),
        r#"ticket: file_ticket got {"title":"printer"}"#
    );
    assert_eq!(rig.ticket.calls.load(Ordering::SeqCst), 1);
    assert_eq!(task.usage.tool_calls, 1);
}

#[tokio::test]
async fn a_tool_with_effects_interrupted_after_it_started_is_not_run_again() {
    let rig = rig("", ticket_then_answer);
    let t = rig
        .sys
        .kernel
        .submit("clerk", "file a ticket", None)
        .await
        .unwrap();
    let first = rig.next("clerk").await;
    rig.sys.kernel.wake(first).await.unwrap();
    let tool_env = rig.next("clerk").await;
    // The tool runs, then sending its result fails (as if the process died).
    rig.sys.queues.fail_sends.store(1, Ordering::SeqCst);
    assert!(rig.sys.kernel.wake(tool_env.clone()).await.is_err());
    assert_eq!(
        rig.sys.kernel.wake(tool_env).await.unwrap(),
        WakeOutcome::Duplicate
    );
    rig.sys.drain().await;
    let task = rig.task(t.id).await;
    assert_eq!(rig.ticket.calls.load(Ordering::SeqCst), 1, "at most once");
    let answer = task.result.unwrap();
    assert!(
        answer.contains("outcome of file_ticket is unknown"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_throttled_model_releases_the_record_with_the_providers_delay() {
    let rig = rig("", |_r: &ModelRequest| {
        Err(LlmError::Transient {
            reason: "429 slow down".into(),
            retry_after_ms: Some(7_000),
        })
    });
    rig.sys.kernel.submit("clerk", "go", None).await.unwrap();
    let env = rig.next("clerk").await;
    let err: Retry = rig.sys.kernel.wake(env).await.unwrap_err();
    assert_eq!(err.delay_ms, Some(7_000));
    assert!(err.reason.contains("429 slow down"));
}

#[tokio::test]
async fn a_wake_past_its_invocation_deadline_goes_on_in_the_next_without_paying_twice() {
    // Each model call takes 10 s of (manual) time.
    let clock = Arc::new(Mutex::new(None::<Arc<aos_kernel::testkit::ManualClock>>));
    let c = clock.clone();
    let rig = rig("", move |r: &ModelRequest| {
        if let Some(clock) = c.lock().unwrap().as_ref() {
            clock.advance(10_000);
        }
        three_steps(r)
    });
    *clock.lock().unwrap() = Some(rig.sys.clock.clone());
    let t = rig.sys.kernel.submit("clerk", "go", None).await.unwrap();
    let env = rig.next("clerk").await;
    // 11 s left and a 2 s margin: the first step starts, the second may not.
    let deadline = rig.sys.clock.now_ms() + 11_000;
    let err = rig
        .sys
        .kernel
        .wake_until(env.clone(), Some(deadline), true)
        .await
        .unwrap_err();
    assert_eq!(err.delay_ms, Some(0));
    assert_eq!(rig.model.count(), 1);
    assert_eq!(
        rig.model.requests.lock().unwrap()[0].timeout_ms,
        Some(9_000),
        "the request must end before the deadline less the margin"
    );
    // The next invocation replays step one and goes on.
    let deadline = rig.sys.clock.now_ms() + 60_000;
    rig.sys
        .kernel
        .wake_until(env, Some(deadline), false)
        .await
        .unwrap();
    let task = rig.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(rig.model.count(), 3, "three steps, three requests");
    assert_eq!(task.usage.llm_calls, 3);
    assert_eq!(rig.lookup.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn recall_finds_remembered_notes_by_their_words() {
    let rig = rig("", |r: &ModelRequest| {
        Ok(match r.messages.len() {
            1 => calls(&[
                (
                    "r1",
                    "remember",
                    json!({"note": "The printer on floor 3 jams on A3 paper"}),
                ),
                ("r2", "remember", json!({"note": "Alice prefers email"})),
            ]),
            3 => calls(&[("q", "recall", json!({"query": "which printer jams?"}))]),
            _ => text(&last_results(r)[0].1),
        })
    });
    let t = rig
        .sys
        .kernel
        .submit("clerk", "note things", None)
        .await
        .unwrap();
    rig.sys.drain().await;
    // Memory written by one task is recalled by the next.
    let t2 = rig
        .sys
        .kernel
        .submit("clerk", "and now?", None)
        .await
        .unwrap();
    rig.sys.drain().await;
    for id in [t.id, t2.id] {
        let r = rig.task(id).await.result.unwrap();
        assert!(r.starts_with("- The printer on floor 3 jams"), "{r}");
        assert!(!r.contains("Alice"), "{r}");
    }
}
