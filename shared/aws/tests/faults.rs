//! The AWS adapters under the faults AWS really produces, against moto server:
//! throttling and 5xx answers are retried with backoff and lose nothing; two wakes
//! racing on one session both land (the loser re-reads and retries); values over
//! DynamoDB's item limit and bodies over SQS's message limit travel through S3 and
//! come back whole.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aos_aws::{AwsBackend, AwsClients, DynamoStore, SQS_MESSAGE_LIMIT, emulator_sdk_config};
use aos_kernel::ids::{EnvelopeId, TaskId};
use aos_kernel::llm::{Content, LlmError, Message, Model, ModelRequest, ModelResponse, StopReason};
use aos_kernel::model::{
    AgentDef, AgentName, Budget, Envelope, Event, EventKind, Kind, Origin, OutboxItem, ReplyTo,
    Session, SessionId, SessionKey, SessionStatus, Task, TaskStatus, TaskUpdate, Usage,
};
use aos_kernel::ports::{
    BlobStore, Clock, Commit, Inbox, Loaded, Mailbox, PortError, SessionStore, SystemClock,
    TaskStore,
};
use aos_kernel::testkit::FnModel;
use aos_kernel::tools::ToolRegistry;
use aos_kernel::{Catalog, Kernel, KernelConfig, Ports, WakeOutcome};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn now() -> u64 {
    SystemClock.now_ms()
}

fn name(s: &str) -> AgentName {
    AgentName::new(s).unwrap()
}

fn fresh_session() -> SessionId {
    SessionId::new(format!("s-{}", ulid::Ulid::new())).unwrap()
}

/// Records a queued task for `agent` the way `Kernel::submit` does, without sending
/// its first envelope (the tests send their own).
async fn new_task(store: &DynamoStore, agent: &str) -> Task {
    let at = now();
    let id = TaskId::new(at);
    let task = Task {
        tenant: "default".into(),
        id,
        status: TaskStatus::Queued,
        agent: name(agent),
        input: "test task".into(),
        result: None,
        error: None,
        usage: Usage::default(),
        budget: Budget::default(),
        trace_id: format!("trace-{id}"),
        created_at: at,
        updated_at: at,
        first_envelope: EnvelopeId(id.0),
    };
    let event = Event {
        id: EnvelopeId(id.0).origin_event(),
        task: id,
        at,
        agent: "user".into(),
        kind: EventKind::Submitted,
        detail: format!("to {agent}"),
        envelope: Some(task.first_envelope),
    };
    assert!(store.create_task(&task, &event).await.unwrap());
    task
}

fn envelope(task: &Task, to: &str, session: &SessionId, body: String) -> Envelope {
    Envelope {
        tenant: "default".into(),
        id: EnvelopeId::new(now()),
        task: task.id,
        session: session.clone(),
        from: "boss".into(),
        to: name(to),
        kind: Kind::Message,
        body,
        body_ref: None,
        hop: 1,
        trace_id: task.trace_id.clone(),
        sent_at: now(),
        reply_to: None,
        in_reply_to: None,
        is_error: false,
    }
}

fn session_with(task: &Task, agent: &str, id: &SessionId, text: String) -> Session {
    let at = now();
    Session {
        agent: name(agent),
        id: id.clone(),
        task: task.id,
        version: 1,
        status: SessionStatus::Active,
        origin: Origin {
            from: "user".into(),
            reply_to: None,
        },
        transcript: vec![Message::user(text)],
        open_calls: Vec::new(),
        deferred: Vec::new(),
        wakes: 1,
        created_at: at,
        updated_at: at,
        audit: Default::default(),
    }
}

/// A first commit of `session` applying `envelope`, with `outbox` in its marker.
fn first_commit(session: &Session, envelope: EnvelopeId, outbox: Vec<OutboxItem>) -> Commit {
    Commit {
        key: session.key(),
        task: session.task,
        envelope,
        expected_version: 0,
        session: Some(session.clone()),
        outbox,
        task_update: TaskUpdate {
            usage: Usage {
                wakes: 1,
                ..Usage::default()
            },
            ..TaskUpdate::default()
        },
        events: Vec::new(),
        memory: Vec::new(),
        memory_scope: session.agent.to_string(),
    }
}

fn text_response(text: impl Into<String>) -> ModelResponse {
    ModelResponse {
        content: vec![Content::Text { text: text.into() }],
        stop: StopReason::EndTurn,
        usage: Usage {
            llm_calls: 1,
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        },
        model: "scripted".into(),
    }
}

fn one_agent(agent: &str) -> Catalog {
    let toml = format!("name='{agent}'\npurpose='answers questions'\nsystem_prompt='answer'\n");
    Catalog::new(vec![AgentDef::from_toml(&toml).unwrap()]).unwrap()
}

/// A kernel whose tasks, queues, blobs and scheduler are `aws`'s adapters.
fn kernel_on(
    aws: &AwsBackend,
    agent: &str,
    sessions: Arc<dyn SessionStore>,
    model: Arc<dyn Model>,
) -> Kernel {
    let ports = Ports {
        sessions,
        tasks: Arc::new(aws.store.clone()),
        mailbox: Arc::new(aws.queues.clone()),
        blobs: Arc::new(aws.blobs.clone()),
        scheduler: Arc::new(aws.scheduler.clone()),
        model,
        clock: clock(),
    };
    Kernel::new(
        one_agent(agent),
        ToolRegistry::new(),
        ports,
        KernelConfig::default(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------
// 1. Throttling and 5xx
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// DynamoDB-style throttle: HTTP 400, `x-amzn-ErrorType: ThrottlingException`.
    Throttle,
    /// Plain HTTP 503.
    Unavailable,
    /// Plain HTTP 500.
    Internal,
}

/// An HTTP proxy in front of moto that answers the next requests with the planned
/// faults instead of forwarding them.
struct FaultProxy {
    upstream: String,
    http: reqwest::Client,
    plan: Mutex<VecDeque<Fault>>,
    injected: AtomicU64,
}

impl FaultProxy {
    fn inject(&self, faults: &[Fault]) {
        let mut plan = self.plan.lock().unwrap();
        assert!(
            plan.is_empty(),
            "the previous faults were all used: {plan:?}"
        );
        plan.extend(faults.iter().copied());
    }

    fn pending(&self) -> usize {
        self.plan.lock().unwrap().len()
    }
}

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "content-length",
    "transfer-encoding",
    "expect",
    "upgrade",
];

fn fault_response(fault: Fault) -> Response {
    let (status, body) = match fault {
        Fault::Throttle => (
            StatusCode::BAD_REQUEST,
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate exceeded"}"#,
        ),
        Fault::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, ""),
        Fault::Internal => (StatusCode::INTERNAL_SERVER_ERROR, ""),
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    if matches!(fault, Fault::Throttle) {
        let h = r.headers_mut();
        h.insert(
            "x-amzn-ErrorType",
            HeaderValue::from_static("ThrottlingException"),
        );
        h.insert(
            "content-type",
            HeaderValue::from_static("application/x-amz-json-1.0"),
        );
    }
    r
}

async fn forward(State(proxy): State<Arc<FaultProxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let fault = proxy.plan.lock().unwrap().pop_front();
    if let Some(fault) = fault {
        proxy.injected.fetch_add(1, Ordering::SeqCst);
        return fault_response(fault);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = proxy
        .http
        .request(parts.method, format!("{}{path}", proxy.upstream));
    for (k, v) in &parts.headers {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
    let answer = match out.body(body).send().await {
        Ok(a) => a,
        Err(e) => {
            let mut r = Response::new(Body::from(format!("proxy: {e}")));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            return r;
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap();
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    for (k, v) in &headers {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            r.headers_mut().append(k, v.clone());
        }
    }
    r
}

/// Starts the proxy on a free loopback port; returns it and its URL.
async fn start_proxy(upstream: String) -> (Arc<FaultProxy>, String) {
    let proxy = Arc::new(FaultProxy {
        upstream,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        plan: Mutex::new(VecDeque::new()),
        injected: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (proxy, url)
}

#[tokio::test]
async fn throttling_and_5xx_are_retried_with_backoff() {
    use Fault::{Internal, Throttle, Unavailable};
    // Resources are made through moto directly; the backend under test goes through
    // the proxy and shares their names.
    let direct = common::backend(clock(), 5).await;
    let agent = "faulty";
    direct.queues.queue(agent).await.unwrap();
    let task = new_task(&direct.store, agent).await;

    let (proxy, url) = start_proxy(common::endpoint()).await;
    let config = emulator_sdk_config(&url).await;
    let aws = AwsBackend::new(AwsClients::new(&config), direct.settings.clone(), clock());

    let sid = fresh_session();
    let session = session_with(&task, agent, &sid, "hello through a flaky network".into());
    let incoming = envelope(&task, agent, &sid, "the request".into());
    let outgoing = envelope(&task, agent, &sid, "the answer".into());
    let outbox = vec![OutboxItem {
        envelope: outgoing.clone(),
        deliver_at: None,
    }];
    let blob = b"blob bytes through a flaky network".to_vec();

    let step = |faults: &'static [Fault]| {
        proxy.inject(faults);
    };
    let used = |what: &str| {
        assert_eq!(
            proxy.pending(),
            0,
            "every injected fault reached the adapter during {what}"
        );
    };

    step(&[Throttle, Unavailable]);
    aws.store
        .commit(&first_commit(&session, incoming.id, outbox.clone()))
        .await
        .expect("a commit is retried through throttling and 503");
    used("commit");

    step(&[Internal, Throttle]);
    let loaded = aws
        .store
        .load(
            &session.key(),
            task.id,
            incoming.id,
            session.agent.as_str(),
            20,
        )
        .await
        .expect("a load is retried through 500 and throttling");
    used("load");
    assert_eq!(
        loaded.session.as_ref(),
        Some(&session),
        "the committed session is read back unchanged"
    );
    assert_eq!(
        loaded.applied,
        Some(outbox.clone()),
        "the applied marker keeps its outbox"
    );
    assert_eq!(
        loaded.task.map(|t| t.usage.wakes),
        Some(1),
        "the retried commit counted its wake once, not once per attempt"
    );

    step(&[Throttle, Unavailable]);
    aws.queues
        .send(std::slice::from_ref(&outgoing))
        .await
        .expect("a send is retried through throttling and 503");
    used("send");

    step(&[Unavailable, Throttle]);
    let got = aws
        .queues
        .receive(agent, 10, 30_000)
        .await
        .expect("a receive is retried through 503 and throttling");
    used("receive");
    assert_eq!(
        got.len(),
        1,
        "the envelope sent through retries is on the queue exactly once"
    );
    assert_eq!(
        Envelope::parse(&got[0].body).unwrap(),
        outgoing,
        "the received envelope is the one sent"
    );

    step(&[Throttle]);
    aws.queues
        .delete(agent, &got[0].receipt)
        .await
        .expect("a delete is retried through throttling");
    used("delete");

    // S3 speaks XML; its throttles are 503 SlowDown, so only 5xx here.
    step(&[Unavailable, Internal]);
    aws.blobs
        .put("faults/blob", &blob)
        .await
        .expect("a blob put is retried through 503 and 500");
    used("blob put");

    step(&[Internal, Unavailable]);
    let back = aws
        .blobs
        .get("faults/blob")
        .await
        .expect("a blob get is retried through 500 and 503");
    used("blob get");
    assert_eq!(back, Some(blob), "the blob reads back byte for byte");

    assert_eq!(
        direct.queues.depth(agent).await.unwrap(),
        0,
        "the acknowledged message is gone: nothing is left to run twice"
    );

    let counts = aws.counter().snapshot();
    let injected = proxy.injected.load(Ordering::SeqCst);
    assert_eq!(injected, 13, "the proxy injected every planned fault");
    assert_eq!(
        counts.total_attempts() - counts.total_calls(),
        injected,
        "each injected fault cost exactly one retry, and nothing else was retried: {counts:?}"
    );
    assert_eq!(
        counts.calls_of("DynamoDB.TransactWriteItems"),
        1,
        "the commit was one call, retried inside the SDK: {counts:?}"
    );
}

// ---------------------------------------------------------------------------------
// 2. Two wakes racing on one session
// ---------------------------------------------------------------------------------

/// The first two model calls wait for each other, so both wakes have read the same
/// session version before either commits.
struct Rendezvous {
    barrier: tokio::sync::Barrier,
    calls: AtomicU64,
}

#[async_trait]
impl Model for Rendezvous {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, LlmError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < 2 {
            self.barrier.wait().await;
        }
        let asked = request
            .messages
            .last()
            .map(Message::text)
            .unwrap_or_default();
        Ok(text_response(format!("answered: {asked}")))
    }
}

/// DynamoDB with commits taken one at a time. moto does not isolate concurrent
/// transactions (a cancelled `TransactWriteItems` restores a copy of the whole table
/// taken when it started, which can erase a concurrent transaction's writes), so the
/// race is resolved here in a fixed order; DynamoDB itself does this serially per item.
struct OneCommitAtATime {
    store: DynamoStore,
    lock: tokio::sync::Mutex<()>,
}

#[async_trait]
impl SessionStore for OneCommitAtATime {
    async fn load(
        &self,
        key: &SessionKey,
        task: TaskId,
        envelope: EnvelopeId,
        memory_scope: &str,
        memory_limit: usize,
    ) -> Result<Loaded, PortError> {
        self.store
            .load(key, task, envelope, memory_scope, memory_limit)
            .await
    }

    async fn commit(&self, commit: &Commit) -> Result<(), PortError> {
        let _turn = self.lock.lock().await;
        self.store.commit(commit).await
    }
}

#[tokio::test]
async fn two_concurrent_wakes_on_one_session_lose_no_update() {
    let aws = common::backend(clock(), 5).await;
    let model = Arc::new(Rendezvous {
        barrier: tokio::sync::Barrier::new(2),
        calls: AtomicU64::new(0),
    });
    let sessions = Arc::new(OneCommitAtATime {
        store: aws.store.clone(),
        lock: tokio::sync::Mutex::new(()),
    });
    let kernel = kernel_on(&aws, "solo", sessions, model.clone());
    let task = new_task(&aws.store, "solo").await;

    // Two requests from agent boss to the same session of solo; each expects a reply.
    let sid = fresh_session();
    let boss_session = fresh_session();
    let ask = |text: &str, call: &str| {
        let mut e = envelope(&task, "solo", &sid, text.into());
        e.reply_to = Some(ReplyTo {
            agent: name("boss"),
            session: boss_session.clone(),
            call_id: call.into(),
        });
        e
    };
    let a = ask("question alpha", "call-a");
    let b = ask("question beta", "call-b");

    let before = aws.counter().snapshot();
    let (ra, rb) = tokio::time::timeout(Duration::from_secs(15), async {
        tokio::join!(kernel.wake(a.clone()), kernel.wake(b.clone()))
    })
    .await
    .expect("both wakes finish (neither is stuck at the model's rendezvous)");
    let spent = aws.counter().snapshot().since(&before);

    assert_eq!(
        ra,
        Ok(WakeOutcome::Applied { outbox: 1 }),
        "wake alpha is applied once and sends its reply"
    );
    assert_eq!(
        rb,
        Ok(WakeOutcome::Applied { outbox: 1 }),
        "wake beta is applied once and sends its reply"
    );

    let loaded = aws
        .store
        .load(&a.key(), task.id, EnvelopeId::new(now()), a.to.as_str(), 20)
        .await
        .unwrap();
    let session = loaded.session.expect("the session exists");
    let asked: Vec<String> = session
        .transcript
        .iter()
        .filter(|m| m.role == aos_kernel::llm::Role::User)
        .map(Message::text)
        .collect();
    for question in ["question alpha", "question beta"] {
        assert_eq!(
            asked.iter().filter(|t| t.contains(question)).count(),
            1,
            "no update lost: {question:?} is in the session's transcript exactly once: {asked:?}"
        );
    }
    assert_eq!(
        session.version, 2,
        "two commits landed on the session, one after the other"
    );
    assert_eq!(session.wakes, 2, "the session counts both wakes");
    assert_eq!(
        model.calls.load(Ordering::SeqCst),
        3,
        "the losing wake thought again on the winner's state (2 racing calls + 1 retry)"
    );

    let task_now = aws.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(
        task_now.usage.wakes, 2,
        "the task's usage counts each wake once (the conflicted attempt added nothing)"
    );
    assert_eq!(
        task_now.usage.llm_calls,
        model.calls.load(Ordering::SeqCst),
        "the task is charged for every model call the provider billed, the losing \
         attempt's included (it lands with the attempt that commits)"
    );
    assert_eq!(
        spent.calls_of("DynamoDB.TransactWriteItems"),
        3,
        "one commit conflicted (ConditionalCheckFailed) and was re-read and retried: {spent:?}"
    );

    // Both askers got their answer, once each.
    let mut answered = Vec::new();
    for _ in 0..5 {
        for m in aws.queues.receive("boss", 10, 30_000).await.unwrap() {
            answered.push(Envelope::parse(&m.body).unwrap());
            aws.queues.delete("boss", &m.receipt).await.unwrap();
        }
        if answered.len() >= 2 {
            break;
        }
    }
    let mut calls: Vec<String> = answered
        .iter()
        .map(|e| e.in_reply_to.clone().unwrap_or_default())
        .collect();
    calls.sort();
    assert_eq!(
        calls,
        ["call-a", "call-b"],
        "each request got exactly one reply: {answered:?}"
    );
    assert_eq!(aws.queues.depth("boss").await.unwrap(), 0, "no extra reply");
}

// ---------------------------------------------------------------------------------
// 3. Items over DynamoDB's 400 KB
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn an_item_over_400kb_is_offloaded_to_s3() {
    let aws = common::backend(clock(), 5).await;
    let agent = "heavy";
    let task = new_task(&aws.store, agent).await;
    let sid = fresh_session();
    // Text that does not compress to nothing and is not all one character.
    let big: String = (0..600 * 1024)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let session = session_with(&task, agent, &sid, big);
    let incoming = envelope(&task, agent, &sid, "go".into());
    let outbox = vec![OutboxItem {
        envelope: envelope(&task, "elsewhere", &fresh_session(), "o".repeat(450 * 1024)),
        deliver_at: None,
    }];
    let commit = first_commit(&session, incoming.id, outbox.clone());

    aws.store
        .commit(&commit)
        .await
        .expect("a commit with a 600 KB session and a 450 KB outbox succeeds");

    let loaded = aws
        .store
        .load(
            &session.key(),
            task.id,
            incoming.id,
            session.agent.as_str(),
            20,
        )
        .await
        .unwrap();
    assert_eq!(
        loaded.session.as_ref(),
        Some(&session),
        "the oversized session reads back equal"
    );
    assert_eq!(
        loaded.applied,
        Some(outbox),
        "the oversized outbox reads back equal from the applied marker"
    );

    let listed = aws
        .clients
        .s3
        .list_objects_v2()
        .bucket(&aws.settings.bucket)
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    // Keys end in a per-attempt ULID, so a wake that loses a race never overwrites
    // the winner's object.
    let state_key = format!("state/{agent}/{sid}/1-");
    let outbox_key = format!("outbox/{agent}/{sid}/{}-", incoming.id);
    assert!(
        keys.iter().any(|k| k.starts_with(&state_key)),
        "the session state is in S3 under {state_key}…: {keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with(&outbox_key)),
        "the outbox is in S3 under {outbox_key}…: {keys:?}"
    );

    let get = |sk: String| {
        aws.clients
            .dynamodb
            .get_item()
            .table_name(&aws.settings.table)
            .key("pk", AttributeValue::S(format!("S#{agent}#{sid}")))
            .key("sk", AttributeValue::S(sk))
            .consistent_read(true)
            .send()
    };
    let state_item = get("STATE".into()).await.unwrap().item.expect("STATE item");
    let state_ref = state_item.get("state_ref").and_then(|v| v.as_s().ok());
    assert!(
        state_ref.is_some_and(|r| r.starts_with(&state_key) && keys.contains(&r.as_str())),
        "the session item keeps the S3 key: {state_ref:?}"
    );
    assert!(
        !state_item.contains_key("state"),
        "the session item does not also hold the state inline"
    );
    let marker = get(format!("A#{}", incoming.id))
        .await
        .unwrap()
        .item
        .expect("applied marker item");
    let outbox_ref = marker.get("outbox_ref").and_then(|v| v.as_s().ok());
    assert!(
        outbox_ref.is_some_and(|r| r.starts_with(&outbox_key) && keys.contains(&r.as_str())),
        "the applied marker keeps the outbox's S3 key: {outbox_ref:?}"
    );
    assert!(
        !marker.contains_key("outbox"),
        "the applied marker does not also hold the outbox inline"
    );
}

// ---------------------------------------------------------------------------------
// 4. Bodies over SQS's 256 KB
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_body_over_the_sqs_limit_is_offloaded() {
    let aws = common::backend(clock(), 5).await;
    let agent = "reader";
    let task = new_task(&aws.store, agent).await;
    let body: String = (0..300 * 1024)
        .map(|i| char::from(b'A' + (i * 11 % 26) as u8))
        .collect();
    assert!(body.len() > SQS_MESSAGE_LIMIT);
    let sent = envelope(&task, agent, &fresh_session(), body.clone());

    aws.queues
        .send(std::slice::from_ref(&sent))
        .await
        .expect("an envelope with a 300 KB body is sent");

    let got = aws.queues.receive(agent, 10, 30_000).await.unwrap();
    assert_eq!(got.len(), 1, "the big envelope arrived exactly once");
    let received = Envelope::parse(&got[0].body).unwrap();
    let key = format!("bodies/{}", sent.id);
    assert_eq!(
        received.body_ref.as_deref(),
        Some(key.as_str()),
        "the message refers to its body in S3"
    );
    assert!(
        received.body.is_empty(),
        "the message carries no inline body"
    );
    assert_eq!(
        Envelope {
            body: body.clone(),
            body_ref: None,
            ..received.clone()
        },
        sent,
        "everything but the body travelled unchanged"
    );
    assert_eq!(
        aws.blobs.get(&key).await.unwrap().as_deref(),
        Some(body.as_bytes()),
        "the blob holds the original body byte for byte"
    );

    // The receiving agent sees the whole body.
    let expected = body.clone();
    let model = FnModel(move |req: &ModelRequest| {
        let last = req.messages.last().map(Message::text).unwrap_or_default();
        Ok(text_response(if last.ends_with(&expected) {
            format!("intact: {} bytes", expected.len())
        } else {
            format!("damaged: {} bytes", last.len())
        }))
    });
    let kernel = kernel_on(&aws, agent, Arc::new(aws.store.clone()), Arc::new(model));
    let outcome = kernel.wake(received).await;
    assert_eq!(
        outcome,
        Ok(WakeOutcome::Applied { outbox: 0 }),
        "the wake applies the envelope sent by reference"
    );
    aws.queues.delete(agent, &got[0].receipt).await.unwrap();
    let task_now = aws.store.get_task(task.id).await.unwrap().unwrap();
    assert_eq!(
        task_now.result,
        Some(format!("intact: {} bytes", body.len())),
        "nothing was lost: the model read the full 300 KB body"
    );
}

/// A task's result too big for its item (an answer of 400 KB) and a timeline entry
/// quoting it are stored, not refused: the result comes back whole from S3 and the
/// timeline keeps a preview.
#[tokio::test]
async fn a_result_over_the_item_limit_is_kept_whole() {
    let aws = common::backend(clock(), 5).await;
    let task = new_task(&aws.store, "big").await;
    let answer = "ä".repeat(200 * 1024);
    let update = TaskUpdate {
        status: Some(TaskStatus::Succeeded),
        result: Some(answer.clone()),
        ..TaskUpdate::default()
    };
    let event = Event {
        id: EnvelopeId::new(now()).origin_event(),
        task: task.id,
        at: now(),
        agent: "big".into(),
        kind: EventKind::Answer,
        detail: answer.clone(),
        envelope: None,
    };
    let done = aws
        .store
        .update_task(task.id, &update, std::slice::from_ref(&event))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded);
    assert_eq!(
        done.result.as_deref(),
        Some(answer.as_str()),
        "the whole answer"
    );
    let listed = aws
        .store
        .list_tasks(&aos_kernel::TaskQuery {
            limit: 10,
            ..aos_kernel::TaskQuery::status(TaskStatus::Succeeded)
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].result.as_deref(),
        Some(answer.as_str()),
        "listed whole too"
    );
    let timeline = aws.store.timeline(task.id).await.unwrap();
    let kept = timeline
        .iter()
        .find(|e| e.kind == EventKind::Answer)
        .unwrap();
    assert!(
        kept.detail.len() < answer.len() && kept.detail.contains("bytes omitted from the timeline"),
        "the timeline keeps a preview, saying so"
    );
}

/// A wake-up whose time has passed by the flush (after the model's turn, or on a
/// re-send after a crash) is sent to the queue at once: a schedule in the past would
/// never fire.
#[tokio::test]
async fn a_wake_up_already_due_goes_straight_to_the_queue() {
    use aos_kernel::ports::Scheduler;
    let aws = common::backend(clock(), 5).await;
    let task = new_task(&aws.store, "sleeper").await;
    let wake = Envelope {
        kind: Kind::Wake,
        ..envelope(&task, "sleeper", &fresh_session(), "wake up".into())
    };
    aws.scheduler.schedule(now() - 5_000, &wake).await.unwrap();
    let got = aws.queues.receive("sleeper", 10, 30_000).await.unwrap();
    assert_eq!(got.len(), 1, "delivered at once: {got:?}");
    assert_eq!(Envelope::parse(&got[0].body).unwrap(), wake);
    let future = Envelope {
        kind: Kind::Wake,
        ..envelope(&task, "sleeper", &fresh_session(), "later".into())
    };
    aws.scheduler
        .schedule(now() + 3_600_000, &future)
        .await
        .unwrap();
    assert_eq!(
        aws.scheduler.deliver_due(now()).await.unwrap(),
        0,
        "a future wake-up waits for its time"
    );
}
