//! What the API reads and writes: request bodies, query strings and response bodies,
//! each with the JSON schema the OpenAPI document publishes. Kernel types (`Task`,
//! `Event`, `Approval`, `Schedule`, ...) go out as they are; what the kernel has no
//! type for is shaped here. Reading helpers turn every malformed input into a 400
//! problem that says what to send instead.

use super::problem::ApiError;
use aos_kernel::model::{AgentDef, Budget};
use aos_kernel::{Event, Task, TaskId};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest request body the API reads.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

// ------------------------------------------------------------------ responses

/// `GET /v1/health`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    /// Always `ok` when the API answers.
    pub status: String,
    /// The server's version.
    pub version: String,
}

/// One page of tasks, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A task's timeline, oldest first (audit records are served apart, to `admin`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct TaskEvents {
    pub task: TaskId,
    pub events: Vec<Event>,
}

/// The last event of a task's event stream.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StreamEnd {
    pub task: TaskId,
    /// The task's final status.
    pub status: aos_kernel::TaskStatus,
}

/// An agent, as listed.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AgentSummary {
    pub name: String,
    /// What the agent is for.
    pub purpose: String,
    /// Its model route (`provider:model`, `offline` or `auto`).
    pub model: String,
    /// Tools it may call.
    pub tools: Vec<String>,
    /// Agents it may message.
    pub may_message: Vec<String>,
    /// Budgets of tasks submitted to it.
    pub budget: Budget,
    /// Messages waiting or in flight on its queue (approximate on AWS), all tenants'
    /// together: shown to the `default` tenant (the operators) only, and only where
    /// the deployment's API reads queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
    /// The caller's tenant's messages its queue gave up on (listed and redriven at
    /// `/v1/agents/{name}/dead-letters`), counted up to 1000; only where the
    /// deployment's API reads queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<u64>,
}

impl From<&AgentDef> for AgentSummary {
    fn from(a: &AgentDef) -> Self {
        Self {
            name: a.name.to_string(),
            purpose: a.purpose.clone(),
            model: a.model.clone(),
            tools: a.tools.clone(),
            may_message: a.may_message.iter().map(ToString::to_string).collect(),
            budget: a.budget.clone(),
            queue_depth: None,
            dead_letters: None,
        }
    }
}

/// `GET /v1/agents`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AgentList {
    pub agents: Vec<AgentSummary>,
}

/// Per-wake limits of an agent.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AgentLimitsView {
    pub max_steps_per_wake: u32,
    pub max_output_tokens: u32,
    pub max_tool_calls_per_step: u32,
}

/// One agent's definition and the caller's tenant's recent tasks for it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AgentDetail {
    pub name: String,
    pub purpose: String,
    pub system_prompt: String,
    pub model: String,
    /// A cheaper route for simple steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simple_model: Option<String>,
    /// Routes tried in order when the chosen one fails transiently.
    pub fallbacks: Vec<String>,
    pub tools: Vec<String>,
    pub may_message: Vec<String>,
    pub budget: Budget,
    pub limits: AgentLimitsView,
    /// Words that route a request to it when the offline model orchestrates.
    pub keywords: Vec<String>,
    /// The newest tasks the caller's tenant submitted to this agent.
    pub recent_tasks: Vec<Task>,
}

impl AgentDetail {
    pub fn new(a: &AgentDef, recent_tasks: Vec<Task>) -> Self {
        Self {
            name: a.name.to_string(),
            purpose: a.purpose.clone(),
            system_prompt: a.system_prompt.clone(),
            model: a.model.clone(),
            simple_model: a.simple_model.clone(),
            fallbacks: a.fallbacks.clone(),
            tools: a.tools.clone(),
            may_message: a.may_message.iter().map(ToString::to_string).collect(),
            budget: a.budget.clone(),
            limits: AgentLimitsView {
                max_steps_per_wake: a.limits.max_steps_per_wake,
                max_output_tokens: a.limits.max_output_tokens,
                max_tool_calls_per_step: a.limits.max_tool_calls_per_step,
            },
            keywords: a.keywords.clone(),
            recent_tasks,
        }
    }
}

/// An entry of an agent's dead-letter queue.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeadLetterView {
    /// Names it for a redrive.
    pub id: String,
    /// Why it could not be processed.
    pub reason: String,
    /// When it was parked, ms since the Unix epoch.
    pub at: u64,
    /// How often it was received before it was parked.
    pub receive_count: u32,
    /// The task its envelope belongs to, when the body is an envelope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
    /// The message body as it was on the queue.
    pub body: String,
}

/// `GET /v1/agents/{name}/dead-letters`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeadLetterList {
    pub agent: String,
    pub dead_letters: Vec<DeadLetterView>,
}

/// What a redrive did.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Redriven {
    pub agent: String,
    /// Dead letters moved back to the agent's queue.
    pub redriven: usize,
}

// ------------------------------------------------------------------ requests

/// `POST /v1/tasks`. A client cannot choose a task id: send an `Idempotency-Key`
/// header to make a retry safe.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    /// What you want done.
    #[schemars(length(min = 1), pattern(r"\S"))]
    pub input: String,
    /// The agent that takes it (default `primary`).
    #[serde(default)]
    #[schemars(pattern(r"^[a-z][a-z0-9_-]{0,63}$"))]
    pub agent: Option<String>,
}

/// `POST /v1/tasks/{id}/cancel` (the body is optional).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelTask {
    /// Why, for the timeline.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/approvals/{id}/approve` or `/deny` (the body is optional).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Why, for the audit log and (on a denial) the model.
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /v1/agents/{name}/dead-letters/redrive` (the body is optional).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redrive {
    /// Only these dead letters (their `id`s); default: every one the caller may see.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
}

/// `GET /v1/tasks` query string.
#[derive(Debug, Default, Deserialize)]
pub struct ListTasks {
    pub status: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// A `limit` query string.
#[derive(Debug, Default, Deserialize)]
pub struct Limit {
    pub limit: Option<usize>,
}

// ------------------------------------------------------------------ reading

/// The `limit` of a list, checked against `1..=max`.
pub fn limit(given: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit {n} is out of range; use 1 to {max}"
        ))),
    }
}

/// A JSON body, with a 400 that shows an example when it is missing or wrong.
pub fn json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    example: &str,
) -> Result<T, ApiError> {
    let bytes = read(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(format!(
            "request body is empty; send JSON like {example}"
        )));
    }
    parse(&bytes, example)
}

/// A JSON body that may be absent (an empty body means the default).
pub fn optional_body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
    example: &str,
) -> Result<T, ApiError> {
    let bytes = read(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse(&bytes, example)
}

fn read(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!(
                "request body is over the limit of {MAX_REQUEST_BYTES} bytes"
            ))
        } else {
            ApiError::BadRequest(format!("could not read the request body: {e}"))
        }
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8], example: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "request body is not valid: {e}; send JSON like {example}"
        ))
    })
}

/// A query string, or a 400 naming what is wrong with it.
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))
}

/// A path segment, or a 400.
pub fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t)
        .map_err(|e| ApiError::BadRequest(format!("bad path: {}", e.body_text())))
}

/// A task id from the path.
pub fn task_id(text: &str) -> Result<TaskId, ApiError> {
    text.parse().map_err(|_| {
        ApiError::BadRequest(format!("{text:?} is not a task id (a 26-character ULID)"))
    })
}
