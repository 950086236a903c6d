//! Approval routes: the caller's tenant's pending approvals, one approval, approve and
//! deny (each decided once: a second decision is a 409), and a task's audit log with
//! its verification (`admin`).

use super::AppState;
use super::auth::Caller;
use super::problem::ApiError;
use super::views::{self, Decision, Limit};
use aos_kernel::TaskId;
use aos_kernel::approvals::{ApprovalStatus, DecideError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use schemars::JsonSchema;
use serde::Serialize;

pub use aos_kernel::approvals::Approval;
pub use aos_kernel::audit::{AuditRecord, AuditReport};

/// `GET /v1/approvals`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ApprovalList {
    pub approvals: Vec<Approval>,
}

/// `GET /v1/tasks/{id}/audit`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditLog {
    pub task: TaskId,
    /// Every audit record of the task, in chain order per session.
    pub records: Vec<AuditRecord>,
    /// Whether every chain recomputes; `first_mismatch` names the first record that
    /// does not match.
    pub verification: AuditReport,
    /// Whether the log holds (`verification.first_mismatch` is absent).
    pub ok: bool,
}

pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    q: Result<Query<Limit>, QueryRejection>,
) -> Result<Json<ApprovalList>, ApiError> {
    let q = views::query(q)?;
    let limit = views::limit(q.limit, 100, 1000)?;
    let approvals = s.kernel.pending_approvals(&caller.tenant, limit).await?;
    Ok(Json(ApprovalList { approvals }))
}

pub(crate) async fn get_approval(
    State(s): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Approval>, ApiError> {
    let id = views::path(id)?;
    s.kernel
        .approval(&caller.tenant, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no approval {id:?}")))
}

async fn decide(
    s: AppState,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    approve: bool,
) -> Result<Json<Approval>, ApiError> {
    let id = views::path(id)?;
    let body: Decision = views::optional_body(body, r#"{"note": "checked with finance"}"#)?;
    // A decision is made once: a second one, even the same, is a 409 that says who
    // decided (the kernel would take the same decision again without effect).
    let Some(current) = s.kernel.approval(&caller.tenant, &id).await? else {
        return Err(ApiError::NotFound(format!("no approval {id:?}")));
    };
    match current.status {
        ApprovalStatus::Pending => {}
        ApprovalStatus::Expired => {
            return Err(ApiError::Conflict(format!(
                "approval {id} expired with its task; nothing can run now"
            )));
        }
        decided => {
            return Err(ApiError::Conflict(format!(
                "approval {id} was already {} by {}",
                match decided {
                    ApprovalStatus::Approved => "approved",
                    _ => "denied",
                },
                current.decided_by.as_deref().unwrap_or("someone")
            )));
        }
    }
    s.kernel
        .decide(
            &caller.tenant,
            &id,
            approve,
            &caller.sub,
            body.note.as_deref(),
        )
        .await
        .map(Json)
        .map_err(|e| match e {
            DecideError::NotFound(_) => ApiError::NotFound(format!("no approval {id:?}")),
            DecideError::Port(p) => p.into(),
            other => ApiError::Conflict(other.to_string()),
        })
}

pub(crate) async fn approve(
    State(s): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Approval>, ApiError> {
    decide(s, caller, id, body, true).await
}

pub(crate) async fn deny(
    State(s): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Approval>, ApiError> {
    decide(s, caller, id, body, false).await
}

pub(crate) async fn audit(
    State(s): State<AppState>,
    caller: Caller,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<AuditLog>, ApiError> {
    let id = views::path(id)?;
    let task = super::tasks::owned(&s, &caller, &id).await?;
    let records = s.kernel.audit_log(task.id).await?;
    let verification = s.kernel.verify_audit(task.id).await?;
    Ok(Json(AuditLog {
        task: task.id,
        records,
        ok: verification.ok(),
        verification,
    }))
}
