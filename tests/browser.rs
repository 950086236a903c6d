//! The dashboard in a real browser. Headless Chromium (Debian's `chromium` package,
//! installed with apt-get when it is missing) is driven over the DevTools protocol
//! against `aos dev` (offline model with a little latency, so the three-agent demo
//! takes a second or two and can be watched): sign in with the token `aos dev`
//! printed, submit the demo from the page's form, watch the lanes of primary, weather
//! and finance appear live from the event stream until the task succeeds, and save a
//! screenshot of the finished timeline to `target/browser/dashboard.png` (with
//! `AOS_UPDATE_DOCS=1`, also to `docs/dashboard.png`, shown in the README).
//! Then submit a payment to finance, approve its `send_payment` call from the
//! approvals view, and check through the API that the task succeeded and the tool ran
//! exactly once. Every view must fit a 375 px wide phone screen without scrolling
//! sideways, and the page must raise no script error and no Content-Security-Policy
//! violation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

const DEMO: &str = "What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?";
const PAYMENT: &str = "Pay 120 EUR to ACME Ltd for invoice 42";
const SECRET: &str = "browser-test-secret";
/// The desktop window the screenshot is taken in.
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;

/// A child process that is killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Chromium, installed from Debian's archive the first time.
fn chromium() -> PathBuf {
    const NAMES: &[&str] = &["chromium", "chromium-browser"];
    if let Some(p) = on_path(NAMES) {
        return p;
    }
    eprintln!(
        "browser test: chromium is not on PATH; installing Debian's `chromium` with apt-get…"
    );
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    let installed = apt(&["update", "-q"]).and_then(|s| {
        if s.success() {
            apt(&["install", "-y", "-q", "chromium"])
        } else {
            Ok(s)
        }
    });
    match installed {
        Ok(s) if s.success() => eprintln!("browser test: chromium installed"),
        other => panic!(
            "the dashboard's browser test needs Chromium, and `apt-get install -y chromium` \
             failed ({other:?}); install it (Debian/Ubuntu: `apt-get install chromium`, as root) \
             and run the test again"
        ),
    }
    on_path(NAMES).expect("apt-get installed chromium, but no chromium is on PATH")
}

/// Lines of a child's output, read on a thread so a silent child cannot hang the test.
fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody listens any more; keep draining so the child never blocks.
                continue;
            }
        }
    });
    rx
}

/// The first line `pick` finds something in, within `limit`.
fn first<T>(
    rx: &mpsc::Receiver<String>,
    limit: Duration,
    what: &str,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(t) = pick(&line) {
                    return t;
                }
                seen.push(line);
            }
            Err(_) => panic!(
                "no {what} within {limit:?}; output so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// `aos dev` on a fresh store on a free port: its base URL and the admin token it printed.
fn aos_dev(dir: &Path) -> (Killed, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aos"))
        .args([
            "dev",
            "--addr",
            "127.0.0.1:0",
            "--offline",
            "--jwt-secret",
            SECRET,
        ])
        .arg("--db")
        .arg(dir.join("aos.db"))
        // Each offline model call takes a moment, so the demo can be watched live.
        .env("AOS_MODEL_LATENCY_MS", "250")
        .env("RUST_LOG", "warn")
        .env_remove("AOS_MODEL")
        .env_remove("AOS_DEFAULT_MODEL")
        .env_remove("AOS_BACKEND")
        .env_remove("AOS_BEDROCK")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting aos dev");
    let out = lines_of(child.stdout.take().unwrap());
    let child = Killed(child);
    let mut base = None;
    let token = first(
        &out,
        Duration::from_secs(30),
        "AOS_TOKEN= line from aos dev",
        |line| {
            if base.is_none() {
                base = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .map(|w| w.trim_end_matches('/').to_string());
            }
            line.trim().strip_prefix("AOS_TOKEN=").map(str::to_string)
        },
    );
    (
        child,
        base.expect("aos dev prints the address it listens on"),
        token,
    )
}

/// Prepares the store `aos dev` will open with one task whose first envelope finance's
/// queue gave up on (received twice, never settled: a crashing consumer), and returns
/// that task's id.
fn park_a_task(db: &Path) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut config = aos::RuntimeConfig {
            db: db.to_path_buf(),
            max_receives: 2,
            ..aos::RuntimeConfig::default()
        };
        config.tools.offline = true;
        let runtime = aos::Runtime::open(config).unwrap();
        let task = runtime
            .kernel()
            .submit("finance", "What is 99 EUR in GBP?", None)
            .await
            .unwrap();
        let inbox = runtime.inbox();
        for _ in 0..2 {
            assert_eq!(inbox.receive("finance", 10, 0).await.unwrap().len(), 1);
        }
        assert!(inbox.receive("finance", 10, 0).await.unwrap().is_empty());
        assert_eq!(inbox.dead_letters("finance", 10).await.unwrap().len(), 1);
        task.id.to_string()
    })
}

/// Headless Chromium and one page of it, over the DevTools protocol.
struct Browser {
    ws: WebSocket<TcpStream>,
    session: String,
    next: u64,
    /// Script exceptions and console or CSP errors the page reported.
    errors: Vec<String>,
    _child: Killed,
}

impl Browser {
    fn launch(chromium: &Path, profile: &Path) -> Browser {
        let mut child = Command::new(chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--mute-audio",
                "--force-device-scale-factor=1",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--window-size={WIDTH},{HEIGHT}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting chromium");
        let err = lines_of(child.stderr.take().unwrap());
        let child = Killed(child);
        let url = first(
            &err,
            Duration::from_secs(30),
            "`DevTools listening on ws://…` from chromium",
            |l| {
                l.split_once("DevTools listening on ")
                    .map(|(_, u)| u.trim().to_string())
            },
        );
        let host = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let stream = TcpStream::connect(&host).unwrap();
        // A call that gets no answer fails the test instead of hanging it.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("DevTools websocket");
        let mut b = Browser {
            ws,
            session: String::new(),
            next: 0,
            errors: Vec::new(),
            _child: child,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Runtime.enable", json!({}));
        b.call("Log.enable", json!({}));
        b.viewport(WIDTH, HEIGHT, false);
        b
    }

    /// One DevTools command on the page (the browser itself before attaching).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let text = match self.ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(e) => panic!("DevTools connection failed during {method}: {e}"),
            };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("DevTools {method} failed: {e}");
                }
                return v["result"].clone();
            }
            self.note(&v);
        }
    }

    /// Keeps what the page reported that a user would see as breakage.
    fn note(&mut self, event: &Value) {
        let p = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.errors.push(format!(
                "uncaught: {}",
                p["exceptionDetails"]["exception"]["description"]
                    .as_str()
                    .unwrap_or_else(|| p["exceptionDetails"]["text"].as_str().unwrap_or("?"))
            )),
            Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                self.errors.push(format!("console.error: {}", p["args"]))
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => self
                .errors
                .push(format!("{}: {}", p["entry"]["source"], p["entry"]["text"])),
            _ => {}
        }
    }

    fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": if mobile { 2 } else { 1 }, "mobile": mobile}),
        );
    }

    /// Runs `js` in the page and returns its value (promises awaited).
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("script failed in the page: {js}\n{ex}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `js` until it is truthy; fails with what the page shows.
    fn wait_for(&mut self, what: &str, js: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.eval(js);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.eval("document.body.innerText.slice(0, 3000)");
                panic!(
                    "the page did not show {what} within {limit:?} (last: {v}); it shows:\n{}\nerrors: {:?}",
                    text.as_str().unwrap_or(""),
                    self.errors
                );
            }
            std::thread::sleep(Duration::from_millis(40));
        }
    }

    /// Clicks the element `selector` names, as a person would.
    fn click(&mut self, selector: &str) {
        let found = self.eval(&format!(
            "(() => {{ const el = document.querySelector({}); if (!el) return false; el.scrollIntoView({{block: 'center'}}); el.click(); return true; }})()",
            json!(selector)
        ));
        assert_eq!(found, json!(true), "nothing to click at {selector}");
    }

    /// Types `text` into the field `selector` names.
    fn fill(&mut self, selector: &str, text: &str) {
        let found = self.eval(&format!(
            "(() => {{ const el = document.querySelector({}); if (!el) return false; el.focus(); el.value = {}; el.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()",
            json!(selector),
            json!(text)
        ));
        assert_eq!(found, json!(true), "no field at {selector}");
    }

    fn go(&mut self, hash: &str) {
        self.eval(&format!("location.hash = {}; true", json!(hash)));
    }
}

impl Browser {
    /// A PNG of the page as it is, `height` px tall (the whole page when `None`).
    fn screenshot(&mut self, width: u32, height: Option<u64>) -> Vec<u8> {
        let height = match height {
            Some(h) => h,
            None => self
                .eval("Math.ceil(document.documentElement.scrollHeight)")
                .as_u64()
                .unwrap()
                .min(6000),
        };
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}),
        );
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }

    /// With `AOS_DASHBOARD_SHOTS=<dir>`, saves a picture of the page as `<dir>/<name>.png`
    /// (to look at every view while working on the page).
    fn keep(&mut self, name: &str, width: u32) {
        if let Some(dir) = std::env::var_os("AOS_DASHBOARD_SHOTS") {
            let png = self.screenshot(width, None);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
        }
    }
}

/// `(status, headers, body)` of a GET, over a plain socket.
fn http_get(base: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    let host = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn api(base: &str, path: &str, token: &str) -> Value {
    let (status, head, body) = http_get(base, path, Some(token));
    assert_eq!(status, 200, "GET {path}: {body}");
    // aos dev answers JSON with a length, never chunked.
    assert!(!head.contains("transfer-encoding: chunked"), "{head}");
    serde_json::from_str(&body).unwrap()
}

/// What the task view shows, for sampling while the task runs.
const TASK_VIEW: &str = "(() => { const v = document.querySelector('#task-view'); if (!v) return null; \
    return {status: v.dataset.status, events: +v.dataset.events, streamed: +(v.dataset.streamed || 0), \
    lanes: v.dataset.lanes ? v.dataset.lanes.split(',') : [], ended: v.dataset.ended === '1', \
    marks: v.querySelectorAll('.track .mark').length}; })()";

#[test]
fn the_dashboard_runs_the_demo_live_takes_an_approval_and_fits_a_phone() {
    let chromium = chromium();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let parked = park_a_task(&dir.path().join("aos.db"));
    let (_server, base, token) = aos_dev(dir.path());

    // The page and its files come with the token-free, inline-code-free policy.
    let (status, head, html) = http_get(&base, "/", None);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'self'; script-src 'self';"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(html.contains("assets/app.js"));
    let (status, head, _) = http_get(&base, "/assets/app.js", None);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");

    let profile = dir.path().join("chromium");
    let mut b = Browser::launch(&chromium, &profile);
    b.call("Page.navigate", json!({"url": format!("{base}/")}));
    b.wait_for(
        "the sign-in form",
        "document.readyState === 'complete' && !document.querySelector('#login').hidden",
        Duration::from_secs(15),
    );

    // Sign in: the token is kept for this tab, never put in a URL.
    b.fill("#token", &token);
    b.click("#login-submit");
    b.wait_for(
        "the tasks view after signing in",
        "document.body.dataset.view === 'tasks' && document.querySelectorAll('#task-agent option').length >= 3",
        Duration::from_secs(10),
    );
    assert_eq!(
        b.eval(&format!(
            "sessionStorage.getItem('aos.token') === {t} && !location.href.includes({t})",
            t = json!(token)
        )),
        json!(true)
    );
    assert_eq!(
        b.eval("document.querySelector('#task-input').value"),
        json!(DEMO)
    );
    assert_eq!(
        b.eval("document.querySelector('#task-agent').value"),
        json!("primary")
    );

    // Submit the demo and watch it run.
    b.click("#task-submit");
    let id = b.wait_for(
        "the new task's view",
        "location.hash.startsWith('#/tasks/') && document.querySelector('#task-view') && location.hash.slice(8)",
        Duration::from_secs(10),
    );
    let id = id.as_str().unwrap().to_string();
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = loop {
        let s = b.eval(TASK_VIEW);
        samples.push(s.clone());
        if s["ended"] == true {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not finish in the page: {s}"
        );
        std::thread::sleep(Duration::from_millis(30));
    };
    assert_eq!(last["status"], "succeeded", "{last}");
    let lanes: Vec<&str> = last["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    for agent in ["user", "primary", "weather", "finance"] {
        assert!(lanes.contains(&agent), "a lane for {agent}: {lanes:?}");
    }
    // Drawn live: before the task finished, the page already showed its first lanes
    // from the stream, without the specialists' yet.
    let live = samples.iter().find(|s| {
        let lanes = s["lanes"].as_array().map_or(0, Vec::len);
        s["status"] != "succeeded" && s["streamed"].as_u64() > Some(0) && (1..4).contains(&lanes)
    });
    assert!(
        live.is_some(),
        "the page never showed the task part-way: {samples:?}"
    );
    let timeline = api(&base, &format!("/v1/tasks/{id}/events"), &token);
    let events = timeline["events"].as_array().unwrap();
    assert_eq!(
        last["events"],
        json!(events.len()),
        "every event of the timeline is drawn"
    );
    assert!(last["streamed"].as_u64().unwrap() >= events.len() as u64 - 1);
    assert!(last["marks"].as_u64().unwrap() >= 10, "{last}");
    let shown = b.eval("document.querySelector('#task-result').textContent");
    assert!(shown.as_str().unwrap().contains("1356.25 USD"), "{shown}");
    let steps = b.eval("document.querySelector('#steps').innerText");
    for tool in ["get_weather", "convert_currency", "\"city\": \"Tokyo\""] {
        assert!(
            steps.as_str().unwrap().contains(tool),
            "{tool} in the steps: {steps}"
        );
    }
    let flow = b.eval("document.querySelector('#flow').innerText");
    assert!(
        flow.as_str().unwrap().contains("What is 1250 EUR in USD?"),
        "{flow}"
    );

    // The screenshot the README shows: the whole finished task page.
    let height = b.eval("Math.ceil(document.documentElement.scrollHeight)");
    let height = height.as_u64().unwrap().clamp(u64::from(HEIGHT), 4000);
    let png = b.screenshot(WIDTH, Some(height));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((w, u64::from(h)), (WIDTH, height));
    assert!(
        png.len() > 40_000,
        "a real picture, not a blank page: {} bytes",
        png.len()
    );
    // Saved beside the build on every run; `AOS_UPDATE_DOCS=1` refreshes the README's
    // copy in docs/ (so a plain test run leaves the checkout clean).
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("dashboard.png"), &png).unwrap();
    if std::env::var("AOS_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("dashboard.png"), &png).unwrap();
    }

    // A payment: finance asks before send_payment runs; approve it from the page.
    b.go("#/tasks");
    b.wait_for(
        "the task form",
        "!!document.querySelector('#task-form')",
        Duration::from_secs(5),
    );
    b.click("#task-form .chip:nth-of-type(2)");
    assert_eq!(
        b.eval("document.querySelector('#task-agent').value"),
        json!("finance")
    );
    assert_eq!(
        b.eval("document.querySelector('#task-input').value"),
        json!(PAYMENT)
    );
    b.keep("desktop-tasks", WIDTH);
    b.click("#task-submit");
    let paid = b.wait_for(
        "the payment task's view",
        &format!(
            "location.hash.startsWith('#/tasks/') && location.hash.slice(8) !== {} && location.hash.slice(8)",
            json!(id)
        ),
        Duration::from_secs(10),
    );
    let paid = paid.as_str().unwrap().to_string();
    b.wait_for(
        "the approvals badge",
        "document.querySelector('#approvals-badge').textContent === '1'",
        Duration::from_secs(20),
    );
    b.go("#/approvals");
    let card = format!("#approval-list [data-approval^='{paid}.'][data-tool='send_payment']");
    b.wait_for(
        "the pending send_payment",
        &format!("!!document.querySelector({})", json!(card)),
        Duration::from_secs(10),
    );
    b.keep("desktop-approvals-pending", WIDTH);
    let asked = b.eval(&format!(
        "document.querySelector({}).innerText",
        json!(card)
    ));
    assert!(
        asked.as_str().unwrap().contains("ACME Ltd"),
        "the card shows the arguments: {asked}"
    );
    b.fill(&format!("{card} .note"), "invoice 42 checked");
    b.click(&format!("{card} button.approve"));
    b.wait_for(
        "the approval gone from the list",
        &format!("!document.querySelector({})", json!(card)),
        Duration::from_secs(10),
    );
    b.go(&format!("#/tasks/{paid}"));
    b.wait_for(
        "the payment task succeeded",
        "(() => { const v = document.querySelector('#task-view'); return v && v.dataset.ended === '1' && v.dataset.status; })()",
        Duration::from_secs(20),
    );
    let task = api(&base, &format!("/v1/tasks/{paid}"), &token);
    assert_eq!(task["status"], "succeeded", "{task}");
    let result = task["result"].as_str().unwrap();
    assert!(
        result.contains("ACME Ltd") && result.contains("PAY-"),
        "{result}"
    );
    let events = api(&base, &format!("/v1/tasks/{paid}/events"), &token);
    let events = events["events"].as_array().unwrap();
    // A tool with effects is queued, started and answered: one result means one run.
    let ran = events
        .iter()
        .filter(|e| {
            let detail = e["detail"].as_str().unwrap();
            e["kind"] == "tool_call"
                && detail.starts_with("send_payment(")
                && detail.contains(") → ")
        })
        .count();
    assert_eq!(ran, 1, "send_payment ran exactly once: {events:?}");
    assert_eq!(task["usage"]["tool_calls"], 1, "{task}");
    let decided: Vec<Value> = events
        .iter()
        .filter(|e| e["kind"] == "approval_decided")
        .map(|e| serde_json::from_str(e["detail"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(decided.len(), 1, "{events:?}");
    assert_eq!(decided[0]["approved"], true);
    assert_eq!(decided[0]["note"], "invoice 42 checked");
    let pending = api(&base, "/v1/approvals", &token);
    assert_eq!(pending["approvals"], json!([]));
    let page = b.eval("document.querySelector('#task-result').textContent");
    assert!(page.as_str().unwrap().contains("PAY-"), "{page}");

    // A phone: every view fits 375 px without scrolling sideways.
    let views = [
        ("tasks", "#/tasks".to_string(), "#task-list .task-row"),
        (
            "task",
            format!("#/tasks/{id}"),
            "#task-view[data-ended='1'] .lane[data-agent='finance']",
        ),
        (
            "payment",
            format!("#/tasks/{paid}"),
            "#task-view[data-ended='1'] .lane",
        ),
        (
            "agents",
            "#/agents".to_string(),
            "#agent-list [data-agent='finance'] .dead-letters a",
        ),
        ("approvals", "#/approvals".to_string(), "#approval-list > *"),
        (
            "dead-letters",
            "#/dead-letters".to_string(),
            "#dead-letter-list [data-agent='finance'][data-count='1'] .letter",
        ),
    ];
    let show = |b: &mut Browser, hash: &str, ready: &str, on: &str| {
        b.go(hash);
        b.wait_for(
            &format!("{hash} on {on}"),
            &format!("!!document.querySelector({})", json!(ready)),
            Duration::from_secs(10),
        );
    };
    if std::env::var_os("AOS_DASHBOARD_SHOTS").is_some() {
        for (name, hash, ready) in &views {
            show(&mut b, hash, ready, "a desktop");
            b.keep(&format!("desktop-{name}"), WIDTH);
        }
    }
    b.viewport(375, 800, true);
    for (name, hash, ready) in &views {
        show(&mut b, hash, ready, "a phone");
        b.keep(&format!("phone-{name}"), 375);
        let width = b.eval("document.documentElement.scrollWidth");
        assert!(
            width.as_u64().unwrap() <= 375,
            "{hash} is {width} px wide on a 375 px screen"
        );
    }

    // The parked task's dead letter: counted on finance, listed with its task, and
    // redriven from the page, after which the task runs to the end.
    show(
        &mut b,
        "#/agents",
        "#agent-list [data-agent='finance'] .dead-letters a",
        "a phone",
    );
    let count = b.eval(
        "document.querySelector(\"#agent-list [data-agent='finance'] .dead-letters\").textContent",
    );
    assert_eq!(count, json!("1"));
    let task = api(&base, &format!("/v1/tasks/{parked}"), &token);
    assert_eq!(
        task["status"], "queued",
        "nothing runs a dead-lettered envelope: {task}"
    );
    show(
        &mut b,
        "#/dead-letters",
        "#dead-letter-list [data-agent='finance'] .letter",
        "a phone",
    );
    let letter = b.eval(
        "document.querySelector(\"#dead-letter-list [data-agent='finance'] .letter\").innerText",
    );
    assert!(letter.as_str().unwrap().contains(&parked), "{letter}");
    b.click("#dead-letter-list [data-agent='finance'] .letter button");
    b.wait_for(
        "the dead letter gone after its redrive",
        "document.querySelector(\"#dead-letter-list [data-agent='finance']\")?.dataset.count === '0'",
        Duration::from_secs(10),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while api(&base, &format!("/v1/tasks/{parked}"), &token)["status"] != "succeeded" {
        assert!(
            Instant::now() < deadline,
            "the redriven task did not succeed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    b.click("#sign-out");
    b.wait_for(
        "the sign-in form again",
        "!document.querySelector('#login').hidden",
        Duration::from_secs(5),
    );
    assert_eq!(b.eval("sessionStorage.getItem('aos.token')"), Value::Null);
    assert!(
        b.eval("document.documentElement.scrollWidth")
            .as_u64()
            .unwrap()
            <= 375
    );

    // Nothing broke on the way, and the policy blocked nothing the page needs.
    b.eval("0");
    assert!(
        b.errors.is_empty(),
        "the page reported errors: {:#?}",
        b.errors
    );
    eprintln!(
        "browser test: done in {:.1} s (after chromium was found)",
        started.elapsed().as_secs_f64()
    );
}
