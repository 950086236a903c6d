//! The HTTP API v1 as a client sees it: tasks are accepted, listed a page at a time,
//! readable and streamable; every bad request gets a problem document with a reason,
//! after which the API keeps serving; idempotency keys make retries safe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aos_kernel::TaskStatus;
use aos_kernel::ports::Inbox;
use axum::body::Body;
use axum::http::Request;
use common::{call, router, send, system, token};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

#[tokio::test]
async fn a_submitted_task_runs_and_its_timeline_is_readable() {
    let sys = system();
    let app = router(&sys);
    let t = token("default", "write");
    let created = call(
        &app,
        "POST",
        "/v1/tasks",
        &t,
        r#"{"input": "What is 1250 EUR in USD?"}"#,
    )
    .await;
    assert_eq!(created.status, 202, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_string();
    assert_eq!(created.json["status"], "queued");
    assert_eq!(created.json["tenant"], "default");
    assert_eq!(
        created.headers["location"].to_str().unwrap(),
        format!("/v1/tasks/{id}")
    );
    sys.drain().await;
    let got = call(&app, "GET", &format!("/v1/tasks/{id}"), &t, Body::empty()).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json["status"], TaskStatus::Succeeded.as_str());
    let events = call(
        &app,
        "GET",
        &format!("/v1/tasks/{id}/events"),
        &t,
        Body::empty(),
    )
    .await;
    assert_eq!(events.status, 200);
    let kinds: Vec<&str> = events.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"submitted"), "{}", events.text);
    assert_eq!(kinds.last(), Some(&"answer"));
    assert!(!kinds.contains(&"audit"), "audit records are not timeline");
    let list = call(&app, "GET", "/v1/tasks?status=succeeded", &t, Body::empty()).await;
    assert_eq!(list.json["tasks"].as_array().unwrap().len(), 1);
    let refused = call(
        &app,
        "POST",
        &format!("/v1/tasks/{id}/cancel"),
        &t,
        Body::empty(),
    )
    .await;
    refused.problem(409);
    let after = call(
        &app,
        "GET",
        &format!("/v1/tasks/{id}/events"),
        &t,
        Body::empty(),
    )
    .await;
    assert_eq!(after.json, events.json, "a refused cancel writes nothing");
    let agents = call(&app, "GET", "/v1/agents", &t, Body::empty()).await;
    assert_eq!(agents.json["agents"].as_array().unwrap().len(), 3);
    let one = call(&app, "GET", "/v1/agents/primary", &t, Body::empty()).await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.json["recent_tasks"][0]["id"], id.as_str());
    assert_eq!(one.json["may_message"], json!(["weather", "finance"]));
}

#[tokio::test]
async fn bad_requests_get_problem_documents_and_the_api_keeps_serving() {
    let sys = system();
    let app = router(&sys);
    let t = token("default", "admin");
    let post = |body: Body| {
        let app = app.clone();
        let t = t.clone();
        async move { call(&app, "POST", "/v1/tasks", &t, body).await }
    };
    let a = post(Body::empty()).await;
    assert!(
        a.problem(400).detail().starts_with("request body is empty"),
        "{}",
        a.text
    );
    let a = post(vec![b'a'; 10 * 1024 * 1024].into()).await;
    assert!(
        a.problem(413).detail().contains("over the limit"),
        "{}",
        a.text
    );
    let a = post("{not json".into()).await;
    assert!(
        a.problem(400).detail().contains("send JSON like"),
        "{}",
        a.text
    );
    let a = post(r#"{"input": "hi", "agent": "nobody"}"#.into()).await;
    assert_eq!(
        a.problem(422).detail(),
        "unknown agent 'nobody'; known agents: finance, primary, weather"
    );
    let a = post(r#"{"input": "   "}"#.into()).await;
    assert!(a.problem(400).detail().contains("empty"), "{}", a.text);
    let big = format!(r#"{{"input": "{}"}}"#, "x".repeat(100 * 1024));
    let a = post(big.into()).await;
    assert!(
        a.problem(413)
            .detail()
            .contains("over the limit of 65536 bytes")
    );
    // A client cannot choose a task id any more.
    let a = post(r#"{"input": "hi", "id": "01JDA5V0K3Z8Q9WX7YB2M4N6PR"}"#.into()).await;
    assert!(
        a.problem(400).detail().contains("unknown field `id`"),
        "{}",
        a.text
    );

    let get = |uri: &'static str| {
        let app = app.clone();
        let t = t.clone();
        async move { call(&app, "GET", uri, &t, Body::empty()).await }
    };
    get("/v1/tasks/not-a-ulid").await.problem(400);
    get("/v1/tasks/01JDA5V0K3Z8Q9WX7YB2M4N6PR")
        .await
        .problem(404);
    get("/v1/tasks?status=bogus").await.problem(400);
    let a = get("/v1/tasks?limit=abc").await;
    assert!(
        a.problem(400).detail().starts_with("bad query string"),
        "{}",
        a.text
    );
    get("/v1/tasks?limit=0").await.problem(400);
    get("/v1/tasks?cursor=zzz").await.problem(400);
    get("/nowhere").await.problem(404);
    get("/tasks").await.problem(404);
    get("/v1/agents/nobody").await.problem(404);
    let a = send(&app, "DELETE", "/v1/tasks", Some(&t), Body::empty(), &[]).await;
    a.problem(405);
    assert!(a.headers.contains_key("allow"), "{:?}", a.headers);

    // A browser's form post, and a write from another site, are refused before
    // anything runs.
    let a = send(
        &app,
        "POST",
        "/v1/tasks",
        Some(&t),
        "input=hi",
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await;
    a.problem(415);
    let a = send(
        &app,
        "POST",
        "/v1/tasks",
        Some(&t),
        r#"{"input": "hi"}"#,
        &[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ],
    )
    .await;
    a.problem(403);
    let a = send(
        &app,
        "POST",
        "/v1/tasks",
        Some(&t),
        r#"{"input": "hi"}"#,
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    a.problem(403);

    // Nothing was recorded by the bad requests, and a good one still works.
    assert!(common::all_tasks(&sys).await.is_empty());
    let a = post(r#"{"input": "What is 2 EUR in USD?"}"#.into()).await;
    assert_eq!(a.status, 202, "{}", a.text);
}

#[tokio::test]
async fn tasks_are_listed_a_page_at_a_time_newest_first() {
    let sys = system();
    let app = router(&sys);
    let t = token("default", "write");
    let mut ids = Vec::new();
    for i in 0..5 {
        sys.clock.advance(1);
        let a = call(
            &app,
            "POST",
            "/v1/tasks",
            &t,
            format!(r#"{{"input": "What is {i} EUR in USD?"}}"#),
        )
        .await;
        ids.push(a.json["id"].as_str().unwrap().to_string());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut uri = "/v1/tasks?limit=2".to_string();
    loop {
        let page = call(&app, "GET", &uri, &t, Body::empty()).await;
        assert_eq!(page.status, 200, "{}", page.text);
        for task in page.json["tasks"].as_array().unwrap() {
            seen.push(task["id"].as_str().unwrap().to_string());
        }
        match page.json["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/tasks?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every task once, newest first");
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retry_return_the_same_task_once() {
    let sys = system();
    let app = router(&sys);
    let t = token("default", "write");
    let body = r#"{"input": "What is 5 EUR in USD?", "agent": "finance"}"#;
    let with_key = |body: &'static str, key: &'static str| {
        let app = app.clone();
        let t = t.clone();
        async move {
            send(
                &app,
                "POST",
                "/v1/tasks",
                Some(&t),
                body,
                &[("idempotency-key", key)],
            )
            .await
        }
    };
    let first = with_key(body, "order-42").await;
    assert_eq!(first.status, 202, "{}", first.text);
    let again = with_key(body, "order-42").await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["id"], first.json["id"]);
    assert_eq!(again.headers["location"], first.headers["location"]);
    let other = with_key(
        r#"{"input": "What is 6 EUR in USD?", "agent": "finance"}"#,
        "order-42",
    )
    .await;
    other.problem(409);
    assert_eq!(
        common::all_tasks(&sys).await.len(),
        1,
        "one task however often it is retried"
    );
    assert_eq!(
        sys.queues.depth("finance").await.unwrap(),
        1,
        "its first envelope is queued once"
    );
    // Without a key, the same body is a new task.
    let fresh = call(&app, "POST", "/v1/tasks", &t, body).await;
    assert_eq!(fresh.status, 202);
    assert_ne!(fresh.json["id"], first.json["id"]);
}

#[tokio::test]
async fn cancelling_a_task_stops_its_remaining_work() {
    let sys = system();
    let app = router(&sys);
    let t = token("default", "write");
    let task = call(
        &app,
        "POST",
        "/v1/tasks",
        &t,
        r#"{"input": "What's the weather in Oslo and 5 EUR in USD?"}"#,
    )
    .await;
    let id = task.json["id"].as_str().unwrap().to_string();
    let c = call(
        &app,
        "POST",
        &format!("/v1/tasks/{id}/cancel"),
        &t,
        r#"{"reason": "changed my mind"}"#,
    )
    .await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.json["status"], "cancelled");
    sys.drain().await;
    let t2 = call(&app, "GET", &format!("/v1/tasks/{id}"), &t, Body::empty()).await;
    assert_eq!(t2.json["status"], "cancelled");
    assert_eq!(
        t2.json["usage"]["llm_calls"], 0,
        "no model was called after the cancel"
    );
}

/// Reads an SSE body to its end: `(event, id, data)` per event.
async fn read_stream(
    app: &axum::Router,
    uri: &str,
    token: &str,
    last: Option<&str>,
) -> Vec<(String, String, Value)> {
    let mut req = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {token}"));
    if let Some(l) = last {
        req = req.header("last-event-id", l);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let bytes = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        resp.into_body().collect(),
    )
    .await
    .expect("the stream ends once the task is final")
    .unwrap()
    .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty() && !b.starts_with(':'))
        .map(|block| {
            let mut ev = (String::new(), String::new(), Value::Null);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    ev.0 = v.into();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    ev.1 = v.into();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    ev.2 = serde_json::from_str(v).unwrap();
                }
            }
            ev
        })
        .collect()
}

#[tokio::test]
async fn the_event_stream_follows_a_task_to_its_end_and_resumes_after_the_last_id() {
    let sys = std::sync::Arc::new(system());
    let app = router(&sys);
    let t = token("default", "read write");
    let task = call(
        &app,
        "POST",
        "/v1/tasks",
        &t,
        r#"{"input": "What's the weather in Oslo and 5 EUR in USD?"}"#,
    )
    .await;
    let id = task.json["id"].as_str().unwrap().to_string();
    let uri = format!("/v1/tasks/{id}/events/stream");
    // Follow it live while the agents work.
    let driver = {
        let sys = sys.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            sys.drain().await;
        })
    };
    let live = read_stream(&app, &uri, &t, None).await;
    driver.await.unwrap();
    let timeline = call(
        &app,
        "GET",
        &format!("/v1/tasks/{id}/events"),
        &t,
        Body::empty(),
    )
    .await;
    let want: Vec<&str> = timeline.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let (end, events) = live.split_last().unwrap();
    assert_eq!(end.0, "end");
    assert_eq!(end.2["status"], "succeeded");
    let mut got: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert!(
        events
            .iter()
            .all(|e| e.0 == "event" && e.2["id"] == e.1.as_str())
    );
    got.sort();
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(got, sorted, "every timeline event once");

    // Resume after the third event: the rest, then the end.
    let resumed = read_stream(&app, &uri, &t, Some(want[2])).await;
    let ids: Vec<&str> = resumed.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(ids[..ids.len() - 1], want[3..]);
    assert_eq!(resumed.last().unwrap().0, "end");
}

#[tokio::test]
async fn schedules_are_created_listed_and_deleted_per_tenant() {
    let sys = system();
    let app = router(&sys);
    let t = token("default", "write");
    let a = call(
        &app,
        "POST",
        "/v1/schedules",
        &t,
        r#"{"agent": "weather", "input": "Weather in Oslo?", "when": "cron(0 9 * * ? *)"}"#,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a.json["id"].as_str().unwrap().to_string();
    assert_eq!(a.json["tenant"], "default");
    assert_eq!(a.json["kind"], "task");
    let bad = call(
        &app,
        "POST",
        "/v1/schedules",
        &t,
        r#"{"agent": "weather", "input": "x", "when": "every tuesday"}"#,
    )
    .await;
    bad.problem(400);
    let unknown = call(
        &app,
        "POST",
        "/v1/schedules",
        &t,
        r#"{"agent": "nobody", "input": "x", "when": "rate(5 minutes)"}"#,
    )
    .await;
    unknown.problem(422);
    let list = call(&app, "GET", "/v1/schedules", &t, Body::empty()).await;
    assert_eq!(list.json["schedules"].as_array().unwrap().len(), 1);
    let other = token("acme", "write");
    let theirs = call(&app, "GET", "/v1/schedules", &other, Body::empty()).await;
    assert_eq!(theirs.json["schedules"], json!([]));
    call(
        &app,
        "DELETE",
        &format!("/v1/schedules/{id}"),
        &other,
        Body::empty(),
    )
    .await
    .problem(404);
    let gone = call(
        &app,
        "DELETE",
        &format!("/v1/schedules/{id}"),
        &t,
        Body::empty(),
    )
    .await;
    assert_eq!(gone.status, 204);
    call(
        &app,
        "DELETE",
        &format!("/v1/schedules/{id}"),
        &t,
        Body::empty(),
    )
    .await
    .problem(404);
}

#[tokio::test]
async fn dead_letters_are_listed_and_redriven_per_tenant() {
    use aos_kernel::ports::Mailbox;
    let sys = system();
    let app = router(&sys);
    // One tenant's task whose envelope is parked, and a body that is no envelope.
    let acme = token("acme", "admin");
    let task = call(
        &app,
        "POST",
        "/v1/tasks",
        &acme,
        r#"{"input": "What is 3 EUR in USD?", "agent": "finance"}"#,
    )
    .await;
    let msgs = sys.queues.receive("finance", 10, 30_000).await.unwrap();
    sys.queues
        .dead_letter("finance", &msgs[0].body, "parked by the test")
        .await
        .unwrap();
    sys.queues
        .delete("finance", &msgs[0].receipt)
        .await
        .unwrap();
    sys.queues
        .dead_letter("finance", "{truncated", "envelope does not parse")
        .await
        .unwrap();

    let mine = call(
        &app,
        "GET",
        "/v1/agents/finance/dead-letters",
        &acme,
        Body::empty(),
    )
    .await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    let items = mine.json["dead_letters"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", mine.text);
    assert_eq!(items[0]["task"], task.json["id"]);
    let ops = token("default", "admin");
    let theirs = call(
        &app,
        "GET",
        "/v1/agents/finance/dead-letters",
        &ops,
        Body::empty(),
    )
    .await;
    let items: Vec<&Value> = theirs.json["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(
        items.len(),
        1,
        "the operators see the unparseable one only: {}",
        theirs.text
    );
    assert_eq!(items[0]["reason"], "envelope does not parse");
    // The catalog counts each tenant's own dead letters; only the operators see the
    // depth of the queues every tenant shares.
    let finance = |list: &Value| {
        list["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "finance")
            .unwrap()
            .clone()
    };
    let catalog = call(
        &app,
        "GET",
        "/v1/agents",
        &token("acme", "read"),
        Body::empty(),
    )
    .await;
    assert_eq!(
        finance(&catalog.json)["dead_letters"],
        1,
        "{}",
        catalog.text
    );
    assert!(finance(&catalog.json).get("queue_depth").is_none());
    let catalog = call(&app, "GET", "/v1/agents", &ops, Body::empty()).await;
    assert_eq!(
        finance(&catalog.json)["dead_letters"],
        1,
        "{}",
        catalog.text
    );
    assert_eq!(finance(&catalog.json)["queue_depth"], 0);
    // acme cannot redrive the operators' entry by id.
    let foreign = items[0]["id"].as_str().unwrap().to_string();
    call(
        &app,
        "POST",
        "/v1/agents/finance/dead-letters/redrive",
        &acme,
        json!({"ids": [foreign]}).to_string(),
    )
    .await
    .problem(404);
    let r = call(
        &app,
        "POST",
        "/v1/agents/finance/dead-letters/redrive",
        &acme,
        Body::empty(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["redriven"], 1);
    assert_eq!(sys.queues.depth("finance").await.unwrap(), 1);
    assert_eq!(
        sys.queues.dead_letters("finance", 10).await.unwrap().len(),
        1
    );
    sys.drain().await;
    let done = call(
        &app,
        "GET",
        &format!("/v1/tasks/{}", task.json["id"].as_str().unwrap()),
        &acme,
        Body::empty(),
    )
    .await;
    assert_eq!(done.json["status"], "succeeded");
}
