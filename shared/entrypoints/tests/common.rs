//! A kernel over in-memory ports with agents shaped like the reference ones, the API
//! over it with a known signing secret, and a client that calls it in-process.
#![allow(dead_code, clippy::unwrap_used)]

use aos_entrypoints::http::auth::{Claims, mint, now_secs};
use aos_entrypoints::http::{AppState, Auth, StreamSettings, app};
use aos_kernel::Catalog;
use aos_kernel::model::AgentDef;
use aos_kernel::testkit::{MemSchedules, MemSystem};
use aos_kernel::tools::ToolRegistry;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

pub const SECRET: &[u8] = b"entrypoints-test-secret";

pub fn system() -> MemSystem {
    let defs = [
        "name='primary'\npurpose='orchestrator'\nsystem_prompt='s'\nmay_message=['weather','finance']\n",
        "name='weather'\npurpose='weather'\nsystem_prompt='s'\nkeywords=['weather']\n",
        "name='finance'\npurpose='money'\nsystem_prompt='s'\nkeywords=['eur','usd','gbp']\n",
    ];
    let agents: Vec<AgentDef> = defs
        .iter()
        .map(|d| AgentDef::from_toml(d).unwrap())
        .collect();
    MemSystem::new(Catalog::new(agents).unwrap(), ToolRegistry::new(), None)
}

/// The API over `sys`, with dead letters and schedules, verifying tokens signed
/// with [`SECRET`]; its event stream polls every 10 ms.
pub fn router(sys: &MemSystem) -> Router {
    let mut state = AppState::new(sys.kernel.clone(), Auth::hs256(SECRET))
        .with_inbox(sys.queues.clone())
        .with_schedules(Arc::new(MemSchedules::default()));
    state.stream = StreamSettings {
        poll: Duration::from_millis(10),
        max: Duration::from_secs(20),
    };
    app(state)
}

/// A token for `tenant` with `scope`, valid for an hour.
pub fn token(tenant: &str, scope: &str) -> String {
    token_until(tenant, scope, now_secs() + 3600)
}

pub fn token_until(tenant: &str, scope: &str, exp: u64) -> String {
    mint(
        SECRET,
        &Claims {
            sub: format!("{tenant}-user"),
            tenant: tenant.into(),
            scope: scope.into(),
            exp,
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
        },
    )
}

/// What the API answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as text, whatever it is.
    pub text: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl Answer {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The `detail` of a problem document.
    pub fn detail(&self) -> &str {
        self.json["detail"].as_str().unwrap_or_default()
    }
    /// Asserts the answer is a problem document with `status`.
    #[track_caller]
    pub fn problem(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "{}",
            self.text
        );
        assert_eq!(self.json["status"], status, "{}", self.text);
        assert!(
            self.json["type"].as_str().is_some() && self.json["title"].as_str().is_some(),
            "{}",
            self.text
        );
        self
    }
}

/// Sends a request; `token` goes in `Authorization: Bearer`. A body is sent as JSON.
pub async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: impl Into<Body>,
    headers: &[(&str, &str)],
) -> Answer {
    let body = body.into();
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut has_ct = false;
    for (k, v) in headers {
        has_ct |= k.eq_ignore_ascii_case("content-type");
        req = req.header(*k, *v);
    }
    if !has_ct {
        req = req.header("content-type", "application/json");
    }
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        text,
        json,
    }
}

/// `send` with a token and no extra headers.
pub async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: &str,
    body: impl Into<Body>,
) -> Answer {
    send(app, method, uri, Some(token), body, &[]).await
}

pub fn fixture(path: &str) -> String {
    let full = format!("{}/../../events/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// Every task in the store, of every tenant.
pub async fn all_tasks(sys: &MemSystem) -> Vec<aos_kernel::Task> {
    use aos_kernel::ports::{TaskQuery, TaskStore};
    sys.store
        .list_tasks(&TaskQuery {
            tenant: None,
            status: None,
            before: None,
            limit: 10_000,
        })
        .await
        .unwrap()
}
