//! Who may see and do what, over every route of the route table: without a token,
//! with a garbage, forged, unsigned or expired one, or with too narrow a scope, every
//! route answers 401 or 403 and runs nothing; a token of another tenant finds none of
//! the victim's tasks, events, approvals, schedules or dead letters (404, or lists
//! without them). No refused answer carries any of the victim's data, and afterwards
//! the victim's state is exactly as it was. A client can no longer choose a task id,
//! and no idempotency key of one tenant reaches another's task.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aos_entrypoints::http::Scope;
use aos_entrypoints::http::auth::{Claims, mint, now_secs};
use aos_entrypoints::http::routes::routes;
use aos_kernel::Catalog;
use aos_kernel::llm::ToolSpec;
use aos_kernel::model::AgentDef;
use aos_kernel::ports::{Inbox, Mailbox};
use aos_kernel::testkit::MemSystem;
use aos_kernel::tools::{Tool, ToolContext, ToolError, ToolMeta, ToolRegistry};
use async_trait::async_trait;
use axum::body::Body;
use base64::Engine;
use common::{Answer, call, router, send, token, token_until};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const SECRET_TEXT: &str = "VICTIM-SECRET-7731";

/// A conversion that needs a person's approval, counting its runs.
struct Guarded(Arc<AtomicU64>);

#[async_trait]
impl Tool for Guarded {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "convert_currency".into(),
            description: "convert (needs approval)".into(),
            input_schema: json!({"type": "object"}),
        }
    }
    fn meta(&self) -> ToolMeta {
        ToolMeta {
            requires_approval: true,
            read_only: false,
            idempotent: true,
            ..ToolMeta::default()
        }
    }
    async fn call(&self, _input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok("1250 EUR = 1356.25 USD".into())
    }
}

fn guarded_system() -> (MemSystem, Arc<AtomicU64>) {
    let runs = Arc::new(AtomicU64::new(0));
    let agents = vec![
        AgentDef::from_toml(
            "name='primary'\npurpose='orchestrator'\nsystem_prompt='s'\nmay_message=['finance']\n",
        )
        .unwrap(),
        AgentDef::from_toml(
            "name='finance'\npurpose='money'\nsystem_prompt='f'\ntools=['convert_currency']\nkeywords=['eur']\n",
        )
        .unwrap(),
    ];
    let tools = ToolRegistry::new().with(Arc::new(Guarded(runs.clone())));
    (
        MemSystem::new(Catalog::new(agents).unwrap(), tools, None),
        runs,
    )
}

/// What the victim owns, by id.
struct Victim {
    task: String,
    parked_task: String,
    approval: String,
    schedule: String,
}

impl Victim {
    /// Text that must never reach another tenant or an unauthenticated caller.
    fn secrets(&self) -> Vec<&str> {
        vec![
            SECRET_TEXT,
            &self.task,
            &self.parked_task,
            &self.approval,
            &self.schedule,
        ]
    }
}

async fn victim(sys: &MemSystem, app: &axum::Router) -> Victim {
    let t = token("victim", "admin");
    let input =
        format!(r#"{{"input": "What is 1250 EUR in USD? {SECRET_TEXT}", "agent": "finance"}}"#);
    let parked = call(app, "POST", "/v1/tasks", &t, input.clone()).await;
    assert_eq!(parked.status, 202, "{}", parked.text);
    // Its first envelope goes to the dead-letter queue.
    let msgs = sys.queues.receive("finance", 10, 30_000).await.unwrap();
    sys.queues
        .dead_letter("finance", &msgs[0].body, "parked by the test")
        .await
        .unwrap();
    sys.queues
        .delete("finance", &msgs[0].receipt)
        .await
        .unwrap();
    let task = call(app, "POST", "/v1/tasks", &t, input).await;
    sys.drain().await;
    let approvals = call(app, "GET", "/v1/approvals", &t, Body::empty()).await;
    let approval = approvals.json["approvals"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a pending approval: {}", approvals.text))
        .to_string();
    let schedule = call(
        app,
        "POST",
        "/v1/schedules",
        &t,
        format!(r#"{{"agent": "finance", "input": "{SECRET_TEXT}", "when": "rate(5 minutes)"}}"#),
    )
    .await;
    assert_eq!(schedule.status, 201, "{}", schedule.text);
    Victim {
        task: task.json["id"].as_str().unwrap().into(),
        parked_task: parked.json["id"].as_str().unwrap().into(),
        approval,
        schedule: schedule.json["id"].as_str().unwrap().into(),
    }
}

/// The victim's state as the victim sees it, to compare before and after.
async fn state_of(app: &axum::Router, v: &Victim) -> Vec<Value> {
    let t = token("victim", "admin");
    let mut out = Vec::new();
    for uri in [
        format!("/v1/tasks/{}", v.task),
        format!("/v1/tasks/{}/events", v.task),
        format!("/v1/tasks/{}", v.parked_task),
        format!("/v1/approvals/{}", v.approval),
        "/v1/schedules".to_string(),
        "/v1/agents/finance/dead-letters".to_string(),
    ] {
        let a = call(app, "GET", &uri, &t, Body::empty()).await;
        assert_eq!(a.status, 200, "{uri}: {}", a.text);
        out.push(a.json);
    }
    out
}

fn uri_for(path: &str, v: &Victim) -> String {
    let id = if path.starts_with("/v1/approvals/") {
        &v.approval
    } else if path.starts_with("/v1/schedules/") {
        &v.schedule
    } else {
        &v.task
    };
    path.replace("{id}", id).replace("{name}", "finance")
}

fn body_for(method: &str, path: &str) -> String {
    match (method, path) {
        ("POST", "/v1/tasks") => r#"{"input": "What is 3 EUR in USD?", "agent": "finance"}"#.into(),
        ("POST", "/v1/schedules") => {
            r#"{"agent": "finance", "input": "x", "when": "rate(5 minutes)"}"#.into()
        }
        ("POST", _) => "{}".into(),
        _ => String::new(),
    }
}

/// Asserts the answer holds none of the victim's data beyond the ids the request
/// itself named (a 404 may repeat the id it was asked for).
#[track_caller]
fn leaks_nothing(a: &Answer, v: &Victim, uri: &str, what: &str) {
    for s in v.secrets().into_iter().filter(|s| !uri.contains(s)) {
        assert!(
            !a.text.contains(s),
            "{what}: the answer carries {s:?}: {}",
            a.text
        );
    }
}

fn claims(tenant: &str, scope: &str) -> Claims {
    Claims {
        sub: "mallory".into(),
        tenant: tenant.into(),
        scope: scope.into(),
        exp: now_secs() + 3600,
        iat: None,
        nbf: None,
        iss: None,
        aud: None,
    }
}

#[tokio::test]
async fn every_route_refuses_missing_bad_expired_and_narrow_tokens_and_other_tenants() {
    let (sys, runs) = guarded_system();
    let app = router(&sys);
    let v = victim(&sys, &app).await;
    let before = state_of(&app, &v).await;

    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let unsigned = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&serde_json::to_string(&claims("victim", "admin")).unwrap())
    );
    let forged = mint(b"not-the-secret", &claims("victim", "admin"));
    let expired = token_until("victim", "admin", now_secs() - 10);
    let no_tenant = {
        let mut c = serde_json::to_value(claims("victim", "admin")).unwrap();
        c.as_object_mut().unwrap().remove("tenant");
        format!("{}.{}.x", b64(r#"{"alg":"HS256"}"#), b64(&c.to_string()))
    };
    let bad: [(&str, Option<&str>); 6] = [
        ("no token", None),
        ("garbage", Some("garbage")),
        ("unsigned", Some(&unsigned)),
        ("forged", Some(&forged)),
        ("expired", Some(&expired)),
        ("no tenant", Some(&no_tenant)),
    ];
    let mut checked = 0;
    for r in routes() {
        let Some(scope) = r.scope else { continue };
        checked += 1;
        let method = r.method.as_str();
        let uri = uri_for(r.path, &v);
        let body = body_for(method, r.path);
        for (what, tok) in bad {
            let a = send(&app, method, &uri, tok, body.clone(), &[]).await;
            let what = format!("{method} {uri} with {what}");
            a.problem(401);
            assert!(
                a.headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer"),
                "{what}"
            );
            leaks_nothing(&a, &v, &uri, &what);
        }
        let narrower = match scope {
            Scope::Read => "openid",
            Scope::Write => "read",
            Scope::Admin => "read write",
        };
        let a = call(&app, method, &uri, &token("victim", narrower), body.clone()).await;
        let what = format!("{method} {uri} with scope {narrower:?}");
        a.problem(403);
        assert!(
            a.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains(&format!("scope=\"{scope}\"")),
            "{what}"
        );
        leaks_nothing(&a, &v, &uri, &what);

        // Another tenant's admin, with the victim's ids.
        let a = call(&app, method, &uri, &token("mallory", "admin"), body.clone()).await;
        let what = format!("{method} {uri} as another tenant");
        if r.path.contains("{id}") {
            a.problem(404);
        } else {
            assert!(a.status.is_success(), "{what}: {}", a.text);
        }
        leaks_nothing(&a, &v, &uri, &what);
    }
    assert!(checked >= 18, "every scoped route was tried ({checked})");

    assert_eq!(
        state_of(&app, &v).await,
        before,
        "the victim's state is untouched"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "nothing ran the victim's tool"
    );
}

#[tokio::test]
async fn a_client_cannot_choose_a_task_id_and_keys_never_cross_tenants() {
    let sys = common::system();
    let app = router(&sys);
    let a = token("alice", "write");
    let b = token("bob", "write");
    let body = r#"{"input": "What is 7 EUR in USD?", "agent": "finance"}"#;
    let post = |tok: String, body: &'static str, k: Option<String>| {
        let app = app.clone();
        async move {
            let headers: Vec<(&str, &str)> = match &k {
                Some(k) => vec![("idempotency-key", k.as_str())],
                None => vec![],
            };
            send(&app, "POST", "/v1/tasks", Some(&tok), body, &headers).await
        }
    };
    let ta = post(a.clone(), body, Some("k1".into())).await;
    assert_eq!(ta.status, 202);
    let ta_id = ta.json["id"].as_str().unwrap().to_string();
    let ta_events = call(
        &app,
        "GET",
        &format!("/v1/tasks/{ta_id}/events"),
        &a,
        Body::empty(),
    )
    .await;

    // Bob with Alice's key, with her task id and with her first envelope's id as keys:
    // each a new task of his own.
    let mut bobs = Vec::new();
    let mut keys = vec!["k1".to_string(), ta_id.clone()];
    let envelope = ta.json["first_envelope"].as_str().unwrap().to_string();
    if envelope != ta_id {
        keys.push(envelope);
    }
    for k in keys {
        let tb = post(b.clone(), body, Some(k.clone())).await;
        assert_eq!(tb.status, 202, "key {k}: {}", tb.text);
        assert_ne!(tb.json["id"], ta_id.as_str(), "key {k}");
        assert_eq!(tb.json["tenant"], "bob");
        bobs.push(tb.json["id"].as_str().unwrap().to_string());
    }
    // Naming her task in the body is refused outright.
    let named = post(
        b.clone(),
        r#"{"input": "What is 7 EUR in USD?", "agent": "finance", "id": "01JDA5V0K3Z8Q9WX7YB2M4N6PR"}"#,
        None,
    )
    .await;
    named.problem(400);
    let named = send(
        &app,
        "POST",
        "/v1/tasks",
        Some(&b),
        format!(r#"{{"input": "x", "agent": "finance", "id": "{ta_id}"}}"#),
        &[],
    )
    .await;
    named.problem(400);
    // Bob sees nothing of hers; she sees her task unchanged, and her key is still hers.
    call(
        &app,
        "GET",
        &format!("/v1/tasks/{ta_id}"),
        &b,
        Body::empty(),
    )
    .await
    .problem(404);
    let again = post(a.clone(), body, Some("k1".into())).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json["id"], ta_id.as_str());
    assert_eq!(again.json["tenant"], "alice");
    let after = call(
        &app,
        "GET",
        &format!("/v1/tasks/{ta_id}/events"),
        &a,
        Body::empty(),
    )
    .await;
    assert_eq!(after.json, ta_events.json, "her task was not touched");
    let mine = call(&app, "GET", "/v1/tasks", &b, Body::empty()).await;
    let listed: Vec<&str> = mine.json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), bobs.len());
    assert!(bobs.iter().all(|id| listed.contains(&id.as_str())));
    assert_eq!(common::all_tasks(&sys).await.len(), 1 + bobs.len());
}
