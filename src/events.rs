//! `aos replay <file>`: one recorded AWS event (the shapes in `events/`) through the
//! handler Lambda runs for it, on the local store: an SQS batch through the agent's
//! batch handler, an API Gateway HTTP API (v2) request through the API's router behind
//! `lambda_http`, an EventBridge Scheduler firing through the schedule handler. The
//! kind of event is read from the JSON itself.
//!
//! The rule kept here: a replay shows what the handler does with the event, never an
//! artefact of the replay. An SQS envelope for a task the store does not hold would
//! only be dead-lettered ("task … does not exist"), which is not what happens on AWS,
//! where the API records a task before it sends its first envelope. So a task's first
//! envelope gets its task created first, as the API would (and the output says so),
//! and any other envelope of a missing task is refused with what to run first.

use anyhow::{Context as _, bail};
use aos_entrypoints::http::{AppState, Auth, app};
use aos_entrypoints::schedule::{ScheduledTask, firing_id, handle_scheduled};
use aos_entrypoints::sqs::handle_batch;
use aos_kernel::ports::Inbox;
use aos_kernel::{Catalog, Envelope, Kernel, Kind, TaskId};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_http::{Context, LambdaEvent};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use tower::ServiceExt;

/// Which handler an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `{"Records": [{"eventSource": "aws:sqs", ...}]}`: an agent's queue.
    Sqs,
    /// `{"version": "2.0", "requestContext": {"http": ...}}`: the API.
    HttpApi,
    /// `{"detail-type": ..., "detail": {"agent", "input"}}`: the scheduler.
    Schedule,
}

/// Tells which handler `event` is for, or why it is none of them.
pub fn detect(event: &Value) -> Result<Source, String> {
    if let Some(records) = event.get("Records").and_then(Value::as_array) {
        let source = records
            .first()
            .and_then(|r| r.get("eventSource"))
            .and_then(Value::as_str)
            .unwrap_or("aws:sqs");
        return match source {
            "aws:sqs" if !records.is_empty() => Ok(Source::Sqs),
            "aws:sqs" => Err("an SQS event with no records: nothing to replay".into()),
            other => Err(format!(
                "an event from {other}; AOS functions receive SQS, API Gateway HTTP API (v2) and EventBridge Scheduler events"
            )),
        };
    }
    if event.get("httpMethod").is_some() {
        return Err("an API Gateway REST API (payload 1.0) request; the api function sits behind an HTTP API and receives payload format 2.0".into());
    }
    if event.get("version").and_then(Value::as_str) == Some("2.0")
        && event.pointer("/requestContext/http").is_some()
    {
        return Ok(Source::HttpApi);
    }
    if event.get("detail-type").is_some() && event.get("detail").is_some() {
        return Ok(Source::Schedule);
    }
    Err("not an event AOS handles: expected an SQS event ({\"Records\": [...]}), an API Gateway HTTP API v2 request ({\"version\": \"2.0\", \"requestContext\": {\"http\": ...}}) or an EventBridge Scheduler firing ({\"detail-type\": ..., \"detail\": {\"agent\", \"input\"}}); see events/".into())
}

/// The agent whose queue an SQS ARN names: `…:aos-primary.fifo` (the AWS adapters'
/// names) or `…:<stack>-PrimaryQueue-<suffix>.fifo` (names CloudFormation generates).
pub fn agent_of_queue(arn: &str, catalog: &Catalog) -> Option<String> {
    let name = arn.rsplit(':').next()?.trim_end_matches(".fifo");
    let words: Vec<String> = name
        .split(['-', '_', '.'])
        .map(str::to_ascii_lowercase)
        .collect();
    let mut found = catalog.agents().map(|a| a.name.to_string()).filter(|a| {
        words
            .iter()
            .any(|w| w == a || w.strip_suffix("queue") == Some(a.as_str()))
    });
    let agent = found.next()?;
    found.next().is_none().then_some(agent)
}

/// What a replay printed, and whether the handler failed (a record reported failed, a
/// 5xx, a schedule firing that was not submitted).
#[derive(Debug)]
pub struct Replayed {
    pub text: String,
    pub failed: bool,
}

/// Where the replay runs.
#[derive(Clone)]
pub struct Target {
    pub kernel: Kernel,
    /// The agents' queues (for the API's dead-letter route and the SQS outcome).
    pub inbox: Arc<dyn Inbox>,
    /// The queue's maximum receive count.
    pub max_receives: u32,
    /// How the store is named in messages (a path or a table).
    pub store: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Replays the event in `file`. `agent` overrides the queue an SQS event came from.
pub async fn replay_file(
    target: &Target,
    file: &Path,
    agent: Option<&str>,
) -> anyhow::Result<Replayed> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let event: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let source = detect(&event).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if agent.is_some() && source != Source::Sqs {
        bail!(
            "--agent names the queue of an SQS event; {} is not one",
            file.display()
        );
    }
    let mut out = match source {
        Source::Sqs => {
            let event: SqsEvent = serde_json::from_value(event)
                .with_context(|| format!("{} is not an SQS event", file.display()))?;
            sqs(target, event, agent).await?
        }
        Source::HttpApi => {
            let request: lambda_http::request::LambdaRequest = serde_json::from_value(event)
                .with_context(|| {
                    format!(
                        "{} is not an API Gateway HTTP API (v2) request",
                        file.display()
                    )
                })?;
            http(target, request, &text).await?
        }
        Source::Schedule => {
            let event: EventBridgeEvent<ScheduledTask> = serde_json::from_value(event)
                .with_context(|| {
                    format!(
                        "{} is not a scheduled task: `detail` must be {{\"agent\": \"...\", \"input\": \"...\"}}",
                        file.display()
                    )
                })?;
            schedule(target, event).await?
        }
    };
    // A fixture from events/ says what it is in its sibling <case>.expected.json.
    let expected = file.with_extension("expected.json");
    let note = std::fs::read_to_string(&expected)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    if let Some(note) = note {
        let about = note
            .get("about")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let from = if note.get("given").is_some() {
            "its stated outcome starts from the state under `given` there"
        } else {
            "its stated outcome is for a fresh store"
        };
        let _ = writeln!(
            out.text,
            "\nAbout this event ({}; {from}):\n  {about}",
            expected.display()
        );
    }
    Ok(out)
}

/// Whose queue the batch came from, and how that was decided.
fn sqs_agent(
    event: &SqsEvent,
    catalog: &Catalog,
    flag: Option<&str>,
) -> anyhow::Result<(String, String)> {
    if let Some(agent) = flag {
        if catalog.get(agent).is_none() {
            bail!("unknown agent '{agent}'; known agents: {}", catalog.names());
        }
        return Ok((agent.to_string(), "--agent".into()));
    }
    let arns: BTreeSet<&str> = event
        .records
        .iter()
        .filter_map(|r| r.event_source_arn.as_deref())
        .collect();
    let agents: BTreeSet<Option<String>> =
        arns.iter().map(|a| agent_of_queue(a, catalog)).collect();
    match (arns.len(), agents.into_iter().next().flatten()) {
        (1, Some(agent)) => {
            let arn = arns.first().copied().unwrap_or_default();
            return Ok((agent, format!("eventSourceARN {arn}")));
        }
        (n, _) if n > 1 => bail!(
            "the records come from {n} queues ({}); pass --agent <name> to pick the handler",
            arns.into_iter().collect::<Vec<_>>().join(", ")
        ),
        _ => {}
    }
    let to = event
        .records
        .iter()
        .filter_map(|r| Envelope::parse(r.body.as_deref().unwrap_or_default()).ok())
        .map(|e| e.to.to_string())
        .next();
    match to {
        Some(agent) if catalog.get(&agent).is_some() => Ok((agent, "the envelope's `to`".into())),
        _ => bail!(
            "cannot tell whose queue this batch came from (no eventSourceARN naming an agent, no envelope addressed to one); pass --agent <name> (known agents: {})",
            catalog.names()
        ),
    }
}

async fn sqs(target: &Target, event: SqsEvent, flag: Option<&str>) -> anyhow::Result<Replayed> {
    let kernel = &target.kernel;
    let tasks = kernel.ports().tasks.clone();
    let (agent, how) = sqs_agent(&event, kernel.catalog(), flag)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "SQS batch of {} record(s) from the queue of {agent} ({how}), through the agent's batch handler",
        event.records.len()
    );

    // The tasks the envelopes belong to: a first envelope's task is created as the API
    // would; any other envelope needs its task to be running already.
    let mut touched: Vec<TaskId> = Vec::new();
    let mut to_create: Vec<Envelope> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for (n, record) in event.records.iter().enumerate() {
        let Ok(env) = Envelope::parse(record.body.as_deref().unwrap_or_default()) else {
            continue;
        };
        if !touched.contains(&env.task) {
            touched.push(env.task);
        }
        if env.to.as_str() != agent
            || to_create.iter().any(|e| e.task == env.task)
            || tasks.get_task(env.task).await?.is_some()
        {
            continue;
        }
        if env.kind == Kind::Task {
            to_create.push(env);
        } else {
            missing.push(format!(
                "record {} ({} from {}, task {})",
                n + 1,
                env.kind,
                env.from,
                env.task
            ));
        }
    }
    if !missing.is_empty() {
        bail!(
            "not replayed: {} holds no task for {}. The handler would only dead-letter such a record (\"task ... does not exist\"): a message or a reply continues a task that is already running. Start the task first: replay the SQS event of its first envelope (for events/sqs/agent-message.json and reply.json: `aos replay events/sqs/new-task.json`)",
            target.store,
            missing.join("; ")
        );
    }
    for env in &to_create {
        let task = kernel
            .submit(env.to.as_str(), &env.body, Some(env.task))
            .await
            .with_context(|| format!("creating task {} from its first envelope", env.task))?;
        let _ = writeln!(
            out,
            "Created task {} for {}: it was not in {}; POST /v1/tasks records a task like this before it sends the first envelope",
            task.id, task.agent, target.store
        );
    }

    let dead_before = target.inbox.dead_letters(&agent, 10_000).await?.len();
    let mut seen: HashSet<aos_kernel::EventId> = HashSet::new();
    for id in &touched {
        seen.extend(tasks.task_events(*id).await?.into_iter().map(|e| e.id));
    }
    let (response, report) = handle_batch(kernel, &agent, event, target.max_receives).await;

    let _ = writeln!(
        out,
        "Outcome: applied {}, duplicates {}, dead-lettered {}, failed {}",
        report.applied, report.duplicates, report.dead_lettered, report.failed
    );
    let _ = writeln!(out, "Partial batch response (what Lambda is told):");
    let _ = writeln!(out, "{}", serde_json::to_string_pretty(&response)?);
    let dead = target.inbox.dead_letters(&agent, 10_000).await?;
    if dead.len() > dead_before {
        let _ = writeln!(out, "Dead-lettered on the queue of {agent}:");
        for d in dead.iter().skip(dead_before) {
            let _ = writeln!(out, "  - {}", d.reason);
        }
    }
    let mut unfinished = Vec::new();
    for id in touched {
        let Some(task) = tasks.get_task(id).await? else {
            continue;
        };
        let events: Vec<_> = tasks
            .timeline(id)
            .await?
            .into_iter()
            .filter(|e| !seen.contains(&e.id))
            .collect();
        let _ = writeln!(
            out,
            "Task {} ({}) is now {}",
            task.id, task.agent, task.status
        );
        for e in &events {
            let _ = writeln!(out, "{}", crate::render::progress_line(&task, e));
        }
        match (&task.result, &task.error) {
            (Some(r), _) => {
                let _ = writeln!(out, "  answer: {}", r.replace('\n', "\n          "));
            }
            (None, Some(e)) => {
                let _ = writeln!(out, "  error: {e}");
            }
            _ => unfinished.push(task.id),
        }
    }
    if let Some(first) = unfinished.first() {
        let _ = writeln!(
            out,
            "What the wakes sent waits on the agents' queues: `aos dev` carries the task on; `aos task {first}` shows it."
        );
    }
    Ok(Replayed {
        text: out,
        failed: !response.batch_item_failures.is_empty(),
    })
}

async fn http(
    target: &Target,
    request: lambda_http::request::LambdaRequest,
    raw: &str,
) -> anyhow::Result<Replayed> {
    let raw: Value = serde_json::from_str(raw)?;
    let method = raw
        .pointer("/requestContext/http/method")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let path = raw.get("rawPath").and_then(Value::as_str).unwrap_or("?");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "API Gateway HTTP API (v2) request {method} {path}, through the API's router (as lambda_http hands it over)"
    );
    let claims = raw.pointer("/requestContext/authorizer/jwt/claims");
    match claims.and_then(|c| c.get("sub")) {
        Some(sub) => {
            let tenant = claims
                .and_then(|c| c.get("tenant"))
                .cloned()
                .unwrap_or(Value::Null);
            let _ = writeln!(
                out,
                "  JWT subject {sub}, tenant {tenant} (API Gateway's authorizer checked the signature; the function checks tenant and scope)"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  No JWT claims (requestContext.authorizer is absent): on AWS the HTTP API's JWT authorizer answers 401 before the function runs, and the function refuses it too"
            );
        }
    }
    let app = app(
        AppState::new(target.kernel.clone(), Auth::ApiGateway).with_inbox(target.inbox.clone())
    );
    let response = lambda_http::Adapter::from(app)
        .oneshot(LambdaEvent::new(request, Context::default()))
        .await
        .map_err(|e| anyhow::anyhow!("the API adapter failed: {e}"))?;
    let response = serde_json::to_value(response)?;
    let status = response
        .get("statusCode")
        .and_then(Value::as_u64)
        .unwrap_or_default();
    let reason = axum::http::StatusCode::from_u16(status as u16)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let _ = writeln!(out, "→ {status} {reason}");
    if let Some(location) = response
        .pointer("/headers/location")
        .and_then(Value::as_str)
    {
        let _ = writeln!(out, "  location: {location}");
    }
    if let Some(body) = response.get("body").and_then(Value::as_str) {
        match serde_json::from_str::<Value>(body) {
            Ok(json) => {
                let _ = writeln!(out, "{}", serde_json::to_string_pretty(&json)?);
                if let (202, Some(id)) = (status, json.get("id").and_then(Value::as_str)) {
                    let _ = writeln!(
                        out,
                        "Task {id} is queued: `aos dev` runs it; `aos task {id}` shows it."
                    );
                }
            }
            Err(_) => {
                let _ = writeln!(out, "{body}");
            }
        }
    }
    Ok(Replayed {
        text: out,
        failed: status >= 500,
    })
}

async fn schedule(
    target: &Target,
    event: EventBridgeEvent<ScheduledTask>,
) -> anyhow::Result<Replayed> {
    let schedule = event
        .resources
        .as_ref()
        .and_then(|r| r.first().cloned())
        .unwrap_or_else(|| "(no schedule ARN in resources)".into());
    let at = event
        .time
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "(no time)".into());
    let attempt = event.id.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "EventBridge Scheduler firing of {schedule} at {at} (execution {attempt}), through the schedule handler"
    );
    let existed = match firing_id(&event) {
        Some(id) => target.kernel.ports().tasks.get_task(id).await?.is_some(),
        None => false,
    };
    let agent = event.detail.agent.clone();
    match handle_scheduled(&target.kernel, event).await {
        Ok(task) => {
            let note = if existed {
                "already submitted by an earlier delivery of this firing: nothing new was sent"
                    .to_string()
            } else {
                format!(
                    "submitted; its first envelope waits on the queue of {agent}: `aos dev` runs it"
                )
            };
            let _ = writeln!(
                out,
                "→ task {} for {}, {}: {note}",
                task.id, task.agent, task.status
            );
            Ok(Replayed {
                text: out,
                failed: false,
            })
        }
        Err(e) => {
            let _ = writeln!(out, "→ not submitted: {e}");
            Ok(Replayed {
                text: out,
                failed: true,
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> Catalog {
        Catalog::new(aos_agents::reference_agents().unwrap()).unwrap()
    }

    #[test]
    fn the_kind_of_event_is_read_from_its_shape() {
        let sqs = json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]});
        assert_eq!(detect(&sqs), Ok(Source::Sqs));
        let http = json!({"version": "2.0", "rawPath": "/v1/tasks", "requestContext": {"http": {"method": "GET"}}});
        assert_eq!(detect(&http), Ok(Source::HttpApi));
        let firing = json!({"detail-type": "Scheduled Task", "source": "aos.scheduler", "detail": {"input": "hi"}});
        assert_eq!(detect(&firing), Ok(Source::Schedule));
        let s3 = json!({"Records": [{"eventSource": "aws:s3"}]});
        assert!(detect(&s3).unwrap_err().starts_with("an event from aws:s3"));
        let rest = json!({"httpMethod": "POST", "path": "/v1/tasks"});
        assert!(detect(&rest).unwrap_err().contains("payload 1.0"));
        assert!(
            detect(&json!({"hello": 1}))
                .unwrap_err()
                .starts_with("not an event AOS handles")
        );
    }

    #[test]
    fn a_queue_arn_names_its_agent() {
        let c = catalog();
        let of = |arn: &str| agent_of_queue(arn, &c);
        assert_eq!(
            of("arn:aws:sqs:us-east-1:123456789012:aos-weather.fifo").as_deref(),
            Some("weather")
        );
        assert_eq!(
            of("arn:aws:sqs:eu-west-1:123456789012:prod-FinanceQueue-1A2B3C4D5E6F.fifo").as_deref(),
            Some("finance")
        );
        assert_eq!(of("arn:aws:sqs:us-east-1:123456789012:orders.fifo"), None);
        assert_eq!(of(""), None);
    }
}
