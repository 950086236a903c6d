//! `http_get` against a local axum server on 127.0.0.1 port 0, reached through
//! `reference_tools` as a wake would reach it. 127.0.0.1 is allowed; `localhost` (the
//! same server under another name) and `elsewhere.invalid` are not, so a refused
//! request can be told from a failed one by the server's request count.

#![allow(clippy::unwrap_used)]

use aos_agents::http_get::MAX_BODY_BYTES;
use aos_agents::{ToolsConfig, reference_tools};
use aos_kernel::tools::{ToolContext, ToolError};
use aos_kernel::{AgentName, SessionId, TaskId};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Redirect;
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Requests the server has seen.
type Seen = Arc<AtomicUsize>;

async fn start() -> (u16, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/text", get(|| async { "hello from the test server" }))
        .route(
            "/json",
            get(|| async { axum::Json(json!({"status": "green", "open_orders": 3})) }),
        )
        .route(
            "/big",
            get(|| async {
                let body = "0123456789abcdef".repeat(100 * 1024 / 16);
                ([(header::CONTENT_TYPE, "text/plain")], body)
            }),
        )
        .route(
            "/image",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "image/png")],
                    vec![0x89u8, b'P', b'N', b'G'],
                )
            }),
        )
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "no such page") }),
        )
        .route("/to-text", get(|| async { Redirect::to("/text") }))
        .route(
            "/to-elsewhere",
            get(|| async { Redirect::to("http://elsewhere.invalid/text") }),
        )
        .route("/loop", get(|| async { Redirect::to("/loop") }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "too late"
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            seen.clone(),
            |State(seen): State<Seen>,
             req: axum::extract::Request,
             next: axum::middleware::Next| async move {
                seen.fetch_add(1, Ordering::SeqCst);
                next.run(req).await
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}

fn config(allow: &[&str]) -> ToolsConfig {
    ToolsConfig {
        offline: true,
        timeout: Duration::from_millis(1000),
        http_allow: allow.iter().map(|h| h.to_string()).collect(),
        ..ToolsConfig::default()
    }
}

async fn http_get(cfg: &ToolsConfig, input: Value) -> Result<String, ToolError> {
    let ctx = ToolContext {
        agent: AgentName::new("primary").unwrap(),
        session: SessionId::new("s-1").unwrap(),
        task: TaskId::new(0),
        now_ms: 0,
    };
    let tools = reference_tools(cfg);
    tools.get("http_get").unwrap().call(input, &ctx).await
}

async fn get_url(cfg: &ToolsConfig, url: &str) -> Result<String, ToolError> {
    http_get(cfg, json!({ "url": url })).await
}

#[tokio::test]
async fn an_allowed_host_gives_its_text_and_json() {
    let (port, _) = start().await;
    let cfg = config(&["127.0.0.1"]);

    let page = get_url(&cfg, &format!("http://127.0.0.1:{port}/text"))
        .await
        .unwrap();
    assert_eq!(
        page,
        format!(
            "HTTP 200 OK from http://127.0.0.1:{port}/text (text/plain; charset=utf-8)\n\n\
             hello from the test server"
        )
    );
    let api = get_url(&cfg, &format!("http://127.0.0.1:{port}/json"))
        .await
        .unwrap();
    assert!(api.contains("(application/json)"), "{api}");
    assert!(
        api.ends_with(r#"{"open_orders":3,"status":"green"}"#),
        "{api}"
    );
}

#[tokio::test]
async fn a_host_off_the_list_is_refused_without_a_request() {
    let (port, seen) = start().await;
    let cfg = config(&["127.0.0.1", "*.example.com"]);

    let err = get_url(&cfg, &format!("http://localhost:{port}/text"))
        .await
        .unwrap_err();
    assert_eq!(
        err.0,
        "http_get: the host `localhost` is not allowed; allowed: 127.0.0.1, *.example.com"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0, "nothing was sent");
}

#[tokio::test]
async fn with_no_host_allowed_every_url_is_refused_and_the_error_says_how_to_allow_one() {
    let (port, seen) = start().await;
    let cfg = config(&[]);
    let err = get_url(&cfg, &format!("http://127.0.0.1:{port}/text"))
        .await
        .unwrap_err();
    assert!(err.0.contains("no host is allowed"), "{err}");
    assert!(err.0.contains("ToolsConfig::http_allow"), "{err}");
    assert!(err.0.contains("*.example.com"), "{err}");
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_bad_allow_list_refuses_everything_and_names_the_entry() {
    let (port, seen) = start().await;
    let cfg = config(&["127.0.0.1", "https://example.com"]);
    let err = get_url(&cfg, &format!("http://127.0.0.1:{port}/text"))
        .await
        .unwrap_err();
    assert!(err.0.contains("`https://example.com`"), "{err}");
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn redirects_are_followed_only_to_allowed_hosts() {
    let (port, seen) = start().await;
    let cfg = config(&["127.0.0.1"]);

    let page = get_url(&cfg, &format!("http://127.0.0.1:{port}/to-text"))
        .await
        .unwrap();
    assert!(
        page.starts_with(&format!("HTTP 200 OK from http://127.0.0.1:{port}/text ")),
        "{page}"
    );
    assert!(page.ends_with("hello from the test server"), "{page}");

    let err = get_url(&cfg, &format!("http://127.0.0.1:{port}/to-elsewhere"))
        .await
        .unwrap_err();
    assert_eq!(
        err.0,
        format!(
            "http_get: http://127.0.0.1:{port}/to-elsewhere redirects to \
             http://elsewhere.invalid/text, which is refused: the host `elsewhere.invalid` \
             is not allowed; allowed: 127.0.0.1"
        )
    );

    let before = seen.load(Ordering::SeqCst);
    let err = get_url(&cfg, &format!("http://127.0.0.1:{port}/loop"))
        .await
        .unwrap_err();
    assert!(err.0.contains("more than 5 redirects"), "{err}");
    assert_eq!(
        seen.load(Ordering::SeqCst) - before,
        6,
        "the first request and five hops"
    );
}

#[tokio::test]
async fn an_oversized_body_is_cut_and_says_so() {
    let (port, _) = start().await;
    let cfg = config(&["127.0.0.1"]);
    let page = get_url(&cfg, &format!("http://127.0.0.1:{port}/big"))
        .await
        .unwrap();
    let (head, rest) = page.split_once("\n\n").unwrap();
    assert!(head.contains("(text/plain)"), "{head}");
    let (body, note) = rest.rsplit_once("\n\n").unwrap();
    assert_eq!(body.len(), MAX_BODY_BYTES);
    assert!(body.starts_with("0123456789abcdef"));
    assert_eq!(
        note,
        "[cut: the body is 102400 bytes; only the first 64 KiB are shown]"
    );
}

#[tokio::test]
async fn other_content_errors_and_timeouts_are_readable_tool_errors() {
    let (port, _) = start().await;
    let cfg = config(&["127.0.0.1"]);

    let err = get_url(&cfg, &format!("http://127.0.0.1:{port}/image"))
        .await
        .unwrap_err();
    assert_eq!(
        err.0,
        format!(
            "http_get: http://127.0.0.1:{port}/image answered HTTP 200 OK with `image/png` \
             content, 4 bytes; http_get reads text only"
        )
    );

    let err = get_url(&cfg, &format!("http://127.0.0.1:{port}/missing"))
        .await
        .unwrap_err();
    assert!(err.0.contains("answered HTTP 404 Not Found"), "{err}");
    assert!(err.0.ends_with(": no such page"), "{err}");

    let started = std::time::Instant::now();
    let err = get_url(&cfg, &format!("http://127.0.0.1:{port}/slow"))
        .await
        .unwrap_err();
    assert!(err.0.contains("did not answer within 1000 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn urls_with_credentials_other_schemes_and_bad_arguments_are_refused() {
    let (port, seen) = start().await;
    let cfg = config(&["127.0.0.1"]);

    let err = get_url(&cfg, &format!("http://user:pw@127.0.0.1:{port}/text"))
        .await
        .unwrap_err();
    assert!(err.0.contains("credentials"), "{err}");
    let err = get_url(&cfg, "ftp://127.0.0.1/file.txt").await.unwrap_err();
    assert!(err.0.contains("not `ftp`"), "{err}");
    let err = get_url(&cfg, "/text").await.unwrap_err();
    assert!(err.0.contains("not an absolute URL"), "{err}");

    let err = http_get(&cfg, json!({})).await.unwrap_err();
    assert!(
        err.0
            .starts_with("http_get: invalid arguments: missing field `url`"),
        "{err}"
    );
    assert!(err.0.contains("JSON schema"), "the schema is shown: {err}");
    let err = http_get(&cfg, json!({"url": 5})).await.unwrap_err();
    assert!(err.0.contains("invalid arguments"), "{err}");
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[test]
fn the_tool_is_a_read_only_lookup_with_a_typed_schema() {
    let tools = reference_tools(&config(&["127.0.0.1"]));
    let tool = tools.get("http_get").unwrap();
    let meta = tool.meta();
    assert!(meta.read_only && meta.idempotent && meta.runs_inline());
    assert!(!meta.requires_approval);
    assert!(meta.timeout_ms > 1000, "past the fetch's own deadline");
    let schema = tool.spec().input_schema;
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["properties"]["url"]["type"], "string");
    assert_eq!(schema["required"], json!(["url"]));
    assert!(schema.get("$schema").is_none());
}
