//! A task submitted through the API carries X-Ray's trace id when the request had
//! one (API Gateway's `X-Amzn-Trace-Id`, else the api function's own invocation),
//! and so does every envelope of it; without one, or with a malformed one, the task
//! keeps its own `trace-<id>` and is accepted all the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aos_kernel::model::Envelope;
use aos_kernel::ports::Inbox;
use axum::body::Body;
use axum::http::Request;
use common::{router, send, system, token};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";
const BODY: &str = r#"{"input": "What is 1250 EUR in USD?"}"#;

#[tokio::test]
async fn the_x_ray_root_of_the_request_is_the_trace_id_of_the_task_and_its_envelopes() {
    let sys = system();
    let app = router(&sys);
    let t = token("default", "write");
    let header = format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=1");
    let created = send(
        &app,
        "POST",
        "/v1/tasks",
        Some(&t),
        BODY,
        &[("X-Amzn-Trace-Id", &header)],
    )
    .await;
    assert_eq!(created.status, 202, "{}", created.text);
    assert_eq!(created.json["trace_id"], ROOT);
    let msgs = sys.queues.receive("primary", 10, 30_000).await.unwrap();
    assert_eq!(Envelope::parse(&msgs[0].body).unwrap().trace_id, ROOT);
}

#[tokio::test]
async fn a_missing_or_malformed_trace_header_leaves_the_tasks_own_trace_id() {
    let sys = system();
    let app = router(&sys);
    let t = token("default", "write");
    for header in [
        None,
        Some("Root=1-5759e988-bd862e3fe1be46a99427279;Sampled=1"),
        Some("Root=2-5759e988-bd862e3fe1be46a994272793"),
        Some("Parent=53995c3f42cd8ad8"),
        Some("Root=1-5759e988-bd862e3fe1be46a994272793 <script>"),
    ] {
        let headers: Vec<(&str, &str)> =
            header.map(|h| ("X-Amzn-Trace-Id", h)).into_iter().collect();
        let created = send(&app, "POST", "/v1/tasks", Some(&t), BODY, &headers).await;
        assert_eq!(created.status, 202, "{header:?}: {}", created.text);
        let id = created.json["id"].as_str().unwrap();
        assert_eq!(
            created.json["trace_id"],
            format!("trace-{id}"),
            "{header:?}"
        );
    }
}

#[tokio::test]
async fn without_a_header_the_api_functions_own_x_ray_trace_is_used() {
    let sys = system();
    let app = router(&sys);
    let t = token("default", "write");
    let mut context = lambda_http::Context::default();
    context.xray_trace_id = Some(format!("Root={ROOT};Parent=53995c3f42cd8ad8;Sampled=0"));
    let mut req = Request::builder()
        .method("POST")
        .uri("/v1/tasks")
        .header("authorization", format!("Bearer {t}"))
        .header("content-type", "application/json")
        .body(Body::from(BODY))
        .unwrap();
    // Where lambda_http puts the invocation's context.
    req.extensions_mut().insert(context);
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 202);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let task: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(task["trace_id"], ROOT);
}
