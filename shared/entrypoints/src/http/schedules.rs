//! Schedule routes: a cron, rate or one-time task (or wake-up) for an agent, on
//! behalf of the caller's tenant; list and delete. The store is the [`Schedules`]
//! port (the embedded store locally, EventBridge Scheduler on AWS); a deployment
//! without one answers 501.

use super::AppState;
use super::auth::Caller;
use super::problem::{ApiError, no_content};
use super::views;
use aos_kernel::{Schedule, ScheduleKind, Schedules, When};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `POST /v1/schedules`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// The agent each firing submits a task to.
    #[schemars(pattern(r"^[a-z][a-z0-9_-]{0,63}$"))]
    pub agent: String,
    /// `task` (default): each firing submits `input` as a task; `wakeup`: a task
    /// whose input is `Scheduled wake-up: <input>`.
    #[serde(default)]
    pub kind: Option<ScheduleKind>,
    /// What each firing asks.
    #[schemars(length(min = 1), pattern(r"\S"))]
    pub input: String,
    /// `cron(0 9 ? * MON-FRI *)`, `rate(5 minutes)`, `at(2030-01-01T09:00:00)` or an
    /// RFC 3339 time; UTC.
    pub when: String,
}

/// `GET /v1/schedules`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
}

fn port(s: &AppState) -> Result<&Arc<dyn Schedules>, ApiError> {
    s.schedules.as_ref().ok_or_else(|| {
        ApiError::NotImplemented("this deployment's API does not manage schedules".into())
    })
}

pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<ScheduleList>, ApiError> {
    let mut schedules = port(&s)?.list(&caller.tenant).await?;
    schedules.retain(|x| x.tenant == caller.tenant);
    Ok(Json(ScheduleList { schedules }))
}

pub(crate) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let port = port(&s)?;
    let body: NewSchedule = views::json_body(
        body,
        r#"{"agent": "primary", "input": "Morning briefing", "when": "cron(0 9 * * ? *)"}"#,
    )?;
    let when = When::parse(&body.when).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if body.input.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "input is empty; say what each firing should ask".into(),
        ));
    }
    let max = s.kernel.config().max_input_bytes;
    if body.input.len() > max {
        return Err(ApiError::TooLarge(format!(
            "input is {} bytes, over the limit of {max} bytes",
            body.input.len()
        )));
    }
    let Some(def) = s.kernel.catalog().get(&body.agent) else {
        return Err(ApiError::Unprocessable(format!(
            "unknown agent '{}'; known agents: {}",
            body.agent,
            s.kernel.catalog().names()
        )));
    };
    let schedule = Schedule::new(
        caller.tenant.clone(),
        def.name.clone(),
        body.kind.unwrap_or(ScheduleKind::Task),
        body.input,
        when,
        caller.sub.clone(),
        s.kernel.now_ms(),
    );
    port.create(&schedule).await?;
    let location = format!("/v1/schedules/{}", schedule.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(schedule),
    )
        .into_response())
}

pub(crate) async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = views::path(id)?;
    if port(&s)?.delete(&caller.tenant, &id).await? {
        Ok(no_content())
    } else {
        Err(ApiError::NotFound(format!("no schedule {id:?}")))
    }
}
