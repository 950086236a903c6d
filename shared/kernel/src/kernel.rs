//! The wake cycle: dedupe, load, guard, think, commit, flush, ack.
//!
//! The rule this module keeps: a crash between any two steps loses nothing and applies
//! no effect twice. Everything a wake produces (new session state, the applied marker,
//! the outbox, task changes, timeline events) is written in one version-conditioned
//! commit; the outbox is sent only after that commit, and every id a wake creates is
//! derived from the id of the envelope that woke it. A redelivered envelope therefore
//! finds its applied marker and only re-sends the same outbox, which receivers dedupe.

use crate::approvals::{self, Approval, ApprovalRequest, ApprovalStatus, DecideError, Decision};
use crate::audit::{self, AuditRecord, AuditReport};
use crate::catalog::Catalog;
use crate::ids::{EnvelopeId, TaskId};
use crate::journal::{self, Journal, ToolRecord};
use crate::llm::{Content, LlmError, Message, Model, ModelRequest, Role, ToolSpec};
use crate::llm::{ModelResponse, StopReason};
use crate::model::{
    AgentDef, AgentName, Budget, CallSlot, DEFAULT_TENANT, Envelope, Event, EventKind,
    INLINE_BODY_LIMIT, Kind, MAX_BODY_BYTES, MemoryNote, Origin, OutboxItem, ReplyTo, Session,
    SessionId, SessionStatus, Task, TaskStatus, TaskUpdate, Usage, memory_scope, valid_tenant,
};
use crate::ports::{
    BlobStore, Clock, Commit, Loaded, Mailbox, PortError, Scheduler, SessionStore, TaskQuery,
    TaskStore,
};
use crate::prices::PriceTable;
use crate::tools::{ToolContext, ToolRegistry};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;

/// Dead letters keep at most this much of an inline body.
const DEAD_LETTER_BODY_LIMIT: usize = 64 * 1024;

/// Timeline details and task errors keep at most this many characters of text that
/// comes from outside (reasons, provider and tool errors).
const DETAIL_CHARS: usize = 500;

/// The tool names the kernel itself implements; their effects go through the outbox.
pub const SEND_MESSAGE: &str = "send_message";
pub const SCHEDULE_WAKEUP: &str = "schedule_wakeup";
pub const REMEMBER: &str = "remember";
pub const RECALL: &str = "recall";
/// Longest note `remember` keeps: memory is loaded into every wake of the agent.
pub const MEMORY_NOTE_CHARS: usize = 1000;

/// The ports a kernel runs over.
#[derive(Clone)]
pub struct Ports {
    pub sessions: Arc<dyn SessionStore>,
    pub tasks: Arc<dyn TaskStore>,
    pub mailbox: Arc<dyn Mailbox>,
    pub blobs: Arc<dyn BlobStore>,
    pub scheduler: Arc<dyn Scheduler>,
    pub model: Arc<dyn Model>,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ports")
    }
}

#[derive(Clone, Debug)]
pub struct KernelConfig {
    /// Memory notes put in front of the model.
    pub memory_limit: usize,
    /// How often a wake re-reads and retries after losing a commit race.
    pub conflict_retries: u32,
    /// Envelope bodies above this size travel through the blob store.
    pub inline_body_limit: usize,
    /// Largest task input accepted by `submit`.
    pub max_input_bytes: usize,
    /// Newest memory notes put in front of the model (the rest `recall` searches).
    pub memory_in_prompt: usize,
    /// The route of agents whose `model` is `auto`.
    pub default_model: String,
    /// A route that replaces every agent's own (`aos run --model`).
    pub model_override: Option<String>,
    /// Prices every model call; budgets in dollars are checked against it.
    pub prices: Arc<PriceTable>,
    /// No model step starts later than this many ms before the invocation deadline,
    /// and every model request must end by then: the time left to commit.
    pub deadline_margin_ms: u64,
    /// Look every step up in the journal, even on a first delivery (`aos replay`).
    pub replay: bool,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            memory_limit: 20,
            conflict_retries: 8,
            inline_body_limit: INLINE_BODY_LIMIT,
            max_input_bytes: 64 * 1024,
            memory_in_prompt: 8,
            default_model: "offline".into(),
            model_override: None,
            prices: Arc::new(PriceTable::default()),
            deadline_margin_ms: 2_000,
            replay: false,
        }
    }
}

/// What became of one envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WakeOutcome {
    /// Applied and committed; the outbox was sent.
    Applied { outbox: usize },
    /// Already applied before: its outbox was re-sent, nothing else happened.
    Duplicate,
    /// Could never be processed: parked on the dead-letter queue with this reason.
    DeadLettered { reason: String },
}

/// A wake that should be retried later: the record is reported failed and comes back,
/// after `delay_ms` when known (a provider's `retry-after`). Anything that can never
/// succeed is handled inside the wake (failed task or dead letter) and is not an error.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("wake will be retried: {reason}")]
pub struct Retry {
    pub reason: String,
    pub delay_ms: Option<u64>,
}

impl Retry {
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            delay_ms: None,
        }
    }
}

impl From<PortError> for Retry {
    fn from(e: PortError) -> Self {
        Retry::new(e.to_string())
    }
}

/// What one [`Kernel::sweep`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// Queued tasks whose first envelope was sent again.
    pub resent: usize,
    /// Tasks failed because they passed their deadline.
    pub timed_out: Vec<TaskId>,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SubmitError {
    #[error("unknown agent '{name}'; known agents: {known}")]
    UnknownAgent { name: String, known: String },
    #[error("the request is empty; say what you want done")]
    EmptyInput,
    #[error("the request is {bytes} bytes, over the limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(
        "task {task} was recorded but could not be started ({reason}); submit again with the same idempotency key (or id) to start it without creating a second task"
    )]
    NotSent { task: TaskId, reason: String },
    #[error(
        "this idempotency key was already used for task {task} with a different request; use a new key for a new request"
    )]
    IdempotencyConflict { task: TaskId },
    #[error("an idempotency key is 1-255 printable ASCII characters")]
    BadIdempotencyKey,
    #[error("invalid tenant {0:?}: use 1-64 lowercase letters, digits, '-' or '_'")]
    InvalidTenant(String),
}

/// A task submission on behalf of a tenant (the API's).
#[derive(Clone, Copy, Debug)]
pub struct Submission<'a> {
    pub tenant: &'a str,
    pub agent: &'a str,
    pub input: &'a str,
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<&'a str>,
}

/// What [`Kernel::submit_for`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub task: Task,
    /// False when an earlier submission with the same key made the task.
    pub created: bool,
}

/// A trace id a caller may choose: 1-128 printable ASCII characters (an X-Ray trace
/// id is 35).
pub fn valid_trace_id(t: &str) -> bool {
    !t.is_empty() && t.len() <= 128 && t.bytes().all(|b| b.is_ascii_graphic())
}

/// The wake cycle over a set of ports.
#[derive(Clone, Debug)]
pub struct Kernel {
    catalog: Arc<Catalog>,
    tools: Arc<ToolRegistry>,
    ports: Ports,
    config: KernelConfig,
    journal: Journal,
    /// Routes already warned about for having no price, so the log says it once.
    unpriced: Arc<std::sync::Mutex<HashSet<String>>>,
}

impl Kernel {
    pub fn new(
        catalog: Catalog,
        tools: ToolRegistry,
        ports: Ports,
        config: KernelConfig,
    ) -> Result<Self, crate::model::ModelError> {
        catalog.check_tools(&tools)?;
        Ok(Self {
            catalog: Arc::new(catalog),
            tools: Arc::new(tools),
            journal: Journal::new(ports.blobs.clone()),
            ports,
            config,
            unpriced: Arc::default(),
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }
    pub fn ports(&self) -> &Ports {
        &self.ports
    }
    pub fn now_ms(&self) -> u64 {
        self.ports.clock.now_ms()
    }
    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    /// The route a step of `agent` goes to: the override, else the agent's own (its
    /// cheaper `simple_model` for simple steps), with `auto` meaning the default.
    pub fn route_for(&self, agent: &AgentDef, simple: bool) -> String {
        if let Some(m) = &self.config.model_override {
            return m.clone();
        }
        let chosen = match (&agent.simple_model, simple) {
            (Some(m), true) => m,
            _ => &agent.model,
        };
        if chosen == "auto" {
            self.config.default_model.clone()
        } else {
            chosen.clone()
        }
    }

    /// Prices a response's usage from the table (a provider that priced it itself
    /// keeps its figure).
    fn price(&self, response: &mut ModelResponse) {
        if response.usage.cost_micros > 0 {
            return;
        }
        match self
            .config
            .prices
            .cost_micros(&response.model, &response.usage)
        {
            Some(c) => response.usage.cost_micros = c,
            None => {
                let mut seen = match self.unpriced.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                if seen.insert(response.model.clone()) && response.model != "offline" {
                    tracing::warn!(model = %response.model, "no price for this model in the price table; its calls count as $0 against budgets");
                }
            }
        }
    }

    /// Accepts a task for `agent` of the default tenant: records it and sends its
    /// first envelope. With `id` given (trusted callers only: the CLI, a schedule's
    /// firing), a re-submit of the same id returns the existing task. The API never
    /// lets a client choose an id: it uses [`Kernel::submit_for`].
    pub async fn submit(
        &self,
        agent: &str,
        input: &str,
        id: Option<TaskId>,
    ) -> Result<Task, SubmitError> {
        let def = self.check_submission(agent, input)?;
        self.submit_task(DEFAULT_TENANT, def, input, id, None)
            .await
            .map(|s| s.task)
    }

    /// Accepts a task on behalf of a tenant. The task id is always made here; an
    /// idempotency key is bound to it (scoped to the tenant) with a fingerprint of the
    /// request, so a retry with the same key and body returns the same task and the
    /// same key with another body is refused. A key can therefore never name, claim
    /// or collide with another tenant's task or any envelope.
    pub async fn submit_for(&self, s: Submission<'_>) -> Result<Submitted, SubmitError> {
        self.submit_traced(s, None).await
    }

    /// [`Kernel::submit_for`] with the trace id the task and all its envelopes carry
    /// (the API passes X-Ray's, so logs and traces of the task meet). Only a new task
    /// takes it; without one, or with one that is not 1-128 printable ASCII characters
    /// (a trace id labels, it never refuses a task), the task's is `trace-<task id>`.
    pub async fn submit_traced(
        &self,
        s: Submission<'_>,
        trace_id: Option<&str>,
    ) -> Result<Submitted, SubmitError> {
        if !valid_tenant(s.tenant) {
            return Err(SubmitError::InvalidTenant(s.tenant.to_string()));
        }
        let def = self.check_submission(s.agent, s.input)?;
        let mut id = TaskId::new(self.now_ms());
        if let Some(key) = s.idempotency_key {
            if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
                return Err(SubmitError::BadIdempotencyKey);
            }
            let fingerprint = journal::hash(&(s.agent, s.input));
            let scoped = format!("{}/{key}", s.tenant);
            let (bound, first) = self
                .ports
                .tasks
                .claim_idempotency_key(&scoped, id, &fingerprint)
                .await?;
            if first != fingerprint {
                return Err(SubmitError::IdempotencyConflict { task: bound });
            }
            id = bound;
        }
        let trace_id = trace_id.filter(|t| valid_trace_id(t));
        self.submit_task(s.tenant, def, s.input, Some(id), trace_id)
            .await
    }

    /// The task `id` if it belongs to `tenant`; another tenant's task is `None`, the
    /// same answer as a task that does not exist.
    pub async fn task_for(&self, tenant: &str, id: TaskId) -> Result<Option<Task>, PortError> {
        Ok(self
            .ports
            .tasks
            .get_task(id)
            .await?
            .filter(|t| t.tenant == tenant))
    }

    fn check_submission<'c>(
        &'c self,
        agent: &str,
        input: &str,
    ) -> Result<&'c AgentDef, SubmitError> {
        let Some(def) = self.catalog.get(agent) else {
            return Err(SubmitError::UnknownAgent {
                name: agent.to_string(),
                known: self.catalog.names(),
            });
        };
        if input.trim().is_empty() {
            return Err(SubmitError::EmptyInput);
        }
        if input.len() > self.config.max_input_bytes {
            return Err(SubmitError::TooLarge {
                bytes: input.len(),
                limit: self.config.max_input_bytes,
            });
        }
        Ok(def)
    }

    /// Records a checked submission ([`Kernel::check_submission`]) and sends it.
    async fn submit_task(
        &self,
        tenant: &str,
        def: &AgentDef,
        input: &str,
        id: Option<TaskId>,
        trace_id: Option<&str>,
    ) -> Result<Submitted, SubmitError> {
        let now = self.now_ms();
        let id = id.unwrap_or_else(|| TaskId::new(now));
        let task = Task {
            id,
            tenant: tenant.to_string(),
            status: TaskStatus::Queued,
            agent: def.name.clone(),
            input: input.to_string(),
            result: None,
            error: None,
            usage: Usage::default(),
            budget: def.budget.clone(),
            trace_id: trace_id.map_or_else(|| format!("trace-{id}"), str::to_string),
            created_at: now,
            updated_at: now,
            first_envelope: EnvelopeId(id.0),
        };
        let event = Event {
            id: EnvelopeId(id.0).origin_event(),
            task: id,
            at: now,
            agent: "user".into(),
            kind: EventKind::Submitted,
            detail: format!("to {}: {}", def.name, preview(input, 200)),
            envelope: Some(task.first_envelope),
        };
        let created = self.ports.tasks.create_task(&task, &event).await?;
        let task = if created {
            task
        } else {
            match self.ports.tasks.get_task(id).await? {
                Some(existing) if existing.tenant != tenant => {
                    // Only trusted callers choose ids; still, never hand out another
                    // tenant's task.
                    return Err(SubmitError::IdempotencyConflict { task: id });
                }
                Some(existing) => existing,
                None => task,
            }
        };
        if task.status == TaskStatus::Queued {
            let not_sent = |r: Retry| SubmitError::NotSent {
                task: task.id,
                reason: r.reason,
            };
            let first = self
                .prepare(vec![OutboxItem {
                    envelope: first_envelope(&task),
                    deliver_at: None,
                }])
                .await
                .map_err(not_sent)?;
            self.flush(&first).await.map_err(not_sent)?;
        }
        Ok(Submitted { task, created })
    }

    /// Re-sends the first envelope of every task still queued: after a crash between
    /// recording a task and sending its envelope. Receivers dedupe, so this is safe to
    /// run at every start. Returns how many were re-sent.
    pub async fn recover(&self) -> Result<usize, PortError> {
        let queued = self
            .ports
            .tasks
            .list_tasks(&TaskQuery::status(TaskStatus::Queued))
            .await?;
        let items: Vec<OutboxItem> = queued
            .iter()
            .map(|t| OutboxItem {
                envelope: first_envelope(t),
                deliver_at: None,
            })
            .collect();
        let items = self
            .prepare(items)
            .await
            .map_err(|r| PortError::Unavailable(r.reason))?;
        self.flush(&items)
            .await
            .map_err(|r| PortError::Unavailable(r.reason))?;
        Ok(items.len())
    }

    /// What [`Kernel::recover`] does at a local start, for a deployment with no process
    /// that starts (run it on a schedule), plus the deadline no envelope enforces:
    /// every task still queued, running or waiting past [`Task::deadline_ms`] is failed
    /// with a reason a person can read and a timeline event, so a task whose message
    /// was lost or dead-lettered does not wait forever. Every other queued task has its
    /// first envelope sent again (receivers dedupe). Safe to run at any time and as
    /// often as wanted: a second sweep finds nothing new to fail and adds no event.
    pub async fn sweep(&self) -> Result<SweepReport, PortError> {
        let now = self.now_ms();
        let mut report = SweepReport::default();
        let mut resend = Vec::new();
        for status in [TaskStatus::Queued, TaskStatus::Running, TaskStatus::Waiting] {
            for task in self
                .ports
                .tasks
                .list_tasks(&TaskQuery::status(status))
                .await?
            {
                if now > task.deadline_ms() {
                    self.time_out(&task, now).await?;
                    report.timed_out.push(task.id);
                } else if status == TaskStatus::Queued {
                    resend.push(OutboxItem {
                        envelope: first_envelope(&task),
                        deliver_at: None,
                    });
                }
            }
        }
        let resend = self
            .prepare(resend)
            .await
            .map_err(|r| PortError::Unavailable(r.reason))?;
        self.flush(&resend)
            .await
            .map_err(|r| PortError::Unavailable(r.reason))?;
        report.resent = resend.len();
        Ok(report)
    }

    /// Fails a task that passed its deadline; the event id is fixed per task, so a
    /// repeated sweep appends nothing.
    async fn time_out(&self, task: &Task, now: u64) -> Result<(), PortError> {
        let reason = format!(
            "timed out: the task was still {} when its limit of {} s ran out, and nothing \
             moved it on (a message it waited for may have been lost or dead-lettered)",
            task.status, task.budget.timeout_secs
        );
        tracing::warn!(task = %task.id, %reason, "sweep fails an overdue task");
        let update = TaskUpdate {
            status: Some(TaskStatus::Failed),
            error: Some(reason.clone()),
            ..TaskUpdate::default()
        };
        let event = Event {
            id: crate::ids::EventId(EnvelopeId(task.id.0).derive("deadline", 0)),
            task: task.id,
            at: now,
            agent: "sweep".into(),
            kind: EventKind::Failed,
            detail: reason,
            envelope: None,
        };
        self.ports
            .tasks
            .update_task(task.id, &update, &[event])
            .await?;
        Ok(())
    }

    /// Runs one wake for `envelope`. `Err(Retry)` means: report the record failed so it
    /// comes back; everything else has been fully handled.
    pub async fn wake(&self, envelope: Envelope) -> Result<WakeOutcome, Retry> {
        self.wake_until(envelope, None, false).await
    }

    /// [`Kernel::wake`] within an invocation that ends at `deadline_ms` (wall clock):
    /// no model step starts within `deadline_margin_ms` of it and every model request
    /// must end before then. A wake that runs out of time returns `Retry` with no delay;
    /// its steps so far are journaled, so the next delivery replays them for free and
    /// goes on from there.
    ///
    /// `first_delivery`: the queue has not delivered this envelope before (SQS
    /// `ApproximateReceiveCount` = 1), so no earlier attempt can have journaled a step
    /// and the journal is not read (one blob read per step saved on the happy path).
    pub async fn wake_until(
        &self,
        envelope: Envelope,
        deadline_ms: Option<u64>,
        first_delivery: bool,
    ) -> Result<WakeOutcome, Retry> {
        self.wake_metered(envelope, deadline_ms, first_delivery)
            .await
            .0
    }

    /// [`Kernel::wake_until`] with what the wake spent, for metrics: every model call
    /// answered during it (in all its attempts, offline ones included, whether the wake
    /// then commits or is retried), with their tokens and cost. Steps replayed from
    /// the journal cost nothing now and are not counted. `wakes` is left at 0.
    pub async fn wake_metered(
        &self,
        envelope: Envelope,
        deadline_ms: Option<u64>,
        first_delivery: bool,
    ) -> (Result<WakeOutcome, Retry>, Usage) {
        let mut made = Usage::default();
        let outcome = self
            .wake_counted(envelope, deadline_ms, first_delivery, &mut made)
            .await;
        (outcome, made)
    }

    async fn wake_counted(
        &self,
        envelope: Envelope,
        deadline_ms: Option<u64>,
        first_delivery: bool,
        made: &mut Usage,
    ) -> Result<WakeOutcome, Retry> {
        let Some(agent) = self.catalog.get(envelope.to.as_str()) else {
            let reason = format!(
                "unknown agent '{}'; known agents: {}",
                envelope.to,
                self.catalog.names()
            );
            return self.reject(&envelope, reason).await;
        };
        let envelope = match self.resolve_body(envelope).await? {
            Ok(e) => e,
            Err((e, reason)) => return self.reject(&e, reason).await,
        };
        if envelope.kind == Kind::Tool {
            return self.run_effect(agent, envelope).await;
        }
        let key = envelope.key();
        // Model calls paid for in attempts of this wake that lost a commit race: their
        // usage lands on the task with the attempt that commits.
        let mut paid: Vec<(String, Usage)> = Vec::new();
        for attempt in 0..=self.config.conflict_retries {
            let loaded = self
                .ports
                .sessions
                .load(
                    &key,
                    envelope.task,
                    envelope.id,
                    &memory_scope(&envelope.tenant, envelope.to.as_str()),
                    self.config.memory_limit,
                )
                .await?;
            if let Some(reason) = trespass(&envelope, &loaded) {
                return self.quarantine(&envelope, reason).await;
            }
            if let Some(outbox) = loaded.applied {
                // Dedupe: applied before, maybe crashed before the flush. Re-send only.
                self.flush(&outbox).await?;
                return Ok(WakeOutcome::Duplicate);
            }
            let Some(task) = loaded.task.clone() else {
                let reason = format!("task {} does not exist", envelope.task);
                return self.reject(&envelope, reason).await;
            };
            let mut run = WakeRun::new(self, agent, &envelope, task, deadline_ms);
            run.lookup = attempt > 0 || !first_delivery || self.config.replay;
            let (result, spend) = run.run(loaded).await;
            made.add(&spend.made);
            paid.extend(spend.fresh);
            let mut commit = result?;
            let mut discarded = Usage::default();
            for (step, usage) in &paid {
                if !spend.used.contains(step) {
                    discarded.add(usage);
                }
            }
            if discarded.llm_calls > 0 {
                commit.task_update.usage.add(&discarded);
                commit.events.push(Event {
                    id: envelope.id.event(u32::MAX - 2),
                    task: envelope.task,
                    at: commit.events.last().map_or(self.now_ms(), |e| e.at),
                    agent: agent.name.to_string(),
                    kind: EventKind::Model,
                    detail: format!(
                        "{} model call(s) of discarded attempts billed: {} tokens, {}",
                        discarded.llm_calls,
                        discarded.tokens(),
                        crate::model::dollars(discarded.cost_micros)
                    ),
                    envelope: Some(envelope.id),
                });
            }
            commit.outbox = self.prepare(std::mem::take(&mut commit.outbox)).await?;
            match self.ports.sessions.commit(&commit).await {
                Ok(()) => {
                    self.flush(&commit.outbox).await?;
                    return Ok(WakeOutcome::Applied {
                        outbox: commit.outbox.len(),
                    });
                }
                Err(PortError::Conflict) => {
                    tracing::debug!(envelope = %envelope.id, "commit conflict; re-reading");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Retry::new(format!(
            "session {} of agent {} kept changing during {} attempts",
            envelope.session,
            envelope.to,
            self.config.conflict_retries + 1
        )))
    }

    /// Runs a tool with effects (neither read-only nor idempotent) at most once. The
    /// wake first commits a claim: the applied marker of this envelope, whose stored
    /// outbox is a reply saying the outcome is unknown. Then it runs the tool and sends
    /// the real reply under the same envelope id. A crash after the claim never runs
    /// the tool again: the redelivery finds the marker and re-sends the stored reply,
    /// which the asking session ignores if the real one arrived first (same id).
    async fn run_effect(&self, agent: &AgentDef, envelope: Envelope) -> Result<WakeOutcome, Retry> {
        let call: EffectCall = match serde_json::from_str(&envelope.body) {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("tool envelope body does not parse: {e}");
                return self.reject(&envelope, reason).await;
            }
        };
        let key = envelope.key();
        let loaded = self
            .ports
            .sessions
            .load(&key, envelope.task, envelope.id, "", 0)
            .await?;
        if let Some(reason) = trespass(&envelope, &loaded) {
            return self.quarantine(&envelope, reason).await;
        }
        if let Some(outbox) = loaded.applied {
            self.flush(&outbox).await?;
            return Ok(WakeOutcome::Duplicate);
        }
        let Some(task) = loaded.task else {
            let reason = format!("task {} does not exist", envelope.task);
            return self.reject(&envelope, reason).await;
        };
        let now = self.now_ms().max(envelope.sent_at.saturating_add(1));
        let reply = |body: String, is_error: bool| Envelope {
            id: envelope.id.child(0),
            task: envelope.task,
            tenant: envelope.tenant.clone(),
            session: envelope.session.clone(),
            from: agent.name.to_string(),
            to: agent.name.clone(),
            kind: Kind::Reply,
            body,
            body_ref: None,
            hop: envelope.hop + 1,
            trace_id: envelope.trace_id.clone(),
            sent_at: now,
            reply_to: None,
            in_reply_to: Some(call.call_id.clone()),
            is_error,
        };
        let args = preview(&call.input.to_string(), 120);
        let tool = agent
            .tools
            .contains(&call.name)
            .then(|| self.tools.get(&call.name))
            .flatten();
        let event = |index: u32, detail: String| Event {
            id: envelope.id.event(index),
            task: envelope.task,
            at: now,
            agent: agent.name.to_string(),
            kind: EventKind::ToolCall,
            detail,
            envelope: Some(envelope.id),
        };
        let (outbox, detail) = match (task.status.is_final(), tool) {
            (true, _) => (
                Vec::new(),
                format!(
                    "{}({args}) not run: the task is already {}",
                    call.name, task.status
                ),
            ),
            (false, None) => {
                let text = format!("no tool named {:?} is available to you", call.name);
                (
                    vec![OutboxItem {
                        envelope: reply(text, true),
                        deliver_at: None,
                    }],
                    format!("{}({args}) refused: not an allowed tool", call.name),
                )
            }
            (false, Some(_)) => {
                let text = format!(
                    "the outcome of {} is unknown: its run was interrupted after it \
                     started, and it was not started again so that it never runs twice",
                    call.name
                );
                (
                    vec![OutboxItem {
                        envelope: reply(text, true),
                        deliver_at: None,
                    }],
                    format!("{}({args}) started (runs at most once)", call.name),
                )
            }
        };
        let claim = Commit {
            key,
            task: envelope.task,
            envelope: envelope.id,
            expected_version: 0,
            session: None,
            outbox: self.prepare(outbox).await?,
            task_update: TaskUpdate {
                usage: Usage {
                    wakes: 1,
                    ..Usage::default()
                },
                ..TaskUpdate::default()
            },
            events: vec![event(0, detail)],
            memory: Vec::new(),
            memory_scope: memory_scope(&envelope.tenant, agent.name.as_str()),
        };
        match self.ports.sessions.commit(&claim).await {
            Ok(()) => {}
            // Claimed by a concurrent delivery: that one runs it.
            Err(PortError::Conflict) => return Ok(WakeOutcome::Duplicate),
            Err(e) => return Err(e.into()),
        }
        let Some(tool) = tool.filter(|_| !task.status.is_final()) else {
            self.flush(&claim.outbox).await?;
            return Ok(WakeOutcome::Applied {
                outbox: claim.outbox.len(),
            });
        };
        let ctx = ToolContext {
            agent: agent.name.clone(),
            session: envelope.session.clone(),
            task: envelope.task,
            now_ms: now,
        };
        let record = run_tool(tool.as_ref(), &call.name, call.input.clone(), &ctx).await;
        let sent = self
            .prepare(vec![OutboxItem {
                envelope: reply(record.result.clone(), record.is_error),
                deliver_at: None,
            }])
            .await?;
        self.flush(&sent).await?;
        let update = TaskUpdate {
            usage: Usage {
                tool_calls: 1,
                ..Usage::default()
            },
            ..TaskUpdate::default()
        };
        let outcome = if record.is_error { "failed: " } else { "→ " };
        let done = event(
            1,
            format!(
                "{}({args}) {outcome}{}",
                call.name,
                preview(&record.result, 160)
            ),
        );
        self.ports
            .tasks
            .update_task(envelope.task, &update, &[done])
            .await?;
        Ok(WakeOutcome::Applied { outbox: 1 })
    }

    /// Parks an envelope that can never be processed on `queue`'s dead-letter queue
    /// and fails its task, if any, so the person who submitted it sees why.
    pub async fn dead_letter(
        &self,
        queue: &str,
        envelope: &Envelope,
        reason: String,
    ) -> Result<WakeOutcome, Retry> {
        tracing::warn!(envelope = %envelope.id, agent = %envelope.to, reason = %loggable_reason(&reason), "dead-lettering envelope");
        let mut parked = envelope.clone();
        if parked.body_ref.is_some() {
            // The blob store holds the body; the dead letter keeps the reference.
            parked.body = String::new();
        } else if parked.body.len() > DEAD_LETTER_BODY_LIMIT {
            parked.body = format!(
                "[{} bytes omitted from the dead letter] {}",
                parked.body.len(),
                preview(&parked.body, 200)
            );
        }
        self.ports
            .mailbox
            .dead_letter(queue, &parked.to_json(), &reason)
            .await?;
        let now = self.now_ms();
        let update = TaskUpdate {
            status: Some(TaskStatus::Failed),
            error: Some(reason.clone()),
            ..TaskUpdate::default()
        };
        let event = Event {
            id: envelope.id.event(u32::MAX - 1),
            task: envelope.task,
            at: now,
            agent: envelope.to.to_string(),
            kind: EventKind::DeadLettered,
            detail: reason.clone(),
            envelope: Some(envelope.id),
        };
        self.ports
            .tasks
            .update_task(envelope.task, &update, &[event])
            .await?;
        Ok(WakeOutcome::DeadLettered { reason })
    }

    /// Parks an envelope that trespasses on another task's session or another tenant's
    /// task. Unlike [`Kernel::dead_letter`] it fails no task: the task it names is not
    /// its own to fail.
    async fn quarantine(&self, envelope: &Envelope, reason: String) -> Result<WakeOutcome, Retry> {
        tracing::warn!(envelope = %envelope.id, agent = %envelope.to, %reason, "refusing a trespassing envelope");
        self.ports
            .mailbox
            .dead_letter(envelope.to.as_str(), &envelope.to_json(), &reason)
            .await?;
        Ok(WakeOutcome::DeadLettered { reason })
    }

    async fn reject(&self, envelope: &Envelope, reason: String) -> Result<WakeOutcome, Retry> {
        self.dead_letter(envelope.to.as_str(), envelope, reason)
            .await
    }

    /// Handles queue text that is not an envelope at all.
    pub async fn reject_raw(&self, agent: &str, body: &str, reason: &str) -> Result<(), Retry> {
        // A parse error can quote a fragment of the message (a prompt, a result): the
        // log keeps what kind of failure it was; the dead letter keeps it whole.
        let kind = reason.split(':').next().unwrap_or_default();
        tracing::warn!(agent, reason = kind, "dead-lettering unparseable message");
        self.ports.mailbox.dead_letter(agent, body, reason).await?;
        Ok(())
    }

    /// Fetches a body sent by reference. `Ok(Err(..))` means it can never be read.
    async fn resolve_body(
        &self,
        mut envelope: Envelope,
    ) -> Result<Result<Envelope, (Envelope, String)>, Retry> {
        if let Some(key) = envelope.body_ref.clone() {
            match self.ports.blobs.get(&key).await? {
                Some(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => {
                        // The reference stays: a dead letter parks it instead of the text.
                        envelope.body = text;
                    }
                    Err(_) => {
                        let reason = format!("body at {key} is not UTF-8 text");
                        return Ok(Err((envelope, reason)));
                    }
                },
                None => {
                    let reason = format!("body reference {key} points at nothing");
                    return Ok(Err((envelope, reason)));
                }
            }
        }
        if envelope.body.len() > MAX_BODY_BYTES {
            let reason = format!(
                "body of {} bytes exceeds the limit of {} bytes",
                envelope.body.len(),
                MAX_BODY_BYTES
            );
            return Ok(Err((envelope, reason)));
        }
        Ok(Ok(envelope))
    }

    /// Moves bodies over the inline limit to the blob store, keyed by envelope id so a
    /// re-run writes the same blob.
    async fn prepare(&self, mut items: Vec<OutboxItem>) -> Result<Vec<OutboxItem>, Retry> {
        for item in &mut items {
            let env = &mut item.envelope;
            if env.body.len() > self.config.inline_body_limit {
                let key = format!("bodies/{}", env.id);
                self.ports.blobs.put(&key, env.body.as_bytes()).await?;
                env.body = String::new();
                env.body_ref = Some(key);
            }
        }
        Ok(items)
    }

    /// Sends an outbox: immediate envelopes in one call, future ones to the scheduler.
    async fn flush(&self, outbox: &[OutboxItem]) -> Result<(), Retry> {
        let now: Vec<Envelope> = outbox
            .iter()
            .filter(|i| i.deliver_at.is_none())
            .map(|i| i.envelope.clone())
            .collect();
        if !now.is_empty() {
            self.ports.mailbox.send(&now).await?;
        }
        for item in outbox {
            if let Some(at) = item.deliver_at {
                self.ports.scheduler.schedule(at, &item.envelope).await?;
            }
        }
        Ok(())
    }

    /// Cancels a task: later envelopes of it are acknowledged without running. A task
    /// already final is returned unchanged, with nothing written.
    pub async fn cancel(&self, id: TaskId, reason: &str) -> Result<Option<Task>, PortError> {
        match self.ports.tasks.get_task(id).await? {
            None => return Ok(None),
            Some(t) if t.status.is_final() => return Ok(Some(t)),
            Some(_) => {}
        }
        let reason = preview(reason, DETAIL_CHARS);
        let now = self.now_ms();
        let update = TaskUpdate {
            status: Some(TaskStatus::Cancelled),
            error: Some(format!("cancelled: {reason}")),
            ..TaskUpdate::default()
        };
        let event = Event {
            // One cancel event per task, however often the cancel is retried.
            id: crate::ids::EventId(EnvelopeId(id.0).derive("cancel", 0)),
            task: id,
            at: now,
            agent: "user".into(),
            kind: EventKind::Cancelled,
            detail: reason.clone(),
            envelope: None,
        };
        self.ports.tasks.update_task(id, &update, &[event]).await
    }
}

impl Kernel {
    /// Every approval of `task` (of `tenant`), oldest first.
    pub async fn approvals_of(&self, task: &Task) -> Result<Vec<Approval>, PortError> {
        let events = self.ports.tasks.task_events(task.id).await?;
        Ok(approvals::from_events(task, &events)
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }

    /// The tenant's approvals waiting for a decision, oldest first: those of its
    /// unfinished tasks (a task with an open approval is waiting or running).
    pub async fn pending_approvals(
        &self,
        tenant: &str,
        limit: usize,
    ) -> Result<Vec<Approval>, PortError> {
        let mut pending = Vec::new();
        for status in [TaskStatus::Waiting, TaskStatus::Running] {
            let query = TaskQuery {
                tenant: Some(tenant.to_string()),
                status: Some(status),
                before: None,
                limit: 1000,
            };
            for task in self.ports.tasks.list_tasks(&query).await? {
                pending.extend(
                    self.approvals_of(&task)
                        .await?
                        .into_iter()
                        .filter(|a| a.status == ApprovalStatus::Pending),
                );
            }
        }
        pending.sort_by_key(|a| a.asked_at);
        pending.truncate(limit);
        Ok(pending)
    }

    /// One approval of the tenant's; another tenant's is `None`.
    pub async fn approval(&self, tenant: &str, id: &str) -> Result<Option<Approval>, PortError> {
        let Some((task, _)) = approvals::parse_id(id) else {
            return Ok(None);
        };
        let Some(task) = self.task_for(tenant, task).await? else {
            return Ok(None);
        };
        Ok(self
            .approvals_of(&task)
            .await?
            .into_iter()
            .find(|a| a.id == id))
    }

    /// Approves or denies an approval of the tenant's, and wakes the asking session
    /// with the decision. Repeating the same decision is harmless (it re-sends the
    /// same envelope, which the session applies once); the other decision is refused.
    pub async fn decide(
        &self,
        tenant: &str,
        id: &str,
        approve: bool,
        by: &str,
        note: Option<&str>,
    ) -> Result<Approval, DecideError> {
        let not_found = || DecideError::NotFound(id.to_string());
        let (task_id, envelope_id) = approvals::parse_id(id).ok_or_else(not_found)?;
        let task = self
            .task_for(tenant, task_id)
            .await?
            .ok_or_else(not_found)?;
        let events = self.ports.tasks.task_events(task.id).await?;
        let (request, approval) = approvals::from_events(&task, &events)
            .into_iter()
            .find(|(r, _)| r.envelope == envelope_id)
            .ok_or_else(not_found)?;
        let wanted = if approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        match approval.status {
            ApprovalStatus::Pending => {}
            ApprovalStatus::Expired => {
                return Err(DecideError::Expired {
                    id: id.to_string(),
                    task_status: task.status.to_string(),
                });
            }
            s if s == wanted => {}
            s => {
                return Err(DecideError::AlreadyDecided {
                    id: id.to_string(),
                    status: s,
                    by: approval.decided_by.unwrap_or_default(),
                });
            }
        }
        let now = self.now_ms();
        if now > task.deadline_ms() {
            return Err(DecideError::Expired {
                id: id.to_string(),
                task_status: "past its deadline".into(),
            });
        }
        let decision = match approval.status {
            // A repeat: the recorded decision, sent again.
            ApprovalStatus::Pending => Decision {
                approved: approve,
                by: preview(by, 200),
                note: note.map(|n| preview(n, DETAIL_CHARS)),
                at: now,
            },
            _ => events
                .iter()
                .find(|e| e.id == approvals::decision_event(envelope_id))
                .and_then(|e| serde_json::from_str(&e.detail).ok())
                .ok_or_else(not_found)?,
        };
        let body = serde_json::to_string(&decision).unwrap_or_default();
        let decided = if approval.status == ApprovalStatus::Pending {
            let event = Event {
                id: approvals::decision_event(envelope_id),
                task: task.id,
                at: now,
                agent: "user".into(),
                kind: EventKind::ApprovalDecided,
                detail: body.clone(),
                envelope: Some(envelope_id),
            };
            self.ports
                .tasks
                .update_task(task.id, &TaskUpdate::default(), &[event])
                .await?;
            // Stores keep the first event of an id: read back which decision holds.
            let stored = self.approval(tenant, id).await?.ok_or_else(not_found)?;
            if stored.status != wanted {
                return Err(DecideError::AlreadyDecided {
                    id: id.to_string(),
                    status: stored.status,
                    by: stored.decided_by.unwrap_or_default(),
                });
            }
            stored
        } else {
            approval
        };
        let envelope = Envelope {
            id: envelope_id,
            task: task.id,
            tenant: task.tenant.clone(),
            session: request.session.clone(),
            from: "user".into(),
            to: request.agent.clone(),
            kind: Kind::Approval,
            body,
            body_ref: None,
            hop: request.hop,
            trace_id: request.trace_id.clone(),
            sent_at: now,
            reply_to: None,
            in_reply_to: Some(request.call_id.clone()),
            is_error: false,
        };
        self.flush(&[OutboxItem {
            envelope,
            deliver_at: None,
        }])
        .await
        .map_err(|r| DecideError::Port(PortError::Unavailable(r.reason)))?;
        // Sending the envelope changes nothing stored: the approval as read back holds.
        Ok(decided)
    }

    /// A task's audit records, in chain order per session (sessions by first record).
    pub async fn audit_log(&self, task: TaskId) -> Result<Vec<AuditRecord>, PortError> {
        let events = self.ports.tasks.task_events(task).await?;
        Ok(events
            .iter()
            .filter(|e| e.is_audit())
            .filter_map(|e| audit::records_of(e).ok())
            .flatten()
            .collect())
    }

    /// Recomputes a task's audit chains against the sessions' stored chain heads.
    pub async fn verify_audit(&self, task: TaskId) -> Result<AuditReport, PortError> {
        let events = self.ports.tasks.task_events(task).await?;
        let mut heads = Vec::new();
        let mut seen = HashSet::new();
        let records: Vec<AuditRecord> = events
            .iter()
            .filter(|e| e.is_audit())
            .filter_map(|e| audit::records_of(e).ok())
            .flatten()
            .collect();
        for record in records {
            if !seen.insert((record.agent.clone(), record.session.clone())) {
                continue;
            }
            let (Ok(agent), Ok(session)) = (
                AgentName::new(record.agent.clone()),
                SessionId::new(record.session.clone()),
            ) else {
                continue;
            };
            let key = crate::model::SessionKey { agent, session };
            let probe = EnvelopeId(task.0);
            if let Some(s) = self
                .ports
                .sessions
                .load(&key, task, probe, "", 0)
                .await?
                .session
            {
                heads.push((record.agent, record.session, s.audit));
            }
        }
        Ok(audit::verify(task, &events, &heads))
    }
}

/// Why an envelope must not touch what it addresses, if it must not: a session belongs
/// to one task, and a task to one tenant. An envelope of task A naming task B's session
/// (a replayed or forged envelope) never reads or writes it.
fn trespass(envelope: &Envelope, loaded: &Loaded) -> Option<String> {
    if let Some(session) = &loaded.session
        && session.task != envelope.task
    {
        return Some(format!(
            "envelope {} of task {} addresses session {} of agent {}, which belongs to \
             another task; refused",
            envelope.id, envelope.task, envelope.session, envelope.to
        ));
    }
    if let Some(task) = &loaded.task
        && task.tenant != envelope.tenant
    {
        return Some(format!(
            "envelope {} names tenant {:?} but task {} belongs to another tenant; refused",
            envelope.id, envelope.tenant, envelope.task
        ));
    }
    None
}

/// The envelope that starts `task`, rebuilt the same way every time.
pub fn first_envelope(task: &Task) -> Envelope {
    Envelope {
        id: task.first_envelope,
        task: task.id,
        tenant: task.tenant.clone(),
        session: root_session(task.id),
        from: "user".into(),
        to: task.agent.clone(),
        kind: Kind::Task,
        body: task.input.clone(),
        body_ref: None,
        hop: 0,
        trace_id: task.trace_id.clone(),
        sent_at: task.created_at,
        reply_to: None,
        in_reply_to: None,
        is_error: false,
    }
}

/// The session of the agent a task was submitted to.
pub fn root_session(task: TaskId) -> SessionId {
    SessionId::from_ulid(task.0)
}

/// The reason a task is over its budget, if it is.
pub fn budget_breach(usage: &Usage, budget: &Budget) -> Option<String> {
    if usage.llm_calls >= budget.max_llm_calls {
        return Some(format!(
            "budget exhausted: {} model calls reached the task's limit of {}",
            usage.llm_calls, budget.max_llm_calls
        ));
    }
    if usage.tokens() >= budget.max_tokens {
        return Some(format!(
            "budget exhausted: {} tokens reached the task's limit of {}",
            usage.tokens(),
            budget.max_tokens
        ));
    }
    if usage.cost_micros >= budget.max_cost_micros {
        return Some(format!(
            "budget exhausted: ${:.4} spent reached the task's limit of ${:.4}",
            usage.cost_micros as f64 / 1e6,
            budget.max_cost_micros as f64 / 1e6
        ));
    }
    None
}

/// A reason (a retry's, a dead letter's) as logs may carry it: without the provider's message, which can
/// quote the request (so the prompt). Provider failures read `provider HTTP status
/// (code): message` (aos-models' rule); the log keeps what comes before the message.
/// Every other reason is the kernel's own words (a deadline, a commit race, a store
/// error), capped at 300 characters.
pub fn loggable_reason(reason: &str) -> String {
    let head = match reason.find("HTTP ") {
        Some(at) => {
            let rest = &reason[at..];
            let end = rest
                .find(": ")
                .or_else(|| rest.find(':'))
                .unwrap_or(rest.len());
            &reason[..at + end]
        }
        None => reason,
    };
    head.chars().take(300).collect()
}

/// Shortens text for the timeline, on a character boundary.
pub fn preview(text: &str, max_chars: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max_chars {
        one_line
    } else {
        let cut: String = one_line.chars().take(max_chars).collect();
        format!("{cut}…")
    }
}

/// One wake's work in progress, turned into a [`Commit`] at the end.
struct WakeRun<'a> {
    kernel: &'a Kernel,
    agent: &'a AgentDef,
    env: &'a Envelope,
    task: Task,
    now: u64,
    events: Vec<Event>,
    outbox: Vec<OutboxItem>,
    memory: Vec<MemoryNote>,
    update: TaskUpdate,
    children: u32,
    expected_version: u64,
    /// The invocation's deadline, if the wake runs under one.
    deadline: Option<u64>,
    /// What this attempt's model steps cost and which steps it used.
    spend: Spend,
    /// The agent's loaded memory, for `recall`.
    notes: Vec<MemoryNote>,
    /// Whether an earlier attempt may have journaled steps of this wake.
    lookup: bool,
    /// Audit entries (action, data), chained onto the session's log at commit.
    audit: Vec<(String, Value)>,
    /// The session as loaded: what a wake that stops early commits its audit onto.
    base: Option<Session>,
    /// The model's words around the tool calls it just made (an approval's reason).
    why: String,
    /// The journal key (a hash of the request) of the last model step.
    step_key: String,
}

/// Model steps of one attempt: those paid for now (journal key, usage), and every
/// step key used, whether paid now or replayed from the journal.
#[derive(Debug, Default)]
struct Spend {
    fresh: Vec<(String, Usage)>,
    used: HashSet<String>,
    /// Every model call answered in this attempt, offline ones included (metrics).
    made: Usage,
}

/// The body of a [`Kind::Tool`] envelope.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct EffectCall {
    call_id: String,
    name: String,
    input: Value,
}

/// Runs a tool within its timeout; failures and timeouts become error results.
async fn run_tool(
    tool: &dyn crate::tools::Tool,
    name: &str,
    input: Value,
    ctx: &ToolContext,
) -> ToolRecord {
    let timeout = tool.meta().timeout_ms;
    match tokio::time::timeout(
        std::time::Duration::from_millis(timeout),
        tool.call(input, ctx),
    )
    .await
    {
        Ok(Ok(result)) => ToolRecord {
            result,
            is_error: false,
        },
        Ok(Err(e)) => ToolRecord {
            result: preview(&e.to_string(), DETAIL_CHARS),
            is_error: true,
        },
        Err(_) => ToolRecord {
            result: format!("{name} did not answer within {timeout} ms"),
            is_error: true,
        },
    }
}

impl<'a> WakeRun<'a> {
    fn new(
        kernel: &'a Kernel,
        agent: &'a AgentDef,
        env: &'a Envelope,
        task: Task,
        deadline: Option<u64>,
    ) -> Self {
        // A hybrid logical clock: a wake happens after the send that caused it, so
        // the timeline sorts causally even when many wakes share a millisecond.
        let now = kernel.now_ms().max(env.sent_at.saturating_add(1));
        Self {
            kernel,
            agent,
            env,
            task,
            now,
            events: Vec::new(),
            outbox: Vec::new(),
            memory: Vec::new(),
            update: TaskUpdate {
                usage: Usage {
                    wakes: 1,
                    ..Usage::default()
                },
                ..TaskUpdate::default()
            },
            children: 0,
            expected_version: 0,
            deadline,
            spend: Spend::default(),
            notes: Vec::new(),
            lookup: true,
            audit: Vec::new(),
            base: None,
            why: String::new(),
            step_key: String::new(),
        }
    }

    fn audit(&mut self, action: &str, data: Value) {
        self.audit.push((action.to_string(), data));
    }

    fn is_root(&self) -> bool {
        self.env.to == self.task.agent && self.env.session == root_session(self.task.id)
    }

    fn event(&mut self, kind: EventKind, detail: impl Into<String>) {
        let index = self.events.len() as u32;
        self.events.push(Event {
            id: self.env.id.event(index),
            task: self.env.task,
            at: self.now,
            agent: self.agent.name.to_string(),
            kind,
            detail: detail.into(),
            envelope: Some(self.env.id),
        });
    }

    fn fail(&mut self, reason: String) {
        self.audit("stopped", json!({ "reason": reason }));
        self.event(EventKind::Failed, reason.clone());
        self.update.status = Some(TaskStatus::Failed);
        self.update.error = Some(reason);
    }

    fn next_child(&mut self) -> EnvelopeId {
        let id = self.env.id.child(self.children);
        self.children += 1;
        id
    }

    fn commit(mut self, session: Option<Session>) -> Commit {
        let entries = std::mem::take(&mut self.audit);
        let session = match session {
            Some(s) => Some(s),
            // A wake that decided something without changing the session (a stop)
            // still chains its audit onto the session's log.
            None if !entries.is_empty() => {
                let base = self.base.take();
                self.expected_version = base.as_ref().map_or(0, |s| s.version);
                Some(base.unwrap_or_else(|| self.blank_session()))
            }
            None => None,
        };
        let session = session.map(|mut s| {
            s.version = self.expected_version + 1;
            s.updated_at = self.now;
            let records = audit::chain(
                &mut s.audit,
                self.env.task,
                self.agent.name.as_str(),
                s.id.as_str(),
                self.env.id,
                self.now,
                entries,
            );
            self.events.extend(records);
            s
        });
        Commit {
            key: self.env.key(),
            task: self.env.task,
            envelope: self.env.id,
            expected_version: self.expected_version,
            session,
            outbox: self.outbox,
            task_update: self.update,
            events: self.events,
            memory: self.memory,
            memory_scope: memory_scope(&self.env.tenant, self.agent.name.as_str()),
        }
    }

    /// A new session for this envelope's receiver.
    fn blank_session(&self) -> Session {
        let env = self.env;
        Session {
            agent: self.agent.name.clone(),
            id: env.session.clone(),
            task: env.task,
            version: 0,
            status: SessionStatus::Done,
            origin: Origin {
                from: env.from.clone(),
                reply_to: env.reply_to.clone(),
            },
            transcript: Vec::new(),
            open_calls: Vec::new(),
            deferred: Vec::new(),
            wakes: 0,
            created_at: self.now,
            updated_at: self.now,
            audit: Default::default(),
        }
    }

    /// Runs the wake; returns the commit (or why to retry) and what its model steps
    /// cost, which the caller needs even when the attempt is discarded.
    async fn run(mut self, loaded: Loaded) -> (Result<Commit, Retry>, Spend) {
        let result = self.apply(loaded).await;
        let spend = std::mem::take(&mut self.spend);
        match result {
            Ok(session) => (Ok(self.commit(session)), spend),
            Err(r) => (Err(r), spend),
        }
    }

    /// Guards, loads and applies the envelope, and thinks. `Ok(None)` leaves the
    /// session untouched.
    async fn apply(&mut self, loaded: Loaded) -> Result<Option<Session>, Retry> {
        let env = self.env;
        // Guard.
        if self.task.status.is_final() {
            let detail = format!(
                "{} from {} ignored: the task is already {}",
                env.kind, env.from, self.task.status
            );
            self.event(EventKind::Ignored, detail);
            return Ok(None);
        }
        self.base.clone_from(&loaded.session);
        self.audit(
            "received",
            json!({
                "kind": env.kind,
                "from": env.from,
                "hop": env.hop,
                "in_reply_to": env.in_reply_to,
                "body_sha256": audit::sha256_hex(env.body.as_bytes()),
            }),
        );
        if env.hop > self.task.budget.max_hops {
            let reason = format!(
                "hop limit reached: this {} from {} to {} is hop {}, over the task's limit of {} \
                 (agents may be messaging each other in a loop)",
                env.kind, env.from, env.to, env.hop, self.task.budget.max_hops
            );
            self.fail(reason);
            return Ok(None);
        }
        if self.now > self.task.deadline_ms() {
            let reason = format!(
                "timed out: the task ran past its limit of {} s",
                self.task.budget.timeout_secs
            );
            self.fail(reason);
            return Ok(None);
        }
        if let Some(reason) = budget_breach(&self.task.usage, &self.task.budget) {
            self.fail(reason);
            return Ok(None);
        }

        // Load: an existing session, or a new one for new work.
        let mut session = match (loaded.session, env.kind) {
            (Some(s), _) => {
                // ...and after the session's previous wake.
                self.now = self.now.max(s.updated_at.saturating_add(1));
                s
            }
            (None, Kind::Task | Kind::Message) => Session {
                status: SessionStatus::Active,
                ..self.blank_session()
            },
            (None, kind) => {
                let detail = format!("{kind} from {} for a session that does not exist", env.from);
                self.event(EventKind::Ignored, detail);
                self.audit.clear();
                return Ok(None);
            }
        };
        self.expected_version = session.version;
        session.wakes += 1;

        // Apply the envelope to the session.
        match env.kind {
            Kind::Task | Kind::Message => {
                self.event(
                    EventKind::Woke,
                    format!(
                        "{} from {}: {}",
                        env.kind,
                        env.from,
                        preview(&env.body, 160)
                    ),
                );
                let text = match env.kind {
                    Kind::Task => env.body.clone(),
                    _ => format!("Request from agent {}: {}", env.from, env.body),
                };
                if session.status == SessionStatus::Done {
                    session.origin = Origin {
                        from: env.from.clone(),
                        reply_to: env.reply_to.clone(),
                    };
                }
                if session.open_calls.is_empty() {
                    session.transcript.push(Message::user(text));
                } else {
                    session.deferred.push(text);
                }
                session.status = SessionStatus::Active;
            }
            Kind::Tool => {
                // Tool envelopes are run by `run_effect`, never applied to a session.
                self.event(EventKind::Ignored, "tool envelope outside its runner");
                return Ok(None);
            }
            Kind::Approval => {
                if !self.apply_decision(&mut session).await {
                    self.audit.clear();
                    return Ok(None);
                }
            }
            Kind::Reply | Kind::Wake => {
                let call = env.in_reply_to.as_deref().unwrap_or_default();
                let body = match env.kind {
                    Kind::Wake => format!("Scheduled wake-up: {}", env.body),
                    _ => env.body.clone(),
                };
                let slot = session
                    .open_calls
                    .iter_mut()
                    .find(|s| s.id == call && s.result.is_none());
                match slot {
                    Some(slot) => {
                        slot.result = Some(body);
                        slot.is_error = env.is_error;
                    }
                    None => {
                        let detail = format!(
                            "{} from {} answers no open call ({call:?})",
                            env.kind, env.from
                        );
                        self.event(EventKind::Ignored, detail);
                        self.audit.clear();
                        return Ok(None);
                    }
                }
                // Arrival order must not show in the timeline: replies to one fan-out
                // may come in any order, and the timeline stays the same.
                self.event(EventKind::Woke, format!("{} from {}", env.kind, env.from));
            }
        }

        // Fan-in: think only once every call of the open turn has its result.
        let waiting = session
            .open_calls
            .iter()
            .filter(|s| s.result.is_none())
            .count();
        if waiting > 0 {
            session.status = SessionStatus::Waiting;
            self.event(
                EventKind::Waiting,
                format!("asleep until {waiting} more answer(s) arrive"),
            );
        } else {
            if !session.open_calls.is_empty() {
                let slots = std::mem::take(&mut session.open_calls);
                let deferred = std::mem::take(&mut session.deferred);
                session.transcript.push(results_message(&slots, deferred));
            }
            self.notes = loaded.memory;
            self.think(&mut session).await?;
        }

        if self.is_root() && self.update.status.is_none() {
            self.update.status = Some(match session.status {
                SessionStatus::Waiting => TaskStatus::Waiting,
                _ => TaskStatus::Running,
            });
        }
        Ok(Some(session))
    }

    /// Applies a person's decision to the call waiting for it: approved, the tool runs
    /// (inline or through the outbox, as any call of it); denied, the model gets an
    /// error result naming who denied it. False: the envelope answers no open call
    /// (a repeat, or a forgery) and is ignored.
    async fn apply_decision(&mut self, session: &mut Session) -> bool {
        let env = self.env;
        let call = env.in_reply_to.as_deref().unwrap_or_default();
        let id = env.id.to_string();
        let Some(index) = session.open_calls.iter().position(|s| {
            s.id == call && s.result.is_none() && s.approval.as_deref() == Some(id.as_str())
        }) else {
            let detail = format!("approval from {} answers no call waiting for it", env.from);
            self.event(EventKind::Ignored, detail);
            return false;
        };
        let decision: Decision = match serde_json::from_str(&env.body) {
            Ok(d) => d,
            Err(e) => {
                self.event(
                    EventKind::Ignored,
                    format!("approval whose body does not parse: {e}"),
                );
                return false;
            }
        };
        let mut slot = session.open_calls[index].clone();
        slot.approval = None;
        let input = slot.input.take().unwrap_or(Value::Null);
        let verdict = if decision.approved {
            "approved"
        } else {
            "denied"
        };
        let note = decision
            .note
            .as_deref()
            .map(|n| format!(" ({})", preview(n, 200)))
            .unwrap_or_default();
        self.event(
            EventKind::Woke,
            format!(
                "{}({}) {verdict} by {}{note}",
                slot.name,
                preview(&input.to_string(), 120),
                decision.by
            ),
        );
        self.audit(
            "approval_decided",
            json!({
                "approval": approvals::approval_id(env.task, env.id),
                "tool": slot.name,
                "call_id": slot.id,
                "approved": decision.approved,
                "by": decision.by,
                "note": decision.note,
            }),
        );
        let slot = if decision.approved {
            let name = slot.name.clone();
            let tool = self
                .agent
                .tools
                .contains(&name)
                .then(|| self.kernel.tools.get(&name))
                .flatten()
                .cloned();
            match tool {
                Some(tool) => {
                    slot.target = None;
                    self.run_granted(&session.id, slot, name, input, tool).await
                }
                None => CallSlot {
                    result: Some(format!("no tool named {name:?} is available to you")),
                    is_error: true,
                    ..slot
                },
            }
        } else {
            CallSlot {
                result: Some(format!(
                    "A person ({}) denied this call of {}{note}. It was not run; do not \
                     ask for it again, and go on without it.",
                    decision.by, slot.name
                )),
                is_error: true,
                ..slot
            }
        };
        session.open_calls[index] = slot;
        true
    }

    async fn think(&mut self, session: &mut Session) -> Result<(), Retry> {
        let steps = self.agent.limits.max_steps_per_wake;
        for _ in 0..steps {
            let mut spent = self.task.usage;
            spent.add(&self.update.usage);
            if let Some(reason) = budget_breach(&spent, &self.task.budget) {
                self.fail(reason);
                session.status = SessionStatus::Done;
                return Ok(());
            }
            let mut request = self.request(session);
            let response = match self.step(&mut request).await? {
                Ok(r) => r,
                Err(reason) => {
                    self.fail(reason);
                    session.status = SessionStatus::Done;
                    return Ok(());
                }
            };
            let u = &response.usage;
            self.update.usage.llm_calls += 1;
            self.update.usage.input_tokens += u.input_tokens;
            self.update.usage.output_tokens += u.output_tokens;
            self.update.usage.cache_read_tokens += u.cache_read_tokens;
            self.update.usage.cache_write_tokens += u.cache_write_tokens;
            self.update.usage.cost_micros += u.cost_micros;
            let calls: Vec<(String, String, Value)> = response
                .tool_uses()
                .map(|(id, name, input)| (id.to_string(), name.to_string(), input.clone()))
                .collect();
            let mut detail = format!(
                "{} → {} tool call(s), {} tokens",
                response.model,
                calls.len(),
                u.tokens()
            );
            if u.cache_read_tokens + u.cache_write_tokens > 0 {
                detail.push_str(&format!(
                    " ({} cached, {} written to cache)",
                    u.cache_read_tokens, u.cache_write_tokens
                ));
            }
            if u.cost_micros > 0 {
                detail.push_str(&format!(", {}", crate::model::dollars(u.cost_micros)));
            }
            self.event(EventKind::Model, detail);
            let request_sha256 = self
                .step_key
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            self.audit(
                "model_call",
                json!({
                    "model": response.model,
                    "request_sha256": request_sha256,
                    "stop": format!("{:?}", response.stop),
                    "tool_calls": calls.len(),
                    "usage": {
                        "input_tokens": u.input_tokens,
                        "output_tokens": u.output_tokens,
                        "cache_read_tokens": u.cache_read_tokens,
                        "cache_write_tokens": u.cache_write_tokens,
                        "cost_micros": u.cost_micros,
                    },
                }),
            );
            self.why = response.text();
            if let Some(reason) = self.unusable(&response, calls.len()) {
                self.fail(reason);
                session.status = SessionStatus::Done;
                return Ok(());
            }
            session.transcript.push(Message {
                role: Role::Assistant,
                content: response.content.clone(),
            });
            if calls.is_empty() {
                self.finish(session, response.text());
                return Ok(());
            }
            let limit = self.agent.limits.max_tool_calls_per_step as usize;
            let mut slots = Vec::with_capacity(calls.len());
            for (i, (id, name, input)) in calls.into_iter().enumerate() {
                if i >= limit {
                    slots.push(CallSlot {
                        id,
                        name,
                        target: None,
                        result: Some(format!(
                            "not run: at most {limit} tool calls are run from one response \
                             (limits.max_tool_calls_per_step); ask again for the rest"
                        )),
                        is_error: true,
                        input: None,
                        approval: None,
                    });
                    continue;
                }
                slots.push(self.call(session, id, name, input).await);
            }
            if slots.iter().all(|s| s.result.is_some()) {
                session.transcript.push(results_message(&slots, Vec::new()));
                continue;
            }
            let waiting = slots.iter().filter(|s| s.result.is_none()).count();
            session.open_calls = slots;
            session.status = SessionStatus::Waiting;
            self.event(
                EventKind::Waiting,
                format!("asleep until {waiting} answer(s) arrive"),
            );
            return Ok(());
        }
        self.fail(format!(
            "agent {} made {steps} model calls in one wake without finishing \
             (limits.max_steps_per_wake = {steps})",
            self.agent.name
        ));
        session.status = SessionStatus::Done;
        Ok(())
    }

    /// Why a response must not be acted on, if it must not: it was cut off, refused
    /// or filtered. A cut-off response's tool calls may be truncated and never run.
    fn unusable(&self, response: &ModelResponse, calls: usize) -> Option<String> {
        let name = &self.agent.name;
        match response.stop {
            StopReason::EndTurn | StopReason::ToolUse => None,
            StopReason::MaxTokens => Some(format!(
                "agent {name}: the model's answer was cut off at its limit of {} output tokens{}; \
                 raise limits.max_output_tokens in agent.toml",
                self.agent.limits.max_output_tokens,
                if calls > 0 {
                    format!(" and its {calls} tool call(s) were not run")
                } else {
                    String::new()
                }
            )),
            StopReason::Refusal => Some(format!(
                "agent {name}: the model refused to answer: {}",
                preview(&response.text(), DETAIL_CHARS)
            )),
            StopReason::ContentFilter => Some(format!(
                "agent {name}: the provider's content filter stopped the answer"
            )),
        }
    }

    /// One model step: replayed from the journal when this wake already paid for it,
    /// else asked of the model and journaled before anything acts on it.
    /// `Ok(Err(reason))`: a permanent failure that fails the task.
    async fn step(
        &mut self,
        request: &mut ModelRequest,
    ) -> Result<Result<ModelResponse, String>, Retry> {
        let kernel = self.kernel;
        // The offline model is never journaled: with nothing to read either, its
        // step needs no key (hashing the transcript is most of a wake's CPU).
        // The key is also the request's hash in the audit log.
        let key = journal::step_key(self.env.task, request);
        self.step_key.clone_from(&key);
        self.spend.used.insert(key.clone());
        if self.lookup {
            match kernel.journal.response(&key).await {
                Ok(Some(recorded)) => return Ok(Ok(recorded)),
                Ok(None) => {}
                // Without the journal the step is paid again, not lost.
                Err(e) => tracing::warn!(error = %e, "journal read failed; calling the model"),
            }
        }
        if let Some(deadline) = self.deadline {
            let end = deadline.saturating_sub(kernel.config.deadline_margin_ms);
            let now = kernel.now_ms();
            if now >= end {
                return Err(Retry {
                    reason: "the invocation deadline is near; the wake goes on in the next \
                             invocation from its journaled steps"
                        .into(),
                    delay_ms: Some(0),
                });
            }
            let left = end - now;
            request.timeout_ms = Some(request.timeout_ms.map_or(left, |t| t.min(left)));
        }
        match kernel.ports.model.complete(request).await {
            Ok(mut response) => {
                response.usage.llm_calls = 1;
                kernel.price(&mut response);
                self.spend.made.add(&response.usage);
                // The offline model is deterministic and free: nothing to save.
                let paid = crate::route::provider_of(&response.model) != "offline";
                if paid && let Err(e) = kernel.journal.record_response(&key, &response).await {
                    // Acting on it anyway pays for it once if this attempt commits.
                    tracing::warn!(error = %e, "could not journal a model response");
                }
                if paid {
                    self.spend.fresh.push((key, response.usage));
                }
                Ok(Ok(response))
            }
            Err(LlmError::Transient {
                reason,
                retry_after_ms,
            }) => Err(Retry {
                reason: format!("model: {reason}"),
                delay_ms: retry_after_ms,
            }),
            Err(LlmError::Permanent(m)) => Ok(Err(format!(
                "agent {}: model call failed: {}",
                self.agent.name,
                preview(&m, DETAIL_CHARS)
            ))),
        }
    }

    fn request(&self, session: &Session) -> ModelRequest {
        let catalog = &self.kernel.catalog;
        let mut system = self.agent.system_prompt.trim().to_string();
        system.push_str(&format!("\n\nYou are the agent `{}`.", self.agent.name));
        if !self.agent.may_message.is_empty() {
            system.push_str(
                "\nAgents you can delegate to with send_message (their answers come back \
                 as the tool results):",
            );
            for peer in &self.agent.may_message {
                if let Some(def) = catalog.get(peer.as_str()) {
                    system.push_str(&format!("\n- {}: {}", def.name, def.purpose));
                }
            }
        }
        // Memory changes between wakes, so it rides after the cached prefix.
        let shown = self.kernel.config.memory_in_prompt.min(self.notes.len());
        let context = (shown > 0).then(|| {
            let mut text = String::from("Your long-term memory (newest last):");
            for note in &self.notes[self.notes.len() - shown..] {
                text.push_str(&format!("\n- {}", note.text));
            }
            if self.notes.len() > shown {
                text.push_str(&format!(
                    "\n({} older notes: search them with recall)",
                    self.notes.len() - shown
                ));
            }
            text
        });
        let mut tools: Vec<ToolSpec> = self
            .agent
            .tools
            .iter()
            .filter_map(|t| self.kernel.tools.get(t))
            .map(|t| t.spec())
            .collect();
        tools.extend(kernel_tools(self.agent));
        let simple = session.transcript.last().is_some_and(|m| {
            m.role == Role::User
                && !m.content.is_empty()
                && m.content
                    .iter()
                    .all(|c| matches!(c, Content::ToolResult { .. }))
        });
        ModelRequest {
            model: self.kernel.route_for(self.agent, simple),
            fallbacks: self.agent.fallbacks.clone(),
            agent: self.agent.name.to_string(),
            system,
            messages: session.transcript.clone(),
            context,
            tools,
            max_tokens: self.agent.limits.max_output_tokens,
            cache_key: Some(format!("{}/{}", self.agent.name, session.id)),
            timeout_ms: None,
        }
    }

    /// Runs one tool call: inline for synchronous tools, through the outbox for the
    /// kernel's asynchronous ones (whose slot stays open until the answer arrives).
    async fn call(
        &mut self,
        session: &Session,
        id: String,
        name: String,
        input: Value,
    ) -> CallSlot {
        let mut slot = CallSlot {
            id: id.clone(),
            name: name.clone(),
            target: None,
            result: None,
            is_error: false,
            input: None,
            approval: None,
        };
        let fail = |mut slot: CallSlot, msg: String| {
            slot.result = Some(msg);
            slot.is_error = true;
            slot
        };
        match name.as_str() {
            SEND_MESSAGE => {
                let peer = input
                    .get("agent")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let request = input
                    .get("request")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let Some(peer) = self.agent.may_message.iter().find(|p| p.as_str() == peer) else {
                    let allowed: Vec<&str> = self
                        .agent
                        .may_message
                        .iter()
                        .map(AgentName::as_str)
                        .collect();
                    return fail(
                        slot,
                        format!(
                            "agent {peer:?} is not one you may message; allowed: {}",
                            allowed.join(", ")
                        ),
                    );
                };
                if request.trim().is_empty() {
                    return fail(slot, "send_message needs a non-empty `request`".into());
                }
                let peer = peer.clone();
                let child = self.next_child();
                let child_session = SessionId::from_ulid(child.0);
                self.outbox.push(OutboxItem {
                    envelope: Envelope {
                        id: child,
                        task: self.env.task,
                        tenant: self.env.tenant.clone(),
                        session: child_session,
                        from: self.agent.name.to_string(),
                        to: peer.clone(),
                        kind: Kind::Message,
                        body: request.to_string(),
                        body_ref: None,
                        hop: self.env.hop + 1,
                        trace_id: self.env.trace_id.clone(),
                        sent_at: self.now,
                        reply_to: Some(ReplyTo {
                            agent: self.agent.name.clone(),
                            session: session.id.clone(),
                            call_id: id,
                        }),
                        in_reply_to: None,
                        is_error: false,
                    },
                    deliver_at: None,
                });
                self.event(
                    EventKind::Delegated,
                    format!("→ {peer}: {}", preview(request, 160)),
                );
                self.audit(
                    "message_sent",
                    json!({
                        "to": peer,
                        "kind": "message",
                        "envelope": child,
                        "call_id": slot.id,
                        "body_sha256": audit::sha256_hex(request.as_bytes()),
                    }),
                );
                slot.target = Some(peer.to_string());
                slot
            }
            SCHEDULE_WAKEUP => {
                let secs = input
                    .get("after_seconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let note = input
                    .get("note")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !(1..=31_536_000).contains(&secs) {
                    return fail(slot, "after_seconds must be between 1 and 31536000".into());
                }
                let child = self.next_child();
                let at = self.now.saturating_add(secs * 1000);
                self.outbox.push(OutboxItem {
                    envelope: Envelope {
                        id: child,
                        task: self.env.task,
                        tenant: self.env.tenant.clone(),
                        session: session.id.clone(),
                        from: "scheduler".into(),
                        to: self.agent.name.clone(),
                        kind: Kind::Wake,
                        body: note.to_string(),
                        body_ref: None,
                        hop: self.env.hop + 1,
                        trace_id: self.env.trace_id.clone(),
                        sent_at: self.now,
                        reply_to: None,
                        in_reply_to: Some(id),
                        is_error: false,
                    },
                    deliver_at: Some(at),
                });
                self.event(
                    EventKind::Scheduled,
                    format!("wake-up in {secs} s: {}", preview(note, 120)),
                );
                self.audit(
                    "wake_scheduled",
                    json!({ "envelope": child, "at": at, "call_id": slot.id }),
                );
                slot.target = Some(self.agent.name.to_string());
                slot
            }
            REMEMBER => {
                let note = input
                    .get("note")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if note.trim().is_empty() {
                    return fail(slot, "remember needs a non-empty `note`".into());
                }
                if note.chars().count() > MEMORY_NOTE_CHARS {
                    return fail(
                        slot,
                        format!(
                            "a memory note holds at most {MEMORY_NOTE_CHARS} characters; this one has {}: keep the gist",
                            note.chars().count()
                        ),
                    );
                }
                let index = self.memory.len() as u32;
                self.memory.push(MemoryNote {
                    id: self.env.id.derive("memory", index).to_string(),
                    at: self.now,
                    text: note.to_string(),
                });
                self.audit(
                    "memory_written",
                    json!({ "note_sha256": audit::sha256_hex(note.as_bytes()) }),
                );
                slot.result = Some("Noted in long-term memory.".into());
                slot
            }
            RECALL => {
                let query = input
                    .get("query")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let notes: Vec<&MemoryNote> = self.notes.iter().chain(&self.memory).collect();
                slot.result = Some(recall(&notes, query));
                slot
            }
            _ => {
                let tool = self
                    .agent
                    .tools
                    .contains(&name)
                    .then(|| self.kernel.tools.get(&name))
                    .flatten()
                    .cloned();
                let Some(tool) = tool else {
                    // The allow-list is the kernel's: a tool not on it is never run.
                    self.event(
                        EventKind::ToolCall,
                        format!("{name} refused: not one of this agent's tools"),
                    );
                    self.audit(
                        "tool_refused",
                        json!({ "tool": name, "call_id": slot.id, "arguments": audit_value(&input) }),
                    );
                    return fail(slot, format!("no tool named {name:?} is available to you"));
                };
                if tool.meta().requires_approval {
                    return self.ask_approval(session, slot, name, input);
                }
                self.run_granted(&session.id, slot, name, input, tool).await
            }
        }
    }

    /// Puts a call of a tool that needs a person's approval on hold: records the
    /// request and leaves the call open until the decision arrives.
    fn ask_approval(
        &mut self,
        session: &Session,
        mut slot: CallSlot,
        name: String,
        input: Value,
    ) -> CallSlot {
        let envelope = self.next_child();
        let reason = if self.why.trim().is_empty() {
            format!("agent {} wants to run {name}", self.agent.name)
        } else {
            preview(&self.why, DETAIL_CHARS)
        };
        let request = ApprovalRequest {
            envelope,
            agent: self.agent.name.clone(),
            session: session.id.clone(),
            call_id: slot.id.clone(),
            tool: name.clone(),
            arguments: input.clone(),
            reason: reason.clone(),
            hop: self.env.hop + 1,
            trace_id: self.env.trace_id.clone(),
            asked_at: self.now,
        };
        self.event(
            EventKind::ApprovalRequested,
            serde_json::to_string(&request).unwrap_or_default(),
        );
        self.audit(
            "approval_asked",
            json!({
                "approval": approvals::approval_id(self.env.task, envelope),
                "tool": name,
                "call_id": slot.id,
                "arguments": audit_value(&input),
                "reason": reason,
            }),
        );
        slot.target = Some("approval".into());
        slot.input = Some(input);
        slot.approval = Some(envelope.to_string());
        slot
    }

    /// Runs an allowed (and, if it needs it, approved) tool call: inline when safe to
    /// repeat, else through the outbox in a wake of its own, at most once.
    async fn run_granted(
        &mut self,
        session_id: &SessionId,
        mut slot: CallSlot,
        name: String,
        input: Value,
        tool: Arc<dyn crate::tools::Tool>,
    ) -> CallSlot {
        let id = slot.id.clone();
        let fail = |mut slot: CallSlot, msg: String| {
            slot.result = Some(msg);
            slot.is_error = true;
            slot
        };
        let session_id = session_id.clone();
        let args = preview(&input.to_string(), 120);
        let mode = if tool.meta().runs_inline() {
            "inline"
        } else {
            "queued"
        };
        self.audit(
            "tool_call",
            json!({ "tool": name, "call_id": id, "mode": mode, "arguments": audit_value(&input) }),
        );
        if !tool.meta().runs_inline() {
            // Effects that must not repeat run in a wake of their own.
            let child = self.next_child();
            let body = serde_json::to_string(&EffectCall {
                call_id: id.clone(),
                name: name.clone(),
                input,
            })
            .unwrap_or_default();
            self.outbox.push(OutboxItem {
                envelope: Envelope {
                    id: child,
                    task: self.env.task,
                    tenant: self.env.tenant.clone(),
                    session: session_id.clone(),
                    from: self.agent.name.to_string(),
                    to: self.agent.name.clone(),
                    kind: Kind::Tool,
                    body,
                    body_ref: None,
                    hop: self.env.hop + 1,
                    trace_id: self.env.trace_id.clone(),
                    sent_at: self.now,
                    reply_to: None,
                    in_reply_to: Some(id),
                    is_error: false,
                },
                deliver_at: None,
            });
            self.event(
                EventKind::ToolCall,
                format!("{name}({args}) queued to run at most once"),
            );
            slot.target = Some(self.agent.name.to_string());
            return slot;
        }
        self.update.usage.tool_calls += 1;
        let key = journal::tool_key(
            self.env.task,
            self.agent.name.as_str(),
            session_id.as_str(),
            &id,
            &name,
            &input,
        );
        let journal = &self.kernel.journal;
        let meta = tool.meta();
        // A replay reads even pure tools' records: the recorded run may have
        // answered live where the replay would compute.
        let journaled = !meta.deterministic || self.kernel.config.replay;
        let recorded = match self.lookup && journaled {
            true => journal.tool(&key).await,
            false => Ok(None),
        };
        let record = match recorded {
            Ok(Some(r)) => r,
            other => {
                if let Err(e) = other {
                    tracing::warn!(error = %e, "journal read failed; running the tool");
                }
                let ctx = ToolContext {
                    agent: self.agent.name.clone(),
                    session: session_id.clone(),
                    task: self.env.task,
                    now_ms: self.now,
                };
                let r = run_tool(tool.as_ref(), &name, input, &ctx).await;
                if !meta.deterministic
                    && let Err(e) = journal.record_tool(&key, &r).await
                {
                    tracing::warn!(error = %e, "could not journal a tool result");
                }
                r
            }
        };
        self.audit(
            "tool_result",
            json!({
                "tool": name,
                "call_id": id,
                "is_error": record.is_error,
                "result_sha256": audit::sha256_hex(record.result.as_bytes()),
            }),
        );
        if record.is_error {
            self.event(
                EventKind::ToolCall,
                format!("{name}({args}) failed: {}", record.result),
            );
            fail(slot, record.result)
        } else {
            self.event(
                EventKind::ToolCall,
                format!("{name}({args}) → {}", preview(&record.result, 160)),
            );
            slot.result = Some(record.result);
            slot
        }
    }

    /// The model answered without tool calls: that text is this session's answer.
    fn finish(&mut self, session: &mut Session, text: String) {
        session.status = SessionStatus::Done;
        match session.origin.reply_to.clone() {
            Some(rt) => {
                let child = self.next_child();
                self.outbox.push(OutboxItem {
                    envelope: Envelope {
                        id: child,
                        task: self.env.task,
                        tenant: self.env.tenant.clone(),
                        session: rt.session,
                        from: self.agent.name.to_string(),
                        to: rt.agent.clone(),
                        kind: Kind::Reply,
                        body: text.clone(),
                        body_ref: None,
                        hop: self.env.hop + 1,
                        trace_id: self.env.trace_id.clone(),
                        sent_at: self.now,
                        reply_to: None,
                        in_reply_to: Some(rt.call_id),
                        is_error: false,
                    },
                    deliver_at: None,
                });
                self.event(
                    EventKind::Replied,
                    format!("→ {}: {}", rt.agent, preview(&text, 200)),
                );
                self.audit(
                    "message_sent",
                    json!({
                        "to": rt.agent,
                        "kind": "reply",
                        "envelope": child,
                        "body_sha256": audit::sha256_hex(text.as_bytes()),
                    }),
                );
            }
            None => {
                self.audit(
                    "answer",
                    json!({ "chars": text.chars().count(), "sha256": audit::sha256_hex(text.as_bytes()) }),
                );
                self.event(EventKind::Answer, text.clone());
                self.update.status = Some(TaskStatus::Succeeded);
                self.update.result = Some(text);
            }
        }
    }
}

/// Tool arguments as the audit log keeps them: whole up to 4 KiB, else a preview and
/// the hash of the whole.
fn audit_value(v: &Value) -> Value {
    let text = v.to_string();
    if text.len() <= 4096 {
        v.clone()
    } else {
        json!({
            "preview": preview(&text, 1000),
            "sha256": audit::sha256_hex(text.as_bytes()),
            "bytes": text.len(),
        })
    }
}

/// The user turn that carries a closed turn's tool results, in call order, followed
/// by any requests that arrived meanwhile.
fn results_message(slots: &[CallSlot], deferred: Vec<String>) -> Message {
    let mut content: Vec<Content> = slots
        .iter()
        .map(|s| Content::ToolResult {
            tool_use_id: s.id.clone(),
            content: s.result.clone().unwrap_or_default(),
            is_error: s.is_error,
        })
        .collect();
    content.extend(deferred.into_iter().map(|text| Content::Text { text }));
    Message {
        role: Role::User,
        content,
    }
}

/// The kernel's own tools, as the model sees them.
pub fn kernel_tools(agent: &AgentDef) -> Vec<ToolSpec> {
    let mut tools = Vec::new();
    if !agent.may_message.is_empty() {
        let names: Vec<&str> = agent.may_message.iter().map(AgentName::as_str).collect();
        tools.push(ToolSpec {
            name: SEND_MESSAGE.into(),
            description: "Delegate a self-contained sub-task to another agent. You fall asleep \
                          after this turn; the agent's answer arrives as this call's result."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "agent": {"type": "string", "enum": names},
                    "request": {"type": "string", "description": "What the agent should do, with everything it needs to know."}
                },
                "required": ["agent", "request"]
            }),
        });
    }
    tools.push(ToolSpec {
        name: SCHEDULE_WAKEUP.into(),
        description: "Sleep and be woken again after a delay; the note comes back as the result."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "after_seconds": {"type": "integer", "minimum": 1, "maximum": 31536000},
                "note": {"type": "string"}
            },
            "required": ["after_seconds", "note"]
        }),
    });
    tools.push(ToolSpec {
        name: RECALL.into(),
        description: "Search your long-term memory for notes about something.".into(),
        input_schema: json!({
            "type": "object",
            "properties": {"query": {"type": "string", "description": "Words to look for."}},
            "required": ["query"]
        }),
    });
    tools.push(ToolSpec {
        name: REMEMBER.into(),
        description: "Keep a short note in your long-term memory, seen in every later task.".into(),
        input_schema: json!({
            "type": "object",
            "properties": {"note": {"type": "string"}},
            "required": ["note"]
        }),
    });
    tools
}

/// The memory notes that share the most words with `query`, best first (newest first
/// among equals), at most five.
fn recall(notes: &[&MemoryNote], query: &str) -> String {
    let words = |t: &str| -> HashSet<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() > 2)
            .map(str::to_lowercase)
            .collect()
    };
    let wanted = words(query);
    if wanted.is_empty() {
        return "recall needs a `query` with at least one word of three letters or more".into();
    }
    let mut hits: Vec<(usize, usize, &MemoryNote)> = notes
        .iter()
        .enumerate()
        .map(|(i, n)| (words(&n.text).intersection(&wanted).count(), i, *n))
        .filter(|(score, _, _)| *score > 0)
        .collect();
    hits.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    if hits.is_empty() {
        return format!("nothing in your memory matches {query:?}");
    }
    hits.iter()
        .take(5)
        .map(|(_, _, n)| format!("- {}", n.text))
        .collect::<Vec<_>>()
        .join("\n")
}
