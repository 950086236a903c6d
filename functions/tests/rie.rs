//! The compiled agent functions (`primary`, `weather`, `finance`) run under AWS's own
//! Lambda Runtime Interface Emulator (`aws-lambda-rie`, from the aws-sam-cli wheel; no
//! Docker), against moto, and finish the three-agent demo end to end.
//!
//! This test plays Lambda's SQS event source mapping: it receives up to 10 messages
//! from an agent's queue with every system attribute, builds the SQS event Lambda
//! would, invokes that agent's function through the emulator's invoke API (one
//! invocation at a time per emulator, which crashes on concurrent ones), reads the
//! partial batch response and deletes what succeeded. So the binaries run exactly as
//! deployed: the Runtime API, their configuration from the environment, their own SDK
//! clients, the deadline the emulator sets.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_aws::aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use aos_aws::emulator::{Moto, default_sam_venv, lambda_rie};
use aos_aws::{AwsSettings, QueueSettings, emulator_sdk_config, provision};
use aos_kernel::TaskStatus;
use aos_kernel::ports::Inbox;
use aos_kernel::tools::ToolRegistry;
use aos_lambda::Config;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEMO: &str = "What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?";

/// Each agent and its function binary.
const FUNCTIONS: [(&str, &str); 3] = [
    ("primary", env!("CARGO_BIN_EXE_primary")),
    ("weather", env!("CARGO_BIN_EXE_weather")),
    ("finance", env!("CARGO_BIN_EXE_finance")),
];

/// The whole demo; it takes a few seconds.
const TIME_LIMIT: Duration = Duration::from_secs(120);

/// A free loopback port (free when asked; nothing else here binds ports meanwhile).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One emulator running one function, in its own process group, stopped on drop
/// (the emulator SIGKILLs the function's process when it is terminated; the group
/// is killed after it in case it did not).
struct Rie {
    agent: &'static str,
    child: Child,
    invoke_url: String,
    log: PathBuf,
}

impl Rie {
    fn start(
        rie: &Path,
        agent: &'static str,
        bin: &str,
        env: &[(String, String)],
        dir: &Path,
    ) -> Rie {
        let (invoke, api) = (free_port(), free_port());
        let log = dir.join(format!("{agent}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(rie);
        cmd.arg("--runtime-interface-emulator-address")
            .arg(format!("127.0.0.1:{invoke}"))
            .arg("--runtime-api-address")
            .arg(format!("127.0.0.1:{api}"))
            .arg(bin)
            // Only what the function is given on Lambda (plus PATH): no profile, no
            // proxy, no credentials of the person running the test.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_FUNCTION_NAME", agent)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", rie.display()));
        let mut rie = Rie {
            agent,
            child,
            invoke_url: format!(
                "http://127.0.0.1:{invoke}/2015-03-31/functions/function/invocations"
            ),
            log,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", invoke)).is_err() {
            if let Ok(Some(status)) = rie.child.try_wait() {
                panic!(
                    "{agent}: the emulator exited with {status}:\n{}",
                    rie.log_tail()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{agent}: the emulator is not listening after 10 s:\n{}",
                rie.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        rie
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Invokes the function with `event` and returns its result. A function error
    /// comes back from the emulator as HTTP 200 with the error as the body, and a
    /// timeout as text: both fail the test with the function's log.
    async fn invoke(&self, http: &reqwest::Client, event: &str) -> Value {
        let response = http
            .post(&self.invoke_url)
            .body(event.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: invoke: {e}\n{}", self.agent, self.log_tail()));
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(
            status.is_success(),
            "{}: invoke returned {status}: {body}\n{}",
            self.agent,
            self.log_tail()
        );
        let value: Value = serde_json::from_str(&body).unwrap_or_else(|_| {
            panic!(
                "{}: the function answered {body:?}, not JSON\n{}",
                self.agent,
                self.log_tail()
            )
        });
        assert!(
            value.get("errorType").is_none(),
            "{}: the function failed: {body}\n{}",
            self.agent,
            self.log_tail()
        );
        value
    }
}

impl Drop for Rie {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let stopped = Instant::now();
        while stopped.elapsed() < Duration::from_secs(3) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// The `durationMs` of every `INIT REPORT(durationMs: N)` the emulator logged: the
/// time from starting the function's process to its first request for an event.
fn init_reports(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.split("INIT REPORT(durationMs: ").nth(1))
        .filter_map(|rest| rest.split(')').next()?.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_through_the_function_binaries_under_the_lambda_emulator() {
    let rie = lambda_rie(&default_sam_venv()).unwrap_or_else(|e| {
        panic!(
            "this test runs the functions under AWS's Lambda Runtime Interface Emulator, \
             which comes with aws-sam-cli from PyPI (installed once into target/sam-venv, \
             or AOS_SAM_VENV; CI installs it): {e}"
        )
    });
    let endpoint = Moto::shared_endpoint().unwrap_or_else(|e| panic!("{e}"));

    // Fresh resource names, so runs on one emulator never meet.
    let id = ulid::Ulid::new().to_string().to_lowercase();
    let settings = AwsSettings {
        table: format!("aos-{id}"),
        bucket: format!("aos-{id}"),
        schedule_group: format!("aos-{id}"),
        queues: QueueSettings {
            prefix: format!("r{}-", &id[20..]),
            ..QueueSettings::default()
        },
        ..AwsSettings::default()
    };
    // What the template sets, pointed at moto; the emulator passes it on.
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "aos-emulator"),
        ("AWS_SECRET_ACCESS_KEY", "aos-emulator"),
        ("AWS_SESSION_TOKEN", "aos-emulator"),
        ("AWS_LAMBDA_FUNCTION_TIMEOUT", "60"),
        ("AOS_TABLE", &settings.table),
        ("AOS_BUCKET", &settings.bucket),
        ("AOS_SCHEDULE_GROUP", &settings.schedule_group),
        ("AOS_QUEUE_PREFIX", &settings.queues.prefix),
        ("AOS_MAX_RECEIVES", "5"),
        ("AOS_DEADLINE_MARGIN_MS", "5000"),
        ("AOS_OFFLINE", "1"),
        ("RUST_LOG", "info"),
        // What the template's LoggingConfig (LogFormat: JSON) makes Lambda set.
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    // The submitting side (what the api function does), on the same resources.
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let config = Config::from_lookup(|k| vars.get(k).cloned(), settings).unwrap();
    let sdk = emulator_sdk_config(endpoint).await;
    let built = aos_lambda::build_kernel(&config, &sdk, ToolRegistry::new())
        .await
        .unwrap();
    let agents: Vec<&str> = FUNCTIONS.iter().map(|(a, _)| *a).collect();
    provision(&built.aws, &agents).await.unwrap();
    let kernel = built.kernel;
    let aws = built.aws;

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rie-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let functions: Vec<Rie> = FUNCTIONS
        .iter()
        .map(|(agent, bin)| Rie::start(&rie, agent, bin, &env, &dir))
        .collect();

    let task = kernel.submit("primary", DEMO, None).await.unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap();
    let mut queues = BTreeMap::new();
    for agent in &agents {
        queues.insert(*agent, aws.queues.queue(agent).await.unwrap());
    }

    // The event source mapping, one agent after the other.
    let mut invocations: BTreeMap<&str, usize> = BTreeMap::new();
    let mut deliveries: Vec<(String, u32)> = Vec::new();
    let mut failures: Vec<Value> = Vec::new();
    let started = Instant::now();
    let done = loop {
        let t = kernel
            .ports()
            .tasks
            .get_task(task.id)
            .await
            .unwrap()
            .unwrap();
        if t.status.is_final() {
            break t;
        }
        assert!(
            started.elapsed() < TIME_LIMIT,
            "task still {} after {TIME_LIMIT:?}; invocations {invocations:?}\n{}",
            t.status,
            functions
                .iter()
                .map(|f| format!("--- {}:\n{}", f.agent, f.log_tail()))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let mut any = false;
        for f in &functions {
            let queue = &queues[f.agent];
            let received = aws
                .clients
                .sqs
                .receive_message()
                .queue_url(&queue.url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .unwrap();
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                continue;
            }
            any = true;
            // The record exactly as Lambda builds it from the received message.
            let records = messages
                .iter()
                .map(|m| {
                    let attrs: HashMap<String, String> = m
                        .attributes
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k.as_str().to_string(), v))
                        .collect();
                    let attr = |k: &str| attrs.get(k).cloned().unwrap_or_default();
                    let receive_count = attr("ApproximateReceiveCount").parse().unwrap();
                    let mut r = aos_entrypoints::sqs::record(
                        m.message_id().unwrap(),
                        m.body().unwrap(),
                        &attr("MessageGroupId"),
                        receive_count,
                        attr("SentTimestamp").parse().unwrap(),
                        &queue.arn,
                    );
                    r.receipt_handle = m.receipt_handle.clone();
                    r.md5_of_body = m.md5_of_body.clone();
                    r.aws_region = Some("us-east-1".into());
                    r.attributes = attrs;
                    deliveries.push((m.message_id().unwrap().to_string(), receive_count));
                    r
                })
                .collect();
            let event = serde_json::to_string(&aos_entrypoints::sqs::event(records)).unwrap();
            let response = f.invoke(&http, &event).await;
            *invocations.entry(f.agent).or_default() += 1;
            let failed: HashSet<&str> = response["batchItemFailures"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: not a batch response: {response}", f.agent))
                .iter()
                .filter_map(|i| i["itemIdentifier"].as_str())
                .collect();
            failures.extend(
                response["batchItemFailures"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .cloned(),
            );
            let done: Vec<DeleteMessageBatchRequestEntry> = messages
                .iter()
                .enumerate()
                .filter(|(_, m)| !failed.contains(m.message_id().unwrap()))
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap())
                        .build()
                        .unwrap()
                })
                .collect();
            if !done.is_empty() {
                let out = aws
                    .clients
                    .sqs
                    .delete_message_batch()
                    .queue_url(&queue.url)
                    .set_entries(Some(done))
                    .send()
                    .await
                    .unwrap();
                assert!(out.failed().is_empty(), "{:?}", out.failed());
            }
        }
        if !any {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    let logs: BTreeMap<&str, String> = functions.iter().map(|f| (f.agent, f.log_text())).collect();
    let answer = done.result.clone().unwrap_or_default();
    assert_eq!(done.status, TaskStatus::Succeeded, "{done:?}\n{logs:#?}");
    for expected in [
        "Paris, France: 11.4 °C",
        "Tokyo, Japan: 14.2 °C",
        "1250.00 EUR = 1356.25 USD",
    ] {
        assert!(
            answer.contains(expected),
            "{expected:?} not in the answer:\n{answer}"
        );
    }
    for (agent, _) in FUNCTIONS {
        assert!(
            invocations.get(agent).is_some_and(|n| *n >= 1),
            "{agent}'s function was never invoked: {invocations:?}"
        );
        let log = &logs[agent];
        let reports = init_reports(log);
        assert_eq!(
            reports.len(),
            1,
            "{agent}: one cold start, then warm invocations only:\n{log}"
        );
        assert!(
            log.contains("batch done"),
            "{agent}: the binary's SQS handler logged no batch:\n{log}"
        );
        eprintln!(
            "{agent}: {} invocation(s), init {:.1} ms (the emulator's INIT REPORT, debug build)",
            invocations[agent], reports[0]
        );
    }
    // Five wakes (primary, weather, finance, then primary for each reply), none twice:
    // every message delivered once and acknowledged, no failure reported, and the
    // binaries' own batch reports say five applied and no duplicate.
    assert!(failures.is_empty(), "batch item failures: {failures:?}");
    // The functions' own lines: JSON objects (the emulator's are text).
    let lines = |agent: &str| -> Vec<Value> {
        logs[agent]
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let all: Vec<(&str, Value)> = agents
        .iter()
        .flat_map(|a| lines(a).into_iter().map(move |l| (*a, l)))
        .collect();
    let counted = |field: &str| -> u64 {
        all.iter()
            .filter(|(_, l)| l["message"] == "batch done")
            .filter_map(|(_, l)| l[field].as_u64())
            .sum()
    };
    assert_eq!(counted("applied"), 5, "{logs:#?}");
    assert_eq!(counted("duplicates"), 0, "{logs:#?}");
    assert_eq!(counted("dead_lettered"), 0, "{logs:#?}");
    assert_eq!(
        done.usage.wakes, 5,
        "five wakes, none applied twice: {done:?}"
    );
    // Every line a wake logged names its task, agent, envelope and trace, and the
    // invocation; each wake wrote one EMF record.
    let wake_lines: Vec<&(&str, Value)> = all
        .iter()
        .filter(|(_, l)| l.get("_aws").is_none() && l.get("envelope_id").is_some())
        .collect();
    assert!(
        wake_lines
            .iter()
            .filter(|(_, l)| l["message"] == "wake done")
            .count()
            == 5,
        "{logs:#?}"
    );
    for (agent, l) in &wake_lines {
        assert_eq!(l["task_id"], task.id.to_string(), "{l}");
        assert_eq!(l["trace_id"], task.trace_id, "{l}");
        assert_eq!(l["agent"], *agent, "{l}");
        assert!(
            l["request_id"].as_str().is_some_and(|r| !r.is_empty()),
            "{l}"
        );
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
    }
    let emf: Vec<&(&str, Value)> = all
        .iter()
        .filter(|(_, l)| l.get("_aws").is_some())
        .collect();
    assert_eq!(emf.len(), 5, "one EMF record per wake: {emf:#?}");
    for (agent, r) in &emf {
        assert_eq!(r["_aws"]["CloudWatchMetrics"][0]["Namespace"], "AOS", "{r}");
        assert_eq!(r["Agent"], *agent, "{r}");
        assert_eq!(r["task_id"], task.id.to_string(), "{r}");
        assert_eq!(r["trace_id"], task.trace_id, "{r}");
        assert_eq!(
            (r["Wakes"].as_u64(), r["Failures"].as_u64()),
            (Some(1), Some(0)),
            "{r}"
        );
        assert_eq!(
            (r["Retries"].as_u64(), r["DeadLetters"].as_u64()),
            (Some(0), Some(0)),
            "{r}"
        );
        // At least the session's read and the commit.
        assert!(r["AwsCalls"].as_u64() >= Some(2), "{r}");
    }
    let calls: u64 = emf
        .iter()
        .filter_map(|(_, r)| r["ModelCalls"].as_u64())
        .sum();
    assert_eq!(
        calls, done.usage.llm_calls,
        "the records add up to the task's usage"
    );
    // For the record: what a wake's log line and metric record look like, verbatim.
    let weather = &logs["weather"];
    let raw = |needle: &str| {
        weather
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
    };
    eprintln!(
        "a wake's log line: {}\na wake's EMF record: {}",
        raw(r#""message":"wake done""#),
        raw(r#""_aws""#)
    );
    assert_eq!(deliveries.len(), 5, "{deliveries:?}");
    let ids: HashSet<&str> = deliveries.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids.len(),
        deliveries.len(),
        "a message came twice: {deliveries:?}"
    );
    assert!(
        deliveries.iter().all(|(_, n)| *n == 1),
        "redelivered: {deliveries:?}"
    );
    let events = kernel.ports().tasks.task_events(task.id).await.unwrap();
    let event_ids: HashSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(event_ids.len(), events.len(), "an event recorded twice");
    for agent in &agents {
        let dead = aws.queues.dead_letters(agent, 10).await.unwrap();
        assert!(dead.is_empty(), "{agent} dead-lettered: {dead:?}");
        assert_eq!(
            aws.queues.depth(agent).await.unwrap(),
            0,
            "{agent}'s queue drained"
        );
    }
    // The logs stay under target/tmp only when the test fails.
    drop(functions);
    let _ = std::fs::remove_dir_all(&dir);
}
