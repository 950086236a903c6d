//! Human approval of risky tool calls.
//!
//! A call of a tool flagged `requires_approval` is not run: the wake records an
//! `approval_requested` event (this module's [`ApprovalRequest`]) and the session
//! sleeps with the call open. A person approves or denies it (API or CLI); the kernel
//! records the decision as an `approval_decided` event and sends the asking session an
//! `approval` envelope whose id was fixed when the approval was asked. That id is the
//! approval's identity: a second decision, a retry or a race sends the same envelope
//! id, which the session applies at most once. Approved, the tool runs (once, as any
//! tool); denied, the model gets an error result saying who denied it and why. An
//! approval nobody decided expires with its task's deadline, when the sweep fails the
//! task.

use crate::ids::{EnvelopeId, EventId, TaskId};
use crate::model::{AgentName, Event, EventKind, SessionId, Task};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a wake records when it asks for an approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The id of the decision envelope, fixed when asked.
    pub envelope: EnvelopeId,
    pub agent: AgentName,
    pub session: SessionId,
    pub call_id: String,
    pub tool: String,
    pub arguments: Value,
    /// Why the model made the call, in its own words when it gave any.
    pub reason: String,
    pub hop: u32,
    pub trace_id: String,
    pub asked_at: u64,
}

/// A person's decision, as recorded and as the `approval` envelope's body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub approved: bool,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default)]
    pub at: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    /// Its task ended (deadline, failure, cancel) before anybody decided.
    Expired,
}

/// An approval as people see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Approval {
    /// `<task id>.<decision envelope id>`.
    pub id: String,
    pub task: TaskId,
    pub status: ApprovalStatus,
    /// The agent that asked.
    pub agent: String,
    pub tool: String,
    pub arguments: Value,
    /// Why the call was made.
    pub reason: String,
    /// The task's request, for context.
    pub task_input: String,
    pub asked_at: u64,
    /// The task's deadline: the approval expires with it.
    pub expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecideError {
    #[error("no approval {0}")]
    NotFound(String),
    #[error("approval {id} was already {status:?} by {by}")]
    AlreadyDecided {
        id: String,
        status: ApprovalStatus,
        by: String,
    },
    #[error("approval {id} expired: its task is {task_status}")]
    Expired { id: String, task_status: String },
    #[error(transparent)]
    Port(#[from] crate::ports::PortError),
}

/// The public id of an approval.
pub fn approval_id(task: TaskId, envelope: EnvelopeId) -> String {
    format!("{task}.{envelope}")
}

/// Splits an approval id into its task and decision envelope.
pub fn parse_id(id: &str) -> Option<(TaskId, EnvelopeId)> {
    let (task, envelope) = id.split_once('.')?;
    Some((task.parse().ok()?, envelope.parse().ok()?))
}

/// The id of the event that records the decision on `envelope`: one per approval.
pub fn decision_event(envelope: EnvelopeId) -> EventId {
    EventId(envelope.derive("decision", 0))
}

/// Every approval of `task`, from its events (oldest first).
pub fn from_events(task: &Task, events: &[Event]) -> Vec<(ApprovalRequest, Approval)> {
    let mut out = Vec::new();
    for e in events
        .iter()
        .filter(|e| e.kind == EventKind::ApprovalRequested)
    {
        let Ok(req) = serde_json::from_str::<ApprovalRequest>(&e.detail) else {
            continue;
        };
        let decided = events
            .iter()
            .find(|d| d.id == decision_event(req.envelope))
            .and_then(|d| serde_json::from_str::<Decision>(&d.detail).ok());
        let status = match &decided {
            Some(d) if d.approved => ApprovalStatus::Approved,
            Some(_) => ApprovalStatus::Denied,
            None if task.status.is_final() => ApprovalStatus::Expired,
            None => ApprovalStatus::Pending,
        };
        let approval = Approval {
            id: approval_id(task.id, req.envelope),
            task: task.id,
            status,
            agent: req.agent.to_string(),
            tool: req.tool.clone(),
            arguments: req.arguments.clone(),
            reason: req.reason.clone(),
            task_input: crate::kernel::preview(&task.input, 500),
            asked_at: req.asked_at,
            expires_at: task.deadline_ms(),
            decided_by: decided.as_ref().map(|d| d.by.clone()),
            decided_at: decided.as_ref().map(|d| d.at),
            note: decided.and_then(|d| d.note),
        };
        out.push((req, approval));
    }
    out
}
