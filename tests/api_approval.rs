//! Human approval end to end through the HTTP API, on the embedded runtime (SQLite
//! store, trigger loops, offline model) behind a real listener: a tool that needs
//! approval makes its task wait with one pending approval showing the tool and its
//! arguments; approving runs the tool exactly once and the task succeeds, and a
//! second decision is a 409; denying never runs it and the model carries on without
//! it. Then the same through the CLI (`aos approvals`, `aos approve --deny`, `aos
//! audit verify`) on the store the runtime left.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aos::runtime::{ExtraTools, Runtime, RuntimeConfig};
use aos_entrypoints::http::auth::{Claims, mint, now_secs};
use aos_entrypoints::http::{AppState, Auth, app};
use aos_kernel::Catalog;
use aos_kernel::llm::ToolSpec;
use aos_kernel::model::AgentDef;
use aos_kernel::tools::{Tool, ToolContext, ToolError, ToolMeta};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SECRET: &[u8] = b"approval-test-secret";

/// A currency conversion that places an order, so a person approves each call; it
/// counts its runs.
struct PlaceOrder(Arc<AtomicU64>);

#[async_trait]
impl Tool for PlaceOrder {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            // The offline model calls `convert_currency` for "1250 EUR in USD".
            name: "convert_currency".into(),
            description: "Converts money by placing an order; needs a person's approval.".into(),
            input_schema: json!({"type": "object"}),
        }
    }
    fn meta(&self) -> ToolMeta {
        ToolMeta {
            requires_approval: true,
            read_only: false,
            idempotent: false,
            ..ToolMeta::default()
        }
    }
    async fn call(&self, input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(format!(
            "order placed: {} {} = 1356.25 USD",
            input["amount"], input["from"]
        ))
    }
}

fn runtime(db: &Path, runs: &Arc<AtomicU64>) -> Runtime {
    let finance = AgentDef::from_toml(
        "name='finance'\npurpose='money'\nsystem_prompt='You convert money.'\ntools=['convert_currency']\nkeywords=['eur','usd']\n",
    )
    .unwrap();
    let mut config = RuntimeConfig {
        db: db.to_path_buf(),
        concurrency: 1,
        extra_tools: ExtraTools(vec![Arc::new(PlaceOrder(runs.clone()))]),
        ..RuntimeConfig::default()
    };
    config.tools.offline = true;
    Runtime::open_with(config, Catalog::new(vec![finance]).unwrap()).unwrap()
}

fn token(scope: &str) -> String {
    mint(
        SECRET,
        &Claims {
            sub: "alice".into(),
            tenant: "default".into(),
            scope: scope.into(),
            exp: now_secs() + 3600,
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
        },
    )
}

struct Api {
    base: String,
    client: reqwest::Client,
    token: String,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
    async fn get(&self, path: &str) -> Value {
        let (status, v) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
    /// Polls the task until `done` says so.
    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let t = self.get(&format!("/v1/tasks/{id}")).await;
            if done(&t) {
                return t;
            }
            assert!(Instant::now() < deadline, "task never {what}: {t}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    async fn submit(&self) -> String {
        let (status, t) = self
            .post(
                "/v1/tasks",
                json!({"input": "What is 1250 EUR in USD?", "agent": "finance"}),
            )
            .await;
        assert_eq!(status, 202, "{t}");
        t["id"].as_str().unwrap().to_string()
    }
    /// Waits for the task to wait on a person, and returns its one pending approval.
    async fn pending(&self, task: &str) -> Value {
        self.wait_for(task, "waited", |t| t["status"] == "waiting")
            .await;
        let list = self.get("/v1/approvals").await;
        let mine: Vec<&Value> = list["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["task"] == task)
            .collect();
        assert_eq!(mine.len(), 1, "{list}");
        mine[0].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_runs_the_tool_once_and_deny_lets_the_model_continue_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let rt = runtime(&dir.path().join("aos.db"), &runs);
    let running = rt.start().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(rt.kernel().clone(), Auth::hs256(SECRET)).with_inbox(rt.inbox());
    let server = tokio::spawn(async move { axum::serve(listener, app(state)).await });
    let api = Api {
        base,
        client: reqwest::Client::new(),
        token: token("read write admin"),
    };

    // Approve: the call waits, runs once when approved, and the task succeeds.
    let task = api.submit().await;
    let approval = api.pending(&task).await;
    assert_eq!(approval["status"], "pending");
    assert_eq!(approval["tool"], "convert_currency");
    assert_eq!(approval["agent"], "finance");
    assert_eq!(approval["arguments"]["amount"], json!(1250.0));
    assert_eq!(approval["arguments"]["from"], "EUR");
    assert_eq!(approval["task_input"], "What is 1250 EUR in USD?");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "nothing runs before approval"
    );
    let id = approval["id"].as_str().unwrap().to_string();
    let got = api.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(got, approval);

    // A reader cannot decide.
    let reader = Api {
        token: token("read"),
        ..api_clone(&api)
    };
    let (status, _) = reader
        .post(&format!("/v1/approvals/{id}/approve"), json!({}))
        .await;
    assert_eq!(status, 403);

    let (status, decided) = api
        .post(
            &format!("/v1/approvals/{id}/approve"),
            json!({"note": "within budget"}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["decided_by"], "alice");
    assert_eq!(decided["note"], "within budget");
    let done = api
        .wait_for(&task, "finished", |t| {
            t["status"] != "waiting" && t["status"] != "running" && t["status"] != "queued"
        })
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        done["result"].as_str().unwrap().contains("order placed"),
        "{done}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "approved: ran exactly once");
    for verb in ["approve", "deny"] {
        let (status, again) = api
            .post(&format!("/v1/approvals/{id}/{verb}"), json!({}))
            .await;
        assert_eq!(status, 409, "a second decision ({verb}): {again}");
        assert!(
            again["detail"]
                .as_str()
                .unwrap()
                .contains("already approved by alice"),
            "{again}"
        );
    }
    let audit = api.get(&format!("/v1/tasks/{task}/audit")).await;
    assert_eq!(audit["ok"], true, "{audit}");
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for want in ["approval_asked", "approval_decided", "tool_call"] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }

    // Deny: the tool never runs, and the model answers without it.
    let task = api.submit().await;
    let approval = api.pending(&task).await;
    let id = approval["id"].as_str().unwrap().to_string();
    let (status, decided) = api
        .post(
            &format!("/v1/approvals/{id}/deny"),
            json!({"note": "not this quarter"}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["status"], "denied");
    let done = api
        .wait_for(&task, "finished", |t| {
            t["status"] != "waiting" && t["status"] != "running" && t["status"] != "queued"
        })
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let answer = done["result"].as_str().unwrap();
    assert!(answer.contains("denied"), "the model was told: {answer}");
    assert!(!answer.contains("order placed"), "{answer}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the denied call never ran");
    assert_eq!(
        api.get("/v1/approvals").await["approvals"],
        json!([]),
        "nothing pending"
    );

    server.abort();
    running.shutdown(Duration::from_secs(5)).await;
}

fn api_clone(api: &Api) -> Api {
    Api {
        base: api.base.clone(),
        client: api.client.clone(),
        token: api.token.clone(),
    }
}

fn aos(db: &Path, args: &[&str]) -> (bool, String) {
    let home = db.parent().expect("the store is in a directory");
    let out = common::aos_local(home)
        .args(args)
        .arg("--db")
        .arg(db)
        .args(["--offline"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_and_decides_approvals_and_verifies_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aos.db");
    let runs = Arc::new(AtomicU64::new(0));
    let task = {
        let rt = runtime(&db, &runs);
        let running = rt.start().await.unwrap();
        let task = rt
            .kernel()
            .submit("finance", "What is 1250 EUR in USD?", None)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while rt
            .kernel()
            .pending_approvals("default", 10)
            .await
            .unwrap()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "no approval was asked for");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        running.shutdown(Duration::from_secs(5)).await;
        task.id.to_string()
    };

    let (ok, listed) = aos(&db, &["approvals"]);
    assert!(ok, "{listed}");
    assert!(listed.contains("1 approval(s) pending"), "{listed}");
    assert!(listed.contains("convert_currency"), "{listed}");
    let id = listed
        .lines()
        .find_map(|l| l.strip_prefix("- "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let (ok, said) = aos(
        &db,
        &[
            "approve",
            &id,
            "--deny",
            "--note",
            "not today",
            "--by",
            "bob",
        ],
    );
    assert!(ok, "{said}");
    assert!(said.contains(&format!("Denied {id}")), "{said}");
    let (ok, again) = aos(&db, &["approve", &id]);
    assert!(!ok, "a decided approval is not decided again: {again}");

    // The runtime carries the task on: the model is told, the tool never runs.
    let rt = runtime(&db, &runs);
    let running = rt.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let t = rt
            .kernel()
            .ports()
            .tasks
            .get_task(task.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        if t.status.is_final() {
            break t;
        }
        assert!(Instant::now() < deadline, "{t:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    running.shutdown(Duration::from_secs(5)).await;
    assert!(done.result.unwrap_or_default().contains("denied"));
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    let (ok, verified) = aos(&db, &["audit", "verify", &task]);
    assert!(ok, "{verified}");
    assert!(verified.starts_with("ok: "), "{verified}");
    let (ok, shown) = aos(&db, &["audit", "show", &task]);
    assert!(ok, "{shown}");
    assert!(shown.contains("\"approval_decided\""), "{shown}");
}
