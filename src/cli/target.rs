//! One [`Target`] per command: the local store (through the kernel and the runtime,
//! as `aos run` uses them) or a remote AOS API (through [`ApiClient`]). Both answer
//! with the kernel's own types, so a command prints the same thing whichever it
//! talks to. Locally the caller is the store's owner, acting for `--tenant`; remotely
//! the tenant is the token's and the API decides what it may see.

use super::client::{AgentSummary, ApiClient, DeadLetterView};
use super::config::ApiArgs;
use super::progress::{Out, Progress};
use crate::{Common, Opened};
use anyhow::{Context, bail};
use aos::render;
use aos_kernel::approvals::{Approval, ApprovalStatus};
use aos_kernel::kernel::Submission;
use aos_kernel::{Event, EventKind, Schedule, ScheduleKind, Task, TaskId, TaskQuery, TaskStatus};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The local store, opened for one tenant.
pub struct Local {
    opened: Opened,
    tenant: String,
}

/// Where a command's reads and writes go.
pub enum Target {
    Local(Box<Local>),
    Remote(ApiClient),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// How a follow ended.
#[derive(Debug)]
pub enum Followed {
    /// The task is final; its whole timeline.
    Finished { task: Box<Task>, events: Vec<Event> },
    /// Ctrl-C: the task goes on without us.
    Interrupted,
}

impl Target {
    /// The API if one is configured (flags, environment, `aos login`), else the
    /// local store of `common`, acting for `tenant`.
    pub async fn open(api: &ApiArgs, common: &Common, tenant: &str) -> anyhow::Result<Self> {
        if let Some(endpoint) = api.endpoint()? {
            return Ok(Target::Remote(ApiClient::new(endpoint)?));
        }
        if !aos_entrypoints::http::auth::valid_tenant(tenant) {
            bail!("--tenant {tenant:?}: use 1-64 lowercase letters, digits, '-' or '_'");
        }
        Ok(Target::Local(Box::new(Local {
            opened: common.open().await?,
            tenant: tenant.to_string(),
        })))
    }

    /// What `aos` says it talks to.
    pub fn describe(&self) -> String {
        match self {
            Target::Local(l) => format!("the local store {}", l.opened.shown),
            Target::Remote(c) => format!("the AOS API at {}", c.url()),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Target::Local(_))
    }

    pub async fn agents(&self) -> anyhow::Result<Vec<AgentSummary>> {
        match self {
            Target::Remote(c) => Ok(c.agents().await?),
            Target::Local(l) => Ok(l
                .opened
                .runtime
                .kernel()
                .catalog()
                .agents()
                .map(|a| AgentSummary {
                    name: a.name.to_string(),
                    purpose: a.purpose.clone(),
                    tools: a.tools.clone(),
                    may_message: a.may_message.iter().map(ToString::to_string).collect(),
                })
                .collect()),
        }
    }

    /// A page of tasks, newest first, and the cursor of the next page.
    pub async fn tasks(
        &self,
        status: Option<TaskStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> anyhow::Result<(Vec<Task>, Option<String>)> {
        match self {
            Target::Remote(c) => {
                let page = c.tasks(status.map(|s| s.as_str()), limit, cursor).await?;
                Ok((page.tasks, page.next_cursor))
            }
            Target::Local(l) => {
                let before = cursor
                    .map(|c| {
                        c.parse::<TaskId>().map_err(|_| {
                            anyhow::anyhow!(
                                "--cursor {c:?} is not one `aos tasks` printed for this store"
                            )
                        })
                    })
                    .transpose()?;
                let mut tasks = l
                    .opened
                    .runtime
                    .kernel()
                    .ports()
                    .tasks
                    .list_tasks(&TaskQuery {
                        tenant: Some(l.tenant.clone()),
                        status,
                        before,
                        limit: limit + 1,
                    })
                    .await?;
                let next = if tasks.len() > limit {
                    tasks.truncate(limit);
                    tasks.last().map(|t| t.id.to_string())
                } else {
                    None
                };
                Ok((tasks, next))
            }
        }
    }

    pub async fn task(&self, id: TaskId) -> anyhow::Result<Task> {
        match self {
            Target::Remote(c) => Ok(c.task(id).await?),
            Target::Local(l) => l
                .opened
                .runtime
                .kernel()
                .ports()
                .tasks
                .get_task(id)
                .await?
                .with_context(|| format!("no task {id} in {}", l.opened.shown)),
        }
    }

    /// The task's timeline (audit records left out).
    pub async fn events(&self, id: TaskId) -> anyhow::Result<Vec<Event>> {
        match self {
            Target::Remote(c) => Ok(c.events(id).await?),
            Target::Local(l) => Ok(l.opened.runtime.kernel().ports().tasks.timeline(id).await?),
        }
    }

    /// Submits a task; `true` when this call created it, `false` when an earlier one
    /// with the same idempotency key did.
    pub async fn submit(
        &self,
        agent: &str,
        input: &str,
        key: Option<&str>,
    ) -> anyhow::Result<(Task, bool)> {
        match self {
            Target::Remote(c) => Ok(c.submit(agent, input, key).await?),
            Target::Local(l) => {
                let s = l
                    .opened
                    .runtime
                    .kernel()
                    .submit_for(Submission {
                        tenant: &l.tenant,
                        agent,
                        input,
                        idempotency_key: key,
                    })
                    .await?;
                Ok((s.task, s.created))
            }
        }
    }

    pub async fn cancel(&self, id: TaskId, reason: Option<&str>) -> anyhow::Result<Task> {
        match self {
            Target::Remote(c) => Ok(c.cancel(id, reason).await?),
            Target::Local(l) => {
                let task = self.task(id).await?;
                if task.status.is_final() {
                    bail!(
                        "task {id} is already {}; only an unfinished task can be cancelled",
                        task.status
                    );
                }
                let reason = reason.unwrap_or("cancelled with `aos cancel`");
                match l.opened.runtime.kernel().cancel(id, reason).await? {
                    Some(t) if t.status == TaskStatus::Cancelled => Ok(t),
                    Some(t) => bail!(
                        "task {id} is already {}; only an unfinished task can be cancelled",
                        t.status
                    ),
                    None => bail!("no task {id} in {}", l.opened.shown),
                }
            }
        }
    }

    /// Approvals waiting for a person's decision, oldest first.
    pub async fn approvals(&self) -> anyhow::Result<Vec<Approval>> {
        match self {
            Target::Remote(c) => Ok(c.approvals().await?),
            Target::Local(l) => Ok(l
                .opened
                .runtime
                .kernel()
                .pending_approvals(&l.tenant, 1000)
                .await?),
        }
    }

    /// Decides an approval once; a second decision, even the same, is refused.
    /// `by` names the decider locally; remotely the token's subject does.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        note: Option<&str>,
        by: &str,
    ) -> anyhow::Result<Approval> {
        match self {
            Target::Remote(c) => Ok(c.decide(id, approve, note).await?),
            Target::Local(l) => {
                let kernel = l.opened.runtime.kernel();
                let tenant = &l.tenant;
                match kernel.approval(tenant, id).await? {
                    None => {
                        bail!("no approval {id} for tenant {tenant} (`aos approvals` lists them)")
                    }
                    Some(a) if a.status != ApprovalStatus::Pending => bail!(
                        "approval {id} is already {:?}{}",
                        a.status,
                        a.decided_by.map(|b| format!(" by {b}")).unwrap_or_default()
                    ),
                    Some(_) => {}
                }
                Ok(kernel.decide(tenant, id, approve, by, note).await?)
            }
        }
    }

    pub async fn schedules(&self) -> anyhow::Result<Vec<Schedule>> {
        match self {
            Target::Remote(c) => Ok(c.schedules().await?),
            Target::Local(l) => {
                let mut all = l.opened.runtime.schedules().list(&l.tenant).await?;
                all.retain(|s| s.tenant == l.tenant);
                Ok(all)
            }
        }
    }

    pub async fn create_schedule(
        &self,
        agent: &str,
        kind: ScheduleKind,
        input: &str,
        when: &str,
    ) -> anyhow::Result<Schedule> {
        match self {
            Target::Remote(c) => Ok(c.create_schedule(agent, kind.as_str(), input, when).await?),
            Target::Local(l) => {
                let kernel = l.opened.runtime.kernel();
                let when = aos_kernel::When::parse(when).map_err(|e| anyhow::anyhow!("{e}"))?;
                if input.trim().is_empty() {
                    bail!("the input is empty; say what each firing should ask");
                }
                let Some(def) = kernel.catalog().get(agent) else {
                    bail!(
                        "unknown agent '{agent}'; known agents: {}",
                        kernel.catalog().names()
                    );
                };
                let schedule = Schedule::new(
                    l.tenant.clone(),
                    def.name.clone(),
                    kind,
                    input,
                    when,
                    "cli",
                    kernel.now_ms(),
                );
                l.opened.runtime.schedules().create(&schedule).await?;
                Ok(schedule)
            }
        }
    }

    pub async fn delete_schedule(&self, id: &str) -> anyhow::Result<()> {
        match self {
            Target::Remote(c) => Ok(c.delete_schedule(id).await?),
            Target::Local(l) => {
                if l.opened.runtime.schedules().delete(&l.tenant, id).await? {
                    Ok(())
                } else {
                    bail!("no schedule {id:?} (`aos schedule list` lists them)")
                }
            }
        }
    }

    fn known_agent(l: &Local, agent: &str) -> anyhow::Result<()> {
        let catalog = l.opened.runtime.kernel().catalog();
        if catalog.get(agent).is_none() {
            bail!("unknown agent '{agent}'; known agents: {}", catalog.names());
        }
        Ok(())
    }

    pub async fn dead_letters(&self, agent: &str) -> anyhow::Result<Vec<DeadLetterView>> {
        match self {
            Target::Remote(c) => Ok(c.dead_letters(agent).await?),
            Target::Local(l) => {
                Self::known_agent(l, agent)?;
                Ok(l.opened
                    .runtime
                    .inbox()
                    .dead_letters(agent, 1000)
                    .await?
                    .into_iter()
                    .map(|d| DeadLetterView {
                        id: d.id,
                        reason: d.reason,
                        at: d.at,
                        receive_count: d.receive_count,
                        body: d.body,
                    })
                    .collect())
            }
        }
    }

    /// Moves every dead letter of `agent` back to its queue; how many moved.
    pub async fn redrive(&self, agent: &str) -> anyhow::Result<usize> {
        match self {
            Target::Remote(c) => Ok(c.redrive(agent).await?),
            Target::Local(l) => {
                Self::known_agent(l, agent)?;
                Ok(l.opened.runtime.inbox().redrive(agent, None).await?)
            }
        }
    }

    /// Prints the task's timeline events on stdout as they happen, with a status line
    /// on stderr while it waits, until the task is final or Ctrl-C. Remotely it reads
    /// the API's event stream (reconnecting after the last event it saw); locally it
    /// runs the agents of the store in this process, since nothing else may, and
    /// reads the store.
    pub async fn follow(&self, id: TaskId, progress: &mut Progress) -> anyhow::Result<Followed> {
        match self {
            Target::Remote(c) => follow_remote(c, id, progress).await,
            Target::Local(l) => follow_local(l, id, progress).await,
        }
    }
}

/// What the task is doing, as far as its latest event tells.
fn phase(e: &Event) -> String {
    match e.kind {
        EventKind::Submitted => "queued".into(),
        EventKind::Waiting => format!("{} waiting for replies", e.agent),
        EventKind::ApprovalRequested => "waiting for a person's approval (`aos approvals`)".into(),
        EventKind::Answer => "answered".into(),
        EventKind::Failed | EventKind::DeadLettered => "failing".into(),
        EventKind::Cancelled => "cancelled".into(),
        _ => format!("{} working", e.agent),
    }
}

async fn follow_remote(
    client: &ApiClient,
    id: TaskId,
    progress: &mut Progress,
) -> anyhow::Result<Followed> {
    use super::client::StreamItem;
    use futures::StreamExt;

    let task = client.task(id).await?;
    let mut seen = HashSet::new();
    let mut last_id: Option<String> = None;
    let mut doing = task.status.to_string();
    // Consecutive failures to connect, and since when: a follow gives up after two
    // minutes without an answer.
    let mut failing: Option<(u32, Instant)> = None;
    // How long to wait before the next connection.
    let mut pause = Duration::ZERO;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut tick = tokio::time::interval(Progress::interval());
    'connect: loop {
        let until = tokio::time::Instant::now() + pause;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = tick.tick() => progress.tick(),
                _ = &mut ctrl_c => return Ok(Followed::Interrupted),
            }
        }
        progress.status("connecting to the event stream");
        let stream = tokio::select! {
            s = client.stream(id, last_id.as_deref()) => s,
            _ = &mut ctrl_c => return Ok(Followed::Interrupted),
        };
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) if e.is_transient() => {
                let (n, since) = failing.unwrap_or((0, Instant::now()));
                if since.elapsed() > Duration::from_secs(120) {
                    return Err(e.into());
                }
                failing = Some((n + 1, since));
                pause = Duration::from_millis(500 * 2u64.pow(n.min(4)));
                progress.status(format!("{e}; retrying in {} s", pause.as_secs_f32()));
                continue 'connect;
            }
            Err(e) => return Err(e.into()),
        };
        failing = None;
        progress.set(doing.clone(), format!("{} events", seen.len()));
        // A stream that closes with nothing new is not retried at once (a proxy
        // closing every stream would make that a busy loop).
        let mut fresh = false;
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(StreamItem::Event(e))) => {
                        last_id = Some(e.id.to_string());
                        if seen.insert(e.id) {
                            fresh = true;
                            doing = phase(&e);
                            progress.println(Out::Stdout, &render::progress_line(&task, &e));
                            progress.set(doing.clone(), format!("{} events", seen.len()));
                        }
                    }
                    Some(Ok(StreamItem::End)) => break 'connect,
                    Some(Err(e)) => {
                        progress.status(format!("{e}; reconnecting"));
                        pause = Duration::from_secs(1);
                        continue 'connect;
                    }
                    // Closed before the end (a gateway's time limit, a restart):
                    // resume after the last event seen.
                    None => {
                        pause = if fresh { Duration::ZERO } else { Duration::from_secs(1) };
                        continue 'connect;
                    }
                },
                _ = tick.tick() => progress.tick(),
                _ = &mut ctrl_c => return Ok(Followed::Interrupted),
            }
        }
    }
    progress.status("finished; reading the timeline");
    let task = client.task(id).await?;
    let events = client.events(id).await?;
    // Events the stream did not carry (none, normally) still print.
    print_new(&mut seen, &task, &events, progress);
    Ok(Followed::Finished {
        task: Box::new(task),
        events,
    })
}

async fn follow_local(
    local: &Local,
    id: TaskId,
    progress: &mut Progress,
) -> anyhow::Result<Followed> {
    let runtime = &local.opened.runtime;
    let store = runtime.kernel().ports().tasks.clone();
    let mut seen = HashSet::new();
    let mut task = store
        .get_task(id)
        .await?
        .with_context(|| format!("no task {id} in {}", local.opened.shown))?;
    print_new(&mut seen, &task, &store.timeline(id).await?, progress);
    if task.status.is_final() {
        let events = store.timeline(id).await?;
        return Ok(Followed::Finished {
            task: Box::new(task),
            events,
        });
    }
    // The embedded store has no server of its own: run its agents here until the
    // task ends (as `aos run` does), or the task never moves.
    progress.println(
        Out::Stderr,
        &format!(
            "  (running the agents of {} in this process until the task ends; if `aos dev` serves this store, follow through it instead: --api)",
            local.opened.shown
        ),
    );
    let running = runtime.start().await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut tick = tokio::time::interval(Progress::interval());
    let outcome = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => break None,
        }
        task = match store.get_task(id).await {
            Ok(Some(t)) => t,
            Ok(None) => break Some(Err(anyhow::anyhow!("task {id} vanished from the store"))),
            Err(e) => break Some(Err(e.into())),
        };
        let events = match store.timeline(id).await {
            Ok(ev) => ev,
            Err(e) => break Some(Err(e.into())),
        };
        print_new(&mut seen, &task, &events, progress);
        let doing = events
            .iter()
            .max_by_key(|e| e.at)
            .map(phase)
            .unwrap_or_else(|| task.status.to_string());
        progress.set(
            format!("task {id} {doing}"),
            format!("{} events", events.len()),
        );
        progress.tick();
        if task.status.is_final() {
            break Some(Ok(Followed::Finished {
                task: Box::new(task),
                events,
            }));
        }
    };
    progress.status("stopping the local agents");
    running.shutdown(Duration::from_secs(5)).await;
    match outcome {
        Some(result) => result,
        None => Ok(Followed::Interrupted),
    }
}

/// Prints the events not printed yet.
fn print_new(
    seen: &mut HashSet<aos_kernel::EventId>,
    task: &Task,
    events: &[Event],
    progress: &mut Progress,
) {
    for e in events {
        if seen.insert(e.id) {
            progress.println(Out::Stdout, &render::progress_line(task, e));
        }
    }
}
