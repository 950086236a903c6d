//! `aos audit verify` on a real run: the log of the three-agent demo verifies, and after
//! one byte of one stored record is changed in the store file, it fails and names
//! that record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Output;

fn aos(dir: &Path, args: &[&str]) -> Output {
    common::aos_local(dir)
        .args(args)
        .output()
        .expect("aos runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn audit_verify_passes_on_a_real_run_and_names_a_changed_record() {
    let dir = tempfile::tempdir().unwrap();
    let run = aos(
        dir.path(),
        &[
            "run",
            "What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?",
        ],
    );
    assert!(run.status.success(), "{}", text(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let task = stdout
        .split("Timeline of task ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("aos run names the task")
        .to_string();

    let ok = aos(dir.path(), &["audit", "verify", &task]);
    assert!(ok.status.success(), "{}", text(&ok));
    let said = text(&ok);
    assert!(said.contains("ok"), "{said}");

    // Change one byte of one stored audit record: a digit of a token count in a
    // model_call record of the weather agent.
    let db = rusqlite::Connection::open(dir.path().join(".aos/aos.db")).unwrap();
    let (id, event): (String, String) = db
        .query_row(
            "SELECT id, event FROM events WHERE task = ?1
               AND event LIKE '%\"kind\":\"audit\"%' AND event LIKE '%model_call%'
               AND event LIKE '%\"agent\":\"weather\"%'
             ORDER BY id LIMIT 1",
            [&task],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let at = event.find("input_tokens").expect("a usage figure") + "input_tokens".len();
    let digit = event[at..]
        .find(|c: char| c.is_ascii_digit())
        .map(|i| at + i)
        .unwrap();
    let mut bytes = event.clone().into_bytes();
    bytes[digit] = if bytes[digit] == b'9' {
        b'8'
    } else {
        bytes[digit] + 1
    };
    let changed = String::from_utf8(bytes).unwrap();
    assert_eq!(
        changed
            .bytes()
            .zip(event.bytes())
            .filter(|(a, b)| a != b)
            .count(),
        1,
        "exactly one byte differs"
    );
    db.execute(
        "UPDATE events SET event = ?1 WHERE task = ?2 AND id = ?3",
        [&changed, &task, &id],
    )
    .unwrap();
    drop(db);

    let bad = aos(dir.path(), &["audit", "verify", &task]);
    let said = text(&bad);
    assert_eq!(bad.status.code(), Some(1), "{said}");
    assert!(said.contains(&id), "names the changed record {id}: {said}");
    assert!(said.contains("weather/"), "names its chain: {said}");
}
