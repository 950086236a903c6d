//! The other functions' handlers and the kernel a function builds, in-process: the
//! scheduler's task id across retries and firings, the sweep, the HTTP API through
//! `lambda_http`'s own event conversion, and `build_kernel` linking only a function's
//! own tools.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_agents::{ToolsConfig, reference_agents, reference_tools};
use aos_aws::AwsSettings;
use aos_entrypoints::schedule::ScheduledTask;
use aos_kernel::ports::{Inbox, TaskStore};
use aos_kernel::testkit::MemSystem;
use aos_kernel::tools::ToolRegistry;
use aos_kernel::{Catalog, SubmitError, TaskStatus};
use aos_lambda::{Config, InitError, WakeError, build_kernel};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tower::ServiceExt;

fn system() -> MemSystem {
    let tools = reference_tools(&ToolsConfig {
        offline: true,
        ..ToolsConfig::default()
    });
    MemSystem::new(
        Catalog::new(reference_agents().unwrap()).unwrap(),
        tools,
        None,
    )
}

const SCHEDULE: &str = "arn:aws:scheduler:us-east-1:123456789012:schedule/default/daily-briefing";

/// A firing as EventBridge Scheduler fills in the target input.
fn firing(
    execution_id: &str,
    scheduled: &str,
    agent: &str,
) -> LambdaEvent<EventBridgeEvent<ScheduledTask>> {
    let input = json!({
        "id": execution_id,
        "time": scheduled,
        "resources": [SCHEDULE],
        "source": "aos.scheduler",
        "detail-type": "Scheduled Task",
        "detail": {"agent": agent, "input": "Morning briefing: weather in Paris and 100 EUR in USD."}
    });
    LambdaEvent::new(serde_json::from_value(input).unwrap(), Context::default())
}

#[tokio::test]
async fn a_retried_firing_is_one_task_and_the_next_firing_another() {
    let sys = system();
    let first = aos_lambda::schedule::handle(
        &sys.kernel,
        firing("exec-aaa", "2026-11-21T07:00:00Z", "primary"),
    )
    .await
    .unwrap();
    // Scheduler's retry of the same firing: a new execution id, the same scheduled time.
    let retry = aos_lambda::schedule::handle(
        &sys.kernel,
        firing("exec-bbb", "2026-11-21T07:00:00Z", "primary"),
    )
    .await
    .unwrap();
    assert_eq!(first.task, retry.task);
    let next = aos_lambda::schedule::handle(
        &sys.kernel,
        firing("exec-ccc", "2026-11-22T07:00:00Z", "primary"),
    )
    .await
    .unwrap();
    assert_ne!(next.task, first.task);
    assert_eq!(
        sys.store
            .list_tasks(&aos_kernel::ports::TaskQuery {
                tenant: None,
                status: None,
                before: None,
                limit: 10,
            })
            .await
            .unwrap()
            .len(),
        2
    );
    // The retry sent nothing new: one envelope per firing.
    assert_eq!(sys.queues.depth("primary").await.unwrap(), 2);
    sys.drain().await;
    for id in [first.task, next.task] {
        let task = sys.store.get_task(id).await.unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Succeeded);
    }
}

#[tokio::test]
async fn a_firing_that_can_never_succeed_is_terminal_and_a_busy_backend_retryable() {
    let sys = system();
    let err =
        aos_lambda::schedule::handle(&sys.kernel, firing("e1", "2026-11-21T07:00:00Z", "nobody"))
            .await
            .unwrap_err();
    assert!(
        matches!(err, WakeError::Terminal(ref m) if m.starts_with("unknown agent 'nobody'")),
        "{err:?}"
    );
    sys.queues.fail_sends.store(1, Ordering::SeqCst);
    let err =
        aos_lambda::schedule::handle(&sys.kernel, firing("e2", "2026-11-21T08:00:00Z", "primary"))
            .await
            .unwrap_err();
    assert_eq!(err.error_type(), "Retryable");
    // Its retry sends the envelope of the task the first attempt recorded.
    let retry =
        aos_lambda::schedule::handle(&sys.kernel, firing("e3", "2026-11-21T08:00:00Z", "primary"))
            .await
            .unwrap();
    assert_eq!(retry.status, TaskStatus::Queued);
    assert_eq!(sys.queues.depth("primary").await.unwrap(), 1);
}

#[tokio::test]
async fn the_sweep_handler_resends_what_was_never_sent() {
    let sys = system();
    sys.queues.fail_sends.store(1, Ordering::SeqCst);
    let task = match sys.kernel.submit("weather", "Weather in Oslo?", None).await {
        Err(SubmitError::NotSent { task, .. }) => task,
        other => panic!("{other:?}"),
    };
    let event = LambdaEvent::new(json!({}), Context::default());
    let report = aos_lambda::sweep::handle(&sys.kernel, event).await.unwrap();
    assert_eq!(report.resent, 1);
    assert!(report.timed_out.is_empty());
    sys.drain().await;
    let task = sys.store.get_task(task).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded);
}

/// Runs an API Gateway HTTP API (v2) event through `lambda_http`'s adapter, as the api
/// function does, and returns the Lambda response as JSON.
async fn invoke_api(app: axum::Router, event: Value) -> Value {
    let request: lambda_http::request::LambdaRequest = serde_json::from_value(event).unwrap();
    let adapter = lambda_http::Adapter::from(app);
    let response = adapter
        .oneshot(LambdaEvent::new(request, Context::default()))
        .await
        .unwrap();
    serde_json::to_value(response).unwrap()
}

fn fixture(path: &str) -> Value {
    let path = format!("{}/../../events/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn the_api_function_serves_the_same_router_through_api_gateway_events() {
    let sys = system();
    let app = aos_lambda::api::router(sys.kernel.clone(), sys.queues.clone() as Arc<dyn Inbox>);
    let created = invoke_api(app.clone(), fixture("http/create-task.json")).await;
    assert_eq!(created["statusCode"], 202, "{created}");
    let task: Value = serde_json::from_str(created["body"].as_str().unwrap()).unwrap();
    let id = task["id"].as_str().unwrap().to_string();
    assert_eq!(task["status"], "queued");

    let mut get = fixture("http/create-task.json");
    get["rawPath"] = json!(format!("/v1/tasks/{id}"));
    get["requestContext"]["http"]["method"] = json!("GET");
    get["requestContext"]["http"]["path"] = json!(format!("/v1/tasks/{id}"));
    get["body"] = Value::Null;
    let got = invoke_api(app.clone(), get.clone()).await;
    assert_eq!(got["statusCode"], 200, "{got}");
    let body: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], id.as_str());

    // The function checks what the authorizer passes on: another tenant's claims see
    // no task, a token without the scope is refused, and no claims at all is a 401.
    let claims = "/requestContext/authorizer/jwt/claims";
    let mut other = get.clone();
    *other.pointer_mut(&format!("{claims}/tenant")).unwrap() = json!("acme");
    let answer = invoke_api(app.clone(), other).await;
    assert_eq!(answer["statusCode"], 404, "{answer}");
    assert!(
        !answer["body"].as_str().unwrap().contains("EUR"),
        "{answer}"
    );
    let mut unscoped = get.clone();
    *unscoped.pointer_mut(&format!("{claims}/scope")).unwrap() = json!("openid");
    let answer = invoke_api(app.clone(), unscoped).await;
    assert_eq!(answer["statusCode"], 403, "{answer}");
    let mut anonymous = get.clone();
    anonymous["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
    let answer = invoke_api(app.clone(), anonymous).await;
    assert_eq!(answer["statusCode"], 401, "{answer}");
    assert_eq!(
        answer["headers"]["content-type"],
        "application/problem+json"
    );
    assert!(
        answer["headers"]["www-authenticate"]
            .as_str()
            .unwrap()
            .starts_with("Bearer"),
        "{answer}"
    );

    let mut bad = fixture("http/create-task.json");
    bad["body"] = json!("{not json");
    let refused = invoke_api(app, bad).await;
    assert_eq!(refused["statusCode"], 400, "{refused}");
    let body: Value = serde_json::from_str(refused["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "urn:aos:problem:bad-request");
}

fn config(vars: &[(&str, &str)]) -> Config {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned(), AwsSettings::default()).unwrap()
}

/// An SDK configuration that reaches nothing: building clients makes no call.
async fn offline_sdk() -> aws_config::SdkConfig {
    aos_aws::emulator_sdk_config("http://127.0.0.1:9").await
}

#[tokio::test]
async fn a_function_builds_its_kernel_with_its_own_tools_only() {
    let sdk = offline_sdk().await;
    let weather_only =
        ToolRegistry::new().with(Arc::new(aos_agents::weather_tool(&ToolsConfig::default())));
    let built = build_kernel(
        &config(&[("AOS_AGENT", "weather"), ("AOS_DEADLINE_MARGIN_MS", "4000")]),
        &sdk,
        weather_only,
    )
    .await
    .unwrap();
    assert_eq!(built.kernel.catalog().names(), "finance, primary, weather");
    let k = built.kernel.config();
    assert_eq!(k.default_model, "offline");
    assert_eq!(k.model_override, None);
    assert_eq!(k.deadline_margin_ms, 4000);
    // Prices come from the built-in table.
    assert!(
        k.prices
            .cost_micros(
                "openai:gpt-4o-mini",
                &aos_kernel::model::Usage {
                    input_tokens: 1_000_000,
                    ..Default::default()
                }
            )
            .is_some()
    );

    // The weather function without get_weather cannot start, and says why.
    let err = build_kernel(
        &config(&[("AOS_AGENT", "weather")]),
        &sdk,
        ToolRegistry::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, InitError::Agents(_)), "{err:?}");
    assert!(err.to_string().contains("get_weather"), "{err}");

    // Functions that serve no queue need no tool at all.
    build_kernel(&config(&[]), &sdk, ToolRegistry::new())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_route_to_a_provider_without_a_key_is_refused_at_init() {
    let sdk = offline_sdk().await;
    let err = build_kernel(
        &config(&[("AOS_MODEL", "openai:gpt-4o-mini")]),
        &sdk,
        ToolRegistry::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("AOS_MODEL: route \"openai:gpt-4o-mini\" names provider 'openai'"),
        "{err}"
    );
    // Bedrock is always there: the function's role reaches it.
    let built = build_kernel(
        &config(&[(
            "AOS_MODEL",
            "bedrock:eu.anthropic.claude-haiku-4-5-20251001-v1:0",
        )]),
        &sdk,
        ToolRegistry::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        built.kernel.config().model_override.as_deref(),
        Some("bedrock:eu.anthropic.claude-haiku-4-5-20251001-v1:0")
    );
}
