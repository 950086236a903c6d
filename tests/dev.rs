//! `aos dev` as a long-running process: killed with SIGKILL while 200 tasks are in
//! flight, restarted, every task finishes exactly once; bad requests get 4xx problem
//! documents and the stack keeps serving; SIGTERM stops it cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_kernel::ports::TaskStore;
use aos_kernel::{EventKind, TaskStatus};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Dev {
    child: Child,
    base: String,
}

/// The secret `aos dev` signs with in these tests.
const SECRET: &str = "dev-test-secret";

/// An admin token of the default tenant, signed with [`SECRET`].
fn admin() -> String {
    use aos_entrypoints::http::auth::{Claims, mint, now_secs};
    mint(
        SECRET.as_bytes(),
        &Claims {
            sub: "dev-test".into(),
            tenant: "default".into(),
            scope: "admin".into(),
            exp: now_secs() + 3600,
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
        },
    )
}

fn start(db: &Path, latency_ms: u64) -> Dev {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aos"))
        .args([
            "dev",
            "--addr",
            "127.0.0.1:0",
            "--offline",
            "--concurrency",
            "2",
            "--jwt-secret",
            SECRET,
        ])
        .arg("--db")
        .arg(db)
        .args(["--model-latency-ms", &latency_ms.to_string()])
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("AOS_MODEL")
        .env_remove("AOS_DEFAULT_MODEL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Dev { child, base: url }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(url)
        .bearer_auth(admin())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn final_count(client: &reqwest::Client, base: &str) -> (usize, Vec<Value>) {
    let v = get_json(client, &format!("{base}/v1/tasks?limit=1000")).await;
    let tasks = v["tasks"].as_array().unwrap().clone();
    let done = tasks
        .iter()
        .filter(|t| {
            matches!(
                t["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        })
        .count();
    (done, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_200_tasks_in_flight_loses_none_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aos.db");
    let client = reqwest::Client::new();
    let mut dev = start(&db, 5);
    let mut submits = Vec::new();
    for i in 0..200 {
        let c = client.clone();
        let url = format!("{}/v1/tasks", dev.base);
        let input = if i % 2 == 0 {
            "What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?"
        } else {
            "What's the weather in London, and what is 100 GBP in EUR?"
        };
        submits.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .bearer_auth(admin())
                .json(&serde_json::json!({"input": input}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }));
    }
    let mut ids = Vec::new();
    for s in submits {
        ids.push(s.await.unwrap());
    }
    // Kill once the first tasks have finished, so the store holds every stage at once:
    // finished tasks, sessions waiting for replies, messages in flight and queued.
    let deadline = Instant::now() + Duration::from_secs(30);
    while final_count(&client, &dev.base).await.0 == 0 {
        assert!(Instant::now() < deadline, "no task finished within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dev.child.kill().unwrap(); // SIGKILL
    dev.child.wait().unwrap();

    // Read the file the killed process left: every task recorded, most unfinished.
    let store = aos_local::LocalStore::open(
        &db,
        aos_local::LocalConfig::default(),
        std::sync::Arc::new(aos_kernel::ports::SystemClock),
    )
    .unwrap();
    let at_kill = store
        .list_tasks(&aos_kernel::ports::TaskQuery {
            tenant: None,
            status: None,
            before: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(
        at_kill.len(),
        200,
        "every accepted task was recorded before the kill"
    );
    let unfinished = at_kill.iter().filter(|t| !t.status.is_final()).count();
    eprintln!("at SIGKILL: {unfinished} of 200 tasks unfinished");
    assert!(unfinished < 200, "some tasks had finished before the kill");
    assert!(
        unfinished > 0,
        "the kill must land while tasks are in flight"
    );
    drop(store);

    let mut dev = start(&db, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let tasks = loop {
        let (done, tasks) = final_count(&client, &dev.base).await;
        if done == 200 {
            break tasks;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of 200 tasks finished after restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(tasks.len(), 200, "no task duplicated");
    let store = aos_local::LocalStore::open(
        &db,
        aos_local::LocalConfig::default(),
        std::sync::Arc::new(aos_kernel::ports::SystemClock),
    )
    .unwrap();
    for id in &ids {
        let id = id.parse().unwrap();
        let task = store.get_task(id).await.unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}");
        let result = task.result.clone().unwrap();
        assert!(
            result.contains("- weather:") && result.contains("- finance:"),
            "{result}"
        );
        let events = store.task_events(id).await.unwrap();
        let count = |k: EventKind| events.iter().filter(|e| e.kind == k).count();
        assert_eq!(
            count(EventKind::Delegated),
            2,
            "each delegation sent once: {task:?}"
        );
        assert_eq!(count(EventKind::Replied), 2, "each reply sent once");
        assert_eq!(count(EventKind::Answer), 1, "one answer");
        assert_eq!(count(EventKind::Woke), 5, "each envelope applied once");
        assert_eq!(task.usage.wakes, 5, "no wake counted twice");
    }
    for agent in ["primary", "weather", "finance"] {
        use aos_kernel::ports::Inbox;
        assert!(
            store.dead_letters(agent, 10).await.unwrap().is_empty(),
            "nothing dead-lettered"
        );
    }
    dev.child.kill().unwrap();
    dev.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_and_the_stack_keeps_serving_then_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aos.db");
    let client = reqwest::Client::new();
    let mut dev = start(&db, 0);
    let post = |body: Vec<u8>| {
        client
            .post(format!("{}/v1/tasks", dev.base))
            .bearer_auth(admin())
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post(Vec::new()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "every error is a problem document"
    );
    let v: Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("empty"), "{v}");
    let r = post(vec![b'x'; 10 * 1024 * 1024]).await;
    // The server answers 413 (or closes the connection once it has said so).
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    let r = post(br#"{"input": "hi", "agent": "nobody"}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = client
        .get(format!("{}/v1/tasks", dev.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no token, no data");
    let r = post(br#"{"input": "What is 12 * (3 + 4)?", "agent": "finance"}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = get_json(&client, &format!("{}/v1/tasks/{id}", dev.base)).await;
        if t["status"] == "succeeded" {
            assert!(
                t["result"].as_str().unwrap().contains("12 * (3 + 4) = 84"),
                "{t}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &dev.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = dev.child.wait().unwrap();
    assert!(exit.success(), "a clean stop exits 0: {exit:?}");
}
