//! The data model: envelopes on queues, agent definitions, sessions, tasks and their
//! timelines. Everything here is plain serde data, the same on every backend.

use crate::ids::{EnvelopeId, EventId, TaskId};
use crate::llm::Message;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest envelope body carried inline; bigger bodies travel through the blob store.
pub const INLINE_BODY_LIMIT: usize = 192 * 1024;
/// Largest body an envelope may carry at all, inline or by reference.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A validated agent name: lowercase ASCII letters, digits, `-` and `_`, starting with a
/// letter, at most 64 characters. It names a queue, a Lambda function and a directory.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentName(String);

impl AgentName {
    pub fn new(name: impl Into<String>) -> Result<Self, ModelError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(Self(name))
        } else {
            Err(ModelError::InvalidName(name))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl schemars::JsonSchema for AgentName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AgentName".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[a-z][a-z0-9_-]{0,63}$",
            "description": "An agent name: lowercase letters, digits, '-' or '_', starting with a letter."
        })
    }
}

impl TryFrom<String> for AgentName {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}
impl std::borrow::Borrow<str> for AgentName {
    fn borrow(&self) -> &str {
        &self.0
    }
}
impl From<AgentName> for String {
    fn from(n: AgentName) -> String {
        n.0
    }
}
impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The tenant of everything made without one: the CLI, schedules of a single-tenant
/// deployment, and records written before tenants existed.
pub const DEFAULT_TENANT: &str = "default";

pub fn default_tenant() -> String {
    DEFAULT_TENANT.to_string()
}

fn is_default_tenant(t: &str) -> bool {
    t == DEFAULT_TENANT
}

/// A tenant name: 1-64 lowercase ASCII letters, digits, `-` and `_`, starting with a
/// letter or digit. It never contains `/`, so `tenant/agent` keys cannot collide with
/// a bare agent name.
pub fn valid_tenant(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && t.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Where an agent's long-term memory lives: per tenant, so no tenant reads another's
/// notes (the default tenant keeps the bare agent name, as before tenants).
pub fn memory_scope(tenant: &str, agent: &str) -> String {
    if is_default_tenant(tenant) {
        agent.to_string()
    } else {
        format!("{tenant}/{agent}")
    }
}

/// One agent's working state for one task is keyed by (agent, session). The session id
/// is also the FIFO `MessageGroupId`, so one session's messages apply in order.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    pub fn new(id: impl Into<String>) -> Result<Self, ModelError> {
        let id = id.into();
        // The SQS MessageGroupId alphabet, so a session id is always a valid group id.
        let ok = !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic());
        if ok {
            Ok(Self(id))
        } else {
            Err(ModelError::InvalidSession(id))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// For ids the kernel makes from ULIDs, which are always valid.
    pub(crate) fn from_ulid(id: ulid::Ulid) -> Self {
        Self(id.to_string())
    }
}
impl TryFrom<String> for SessionId {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}
impl From<SessionId> for String {
    fn from(n: SessionId) -> String {
        n.0
    }
}
impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The (agent, session) pair that keys session state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionKey {
    pub agent: AgentName,
    pub session: SessionId,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error(
        "invalid agent name {0:?}: use 1-64 lowercase letters, digits, '-' or '_', starting with a letter"
    )]
    InvalidName(String),
    #[error("invalid session id {0:?}: use 1-128 printable ASCII characters without spaces")]
    InvalidSession(String),
    #[error("invalid agent definition: {0}")]
    InvalidAgent(String),
}

/// What an envelope asks of its receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// New work from a person (through the API, the CLI or a schedule).
    Task,
    /// A request from one agent to another; answered by a `reply`.
    Message,
    /// The answer to a `message`, addressed to the asker's session.
    Reply,
    /// A scheduled wake-up the agent asked for.
    Wake,
    /// A person's decision on something an agent asked to have approved.
    Approval,
    /// A call of a tool with effects (neither read-only nor idempotent), run in a wake
    /// of its own at most once; its result comes back to the asking session as a
    /// `reply`.
    Tool,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Kind::Task => "task",
            Kind::Message => "message",
            Kind::Reply => "reply",
            Kind::Wake => "wake",
            Kind::Approval => "approval",
            Kind::Tool => "tool",
        };
        f.write_str(s)
    }
}

/// Where the answer to a `message` goes: the asking agent's session and the tool call
/// that is waiting for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyTo {
    pub agent: AgentName,
    pub session: SessionId,
    pub call_id: String,
}

/// The only thing that travels on a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id, also the queue's deduplication id and the receiver's applied marker.
    pub id: EnvelopeId,
    pub task: TaskId,
    /// The tenant the task belongs to; a wake checks it against the task's.
    #[serde(default = "default_tenant", skip_serializing_if = "is_default_tenant")]
    pub tenant: String,
    /// The receiver's session this envelope applies to (the FIFO message group).
    pub session: SessionId,
    /// An agent name, or `user` / `scheduler` for envelopes from outside.
    pub from: String,
    pub to: AgentName,
    pub kind: Kind,
    /// Text body; empty when the body travels by reference.
    #[serde(default)]
    pub body: String,
    /// Blob-store key of a body too large to carry inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_ref: Option<String>,
    /// How many envelopes led to this one; bounded by the task's hop limit.
    pub hop: u32,
    /// Correlates every envelope, log line and event of one task across agents.
    pub trace_id: String,
    /// Milliseconds since the Unix epoch.
    pub sent_at: u64,
    /// Set on `message`: where the receiver sends its `reply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyTo>,
    /// Set on `reply`, `wake` and `approval`: the tool call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// Set on a `reply` whose body is a tool's error, so the model sees it flagged as
    /// one (a tool with effects answers its caller by a reply).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

impl Envelope {
    pub fn key(&self) -> SessionKey {
        SessionKey {
            agent: self.to.clone(),
            session: self.session.clone(),
        }
    }

    /// Parses an envelope from queue text with an error a person can act on.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("envelope is empty".into());
        }
        serde_json::from_str(text).map_err(|e| format!("envelope does not parse: {e}"))
    }

    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A task's spending limits. Checked before every model call; a breach fails the task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    pub max_llm_calls: u64,
    pub max_tokens: u64,
    /// Micro-dollars (1e-6 USD).
    pub max_cost_micros: u64,
    /// Longest chain of envelopes one task may produce.
    pub max_hops: u32,
    /// Wall-clock lifetime of a task.
    pub timeout_secs: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_llm_calls: 64,
            max_tokens: 400_000,
            max_cost_micros: 2_000_000,
            max_hops: 16,
            timeout_secs: 900,
        }
    }
}

/// What a task has consumed so far. Stored as counters that wakes add to, so concurrent
/// wakes of one task never overwrite each other.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(default)]
pub struct Usage {
    pub wakes: u64,
    pub llm_calls: u64,
    /// Input tokens billed at the full rate (not read from or written to a cache).
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
    pub tool_calls: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
}

/// Micro-dollars as a person reads them: `$0.000192`, `$0.0123`, `$1.2500`.
pub fn dollars(micros: u64) -> String {
    let d = micros as f64 / 1e6;
    if micros < 10_000 {
        format!("${d:.6}")
    } else {
        format!("${d:.4}")
    }
}

impl Usage {
    pub fn add(&mut self, o: &Usage) {
        self.wakes += o.wakes;
        self.llm_calls += o.llm_calls;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cost_micros += o.cost_micros;
        self.tool_calls += o.tool_calls;
        self.cache_read_tokens += o.cache_read_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
    }
    /// Every token the model read or wrote, cached or not.
    pub fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Queued,
    Running,
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Waiting => "waiting",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => TaskStatus::Queued,
            "running" => TaskStatus::Running,
            "waiting" => TaskStatus::Waiting,
            "succeeded" => TaskStatus::Succeeded,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            _ => return None,
        })
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a user sees of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Task {
    pub id: TaskId,
    /// The tenant that submitted the task; no other tenant can see or touch it.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    pub status: TaskStatus,
    /// The agent the task was submitted to.
    pub agent: AgentName,
    pub input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Why the task failed or was cancelled, in words a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub usage: Usage,
    pub budget: Budget,
    pub trace_id: String,
    pub created_at: u64,
    pub updated_at: u64,
    /// The envelope that starts the task; re-sent by recovery while the task is queued.
    pub first_envelope: EnvelopeId,
}

impl Task {
    pub fn deadline_ms(&self) -> u64 {
        self.created_at
            .saturating_add(self.budget.timeout_secs.saturating_mul(1000))
    }
}

/// A change a wake makes to its task. Counters add; a status change applies only while
/// the task is not final, so the first final status wins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUpdate {
    pub usage: Usage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TaskUpdate {
    /// Applies this update to a task record as every store must.
    pub fn apply_to(&self, task: &mut Task, now_ms: u64) {
        task.usage.add(&self.usage);
        if let Some(status) = self.status
            && !task.status.is_final()
        {
            task.status = status;
            if self.result.is_some() {
                task.result.clone_from(&self.result);
            }
            if self.error.is_some() {
                task.error.clone_from(&self.error);
            }
        }
        task.updated_at = now_ms;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Submitted,
    Woke,
    Model,
    ToolCall,
    Delegated,
    Replied,
    Scheduled,
    Waiting,
    Answer,
    Failed,
    Ignored,
    DeadLettered,
    Cancelled,
    /// A tool call waits for a person's decision (detail: the approval as JSON).
    ApprovalRequested,
    /// A person decided on an approval (detail: the decision as JSON).
    ApprovalDecided,
    /// A hash-chained audit record (detail: the record as JSON); not part of the
    /// timeline people read.
    Audit,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Submitted => "submitted",
            EventKind::Woke => "woke",
            EventKind::Model => "model",
            EventKind::ToolCall => "tool_call",
            EventKind::Delegated => "delegated",
            EventKind::Replied => "replied",
            EventKind::Scheduled => "scheduled",
            EventKind::Waiting => "waiting",
            EventKind::Answer => "answer",
            EventKind::Failed => "failed",
            EventKind::Ignored => "ignored",
            EventKind::DeadLettered => "dead_lettered",
            EventKind::Cancelled => "cancelled",
            EventKind::ApprovalRequested => "approval_requested",
            EventKind::ApprovalDecided => "approval_decided",
            EventKind::Audit => "audit",
        }
    }
}

/// One entry of a task's append-only timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Event {
    pub id: EventId,
    pub task: TaskId,
    pub at: u64,
    pub agent: String,
    pub kind: EventKind,
    pub detail: String,
    /// The envelope whose wake wrote this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<EnvelopeId>,
}

impl Event {
    /// An audit record rather than a timeline entry.
    pub fn is_audit(&self) -> bool {
        self.kind == EventKind::Audit
    }
}

/// A note an agent keeps across tasks (its long-term memory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryNote {
    pub id: String,
    pub at: u64,
    pub text: String,
}

/// One outbox entry: an envelope to send now, or at `deliver_at` through the scheduler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub envelope: Envelope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_at: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// Thinking or ready to think.
    Active,
    /// Asleep until replies or a scheduled wake arrive.
    Waiting,
    /// Answered; a later message reopens it.
    Done,
}

/// Who started a session and where its answer goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyTo>,
}

/// A tool call of the open model turn, waiting for its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSlot {
    pub id: String,
    pub name: String,
    /// Where an asynchronous call went (agent name), for the timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default)]
    pub is_error: bool,
    /// The arguments of a call waiting for a person's approval, run once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// The approval this call waits for (the id of the decision envelope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// The end of a session's audit chain: its last record's sequence number and hash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

/// One agent's working state for one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub agent: AgentName,
    pub id: SessionId,
    pub task: TaskId,
    /// Incremented by every commit; the commit is conditioned on the version it read.
    pub version: u64,
    pub status: SessionStatus,
    pub origin: Origin,
    /// The conversation with the model, in the provider-neutral shape.
    pub transcript: Vec<Message>,
    /// Tool calls of the last model turn still waiting for results (fan-in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_calls: Vec<CallSlot>,
    /// Requests that arrived while a turn was open; read once the turn closes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<String>,
    pub wakes: u64,
    pub created_at: u64,
    pub updated_at: u64,
    /// The session's audit chain so far; committed with the session, so the chain
    /// advances exactly when the session does.
    #[serde(default)]
    pub audit: AuditHead,
}

impl Session {
    pub fn key(&self) -> SessionKey {
        SessionKey {
            agent: self.agent.clone(),
            session: self.id.clone(),
        }
    }
}

/// Per-agent limits from `agent.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentLimits {
    /// Model calls one wake may make before the task fails; stops a tool loop.
    pub max_steps_per_wake: u32,
    /// Output tokens asked of the model per call.
    pub max_output_tokens: u32,
    /// Tool calls run from one model response; the rest get an error result.
    pub max_tool_calls_per_step: u32,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            max_steps_per_wake: 8,
            max_output_tokens: 1024,
            max_tool_calls_per_step: 8,
        }
    }
}

/// An agent definition: what `agent.toml` beside each agent's function says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    pub name: AgentName,
    /// One line a person (and the orchestrator) reads to know what this agent is for.
    pub purpose: String,
    pub system_prompt: String,
    /// Model route, `provider:model`. `offline` is the built-in deterministic model;
    /// `auto` is the runtime's default (`aos --model`, else a provider whose key is
    /// set, else `offline`).
    #[serde(default = "default_model")]
    pub model: String,
    /// A cheaper route for *simple* steps: a step whose request ends with tool results
    /// only (the model reads answers back rather than planning from a new request).
    #[serde(default)]
    pub simple_model: Option<String>,
    /// Routes tried in order when the chosen one fails transiently.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Synchronous tools this agent may call.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Agents this agent may message.
    #[serde(default)]
    pub may_message: Vec<AgentName>,
    /// Budgets for tasks submitted to this agent.
    #[serde(default)]
    pub budget: Budget,
    #[serde(default)]
    pub limits: AgentLimits,
    /// Words that route a request to this agent when the offline model orchestrates.
    #[serde(default)]
    pub keywords: Vec<String>,
}

fn default_model() -> String {
    "auto".into()
}

impl AgentDef {
    /// Parses and checks an `agent.toml`.
    pub fn from_toml(text: &str) -> Result<Self, ModelError> {
        let def: AgentDef =
            toml::from_str(text).map_err(|e| ModelError::InvalidAgent(e.to_string()))?;
        if def.purpose.trim().is_empty() {
            return Err(ModelError::InvalidAgent(format!(
                "agent {}: purpose is empty",
                def.name
            )));
        }
        if def.may_message.contains(&def.name) {
            return Err(ModelError::InvalidAgent(format!(
                "agent {} lists itself in may_message",
                def.name
            )));
        }
        if def.limits.max_steps_per_wake == 0 {
            return Err(ModelError::InvalidAgent(format!(
                "agent {}: limits.max_steps_per_wake must be at least 1",
                def.name
            )));
        }
        Ok(def)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_with_a_readable_reason() {
        assert!(AgentName::new("weather").is_ok());
        let err = AgentName::new("Weather!").unwrap_err().to_string();
        assert!(err.contains("lowercase"), "{err}");
        assert!(SessionId::new("has space").is_err());
        assert!(SessionId::new("x".repeat(129)).is_err());
    }

    #[test]
    fn envelope_parse_errors_say_what_is_wrong() {
        assert_eq!(Envelope::parse("  ").unwrap_err(), "envelope is empty");
        let err = Envelope::parse("{\"id\": 3}").unwrap_err();
        assert!(err.starts_with("envelope does not parse"), "{err}");
    }

    #[test]
    fn agent_toml_rejects_unknown_fields_and_self_messaging() {
        let ok = "name='a'\npurpose='p'\nsystem_prompt='s'\n";
        assert!(AgentDef::from_toml(ok).is_ok());
        let bad = format!("{ok}colour='blue'\n");
        assert!(AgentDef::from_toml(&bad).is_err());
        let selfish = format!("{ok}may_message=['a']\n");
        assert!(
            AgentDef::from_toml(&selfish)
                .unwrap_err()
                .to_string()
                .contains("itself")
        );
    }

    #[test]
    fn first_final_status_wins() {
        let mut t = Task {
            tenant: "default".into(),
            id: TaskId::new(1),
            status: TaskStatus::Running,
            agent: AgentName::new("a").unwrap(),
            input: "i".into(),
            result: None,
            error: None,
            usage: Usage::default(),
            budget: Budget::default(),
            trace_id: "t".into(),
            created_at: 1,
            updated_at: 1,
            first_envelope: EnvelopeId::new(1),
        };
        let fail = TaskUpdate {
            status: Some(TaskStatus::Failed),
            error: Some("hop limit".into()),
            usage: Usage {
                wakes: 1,
                ..Usage::default()
            },
            ..TaskUpdate::default()
        };
        fail.apply_to(&mut t, 2);
        let succeed = TaskUpdate {
            status: Some(TaskStatus::Succeeded),
            result: Some("late".into()),
            usage: Usage {
                wakes: 1,
                ..Usage::default()
            },
            ..TaskUpdate::default()
        };
        succeed.apply_to(&mut t, 3);
        assert_eq!(t.status, TaskStatus::Failed);
        assert_eq!(t.result, None);
        assert_eq!(t.usage.wakes, 2);
    }
}
