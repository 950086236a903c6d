//! The HTTP API as one axum `Router`: the same app is served by `aos dev` on a socket
//! and by API Gateway through Lambda. The rule kept here: every client error is a 4xx
//! with a JSON body a person can act on; internal errors are logged and hidden behind
//! a 500 that carries no detail.

use aos_kernel::ports::{Inbox, PortError};
use aos_kernel::{Kernel, SubmitError, TaskId, TaskStatus};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Largest request body the API reads.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub kernel: Kernel,
    /// For dead-letter listings; `None` where the deployment reads DLQs elsewhere.
    pub inbox: Option<Arc<dyn Inbox>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppState")
    }
}

/// The API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/agents", get(list_agents))
        .route("/agents/{name}/dead-letters", get(dead_letters))
        .route("/tasks", post(submit_task).get(list_tasks))
        .route("/tasks/{id}", get(get_task))
        .route("/tasks/{id}/events", get(task_events))
        .route("/tasks/{id}/cancel", post(cancel_task))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

/// An API error: client errors say what to fix; internal ones say nothing.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    NotFound(String),
    TooLarge(String),
    /// The backend could not do it now; the message says what to retry.
    Unavailable(String),
    Conflict(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            ApiError::Unavailable(m) => {
                tracing::warn!(error = %m, "backend unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".to_string(),
                )
            }
        };
        (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response()
    }
}

impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        match e {
            PortError::Unavailable(m) => {
                tracing::warn!(error = %m, "backend unavailable");
                ApiError::Unavailable("the backend is busy; retry shortly".into())
            }
            PortError::Rejected(m) => ApiError::BadRequest(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::UnknownAgent { .. } => ApiError::NotFound(e.to_string()),
            SubmitError::EmptyInput => ApiError::BadRequest(e.to_string()),
            SubmitError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
            SubmitError::Port(p) => p.into(),
            // Say which task was recorded, so a retry with its id does not duplicate it.
            SubmitError::NotSent { .. } => ApiError::Unavailable(e.to_string()),
        }
    }
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn not_found() -> ApiError {
    ApiError::NotFound(
        "no such route; see GET /agents, POST /tasks, GET /tasks/{id}, GET /tasks/{id}/events"
            .into(),
    )
}

async fn list_agents(State(s): State<AppState>) -> Json<Value> {
    let agents: Vec<Value> = s
        .kernel
        .catalog()
        .agents()
        .map(|a| {
            json!({
                "name": a.name,
                "purpose": a.purpose,
                "model": a.model,
                "tools": a.tools,
                "may_message": a.may_message,
                "budget": a.budget,
            })
        })
        .collect();
    Json(json!({ "agents": agents }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    input: String,
    #[serde(default)]
    agent: Option<String>,
    /// Client-chosen task id (a ULID): makes a retried submit idempotent.
    #[serde(default)]
    id: Option<String>,
}

fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    example: &str,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!(
                "request body is over the limit of {MAX_REQUEST_BYTES} bytes"
            ))
        } else {
            ApiError::BadRequest(format!("could not read the request body: {e}"))
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(format!(
            "request body is empty; send JSON like {example}"
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "request body is not valid: {e}; send JSON like {example}"
        ))
    })
}

async fn submit_task(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: SubmitBody = parse_body(body, r#"{"input": "What's the weather in Paris?"}"#)?;
    let id = match body.id.as_deref() {
        Some(text) => Some(
            text.parse::<TaskId>()
                .map_err(|e| ApiError::BadRequest(format!("id {text:?} is not a ULID: {e}")))?,
        ),
        None => None,
    };
    let agent = body.agent.as_deref().unwrap_or("primary");
    let task = s.kernel.submit(agent, &body.input, id).await?;
    let location = format!("/tasks/{}", task.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(task),
    )
        .into_response())
}

fn parse_id(id: &str) -> Result<TaskId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a task id (a 26-character ULID)")))
}

async fn get_task(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match s.kernel.ports().tasks.get_task(id).await? {
        Some(task) => Ok(Json(task).into_response()),
        None => Err(ApiError::NotFound(format!("no task {id}"))),
    }
}

async fn task_events(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if s.kernel.ports().tasks.get_task(id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no task {id}")));
    }
    let events = s.kernel.ports().tasks.task_events(id).await?;
    Ok(Json(json!({ "task": id, "events": events })).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_tasks(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let status = match q.status.as_deref() {
        Some(text) => Some(TaskStatus::parse(text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown status {text:?}; use queued, running, waiting, succeeded, failed or cancelled"
            ))
        })?),
        None => None,
    };
    let limit = q.limit.unwrap_or(50).min(1000);
    let tasks = s.kernel.ports().tasks.list_tasks(status, limit).await?;
    Ok(Json(json!({ "tasks": tasks })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn cancel_task(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let empty = matches!(&body, Ok(b) if b.iter().all(u8::is_ascii_whitespace));
    let body: CancelBody = if empty {
        CancelBody::default()
    } else {
        parse_body(body, r#"{"reason": "no longer needed"}"#)?
    };
    let reason = body
        .reason
        .unwrap_or_else(|| "cancelled through the API".into());
    match s.kernel.cancel(id, &reason).await? {
        Some(task) if task.status == TaskStatus::Cancelled => Ok(Json(task).into_response()),
        Some(task) => Err(ApiError::Conflict(format!(
            "task {id} is already {}; only an unfinished task can be cancelled",
            task.status
        ))),
        None => Err(ApiError::NotFound(format!("no task {id}"))),
    }
}

async fn dead_letters(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if s.kernel.catalog().get(&name).is_none() {
        return Err(ApiError::NotFound(format!(
            "unknown agent '{name}'; known agents: {}",
            s.kernel.catalog().names()
        )));
    }
    let Some(inbox) = &s.inbox else {
        return Err(ApiError::NotFound(
            "dead letters are not readable through this deployment's API".into(),
        ));
    };
    let items: Vec<Value> = inbox
        .dead_letters(&name, 100)
        .await?
        .into_iter()
        .map(|d| json!({"reason": d.reason, "at": d.at, "receive_count": d.receive_count, "body": d.body}))
        .collect();
    Ok(Json(json!({ "agent": name, "dead_letters": items })).into_response())
}
