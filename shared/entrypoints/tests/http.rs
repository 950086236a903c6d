//! The HTTP API as a client sees it: tasks are accepted and readable, and every bad
//! request gets a 4xx with a reason, after which the API keeps serving.
#![allow(clippy::unwrap_used)]

mod common;

use aos_entrypoints::http::{AppState, app};
use aos_kernel::TaskStatus;
use aws_lambda_events::event::apigw::ApiGatewayV2httpRequest;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

fn router(sys: &aos_kernel::testkit::MemSystem) -> Router {
    app(AppState {
        kernel: sys.kernel.clone(),
        inbox: Some(sys.queues.clone()),
    })
}

async fn call(app: &Router, method: &str, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_submitted_task_runs_and_its_timeline_is_readable() {
    let sys = common::system();
    let app = router(&sys);
    let (status, task) = call(
        &app,
        "POST",
        "/tasks",
        r#"{"input": "What is 1250 EUR in USD?"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = task["id"].as_str().unwrap().to_string();
    assert_eq!(task["status"], "queued");
    sys.drain().await;
    let (status, task) = call(&app, "GET", &format!("/tasks/{id}"), Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(task["status"], TaskStatus::Succeeded.as_str());
    let (status, events) = call(&app, "GET", &format!("/tasks/{id}/events"), Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"submitted"), "{events:#}");
    assert_eq!(kinds.last(), Some(&"answer"));
    let (_, list) = call(&app, "GET", "/tasks?status=succeeded", Body::empty()).await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1);
    let (s, v) = call(&app, "POST", &format!("/tasks/{id}/cancel"), Body::empty()).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a finished task cannot be cancelled: {v}"
    );
    let (_, events_after) = call(&app, "GET", &format!("/tasks/{id}/events"), Body::empty()).await;
    assert_eq!(events_after, events, "a refused cancel writes nothing");
    let (_, agents) = call(&app, "GET", "/agents", Body::empty()).await;
    assert_eq!(agents["agents"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn bad_requests_get_readable_4xx_and_the_api_keeps_serving() {
    let sys = common::system();
    let app = router(&sys);
    let (s, v) = call(&app, "POST", "/tasks", Body::empty()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(message(&v).starts_with("request body is empty"), "{v}");

    let ten_mb = vec![b'a'; 10 * 1024 * 1024];
    let (s, v) = call(&app, "POST", "/tasks", ten_mb).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message(&v).contains("over the limit"), "{v}");

    let (s, v) = call(&app, "POST", "/tasks", "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(message(&v).contains("send JSON like"), "{v}");

    let (s, v) = call(
        &app,
        "POST",
        "/tasks",
        r#"{"input": "hi", "agent": "nobody"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        message(&v),
        "unknown agent 'nobody'; known agents: finance, primary, weather"
    );

    let (s, v) = call(&app, "POST", "/tasks", r#"{"input": "   "}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(message(&v).contains("empty"), "{v}");

    let big_input = format!(r#"{{"input": "{}"}}"#, "x".repeat(100 * 1024));
    let (s, v) = call(&app, "POST", "/tasks", big_input).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message(&v).contains("over the limit of 65536 bytes"), "{v}");

    let (s, _) = call(&app, "GET", "/tasks/not-a-ulid", Body::empty()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(
        &app,
        "GET",
        "/tasks/01JDA5V0K3Z8Q9WX7YB2M4N6PR",
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&app, "GET", "/tasks?status=bogus", Body::empty()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(&app, "GET", "/nowhere", Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Nothing was recorded by the bad requests, and a good one still works.
    use aos_kernel::ports::TaskStore;
    assert!(sys.store.list_tasks(None, 10).await.unwrap().is_empty());
    let (s, _) = call(
        &app,
        "POST",
        "/tasks",
        r#"{"input": "What is 2 EUR in USD?"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_recorded_api_gateway_event_reaches_the_same_router() {
    let sys = common::system();
    let app = router(&sys);
    let event: ApiGatewayV2httpRequest =
        serde_json::from_str(&common::fixture("http/create-task.json")).unwrap();
    // What lambda_http does: the API Gateway event becomes an http::Request.
    let method = event.request_context.http.method.as_str().to_string();
    let path = event.raw_path.clone().unwrap();
    let (s, task) = call(&app, &method, &path, event.body.clone().unwrap()).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(task["input"], "What is 1250 EUR in USD?");
    sys.drain().await;
    let (_, task) = call(
        &app,
        "GET",
        &format!("/tasks/{}", task["id"].as_str().unwrap()),
        Body::empty(),
    )
    .await;
    assert_eq!(task["status"], "succeeded");
    assert!(task["result"].as_str().unwrap().contains("- finance:"));
}

#[tokio::test]
async fn cancelling_a_task_stops_its_remaining_work() {
    let sys = common::system();
    let app = router(&sys);
    let (_, task) = call(
        &app,
        "POST",
        "/tasks",
        r#"{"input": "What's the weather in Oslo and 5 EUR in USD?"}"#,
    )
    .await;
    let id = task["id"].as_str().unwrap().to_string();
    let (s, t) = call(
        &app,
        "POST",
        &format!("/tasks/{id}/cancel"),
        r#"{"reason": "changed my mind"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t["status"], "cancelled");
    sys.drain().await;
    let (_, t) = call(&app, "GET", &format!("/tasks/{id}"), Body::empty()).await;
    assert_eq!(t["status"], "cancelled");
    assert_eq!(
        t["usage"]["llm_calls"], 0,
        "no model was called after the cancel"
    );
}
