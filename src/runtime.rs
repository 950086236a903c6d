//! The local runtime: one process hosts every agent, over one SQLite file (the
//! embedded backend) or over the AWS adapters (DynamoDB, SQS, S3, EventBridge
//! Scheduler, usually pointed at an emulator), and does what Lambda's SQS event source
//! mapping does on AWS. Per agent it runs a few trigger
//! workers that receive batches (FIFO groups locked while in flight), hand them to the
//! same SQS batch handler Lambda would call, delete what succeeded and release what
//! failed, while the queue itself redrives a message to the dead-letter queue after
//! its maximum receive count. A scheduler pump moves due wake-ups into queues, and
//! on the embedded store fires due task schedules (cron, rate, one-time).
//!
//! The rule kept here: stopping, cleanly or by SIGKILL, loses nothing. A clean stop
//! finishes the batches in hand; after a kill, the next start makes every in-flight
//! message visible again (as its visibility timeout would) and re-sends the first
//! envelope of every task still queued, and the kernel's dedupe absorbs the repeats.

use aos_agents::{ToolsConfig, reference_agents, reference_tools};
use aos_aws::AwsBackend;
use aos_entrypoints::sqs;
use aos_kernel::journal::{Diverged, Overlay, replay_tools};
use aos_kernel::llm::{LlmError, Model, ModelRequest, ModelResponse};
use aos_kernel::offline::OfflineModel;
use aos_kernel::ports::{BlobStore, Clock, Inbox, Mailbox, PortError, SystemClock};
use aos_kernel::route::{BreakerPolicy, Router};
use aos_kernel::schedules::Schedules;
use aos_kernel::{Catalog, Envelope, Kernel, KernelConfig, Ports, SubmitError};
use aos_local::{LocalConfig, LocalStore};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// How the local runtime runs. Defaults suit a laptop.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The durable store; created if missing.
    pub db: PathBuf,
    /// Trigger workers per agent (Lambda's maximum concurrency per function).
    pub concurrency: usize,
    /// Records per batch (the event source mapping's batch size).
    pub batch_size: usize,
    /// How long a received message stays invisible.
    pub visibility_ms: u64,
    /// Receives before a message is moved to the dead-letter queue.
    pub max_receives: u32,
    /// Longest idle wait between polls; a send to the agent wakes it sooner.
    pub poll_ms: u64,
    /// Simulated model latency for the offline model (demos and load tests).
    pub model_latency_ms: u64,
    /// Tool settings (network endpoints, offline mode).
    pub tools: ToolsConfig,
    /// On the AWS backend: fire due EventBridge schedules from this process, because
    /// the emulator stores schedules but never fires them. Off against real AWS, where
    /// the service delivers them.
    pub deliver_schedules: bool,
    /// Model routes, prices, memory and deadline settings of the kernel.
    pub kernel: KernelConfig,
    /// Real model providers by route prefix (`openai`, `anthropic`, `bedrock`); the
    /// offline model is always there as `offline`.
    pub providers: Providers,
    /// Replay mode: run against a scratch store whose journal reads fall through to
    /// this recorded one, with no model and no tool reachable.
    pub replay_from: Option<RecordedBlobs>,
    /// Tools beside the reference ones: those listed from MCP servers at start-up.
    pub extra_tools: ExtraTools,
}

/// Tools added to the registry at start-up.
#[derive(Clone, Default)]
pub struct ExtraTools(pub Vec<Arc<dyn aos_kernel::tools::Tool>>);

impl std::fmt::Debug for ExtraTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|t| t.spec().name))
            .finish()
    }
}

/// The blob store holding a recorded run's journal.
#[derive(Clone)]
pub struct RecordedBlobs(pub Arc<dyn BlobStore>);

impl std::fmt::Debug for RecordedBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordedBlobs")
    }
}

/// Model providers by route prefix.
#[derive(Clone, Default)]
pub struct Providers(pub Vec<(String, Arc<dyn Model>)>);

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(p, _)| p))
            .finish()
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            db: PathBuf::from(".aos/aos.db"),
            concurrency: 4,
            batch_size: 10,
            visibility_ms: 30_000,
            max_receives: 5,
            poll_ms: 250,
            model_latency_ms: 0,
            tools: ToolsConfig::default(),
            deliver_schedules: true,
            kernel: KernelConfig::default(),
            providers: Providers::default(),
            replay_from: None,
            extra_tools: ExtraTools::default(),
        }
    }
}

/// Counters the trigger loops keep, for progress and benchmarks.
#[derive(Debug, Default)]
pub struct Metrics {
    pub batches: AtomicU64,
    pub applied: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub failed: AtomicU64,
}

impl Metrics {
    pub fn wakes(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
            + self.duplicates.load(Ordering::Relaxed)
            + self.dead_lettered.load(Ordering::Relaxed)
    }
}

/// Wakes an agent's idle workers as soon as something is sent to it.
#[derive(Debug, Default)]
struct Doorbells(std::sync::Mutex<HashMap<String, Arc<Notify>>>);

impl Doorbells {
    fn get(&self, agent: &str) -> Arc<Notify> {
        let mut map = match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(agent.to_string()).or_default().clone()
    }
}

/// A mailbox that rings the receiver's doorbell after each send.
struct RingingMailbox {
    inner: Arc<dyn Mailbox>,
    bells: Arc<Doorbells>,
}

#[async_trait]
impl Mailbox for RingingMailbox {
    async fn send(&self, envelopes: &[Envelope]) -> Result<(), PortError> {
        self.inner.send(envelopes).await?;
        let agents: HashSet<&str> = envelopes.iter().map(|e| e.to.as_str()).collect();
        for a in agents {
            self.bells.get(a).notify_waiters();
        }
        Ok(())
    }
    async fn dead_letter(&self, agent: &str, body: &str, reason: &str) -> Result<(), PortError> {
        self.inner.dead_letter(agent, body, reason).await
    }
}

/// Where the runtime keeps its state and queues.
#[derive(Clone, Debug)]
pub enum Backend {
    /// One SQLite file.
    Local(LocalStore),
    /// DynamoDB, SQS, S3 and EventBridge Scheduler.
    Aws(Box<AwsBackend>),
}

/// A model that takes a fixed time to answer, like a real one.
struct Delayed {
    inner: Arc<dyn Model>,
    latency: Duration,
}

#[async_trait]
impl Model for Delayed {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, LlmError> {
        tokio::time::sleep(self.latency).await;
        self.inner.complete(request).await
    }
}

/// (sessions, tasks, mailbox, inbox, blobs, scheduler)
type PortSet = (
    Arc<dyn aos_kernel::ports::SessionStore>,
    Arc<dyn aos_kernel::ports::TaskStore>,
    Arc<dyn Mailbox>,
    Arc<dyn Inbox>,
    Arc<dyn aos_kernel::ports::BlobStore>,
    Arc<dyn aos_kernel::ports::Scheduler>,
);

/// The local runtime, opened but not yet started.
#[derive(Clone)]
pub struct Runtime {
    kernel: Kernel,
    backend: Backend,
    inbox: Arc<dyn Inbox>,
    /// Task schedules: in the store file, or in EventBridge Scheduler.
    schedules: Arc<dyn Schedules>,
    bells: Arc<Doorbells>,
    config: RuntimeConfig,
    metrics: Arc<Metrics>,
    replay: Option<Arc<Overlay>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("db", &self.config.db)
            .finish()
    }
}

impl Runtime {
    /// Opens the store and builds the kernel with the reference agents.
    pub fn open(config: RuntimeConfig) -> anyhow::Result<Self> {
        let catalog = Catalog::new(reference_agents()?)?;
        Self::open_with(config, catalog)
    }

    /// Opens the store and builds the kernel for `catalog` with the reference tools
    /// and the offline model.
    pub fn open_with(config: RuntimeConfig, catalog: Catalog) -> anyhow::Result<Self> {
        if let Some(dir) = config.db.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = LocalStore::open(
            &config.db,
            LocalConfig {
                max_receives: config.max_receives,
                ..LocalConfig::default()
            },
            clock.clone(),
        )?;
        let s = Arc::new(store.clone());
        Self::assemble(
            config,
            catalog,
            Backend::Local(store),
            (s.clone(), s.clone(), s.clone(), s.clone(), s.clone(), s),
            clock,
        )
    }

    /// Builds the kernel with the reference agents on the AWS adapters.
    pub fn open_aws(config: RuntimeConfig, aws: AwsBackend) -> anyhow::Result<Self> {
        let catalog = Catalog::new(reference_agents()?)?;
        Self::open_aws_with(config, catalog, aws)
    }

    /// Builds the kernel for `catalog` on the AWS adapters.
    pub fn open_aws_with(
        config: RuntimeConfig,
        catalog: Catalog,
        aws: AwsBackend,
    ) -> anyhow::Result<Self> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = Arc::new(aws.store.clone());
        let queues = Arc::new(aws.queues.clone());
        let parts: PortSet = (
            store.clone(),
            store,
            queues.clone(),
            queues,
            Arc::new(aws.blobs.clone()),
            Arc::new(aws.scheduler.clone()),
        );
        Self::assemble(config, catalog, Backend::Aws(Box::new(aws)), parts, clock)
    }

    fn assemble(
        config: RuntimeConfig,
        catalog: Catalog,
        backend: Backend,
        (sessions, tasks, mailbox, inbox, blobs, scheduler): PortSet,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let bells = Arc::new(Doorbells::default());
        let mut offline: Arc<dyn Model> = Arc::new(OfflineModel::new(&catalog));
        if config.model_latency_ms > 0 {
            offline = Arc::new(Delayed {
                inner: offline,
                latency: Duration::from_millis(config.model_latency_ms),
            });
        }
        let mut router =
            Router::new(clock.clone(), BreakerPolicy::default()).with("offline", offline.clone());
        for (prefix, model) in &config.providers.0 {
            router = router.with(prefix.clone(), model.clone());
        }
        let mut model: Arc<dyn Model> = Arc::new(router);
        let mut tools = reference_tools(&config.tools);
        for tool in &config.extra_tools.0 {
            tools.insert(tool.clone());
        }
        let mut blobs = blobs;
        let mut replay = None;
        let mut kernel_config = config.kernel.clone();
        if let Some(recorded) = &config.replay_from {
            let overlay = Arc::new(Overlay::new(blobs, recorded.0.clone()));
            // The offline model is deterministic and never journaled: it runs again.
            // Every other step must come from the recording.
            model = Arc::new(
                Router::new(clock.clone(), BreakerPolicy::default())
                    .with("offline", offline)
                    .with_default(Arc::new(Diverged(overlay.clone()))),
            );
            kernel_config.replay = true;
            tools = replay_tools(&tools, &overlay);
            blobs = overlay.clone();
            replay = Some(overlay);
        }
        let ports = Ports {
            sessions,
            tasks,
            mailbox: Arc::new(RingingMailbox {
                inner: mailbox,
                bells: bells.clone(),
            }),
            blobs,
            scheduler,
            model,
            clock,
        };
        let kernel = Kernel::new(catalog, tools, ports, kernel_config)?;
        let schedules: Arc<dyn Schedules> = match &backend {
            Backend::Local(store) => Arc::new(store.clone()),
            Backend::Aws(aws) => Arc::new(aws.schedules.clone()),
        };
        Ok(Self {
            kernel,
            backend,
            inbox,
            schedules,
            bells,
            config,
            metrics: Arc::new(Metrics::default()),
            replay,
        })
    }

    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }
    pub fn backend(&self) -> &Backend {
        &self.backend
    }
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }
    /// In replay mode: the overlay that counts what the recording served.
    pub fn replay(&self) -> Option<&Arc<Overlay>> {
        self.replay.as_ref()
    }
    pub fn inbox(&self) -> Arc<dyn Inbox> {
        self.inbox.clone()
    }
    /// Task schedules (for the API): fired by this runtime on the embedded store; on
    /// the AWS backend they are EventBridge schedules, which only the service fires.
    pub fn schedules(&self) -> Arc<dyn Schedules> {
        self.schedules.clone()
    }

    /// Submits the task of every task schedule due at `now_ms` and records each slot
    /// as fired; returns how many slots fired. A slot's task id comes from the schedule
    /// and the slot, so a slot submitted again after a crash (before it was recorded)
    /// is the same task, not a second one. A firing that can never succeed (its agent
    /// is gone) is logged and skipped; one that failed for a passing reason stays owed
    /// and is tried again on the next call. Only the embedded store fires schedules.
    pub async fn fire_schedules(&self, now_ms: u64) -> Result<usize, PortError> {
        let Backend::Local(store) = &self.backend else {
            return Ok(0);
        };
        let mut fired = 0;
        for firing in store.due_firings(now_ms, 100).await? {
            let s = &firing.schedule;
            match aos_entrypoints::schedule::submit_firing(&self.kernel, s, firing.at).await {
                Ok(task) => {
                    tracing::info!(schedule = %s.id, tenant = %s.tenant, task = %task.id, agent = %s.agent.as_str(), "schedule fired");
                    self.bells.get(s.agent.as_str()).notify_waiters();
                }
                Err(
                    e @ (SubmitError::Port(PortError::Unavailable(_) | PortError::Conflict)
                    | SubmitError::NotSent { .. }),
                ) => {
                    tracing::warn!(schedule = %s.id, error = %e, "schedule firing failed; will retry");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(schedule = %s.id, tenant = %s.tenant, error = %e, "schedule firing cannot be submitted; skipping the slot");
                }
            }
            store.fired(&firing, now_ms).await?;
            fired += 1;
        }
        Ok(fired)
    }

    /// Recovers from an earlier stop and starts the trigger loops and the scheduler.
    pub async fn start(&self) -> anyhow::Result<RunningRuntime> {
        // On AWS, messages in flight come back when their visibility timeout expires.
        let released = match &self.backend {
            Backend::Local(store) => store.release_all_in_flight()?,
            Backend::Aws(_) => 0,
        };
        let resent = self.kernel.recover().await?;
        if released + resent as u64 > 0 {
            tracing::info!(released, resent, "recovered work from an earlier run");
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut workers = JoinSet::new();
        for agent in self.kernel.catalog().agents() {
            for _ in 0..self.config.concurrency.max(1) {
                let rt = self.clone();
                let name = agent.name.to_string();
                let stop = stop_rx.clone();
                workers.spawn(async move { rt.trigger_loop(name, stop).await });
            }
        }
        if matches!(self.backend, Backend::Local(_)) || self.config.deliver_schedules {
            let rt = self.clone();
            let stop = stop_rx.clone();
            workers.spawn(async move { rt.scheduler_pump(stop).await });
        }
        Ok(RunningRuntime {
            stop: stop_tx,
            workers,
            recovered: (released, resent),
        })
    }

    async fn trigger_loop(self, agent: String, mut stop: watch::Receiver<bool>) {
        let bell = self.bells.get(&agent);
        let arn = loop {
            match self.queue_arn_of(&agent).await {
                Ok(arn) => break arn,
                Err(e) => {
                    tracing::warn!(%agent, error = %e, "cannot find the agent's queue; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => {}
                    }
                    if *stop.borrow() {
                        return;
                    }
                }
            }
        };
        let idle = Duration::from_millis(self.config.poll_ms);
        while !*stop.borrow() {
            // Register for the doorbell before looking, so a send between the empty
            // receive and the wait is not missed.
            let rung = bell.notified();
            tokio::pin!(rung);
            rung.as_mut().enable();
            match self.poll_batch(&agent, &arn).await {
                Ok(0) => {
                    tokio::select! {
                        _ = rung => {}
                        _ = tokio::time::sleep(idle) => {}
                        _ = stop.changed() => {}
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%agent, error = %e, "receive failed; backing off");
                    tokio::time::sleep(idle).await;
                }
            }
        }
    }

    /// Receives one batch for `agent`, runs it through the SQS batch handler and
    /// settles every message: deleted when it succeeded, released for a retry when it
    /// failed. Returns how many messages were received.
    pub async fn poll_batch(&self, agent: &str, arn: &str) -> Result<usize, PortError> {
        let batch = self
            .inbox
            .receive(agent, self.config.batch_size, self.config.visibility_ms)
            .await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let records = batch
            .iter()
            .map(|m| {
                sqs::record(
                    &m.receipt,
                    &m.body,
                    &m.group,
                    m.receive_count,
                    m.sent_at,
                    arn,
                )
            })
            .collect();
        let (response, report) = sqs::handle_batch(
            &self.kernel,
            agent,
            sqs::event(records),
            self.config.max_receives,
        )
        .await;
        let m = &self.metrics;
        m.batches.fetch_add(1, Ordering::Relaxed);
        m.applied
            .fetch_add(report.applied as u64, Ordering::Relaxed);
        m.duplicates
            .fetch_add(report.duplicates as u64, Ordering::Relaxed);
        m.dead_lettered
            .fetch_add(report.dead_lettered as u64, Ordering::Relaxed);
        m.failed.fetch_add(report.failed as u64, Ordering::Relaxed);
        let failed: HashSet<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let mut done = Vec::with_capacity(batch.len());
        for msg in &batch {
            if failed.contains(msg.receipt.as_str()) {
                // Lambda would wait out the visibility timeout; retry sooner, with
                // backoff, so local runs recover quickly, or when the provider said.
                let backoff = (250u64 << msg.receive_count.min(7)).min(self.config.visibility_ms);
                let delay = report.delay_for(&msg.receipt).unwrap_or(backoff);
                if let Err(e) = self.inbox.release(agent, &msg.receipt, delay).await {
                    tracing::warn!(%agent, error = %e, "could not release a message; it comes back after its visibility timeout");
                }
            } else {
                done.push(msg.receipt.clone());
            }
        }
        if let Err(e) = self.inbox.delete_batch(agent, &done).await {
            tracing::warn!(%agent, error = %e, "could not delete processed messages; they come back and are deduplicated");
        }
        Ok(batch.len())
    }

    /// The queue ARN the embedded runtime puts in the SQS records it builds.
    pub fn queue_arn(agent: &str) -> String {
        format!("arn:aws:sqs:local:000000000000:aos-{agent}.fifo")
    }

    /// The ARN of `agent`'s queue on this runtime's backend.
    pub async fn queue_arn_of(&self, agent: &str) -> Result<String, PortError> {
        match &self.backend {
            Backend::Local(_) => Ok(Self::queue_arn(agent)),
            Backend::Aws(aws) => Ok(aws.queues.queue(agent).await?.arn),
        }
    }

    async fn scheduler_pump(self, mut stop: watch::Receiver<bool>) {
        // ListSchedules on every tick costs a call; the embedded store's query does not.
        let tick = match self.backend {
            Backend::Local(_) => Duration::from_millis(200),
            Backend::Aws(_) => Duration::from_secs(1),
        };
        while !*stop.borrow() {
            let now = self.kernel.now_ms();
            let due = match &self.backend {
                Backend::Local(store) => store.deliver_due(now).await,
                Backend::Aws(aws) => aws.scheduler.deliver_due(now).await,
            };
            match due {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(n, "delivered scheduled wake-ups");
                    for agent in self.kernel.catalog().agents() {
                        self.bells.get(agent.name.as_str()).notify_waiters();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduler pump failed; will retry"),
            }
            if let Err(e) = self.fire_schedules(now).await {
                tracing::warn!(error = %e, "firing task schedules failed; will retry");
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// A started runtime; dropping it without [`RunningRuntime::shutdown`] aborts workers
/// mid-batch, which is safe (like a crash) but slower to recover from.
#[derive(Debug)]
pub struct RunningRuntime {
    stop: watch::Sender<bool>,
    workers: JoinSet<()>,
    /// (in-flight messages released, queued tasks re-sent) at start.
    pub recovered: (u64, usize),
}

impl RunningRuntime {
    /// Stops taking new batches and waits for the ones in hand to finish.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let drain = async { while self.workers.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(
                "workers did not stop within {grace:?}; aborting them (their messages come back)"
            );
            self.workers.abort_all();
        }
    }
}
