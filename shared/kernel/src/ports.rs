//! Ports: the narrow traits the kernel runs over. Each has an embedded adapter
//! (`aos-local`), an AWS adapter, and in-memory doubles (`testkit`); all pass the same
//! conformance suite. Wire types (DynamoDB attribute values, SQS attributes) stay
//! inside adapters.

use crate::ids::{EnvelopeId, TaskId};
use crate::model::{
    Envelope, Event, MemoryNote, OutboxItem, Session, SessionKey, Task, TaskStatus, TaskUpdate,
};
use async_trait::async_trait;

/// Port failures, sorted by what the caller should do.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PortError {
    /// The version-conditioned write lost a race: re-read and try again.
    #[error("conflict: the session changed since it was read")]
    Conflict,
    /// The backend is unavailable or throttling: retry later.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The request can never succeed (too large, malformed): do not retry.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Everything a wake reads, in one round trip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub session: Option<Session>,
    /// Present when this envelope was already applied to this session: its outbox.
    pub applied: Option<Vec<OutboxItem>>,
    pub task: Option<Task>,
    /// The agent's long-term memory, newest last.
    pub memory: Vec<MemoryNote>,
}

/// Everything a wake writes, in one atomic, version-conditioned write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub key: SessionKey,
    pub task: TaskId,
    /// The envelope applied by this wake; stored as the applied marker with `outbox`.
    pub envelope: EnvelopeId,
    /// The session version read (0: the session must not exist yet).
    pub expected_version: u64,
    /// New session state with `version = expected_version + 1`; `None` leaves the
    /// session untouched (and unconditioned).
    pub session: Option<Session>,
    pub outbox: Vec<OutboxItem>,
    pub task_update: TaskUpdate,
    pub events: Vec<Event>,
    pub memory: Vec<MemoryNote>,
    /// Where `memory` is kept: [`crate::model::memory_scope`] of the task's tenant and
    /// the agent.
    pub memory_scope: String,
}

/// Session state, applied markers and agent memory.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Reads the session, the applied marker of `envelope`, the task and the memory
    /// kept under `memory_scope` (at most `memory_limit` newest notes).
    async fn load(
        &self,
        key: &SessionKey,
        task: TaskId,
        envelope: EnvelopeId,
        memory_scope: &str,
        memory_limit: usize,
    ) -> Result<Loaded, PortError>;

    /// Writes `commit` atomically. `Err(Conflict)` when the stored session version is
    /// not `expected_version` or the envelope is already applied.
    async fn commit(&self, commit: &Commit) -> Result<(), PortError>;
}

/// Which tasks [`TaskStore::list_tasks`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only this tenant's tasks; `None`: every tenant's (sweeps and recovery).
    pub tenant: Option<String>,
    pub status: Option<TaskStatus>,
    /// Only tasks with a smaller id than this: the cursor of the next page.
    pub before: Option<TaskId>,
    pub limit: usize,
}

impl TaskQuery {
    /// Every task with `status`, of every tenant.
    pub fn status(status: TaskStatus) -> Self {
        Self {
            tenant: None,
            status: Some(status),
            before: None,
            limit: usize::MAX,
        }
    }

    /// Whether `task` is one this query asks for (ignoring `limit`).
    pub fn matches(&self, task: &Task) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == task.tenant)
            && self.status.is_none_or(|s| s == task.status)
            && self.before.is_none_or(|b| task.id < b)
    }
}

/// Tasks and their timelines, as the API and the CLI see them.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Creates the task with its first timeline event. Returns false when a task with
    /// this id exists already (an idempotent re-submit).
    async fn create_task(&self, task: &Task, event: &Event) -> Result<bool, PortError>;
    async fn get_task(&self, id: TaskId) -> Result<Option<Task>, PortError>;
    /// Every stored event of the task, audit records included, oldest first.
    async fn task_events(&self, id: TaskId) -> Result<Vec<Event>, PortError>;
    /// The timeline people read: [`TaskStore::task_events`] without audit records.
    async fn timeline(&self, id: TaskId) -> Result<Vec<Event>, PortError> {
        let mut events = self.task_events(id).await?;
        events.retain(|e| !e.is_audit());
        Ok(events)
    }
    /// Newest first (by id), filtered by `query`.
    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<Task>, PortError>;
    /// Binds an idempotency key (already scoped by its tenant) to `task` and the
    /// request's `fingerprint`, unless the key is bound already. Returns the binding
    /// that holds: `(task, fingerprint)` of the first caller.
    async fn claim_idempotency_key(
        &self,
        key: &str,
        task: TaskId,
        fingerprint: &str,
    ) -> Result<(TaskId, String), PortError>;
    /// Applies an update and appends events outside a wake (cancel, dead letters).
    async fn update_task(
        &self,
        id: TaskId,
        update: &TaskUpdate,
        events: &[Event],
    ) -> Result<Option<Task>, PortError>;
}

/// Agents' queues.
#[async_trait]
pub trait Mailbox: Send + Sync {
    /// Sends envelopes (to any agents). Deduplicated by envelope id, so a re-send is
    /// harmless. Fails only when some envelope could not be sent after retries.
    async fn send(&self, envelopes: &[Envelope]) -> Result<(), PortError>;
    /// Parks something that can never be processed on the agent's dead-letter queue,
    /// with a reason a person can read.
    async fn dead_letter(&self, agent: &str, body: &str, reason: &str) -> Result<(), PortError>;
}

/// Large bodies and state parts.
#[async_trait]
pub trait BlobStore: Send + Sync {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), PortError>;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError>;
}

/// One-time deliveries in the future.
#[async_trait]
pub trait Scheduler: Send + Sync {
    /// Delivers `envelope` to its agent's queue at `at_ms`. Idempotent by envelope id.
    async fn schedule(&self, at_ms: u64, envelope: &Envelope) -> Result<(), PortError>;
}

/// Wall-clock time, injectable so tests control it.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A message taken from a queue by a trigger loop (what Lambda's SQS event source
/// mapping does on AWS; the local runtime does it itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Proves this receive; needed to delete or release the message.
    pub receipt: String,
    pub message_id: String,
    pub body: String,
    /// FIFO message group (the session).
    pub group: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    pub sent_at: u64,
}

/// An entry of an agent's dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Stable while the entry is parked (the SQS message id on AWS); names it to
    /// [`Inbox::redrive`].
    pub id: String,
    pub body: String,
    pub reason: String,
    pub at: u64,
    pub receive_count: u32,
}

/// The consuming side of agents' queues, with SQS FIFO semantics: one group's messages
/// come in order and a group is locked while one of its messages is in flight; a
/// message not deleted within its visibility timeout comes back; after the queue's
/// maximum receive count it moves to the dead-letter queue.
#[async_trait]
pub trait Inbox: Send + Sync {
    async fn receive(
        &self,
        agent: &str,
        max: usize,
        visibility_ms: u64,
    ) -> Result<Vec<Received>, PortError>;
    /// Acknowledges a processed message.
    async fn delete(&self, agent: &str, receipt: &str) -> Result<(), PortError>;
    /// Acknowledges several messages in one call (SQS `DeleteMessageBatch`).
    async fn delete_batch(&self, agent: &str, receipts: &[String]) -> Result<(), PortError> {
        for r in receipts {
            self.delete(agent, r).await?;
        }
        Ok(())
    }
    /// Makes an in-flight message visible again after `delay_ms`.
    async fn release(&self, agent: &str, receipt: &str, delay_ms: u64) -> Result<(), PortError>;
    /// Dead-letter entries, oldest first.
    async fn dead_letters(&self, agent: &str, limit: usize) -> Result<Vec<DeadLetter>, PortError>;
    /// Moves the dead letters named by `ids` (all of the agent's when `None`) back onto
    /// its queue as new messages (receive count 0, same body and group), and returns
    /// how many moved. Unknown ids are skipped. A message is on the queue before it
    /// leaves the dead-letter queue, so a crash in between can deliver it twice, never
    /// lose it; the kernel's applied markers absorb the second delivery.
    async fn redrive(&self, agent: &str, ids: Option<&[String]>) -> Result<usize, PortError>;
    /// Messages waiting or in flight (approximate on AWS).
    async fn depth(&self, agent: &str) -> Result<u64, PortError>;
}
