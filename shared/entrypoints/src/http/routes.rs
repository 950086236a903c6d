//! The route table of API v1: each operation's method, path, handler, scope and
//! documentation in one place. [`super::app`] serves exactly these and
//! [`super::openapi`] documents exactly these.

use super::auth::Scope;
use super::openapi::{Content, In, Route, schema};
use super::problem::ApiError;
use super::schedules::{NewSchedule, ScheduleList};
use super::views::{
    AgentDetail, AgentList, CancelTask, DeadLetterList, Decision, Health, Redrive, Redriven,
    StreamEnd, SubmitTask, TaskEvents, TaskPage,
};
use super::{agents, approvals, schedules, tasks};
use aos_kernel::{Event, Schedule, Task, TaskStatus};
use axum::Json;
use axum::http::Method;
use axum::routing::{delete, get, post};
use serde_json::{Value, json};

const LOCATION: &[(&str, &str)] = &[("Location", "The path of the resource.")];

fn ulid(description: &'static str) -> (&'static str, Value) {
    (
        description,
        json!({"type": "string", "pattern": "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$",
               "minLength": 26, "maxLength": 26}),
    )
}

fn agent_name() -> Value {
    json!({"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,63}$"})
}

/// The schema of `T` written out in place (parameters cannot point into components
/// here without a generator).
fn inline<T: schemars::JsonSchema>() -> Value {
    let mut v = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Value::Object(m) = &mut v {
        m.remove("$schema");
        m.remove("title");
    }
    v
}

fn limit(max: u64) -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": max})
}

/// Every operation of API v1.
pub fn routes() -> Vec<Route> {
    let (task_id_doc, task_id) = ulid("The task's id.");
    let id_param = |r: Route| r.param("id", In::Path, true, task_id_doc, task_id.clone());
    vec![
        Route::new(Method::GET, "/v1/health", "health", get(health))
            .doc("meta", "Is the API up", "")
            .reply(200, "The API answers.", Content::Json(schema::<Health>)),
        Route::new(Method::GET, "/v1/openapi.json", "openapi", get(openapi_doc))
            .doc("meta", "This document", "The OpenAPI 3.1 document of this API, generated from the route table the server runs.")
            .reply(200, "The document.", Content::Json(schema::<Value>)),
        Route::new(Method::POST, "/v1/tasks", "createTask", post(tasks::submit))
            .doc(
                "tasks",
                "Submit a task",
                "Records a task for an agent of the caller's tenant and queues its first envelope. \
                 The server chooses the task id. With an `Idempotency-Key`, a retry with the same \
                 key and body returns the same task (200) and the same key with another body is a \
                 409; keys are scoped to the tenant.",
            )
            .scope(Scope::Write)
            .param(
                "Idempotency-Key",
                In::Header,
                false,
                "Makes a retried submission safe: 1-255 printable ASCII characters.",
                json!({"type": "string", "pattern": "^[!-~]{1,255}$"}),
            )
            .body(schema::<SubmitTask>, true, "What to do, and for which agent.")
            .reply_with(202, "Accepted: the task is queued.", Content::Json(schema::<Task>), LOCATION)
            .reply_with(200, "The task an earlier request with this Idempotency-Key created.", Content::Json(schema::<Task>), LOCATION)
            .errors(&[409, 422]),
        Route::new(Method::GET, "/v1/tasks", "listTasks", get(tasks::list))
            .doc("tasks", "List tasks", "The caller's tenant's tasks, newest first, a page at a time.")
            .scope(Scope::Read)
            .param("status", In::Query, false, "Only tasks with this status.", inline::<TaskStatus>())
            .param("limit", In::Query, false, "Tasks per page (default 50).", limit(1000))
            .param("cursor", In::Query, false, "The `next_cursor` of the previous page.", json!({"type": "string"}))
            .reply(200, "A page of tasks.", Content::Json(schema::<TaskPage>)),
        id_param(Route::new(Method::GET, "/v1/tasks/{id}", "getTask", get(tasks::get_task)))
            .doc("tasks", "Read a task", "Its status, input, result or error, usage and budget.")
            .scope(Scope::Read)
            .reply(200, "The task.", Content::Json(schema::<Task>)),
        id_param(Route::new(Method::POST, "/v1/tasks/{id}/cancel", "cancelTask", post(tasks::cancel)))
            .doc("tasks", "Cancel a task", "Later envelopes of the task are acknowledged without running. A task already finished is a 409.")
            .scope(Scope::Write)
            .body(schema::<CancelTask>, false, "Why (optional).")
            .reply(200, "The cancelled task.", Content::Json(schema::<Task>))
            .errors(&[409]),
        id_param(Route::new(Method::GET, "/v1/tasks/{id}/events", "listTaskEvents", get(tasks::events)))
            .doc("tasks", "A task's timeline", "Every event of the task, oldest first (audit records are at `/audit`).")
            .scope(Scope::Read)
            .reply(200, "The timeline.", Content::Json(schema::<TaskEvents>)),
        id_param(Route::new(Method::GET, "/v1/tasks/{id}/events/stream", "streamTaskEvents", get(tasks::stream)))
            .doc(
                "tasks",
                "Follow a task's timeline",
                "Server-sent events: each timeline event as an `event` (its id as the SSE id, the \
                 event as JSON data), then one `end` event with the final status once the task is \
                 finished. Reconnect with `Last-Event-ID` to resume.",
            )
            .scope(Scope::Read)
            .param("Last-Event-ID", In::Header, false, "Resume after this event.", json!({"type": "string"}))
            .reply(
                200,
                "The event stream.",
                Content::EventStream(&[("event", schema::<Event>), ("end", schema::<StreamEnd>)]),
            ),
        id_param(Route::new(Method::GET, "/v1/tasks/{id}/audit", "getTaskAudit", get(approvals::audit)))
            .doc(
                "audit",
                "A task's audit log",
                "The hash-chained audit records of every session of the task, and whether each \
                 chain verifies (the first record that does not match is named).",
            )
            .scope(Scope::Admin)
            .reply(200, "The audit log.", Content::Json(schema::<approvals::AuditLog>)),
        Route::new(Method::GET, "/v1/agents", "listAgents", get(agents::list))
            .doc("agents", "List agents", "")
            .scope(Scope::Read)
            .reply(200, "The agents.", Content::Json(schema::<AgentList>)),
        Route::new(Method::GET, "/v1/agents/{name}", "getAgent", get(agents::get_agent))
            .doc("agents", "Read an agent", "Its definition and the caller's tenant's ten newest tasks for it.")
            .scope(Scope::Read)
            .param("name", In::Path, true, "The agent's name.", agent_name())
            .reply(200, "The agent.", Content::Json(schema::<AgentDetail>)),
        Route::new(Method::GET, "/v1/agents/{name}/dead-letters", "listDeadLetters", get(agents::dead_letters))
            .doc("dead letters", "An agent's dead letters", "Messages its queue gave up on, with the reason, oldest first; only the caller's tenant's.")
            .scope(Scope::Admin)
            .param("name", In::Path, true, "The agent's name.", agent_name())
            .param("limit", In::Query, false, "At most this many (default 100).", limit(1000))
            .reply(200, "The dead letters.", Content::Json(schema::<DeadLetterList>))
            .errors(&[501]),
        Route::new(Method::POST, "/v1/agents/{name}/dead-letters/redrive", "redriveDeadLetters", post(agents::redrive))
            .doc("dead letters", "Redrive dead letters", "Moves the caller's tenant's dead letters (all, or those named) back to the agent's queue.")
            .scope(Scope::Admin)
            .param("name", In::Path, true, "The agent's name.", agent_name())
            .body(schema::<Redrive>, false, "Which (optional).")
            .reply(200, "How many were moved.", Content::Json(schema::<Redriven>))
            .errors(&[501]),
        Route::new(Method::GET, "/v1/approvals", "listApprovals", get(approvals::list))
            .doc("approvals", "Pending approvals", "Tool calls of the caller's tenant's tasks waiting for a person's decision, oldest first.")
            .scope(Scope::Read)
            .param("limit", In::Query, false, "At most this many (default 100).", limit(1000))
            .reply(200, "The pending approvals.", Content::Json(schema::<approvals::ApprovalList>)),
        Route::new(Method::GET, "/v1/approvals/{id}", "getApproval", get(approvals::get_approval))
            .doc("approvals", "Read an approval", "")
            .scope(Scope::Read)
            .param("id", In::Path, true, "The approval's id.", json!({"type": "string"}))
            .reply(200, "The approval.", Content::Json(schema::<approvals::Approval>)),
        Route::new(Method::POST, "/v1/approvals/{id}/approve", "approve", post(approvals::approve))
            .doc("approvals", "Approve a tool call", "The waiting tool call runs, once. An approval already decided or expired is a 409.")
            .scope(Scope::Write)
            .param("id", In::Path, true, "The approval's id.", json!({"type": "string"}))
            .body(schema::<Decision>, false, "A note (optional).")
            .reply(200, "The decided approval.", Content::Json(schema::<approvals::Approval>))
            .errors(&[409]),
        Route::new(Method::POST, "/v1/approvals/{id}/deny", "deny", post(approvals::deny))
            .doc("approvals", "Deny a tool call", "The tool never runs; the model is told it was denied and carries on. An approval already decided or expired is a 409.")
            .scope(Scope::Write)
            .param("id", In::Path, true, "The approval's id.", json!({"type": "string"}))
            .body(schema::<Decision>, false, "A note (optional), passed to the model.")
            .reply(200, "The decided approval.", Content::Json(schema::<approvals::Approval>))
            .errors(&[409]),
        Route::new(Method::GET, "/v1/schedules", "listSchedules", get(schedules::list))
            .doc("schedules", "List schedules", "The caller's tenant's schedules.")
            .scope(Scope::Read)
            .reply(200, "The schedules.", Content::Json(schema::<ScheduleList>))
            .errors(&[501]),
        Route::new(Method::POST, "/v1/schedules", "createSchedule", post(schedules::create))
            .doc("schedules", "Create a schedule", "A task (or wake-up) for an agent on a cron or rate timetable, or once.")
            .scope(Scope::Write)
            .body(schema::<NewSchedule>, true, "The agent, what to ask, and when.")
            .reply_with(201, "Created.", Content::Json(schema::<Schedule>), LOCATION)
            .errors(&[422, 501]),
        Route::new(Method::DELETE, "/v1/schedules/{id}", "deleteSchedule", delete(schedules::delete))
            .doc("schedules", "Delete a schedule", "")
            .scope(Scope::Write)
            .param("id", In::Path, true, "The schedule's id.", json!({"type": "string"}))
            .reply(204, "Deleted.", Content::Empty)
            .errors(&[501]),
    ]
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn openapi_doc() -> Json<Value> {
    Json(super::openapi().clone())
}

/// The answer to a path no route serves.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; the API is described at /v1/openapi.json".into())
}
