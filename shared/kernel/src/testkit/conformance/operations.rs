//! Conformance checks for the operator-facing ports: [`Schedules`] and dead-letter
//! [`Inbox::redrive`]. Same rules as the rest of the suite (see the parent module).

use super::{TestTime, agent, bodies, envelope, json, ok, session_id};
use crate::ids::TaskId;
use crate::model::AgentName;
use crate::ports::{Inbox, Mailbox, PortError};
use crate::schedules::{Schedule, ScheduleKind, Schedules, When};

fn schedule(tenant: &str, agent: &AgentName, input: &str, when: &str, now: u64) -> Schedule {
    Schedule::new(
        tenant,
        agent.clone(),
        ScheduleKind::Task,
        input,
        When::parse(when).unwrap(),
        "conformance",
        now,
    )
}

/// A created schedule reads back as it was written, only in its own tenant; ids are
/// unique within a tenant; delete removes it once.
pub async fn schedules_round_trip_per_tenant(schedules: &dyn Schedules) {
    let a = agent("sched");
    let acme = format!("acme-{}", ulid::Ulid::new().to_string().to_lowercase());
    let other = format!("other-{}", ulid::Ulid::new().to_string().to_lowercase());
    let now = 1_700_000_000_000;
    let daily = schedule(&acme, &a, "daily report", "cron(0 9 * * ? *)", now);
    let mut often = schedule(&acme, &a, "poll", "rate(5 minutes)", now + 1);
    often.kind = ScheduleKind::Wakeup;
    let once = schedule(&other, &a, "once", "at(2030-01-01T09:00:00)", now + 2);
    for s in [&daily, &often, &once] {
        ok(schedules.create(s).await, "create");
    }

    let listed = ok(schedules.list(&acme).await, "list");
    assert_eq!(
        listed,
        vec![daily.clone(), often.clone()],
        "list returns the tenant's schedules, oldest first, as written"
    );
    assert_eq!(
        ok(schedules.list(&other).await, "list"),
        vec![once.clone()],
        "another tenant sees only its own"
    );
    assert_eq!(
        ok(schedules.get(&acme, &often.id).await, "get"),
        Some(often.clone()),
        "get reads a schedule back"
    );
    assert_eq!(
        ok(schedules.get(&other, &daily.id).await, "get"),
        None,
        "a schedule is invisible to another tenant"
    );
    assert!(
        !ok(schedules.delete(&other, &daily.id).await, "delete"),
        "another tenant cannot delete it"
    );

    match schedules.create(&daily).await {
        Err(PortError::Rejected(_)) => {}
        other => panic!("creating an existing id must be Rejected, got {other:?}"),
    }

    assert!(ok(schedules.delete(&acme, &daily.id).await, "delete"));
    assert!(
        !ok(schedules.delete(&acme, &daily.id).await, "delete"),
        "a second delete finds nothing"
    );
    assert_eq!(ok(schedules.get(&acme, &daily.id).await, "get"), None);
    assert_eq!(ok(schedules.list(&acme).await, "list"), vec![often]);
    assert_eq!(ok(schedules.list(&other).await, "list"), vec![once]);
}

/// `redrive` puts dead letters back on the queue as new messages (receive count
/// starting again, same body, past the send deduplication), the named ones or all,
/// and each dead letter has a stable id that names it.
pub async fn redrive_puts_dead_letters_back(
    mailbox: &dyn Mailbox,
    inbox: &dyn Inbox,
    clock: &dyn TestTime,
    max_receives: u32,
) {
    let a = agent("redrive-back");
    let poison = envelope(&a, &session_id("g"), TaskId::new(1), "poison");
    let parked = envelope(&a, &session_id("h"), TaskId::new(1), "parked");
    ok(mailbox.send(std::slice::from_ref(&poison)).await, "send");
    for _ in 0..max_receives {
        let got = ok(inbox.receive(a.as_str(), 1, 1_000).await, "receive");
        assert_eq!(bodies(&got), json(&[&poison]));
        clock.advance(1_000).await;
    }
    // The receive after the last one moves the message to the dead-letter queue.
    let none = ok(inbox.receive(a.as_str(), 10, 1_000).await, "receive");
    assert!(none.is_empty(), "{none:?}");
    ok(
        mailbox
            .dead_letter(a.as_str(), &parked.to_json(), "parked by hand")
            .await,
        "dead_letter",
    );

    let mut dead = Vec::new();
    for _ in 0..5 {
        dead = ok(inbox.dead_letters(a.as_str(), 10).await, "dead_letters");
        if dead.len() == 2 {
            break;
        }
    }
    assert_eq!(dead.len(), 2, "both are parked: {dead:?}");
    assert!(
        dead.iter().all(|d| !d.id.is_empty()) && dead[0].id != dead[1].id,
        "every dead letter has its own id: {dead:?}"
    );
    let again = ok(inbox.dead_letters(a.as_str(), 10).await, "dead_letters");
    let mut ids: Vec<_> = dead.iter().map(|d| d.id.clone()).collect();
    let mut ids_again: Vec<_> = again.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    ids_again.sort();
    assert_eq!(ids, ids_again, "ids are stable between listings");
    let poison_id = dead
        .iter()
        .find(|d| d.body == poison.to_json())
        .map(|d| d.id.clone())
        .unwrap();

    assert_eq!(
        ok(
            inbox
                .redrive(a.as_str(), Some(&["no-such-id".to_string()]))
                .await,
            "redrive"
        ),
        0,
        "an unknown id moves nothing"
    );
    assert_eq!(
        ok(
            inbox
                .redrive(a.as_str(), Some(std::slice::from_ref(&poison_id)))
                .await,
            "redrive"
        ),
        1,
        "the named dead letter moves"
    );
    let left = ok(inbox.dead_letters(a.as_str(), 10).await, "dead_letters");
    assert_eq!(
        left.iter().map(|d| d.body.clone()).collect::<Vec<_>>(),
        json(&[&parked]),
        "only the named one left the dead-letter queue"
    );

    let mut back = Vec::new();
    for _ in 0..5 {
        back = ok(inbox.receive(a.as_str(), 10, 30_000).await, "receive");
        if !back.is_empty() {
            break;
        }
    }
    assert_eq!(
        bodies(&back),
        json(&[&poison]),
        "the redriven message is received again, though its envelope id was sent before"
    );
    assert_eq!(back[0].receive_count, 1, "its receive count starts again");
    ok(inbox.delete(a.as_str(), &back[0].receipt).await, "delete");

    assert_eq!(
        ok(inbox.redrive(a.as_str(), None).await, "redrive"),
        1,
        "None moves every dead letter"
    );
    assert!(
        ok(inbox.dead_letters(a.as_str(), 10).await, "dead_letters").is_empty(),
        "the dead-letter queue is empty after redriving all"
    );
    let mut back = Vec::new();
    for _ in 0..5 {
        back = ok(inbox.receive(a.as_str(), 10, 30_000).await, "receive");
        if !back.is_empty() {
            break;
        }
    }
    assert_eq!(bodies(&back), json(&[&parked]));
    ok(inbox.delete(a.as_str(), &back[0].receipt).await, "delete");
    assert_eq!(
        ok(inbox.redrive(a.as_str(), None).await, "redrive"),
        0,
        "nothing is left to move"
    );
}
