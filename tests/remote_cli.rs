//! The CLI against any AOS, as a person drives it: `aos login` to a running
//! `aos dev` (token from stdin, saved privately), then `aos submit --wait`, `aos tasks`,
//! `aos task <id> --follow` printing events while the task runs, `aos cancel`,
//! `aos schedule create/list/delete`, `aos approvals`, `aos dlq`; a wrong, missing or
//! too narrow token gives a readable refusal and no task data; and the same commands
//! with no API configured work on the local store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEMO: &str = "What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?";

/// A user's shell: a home, a config directory and a working directory of its own,
/// with nothing from the developer's environment that would redirect `aos`.
struct Shell {
    dir: tempfile::TempDir,
}

impl Shell {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["home", "config", "work"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Self { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn config_file(&self) -> PathBuf {
        self.path("config/aos/config.toml")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_aos"));
        c.args(args)
            .current_dir(self.path("work"))
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("AOS_OFFLINE", "1")
            .env_remove("AOS_API_URL")
            .env_remove("AOS_TOKEN")
            .env_remove("AOS_DB")
            .env_remove("AOS_JWT_SECRET")
            .env_remove("AOS_MODEL")
            .env_remove("AOS_DEFAULT_MODEL")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE");
        c
    }

    /// Runs `aos args` to the end: (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd(args).stdin(Stdio::null()).output().unwrap();
        texts(out)
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> (i32, String, String) {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        texts(child.wait_with_output().unwrap())
    }
}

fn texts(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `aos dev` on its own store, with a slow offline model so a follow sees the task
/// run; its URL and the admin token it prints.
struct Dev {
    child: Child,
    url: String,
    token: String,
    db: PathBuf,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev(shell: &Shell) -> Dev {
    let db = shell.path("dev/aos.db");
    let mut child = shell
        .cmd(&["dev", "--addr", "127.0.0.1:0", "--model-latency-ms", "150"])
        .arg("--db")
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut token) = (None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if url.is_none() {
            url = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .map(str::to_string);
        }
        if let Some(t) = line.trim().strip_prefix("AOS_TOKEN=") {
            token = Some(t.to_string());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Dev {
        child,
        url: url.expect("aos dev prints its address"),
        token: token.expect("aos dev prints a token"),
        db,
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// Runs `aos task <id> --follow` and records when each stdout line arrived.
fn follow_timed(shell: &Shell, id: &str) -> (i32, Vec<(Instant, String)>, String) {
    let mut child = shell
        .cmd(&["task", id, "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s).unwrap();
        s
    });
    let lines: Vec<(Instant, String)> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| (Instant::now(), l.unwrap()))
        .collect();
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (code, lines, err.join().unwrap())
}

fn assert_demo_answer(stdout: &str) {
    assert!(stdout.contains("Answer (succeeded):"), "{stdout}");
    assert!(stdout.contains("- weather: Paris, France:"), "{stdout}");
    assert!(
        stdout.contains("- finance: 1250.00 EUR = 1356.25 USD"),
        "{stdout}"
    );
}

#[test]
fn the_cli_drives_a_running_aos_dev_through_its_api() {
    let shell = Shell::new();
    let dev = start_dev(&shell);

    // Log in with the token on stdin, as `aos dev` printed it.
    let (code, out, err) =
        shell.run_with_stdin(&["login", &dev.url], &format!("AOS_TOKEN={}\n", dev.token));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("Logged in to {}", dev.url)), "{out}");
    assert!(!out.contains(&dev.token) && !err.contains(&dev.token));
    let saved = std::fs::read_to_string(shell.config_file()).unwrap();
    assert!(saved.contains(&dev.url) && saved.contains(&dev.token));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(shell.config_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the login is private");
    }

    // Submit and wait: the id, the live events, the answer; exit 0.
    let (code, out, err) = shell.run(&["submit", "--wait", DEMO]);
    assert_eq!(code, 0, "{out}\n{err}");
    let first = first_line(&out);
    assert_eq!(first.len(), 26, "the task id comes first: {out}");
    assert!(
        err.contains(&format!("on the AOS API at {}", dev.url)),
        "{err}"
    );
    assert!(out.contains("weather   ● message from primary"), "{out}");
    assert_demo_answer(&out);

    // Listed.
    let (code, out, err) = shell.run(&["tasks"]);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&first))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("succeeded") && row.contains("primary"),
        "{row}"
    );
    assert!(row.contains("What's the weather in Paris"), "{row}");
    let (_, out, _) = shell.run(&["tasks", "--status", "failed"]);
    assert!(out.contains("no failed tasks"), "{out}");

    // Follow a second task from its start: events arrive while it runs, then the
    // answer and the timeline.
    let (code, out, err) = shell.run(&["submit", DEMO]);
    assert_eq!(code, 0, "{err}");
    let second = first_line(&out);
    assert!(
        err.contains(&format!("aos task {second} --follow")),
        "{err}"
    );
    let (code, lines, err) = follow_timed(&shell, &second);
    let all: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    assert_eq!(code, 0, "{all}\n{err}");
    assert!(err.contains(&format!("Following task {second}")), "{err}");
    assert_demo_answer(&all);
    let at = |needle: &str| {
        lines
            .iter()
            .find(|(_, l)| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{all}"))
            .0
    };
    let submitted = at("user      ⇢ to primary");
    let answered = at("Answer (succeeded):");
    assert!(
        answered.duration_since(submitted) >= Duration::from_millis(300),
        "events were printed as they happened, not all at the end:\n{all}"
    );
    assert!(all.contains("finance   ⚙ convert_currency"), "{all}");

    // Cancel a third task while it runs; a finished one cannot be.
    let (_, out, _) = shell.run(&["submit", DEMO]);
    let third = first_line(&out);
    let (code, out, err) = shell.run(&["cancel", &third, "--reason", "changed my mind"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("Cancelled task {third}: changed my mind")),
        "{out}"
    );
    let (code, out, _) = shell.run(&["task", &third]);
    assert_eq!(code, 1, "a cancelled task is not a success: {out}");
    assert!(
        out.contains("Task cancelled: cancelled: changed my mind"),
        "{out}"
    );
    let (code, _, err) = shell.run(&["cancel", &first]);
    assert_eq!(code, 1);
    assert!(err.contains("is already succeeded"), "{err}");
    let (code, _, err) = shell.run(&["task", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert_eq!(code, 1);
    assert!(err.contains("no task 01ARZ3NDEKTSV4RRFFQ69G5FAV"), "{err}");

    // Schedules.
    let (code, out, err) = shell.run(&[
        "schedule",
        "create",
        "--agent",
        "finance",
        "--when",
        "rate(5 minutes)",
        "What is 1 EUR in USD?",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let schedule = first_line(&out);
    assert!(
        err.contains("a task for finance rate(5 minutes); next firing"),
        "{err}"
    );
    let (_, out, _) = shell.run(&["schedule", "list"]);
    assert!(out.contains("1 schedule(s)"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&schedule))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("rate(5 minutes)") && row.contains("finance"),
        "{row}"
    );
    let (code, _, err) = shell.run(&["schedule", "create", "--when", "every tuesday", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("aos: "), "a readable error: {err}");
    let (code, out, _) = shell.run(&["schedule", "delete", &schedule]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("Deleted schedule {schedule}")),
        "{out}"
    );
    let (_, out, _) = shell.run(&["schedule", "list"]);
    assert!(out.contains("0 schedule(s)"), "{out}");
    let (code, _, err) = shell.run(&["schedule", "delete", &schedule]);
    assert_eq!(code, 1);
    assert!(err.contains("no schedule"), "{err}");

    // Approvals and dead letters (none here).
    let (code, out, _) = shell.run(&["approvals"]);
    assert_eq!(code, 0);
    assert!(out.contains("0 approval(s) pending"), "{out}");
    let (code, out, err) = shell.run(&["dlq", "finance", "--redrive"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 dead letter(s) for finance"), "{out}");
    assert!(
        out.contains("Redrove 0 dead letter(s) to finance's queue"),
        "{out}"
    );

    // A wrong token: refused, with what to do, and no task data.
    let (code, out, err) = shell.run(&["tasks", "--token", "not-a-token"]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "no task data: {out}");
    assert!(err.contains("refused the token"), "{err}");
    assert!(err.contains(&format!("aos login {}", dev.url)), "{err}");
    assert!(!err.contains(&first), "{err}");
    let (code, _, err) = shell.run_with_stdin(&["login", &dev.url], "wrong\n");
    assert_eq!(code, 1, "a login is checked before it is saved");
    assert!(err.contains("refused the token"), "{err}");
    assert!(
        std::fs::read_to_string(shell.config_file())
            .unwrap()
            .contains(&dev.token),
        "the working login is kept"
    );
    // No token at all (another user, no login).
    let other = Shell::new();
    let (code, out, err) = other.run(&["tasks", "--api", &dev.url]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("needs a token"), "{err}");
    // A token without the scope: 403, and how to get one.
    let reader = Command::new(env!("CARGO_BIN_EXE_aos"))
        .args(["token", "--scope", "read", "--db"])
        .arg(&dev.db)
        .env_remove("AOS_JWT_SECRET")
        .output()
        .unwrap();
    let reader = String::from_utf8(reader.stdout).unwrap().trim().to_string();
    let (code, out, _) = other.run(&["tasks", "--api", &dev.url, "--token", &reader]);
    assert_eq!(code, 0, "a read token lists");
    assert!(out.contains(&first), "{out}");
    let (code, _, err) = other.run(&["submit", "x", "--api", &dev.url, "--token", &reader]);
    assert_eq!(code, 1);
    assert!(err.contains("needs a token with more scope"), "{err}");
    assert!(!err.contains(&reader), "the token is never printed: {err}");

    // Logged out, the same commands work on the local store again.
    let (code, out, _) = shell.run(&["logout"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("Logged out of {}", dev.url)), "{out}");
    assert!(!shell.config_file().exists());
    let (code, out, _) = shell.run(&["tasks"]);
    assert_eq!(code, 0);
    assert!(out.contains("no tasks"), "a fresh local store: {out}");
    // And AOS_API_URL with AOS_TOKEN reaches the API without a login.
    let (code, out, _) = shell.run(&[
        "tasks",
        "--api",
        &format!("{}/v1/", dev.url),
        "--token",
        &dev.token,
        "--limit",
        "1",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("next cursor: "), "{out}");
}

#[test]
fn the_same_commands_work_on_the_local_store() {
    let shell = Shell::new();
    let store = |p: &Path| p.join(".aos/aos.db");
    let (code, out, err) = shell.run(&["submit", "--wait", DEMO]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("on the local store .aos/aos.db"), "{err}");
    assert_demo_answer(&out);
    let first = first_line(&out);
    assert!(store(&shell.path("work")).exists());

    let (_, out, _) = shell.run(&["tasks"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&first) && l.contains("succeeded")),
        "{out}"
    );

    // Submitted without --wait, the task waits in the store; a follow runs it.
    let (code, out, err) = shell.run(&["submit", "--agent", "finance", "What is 3 EUR in USD?"]);
    assert_eq!(code, 0, "{err}");
    let second = first_line(&out);
    assert!(
        err.contains("It runs when `aos dev` runs on this store"),
        "{err}"
    );
    let (_, out, _) = shell.run(&["tasks", "--status", "queued"]);
    assert!(out.contains(&second), "{out}");
    let (code, out, err) = shell.run(&["task", &second, "--follow"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("finance   ⚙ convert_currency"), "{out}");
    assert!(out.contains("3.00 EUR = 3.26 USD"), "{out}");
    assert!(out.contains("Answer (succeeded):"), "{out}");

    // Cancel a queued task.
    let (_, out, _) = shell.run(&["submit", "What is 4 EUR in USD?"]);
    let third = first_line(&out);
    let (code, out, err) = shell.run(&["cancel", &third]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("Cancelled task {third}")), "{out}");
    let (code, _, _) = shell.run(&["task", &third]);
    assert_eq!(code, 1);

    // Schedules, approvals, dead letters.
    let (code, out, err) = shell.run(&[
        "schedule",
        "create",
        "--agent",
        "finance",
        "--kind",
        "wakeup",
        "--when",
        "cron(0 9 ? * MON-FRI *)",
        "Check the invoices",
    ]);
    assert_eq!(code, 0, "{err}");
    let schedule = first_line(&out);
    let (_, out, _) = shell.run(&["schedule", "list"]);
    assert!(out.contains(&schedule) && out.contains("wakeup"), "{out}");
    let (code, _, _) = shell.run(&["schedule", "delete", &schedule]);
    assert_eq!(code, 0);
    let (_, out, _) = shell.run(&["approvals"]);
    assert!(
        out.contains("0 approval(s) pending for tenant default"),
        "{out}"
    );
    let (code, out, _) = shell.run(&["dlq", "finance"]);
    assert_eq!(code, 0);
    assert!(out.contains("0 dead letter(s) for finance"), "{out}");
    let (code, _, err) = shell.run(&["dlq", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown agent 'nobody'"), "{err}");
}

/// A stand-in API whose event stream closes after two events (as API Gateway ends a
/// response at its time limit) and, on the reconnect, repeats the second event
/// before the third and `end`.
mod flaky_stream {
    use aos_kernel::model::{Budget, Usage};
    use aos_kernel::{AgentName, EnvelopeId, Event, EventId, EventKind, Task, TaskId, TaskStatus};
    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    #[derive(Clone)]
    pub struct Fake {
        pub task: Task,
        pub events: Vec<Event>,
        /// The Last-Event-ID of each stream request.
        pub resumed_after: Arc<Mutex<Vec<Option<String>>>>,
        reads: Arc<AtomicUsize>,
    }

    impl Fake {
        pub fn new() -> Self {
            let now = 1_700_000_000_000;
            let id = TaskId::new(now);
            let task = Task {
                id,
                tenant: "default".into(),
                status: TaskStatus::Running,
                agent: AgentName::new("primary").unwrap(),
                input: "What is 6 * 7?".into(),
                result: None,
                error: None,
                usage: Usage::default(),
                budget: Budget::default(),
                trace_id: "trace".into(),
                created_at: now,
                updated_at: now,
                first_envelope: EnvelopeId::new(now),
            };
            let event = |n: u64, kind, detail: &str| Event {
                id: EventId::new(now + n),
                task: id,
                at: now + n * 100,
                agent: "primary".into(),
                kind,
                detail: detail.into(),
                envelope: None,
            };
            let events = vec![
                event(0, EventKind::Submitted, "to primary: What is 6 * 7?"),
                event(1, EventKind::Woke, "first wake of the stand-in"),
                event(2, EventKind::Answer, "the stand-in's answer is 42"),
            ];
            Self {
                task,
                events,
                resumed_after: Arc::default(),
                reads: Arc::default(),
            }
        }

        pub fn router(self) -> Router {
            Router::new()
                .route("/v1/tasks/{id}", get(task))
                .route("/v1/tasks/{id}/events", get(events))
                .route("/v1/tasks/{id}/events/stream", get(stream))
                .with_state(self)
        }
    }

    fn authorized(h: &HeaderMap) -> bool {
        h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some("Bearer fake-token")
    }

    fn refused() -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/problem+json")],
            r#"{"type":"urn:aos:problem:unauthorized","title":"Authentication required","status":401,"detail":"the token is not valid"}"#,
        )
            .into_response()
    }

    async fn task(State(f): State<Fake>, h: HeaderMap) -> Response {
        if !authorized(&h) {
            return refused();
        }
        let mut t = f.task.clone();
        // Running when the follow starts; finished when it reads the task again.
        if f.reads.fetch_add(1, Ordering::SeqCst) > 0 {
            t.status = TaskStatus::Succeeded;
            t.result = Some("42, from the stand-in".into());
        }
        axum::Json(t).into_response()
    }

    async fn events(State(f): State<Fake>, h: HeaderMap) -> Response {
        if !authorized(&h) {
            return refused();
        }
        axum::Json(serde_json::json!({"task": f.task.id, "events": f.events})).into_response()
    }

    fn sse(e: &Event) -> String {
        format!(
            "id: {}\nevent: event\ndata: {}\n\n",
            e.id,
            serde_json::to_string(e).unwrap()
        )
    }

    async fn stream(State(f): State<Fake>, h: HeaderMap) -> Response {
        if !authorized(&h) {
            return refused();
        }
        let last = h
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let first = last.is_none();
        f.resumed_after.lock().unwrap().push(last);
        let body = if first {
            format!(": keep-alive\n\n{}{}", sse(&f.events[0]), sse(&f.events[1]))
        } else {
            format!(
                "{}{}event: end\ndata: {{\"task\":\"{}\",\"status\":\"succeeded\"}}\n\n",
                sse(&f.events[1]),
                sse(&f.events[2]),
                f.task.id
            )
        };
        ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_resumes_after_the_last_event_when_the_stream_closes_early() {
    let fake = flaky_stream::Fake::new();
    let (task, events, resumed) = (
        fake.task.id,
        fake.events.clone(),
        fake.resumed_after.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, fake.router()).await });

    let shell = Shell::new();
    let (code, out, err) = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            shell.run(&[
                "task",
                &task.to_string(),
                "--follow",
                "--api",
                &url,
                "--token",
                "fake-token",
            ])
        })
        .await
        .unwrap()
    };
    assert_eq!(code, 0, "{out}\n{err}");
    // Each event once, in order, then the report.
    let shown: Vec<&str> = out.lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(shown.len(), 3, "{out}");
    assert!(shown[0].contains("⇢ to primary: What is 6 * 7?"), "{out}");
    assert!(shown[1].contains("● first wake of the stand-in"), "{out}");
    assert!(shown[2].contains("✔ the stand-in's answer is 42"), "{out}");
    assert!(
        out.contains("Answer (succeeded):\n  42, from the stand-in"),
        "{out}"
    );
    assert_eq!(
        *resumed.lock().unwrap(),
        vec![None, Some(events[1].id.to_string())],
        "reconnected once, after the last event it saw"
    );

    // A token the API refuses: a readable error, exit 1, nothing followed.
    let shell = Shell::new();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        shell.run(&[
            "task",
            &task.to_string(),
            "--follow",
            "--api",
            &url,
            "--token",
            "stale",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("refused the token (the token is not valid)"),
        "{err}"
    );
}
