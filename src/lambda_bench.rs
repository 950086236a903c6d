//! `aos bench --lambda`: what each function binary costs as a Lambda package and at a
//! cold start. Figures, not assertions.
//!
//! For each binary of `functions/` (built with `cargo build --release -p
//! aos-functions`, or taken from `--bin-dir`) it prints the size as built, stripped
//! (the `bootstrap` a package holds) and zipped (deflate, as `cargo lambda build
//! --output-format zip` does), the newest `GLIBC_` symbol version the stripped
//! `bootstrap` needs (Lambda's `provided.al2023` has glibc 2.34), and its cold start.
//!
//! The cold start is measured against a minimal Lambda Runtime API served here on a
//! loopback port: the stripped `bootstrap` is started with `AWS_LAMBDA_RUNTIME_API`
//! pointing at it, and the clock runs from just before the process is spawned to the
//! moment its answer to the first invocation arrives (`init` is the part up to its
//! first `GET /next`). The process then waits for a second event; its peak resident
//! memory (`VmHWM`) is read from `/proc` before it is killed. Each figure is the
//! median of several runs after one unmeasured run. The functions' own debug logs say
//! how long loading the AWS configuration (which builds the SDK's HTTPS client and
//! reads the host's CA certificates) and building the kernel took; both happen before
//! the first `GET /next`, so neither is on the first invocation's path.
//!
//! Each function answers an event that needs no AWS service: the agents an empty SQS
//! batch, the api `GET /health`, the scheduler a firing for an unknown agent (refused
//! as terminal before any AWS call); the sweep's three DynamoDB queries are answered
//! empty by a stub on the same port, so its figure includes its first SDK requests
//! (over plain HTTP: no TLS handshake).

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, mpsc};

/// The function binaries, in the order printed.
pub const FUNCTIONS: [&str; 6] = ["primary", "weather", "finance", "api", "scheduler", "sweep"];

/// The aims of issue 7, printed under the table.
const AIM_COLD_MS: f64 = 20.0;
const AIM_RSS_MIB: f64 = 30.0;
const AIM_ZIP_MB: f64 = 8.0;
/// The newest glibc on `provided.al2023`.
const AL2023_GLIBC: (u32, u32) = (2, 34);

/// A runtime that does not answer within this is reported as failed.
const RUN_LIMIT: Duration = Duration::from_secs(20);

/// One function's figures.
#[derive(Clone, Debug)]
pub struct FunctionFigures {
    pub name: String,
    pub built_bytes: u64,
    pub stripped_bytes: u64,
    pub zip_bytes: u64,
    /// The newest `GLIBC_x.y` the stripped binary's dynamic symbols need.
    pub glibc: Option<String>,
    pub runs: Vec<ColdStart>,
    /// What the first invocation was and how it was answered.
    pub event: &'static str,
}

/// One measured cold start.
#[derive(Clone, Debug)]
pub struct ColdStart {
    /// Spawn to the first `GET /2018-06-01/runtime/invocation/next`.
    pub init: Duration,
    /// Spawn to the answer of the first invocation (response or error).
    pub answered: Duration,
    /// `VmHWM` of the process after answering, in KiB.
    pub peak_rss_kib: u64,
    /// The function's own log: `aos_lambda::load_sdk_config`'s duration.
    pub aws_config: Option<Duration>,
    /// The function's own log: `aos_lambda::build_kernel`'s duration.
    pub build_kernel: Option<Duration>,
    /// The body of the answer, and whether it came through `/error`.
    pub answer: String,
    pub error: bool,
}

/// `aos bench --lambda`: builds the functions unless `bin_dir` is given, measures
/// each and prints a table.
pub fn run(bin_dir: Option<PathBuf>, runs: usize) -> anyhow::Result<()> {
    let runs = runs.max(1);
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => build_release()?,
    };
    let work = std::env::temp_dir().join(format!("aos-lambda-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut all = Vec::new();
    for name in FUNCTIONS {
        let bin = bin_dir.join(name);
        if !bin.is_file() {
            bail!(
                "{} not found: build with `cargo build --release -p aos-functions` or pass \
                 --bin-dir",
                bin.display()
            );
        }
        progress(&format!("{name}: stripping and zipping"));
        let dir = work.join(name);
        std::fs::create_dir_all(&dir)?;
        let (bootstrap, stripped_bytes, zip_bytes) = package(&bin, &dir)?;
        let glibc = newest_glibc(&bootstrap);
        let mut measured = Vec::new();
        for i in 0..=runs {
            progress(&format!(
                "{name}: cold start {}",
                if i == 0 {
                    "(unmeasured warm-up)".to_string()
                } else {
                    format!("{i}/{runs}")
                }
            ));
            let run = rt
                .block_on(cold_start(name, &bootstrap, &dir))
                .with_context(|| format!("{name}: cold start"))?;
            if i > 0 {
                measured.push(run);
            }
        }
        all.push(FunctionFigures {
            name: name.to_string(),
            built_bytes: std::fs::metadata(&bin)?.len(),
            stripped_bytes,
            zip_bytes,
            glibc,
            runs: measured,
            event: event_note(name),
        });
    }
    progress("");
    print_table(&all, runs, &bin_dir);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// One line of progress on stderr, overwritten by the next.
fn progress(line: &str) {
    let mut err = std::io::stderr();
    let _ = write!(err, "\r\x1b[2K{}", if line.is_empty() { "" } else { "  " });
    let _ = write!(err, "{line}");
    let _ = err.flush();
}

/// `cargo build --release -p aos-functions` in this workspace (cargo's own progress
/// shows); returns `target/release`.
fn build_release() -> anyhow::Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("  building the functions: cargo build --release -p aos-functions");
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "aos-functions"])
        .current_dir(workspace)
        .status()
        .with_context(|| format!("running {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!("cargo build --release -p aos-functions failed: {status}");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    Ok(target.join("release"))
}

/// Copies `bin` to `dir/bootstrap`, strips it and zips it as a Lambda package holds
/// it; returns the bootstrap's path, its size and the zip's size.
fn package(bin: &Path, dir: &Path) -> anyhow::Result<(PathBuf, u64, u64)> {
    let bootstrap = dir.join("bootstrap");
    std::fs::copy(bin, &bootstrap)?;
    let status = Command::new("strip")
        .arg(&bootstrap)
        .status()
        .context("running strip (binutils)")?;
    if !status.success() {
        bail!("strip {} failed: {status}", bootstrap.display());
    }
    let zip = dir.join("bootstrap.zip");
    let _ = std::fs::remove_file(&zip);
    // The zip command when installed, else Python's zipfile; both deflate at level 6.
    let zipped = Command::new("zip")
        .args(["-q", "-X", "bootstrap.zip", "bootstrap"])
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !zipped {
        let status = Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile\n\
                 with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n    \
                 z.write(sys.argv[2], 'bootstrap')",
            ])
            .arg(&zip)
            .arg(&bootstrap)
            .status()
            .context("neither zip nor python3 can zip the bootstrap")?;
        if !status.success() {
            bail!("zipping {} failed: {status}", bootstrap.display());
        }
    }
    Ok((
        bootstrap.clone(),
        std::fs::metadata(&bootstrap)?.len(),
        std::fs::metadata(&zip)?.len(),
    ))
}

/// The newest `GLIBC_x.y[.z]` in the binary's dynamic symbol table (`objdump -T`).
fn newest_glibc(bin: &Path) -> Option<String> {
    let out = Command::new("objdump").arg("-T").arg(bin).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let v: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let parts: Vec<u32> = v
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            Some((parts, v))
        })
        .max()
        .map(|(_, v)| v)
}

/// The first event each function gets, and what it does with it.
fn first_event(name: &str) -> Value {
    match name {
        "api" => json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": "/health",
            "rawQueryString": "",
            "headers": {"host": "abc123.execute-api.us-east-1.amazonaws.com"},
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "abc123",
                "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
                "domainPrefix": "abc123",
                "http": {
                    "method": "GET",
                    "path": "/health",
                    "protocol": "HTTP/1.1",
                    "sourceIp": "203.0.113.7",
                    "userAgent": "aos-bench"
                },
                "requestId": "bench",
                "routeKey": "$default",
                "stage": "$default",
                "time": "21/Nov/2026:06:20:00 +0000",
                "timeEpoch": 1_795_242_000_000_u64
            },
            "isBase64Encoded": false
        }),
        "scheduler" => json!({
            "version": "0",
            "id": "bench",
            "detail-type": "Scheduled Task",
            "source": "aos.scheduler",
            "account": "123456789012",
            "time": "2026-11-21T06:00:00Z",
            "region": "us-east-1",
            "resources": ["arn:aws:scheduler:us-east-1:123456789012:schedule/aos/bench"],
            "detail": {"agent": "nobody", "input": "a firing for an agent that does not exist"}
        }),
        "sweep" => json!({}),
        _ => json!({"Records": []}),
    }
}

fn event_note(name: &str) -> &'static str {
    match name {
        "api" => "GET /health (API Gateway HTTP API v2)",
        "scheduler" => "a firing for an unknown agent, refused as terminal before any AWS call",
        "sweep" => "a sweep; its 3 DynamoDB queries answered empty by a local stub",
        _ => "an empty SQS batch",
    }
}

/// What the Runtime API saw, in order.
#[derive(Debug)]
enum Seen {
    Next(Instant),
    Answer {
        at: Instant,
        body: String,
        error: bool,
    },
    InitError(String),
}

#[derive(Clone)]
struct Api {
    seen: mpsc::UnboundedSender<Seen>,
    /// The first `/next` gets the event; later ones wait for `stop`.
    event: Arc<Mutex<Option<String>>>,
    stop: Arc<Notify>,
}

async fn next(State(api): State<Api>) -> Response {
    let now = Instant::now();
    let event = api
        .event
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let Some(event) = event else {
        // The function waits for its second event; the bench kills it instead.
        api.stop.notified().await;
        return StatusCode::GONE.into_response();
    };
    let _ = api.seen.send(Seen::Next(now));
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + 30_000;
    (
        [
            ("lambda-runtime-aws-request-id", "bench-1".to_string()),
            ("lambda-runtime-deadline-ms", deadline.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:bench".to_string(),
            ),
            (
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000;Sampled=0".to_string(),
            ),
            ("content-type", "application/json".to_string()),
        ],
        event,
    )
        .into_response()
}

async fn answered(api: Api, body: Bytes, error: bool) -> StatusCode {
    let _ = api.seen.send(Seen::Answer {
        at: Instant::now(),
        body: String::from_utf8_lossy(&body).into_owned(),
        error,
    });
    StatusCode::ACCEPTED
}

/// A stand-in for DynamoDB at `AWS_ENDPOINT_URL`: every query finds nothing; any other
/// call is refused (the bench's events make none).
async fn dynamodb(headers: HeaderMap) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let json_type = [("content-type", "application/x-amz-json-1.0")];
    if target.ends_with(".Query") {
        (
            json_type,
            r#"{"Count":0,"Items":[],"ScannedCount":0}"#.to_string(),
        )
            .into_response()
    } else {
        (
            StatusCode::BAD_REQUEST,
            json_type,
            format!(
                r#"{{"__type":"com.amazon.coral.validate#ValidationException","message":"the bench's stub answers Query only, not {target}"}}"#
            ),
        )
            .into_response()
    }
}

fn runtime_api(api: Api) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(|State(api): State<Api>, body: Bytes| answered(api, body, false)),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(|State(api): State<Api>, body: Bytes| answered(api, body, true)),
        )
        .route(
            "/2018-06-01/runtime/init/error",
            post(|State(api): State<Api>, body: Bytes| async move {
                let _ = api
                    .seen
                    .send(Seen::InitError(String::from_utf8_lossy(&body).into_owned()));
                StatusCode::ACCEPTED
            }),
        )
        .fallback(post(dynamodb))
        .with_state(api)
}

/// The kilobytes of `VmHWM` in `/proc/<pid>/status`.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// A duration in µs logged as `field` in the function's JSON log lines.
fn logged_micros(log: &str, field: &str) -> Option<Duration> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get(field)?.as_u64())
        .map(Duration::from_micros)
}

/// Starts `bootstrap` against a fresh Runtime API and measures its first invocation.
async fn cold_start(name: &str, bootstrap: &Path, dir: &Path) -> anyhow::Result<ColdStart> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = Arc::new(Notify::new());
    let api = Api {
        seen: tx,
        event: Arc::new(Mutex::new(Some(first_event(name).to_string()))),
        stop: stop.clone(),
    };
    let server = tokio::spawn(async move { axum::serve(listener, runtime_api(api)).await });

    let log_path = dir.join("log.txt");
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new(bootstrap);
    // What Lambda gives a function, and nothing of this shell's (no profile, no HOME).
    cmd.env_clear()
        .current_dir(dir)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDBENCH")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_SESSION_TOKEN", "bench")
        // Info as deployed, plus the two init timings.
        .env("RUST_LOG", "info,aos_lambda::assemble=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if name == "sweep" {
        cmd.env("AWS_ENDPOINT_URL", format!("http://{addr}"));
    }
    let spawned = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bootstrap.display()))?;
    let pid = child.id();

    let mut init = None;
    let outcome = loop {
        let seen = tokio::time::timeout(RUN_LIMIT, rx.recv()).await;
        match seen {
            Ok(Some(Seen::Next(at))) => init = Some(at - spawned),
            Ok(Some(Seen::Answer { at, body, error })) => break Ok((at - spawned, body, error)),
            Ok(Some(Seen::InitError(body))) => break Err(format!("init failed: {body}")),
            Ok(None) => break Err("the Runtime API stopped".into()),
            Err(_) => break Err(format!("no answer within {RUN_LIMIT:?}")),
        }
    };
    let peak = peak_rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    stop.notify_waiters();
    server.abort();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let (answered, answer, error) = match outcome {
        Ok(o) => o,
        Err(why) => bail!("{why}\n--- its log:\n{log}"),
    };
    Ok(ColdStart {
        init: init.unwrap_or(answered),
        answered,
        peak_rss_kib: peak.unwrap_or(0),
        aws_config: logged_micros(&log, "aws_config_us"),
        build_kernel: logged_micros(&log, "build_kernel_us"),
        answer,
        error,
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

fn print_table(all: &[FunctionFigures], runs: usize, bin_dir: &Path) {
    println!(
        "AOS bench --lambda — function binaries from {}, cold start = spawn to the first \
         invocation answered through the Runtime API, median of {runs} runs (after one \
         unmeasured), this host ({} logical CPUs)",
        bin_dir.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<10} {:>9} {:>9} {:>8} {:>6} {:>8} {:>11} {:>15} {:>9} {:>10} {:>8}",
        "function",
        "built",
        "stripped",
        "zip",
        "glibc",
        "init",
        "cold start",
        "(min–max)",
        "peak RSS",
        "AWS config",
        "kernel"
    );
    let mut misses = Vec::new();
    for f in all {
        let cold = median(f.runs.iter().map(|r| r.answered).collect());
        let init = median(f.runs.iter().map(|r| r.init).collect());
        let min = f.runs.iter().map(|r| r.answered).min().unwrap_or_default();
        let max = f.runs.iter().map(|r| r.answered).max().unwrap_or_default();
        let rss = f.runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        let timing = |get: fn(&ColdStart) -> Option<Duration>| {
            let v: Vec<Duration> = f.runs.iter().filter_map(get).collect();
            if v.is_empty() {
                "?".to_string()
            } else {
                format!("{:.2} ms", ms(median(v)))
            }
        };
        println!(
            "{:<10} {:>6.1} MB {:>6.1} MB {:>5.1} MB {:>6} {:>5.1} ms {:>8.1} ms {:>15} {:>5.1} MiB {:>10} {:>8}",
            f.name,
            mb(f.built_bytes),
            mb(f.stripped_bytes),
            mb(f.zip_bytes),
            f.glibc.as_deref().unwrap_or("?"),
            ms(init),
            ms(cold),
            format!("({:.1}–{:.1} ms)", ms(min), ms(max)),
            rss,
            timing(|r| r.aws_config),
            timing(|r| r.build_kernel),
        );
        if ms(cold) > AIM_COLD_MS {
            misses.push(format!("{}: cold start {:.1} ms", f.name, ms(cold)));
        }
        if rss > AIM_RSS_MIB {
            misses.push(format!("{}: peak RSS {rss:.1} MiB", f.name));
        }
        if mb(f.zip_bytes) > AIM_ZIP_MB {
            misses.push(format!("{}: zip {:.1} MB", f.name, mb(f.zip_bytes)));
        }
        let too_new = f.glibc.as_deref().is_none_or(|v| {
            let mut p = v.split('.').map(|x| x.parse::<u32>().unwrap_or(u32::MAX));
            (p.next().unwrap_or(0), p.next().unwrap_or(0)) > AL2023_GLIBC
        });
        if too_new {
            misses.push(format!(
                "{}: needs GLIBC_{} (provided.al2023 has 2.34)",
                f.name,
                f.glibc.as_deref().unwrap_or("?")
            ));
        }
    }
    println!("first invocation of each:");
    for f in all {
        let last = f.runs.last();
        println!(
            "  {:<10} {} → {}{}",
            f.name,
            f.event,
            if last.is_some_and(|r| r.error) {
                "error "
            } else {
                ""
            },
            last.map(|r| shorten(&r.answer, 90)).unwrap_or_default()
        );
    }
    println!(
        "init = spawn to the first GET /next. AWS config = aws_config::load: region and \
         credentials from the environment (as on Lambda) and the SDK's HTTPS client, whose \
         TLS roots it reads from this host's CA certificates. kernel = model keys, SDK \
         clients and kernel. Both from the function's own debug log; both run before the \
         first GET /next, off the first invocation's path. The first AWS request of a wake \
         (connection, TLS handshake) is not in these figures, except the sweep's \
         plain-HTTP queries."
    );
    println!(
        "aim: cold start ≤ {AIM_COLD_MS} ms, peak RSS ≤ {AIM_RSS_MIB} MiB, zip ≤ {AIM_ZIP_MB} MB, \
         glibc ≤ 2.34 — {}",
        if misses.is_empty() {
            "all met".to_string()
        } else {
            format!("missed: {}", misses.join("; "))
        }
    );
}

fn shorten(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn log_timings_are_read_from_json_lines() {
        let log = "not json\n{\"level\":\"DEBUG\",\"aws_config_us\":1234,\"message\":\"x\"}\n";
        assert_eq!(
            logged_micros(log, "aws_config_us"),
            Some(Duration::from_micros(1234))
        );
        assert_eq!(logged_micros(log, "build_kernel_us"), None);
    }

    #[test]
    fn the_median_is_the_middle_run() {
        let d = |ms| Duration::from_millis(ms);
        assert_eq!(median(vec![d(9), d(1), d(5)]), d(5));
        assert_eq!(median(vec![]), Duration::ZERO);
    }
}
