//! What an agent function logs, captured from a real wake through its SQS handler:
//! an OpenAI-compatible provider with a planted API key, against a scripted server
//! that first fails with an error quoting the whole request (prompt and key) and then
//! answers; every line logged at TRACE in the function's JSON format, and the metric
//! records.
//!
//! What it proves: neither the key nor the prompt reaches a log line or a metric
//! record, although both went to the provider and came back in its error; every line
//! logged during a wake carries the task, agent, envelope and trace ids (the trace id
//! being X-Ray's, given at submit) and the invocation's request id and X-Ray trace id;
//! and each wake writes one EMF record.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_entrypoints::sqs;
use aos_kernel::Catalog;
use aos_kernel::kernel::Submission;
use aos_kernel::llm::Model;
use aos_kernel::model::{AgentDef, Envelope, TaskStatus};
use aos_kernel::ports::{Clock, Inbox, TaskStore};
use aos_kernel::route::{BreakerPolicy, Router};
use aos_kernel::testkit::MemSystem;
use aos_kernel::tools::ToolRegistry;
use aos_lambda::SqsHandler;
use aos_lambda::logging::{filter, json_subscriber};
use aos_models::{ProviderConfig, Providers};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tracing::Instrument;

const KEY: &str = "sk-PLANTED-SECRET-123";
const PROMPT: &str = "PLANTED-PROMPT quokka-7731: which city hosts the blue heron parade?";
const XRAY_ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";
const XRAY: &str = "Root=1-65f0c0de-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1";
const ARN: &str = "arn:aws:sqs:us-east-1:123456789012:aos-solo.fifo";

/// Bytes written by the subscriber or the metrics sink.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// The scripted provider: the first call fails with a 500 whose message quotes the
/// request's headers and body; later calls answer.
#[derive(Clone, Default)]
struct Provider {
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn chat(State(p): State<Provider>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let body = String::from_utf8_lossy(&body).to_string();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    p.seen.lock().unwrap().push(format!("{auth}\n{body}"));
    if p.calls.fetch_add(1, Ordering::SeqCst) == 0 {
        let message = format!("cannot serve {PROMPT} for {auth}; request was {body}");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(
                json!({"error": {"message": message, "type": "server_error", "code": "server_error"}}),
            ),
        );
    }
    (
        StatusCode::OK,
        axum::Json(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "The parade is in Lisbon."},
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
        })),
    )
}

async fn start_provider() -> (String, Provider) {
    let provider = Provider::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, provider)
}

#[tokio::test]
async fn no_key_and_no_prompt_in_any_log_line_and_every_wake_line_names_its_task() {
    let (url, provider) = start_provider().await;
    let agents = vec![
        AgentDef::from_toml(
            "name='solo'\npurpose='answers'\nsystem_prompt='Answer briefly.'\nmodel='openai:gpt-4o-mini'\n",
        )
        .unwrap(),
    ];
    let providers = Providers::new(ProviderConfig {
        openai_api_key: Some(KEY.into()),
        openai_base_url: Some(url),
        anthropic_api_key: None,
        anthropic_base_url: None,
        bedrock: None,
    })
    .unwrap();
    // The clock is the testkit's; the router's breakers only need one.
    let clock: Arc<dyn Clock> = Arc::new(aos_kernel::ports::SystemClock);
    let mut router = Router::new(clock, BreakerPolicy::default());
    for (prefix, model) in providers {
        router = router.with(prefix, model);
    }
    let sys = MemSystem::new(
        Catalog::new(agents).unwrap(),
        ToolRegistry::new(),
        Some(Arc::new(router) as Arc<dyn Model>),
    );

    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = json_subscriber(filter(Some("trace"), None), move || writer.clone());
    let _default = tracing::subscriber::set_default(subscriber);

    let task = sys
        .kernel
        .submit_traced(
            Submission {
                tenant: "acme",
                agent: "solo",
                input: PROMPT,
                idempotency_key: None,
            },
            Some(XRAY_ROOT),
        )
        .await
        .unwrap()
        .task;
    assert_eq!(task.trace_id, XRAY_ROOT);
    let message = sys
        .queues
        .receive("solo", 10, 30_000)
        .await
        .unwrap()
        .remove(0);
    let envelope = Envelope::parse(&message.body).unwrap();
    assert_eq!(envelope.trace_id, XRAY_ROOT);

    let metrics = Captured::default();
    let sink = metrics.clone();
    let handler = SqsHandler::new(sys.kernel.clone(), sys.queues.clone(), "solo", 5, 2_000)
        .with_metrics(Arc::new(move |line: &str| {
            use std::io::Write;
            writeln!(sink.clone(), "{line}").unwrap();
        }));
    let invoke = |receives: u32, request_id: &str| {
        let mut record = sqs::record(&message.message_id, &message.body, "g-1", receives, 0, ARN);
        record.receipt_handle = Some(message.receipt.clone());
        let mut context = Context::default();
        context.request_id = request_id.into();
        context.xray_trace_id = Some(XRAY.into());
        // What lambda_runtime::run wraps every invocation in.
        let span = lambda_runtime::layers::trace::request_span(&context);
        let event = LambdaEvent::new(sqs::event(vec![record]), context);
        let handler = handler.clone();
        async move { handler.run(event).await }.instrument(span)
    };
    // The provider fails: the record goes back.
    let (response, report) = invoke(1, "req-1").await;
    let t = sys.kernel.task_for("acme", task.id).await.unwrap().unwrap();
    let events = sys.store.task_events(task.id).await.unwrap();
    assert_eq!(
        response.batch_item_failures.len(),
        1,
        "{report:?}\n{t:?}\n{events:#?}"
    );
    // The next delivery answers.
    let (response, report) = invoke(2, "req-2").await;
    assert!(response.batch_item_failures.is_empty(), "{report:?}");
    assert_eq!(report.applied, 1);
    let done = sys.kernel.task_for("acme", task.id).await.unwrap().unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded, "{done:?}");
    drop(_default);

    // Not vacuous: the key and the prompt went to the provider and came back.
    let seen = provider.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|r| r.contains(KEY) && r.contains("quokka-7731"))
    );

    let text = logs.text();
    let emf = metrics.text();
    for (what, secret) in [("the API key", KEY), ("the prompt", "quokka-7731")] {
        for (name, out) in [("log", &text), ("metrics", &emf)] {
            let hits: Vec<&str> = out.lines().filter(|l| l.contains(secret)).collect();
            assert!(
                hits.is_empty(),
                "{what} is in the {name}:\n{}",
                hits.join("\n")
            );
        }
    }
    // At TRACE, every line JSON, and those of a wake carry its ids.
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "TRACE" || l["level"] == "DEBUG"),
        "{text}"
    );
    let in_wake: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("message_id").is_some())
        .collect();
    assert!(in_wake.len() >= 4, "{text}");
    for line in &in_wake {
        assert_eq!(line["task_id"], task.id.to_string(), "{line}");
        assert_eq!(line["agent"], "solo", "{line}");
        assert_eq!(line["envelope_id"], envelope.id.to_string(), "{line}");
        assert_eq!(line["trace_id"], XRAY_ROOT, "{line}");
        assert_eq!(line["tenant"], "acme", "{line}");
        assert_eq!(line["xray_trace_id"], XRAY, "{line}");
        assert!(
            line["request_id"].as_str().unwrap().starts_with("req-"),
            "{line}"
        );
    }
    let failed = in_wake
        .iter()
        .find(|l| l["message"] == "record failed; it will be retried")
        .unwrap_or_else(|| panic!("no retry line:\n{text}"));
    assert_eq!(failed["level"], "WARN");
    assert_eq!(
        failed["reason"],
        "model: openai:gpt-4o-mini: openai HTTP 500 (server_error)"
    );
    let done_lines: Vec<&&Value> = in_wake
        .iter()
        .filter(|l| l["message"] == "wake done")
        .collect();
    assert_eq!(done_lines.len(), 2, "{text}");
    assert_eq!(done_lines[0]["outcome"], "failed");
    assert_eq!(done_lines[1]["outcome"], "applied");
    assert_eq!(done_lines[1]["model_calls"], 1);

    // One EMF record per wake.
    let records: Vec<Value> = emf
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{emf}");
    assert_eq!(records[0]["Failures"], 1);
    assert_eq!(records[0]["ModelCalls"], 0);
    assert_eq!(records[1]["Retries"], 1);
    assert_eq!(records[1]["Failures"], 0);
    assert_eq!(records[1]["ModelCalls"], 1);
    assert_eq!(records[1]["TokensIn"], 120);
    assert_eq!(records[1]["TokensOut"], 30);
    for r in &records {
        assert_eq!(r["Agent"], "solo");
        assert_eq!(r["trace_id"], XRAY_ROOT);
        assert_eq!(r["xray_trace_id"], XRAY);
        assert_eq!(r["task_id"], task.id.to_string());
    }
    // Printed for the record of what a line looks like.
    eprintln!("{}\n{}", failed, records[1]);
}
