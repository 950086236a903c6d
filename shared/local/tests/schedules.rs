//! Schedules and dead-letter redrive on `LocalStore`: the shared conformance checks,
//! plus what the embedded runtime relies on to fire each slot once: the slot owed is
//! kept in the file until it is reported fired, and survives a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_kernel::model::AgentName;
use aos_kernel::ports::Clock;
use aos_kernel::schedules::{Schedule, ScheduleKind, Schedules, When};
use aos_kernel::testkit::ManualClock;
use aos_kernel::testkit::conformance as c;
use aos_local::{LocalConfig, LocalStore};
use std::path::Path;
use std::sync::Arc;

const START: u64 = 1_700_000_000_000;
const MINUTE: u64 = 60_000;

fn open(dir: &Path, clock: &Arc<ManualClock>) -> LocalStore {
    LocalStore::open(
        &dir.join("aos.db"),
        LocalConfig::default(),
        clock.clone() as Arc<dyn Clock>,
    )
    .unwrap()
}

fn schedule(when: &str, created_at: u64) -> Schedule {
    Schedule::new(
        "acme",
        AgentName::new("primary").unwrap(),
        ScheduleKind::Task,
        "report",
        When::parse(when).unwrap(),
        "alice",
        created_at,
    )
}

#[tokio::test]
async fn schedules_round_trip_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    c::schedules_round_trip_per_tenant(&open(dir.path(), &clock)).await;
}

#[tokio::test]
async fn redrive_puts_dead_letters_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let s = open(dir.path(), &clock);
    let max = s.config().max_receives;
    c::redrive_puts_dead_letters_back(&s, &s, &*clock, max).await;
}

#[tokio::test]
async fn a_slot_stays_owed_until_fired_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let s = open(dir.path(), &clock);
    let every = schedule("rate(1 minute)", START);
    s.create(&every).await.unwrap();
    assert_eq!(s.next_firing().await.unwrap(), Some(START + MINUTE));
    assert!(
        s.due_firings(START + MINUTE - 1, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let due = s.due_firings(START + MINUTE, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].at, &due[0].schedule), (START + MINUTE, &every));

    // The process dies after submitting, before reporting: the slot is still owed,
    // with the same time, so the runtime derives the same task id again.
    drop(s);
    let s = open(dir.path(), &clock);
    let again = s.due_firings(START + MINUTE + 500, 10).await.unwrap();
    assert_eq!(again, due, "the same slot, not a new one");

    s.fired(&again[0], START + MINUTE + 500).await.unwrap();
    assert!(
        s.due_firings(START + MINUTE + 500, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A stale report (a second runtime, a retry) changes nothing.
    s.fired(&again[0], START + MINUTE + 600).await.unwrap();
    assert_eq!(s.next_firing().await.unwrap(), Some(START + 2 * MINUTE));

    // Ten minutes with nothing running: the first missed slot fires once, then the
    // timetable goes on from now.
    let late = START + 12 * MINUTE + 1;
    let missed = s.due_firings(late, 10).await.unwrap();
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].at, START + 2 * MINUTE);
    s.fired(&missed[0], late).await.unwrap();
    assert_eq!(s.next_firing().await.unwrap(), Some(START + 13 * MINUTE));
    assert_eq!(s.list("acme").await.unwrap(), vec![every]);
}

#[tokio::test]
async fn a_one_time_schedule_fires_once_then_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let s = open(dir.path(), &clock);
    let at = START + 5 * MINUTE;
    let once = schedule(
        &format!("at({})", aos_kernel::schedules::format_utc(at)),
        START,
    );
    // A time already past when created still fires (at once) rather than never.
    let overdue = schedule("at(2020-01-01T00:00:00)", START);
    s.create(&once).await.unwrap();
    s.create(&overdue).await.unwrap();

    let due = s.due_firings(START, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].schedule, overdue);
    s.fired(&due[0], START).await.unwrap();

    let due = s.due_firings(at, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].at, &due[0].schedule), (at, &once));
    s.fired(&due[0], at).await.unwrap();
    assert!(s.due_firings(u64::MAX / 2, 10).await.unwrap().is_empty());
    assert!(
        s.list("acme").await.unwrap().is_empty(),
        "fired one-time schedules are gone"
    );
}

#[tokio::test]
async fn a_deleted_schedule_owes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let s = open(dir.path(), &clock);
    let daily = schedule("cron(0 9 * * ? *)", START);
    s.create(&daily).await.unwrap();
    let due = s.due_firings(START + 86_400_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    // 2023-11-14T22:13:20Z + 1 day: the first 09:00 after creation.
    assert_eq!(
        aos_kernel::schedules::format_utc(due[0].at),
        "2023-11-15T09:00:00"
    );
    assert!(s.delete("acme", &daily.id).await.unwrap());
    s.fired(&due[0], START + 86_400_000).await.unwrap();
    assert!(
        s.list("acme").await.unwrap().is_empty(),
        "fired does not bring it back"
    );
    assert_eq!(s.next_firing().await.unwrap(), None);
}

#[tokio::test]
async fn a_file_from_before_schedules_gets_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aos.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE blobs (key TEXT PRIMARY KEY NOT NULL, bytes BLOB NOT NULL); PRAGMA user_version = 1;")
            .unwrap();
    }
    let clock = Arc::new(ManualClock::new(START));
    let s = open(dir.path(), &clock);
    let every = schedule("rate(2 hours)", START);
    s.create(&every).await.unwrap();
    assert_eq!(s.list("acme").await.unwrap(), vec![every]);
}
