//! In-memory ports and test models. They keep the same contracts as the real adapters
//! (the conformance suite in [`conformance`] runs against them too), so kernel tests
//! prove behaviour, not mocks. Each adapter can be told to fail, to test crash paths.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod conformance;

use crate::ids::{EnvelopeId, TaskId};
use crate::llm::{LlmError, Model, ModelRequest, ModelResponse};
use crate::model::{
    Envelope, Event, MemoryNote, OutboxItem, Session, SessionKey, Task, TaskUpdate,
};
use crate::ports::{
    BlobStore, Clock, Commit, DeadLetter, Inbox, Loaded, Mailbox, PortError, Received, Scheduler,
    SessionStore, TaskQuery, TaskStore,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(ms: u64) -> Self {
        Self(AtomicU64::new(ms))
    }
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}
impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Default)]
struct StoreState {
    sessions: HashMap<SessionKey, Session>,
    applied: HashMap<(SessionKey, EnvelopeId), Vec<OutboxItem>>,
    tasks: BTreeMap<TaskId, Task>,
    events: BTreeMap<TaskId, Vec<Event>>,
    memory: HashMap<String, Vec<MemoryNote>>,
    idempotency: HashMap<String, (TaskId, String)>,
}

/// Session and task store in memory.
#[derive(Debug, Default)]
pub struct MemStore {
    state: Mutex<StoreState>,
    /// Commits still to fail with `Unavailable` (to simulate a crash before commit).
    pub fail_commits: AtomicU64,
    /// Commits still to lose a race (`Conflict`, as if another wake committed first).
    pub conflict_commits: AtomicU64,
    pub commits: AtomicU64,
}

#[async_trait]
impl SessionStore for MemStore {
    async fn load(
        &self,
        key: &SessionKey,
        task: TaskId,
        envelope: EnvelopeId,
        memory_scope: &str,
        memory_limit: usize,
    ) -> Result<Loaded, PortError> {
        let s = self.state.lock().unwrap();
        let memory = s.memory.get(memory_scope).cloned().unwrap_or_default();
        let skip = memory.len().saturating_sub(memory_limit);
        Ok(Loaded {
            session: s.sessions.get(key).cloned(),
            applied: s.applied.get(&(key.clone(), envelope)).cloned(),
            task: s.tasks.get(&task).cloned(),
            memory: memory.into_iter().skip(skip).collect(),
        })
    }

    async fn commit(&self, c: &Commit) -> Result<(), PortError> {
        if self
            .fail_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(PortError::Unavailable("injected commit failure".into()));
        }
        if self
            .conflict_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(PortError::Conflict);
        }
        let mut s = self.state.lock().unwrap();
        if s.applied.contains_key(&(c.key.clone(), c.envelope)) {
            return Err(PortError::Conflict);
        }
        if let Some(session) = &c.session {
            let current = s.sessions.get(&c.key).map(|s| s.version).unwrap_or(0);
            if current != c.expected_version {
                return Err(PortError::Conflict);
            }
            s.sessions.insert(c.key.clone(), session.clone());
        }
        s.applied
            .insert((c.key.clone(), c.envelope), c.outbox.clone());
        if let Some(task) = s.tasks.get_mut(&c.task) {
            let now = c.events.last().map_or(task.updated_at, |e| e.at);
            c.task_update.apply_to(task, now);
        }
        let log = s.events.entry(c.task).or_default();
        for e in &c.events {
            if !log.iter().any(|x| x.id == e.id) {
                log.push(e.clone());
            }
        }
        s.memory
            .entry(c.memory_scope.clone())
            .or_default()
            .extend(c.memory.iter().cloned());
        self.commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl TaskStore for MemStore {
    async fn create_task(&self, task: &Task, event: &Event) -> Result<bool, PortError> {
        let mut s = self.state.lock().unwrap();
        if s.tasks.contains_key(&task.id) {
            return Ok(false);
        }
        s.tasks.insert(task.id, task.clone());
        s.events.entry(task.id).or_default().push(event.clone());
        Ok(true)
    }
    async fn get_task(&self, id: TaskId) -> Result<Option<Task>, PortError> {
        Ok(self.state.lock().unwrap().tasks.get(&id).cloned())
    }
    async fn task_events(&self, id: TaskId) -> Result<Vec<Event>, PortError> {
        let mut v = self
            .state
            .lock()
            .unwrap()
            .events
            .get(&id)
            .cloned()
            .unwrap_or_default();
        v.sort_by_key(|e| (e.at, e.id));
        Ok(v)
    }
    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<Task>, PortError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .tasks
            .values()
            .rev()
            .filter(|t| query.matches(t))
            .take(query.limit)
            .cloned()
            .collect())
    }
    async fn claim_idempotency_key(
        &self,
        key: &str,
        task: TaskId,
        fingerprint: &str,
    ) -> Result<(TaskId, String), PortError> {
        let mut s = self.state.lock().unwrap();
        Ok(s.idempotency
            .entry(key.to_string())
            .or_insert_with(|| (task, fingerprint.to_string()))
            .clone())
    }
    async fn update_task(
        &self,
        id: TaskId,
        update: &TaskUpdate,
        events: &[Event],
    ) -> Result<Option<Task>, PortError> {
        let mut s = self.state.lock().unwrap();
        let Some(task) = s.tasks.get_mut(&id) else {
            return Ok(None);
        };
        let now = events.last().map_or(task.updated_at, |e| e.at);
        update.apply_to(task, now);
        let task = task.clone();
        let log = s.events.entry(id).or_default();
        for e in events {
            if !log.iter().any(|x| x.id == e.id) {
                log.push(e.clone());
            }
        }
        Ok(Some(task))
    }
}

#[derive(Debug, Default)]
struct Queue {
    /// (seq, message) waiting or in flight.
    messages: VecDeque<QMsg>,
    dedup: HashSet<String>,
    /// Parked entries with the FIFO group a redrive puts them back in.
    dead: Vec<(DeadLetter, String)>,
}

/// The FIFO group of a parked body: its envelope's session, else its own group.
fn dead_group(body: &str, id: &str) -> String {
    Envelope::parse(body).map_or_else(|_| id.to_string(), |e| e.session.to_string())
}

#[derive(Debug, Clone)]
struct QMsg {
    id: String,
    group: String,
    body: String,
    sent_at: u64,
    receive_count: u32,
    visible_at: u64,
    receipt: Option<String>,
}

/// FIFO queues with visibility timeouts and redrive, in memory.
pub struct MemQueues {
    queues: Mutex<HashMap<String, Queue>>,
    clock: Arc<dyn Clock>,
    max_receives: u32,
    receipts: AtomicU64,
    /// Every envelope ever accepted by `send` (after dedupe), in order.
    pub sent: Mutex<Vec<Envelope>>,
    /// Sends still to fail (to simulate a crash between commit and flush).
    pub fail_sends: AtomicU64,
}

impl std::fmt::Debug for MemQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemQueues")
    }
}

impl MemQueues {
    pub fn new(clock: Arc<dyn Clock>, max_receives: u32) -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
            clock,
            max_receives,
            receipts: AtomicU64::new(0),
            sent: Mutex::new(Vec::new()),
            fail_sends: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl Mailbox for MemQueues {
    async fn send(&self, envelopes: &[Envelope]) -> Result<(), PortError> {
        if self
            .fail_sends
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(PortError::Unavailable("injected send failure".into()));
        }
        let now = self.clock.now_ms();
        let mut qs = self.queues.lock().unwrap();
        for e in envelopes {
            let q = qs.entry(e.to.to_string()).or_default();
            if !q.dedup.insert(e.id.to_string()) {
                continue;
            }
            q.messages.push_back(QMsg {
                id: e.id.to_string(),
                group: e.session.to_string(),
                body: e.to_json(),
                sent_at: now,
                receive_count: 0,
                visible_at: now,
                receipt: None,
            });
            self.sent.lock().unwrap().push(e.clone());
        }
        Ok(())
    }

    async fn dead_letter(&self, agent: &str, body: &str, reason: &str) -> Result<(), PortError> {
        let now = self.clock.now_ms();
        let id = ulid::Ulid::new().to_string();
        self.queues
            .lock()
            .unwrap()
            .entry(agent.to_string())
            .or_default()
            .dead
            .push((
                DeadLetter {
                    id: id.clone(),
                    body: body.to_string(),
                    reason: reason.to_string(),
                    at: now,
                    receive_count: 0,
                },
                dead_group(body, &id),
            ));
        Ok(())
    }
}

#[async_trait]
impl Inbox for MemQueues {
    async fn receive(
        &self,
        agent: &str,
        max: usize,
        visibility_ms: u64,
    ) -> Result<Vec<Received>, PortError> {
        let now = self.clock.now_ms();
        let mut qs = self.queues.lock().unwrap();
        let q = qs.entry(agent.to_string()).or_default();
        let locked: HashSet<String> = q
            .messages
            .iter()
            .filter(|m| m.receipt.is_some() && m.visible_at > now)
            .map(|m| m.group.clone())
            .collect();
        let mut out = Vec::new();
        let mut redrive = Vec::new();
        let mut blocked: HashSet<String> = HashSet::new();
        for m in q.messages.iter_mut() {
            if out.len() >= max {
                break;
            }
            if locked.contains(&m.group) || blocked.contains(&m.group) {
                continue;
            }
            if m.visible_at > now {
                blocked.insert(m.group.clone());
                continue;
            }
            if m.receive_count >= self.max_receives {
                redrive.push(m.id.clone());
                blocked.insert(m.group.clone());
                continue;
            }
            m.receive_count += 1;
            m.visible_at = now + visibility_ms;
            let receipt = format!("r{}", self.receipts.fetch_add(1, Ordering::SeqCst));
            m.receipt = Some(receipt.clone());
            out.push(Received {
                receipt,
                message_id: m.id.clone(),
                body: m.body.clone(),
                group: m.group.clone(),
                receive_count: m.receive_count,
                sent_at: m.sent_at,
            });
        }
        for id in redrive {
            if let Some(pos) = q.messages.iter().position(|m| m.id == id) {
                let m = q.messages.remove(pos).unwrap();
                q.dead.push((
                    DeadLetter {
                        id: ulid::Ulid::new().to_string(),
                        body: m.body,
                        reason: format!(
                            "received {} times without success (max receives {})",
                            m.receive_count, self.max_receives
                        ),
                        at: now,
                        receive_count: m.receive_count,
                    },
                    m.group,
                ));
            }
        }
        Ok(out)
    }

    async fn delete(&self, agent: &str, receipt: &str) -> Result<(), PortError> {
        let mut qs = self.queues.lock().unwrap();
        if let Some(q) = qs.get_mut(agent) {
            q.messages.retain(|m| m.receipt.as_deref() != Some(receipt));
        }
        Ok(())
    }

    async fn release(&self, agent: &str, receipt: &str, delay_ms: u64) -> Result<(), PortError> {
        let now = self.clock.now_ms();
        let mut qs = self.queues.lock().unwrap();
        if let Some(q) = qs.get_mut(agent) {
            for m in q.messages.iter_mut() {
                if m.receipt.as_deref() == Some(receipt) {
                    m.visible_at = now + delay_ms;
                    m.receipt = None;
                }
            }
        }
        Ok(())
    }

    async fn dead_letters(&self, agent: &str, limit: usize) -> Result<Vec<DeadLetter>, PortError> {
        let qs = self.queues.lock().unwrap();
        Ok(qs
            .get(agent)
            .map(|q| q.dead.iter().take(limit).map(|(d, _)| d.clone()).collect())
            .unwrap_or_default())
    }

    async fn redrive(&self, agent: &str, ids: Option<&[String]>) -> Result<usize, PortError> {
        let now = self.clock.now_ms();
        let mut qs = self.queues.lock().unwrap();
        let Some(q) = qs.get_mut(agent) else {
            return Ok(0);
        };
        let wanted = |d: &DeadLetter| ids.is_none_or(|ids| ids.contains(&d.id));
        let (moved, kept): (Vec<_>, Vec<_>) = q.dead.drain(..).partition(|(d, _)| wanted(d));
        q.dead = kept;
        let n = moved.len();
        for (d, group) in moved {
            // A new message: SQS gives it a new id and the dedupe window does not apply.
            q.messages.push_back(QMsg {
                id: ulid::Ulid::new().to_string(),
                group,
                body: d.body,
                sent_at: now,
                receive_count: 0,
                visible_at: now,
                receipt: None,
            });
        }
        Ok(n)
    }

    async fn depth(&self, agent: &str) -> Result<u64, PortError> {
        let qs = self.queues.lock().unwrap();
        Ok(qs.get(agent).map(|q| q.messages.len() as u64).unwrap_or(0))
    }
}

/// Blobs in memory.
#[derive(Debug, Default)]
pub struct MemBlobs(Mutex<HashMap<String, Vec<u8>>>);

#[async_trait]
impl BlobStore for MemBlobs {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), PortError> {
        self.0.lock().unwrap().insert(key.into(), bytes.to_vec());
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
}

/// Records scheduled deliveries; tests deliver them by hand.
#[derive(Debug, Default)]
pub struct MemScheduler {
    pub scheduled: Mutex<BTreeMap<String, (u64, Envelope)>>,
}

#[async_trait]
impl Scheduler for MemScheduler {
    async fn schedule(&self, at_ms: u64, envelope: &Envelope) -> Result<(), PortError> {
        self.scheduled
            .lock()
            .unwrap()
            .insert(envelope.id.to_string(), (at_ms, envelope.clone()));
        Ok(())
    }
}

/// Schedules in memory, keyed by tenant and id.
#[derive(Debug, Default)]
pub struct MemSchedules(Mutex<BTreeMap<(String, String), crate::schedules::Schedule>>);

#[async_trait]
impl crate::schedules::Schedules for MemSchedules {
    async fn create(&self, schedule: &crate::schedules::Schedule) -> Result<(), PortError> {
        let key = (schedule.tenant.clone(), schedule.id.clone());
        let mut all = self.0.lock().unwrap();
        if all.contains_key(&key) {
            return Err(PortError::Rejected(format!(
                "schedule {} exists already",
                schedule.id
            )));
        }
        all.insert(key, schedule.clone());
        Ok(())
    }
    async fn list(&self, tenant: &str) -> Result<Vec<crate::schedules::Schedule>, PortError> {
        let all = self.0.lock().unwrap();
        Ok(all
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, s)| s.clone())
            .collect())
    }
    async fn get(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<crate::schedules::Schedule>, PortError> {
        let key = (tenant.to_string(), id.to_string());
        Ok(self.0.lock().unwrap().get(&key).cloned())
    }
    async fn delete(&self, tenant: &str, id: &str) -> Result<bool, PortError> {
        let key = (tenant.to_string(), id.to_string());
        Ok(self.0.lock().unwrap().remove(&key).is_some())
    }
}

/// A model that runs a function of the request: tests script agent behaviour with it.
pub struct FnModel<F>(pub F);

impl<F> std::fmt::Debug for FnModel<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnModel")
    }
}

#[async_trait]
impl<F> Model for FnModel<F>
where
    F: Fn(&ModelRequest) -> Result<ModelResponse, LlmError> + Send + Sync,
{
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, LlmError> {
        (self.0)(request)
    }
}

/// A whole kernel over in-memory ports, with a drain loop that does what a trigger
/// loop does (receive, wake, delete or release).
pub struct MemSystem {
    pub kernel: crate::Kernel,
    pub store: Arc<MemStore>,
    pub queues: Arc<MemQueues>,
    pub blobs: Arc<MemBlobs>,
    pub scheduler: Arc<MemScheduler>,
    pub clock: Arc<ManualClock>,
}

impl std::fmt::Debug for MemSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemSystem")
    }
}

impl MemSystem {
    /// `model`: `None` for the offline model.
    pub fn new(
        catalog: crate::Catalog,
        tools: crate::tools::ToolRegistry,
        model: Option<Arc<dyn Model>>,
    ) -> Self {
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let store = Arc::new(MemStore::default());
        let queues = Arc::new(MemQueues::new(clock.clone(), 5));
        let blobs = Arc::new(MemBlobs::default());
        let scheduler = Arc::new(MemScheduler::default());
        let model = model.unwrap_or_else(|| Arc::new(crate::offline::OfflineModel::new(&catalog)));
        let ports = crate::Ports {
            sessions: store.clone(),
            tasks: store.clone(),
            mailbox: queues.clone(),
            blobs: blobs.clone(),
            scheduler: scheduler.clone(),
            model,
            clock: clock.clone(),
        };
        let kernel = crate::Kernel::new(catalog, tools, ports, crate::KernelConfig::default())
            .expect("catalog and tools fit");
        Self {
            kernel,
            store,
            queues,
            blobs,
            scheduler,
            clock,
        }
    }

    /// Runs every queue dry; returns the number of wakes.
    pub async fn drain(&self) -> usize {
        let agents: Vec<String> = self
            .kernel
            .catalog()
            .agents()
            .map(|a| a.name.to_string())
            .collect();
        let mut wakes = 0;
        for _ in 0..10_000 {
            let mut any = false;
            for name in &agents {
                for msg in self.queues.receive(name, 10, 30_000).await.unwrap() {
                    any = true;
                    wakes += 1;
                    let env = Envelope::parse(&msg.body).unwrap();
                    match self.kernel.wake(env).await {
                        Ok(_) => self.queues.delete(name, &msg.receipt).await.unwrap(),
                        Err(_) => self.queues.release(name, &msg.receipt, 0).await.unwrap(),
                    }
                }
            }
            if !any {
                return wakes;
            }
        }
        panic!("queues never drained");
    }
}
