//! What the kernel gives observability: a trace id chosen at submit (X-Ray's) rides on
//! the task and every envelope of it, and a wake says what it spent so the handler
//! can emit it as metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_kernel::llm::{Content, LlmError, ModelRequest, ModelResponse, StopReason, ToolSpec};
use aos_kernel::model::{AgentDef, Envelope, Usage};
use aos_kernel::ports::Inbox;
use aos_kernel::testkit::{FnModel, MemSystem};
use aos_kernel::tools::{Tool, ToolContext, ToolError, ToolMeta, ToolRegistry};
use aos_kernel::{Catalog, Submission, WakeOutcome};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

const XRAY: &str = "1-5759e988-bd862e3fe1be46a994272793";

fn solo(model: Option<Arc<dyn aos_kernel::llm::Model>>) -> MemSystem {
    let agents = vec![
        AgentDef::from_toml("name='solo'\npurpose='p'\nsystem_prompt='s'\nmodel='openai/gpt'\n")
            .unwrap(),
    ];
    MemSystem::new(Catalog::new(agents).unwrap(), ToolRegistry::new(), model)
}

fn submission(key: Option<&str>) -> Submission<'_> {
    Submission {
        tenant: "acme",
        agent: "solo",
        input: "hello",
        idempotency_key: key,
    }
}

async fn first_envelope(sys: &MemSystem) -> Envelope {
    let msgs = sys.queues.receive("solo", 10, 30_000).await.unwrap();
    assert_eq!(msgs.len(), 1);
    Envelope::parse(&msgs[0].body).unwrap()
}

#[tokio::test]
async fn a_chosen_trace_id_is_the_tasks_and_rides_on_its_envelopes() {
    let sys = solo(None);
    let s = sys
        .kernel
        .submit_traced(submission(None), Some(XRAY))
        .await
        .unwrap();
    assert_eq!(s.task.trace_id, XRAY);
    assert_eq!(first_envelope(&sys).await.trace_id, XRAY);
}

#[tokio::test]
async fn a_bad_or_missing_trace_id_falls_back_to_the_tasks_own() {
    let too_long = "x".repeat(129);
    for bad in [
        None,
        Some(""),
        Some("has space"),
        Some("é"),
        Some(&*too_long),
    ] {
        let sys = solo(None);
        let s = sys
            .kernel
            .submit_traced(submission(None), bad)
            .await
            .unwrap();
        assert_eq!(s.task.trace_id, format!("trace-{}", s.task.id), "{bad:?}");
    }
    assert!(aos_kernel::kernel::valid_trace_id(&"x".repeat(128)));
}

#[tokio::test]
async fn a_retried_submit_keeps_the_first_trace_id() {
    let sys = solo(None);
    let first = sys
        .kernel
        .submit_traced(submission(Some("k1")), Some(XRAY))
        .await
        .unwrap();
    let again = sys
        .kernel
        .submit_traced(
            submission(Some("k1")),
            Some("1-00000000-000000000000000000000000"),
        )
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.task.trace_id, first.task.trace_id);
}

/// A lookup the model calls before it answers.
struct Lookup;

#[async_trait::async_trait]
impl Tool for Lookup {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "lookup".into(),
            description: "looks up".into(),
            input_schema: json!({"type": "object"}),
        }
    }
    fn meta(&self) -> ToolMeta {
        ToolMeta::default()
    }
    async fn call(&self, _input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        Ok("found".into())
    }
}

fn with_lookup(model: impl aos_kernel::llm::Model + 'static) -> MemSystem {
    let agents = vec![
        AgentDef::from_toml(
            "name='solo'\npurpose='p'\nsystem_prompt='s'\nmodel='openai/gpt'\ntools=['lookup']\n",
        )
        .unwrap(),
    ];
    let tools = ToolRegistry::new().with(Arc::new(Lookup));
    MemSystem::new(Catalog::new(agents).unwrap(), tools, Some(Arc::new(model)))
}

fn usage() -> Usage {
    Usage {
        input_tokens: 100,
        output_tokens: 20,
        cost_micros: 7,
        ..Usage::default()
    }
}

/// Step 1 calls the lookup; step 2 answers, except on the calls `refused` lists
/// (counted from 0), which fail transiently.
fn scripted(calls: Arc<AtomicU32>, refused: &'static [u32]) -> impl aos_kernel::llm::Model {
    FnModel(
        move |request: &ModelRequest| -> Result<ModelResponse, LlmError> {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if refused.contains(&n) {
                return Err(LlmError::Transient {
                    reason: "busy".into(),
                    retry_after_ms: Some(1000),
                });
            }
            let after_tool = request.messages.last().is_some_and(|m| {
                m.content
                    .iter()
                    .any(|c| matches!(c, Content::ToolResult { .. }))
            });
            let (content, stop) = if after_tool {
                (
                    vec![Content::Text {
                        text: "done".into(),
                    }],
                    StopReason::EndTurn,
                )
            } else {
                (
                    vec![Content::ToolUse {
                        id: "c1".into(),
                        name: "lookup".into(),
                        input: json!({}),
                    }],
                    StopReason::ToolUse,
                )
            };
            Ok(ModelResponse {
                content,
                stop,
                usage: usage(),
                model: "openai/gpt".into(),
            })
        },
    )
}

#[tokio::test]
async fn a_wake_reports_the_model_calls_it_made_and_a_duplicate_none() {
    let calls = Arc::new(AtomicU32::new(0));
    let sys = with_lookup(scripted(calls.clone(), &[]));
    sys.kernel.submit("solo", "hello", None).await.unwrap();
    let env = first_envelope(&sys).await;
    let (outcome, used) = sys.kernel.wake_metered(env.clone(), None, true).await;
    assert!(
        matches!(outcome, Ok(WakeOutcome::Applied { .. })),
        "{outcome:?}"
    );
    assert_eq!(used.llm_calls, 2);
    assert_eq!((used.input_tokens, used.output_tokens), (200, 40));
    assert_eq!(used.cost_micros, 14);
    assert_eq!(used.wakes, 0);
    let (outcome, used) = sys.kernel.wake_metered(env, None, false).await;
    assert_eq!(outcome, Ok(WakeOutcome::Duplicate));
    assert_eq!(used, Usage::default());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_retried_wake_reports_what_it_paid_for_and_its_replay_only_new_calls() {
    // The first delivery pays for step 1, then step 2 is refused: the wake is retried,
    // and still reports the call it paid for. The second delivery replays step 1 from
    // the journal for free and pays for step 2 only.
    let calls = Arc::new(AtomicU32::new(0));
    let sys = with_lookup(scripted(calls.clone(), &[1]));
    sys.kernel.submit("solo", "hello", None).await.unwrap();
    let env = first_envelope(&sys).await;
    let (outcome, used) = sys.kernel.wake_metered(env.clone(), None, true).await;
    assert_eq!(outcome.unwrap_err().delay_ms, Some(1000));
    assert_eq!(used.llm_calls, 1, "the refused call is not an answered one");
    assert_eq!(used.cost_micros, 7);
    let (outcome, used) = sys.kernel.wake_metered(env, None, false).await;
    assert!(
        matches!(outcome, Ok(WakeOutcome::Applied { .. })),
        "{outcome:?}"
    );
    assert_eq!(used.llm_calls, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}
