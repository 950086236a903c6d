//! The port conformance suite: one set of checks that every adapter of a port passes.
//!
//! Each check is an `async fn` that takes the port(s) under test, plus the
//! [`TestTime`] the adapter runs on where time matters (the [`ManualClock`] it was built
//! with, or [`WallTime`] for a service that keeps its own clock, such as SQS), and
//! panics with a message naming the broken rule. An adapter's tests call every check, each on a fresh
//! adapter. Checks make their own agent names and ids, so most could share one
//! adapter; `list_tasks_filters_and_orders_newest_first` needs a store with no tasks
//! newer than its own.
//!
//! Rule: a check asserts only what the port's documentation promises (and what the
//! kernel relies on), never an adapter's internals, so the in-memory doubles, the
//! SQLite adapter and the AWS adapters can all pass it.

use crate::ids::{EnvelopeId, EventId, TaskId};
use crate::llm::Message;
use crate::model::{
    AgentName, Budget, Envelope, Event, EventKind, Kind, MemoryNote, Origin, OutboxItem, Session,
    SessionId, SessionKey, SessionStatus, Task, TaskStatus, TaskUpdate, Usage,
};
use crate::ports::Clock;
use crate::ports::{
    BlobStore, Commit, Inbox, Mailbox, PortError, Received, Scheduler, SessionStore, TaskQuery,
    TaskStore,
};
use crate::testkit::ManualClock;
use async_trait::async_trait;
use std::future::Future;
use std::time::Duration;
use ulid::Ulid;

/// Time as a check sees it: it reads the time and lets time pass.
#[async_trait]
pub trait TestTime: Send + Sync {
    fn now_ms(&self) -> u64;
    /// Lets at least `ms` pass for the adapter under test.
    async fn advance(&self, ms: u64);
}

#[async_trait]
impl TestTime for ManualClock {
    fn now_ms(&self) -> u64 {
        Clock::now_ms(self)
    }
    async fn advance(&self, ms: u64) {
        ManualClock::advance(self, ms);
    }
}

/// The wall clock, for adapters of services that keep their own time: `advance`
/// sleeps `ms` plus `slack_ms`, so a timeout of `ms` has surely expired on the service
/// too. Checks compare times only with margins of at least half the step they take.
#[derive(Clone, Copy, Debug)]
pub struct WallTime {
    pub slack_ms: u64,
}

#[async_trait]
impl TestTime for WallTime {
    fn now_ms(&self) -> u64 {
        crate::ports::SystemClock.now_ms()
    }
    async fn advance(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms + self.slack_ms)).await;
    }
}

/// Visibility timeout used by the queue checks.
const VISIBILITY_MS: u64 = 30_000;

// Schedules and dead-letter redrive.
mod operations;
pub use operations::*;

// ---------------------------------------------------------------------------------
// Helpers: small builders so each check reads as the rule it tests.

/// Unwraps a port result, naming the call that failed.
fn ok<T>(result: Result<T, PortError>, call: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{call}: unexpected port error: {e}"),
    }
}

/// A fresh, valid agent name, so checks never see each other's data.
fn agent(prefix: &str) -> AgentName {
    let name = format!("{prefix}-{}", Ulid::new().to_string().to_lowercase());
    AgentName::new(name).unwrap()
}

fn session_id(prefix: &str) -> SessionId {
    SessionId::new(format!("{prefix}-{}", Ulid::new())).unwrap()
}

fn key(agent: &AgentName, session: &SessionId) -> SessionKey {
    SessionKey {
        agent: agent.clone(),
        session: session.clone(),
    }
}

fn task(id: TaskId, agent: &AgentName, status: TaskStatus) -> Task {
    Task {
        id,
        tenant: crate::model::DEFAULT_TENANT.into(),
        status,
        agent: agent.clone(),
        input: "what is the weather".into(),
        result: None,
        error: None,
        usage: Usage::default(),
        budget: Budget::default(),
        trace_id: "trace-conformance".into(),
        created_at: id.timestamp_ms(),
        updated_at: id.timestamp_ms(),
        first_envelope: EnvelopeId::new(id.timestamp_ms()),
    }
}

fn event(task: TaskId, id: EventId, at: u64, detail: &str) -> Event {
    Event {
        id,
        task,
        at,
        agent: "conformance".into(),
        kind: EventKind::Woke,
        detail: detail.into(),
        envelope: None,
    }
}

/// An event id with a chosen timestamp and random part, to control the id order.
fn event_id(at: u64, n: u128) -> EventId {
    EventId(Ulid::from_parts(at, n))
}

fn session(key: &SessionKey, task: TaskId, version: u64, said: &str) -> Session {
    Session {
        agent: key.agent.clone(),
        id: key.session.clone(),
        task,
        version,
        status: SessionStatus::Active,
        origin: Origin {
            from: "user".into(),
            reply_to: None,
        },
        transcript: vec![Message::user(said)],
        open_calls: Vec::new(),
        deferred: Vec::new(),
        wakes: version,
        created_at: 1_000,
        updated_at: 1_000 + version,
        audit: Default::default(),
    }
}

/// A commit that only marks `envelope` applied; checks fill in what they test.
fn commit(
    key: &SessionKey,
    task: TaskId,
    envelope: EnvelopeId,
    expected_version: u64,
    session: Option<Session>,
) -> Commit {
    Commit {
        key: key.clone(),
        task,
        envelope,
        expected_version,
        session,
        outbox: Vec::new(),
        task_update: TaskUpdate::default(),
        events: Vec::new(),
        memory: Vec::new(),
        memory_scope: key.agent.to_string(),
    }
}

fn envelope(to: &AgentName, session: &SessionId, task: TaskId, body: &str) -> Envelope {
    Envelope {
        tenant: "default".into(),
        id: EnvelopeId(Ulid::new()),
        task,
        session: session.clone(),
        from: "user".into(),
        to: to.clone(),
        kind: Kind::Message,
        body: body.into(),
        body_ref: None,
        hop: 0,
        trace_id: "trace-conformance".into(),
        sent_at: 1_000,
        reply_to: None,
        in_reply_to: None,
        is_error: false,
    }
}

fn note(n: u32) -> MemoryNote {
    MemoryNote {
        id: format!("note-{n}"),
        at: 1_000 + u64::from(n),
        text: format!("remember {n}"),
    }
}

fn usage(wakes: u64, llm_calls: u64, tokens: u64, cost_micros: u64) -> Usage {
    Usage {
        wakes,
        llm_calls,
        input_tokens: tokens,
        output_tokens: tokens / 2,
        cost_micros,
        tool_calls: 1,
        cache_read_tokens: tokens / 4,
        cache_write_tokens: tokens / 8,
    }
}

/// Creates `t` with a first event and insists it was new.
async fn create(tasks: &dyn TaskStore, t: &Task) {
    let first = event(t.id, EventId::new(t.created_at), t.created_at, "submitted");
    assert!(
        ok(tasks.create_task(t, &first).await, "create_task"),
        "create_task of a new task id must return true"
    );
}

fn bodies(received: &[Received]) -> Vec<String> {
    received.iter().map(|r| r.body.clone()).collect()
}

fn json(envelopes: &[&Envelope]) -> Vec<String> {
    envelopes.iter().map(|e| e.to_json()).collect()
}

// ---------------------------------------------------------------------------------
// SessionStore and TaskStore

/// What a commit writes, a load reads back: the session, the applied marker with its
/// outbox, the task update and the agent's memory.
pub async fn commit_then_load_round_trips(sessions: &dyn SessionStore, tasks: &dyn TaskStore) {
    let a = agent("roundtrip");
    let k = key(&a, &session_id("s"));
    let t = task(TaskId::new(1_700_000_000_000), &a, TaskStatus::Queued);
    create(tasks, &t).await;
    let e = EnvelopeId::new(1_700_000_000_001);

    let before = ok(
        sessions.load(&k, t.id, e, k.agent.as_str(), 10).await,
        "load before commit",
    );
    assert_eq!(
        before.session, None,
        "a session that was never committed loads as None"
    );
    assert_eq!(
        before.applied, None,
        "an envelope never applied has no applied marker"
    );
    assert_eq!(
        before.task.as_ref(),
        Some(&t),
        "load returns the task as created"
    );
    assert!(
        before.memory.is_empty(),
        "an agent with no notes has empty memory"
    );

    let child = envelope(&a, &session_id("child"), t.id, "hello");
    let outbox = vec![
        OutboxItem {
            envelope: child.clone(),
            deliver_at: None,
        },
        OutboxItem {
            envelope: envelope(&a, &session_id("later"), t.id, "wake me"),
            deliver_at: Some(1_700_000_060_000),
        },
    ];
    let s1 = session(&k, t.id, 1, "first wake");
    let c = Commit {
        outbox: outbox.clone(),
        task_update: TaskUpdate {
            usage: usage(1, 2, 100, 7),
            status: Some(TaskStatus::Running),
            ..TaskUpdate::default()
        },
        events: vec![event(t.id, e.event(0), 1_700_000_000_002, "woke")],
        memory: vec![note(1)],
        ..commit(&k, t.id, e, 0, Some(s1.clone()))
    };
    ok(sessions.commit(&c).await, "commit");

    let other = EnvelopeId::new(1_700_000_000_003);
    let after = ok(
        sessions.load(&k, t.id, other, k.agent.as_str(), 10).await,
        "load after commit",
    );
    assert_eq!(
        after.session,
        Some(s1),
        "load must return the committed session"
    );
    assert_eq!(
        after.applied, None,
        "the applied marker belongs to the committed envelope only"
    );
    let stored = after.task.expect("the task exists");
    assert_eq!(
        stored.status,
        TaskStatus::Running,
        "commit applies the task status"
    );
    assert_eq!(
        stored.usage,
        usage(1, 2, 100, 7),
        "commit adds the wake's usage"
    );
    assert_eq!(after.memory, vec![note(1)], "commit appends memory notes");

    let replay = ok(
        sessions.load(&k, t.id, e, k.agent.as_str(), 10).await,
        "load of the applied envelope",
    );
    assert_eq!(
        replay.applied,
        Some(outbox),
        "load of an applied envelope returns that wake's outbox, for a re-send"
    );

    let elsewhere = key(&a, &session_id("other"));
    let empty = ok(
        sessions
            .load(&elsewhere, t.id, e, elsewhere.agent.as_str(), 10)
            .await,
        "load of another session",
    );
    assert_eq!(
        empty.session, None,
        "sessions are keyed by (agent, session)"
    );
    assert_eq!(
        empty.applied, None,
        "applied markers are keyed by (agent, session, envelope)"
    );
    assert_eq!(
        empty.memory,
        vec![note(1)],
        "memory belongs to the agent, shared by all its sessions"
    );
}

/// A commit conditioned on a stale version fails with `Conflict` and writes nothing;
/// a commit without a session is not conditioned.
pub async fn stale_version_conflicts_and_writes_nothing(
    sessions: &dyn SessionStore,
    tasks: &dyn TaskStore,
) {
    let a = agent("version");
    let k = key(&a, &session_id("s"));
    let t = task(TaskId::new(1_700_000_000_000), &a, TaskStatus::Running);
    create(tasks, &t).await;

    let e1 = EnvelopeId::new(1_700_000_000_001);
    ok(
        sessions
            .commit(&commit(&k, t.id, e1, 0, Some(session(&k, t.id, 1, "v1"))))
            .await,
        "first commit with expected_version 0",
    );

    let e2 = EnvelopeId::new(1_700_000_000_002);
    let loser = Commit {
        outbox: vec![OutboxItem {
            envelope: envelope(&a, &k.session, t.id, "lost"),
            deliver_at: None,
        }],
        task_update: TaskUpdate {
            usage: usage(1, 1, 10, 1),
            status: Some(TaskStatus::Failed),
            error: Some("should not be written".into()),
            ..TaskUpdate::default()
        },
        events: vec![event(t.id, e2.event(0), 1_700_000_000_002, "lost")],
        memory: vec![note(99)],
        ..commit(&k, t.id, e2, 0, Some(session(&k, t.id, 1, "v1 again")))
    };
    assert_eq!(
        sessions.commit(&loser).await,
        Err(PortError::Conflict),
        "expected_version 0 must conflict when the session exists"
    );
    let too_new = Commit {
        expected_version: 2,
        session: Some(session(&k, t.id, 3, "v3")),
        ..loser.clone()
    };
    assert_eq!(
        sessions.commit(&too_new).await,
        Err(PortError::Conflict),
        "an expected_version above the stored one must conflict"
    );

    let seen = ok(
        sessions.load(&k, t.id, e2, k.agent.as_str(), 10).await,
        "load after conflicts",
    );
    assert_eq!(
        seen.session,
        Some(session(&k, t.id, 1, "v1")),
        "a conflicting commit must not change the session"
    );
    assert_eq!(
        seen.applied, None,
        "a conflicting commit must not mark its envelope applied"
    );
    let stored = seen.task.expect("the task exists");
    assert_eq!(
        (stored.status, stored.usage, stored.error),
        (TaskStatus::Running, Usage::default(), None),
        "a conflicting commit must not touch the task"
    );
    assert!(
        seen.memory.is_empty(),
        "a conflicting commit must not append memory"
    );
    let events = ok(tasks.task_events(t.id).await, "task_events");
    assert_eq!(
        events.len(),
        1,
        "a conflicting commit must not append events: {events:?}"
    );

    let winner = Commit {
        expected_version: 1,
        session: Some(session(&k, t.id, 2, "v2")),
        ..loser.clone()
    };
    ok(
        sessions.commit(&winner).await,
        "commit with the current version",
    );
    let seen = ok(
        sessions.load(&k, t.id, e2, k.agent.as_str(), 10).await,
        "load after retry",
    );
    assert_eq!(
        seen.session.map(|s| s.version),
        Some(2),
        "the retried commit with the right version is written"
    );
    assert!(
        seen.applied.is_some(),
        "the retried commit marks its envelope applied"
    );

    let e3 = EnvelopeId::new(1_700_000_000_003);
    ok(
        sessions.commit(&commit(&k, t.id, e3, 7, None)).await,
        "a commit without a session is not conditioned on the version",
    );
    let seen = ok(
        sessions.load(&k, t.id, e3, k.agent.as_str(), 10).await,
        "load after sessionless commit",
    );
    assert_eq!(
        seen.session.map(|s| s.version),
        Some(2),
        "a commit without a session leaves the session as it was"
    );
    assert_eq!(
        seen.applied,
        Some(Vec::new()),
        "a commit without a session still marks its envelope applied"
    );
}

/// An envelope is applied to a session at most once: a second commit of it conflicts,
/// whatever its version, and load keeps returning the first commit's outbox.
pub async fn applied_envelope_conflicts_and_keeps_its_outbox(
    sessions: &dyn SessionStore,
    tasks: &dyn TaskStore,
) {
    let a = agent("applied");
    let k = key(&a, &session_id("s"));
    let t = task(TaskId::new(1_700_000_000_000), &a, TaskStatus::Running);
    create(tasks, &t).await;
    let e = EnvelopeId::new(1_700_000_000_001);
    let outbox = vec![OutboxItem {
        envelope: envelope(&a, &session_id("peer"), t.id, "ask"),
        deliver_at: None,
    }];
    let first = Commit {
        outbox: outbox.clone(),
        task_update: TaskUpdate {
            usage: usage(1, 1, 10, 1),
            ..TaskUpdate::default()
        },
        ..commit(&k, t.id, e, 0, Some(session(&k, t.id, 1, "v1")))
    };
    ok(
        sessions.commit(&first).await,
        "first commit of the envelope",
    );

    let again = Commit {
        outbox: Vec::new(),
        expected_version: 1,
        session: Some(session(&k, t.id, 2, "v2")),
        ..first.clone()
    };
    assert_eq!(
        sessions.commit(&again).await,
        Err(PortError::Conflict),
        "a second commit of an applied envelope must conflict even with the right version"
    );
    let sessionless = commit(&k, t.id, e, 0, None);
    assert_eq!(
        sessions.commit(&sessionless).await,
        Err(PortError::Conflict),
        "a second commit of an applied envelope must conflict even without a session"
    );

    let seen = ok(
        sessions.load(&k, t.id, e, k.agent.as_str(), 10).await,
        "load of the applied envelope",
    );
    assert_eq!(
        seen.applied,
        Some(outbox),
        "load returns the first commit's outbox"
    );
    assert_eq!(
        seen.session.map(|s| s.version),
        Some(1),
        "the duplicate commit must not change the session"
    );
    assert_eq!(
        seen.task.map(|t| t.usage.wakes),
        Some(1),
        "the duplicate commit must not add usage twice"
    );

    let other = key(&a, &session_id("s2"));
    ok(
        sessions.commit(&commit(&other, t.id, e, 0, None)).await,
        "the same envelope id applied to another session is a different marker",
    );
}

/// Task usage counters add up across commits and updates; the first final status wins
/// and keeps its result or error.
pub async fn task_counters_add_and_first_final_status_wins(
    sessions: &dyn SessionStore,
    tasks: &dyn TaskStore,
) {
    let a = agent("counters");
    let k = key(&a, &session_id("s"));
    let t = task(TaskId::new(1_700_000_000_000), &a, TaskStatus::Queued);
    create(tasks, &t).await;

    let e1 = EnvelopeId::new(1_700_000_000_001);
    let c1 = Commit {
        task_update: TaskUpdate {
            usage: usage(1, 2, 100, 7),
            status: Some(TaskStatus::Running),
            ..TaskUpdate::default()
        },
        events: vec![event(t.id, e1.event(0), 1_700_000_000_001, "woke")],
        ..commit(&k, t.id, e1, 0, Some(session(&k, t.id, 1, "v1")))
    };
    ok(sessions.commit(&c1).await, "commit 1");
    let e2 = EnvelopeId::new(1_700_000_000_002);
    let c2 = Commit {
        task_update: TaskUpdate {
            usage: usage(1, 1, 10, 3),
            status: Some(TaskStatus::Failed),
            error: Some("budget exhausted".into()),
            ..TaskUpdate::default()
        },
        events: vec![event(t.id, e2.event(0), 1_700_000_000_002, "failed")],
        ..commit(&k, t.id, e2, 0, None)
    };
    ok(sessions.commit(&c2).await, "commit 2");

    let late = TaskUpdate {
        usage: usage(1, 1, 20, 5),
        status: Some(TaskStatus::Succeeded),
        result: Some("too late".into()),
        ..TaskUpdate::default()
    };
    let late_event = event(
        t.id,
        EventId::new(1_700_000_000_003),
        1_700_000_000_003,
        "late",
    );
    let updated = ok(
        tasks.update_task(t.id, &late, &[late_event]).await,
        "update_task",
    )
    .expect("update_task of an existing task returns it");

    let mut want = Usage::default();
    for u in [usage(1, 2, 100, 7), usage(1, 1, 10, 3), usage(1, 1, 20, 5)] {
        want.add(&u);
    }
    assert_eq!(
        updated.usage, want,
        "usage counters add across commits and updates"
    );
    assert_eq!(
        updated.status,
        TaskStatus::Failed,
        "the first final status wins over a later one"
    );
    assert_eq!(
        updated.error.as_deref(),
        Some("budget exhausted"),
        "the winning final status keeps its error"
    );
    assert_eq!(
        updated.result, None,
        "a losing final status must not set a result"
    );
    let stored = ok(tasks.get_task(t.id).await, "get_task");
    assert_eq!(
        stored.as_ref(),
        Some(&updated),
        "update_task returns what get_task then reads"
    );

    let missing = TaskId::new(1_700_000_000_000);
    let ghost_event = event(
        missing,
        EventId::new(1_700_000_000_004),
        1_700_000_000_004,
        "x",
    );
    assert_eq!(
        ok(
            tasks.update_task(missing, &late, &[ghost_event]).await,
            "update_task of a missing task"
        ),
        None,
        "update_task of a task that does not exist returns None"
    );
    assert_eq!(ok(tasks.get_task(missing).await, "get_task"), None);
    assert!(
        ok(tasks.task_events(missing).await, "task_events").is_empty(),
        "update_task of a missing task must not write its events"
    );
}

/// A timeline is sorted by (time, id) whatever the write order, and writing an event id
/// twice (a re-run wake, a repeated update) keeps one copy.
pub async fn events_are_sorted_and_idempotent(sessions: &dyn SessionStore, tasks: &dyn TaskStore) {
    let a = agent("events");
    let k = key(&a, &session_id("s"));
    let t = task(TaskId::new(100), &a, TaskStatus::Running);
    let first = event(t.id, event_id(100, 1), 100, "submitted");
    assert!(ok(tasks.create_task(&t, &first).await, "create_task"));

    let late = event(t.id, event_id(300, 1), 300, "late");
    let tie_high = event(t.id, event_id(200, 9), 200, "tie, higher id");
    let tie_low = event(t.id, event_id(200, 2), 200, "tie, lower id");
    let c1 = Commit {
        events: vec![late.clone(), tie_high.clone(), tie_low.clone()],
        ..commit(&k, t.id, EnvelopeId::new(1), 0, None)
    };
    ok(sessions.commit(&c1).await, "commit 1");

    let early = event(t.id, event_id(150, 1), 150, "written last, happened early");
    // Derived event ids keep the timestamp of the envelope that caused the wake, so an
    // id's own time can disagree with `at`: the order is by `at` first.
    let old_id = event(t.id, event_id(50, 7), 250, "old id, recent time");
    let repeated = ok(
        tasks
            .update_task(
                t.id,
                &TaskUpdate::default(),
                &[late.clone(), early.clone(), old_id.clone()],
            )
            .await,
        "update_task",
    );
    assert!(
        repeated.is_some(),
        "update_task of an existing task returns it"
    );
    let c2 = Commit {
        events: vec![tie_high.clone()],
        ..commit(&k, t.id, EnvelopeId::new(2), 0, None)
    };
    ok(sessions.commit(&c2).await, "commit 2");

    let got = ok(tasks.task_events(t.id).await, "task_events");
    assert_eq!(
        got,
        vec![first, early, tie_low, tie_high, old_id, late],
        "events come oldest first, ties by id, each id once"
    );
}

/// Load returns at most `memory_limit` of the agent's newest notes, oldest first.
pub async fn memory_loads_newest_notes_oldest_first(sessions: &dyn SessionStore) {
    let a = agent("memory");
    let k = key(&a, &session_id("s"));
    let t = TaskId::new(1_700_000_000_000);
    let c1 = Commit {
        memory: vec![note(1), note(2), note(3)],
        ..commit(&k, t, EnvelopeId::new(1), 0, None)
    };
    ok(sessions.commit(&c1).await, "commit 1");
    let other_session = key(&a, &session_id("s2"));
    let c2 = Commit {
        memory: vec![note(4), note(5)],
        ..commit(&other_session, t, EnvelopeId::new(2), 0, None)
    };
    ok(sessions.commit(&c2).await, "commit 2");

    let probe = EnvelopeId::new(3);
    let three = ok(
        sessions.load(&k, t, probe, k.agent.as_str(), 3).await,
        "load",
    )
    .memory;
    assert_eq!(
        three,
        vec![note(3), note(4), note(5)],
        "memory_limit keeps the newest notes, returned oldest first"
    );
    let all = ok(
        sessions.load(&k, t, probe, k.agent.as_str(), 100).await,
        "load",
    )
    .memory;
    assert_eq!(
        all,
        (1..=5).map(note).collect::<Vec<_>>(),
        "all notes, in order"
    );
    let none = ok(
        sessions.load(&k, t, probe, k.agent.as_str(), 0).await,
        "load",
    )
    .memory;
    assert!(none.is_empty(), "memory_limit 0 loads no notes");

    let stranger = key(&agent("stranger"), &k.session);
    let theirs = ok(
        sessions
            .load(&stranger, t, probe, stranger.agent.as_str(), 10)
            .await,
        "load",
    )
    .memory;
    assert!(theirs.is_empty(), "memory belongs to one agent");
    let tenant = crate::model::memory_scope("acme", k.agent.as_str());
    let acme = ok(sessions.load(&k, t, probe, &tenant, 10).await, "load").memory;
    assert!(acme.is_empty(), "memory belongs to one tenant");
    let c3 = Commit {
        memory: vec![note(6)],
        memory_scope: tenant.clone(),
        ..commit(&k, t, EnvelopeId::new(4), 0, None)
    };
    ok(sessions.commit(&c3).await, "commit 3");
    let acme = ok(sessions.load(&k, t, probe, &tenant, 10).await, "load").memory;
    assert_eq!(acme, vec![note(6)], "a tenant reads its own notes only");
    let default = ok(
        sessions.load(&k, t, probe, k.agent.as_str(), 100).await,
        "load",
    )
    .memory;
    assert_eq!(
        default.len(),
        5,
        "another tenant's note stays out of this one's memory"
    );
}

/// Creating a task twice keeps the first and reports the second as a re-submit.
pub async fn create_task_is_idempotent(tasks: &dyn TaskStore) {
    let a = agent("create");
    let t = task(TaskId::new(1_700_000_000_000), &a, TaskStatus::Queued);
    let first = event(
        t.id,
        event_id(1_700_000_000_000, 1),
        1_700_000_000_000,
        "submitted",
    );
    assert!(
        ok(tasks.create_task(&t, &first).await, "create_task"),
        "the first create_task returns true"
    );
    let again = Task {
        input: "a different input".into(),
        ..t.clone()
    };
    let second = event(
        t.id,
        event_id(1_700_000_000_001, 1),
        1_700_000_000_001,
        "again",
    );
    assert!(
        !ok(
            tasks.create_task(&again, &second).await,
            "create_task again"
        ),
        "create_task of an existing id returns false"
    );
    assert_eq!(
        ok(tasks.get_task(t.id).await, "get_task"),
        Some(t.clone()),
        "a re-submit must not overwrite the task"
    );
    assert_eq!(
        ok(tasks.task_events(t.id).await, "task_events"),
        vec![first],
        "a re-submit must not add its event"
    );
}

fn query(status: Option<TaskStatus>, limit: usize) -> TaskQuery {
    TaskQuery {
        tenant: None,
        status,
        before: None,
        limit,
    }
}

/// `list_tasks` returns newest first (by task id), honours the limit and filters by
/// the task's current status. Needs a store with no tasks newer than its own.
pub async fn list_tasks_filters_and_orders_newest_first(tasks: &dyn TaskStore) {
    let a = agent("list");
    // Far-future ids, so these are the newest tasks in the store.
    let base = 4_000_000_000_000;
    let t1 = task(TaskId::new(base + 1), &a, TaskStatus::Queued);
    let t2 = task(TaskId::new(base + 2), &a, TaskStatus::Running);
    let t3 = task(TaskId::new(base + 3), &a, TaskStatus::Queued);
    for t in [&t1, &t2, &t3] {
        create(tasks, t).await;
    }
    let ids = |v: Vec<Task>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();

    assert_eq!(
        ids(ok(tasks.list_tasks(&query(None, 3)).await, "list_tasks")),
        vec![t3.id, t2.id, t1.id],
        "list_tasks returns newest first"
    );
    assert_eq!(
        ids(ok(tasks.list_tasks(&query(None, 2)).await, "list_tasks")),
        vec![t3.id, t2.id],
        "list_tasks honours the limit"
    );
    assert_eq!(
        ids(ok(
            tasks.list_tasks(&query(Some(TaskStatus::Queued), 2)).await,
            "list_tasks"
        )),
        vec![t3.id, t1.id],
        "list_tasks filters by status"
    );

    let run = TaskUpdate {
        status: Some(TaskStatus::Running),
        ..TaskUpdate::default()
    };
    ok(tasks.update_task(t1.id, &run, &[]).await, "update_task");
    assert_eq!(
        ids(ok(
            tasks.list_tasks(&query(Some(TaskStatus::Running), 2)).await,
            "list_tasks"
        )),
        vec![t2.id, t1.id],
        "the status filter sees status changes"
    );
    assert_eq!(
        ids(ok(
            tasks.list_tasks(&query(Some(TaskStatus::Queued), 1)).await,
            "list_tasks"
        )),
        vec![t3.id],
        "a task that changed status leaves its old status"
    );

    let before = TaskQuery {
        before: Some(t3.id),
        ..query(None, 10)
    };
    let page = ids(ok(tasks.list_tasks(&before).await, "list_tasks"));
    assert_eq!(
        page.get(..2),
        Some(&[t2.id, t1.id][..]),
        "`before` pages on from the cursor, newest first"
    );
    let acme = Task {
        tenant: "acme".into(),
        ..task(TaskId::new(base + 4), &a, TaskStatus::Queued)
    };
    create(tasks, &acme).await;
    let only_acme = TaskQuery {
        tenant: Some("acme".into()),
        ..query(None, 10)
    };
    assert_eq!(
        ids(ok(tasks.list_tasks(&only_acme).await, "list_tasks")),
        vec![acme.id],
        "the tenant filter shows one tenant's tasks only"
    );
    let default_queued = TaskQuery {
        tenant: Some(crate::model::DEFAULT_TENANT.into()),
        ..query(Some(TaskStatus::Queued), 10)
    };
    assert_eq!(
        ids(ok(tasks.list_tasks(&default_queued).await, "list_tasks"))
            .first()
            .copied(),
        Some(t3.id),
        "tenant and status filters combine"
    );
}

/// An idempotency key binds once: later claims get the first task and fingerprint.
pub async fn idempotency_keys_bind_once(tasks: &dyn TaskStore) {
    let key = format!("acme/{}", TaskId::new(1_700_000_000_000));
    let first = TaskId::new(1_700_000_000_001);
    let second = TaskId::new(1_700_000_000_002);
    assert_eq!(
        ok(
            tasks.claim_idempotency_key(&key, first, "fp1").await,
            "claim"
        ),
        (first, "fp1".to_string()),
        "the first claim binds the key"
    );
    assert_eq!(
        ok(
            tasks.claim_idempotency_key(&key, second, "fp2").await,
            "claim again"
        ),
        (first, "fp1".to_string()),
        "a later claim gets the first binding back"
    );
    let other = format!("other/{}", &key["acme/".len()..]);
    assert_eq!(
        ok(
            tasks.claim_idempotency_key(&other, second, "fp2").await,
            "claim"
        ),
        (second, "fp2".to_string()),
        "the same key of another tenant is another key"
    );
}

// ---------------------------------------------------------------------------------
// Mailbox and Inbox

/// `send` drops an envelope id it has already accepted, within one call or across
/// calls, and delivers the envelope's JSON with its id and session.
pub async fn send_is_deduplicated_by_envelope_id(mailbox: &dyn Mailbox, inbox: &dyn Inbox) {
    let a = agent("dedupe");
    let s = session_id("s");
    let e = envelope(&a, &s, TaskId::new(1), "once");
    ok(
        mailbox.send(&[e.clone(), e.clone()]).await,
        "send twice in one call",
    );
    ok(mailbox.send(std::slice::from_ref(&e)).await, "send again");
    assert_eq!(
        ok(inbox.depth(a.as_str()).await, "depth"),
        1,
        "a re-sent envelope id is queued once"
    );
    let got = ok(
        inbox.receive(a.as_str(), 10, VISIBILITY_MS).await,
        "receive",
    );
    assert_eq!(got.len(), 1, "one message for one envelope id: {got:?}");
    let m = &got[0];
    assert_eq!(m.body, e.to_json(), "the body is the envelope's JSON");
    assert_eq!(
        Envelope::parse(&m.body).as_ref(),
        Ok(&e),
        "the body parses back to the envelope"
    );
    assert!(!m.message_id.is_empty(), "the message has an id");
    assert_eq!(m.group, s.to_string(), "the message group is the session");
    assert_eq!(m.receive_count, 1, "the first receive counts 1");
}

/// An envelope re-sent after its message was processed and deleted (a wake that
/// crashed after its flush and ran again) is still dropped within the window.
pub async fn resend_after_delete_is_deduplicated(mailbox: &dyn Mailbox, inbox: &dyn Inbox) {
    let a = agent("dedupe-after");
    let e = envelope(&a, &session_id("s"), TaskId::new(1), "once");
    ok(mailbox.send(std::slice::from_ref(&e)).await, "send");
    let got = ok(
        inbox.receive(a.as_str(), 10, VISIBILITY_MS).await,
        "receive",
    );
    assert_eq!(got.len(), 1, "one message: {got:?}");
    ok(inbox.delete(a.as_str(), &got[0].receipt).await, "delete");
    ok(
        mailbox.send(std::slice::from_ref(&e)).await,
        "send after delete",
    );
    assert_eq!(
        ok(inbox.depth(a.as_str()).await, "depth"),
        0,
        "a re-send after processing is still a duplicate"
    );
}

/// Messages of one group come in send order, as a prefix of the group; different
/// groups interleave in send order.
pub async fn fifo_order_within_a_group(mailbox: &dyn Mailbox, inbox: &dyn Inbox) {
    let a = agent("fifo");
    let (ga, gb) = (session_id("a"), session_id("b"));
    let t = TaskId::new(1);
    let a1 = envelope(&a, &ga, t, "a1");
    let b1 = envelope(&a, &gb, t, "b1");
    let a2 = envelope(&a, &ga, t, "a2");
    let a3 = envelope(&a, &ga, t, "a3");
    ok(mailbox.send(&[a1.clone(), b1.clone()]).await, "send");
    ok(mailbox.send(std::slice::from_ref(&a2)).await, "send");
    ok(mailbox.send(std::slice::from_ref(&a3)).await, "send");

    let got = ok(
        inbox.receive(a.as_str(), 10, VISIBILITY_MS).await,
        "receive",
    );
    assert_eq!(
        bodies(&got),
        json(&[&a1, &b1, &a2, &a3]),
        "messages come in send order"
    );
    for m in &got {
        ok(inbox.delete(a.as_str(), &m.receipt).await, "delete");
    }
    assert_eq!(ok(inbox.depth(a.as_str()).await, "depth"), 0, "all deleted");

    let c1 = envelope(&a, &ga, t, "c1");
    let c2 = envelope(&a, &ga, t, "c2");
    ok(mailbox.send(&[c1.clone(), c2.clone()]).await, "send");
    let got = ok(
        inbox.receive(a.as_str(), 1, VISIBILITY_MS).await,
        "receive max 1",
    );
    assert_eq!(
        bodies(&got),
        json(&[&c1]),
        "max 1 returns the group's first message"
    );
}

/// While a group has a message in flight, none of its messages are received, so one
/// session's messages apply one after another.
pub async fn group_is_locked_while_in_flight(mailbox: &dyn Mailbox, inbox: &dyn Inbox) {
    let a = agent("locked");
    let g = session_id("g");
    let t = TaskId::new(1);
    let m1 = envelope(&a, &g, t, "m1");
    let m2 = envelope(&a, &g, t, "m2");
    ok(mailbox.send(&[m1.clone(), m2.clone()]).await, "send");

    let got = ok(inbox.receive(a.as_str(), 1, VISIBILITY_MS).await, "receive");
    assert_eq!(bodies(&got), json(&[&m1]), "the first message comes first");
    let later = ok(
        inbox.receive(a.as_str(), 10, VISIBILITY_MS).await,
        "receive",
    );
    assert!(
        later.is_empty(),
        "a group with a message in flight is locked, got {later:?}"
    );
    let m3 = envelope(&a, &g, t, "m3");
    ok(mailbox.send(std::slice::from_ref(&m3)).await, "send");
    let later = ok(
        inbox.receive(a.as_str(), 10, VISIBILITY_MS).await,
        "receive",
    );
    assert!(
        later.is_empty(),
        "new messages of a locked group wait too, got {later:?}"
    );

    ok(inbox.delete(a.as_str(), &got[0].receipt).await, "delete");
    let next = ok(
        inbox.receive(a.as_str(), 10, VISIBILITY_MS).await,
        "receive",
    );
    assert_eq!(
        bodies(&next),
        json(&[&m2, &m3]),
        "deleting the in-flight message unlocks the group, in order"
    );
}

/// A locked group does not hold back other groups of the same queue.
pub async fn other_groups_are_not_blocked(mailbox: &dyn Mailbox, inbox: &dyn Inbox) {
    let a = agent("groups");
    let (ga, gb, gc) = (session_id("a"), session_id("b"), session_id("c"));
    let t = TaskId::new(1);
    let a1 = envelope(&a, &ga, t, "a1");
    let a2 = envelope(&a, &ga, t, "a2");
    let b1 = envelope(&a, &gb, t, "b1");
    ok(
        mailbox.send(&[a1.clone(), a2.clone(), b1.clone()]).await,
        "send",
    );

    let first = ok(inbox.receive(a.as_str(), 1, VISIBILITY_MS).await, "receive");
    assert_eq!(bodies(&first), json(&[&a1]));
    let c1 = envelope(&a, &gc, t, "c1");
    ok(mailbox.send(std::slice::from_ref(&c1)).await, "send");
    let rest = ok(
        inbox.receive(a.as_str(), 10, VISIBILITY_MS).await,
        "receive",
    );
    assert_eq!(
        bodies(&rest),
        json(&[&b1, &c1]),
        "other groups are received while one group is locked"
    );
    let other_agent = agent("groups-other");
    assert!(
        ok(
            inbox.receive(other_agent.as_str(), 10, VISIBILITY_MS).await,
            "receive"
        )
        .is_empty(),
        "queues are per agent"
    );
}

/// A message not deleted within its visibility timeout comes back with a new receipt
/// and its receive count raised.
pub async fn visibility_timeout_brings_message_back(
    mailbox: &dyn Mailbox,
    inbox: &dyn Inbox,
    clock: &dyn TestTime,
) {
    let a = agent("visibility");
    let m = envelope(&a, &session_id("g"), TaskId::new(1), "m");
    ok(mailbox.send(std::slice::from_ref(&m)).await, "send");
    let first = ok(inbox.receive(a.as_str(), 10, 2_000).await, "receive");
    assert_eq!(bodies(&first), json(&[&m]));

    clock.advance(1_000).await;
    assert!(
        ok(inbox.receive(a.as_str(), 10, 2_000).await, "receive").is_empty(),
        "the message stays hidden until its visibility timeout"
    );
    clock.advance(1_000).await;
    let again = ok(inbox.receive(a.as_str(), 10, 2_000).await, "receive");
    assert_eq!(
        bodies(&again),
        json(&[&m]),
        "the message comes back when its visibility timeout expires"
    );
    assert_eq!(again[0].receive_count, 2, "the second receive counts 2");
    assert_eq!(
        again[0].message_id, first[0].message_id,
        "it is the same message"
    );
    assert_ne!(
        again[0].receipt, first[0].receipt,
        "every receive has a fresh receipt"
    );
    assert_eq!(
        again[0].sent_at, first[0].sent_at,
        "sent_at does not change"
    );
}

/// `release` makes an in-flight message visible again after a delay; until then it
/// still holds back the rest of its group.
pub async fn release_delays_and_keeps_order(
    mailbox: &dyn Mailbox,
    inbox: &dyn Inbox,
    clock: &dyn TestTime,
) {
    let a = agent("release");
    let g = session_id("g");
    let m1 = envelope(&a, &g, TaskId::new(1), "m1");
    let m2 = envelope(&a, &g, TaskId::new(1), "m2");
    ok(mailbox.send(&[m1.clone(), m2.clone()]).await, "send");
    let got = ok(inbox.receive(a.as_str(), 1, VISIBILITY_MS).await, "receive");
    assert_eq!(bodies(&got), json(&[&m1]));

    ok(
        inbox.release(a.as_str(), &got[0].receipt, 1_000).await,
        "release",
    );
    assert!(
        ok(
            inbox.receive(a.as_str(), 10, VISIBILITY_MS).await,
            "receive"
        )
        .is_empty(),
        "a released message waits for its delay and holds back its group"
    );
    clock.advance(1_000).await;
    let again = ok(
        inbox.receive(a.as_str(), 10, VISIBILITY_MS).await,
        "receive",
    );
    assert_eq!(
        bodies(&again),
        json(&[&m1, &m2]),
        "after the delay the group comes back in order"
    );
    assert_eq!(
        (again[0].receive_count, again[1].receive_count),
        (2, 1),
        "receive counts survive a release"
    );
}

/// `release` with a receipt from an earlier receive does nothing: the message stays in
/// flight under its latest receipt.
pub async fn release_with_stale_receipt_does_nothing(
    mailbox: &dyn Mailbox,
    inbox: &dyn Inbox,
    clock: &dyn TestTime,
) {
    let a = agent("stale-release");
    let m = envelope(&a, &session_id("g"), TaskId::new(1), "m");
    ok(mailbox.send(std::slice::from_ref(&m)).await, "send");
    let first = ok(inbox.receive(a.as_str(), 10, 1_000).await, "receive");
    clock.advance(1_000).await;
    let second = ok(
        inbox.receive(a.as_str(), 10, VISIBILITY_MS).await,
        "receive",
    );
    assert_eq!(second.len(), 1, "the message came back after its timeout");
    ok(
        inbox.release(a.as_str(), &first[0].receipt, 0).await,
        "release with a stale receipt",
    );
    let after = ok(
        inbox.receive(a.as_str(), 10, VISIBILITY_MS).await,
        "receive",
    );
    assert!(
        after.is_empty(),
        "a stale receipt must not release the in-flight message, got {after:?}"
    );
}

/// `delete` with a receipt from an earlier receive does nothing; only the latest
/// receipt deletes.
pub async fn delete_with_stale_receipt_does_nothing(
    mailbox: &dyn Mailbox,
    inbox: &dyn Inbox,
    clock: &dyn TestTime,
) {
    let a = agent("stale");
    let m = envelope(&a, &session_id("g"), TaskId::new(1), "m");
    ok(mailbox.send(std::slice::from_ref(&m)).await, "send");
    let first = ok(inbox.receive(a.as_str(), 10, 1_000).await, "receive");
    clock.advance(1_000).await;
    let second = ok(inbox.receive(a.as_str(), 10, 1_000).await, "receive");
    assert_eq!(second.len(), 1, "the message came back after its timeout");

    ok(
        inbox.delete(a.as_str(), &first[0].receipt).await,
        "delete with a stale receipt",
    );
    assert_eq!(
        ok(inbox.depth(a.as_str()).await, "depth"),
        1,
        "a stale receipt must not delete the message"
    );
    ok(
        inbox.delete(a.as_str(), "no-such-receipt").await,
        "delete with an unknown receipt",
    );
    assert!(
        ok(inbox.receive(a.as_str(), 10, 1_000).await, "receive").is_empty(),
        "the message is still in flight under its latest receipt"
    );
    ok(
        inbox.delete(a.as_str(), &second[0].receipt).await,
        "delete with the latest receipt",
    );
    assert_eq!(
        ok(inbox.depth(a.as_str()).await, "depth"),
        0,
        "the latest receipt deletes the message"
    );
}

/// After `max_receives` receives without a delete, the next receive moves the message
/// to the dead-letter queue with a reason a person can read, and the rest of its group
/// carries on.
pub async fn redrive_to_dead_letters_after_max_receives(
    mailbox: &dyn Mailbox,
    inbox: &dyn Inbox,
    clock: &dyn TestTime,
    max_receives: u32,
) {
    assert!(
        max_receives > 0,
        "the queue under test needs max_receives > 0"
    );
    let a = agent("redrive");
    let g = session_id("g");
    let poison = envelope(&a, &g, TaskId::new(1), "poison");
    let next = envelope(&a, &g, TaskId::new(1), "next");
    ok(mailbox.send(&[poison.clone(), next.clone()]).await, "send");

    for n in 1..=max_receives {
        let got = ok(inbox.receive(a.as_str(), 1, 1_000).await, "receive");
        assert_eq!(
            bodies(&got),
            json(&[&poison]),
            "receive {n} returns the message"
        );
        assert_eq!(got[0].receive_count, n, "receive {n} counts {n}");
        clock.advance(1_000).await;
    }
    let mut later = ok(inbox.receive(a.as_str(), 10, 1_000).await, "receive");
    assert!(
        !bodies(&later).contains(&poison.to_json()),
        "a message received max_receives times must not be returned again"
    );
    if later.is_empty() {
        later = ok(inbox.receive(a.as_str(), 10, 1_000).await, "receive");
    }
    assert_eq!(
        bodies(&later),
        json(&[&next]),
        "the group's next message is received after the redrive"
    );
    ok(inbox.delete(a.as_str(), &later[0].receipt).await, "delete");

    let dead = ok(inbox.dead_letters(a.as_str(), 10).await, "dead_letters");
    assert_eq!(
        dead.len(),
        1,
        "the message is on the dead-letter queue: {dead:?}"
    );
    assert_eq!(
        dead[0].body,
        poison.to_json(),
        "the dead letter keeps the body"
    );
    assert_eq!(
        dead[0].receive_count, max_receives,
        "the dead letter keeps its count"
    );
    let want = format!("received {max_receives} times without success");
    assert!(
        dead[0].reason.contains(&want) && dead[0].reason.contains("max receives"),
        "the reason says why, got {:?}",
        dead[0].reason
    );
    assert_eq!(
        ok(inbox.depth(a.as_str()).await, "depth"),
        0,
        "a redriven message leaves the queue"
    );
}

/// `dead_letter` parks a body with its reason and time; `dead_letters` lists the
/// queue oldest first.
pub async fn dead_letter_is_recorded(
    mailbox: &dyn Mailbox,
    inbox: &dyn Inbox,
    clock: &dyn TestTime,
) {
    let a = agent("dlq");
    let t0 = clock.now_ms();
    ok(
        mailbox
            .dead_letter(a.as_str(), "{not json", "envelope does not parse")
            .await,
        "dead_letter",
    );
    let t1 = clock.now_ms();
    clock.advance(10).await;
    let t2 = clock.now_ms();
    ok(
        mailbox
            .dead_letter(a.as_str(), "second", "task does not exist")
            .await,
        "dead_letter",
    );
    let t3 = clock.now_ms();

    let dead = ok(inbox.dead_letters(a.as_str(), 10).await, "dead_letters");
    let seen: Vec<(&str, &str, u32)> = dead
        .iter()
        .map(|d| (d.body.as_str(), d.reason.as_str(), d.receive_count))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("{not json", "envelope does not parse", 0),
            ("second", "task does not exist", 0),
        ],
        "dead letters keep body and reason, oldest first"
    );
    assert!(
        (t0..=t1).contains(&dead[0].at) && (t2..=t3).contains(&dead[1].at),
        "dead letters keep the time they were parked: {:?} not in {t0}..={t1} and {t2}..={t3}",
        (dead[0].at, dead[1].at)
    );
    let one = ok(inbox.dead_letters(a.as_str(), 1).await, "dead_letters");
    assert_eq!(one.len(), 1, "dead_letters honours the limit");
    assert_eq!(one[0].body, "{not json", "the limit keeps the oldest");
    assert_eq!(
        ok(inbox.depth(a.as_str()).await, "depth"),
        0,
        "dead letters are not queued"
    );
    assert!(
        ok(
            inbox.dead_letters(agent("dlq-other").as_str(), 10).await,
            "dead_letters"
        )
        .is_empty(),
        "dead-letter queues are per agent"
    );
}

/// `depth` counts messages waiting and in flight, per agent.
pub async fn depth_counts_waiting_and_in_flight(mailbox: &dyn Mailbox, inbox: &dyn Inbox) {
    let a = agent("depth");
    let t = TaskId::new(1);
    assert_eq!(
        ok(inbox.depth(a.as_str()).await, "depth"),
        0,
        "an unknown queue is empty"
    );
    let (ga, gb) = (session_id("a"), session_id("b"));
    let envelopes = [
        envelope(&a, &ga, t, "a1"),
        envelope(&a, &ga, t, "a2"),
        envelope(&a, &gb, t, "b1"),
    ];
    ok(mailbox.send(&envelopes).await, "send");
    assert_eq!(
        ok(inbox.depth(a.as_str()).await, "depth"),
        3,
        "waiting messages count"
    );
    let got = ok(inbox.receive(a.as_str(), 1, VISIBILITY_MS).await, "receive");
    assert_eq!(
        ok(inbox.depth(a.as_str()).await, "depth"),
        3,
        "in-flight messages count"
    );
    ok(inbox.delete(a.as_str(), &got[0].receipt).await, "delete");
    assert_eq!(
        ok(inbox.depth(a.as_str()).await, "depth"),
        2,
        "deleted messages do not"
    );
    assert_eq!(
        ok(inbox.depth(agent("depth-other").as_str()).await, "depth"),
        0,
        "depth is per agent"
    );
}

// ---------------------------------------------------------------------------------
// BlobStore

/// Bytes put under a key come back unchanged; a missing key is `None`; a put replaces.
pub async fn blobs_round_trip(blobs: &dyn BlobStore) {
    let k = format!("conformance/{}", Ulid::new());
    assert_eq!(
        ok(blobs.get(&k).await, "get"),
        None,
        "a missing key is None"
    );
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    ok(blobs.put(&k, &bytes).await, "put");
    assert_eq!(
        ok(blobs.get(&k).await, "get"),
        Some(bytes),
        "bytes round trip, every byte value, large bodies included"
    );
    ok(blobs.put(&k, b"replaced").await, "put again");
    assert_eq!(
        ok(blobs.get(&k).await, "get").as_deref(),
        Some(&b"replaced"[..]),
        "a put replaces"
    );
    let empty = format!("{k}/empty");
    ok(blobs.put(&empty, &[]).await, "put empty");
    assert_eq!(
        ok(blobs.get(&empty).await, "get"),
        Some(Vec::new()),
        "an empty blob is present, not missing"
    );
}

// ---------------------------------------------------------------------------------
// Scheduler

/// A scheduled envelope reaches its agent once, not before it is due, however often
/// it was scheduled. `deliver_due(now_ms, agent)` stands for the backend's delivery:
/// it delivers whatever is due at `now_ms` and returns the envelopes that reached
/// `agent`'s queue.
pub async fn schedule_is_idempotent_and_waits_until_due<F, Fut>(
    scheduler: &dyn Scheduler,
    clock: &dyn TestTime,
    mut deliver_due: F,
) where
    F: FnMut(u64, AgentName) -> Fut,
    Fut: Future<Output = Vec<Envelope>>,
{
    let a = agent("schedule");
    let e = Envelope {
        kind: Kind::Wake,
        ..envelope(&a, &session_id("s"), TaskId::new(1), "wake up")
    };
    let at = clock.now_ms() + 1_000;
    ok(scheduler.schedule(at, &e).await, "schedule");
    ok(scheduler.schedule(at, &e).await, "schedule again");

    assert!(
        deliver_due(clock.now_ms(), a.clone()).await.is_empty(),
        "nothing is delivered before it is due"
    );
    clock.advance(1_000).await;
    assert_eq!(
        deliver_due(clock.now_ms(), a.clone()).await,
        vec![e],
        "a due envelope is delivered once, however often it was scheduled"
    );
    clock.advance(1_000).await;
    assert!(
        deliver_due(clock.now_ms(), a.clone()).await.is_empty(),
        "a delivered schedule is not delivered again"
    );
}
