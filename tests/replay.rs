//! `aos replay --task` as a library: a finished task re-run from its journal matches
//! its timeline exactly with no model or tool reached, and after an agent's prompt
//! changes the replay shows the very step where the run diverges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos::replay::{DiffLine, replay_task};
use aos::runtime::{Providers, Runtime, RuntimeConfig};
use aos_agents::reference_agents;
use aos_kernel::llm::{Content, LlmError, Model, ModelRequest, ModelResponse, StopReason};
use aos_kernel::model::{AgentDef, Usage};
use aos_kernel::{Catalog, TaskStatus};
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A paid provider playing the demo: delegate, call tools, answer from results.
struct Demo {
    calls: AtomicU64,
}

#[async_trait]
impl Model for Demo {
    async fn complete(&self, r: &ModelRequest) -> Result<ModelResponse, LlmError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let last_is_results = r.messages.last().is_some_and(|m| {
            m.content
                .iter()
                .all(|c| matches!(c, Content::ToolResult { .. }))
        });
        let use_tool = |id: &str, name: &str, input| Content::ToolUse {
            id: id.into(),
            name: name.into(),
            input,
        };
        let (content, stop) = if last_is_results {
            let text: Vec<String> = r
                .messages
                .last()
                .unwrap()
                .content
                .iter()
                .filter_map(|c| match c {
                    Content::ToolResult { content, .. } => Some(content.clone()),
                    _ => None,
                })
                .collect();
            (
                vec![Content::Text {
                    text: text.join(" / "),
                }],
                StopReason::EndTurn,
            )
        } else {
            let calls = match r.agent.as_str() {
                "primary" => vec![
                    use_tool(
                        "w",
                        "send_message",
                        json!({"agent": "weather", "request": "Weather in Oslo?"}),
                    ),
                    use_tool(
                        "f",
                        "send_message",
                        json!({"agent": "finance", "request": "12 * (3 + 4)?"}),
                    ),
                ],
                "weather" => vec![use_tool("g", "get_weather", json!({"city": "Oslo"}))],
                _ => vec![use_tool(
                    "c",
                    "calculator",
                    json!({"expression": "12 * (3 + 4)"}),
                )],
            };
            (calls, StopReason::ToolUse)
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
            model: "scripted:demo".into(),
        })
    }
}

fn config(dir: &std::path::Path, model: Arc<Demo>) -> RuntimeConfig {
    let mut c = RuntimeConfig {
        db: dir.join("aos.db"),
        ..RuntimeConfig::default()
    };
    // Live weather against a closed local port: get_weather does real (failing) I/O,
    // answers from its samples, and its result is journaled like any tool with I/O.
    c.tools.offline = false;
    c.tools.open_meteo_base = "http://127.0.0.1:9".into();
    c.tools.geocoding_base = "http://127.0.0.1:9".into();
    c.kernel.default_model = "scripted:demo".into();
    c.providers = Providers(vec![("scripted".into(), model as Arc<dyn Model>)]);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_matches_the_run_and_a_changed_prompt_shows_where_it_diverges() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(Demo {
        calls: AtomicU64::new(0),
    });
    let runtime = Runtime::open_with(
        config(dir.path(), model.clone()),
        Catalog::new(reference_agents().unwrap()).unwrap(),
    )
    .unwrap();
    let running = runtime.start().await.unwrap();
    let kernel = runtime.kernel().clone();
    let task = kernel
        .submit("primary", "Oslo weather and 12 * (3 + 4)?", None)
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let t = kernel
            .ports()
            .tasks
            .get_task(task.id)
            .await
            .unwrap()
            .unwrap();
        if t.status.is_final() {
            assert_eq!(t.status, TaskStatus::Succeeded, "{t:?}");
            break;
        }
        assert!(Instant::now() < until);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.shutdown(Duration::from_secs(5)).await;
    assert_eq!(model.calls.load(Ordering::SeqCst), 6);
    let ports = kernel.ports().clone();

    // Unchanged: the same timeline, nothing reached the model or a tool.
    let same = replay_task(
        task.id,
        ports.tasks.clone(),
        ports.blobs.clone(),
        Catalog::new(reference_agents().unwrap()).unwrap(),
        config(dir.path(), model.clone()),
        &dir.path().join("scratch"),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(same.same(), "{}", aos::replay::render(&same));
    assert_eq!(same.replayed.result, same.original.result);
    assert_eq!(
        (same.replayed_steps, same.replayed_tools),
        (6, 1),
        "get_weather's result; the calculator is pure and runs again"
    );
    assert_eq!((same.unrecorded_steps, same.unrecorded_tools), (0, 0));
    assert_eq!(
        model.calls.load(Ordering::SeqCst),
        6,
        "the replay called no model"
    );

    // The weather agent's prompt changed: its first step is not in the recording.
    let agents: Vec<AgentDef> = reference_agents()
        .unwrap()
        .into_iter()
        .map(|mut a| {
            if a.name.as_str() == "weather" {
                a.system_prompt.push_str("\nAlways answer in French.");
            }
            a
        })
        .collect();
    let changed = replay_task(
        task.id,
        ports.tasks,
        ports.blobs,
        Catalog::new(agents).unwrap(),
        config(dir.path(), model.clone()),
        &dir.path().join("scratch2"),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(!changed.same());
    assert_eq!(changed.replayed.status, TaskStatus::Failed);
    // Weather's first model step was not in the recording: it is gone from the replay,
    // and in its place the step failed saying why.
    assert!(
        changed
            .diff
            .iter()
            .any(|l| matches!(l, DiffLine::Removed(s) if s.starts_with("weather   model"))),
        "{}",
        aos::replay::render(&changed)
    );
    let added: Vec<&String> = changed
        .diff
        .iter()
        .filter_map(|l| match l {
            DiffLine::Added(s) => Some(s),
            _ => None,
        })
        .collect();
    assert!(
        added
            .iter()
            .any(|l| l
                .contains("replay diverged: no recorded response for this step of agent weather")),
        "{added:#?}"
    );
    assert_eq!(changed.unrecorded_steps, 1);
    assert_eq!(model.calls.load(Ordering::SeqCst), 6, "still no model call");
}
