//! Every recorded event in `events/` replayed through the handler Lambda runs for it
//! (an agent's [`SqsHandler`], the api function's router behind `lambda_http`, the
//! scheduler's handler) on in-memory ports, and held to the outcome its sibling
//! `<case>.expected.json` states. The convention is in `events/README.md`.
//!
//! The test walks the directory: a fixture without a stated outcome, an outcome without
//! its fixture, or a source no handler here replays fails it, so nothing in `events/`
//! goes unchecked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_agents::{ToolsConfig, reference_agents, reference_tools};
use aos_entrypoints::schedule::ScheduledTask;
use aos_kernel::llm::{LlmError, Model, ModelRequest, ModelResponse};
use aos_kernel::offline::OfflineModel;
use aos_kernel::ports::{Inbox, TaskStore};
use aos_kernel::testkit::MemSystem;
use aos_kernel::{Catalog, Envelope, TaskId};
use aos_lambda::SqsHandler;
use async_trait::async_trait;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tower::ServiceExt;

/// The event sources a handler here replays: one directory each under `events/`.
const SOURCES: [&str; 3] = ["sqs", "http", "schedule"];

/// The queue's maximum receive count, as the template sets it.
const MAX_RECEIVES: u32 = 5;

// ------------------------------------------------------------------ expectations

/// A `<case>.expected.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    /// What the event is and why the outcome is right, for a person.
    about: String,
    #[serde(default)]
    given: Given,
    expect: Expect,
}

/// The state the event arrives in, built in this order before the replay.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Given {
    /// Other fixtures replayed first (their own `given` first), outcome unchecked.
    #[serde(default)]
    replayed: Vec<String>,
    /// Tasks recorded first with these exact ids, as `POST /v1/tasks` does (which also
    /// queues each task's first envelope).
    #[serde(default)]
    tasks: Vec<GivenTask>,
    /// Agents whose queues are then run once, in order: every message waiting wakes
    /// its agent once; what those wakes send waits for the next agent in the list.
    #[serde(default)]
    run: Vec<String>,
    /// `"unavailable"`: from then on every model request fails with a 503.
    #[serde(default)]
    model: Option<ModelState>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GivenTask {
    id: String,
    agent: String,
    input: String,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ModelState {
    Unavailable,
}

/// The outcome. Which keys a source requires, and allows, is checked in
/// [`Expect::check_keys`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    // SQS
    /// The agent whose queue the batch came from (its `eventSourceARN`).
    agent: Option<String>,
    report: Option<Report>,
    /// The message ids in the partial batch response, in order.
    batch_item_failures: Option<Vec<String>>,
    /// Reasons of what the batch put on the agent's dead-letter queue, in order.
    dead_letters: Option<Vec<String>>,
    // HTTP
    status: Option<u16>,
    /// A subset of the JSON response body: every key given must be there with that
    /// value.
    body: Option<Value>,
    // Schedule
    /// The task the firing submitted.
    task: Option<String>,
    /// Or the error the handler returned.
    error: Option<ExpectedError>,
    // Any source
    /// Envelopes the replay put on queues (in any order).
    sent: Option<Vec<Sent>>,
    /// The state of these tasks afterwards.
    #[serde(default)]
    tasks: Vec<TaskState>,
    /// How many tasks the store holds afterwards.
    tasks_in_store: Option<usize>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Report {
    applied: usize,
    duplicates: usize,
    dead_lettered: usize,
    failed: usize,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct ExpectedError {
    /// `Retryable` or `Terminal`, the Lambda `errorType`.
    r#type: String,
    message: String,
}

#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Clone)]
#[serde(deny_unknown_fields)]
struct Sent {
    from: String,
    to: String,
    kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskState {
    id: String,
    status: String,
    /// The task's error, exactly.
    #[serde(default)]
    error: Option<String>,
    /// Text the task's result contains.
    #[serde(default)]
    result_includes: Vec<String>,
    /// Timeline lines (`<agent> <kind>: <detail>`) the replay added, in this order
    /// (others may come between).
    #[serde(default)]
    events: Vec<String>,
}

impl Expect {
    /// The keys each source must state, and may state.
    fn check_keys(&self, source: &str) -> Vec<String> {
        let has = [
            ("agent", self.agent.is_some()),
            ("report", self.report.is_some()),
            ("batch_item_failures", self.batch_item_failures.is_some()),
            ("dead_letters", self.dead_letters.is_some()),
            ("status", self.status.is_some()),
            ("body", self.body.is_some()),
            ("task", self.task.is_some()),
            ("error", self.error.is_some()),
            ("sent", self.sent.is_some()),
            ("tasks_in_store", self.tasks_in_store.is_some()),
        ];
        let (required, allowed): (&[&str], &[&str]) = match source {
            "sqs" => (
                &[
                    "agent",
                    "report",
                    "batch_item_failures",
                    "dead_letters",
                    "sent",
                ],
                &["tasks_in_store"],
            ),
            "http" => (&["status", "body", "tasks_in_store"], &["sent"]),
            _ => (&["sent", "tasks_in_store"], &["task", "error"]),
        };
        let mut problems = Vec::new();
        for (key, present) in has {
            if !present && required.contains(&key) {
                problems.push(format!("expect.{key} is required for {source} events"));
            }
            if present && !required.contains(&key) && !allowed.contains(&key) {
                problems.push(format!("expect.{key} does not apply to {source} events"));
            }
        }
        if source == "schedule" && self.task.is_some() == self.error.is_some() {
            problems.push("a schedule outcome states either expect.task or expect.error".into());
        }
        problems
    }
}

// ------------------------------------------------------------------ the system

/// Every task of every tenant.
fn all_tasks() -> aos_kernel::ports::TaskQuery {
    aos_kernel::ports::TaskQuery {
        tenant: None,
        status: None,
        before: None,
        limit: 10_000,
    }
}

/// The offline model, or a provider outage when switched off.
struct Switchable {
    inner: OfflineModel,
    down: Arc<AtomicBool>,
}

#[async_trait]
impl Model for Switchable {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, LlmError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(LlmError::transient(
                "503 Service Unavailable from the provider",
            ));
        }
        self.inner.complete(request).await
    }
}

/// The reference agents and their tools (offline) on in-memory ports.
struct World {
    sys: MemSystem,
    model_down: Arc<AtomicBool>,
}

impl World {
    fn new() -> Self {
        let catalog = Catalog::new(reference_agents().unwrap()).unwrap();
        let tools = reference_tools(&ToolsConfig {
            offline: true,
            ..ToolsConfig::default()
        });
        let down = Arc::new(AtomicBool::new(false));
        let model = Switchable {
            inner: OfflineModel::new(&catalog),
            down: down.clone(),
        };
        let sys = MemSystem::new(catalog, tools, Some(Arc::new(model)));
        Self {
            sys,
            model_down: down,
        }
    }

    fn inbox(&self) -> Arc<dyn Inbox> {
        self.sys.queues.clone()
    }

    fn sent_so_far(&self) -> usize {
        self.sys.queues.sent.lock().unwrap().len()
    }

    fn sent_since(&self, mark: usize) -> Vec<Sent> {
        let mut sent: Vec<Sent> = self.sys.queues.sent.lock().unwrap()[mark..]
            .iter()
            .map(|e| Sent {
                from: e.from.clone(),
                to: e.to.to_string(),
                kind: e.kind.to_string(),
            })
            .collect();
        sent.sort();
        sent
    }

    /// The task's timeline as `(event id, "<agent> <kind>: <detail>")`, in timeline
    /// order (which is not the order of writing: a wake's events sort by its envelope).
    async fn events_of(&self, task: TaskId) -> Vec<(String, String)> {
        self.sys
            .store
            .timeline(task)
            .await
            .unwrap()
            .iter()
            .map(|e| {
                let line = format!("{} {}: {}", e.agent, e.kind.as_str(), e.detail);
                (e.id.to_string(), line)
            })
            .collect()
    }

    /// Builds `given`.
    fn prepare<'a>(
        &'a self,
        given: &'a Given,
    ) -> futures::future::LocalBoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            for other in &given.replayed {
                let fixture = Fixture::at(&events_dir().join(other))?;
                let expected = fixture.expected()?;
                self.prepare(&expected.given).await?;
                self.replay(&fixture, &expected.expect).await?;
            }
            for t in &given.tasks {
                let id: TaskId =
                    t.id.parse()
                        .map_err(|e| format!("given task {}: {e}", t.id))?;
                self.sys
                    .kernel
                    .submit(&t.agent, &t.input, Some(id))
                    .await
                    .map_err(|e| format!("given task {}: {e}", t.id))?;
            }
            for agent in &given.run {
                for m in self.sys.queues.receive(agent, 100, 30_000).await.unwrap() {
                    let env = Envelope::parse(&m.body).unwrap();
                    self.sys
                        .kernel
                        .wake(env)
                        .await
                        .map_err(|r| format!("given run {agent}: {}", r.reason))?;
                    self.sys.queues.delete(agent, &m.receipt).await.unwrap();
                }
            }
            if given.model == Some(ModelState::Unavailable) {
                self.model_down.store(true, Ordering::SeqCst);
            }
            Ok(())
        })
    }

    /// Runs the fixture through its handler; what the handler returned, for checking.
    async fn replay(&self, fixture: &Fixture, expect: &Expect) -> Result<Outcome, String> {
        let text = std::fs::read_to_string(&fixture.path).map_err(|e| e.to_string())?;
        match fixture.source.as_str() {
            "sqs" => {
                let event: SqsEvent =
                    serde_json::from_str(&text).map_err(|e| format!("not an SQS event: {e}"))?;
                let agent = expect.agent.clone().unwrap_or_default();
                for r in &event.records {
                    let arn = r.event_source_arn.as_deref().unwrap_or_default();
                    if !arn.ends_with(&format!(":aos-{agent}.fifo")) {
                        return Err(format!(
                            "record {:?} came from {arn:?}, not from the queue of {agent}",
                            r.message_id
                        ));
                    }
                }
                // The agent function's handler, with no invocation deadline (as a
                // hand-made Lambda context has none).
                let handler = SqsHandler::new(
                    self.sys.kernel.clone(),
                    self.inbox(),
                    &agent,
                    MAX_RECEIVES,
                    0,
                )
                .with_metrics(std::sync::Arc::new(|_: &str| {}));
                let (response, report) = handler
                    .run(LambdaEvent::new(event, Context::default()))
                    .await;
                Ok(Outcome::Sqs {
                    failures: response
                        .batch_item_failures
                        .into_iter()
                        .map(|f| f.item_identifier)
                        .collect(),
                    report: Report {
                        applied: report.applied,
                        duplicates: report.duplicates,
                        dead_lettered: report.dead_lettered,
                        failed: report.failed,
                    },
                })
            }
            "http" => {
                // What the api function does: lambda_http's own conversion of the API
                // Gateway payload, then the router.
                let request: lambda_http::request::LambdaRequest = serde_json::from_str(&text)
                    .map_err(|e| format!("not an API Gateway HTTP API (v2) request: {e}"))?;
                let app = aos_lambda::api::router(self.sys.kernel.clone(), self.inbox());
                let response = lambda_http::Adapter::from(app)
                    .oneshot(LambdaEvent::new(request, Context::default()))
                    .await
                    .map_err(|e| format!("the adapter failed: {e}"))?;
                let response = serde_json::to_value(response).unwrap();
                let status = response["statusCode"].as_u64().unwrap_or_default() as u16;
                let body = response["body"]
                    .as_str()
                    .map(|b| serde_json::from_str(b).unwrap_or(Value::String(b.into())))
                    .unwrap_or(Value::Null);
                Ok(Outcome::Http { status, body })
            }
            "schedule" => {
                let event: EventBridgeEvent<ScheduledTask> = serde_json::from_str(&text)
                    .map_err(|e| format!("not a scheduled-task event: {e}"))?;
                let result = aos_lambda::schedule::handle(
                    &self.sys.kernel,
                    LambdaEvent::new(event, Context::default()),
                )
                .await;
                Ok(Outcome::Schedule(
                    result
                        .map(|s| s.task.to_string())
                        .map_err(|e| ExpectedError {
                            r#type: e.error_type().to_string(),
                            message: e.to_string(),
                        }),
                ))
            }
            other => Err(format!("no handler replays {other} events")),
        }
    }
}

/// What a handler returned.
#[derive(Debug)]
enum Outcome {
    Sqs {
        failures: Vec<String>,
        report: Report,
    },
    Http {
        status: u16,
        body: Value,
    },
    Schedule(Result<String, ExpectedError>),
}

// ------------------------------------------------------------------ the directory

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

/// One event file and the source it is filed under.
#[derive(Debug)]
struct Fixture {
    path: PathBuf,
    source: String,
    /// `<source>/<case>.json`, as the README and `given.replayed` name it.
    name: String,
}

impl Fixture {
    fn at(path: &Path) -> Result<Self, String> {
        let source = path
            .parent()
            .and_then(Path::file_name)
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let file = path
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if !path.exists() {
            return Err(format!("no fixture {}", path.display()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            name: format!("{source}/{file}"),
            source,
        })
    }

    fn expected_path(&self) -> PathBuf {
        self.path.with_extension("expected.json")
    }

    fn expected(&self) -> Result<Expected, String> {
        let path = self.expected_path();
        let text = std::fs::read_to_string(&path).map_err(|_| {
            format!(
                "{} states no outcome: add {} (see events/README.md)",
                self.name,
                path.file_name().unwrap().to_string_lossy()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Every fixture under `dir`, or what is wrong with the directory: a file or folder
/// no handler here replays, an outcome without its fixture, a fixture without its
/// outcome.
fn fixtures(dir: &Path) -> Result<Vec<Fixture>, Vec<String>> {
    let mut problems = Vec::new();
    let mut found = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for entry in entries {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        if entry.is_file() {
            if name != "README.md" {
                problems.push(format!("events/{name}: put events under events/<source>/"));
            }
            continue;
        }
        if !SOURCES.contains(&name.as_str()) {
            problems.push(format!(
                "events/{name}/: no handler in shared/lambda/tests/fixtures.rs replays this source"
            ));
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&entry)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let fname = file.file_name().unwrap().to_string_lossy().to_string();
            if let Some(case) = fname.strip_suffix(".expected.json") {
                if !entry.join(format!("{case}.json")).exists() {
                    problems.push(format!("events/{name}/{fname} has no fixture {case}.json"));
                }
            } else if fname.ends_with(".json") {
                let fixture = Fixture::at(&file).unwrap();
                if !fixture.expected_path().exists() {
                    problems.push(format!(
                        "events/{name}/{fname} states no outcome: add {} (see events/README.md)",
                        fname.replace(".json", ".expected.json")
                    ));
                }
                found.push(fixture);
            } else {
                problems.push(format!("events/{name}/{fname}: not a .json event"));
            }
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}

// ------------------------------------------------------------------ checking

/// `expected` is `actual`, or, for objects, a subset of it.
fn includes(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| includes(av, v))),
        _ => actual == expected,
    }
}

/// `wanted` appears in `lines` in order.
fn in_order(lines: &[String], wanted: &[String]) -> bool {
    let mut it = lines.iter();
    wanted.iter().all(|w| it.any(|l| l == w))
}

/// Replays one fixture in a fresh world; the ways its outcome differs from the stated
/// one.
async fn check(fixture: &Fixture) -> Vec<String> {
    let expected = match fixture.expected() {
        Ok(e) => e,
        Err(e) => return vec![e],
    };
    let mut problems = expected.expect.check_keys(&fixture.source);
    if expected.about.trim().is_empty() {
        problems.push("\"about\" is empty: say what the event is".into());
    }
    if !problems.is_empty() {
        return problems;
    }
    let expect = &expected.expect;
    let world = World::new();
    if let Err(e) = world.prepare(&expected.given).await {
        return vec![format!("given: {e}")];
    }
    let sent_mark = world.sent_so_far();
    let agent = expect.agent.clone().unwrap_or_default();
    let dead_before = world
        .sys
        .queues
        .dead_letters(&agent, 1000)
        .await
        .unwrap()
        .len();
    let mut events_before = BTreeMap::new();
    for t in &expect.tasks {
        match t.id.parse::<TaskId>() {
            Ok(id) => {
                let ids: BTreeSet<String> = world
                    .events_of(id)
                    .await
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                events_before.insert(t.id.clone(), ids);
            }
            Err(e) => problems.push(format!("expect.tasks: {}: {e}", t.id)),
        }
    }

    let outcome = match world.replay(fixture, expect).await {
        Ok(o) => o,
        Err(e) => return vec![e],
    };
    let mut differs = |what: &str, got: String, want: String| {
        if got != want {
            problems.push(format!("{what}: got {got}, expected {want}"));
        }
    };
    match outcome {
        Outcome::Sqs { failures, report } => {
            differs(
                "batchItemFailures",
                format!("{failures:?}"),
                format!("{:?}", expect.batch_item_failures.as_ref().unwrap()),
            );
            differs(
                "report",
                format!("{report:?}"),
                format!("{:?}", expect.report.as_ref().unwrap()),
            );
            let dead: Vec<String> = world
                .sys
                .queues
                .dead_letters(&agent, 1000)
                .await
                .unwrap()
                .into_iter()
                .skip(dead_before)
                .map(|d| d.reason)
                .collect();
            differs(
                "dead letters",
                format!("{dead:?}"),
                format!("{:?}", expect.dead_letters.as_ref().unwrap()),
            );
        }
        Outcome::Http { status, body } => {
            differs(
                "status",
                status.to_string(),
                expect.status.unwrap().to_string(),
            );
            let want = expect.body.as_ref().unwrap();
            if !includes(&body, want) {
                problems.push(format!("body: got {body}, expected it to include {want}"));
            }
        }
        Outcome::Schedule(result) => match (result, &expect.task, &expect.error) {
            (Ok(task), Some(want), _) => differs("task", task, want.clone()),
            (Err(e), _, Some(want)) => differs("error", format!("{e:?}"), format!("{want:?}")),
            (got, _, _) => problems.push(format!(
                "handler returned {got:?}, expected task {:?} / error {:?}",
                expect.task, expect.error
            )),
        },
    }
    if let Some(want) = &expect.sent {
        let mut want = want.clone();
        want.sort();
        let got = world.sent_since(sent_mark);
        if got != want {
            problems.push(format!("sent: got {got:?}, expected {want:?}"));
        }
    }
    if let Some(want) = expect.tasks_in_store {
        let n = world
            .sys
            .store
            .list_tasks(&all_tasks())
            .await
            .unwrap()
            .len();
        if n != want {
            problems.push(format!("tasks in store: got {n}, expected {want}"));
        }
    }
    for t in &expect.tasks {
        let Ok(id) = t.id.parse::<TaskId>() else {
            continue;
        };
        let Some(task) = world.sys.store.get_task(id).await.unwrap() else {
            problems.push(format!("task {}: not in the store", t.id));
            continue;
        };
        if task.status.as_str() != t.status {
            problems.push(format!(
                "task {}: status {}, expected {} (error: {:?})",
                t.id, task.status, t.status, task.error
            ));
        }
        if t.error.is_some() && task.error != t.error {
            problems.push(format!(
                "task {}: error {:?}, expected {:?}",
                t.id, task.error, t.error
            ));
        }
        let result = task.result.clone().unwrap_or_default();
        for text in &t.result_includes {
            if !result.contains(text.as_str()) {
                problems.push(format!(
                    "task {}: result {result:?} does not include {text:?}",
                    t.id
                ));
            }
        }
        let added: Vec<String> = world
            .events_of(id)
            .await
            .into_iter()
            .filter(|(event, _)| !events_before.get(&t.id).is_some_and(|b| b.contains(event)))
            .map(|(_, line)| line)
            .collect();
        if !in_order(&added, &t.events) {
            problems.push(format!(
                "task {}: the replay added the timeline\n      {}\n    expected, in order:\n      {}",
                t.id,
                added.join("\n      "),
                t.events.join("\n      ")
            ));
        }
    }
    problems
}

#[tokio::test]
async fn every_fixture_replays_through_its_handler_with_the_outcome_it_states() {
    let fixtures = match fixtures(&events_dir()) {
        Ok(f) => f,
        Err(problems) => panic!("events/ is not all checkable:\n  {}", problems.join("\n  ")),
    };
    for source in SOURCES {
        assert!(
            fixtures.iter().any(|f| f.source == source),
            "no {source} fixtures found in events/{source}/"
        );
    }
    let mut report = Vec::new();
    for fixture in &fixtures {
        let problems = check(fixture).await;
        if !problems.is_empty() {
            report.push(format!(
                "{}:\n    {}",
                fixture.name,
                problems.join("\n    ")
            ));
        }
    }
    assert!(
        report.is_empty(),
        "{} of {} fixtures differ from their stated outcome:\n  {}",
        report.len(),
        fixtures.len(),
        report.join("\n  ")
    );
}

#[test]
fn a_fixture_without_a_stated_outcome_fails_the_walk() {
    let dir = std::env::temp_dir().join(format!("aos-fixtures-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sqs")).unwrap();
    std::fs::create_dir_all(dir.join("kinesis")).unwrap();
    std::fs::write(dir.join("sqs/new-case.json"), "{}").unwrap();
    std::fs::write(dir.join("sqs/gone.expected.json"), "{}").unwrap();
    let problems = fixtures(&dir).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        problems,
        [
            "events/kinesis/: no handler in shared/lambda/tests/fixtures.rs replays this source",
            "events/sqs/gone.expected.json has no fixture gone.json",
            "events/sqs/new-case.json states no outcome: add new-case.expected.json (see events/README.md)",
        ]
    );
}

#[test]
fn stated_keys_must_fit_the_source() {
    let sqs_with_status = Expect {
        status: Some(200),
        ..Expect::default()
    };
    let problems = sqs_with_status.check_keys("sqs");
    assert!(problems.contains(&"expect.status does not apply to sqs events".to_string()));
    assert!(problems.contains(&"expect.agent is required for sqs events".to_string()));
    let both = Expect {
        task: Some("x".into()),
        error: Some(ExpectedError {
            r#type: "Terminal".into(),
            message: "m".into(),
        }),
        sent: Some(vec![]),
        tasks_in_store: Some(0),
        ..Expect::default()
    };
    assert_eq!(
        both.check_keys("schedule"),
        ["a schedule outcome states either expect.task or expect.error"]
    );
}
