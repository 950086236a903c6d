//! `aos run` as a person runs it: the binary, a fresh store, the demo request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn aos(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aos"))
        .args(args)
        .current_dir(dir)
        .env("AOS_OFFLINE", "true")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("AOS_MODEL")
        .env_remove("AOS_DEFAULT_MODEL")
        .env_remove("AOS_DB")
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
