//! Task routes: submit (idempotent with an `Idempotency-Key`), read, list a page,
//! cancel, the timeline and a live stream of it. Every read goes through
//! [`Kernel::task_for`] with the caller's tenant, so another tenant's task is a 404
//! exactly like a task that does not exist.

use super::AppState;
use super::auth::Caller;
use super::problem::ApiError;
use super::views::{self, CancelTask, ListTasks, StreamEnd, SubmitTask, TaskEvents, TaskPage};
use aos_kernel::kernel::Submission;
use aos_kernel::ports::TaskQuery;
use aos_kernel::{Event, Task, TaskId, TaskStatus};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

/// The agent a task goes to when the body names none.
pub const DEFAULT_AGENT: &str = "primary";

pub(crate) async fn submit(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    lambda: Option<Extension<lambda_http::Context>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: SubmitTask = views::json_body(body, r#"{"input": "What's the weather in Paris?"}"#)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::BadRequest("Idempotency-Key is 1-255 printable ASCII characters".into())
        })?),
    };
    // X-Ray's trace id becomes the task's, so every envelope and log line of the task
    // can be found from the request's trace: API Gateway's header first, else the
    // api function's own invocation (the Lambda context lambda_http passes on).
    let xray = headers
        .get("x-amzn-trace-id")
        .and_then(|v| v.to_str().ok())
        .and_then(xray_root)
        .or_else(|| {
            lambda
                .as_ref()
                .and_then(|Extension(c)| c.xray_trace_id.as_deref())
                .and_then(xray_root)
        });
    let submitted = s
        .kernel
        .submit_traced(
            Submission {
                tenant: &caller.tenant,
                agent: body.agent.as_deref().unwrap_or(DEFAULT_AGENT),
                input: &body.input,
                idempotency_key: key,
            },
            xray,
        )
        .await?;
    let status = if submitted.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/tasks/{}", submitted.task.id);
    Ok((status, [(header::LOCATION, location)], Json(submitted.task)).into_response())
}

/// The `Root` of an X-Ray trace header (`Root=1-5759e988-bd862e3fe1be46a994272793;
/// Parent=…;Sampled=1`) when it is a well-formed X-Ray trace id (`1-` then 8 and 24
/// hex digits); anything else is ignored, never refused.
pub fn xray_root(header: &str) -> Option<&str> {
    let root = header
        .split(';')
        .find_map(|part| part.trim().strip_prefix("Root="))?;
    let mut parts = root.split('-');
    let well_formed = parts.next() == Some("1")
        && parts
            .next()
            .is_some_and(|t| t.len() == 8 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        && parts
            .next()
            .is_some_and(|r| r.len() == 24 && r.bytes().all(|b| b.is_ascii_hexdigit()))
        && parts.next().is_none();
    well_formed.then_some(root)
}

/// The caller's task `id`, or a 404 that reads the same whether it exists elsewhere.
pub(crate) async fn owned(s: &AppState, caller: &Caller, id: &str) -> Result<Task, ApiError> {
    let id = views::task_id(id)?;
    s.kernel
        .task_for(&caller.tenant, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))
}

pub(crate) async fn get_task(
    State(s): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Task>, ApiError> {
    let id = views::path(id)?;
    Ok(Json(owned(&s, &caller, &id).await?))
}

fn encode_cursor(id: TaskId) -> String {
    URL_SAFE_NO_PAD.encode(format!("before:{id}"))
}

fn decode_cursor(cursor: &str) -> Result<TaskId, ApiError> {
    let bad = || {
        ApiError::BadRequest(
            "cursor is not one this API gave out; pass the next_cursor of the previous page".into(),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix("before:")
        .and_then(|id| id.parse().ok())
        .ok_or_else(bad)
}

pub(crate) fn parse_status(text: &str) -> Result<TaskStatus, ApiError> {
    TaskStatus::parse(text).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown status {text:?}; use queued, running, waiting, succeeded, failed or cancelled"
        ))
    })
}

pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    q: Result<Query<ListTasks>, QueryRejection>,
) -> Result<Json<TaskPage>, ApiError> {
    let q = views::query(q)?;
    let status = q.status.as_deref().map(parse_status).transpose()?;
    let limit = views::limit(q.limit, 50, 1000)?;
    let before = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut tasks = s
        .kernel
        .ports()
        .tasks
        .list_tasks(&TaskQuery {
            tenant: Some(caller.tenant.clone()),
            status,
            before,
            limit: limit + 1,
        })
        .await?;
    // The store filters by tenant; a second look costs nothing and keeps the rule here.
    tasks.retain(|t| t.tenant == caller.tenant);
    let next_cursor = if tasks.len() > limit {
        tasks.truncate(limit);
        tasks.last().map(|t| encode_cursor(t.id))
    } else {
        None
    };
    Ok(Json(TaskPage { tasks, next_cursor }))
}

pub(crate) async fn cancel(
    State(s): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Task>, ApiError> {
    let id = views::path(id)?;
    let task = owned(&s, &caller, &id).await?;
    let body: CancelTask = views::optional_body(body, r#"{"reason": "no longer needed"}"#)?;
    if task.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "task {} is already {}; only an unfinished task can be cancelled",
            task.id, task.status
        )));
    }
    let reason = body
        .reason
        .unwrap_or_else(|| format!("cancelled through the API by {}", caller.sub));
    match s.kernel.cancel(task.id, &reason).await? {
        Some(t) if t.status == TaskStatus::Cancelled => Ok(Json(t)),
        Some(t) => Err(ApiError::Conflict(format!(
            "task {} is already {}; only an unfinished task can be cancelled",
            t.id, t.status
        ))),
        None => Err(ApiError::NotFound(format!("no task {}", task.id))),
    }
}

/// The timeline a client sees: every event but the audit records.
async fn timeline(s: &AppState, id: TaskId) -> Result<Vec<Event>, ApiError> {
    let mut events = s.kernel.ports().tasks.task_events(id).await?;
    events.retain(|e| !e.is_audit());
    Ok(events)
}

pub(crate) async fn events(
    State(s): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<TaskEvents>, ApiError> {
    let id = views::path(id)?;
    let task = owned(&s, &caller, &id).await?;
    Ok(Json(TaskEvents {
        task: task.id,
        events: timeline(&s, task.id).await?,
    }))
}

/// How the event stream polls the store.
#[derive(Clone, Copy, Debug)]
pub struct StreamSettings {
    /// Time between looks at the store for new events.
    pub poll: Duration,
    /// Longest a stream stays open; the client reconnects with `Last-Event-ID`. Keep
    /// it under the API's own timeout where responses are buffered (API Gateway: 30 s).
    pub max: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(250),
            max: Duration::from_secs(15 * 60),
        }
    }
}

struct Streaming {
    s: AppState,
    task: TaskId,
    /// Event ids already sent (timeline order is by envelope, not by time of
    /// writing, so a new event may sort before one already sent).
    sent: HashSet<String>,
    /// Events found but not yet sent.
    pending: std::collections::VecDeque<Event>,
    started: tokio::time::Instant,
    first: bool,
    /// The `end` event, due once every event is out.
    end: Option<SseEvent>,
    done: bool,
}

impl Streaming {
    /// The next SSE event: a timeline event, or `end` once the task is final and
    /// every event is out; `None` closes the stream.
    async fn next(&mut self) -> Option<Result<SseEvent, Infallible>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(Ok(sse_event(&e)));
            }
            if let Some(end) = self.end.take() {
                self.done = true;
                return Some(Ok(end));
            }
            if self.done || self.started.elapsed() > self.s.stream.max {
                return None;
            }
            if !self.first {
                tokio::time::sleep(self.s.stream.poll).await;
            }
            self.first = false;
            // Read the task before its events: events written before it turned
            // final are then all in the read that follows.
            let task = match self.s.kernel.ports().tasks.get_task(self.task).await {
                Ok(Some(t)) => t,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, task = %self.task, "event stream: store read failed");
                    continue;
                }
            };
            let events = match timeline(&self.s, self.task).await {
                Ok(ev) => ev,
                Err(_) => continue,
            };
            for e in events {
                if self.sent.insert(e.id.to_string()) {
                    self.pending.push_back(e);
                }
            }
            if task.status.is_final() {
                let end = StreamEnd {
                    task: task.id,
                    status: task.status,
                };
                self.end = Some(
                    SseEvent::default()
                        .event("end")
                        .data(serde_json::to_string(&end).unwrap_or_default()),
                );
            }
        }
    }
}

fn sse_event(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.id.to_string())
        .event("event")
        .data(serde_json::to_string(e).unwrap_or_default())
}

pub(crate) async fn stream(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = views::path(id)?;
    let task = owned(&s, &caller, &id).await?;
    let mut sent = HashSet::new();
    // Resume after the last event the client saw: everything up to it in timeline
    // order counts as sent.
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        let events = timeline(&s, task.id).await?;
        if let Some(pos) = events.iter().position(|e| e.id.to_string() == last) {
            sent.extend(events[..=pos].iter().map(|e| e.id.to_string()));
        }
    }
    let state = Streaming {
        s,
        task: task.id,
        sent,
        pending: Default::default(),
        started: tokio::time::Instant::now(),
        first: true,
        end: None,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        let item = st.next().await?;
        Some((item, st))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
