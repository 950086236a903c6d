//! `aos run` as a person runs it: the binary, a fresh store, the demo request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

fn aos(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    common::aos_local(dir)
        .args(args)
        .output()
        .expect("aos runs")
}

#[test]
fn aos_run_answers_the_demo_with_both_specialists_and_prints_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let out = aos(
        dir.path(),
        &[
            "run",
            "What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("Answer (succeeded):"), "{stdout}");
    assert!(
        stdout.contains("[offline model]"),
        "the offline model says so: {stdout}"
    );
    assert!(stdout.contains("- weather: Paris, France:"), "{stdout}");
    assert!(stdout.contains("Tokyo, Japan:"), "{stdout}");
    assert!(
        stdout.contains("- finance: 1250.00 EUR = 1356.25 USD"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not live"),
        "offline data is labelled: {stdout}"
    );
    // The flow: primary → weather, primary → finance, both replies, the answer.
    let flow: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Flow:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let has = |needle: &str| flow.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(has("primary → weather:"), 1, "{flow:#?}");
    assert_eq!(has("primary → finance:"), 1, "{flow:#?}");
    assert_eq!(has("weather ↩ primary:"), 1, "{flow:#?}");
    assert_eq!(has("finance ↩ primary:"), 1, "{flow:#?}");
    assert!(
        flow.last().unwrap().contains("primary ⇒ user: answer"),
        "{flow:#?}"
    );
    // Live progress went to stderr as the agents woke.
    assert!(
        stderr.contains("weather   ● message from primary"),
        "{stderr}"
    );
    // The store is a real file in the working directory.
    assert!(dir.path().join(".aos/aos.db").exists());
}

#[test]
fn aos_run_exits_non_zero_with_a_reason_when_the_request_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = aos(dir.path(), &["run", "--agent", "nobody", "hello"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown agent 'nobody'; known agents: finance, primary, weather"),
        "{stderr}"
    );
}

#[test]
fn aos_bench_prints_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = aos(dir.path(), &["bench", "--tasks", "40", "--e2e-tasks", "20"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("200 wakes of 40 three-agent tasks"),
        "{stdout}"
    );
    assert!(stdout.contains("20/20 tasks succeeded"), "{stdout}");
    assert!(stdout.contains("peak RSS"), "{stdout}");
}

/// A fixture from `events/`, by absolute path (the commands run in a fresh directory).
fn event(path: &str) -> String {
    format!("{}/events/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn aos_replay_of_the_readme_example_creates_its_task_in_a_fresh_store_and_a_reply_continues_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = aos(dir.path(), &["replay", &event("sqs/new-task.json")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The agent comes from the queue in eventSourceARN; the task from the envelope.
    assert!(
        stdout.contains("SQS batch of 1 record(s) from the queue of primary (eventSourceARN arn:aws:sqs:us-east-1:123456789012:aos-primary.fifo)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "Created task 01JDA5V0K3Z8Q9WX7YB2M4N6PR for primary: it was not in .aos/aos.db"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("Outcome: applied 1, duplicates 0, dead-lettered 0, failed 0"),
        "{stdout}"
    );
    assert!(stdout.contains("\"batchItemFailures\": []"), "{stdout}");
    assert!(
        stdout.contains("Task 01JDA5V0K3Z8Q9WX7YB2M4N6PR (primary) is now waiting"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✉ → weather: What's the weather in Paris and Tokyo?"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✉ → finance: What is 1250 EUR in USD?"),
        "{stdout}"
    );
    assert!(!stdout.contains("Dead-lettered"), "{stdout}");

    // The task now runs, so the reply fixture continues it.
    let out = aos(dir.path(), &["replay", &event("sqs/reply.json")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("applied 1"), "{stdout}");
    assert!(stdout.contains("● reply from finance"), "{stdout}");
    assert!(
        stdout.contains("☾ asleep until 1 more answer(s) arrive"),
        "{stdout}"
    );

    // The same batch again: the envelope's applied marker makes it a duplicate.
    let out = aos(dir.path(), &["replay", &event("sqs/new-task.json")]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(!stdout.contains("Created task"), "{stdout}");
    assert!(
        stdout.contains("Outcome: applied 0, duplicates 1, dead-lettered 0, failed 0"),
        "{stdout}"
    );
}

#[test]
fn aos_replay_refuses_a_reply_whose_task_is_not_in_the_store_and_says_what_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = aos(dir.path(), &["replay", &event("sqs/reply.json")]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("not replayed: .aos/aos.db holds no task for record 1 (reply from finance, task 01JDA5V0K3Z8Q9WX7YB2M4N6PR)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`aos replay events/sqs/new-task.json`"),
        "{stderr}"
    );
    // Refused before the handler ran: nothing was dead-lettered.
    let out = aos(dir.path(), &["dlq", "primary"]);
    assert!(
        text(&out).0.contains("0 dead letter(s) for primary"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn aos_replay_takes_api_gateway_and_scheduler_events_too() {
    let dir = tempfile::tempdir().unwrap();
    let run = |path: &str| {
        let out = aos(dir.path(), &["replay", &event(path)]);
        let (stdout, stderr) = text(&out);
        (out.status.success(), stdout, stderr)
    };
    let (ok, stdout, stderr) = run("http/create-task.json");
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("API Gateway HTTP API (v2) request POST /v1/tasks"),
        "{stdout}"
    );
    assert!(stdout.contains("JWT subject \"user-42\""), "{stdout}");
    assert!(stdout.contains("→ 202 Accepted"), "{stdout}");
    assert!(stdout.contains("\"status\": \"queued\""), "{stdout}");

    let (ok, stdout, _) = run("http/bad-json.json");
    assert!(ok, "a 4xx is the API working: {stdout}");
    assert!(stdout.contains("→ 400 Bad Request"), "{stdout}");
    assert!(
        stdout.contains("\"type\": \"urn:aos:problem:bad-request\""),
        "{stdout}"
    );

    let (ok, stdout, _) = run("http/missing-auth.json");
    assert!(ok);
    assert!(
        stdout.contains("No JWT claims (requestContext.authorizer is absent): on AWS the HTTP API's JWT authorizer answers 401 before the function runs"),
        "{stdout}"
    );
    assert!(stdout.contains("→ 401 Unauthorized"), "{stdout}");

    let (ok, stdout, _) = run("http/get-task.json");
    assert!(ok);
    assert!(
        stdout.contains("→ 404 Not Found"),
        "that task is not in this store: {stdout}"
    );

    let (ok, stdout, _) = run("schedule/daily-briefing.json");
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("→ task 01JD6RAHC0ZDJ3BWNVND17WGSC for primary, queued: submitted"),
        "{stdout}"
    );
    let (ok, stdout, _) = run("schedule/daily-briefing-retry.json");
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("→ task 01JD6RAHC0ZDJ3BWNVND17WGSC for primary, queued: already submitted by an earlier delivery of this firing"),
        "{stdout}"
    );
    let (ok, stdout, _) = run("schedule/unknown-agent.json");
    assert!(!ok, "a firing that submits nothing fails: {stdout}");
    assert!(
        stdout.contains(
            "→ not submitted: unknown agent 'nobody'; known agents: finance, primary, weather"
        ),
        "{stdout}"
    );

    // What is not an AWS event AOS handles is refused with the shapes it takes.
    std::fs::write(
        dir.path().join("s3.json"),
        r#"{"Records": [{"eventSource": "aws:s3"}]}"#,
    )
    .unwrap();
    let out = aos(dir.path(), &["replay", "s3.json"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("an event from aws:s3; AOS functions receive SQS, API Gateway HTTP API (v2) and EventBridge Scheduler events"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn boolean_settings_take_1_and_0_as_well_as_true_and_false() {
    let dir = tempfile::tempdir().unwrap();
    let run = |offline: &str, extra: &[&str]| {
        let mut args = vec!["run", "-q", "What's the weather in Paris?"];
        args.extend_from_slice(extra);
        common::aos_local(dir.path())
            .args(&args)
            .env("AOS_OFFLINE", offline)
            .output()
            .unwrap()
    };
    for on in ["1", "true", "yes", "on", "TRUE"] {
        let out = run(on, &[]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "AOS_OFFLINE={on}: {stdout}\n{stderr}");
        assert!(
            stdout.contains("live weather switched off by configuration"),
            "AOS_OFFLINE={on} switches the network off: {stdout}"
        );
    }
    // The flag beats the environment, either way.
    let out = run("0", &["--offline"]);
    assert!(
        text(&out).0.contains("switched off by configuration"),
        "{:?}",
        text(&out)
    );
    let out = run("1", &["--offline=0"]);
    assert!(
        !text(&out).0.contains("switched off by configuration"),
        "{:?}",
        text(&out)
    );
    let out = run("maybe", &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("invalid value 'maybe'"),
        "{:?}",
        text(&out)
    );
}
