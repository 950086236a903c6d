//! `aos run` against a real provider's wire format: a scripted OpenAI-compatible server
//! (tests/scripted_openai.py) runs as a separate process, the three-agent demo runs end
//! to end through the `openai` provider with the agents' real tools, and then
//! `aos replay --task` re-runs it from the journal with the server stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEMO: &str = "What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?";
const KEY: &str = "sk-test-0123456789-secret";

struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let port_file = dir.join("port");
        let log = dir.join("requests.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripted_openai.py");
        let child = Command::new("python3")
            .arg(script)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::piped())
            .spawn()
            .expect("python3 runs the scripted server");
        let until = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().parse().unwrap();
            }
            assert!(Instant::now() < until, "scripted server did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Server { child, port, log }
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn stop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn aos(dir: &Path, port: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_aos"))
        .args(args)
        .current_dir(dir)
        .env("AOS_OFFLINE", "true")
        .env("OPENAI_BASE_URL", format!("http://127.0.0.1:{port}/v1"))
        .env("OPENAI_API_KEY", KEY)
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("AOS_MODEL")
        .env_remove("AOS_DEFAULT_MODEL")
        .env_remove("AOS_DB")
        .output()
        .expect("aos runs");
    let _ = std::io::stderr().flush();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_demo_runs_through_a_real_provider_wire_format_and_replays_with_the_server_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let (ok, stdout, stderr) = aos(dir.path(), server.port, &["run", DEMO]);
    assert!(ok, "{stdout}\n{stderr}");
    // It says which model answers, and why.
    assert!(
        stderr.contains("model: openai:gpt-4o-mini (OPENAI_API_KEY or OPENAI_BASE_URL is set)"),
        "{stderr}"
    );
    assert!(stdout.contains("Answer (succeeded):"), "{stdout}");
    assert!(!stdout.contains("[offline model]"), "{stdout}");
    // The answer is built from the real tools' results, sent back to the model.
    assert!(stdout.contains("- weather: Paris, France:"), "{stdout}");
    assert!(stdout.contains("Tokyo, Japan:"), "{stdout}");
    assert!(
        stdout.contains("- finance: 1250.00 EUR = 1356.25 USD"),
        "{stdout}"
    );
    // The timeline shows the real tool calls and the model that answered each step.
    assert!(
        stdout.contains(r#"get_weather({"city":"Paris"})"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"get_weather({"city":"Tokyo"})"#),
        "{stdout}"
    );
    assert!(stdout.contains("convert_currency("), "{stdout}");
    assert!(stdout.contains("openai:gpt-4o-mini →"), "{stdout}");
    // Six steps (two per agent), six requests, each with the session as the prompt
    // cache key and the key as a bearer token.
    let requests = server.requests();
    assert_eq!(requests.len(), 6, "{requests:#?}");
    for r in &requests {
        assert_eq!(r["auth"], format!("Bearer {KEY}"));
        assert_eq!(r["body"]["model"], "gpt-4o-mini");
        assert!(r["body"]["prompt_cache_key"].as_str().is_some(), "{r}");
    }
    // Usage is what the server billed: 6 × (120 prompt + 30 completion) tokens.
    // Priced from functions/prices.toml: per call 56 uncached × $0.15 + 30 out × $0.60
    // + 64 cached × $0.075 per million = 31.2 µ$, rounded up to 32; 6 calls = $0.000192.
    assert!(
        stdout.contains("6 model calls, 3 tool calls, 900 tokens, $0.000192"),
        "{stdout}"
    );
    // No secret in anything printed.
    assert!(!stdout.contains(KEY) && !stderr.contains(KEY));

    let task = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Timeline of task "))
        .and_then(|l| l.split_whitespace().next())
        .expect("the timeline names the task")
        .to_string();
    server.stop();
    let (ok, replay_out, replay_err) = aos(dir.path(), server.port, &["replay", "--task", &task]);
    assert!(ok, "{replay_out}\n{replay_err}");
    assert!(replay_out.contains("No differences"), "{replay_out}");
    // No tool result was journaled: offline, get_weather answers from bundled samples
    // and convert_currency computes, both pure, so the replay runs them again.
    assert!(
        replay_out.contains(
            "6 model steps and 0 tool results replayed from the journal; 0 steps and 0 tool calls were not in it"
        ),
        "{replay_out}"
    );
    assert_eq!(
        server.requests().len(),
        6,
        "the replay made no model request"
    );
}
