//! The port conformance suite against `LocalStore` on a real SQLite file, plus what
//! only the embedded store promises: data survives a restart, in-flight messages are
//! released after a crash, schedules are delivered from the file, dedupe has a window.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_kernel::ids::{EnvelopeId, EventId, TaskId};
use aos_kernel::llm::Message;
use aos_kernel::model::{
    AgentName, Budget, Envelope, Event, EventKind, Kind, Origin, Session, SessionId, SessionKey,
    SessionStatus, Task, TaskStatus, TaskUpdate, Usage,
};
use aos_kernel::ports::{
    BlobStore, Clock, Commit, Inbox, Mailbox, PortError, Scheduler, SessionStore, TaskStore,
};
use aos_kernel::testkit::ManualClock;
use aos_kernel::testkit::conformance as c;
use aos_local::{LocalConfig, LocalError, LocalStore};
use std::path::Path;
use std::sync::Arc;
use tempfile::TempDir;

const START: u64 = 1_700_000_000_000;

/// A store on a fresh file, its directory (deleted on drop) and the clock it runs on.
fn store() -> (TempDir, Arc<ManualClock>, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let store = open(dir.path(), &clock);
    (dir, clock, store)
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> LocalStore {
    LocalStore::open(
        &dir.join("aos.db"),
        LocalConfig::default(),
        clock.clone() as Arc<dyn Clock>,
    )
    .unwrap()
}

fn envelope(to: &str, session: &str, body: &str) -> Envelope {
    Envelope {
        tenant: "default".into(),
        id: EnvelopeId::new(START),
        task: TaskId::new(START),
        session: SessionId::new(session).unwrap(),
        from: "user".into(),
        to: AgentName::new(to).unwrap(),
        kind: Kind::Task,
        body: body.into(),
        body_ref: None,
        hop: 0,
        trace_id: "trace".into(),
        sent_at: START,
        reply_to: None,
        in_reply_to: None,
        is_error: false,
    }
}

fn task(agent: &str) -> Task {
    let id = TaskId::new(START);
    Task {
        tenant: "default".into(),
        id,
        status: TaskStatus::Queued,
        agent: AgentName::new(agent).unwrap(),
        input: "hello".into(),
        result: None,
        error: None,
        usage: Usage::default(),
        budget: Budget::default(),
        trace_id: "trace".into(),
        created_at: START,
        updated_at: START,
        first_envelope: EnvelopeId::new(START),
    }
}

fn event(task: TaskId, at: u64) -> Event {
    Event {
        id: EventId::new(at),
        task,
        at,
        agent: "a".into(),
        kind: EventKind::Submitted,
        detail: "submitted".into(),
        envelope: None,
    }
}

fn session(key: &SessionKey, task: TaskId, version: u64) -> Session {
    Session {
        agent: key.agent.clone(),
        id: key.session.clone(),
        task,
        version,
        status: SessionStatus::Waiting,
        origin: Origin {
            from: "user".into(),
            reply_to: None,
        },
        // A few kilobytes, like a short conversation.
        transcript: vec![Message::user("what is the weather in Lisbon? ".repeat(100))],
        open_calls: Vec::new(),
        deferred: Vec::new(),
        wakes: version,
        created_at: START,
        updated_at: START,
        audit: Default::default(),
    }
}

// --- the conformance suite -------------------------------------------------------

#[tokio::test]
async fn commit_then_load_round_trips() {
    let (_dir, _clock, s) = store();
    c::commit_then_load_round_trips(&s, &s).await;
}

#[tokio::test]
async fn stale_version_conflicts_and_writes_nothing() {
    let (_dir, _clock, s) = store();
    c::stale_version_conflicts_and_writes_nothing(&s, &s).await;
}

#[tokio::test]
async fn applied_envelope_conflicts_and_keeps_its_outbox() {
    let (_dir, _clock, s) = store();
    c::applied_envelope_conflicts_and_keeps_its_outbox(&s, &s).await;
}

#[tokio::test]
async fn task_counters_add_and_first_final_status_wins() {
    let (_dir, _clock, s) = store();
    c::task_counters_add_and_first_final_status_wins(&s, &s).await;
}

#[tokio::test]
async fn events_are_sorted_and_idempotent() {
    let (_dir, _clock, s) = store();
    c::events_are_sorted_and_idempotent(&s, &s).await;
}

#[tokio::test]
async fn memory_loads_newest_notes_oldest_first() {
    let (_dir, _clock, s) = store();
    c::memory_loads_newest_notes_oldest_first(&s).await;
}

#[tokio::test]
async fn create_task_is_idempotent() {
    let (_dir, _clock, s) = store();
    c::create_task_is_idempotent(&s).await;
}

#[tokio::test]
async fn list_tasks_filters_and_orders_newest_first() {
    let (_dir, _clock, s) = store();
    c::list_tasks_filters_and_orders_newest_first(&s).await;
}

#[tokio::test]
async fn send_is_deduplicated_by_envelope_id() {
    let (_dir, _clock, s) = store();
    c::send_is_deduplicated_by_envelope_id(&s, &s).await;
}

#[tokio::test]
async fn resend_after_delete_is_deduplicated() {
    let (_dir, _clock, s) = store();
    c::resend_after_delete_is_deduplicated(&s, &s).await;
}

#[tokio::test]
async fn release_with_stale_receipt_does_nothing() {
    let (_dir, clock, s) = store();
    c::release_with_stale_receipt_does_nothing(&s, &s, &*clock).await;
}

#[tokio::test]
async fn fifo_order_within_a_group() {
    let (_dir, _clock, s) = store();
    c::fifo_order_within_a_group(&s, &s).await;
}

#[tokio::test]
async fn group_is_locked_while_in_flight() {
    let (_dir, _clock, s) = store();
    c::group_is_locked_while_in_flight(&s, &s).await;
}

#[tokio::test]
async fn other_groups_are_not_blocked() {
    let (_dir, _clock, s) = store();
    c::other_groups_are_not_blocked(&s, &s).await;
}

#[tokio::test]
async fn visibility_timeout_brings_message_back() {
    let (_dir, clock, s) = store();
    c::visibility_timeout_brings_message_back(&s, &s, &*clock).await;
}

#[tokio::test]
async fn release_delays_and_keeps_order() {
    let (_dir, clock, s) = store();
    c::release_delays_and_keeps_order(&s, &s, &*clock).await;
}

#[tokio::test]
async fn delete_with_stale_receipt_does_nothing() {
    let (_dir, clock, s) = store();
    c::delete_with_stale_receipt_does_nothing(&s, &s, &*clock).await;
}

#[tokio::test]
async fn redrive_to_dead_letters_after_max_receives() {
    let (_dir, clock, s) = store();
    let max = s.config().max_receives;
    c::redrive_to_dead_letters_after_max_receives(&s, &s, &*clock, max).await;
}

#[tokio::test]
async fn dead_letter_is_recorded() {
    let (_dir, clock, s) = store();
    c::dead_letter_is_recorded(&s, &s, &*clock).await;
}

#[tokio::test]
async fn depth_counts_waiting_and_in_flight() {
    let (_dir, _clock, s) = store();
    c::depth_counts_waiting_and_in_flight(&s, &s).await;
}

#[tokio::test]
async fn blobs_round_trip() {
    let (_dir, _clock, s) = store();
    c::blobs_round_trip(&s).await;
}

#[tokio::test]
async fn schedule_is_idempotent_and_waits_until_due() {
    let (_dir, clock, s) = store();
    let deliver = |now: u64, agent: AgentName| {
        let s = s.clone();
        async move {
            s.deliver_due(now).await.unwrap();
            let got = s.receive(agent.as_str(), 100, 60_000).await.unwrap();
            let mut out = Vec::new();
            for m in got {
                s.delete(agent.as_str(), &m.receipt).await.unwrap();
                out.push(Envelope::parse(&m.body).unwrap());
            }
            out
        }
    };
    c::schedule_is_idempotent_and_waits_until_due(&s, &*clock, deliver).await;
}

#[tokio::test]
async fn the_suite_also_passes_in_memory() {
    // The in-memory database runs the same SQL without WAL; tests of other crates use
    // it, so it must keep the same contracts.
    let clock = Arc::new(ManualClock::new(START));
    let s = LocalStore::open_in_memory(LocalConfig::default(), clock.clone() as Arc<dyn Clock>)
        .unwrap();
    c::commit_then_load_round_trips(&s, &s).await;
    c::group_is_locked_while_in_flight(&s, &s).await;
    c::redrive_to_dead_letters_after_max_receives(&s, &s, &*clock, 5).await;
}

// --- what only the embedded store promises --------------------------------------

#[tokio::test]
async fn everything_survives_closing_and_reopening_the_file() {
    let (dir, clock, s) = store();
    let t = task("keeper");
    assert!(s.create_task(&t, &event(t.id, START)).await.unwrap());
    let e = envelope("keeper", "s1", "hello");
    let key = SessionKey {
        agent: e.to.clone(),
        session: e.session.clone(),
    };
    let commit = Commit {
        key: key.clone(),
        task: t.id,
        envelope: e.id,
        expected_version: 0,
        session: None,
        outbox: Vec::new(),
        task_update: TaskUpdate {
            status: Some(TaskStatus::Running),
            ..TaskUpdate::default()
        },
        events: Vec::new(),
        memory: Vec::new(),
        memory_scope: "keeper".into(),
    };
    s.commit(&commit).await.unwrap();
    let waiting = envelope("keeper", "s1", "waiting");
    let in_flight = envelope("keeper", "s2", "in flight");
    s.send(&[waiting.clone(), in_flight.clone()]).await.unwrap();
    // Receive only s2's message: s1's stays waiting.
    s.receive("keeper", 2, 60_000).await.unwrap();
    s.put("blob/1", b"bytes").await.unwrap();
    s.dead_letter("keeper", "bad", "does not parse")
        .await
        .unwrap();
    s.schedule(START + 5_000, &envelope("keeper", "s3", "later"))
        .await
        .unwrap();
    drop(s);

    let s = open(dir.path(), &clock);
    let mode: String = rusqlite::Connection::open(dir.path().join("aos.db"))
        .unwrap()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal", "the file is in WAL mode");
    let loaded = s
        .load(&key, t.id, e.id, key.agent.as_str(), 10)
        .await
        .unwrap();
    assert_eq!(
        loaded.applied,
        Some(Vec::new()),
        "the applied marker survives"
    );
    assert_eq!(loaded.task.map(|t| t.status), Some(TaskStatus::Running));
    assert_eq!(s.task_events(t.id).await.unwrap().len(), 1);
    assert_eq!(
        s.depth("keeper").await.unwrap(),
        2,
        "queued messages survive"
    );
    assert_eq!(
        s.get("blob/1").await.unwrap().as_deref(),
        Some(&b"bytes"[..])
    );
    assert_eq!(s.dead_letters("keeper", 10).await.unwrap().len(), 1);
    assert_eq!(s.next_due().await.unwrap(), Some(START + 5_000));
    s.send(std::slice::from_ref(&waiting)).await.unwrap();
    assert_eq!(
        s.depth("keeper").await.unwrap(),
        2,
        "the dedupe window survives a restart"
    );
    assert!(
        s.receive("keeper", 10, 60_000).await.unwrap().is_empty(),
        "a message in flight at the crash stays in flight until released"
    );
}

#[tokio::test]
async fn release_all_in_flight_makes_messages_visible_and_keeps_counts() {
    let (dir, clock, s) = store();
    let a = envelope("crashy", "s1", "a");
    let b = envelope("crashy", "s2", "b");
    s.send(&[a.clone(), b.clone()]).await.unwrap();
    let got = s.receive("crashy", 1, 60_000).await.unwrap();
    assert_eq!(got[0].message_id, a.id.to_string());
    drop(s);

    // The process died with `a` in flight; the next one starts by releasing it.
    let s = open(dir.path(), &clock);
    assert_eq!(
        s.release_all_in_flight().unwrap(),
        1,
        "one message was in flight"
    );
    assert_eq!(
        s.release_all_in_flight().unwrap(),
        0,
        "releasing is idempotent"
    );
    let again = s.receive("crashy", 10, 60_000).await.unwrap();
    let seen: Vec<(String, u32)> = again
        .iter()
        .map(|m| (m.message_id.clone(), m.receive_count))
        .collect();
    assert_eq!(
        seen,
        vec![(a.id.to_string(), 2), (b.id.to_string(), 1)],
        "the released message comes back first, its receive count kept"
    );
    s.delete("crashy", &got[0].receipt).await.unwrap();
    assert_eq!(
        s.depth("crashy").await.unwrap(),
        2,
        "the receipt from before the crash is stale"
    );
}

#[tokio::test]
async fn deliver_due_moves_due_schedules_to_queues_once() {
    let (_dir, clock, s) = store();
    let soon = envelope("sleeper", "s1", "soon");
    let later = envelope("sleeper", "s2", "later");
    let other = envelope("other", "s1", "other agent");
    s.schedule(START + 1_000, &soon).await.unwrap();
    s.schedule(START + 9_000, &later).await.unwrap();
    s.schedule(START + 1_000, &other).await.unwrap();
    // First schedule of an envelope id wins.
    s.schedule(START + 50_000, &soon).await.unwrap();
    assert_eq!(s.next_due().await.unwrap(), Some(START + 1_000));

    assert_eq!(s.deliver_due(START).await.unwrap(), 0, "nothing due yet");
    assert_eq!(s.depth("sleeper").await.unwrap(), 0);
    clock.advance(1_000);
    assert_eq!(s.deliver_due(START + 1_000).await.unwrap(), 2);
    assert_eq!(s.depth("sleeper").await.unwrap(), 1);
    assert_eq!(
        s.depth("other").await.unwrap(),
        1,
        "each envelope goes to its agent"
    );
    let got = s.receive("sleeper", 10, 60_000).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(Envelope::parse(&got[0].body).unwrap(), soon);
    assert_eq!(got[0].group, "s1", "the group is the envelope's session");
    assert_eq!(
        s.deliver_due(START + 1_000).await.unwrap(),
        0,
        "delivered once"
    );
    assert_eq!(s.next_due().await.unwrap(), Some(START + 9_000));

    // Scheduling an envelope that was already sent directly is harmless: the queue's
    // dedupe drops the scheduled copy.
    s.send(std::slice::from_ref(&later)).await.unwrap();
    clock.advance(8_000);
    assert_eq!(s.deliver_due(START + 9_000).await.unwrap(), 1);
    assert_eq!(s.depth("sleeper").await.unwrap(), 2, "later is queued once");
    assert_eq!(s.next_due().await.unwrap(), None);
}

#[tokio::test]
async fn dedupe_forgets_an_id_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let config = LocalConfig {
        dedup_window_ms: 1_000,
        ..LocalConfig::default()
    };
    let s = LocalStore::open(
        &dir.path().join("aos.db"),
        config,
        clock.clone() as Arc<dyn Clock>,
    )
    .unwrap();
    let e = envelope("forgetful", "s1", "x");
    s.send(std::slice::from_ref(&e)).await.unwrap();
    clock.advance(999);
    s.send(std::slice::from_ref(&e)).await.unwrap();
    assert_eq!(s.depth("forgetful").await.unwrap(), 1, "inside the window");
    clock.advance(1);
    s.send(std::slice::from_ref(&e)).await.unwrap();
    assert_eq!(
        s.depth("forgetful").await.unwrap(),
        2,
        "after the window a re-send is a new message, as on SQS"
    );
    // Many sends trigger pruning; it must not forget ids inside the window.
    for i in 0..300 {
        s.send(&[envelope("forgetful", "s2", &format!("{i}"))])
            .await
            .unwrap();
    }
    s.send(std::slice::from_ref(&e)).await.unwrap();
    assert_eq!(s.depth("forgetful").await.unwrap(), 302);
}

#[tokio::test]
async fn a_file_from_a_newer_aos_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aos.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(START));
    let err = LocalStore::open(&path, LocalConfig::default(), clock).unwrap_err();
    assert!(
        matches!(err, LocalError::NewerSchema { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer aos"), "{err}");
}

#[tokio::test]
async fn opening_twice_is_harmless() {
    let (dir, clock, s) = store();
    s.put("k", b"v").await.unwrap();
    let again = open(dir.path(), &clock);
    assert_eq!(again.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn undecodable_rows_are_reported_as_corrupt() {
    let (dir, _clock, s) = store();
    let t = task("broken");
    assert!(s.create_task(&t, &event(t.id, START)).await.unwrap());
    {
        let conn = rusqlite::Connection::open(dir.path().join("aos.db")).unwrap();
        conn.execute("UPDATE tasks SET task = '{\"oops\": 1}'", [])
            .unwrap();
    }
    let err = s.get_task(t.id).await.unwrap_err();
    assert!(matches!(err, PortError::Corrupt(_)), "{err}");
    assert!(
        err.to_string().contains("task"),
        "the error names what: {err}"
    );
}

/// Rough throughput of the calls one wake makes. Not a pass/fail test: run with
/// `cargo test -p aos-local --release -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn wake_throughput() {
    let (_dir, _clock, s) = store();
    let agent = "bench";
    let n = 5_000u32;
    // Worst case first: one long group whose head stays in flight, so every receive
    // has to skip it; then a backlog of one message per session.
    let mut backlog = Vec::new();
    for _ in 0..2_000 {
        backlog.push(envelope(agent, "busy", "busy"));
    }
    for i in 0..n {
        backlog.push(envelope(agent, &format!("s{i}"), "work"));
    }
    let started = std::time::Instant::now();
    for chunk in backlog.chunks(10) {
        s.send(chunk).await.unwrap();
    }
    println!(
        "send: {:?} per envelope",
        started.elapsed() / backlog.len() as u32
    );
    s.receive(agent, 1, 600_000).await.unwrap();

    let t = task(agent);
    s.create_task(&t, &event(t.id, START)).await.unwrap();
    let started = std::time::Instant::now();
    let mut wakes = 0u32;
    let mut spent = [std::time::Duration::ZERO; 4];
    loop {
        let clock = std::time::Instant::now();
        let got = s.receive(agent, 10, 60_000).await.unwrap();
        spent[0] += clock.elapsed();
        if got.is_empty() {
            break;
        }
        for m in got {
            let e = Envelope::parse(&m.body).unwrap();
            let key = e.key();
            let clock = std::time::Instant::now();
            let loaded = s
                .load(&key, t.id, e.id, key.agent.as_str(), 20)
                .await
                .unwrap();
            spent[1] += clock.elapsed();
            let version = loaded.session.map(|s| s.version).unwrap_or(0);
            let commit = Commit {
                key: key.clone(),
                task: t.id,
                envelope: e.id,
                expected_version: version,
                session: Some(session(&key, t.id, version + 1)),
                outbox: Vec::new(),
                task_update: TaskUpdate {
                    usage: Usage {
                        wakes: 1,
                        ..Usage::default()
                    },
                    ..TaskUpdate::default()
                },
                events: vec![event(t.id, START)],
                memory: Vec::new(),
                memory_scope: key.agent.to_string(),
            };
            let clock = std::time::Instant::now();
            s.commit(&commit).await.unwrap();
            spent[2] += clock.elapsed();
            let clock = std::time::Instant::now();
            s.delete(agent, &m.receipt).await.unwrap();
            spent[3] += clock.elapsed();
            wakes += 1;
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{wakes} wakes (receive + load + commit + delete) in {elapsed:?}: {:.0} wakes/s",
        f64::from(wakes) / elapsed.as_secs_f64()
    );
    for (name, d) in ["receive (per message)", "load", "commit", "delete"]
        .iter()
        .zip(spent)
    {
        println!("  {name}: {:?}", d / wakes.max(1));
    }
}

#[tokio::test]
async fn idempotency_keys_bind_once() {
    let (_dir, _clock, s) = store();
    c::idempotency_keys_bind_once(&s).await;
}
