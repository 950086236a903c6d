//! `aos bench`: figures, not assertions. Two measurements on the embedded store with
//! the offline model and offline tools:
//!
//! 1. kernel wakes per second on one core: tasks are submitted first (untimed), then
//!    one thread drains every queue through the same SQS batch handler the trigger
//!    loop uses (receive, wake, delete), so each wake includes its queue work;
//! 2. end-to-end three-agent tasks per second through the running local runtime.
//!
//! It also prints peak resident memory. `aos bench --backend aws` instead runs the
//! AWS adapters against moto server and prints AWS calls per wake by operation and the
//! cost per million wakes they imply.

use crate::runtime::{Runtime, RuntimeConfig};
use aos_kernel::TaskStatus;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

pub const DEMO: &str = "What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?";

#[derive(Clone, Debug)]
pub struct WakeBench {
    pub tasks: usize,
    pub wakes: u64,
    pub seconds: f64,
}

impl WakeBench {
    pub fn per_second(&self) -> f64 {
        self.wakes as f64 / self.seconds.max(1e-9)
    }
}

#[derive(Clone, Debug)]
pub struct TaskBench {
    pub tasks: usize,
    pub succeeded: usize,
    pub seconds: f64,
    pub p50_ms: u64,
    pub p95_ms: u64,
}

impl TaskBench {
    pub fn per_second(&self) -> f64 {
        self.succeeded as f64 / self.seconds.max(1e-9)
    }
}

fn config(db: &Path) -> RuntimeConfig {
    let mut c = RuntimeConfig {
        db: db.to_path_buf(),
        ..RuntimeConfig::default()
    };
    c.tools.offline = true;
    c
}

/// Submits `tasks` demo tasks, untimed.
async fn submit_all(
    rt: &Runtime,
    tasks: usize,
    every: usize,
    progress: bool,
) -> anyhow::Result<()> {
    for i in 0..tasks {
        rt.kernel().submit("primary", DEMO, None).await?;
        if progress && i % every == 0 {
            eprint!("\r  submitting {i}/{tasks}…");
        }
    }
    Ok(())
}

/// Polls every agent's queue through the trigger path until all are empty; returns
/// the seconds it took (queue lookups excluded).
async fn drain(rt: &Runtime, progress: bool) -> anyhow::Result<f64> {
    let agents: Vec<String> = rt
        .kernel()
        .catalog()
        .agents()
        .map(|a| a.name.to_string())
        .collect();
    let mut arns = Vec::with_capacity(agents.len());
    for a in &agents {
        arns.push(rt.queue_arn_of(a).await?);
    }
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let mut received = 0;
        for (agent, arn) in agents.iter().zip(&arns) {
            received += rt.poll_batch(agent, arn).await?;
        }
        if received == 0 {
            break;
        }
        if progress && last_report.elapsed().as_millis() > 250 {
            last_report = Instant::now();
            eprint!("\r  draining: {} wakes…            ", rt.metrics().wakes());
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if progress {
        eprint!("\r{:60}\r", "");
    }
    Ok(seconds)
}

async fn ensure_all_succeeded(rt: &Runtime, tasks: usize) -> anyhow::Result<()> {
    let done = rt
        .kernel()
        .ports()
        .tasks
        .list_tasks(&aos_kernel::TaskQuery::status(TaskStatus::Succeeded))
        .await?
        .len();
    anyhow::ensure!(done == tasks, "only {done} of {tasks} tasks succeeded");
    Ok(())
}

/// Kernel wakes per second. Call from a current-thread runtime to measure one core.
pub async fn wakes(db: &Path, tasks: usize, progress: bool) -> anyhow::Result<WakeBench> {
    let rt = Runtime::open(config(db))?;
    submit_all(&rt, tasks, 500, progress).await?;
    let seconds = drain(&rt, progress).await?;
    ensure_all_succeeded(&rt, tasks).await?;
    Ok(WakeBench {
        tasks,
        wakes: rt.metrics().applied.load(Ordering::Relaxed),
        seconds,
    })
}

/// End-to-end tasks per second through the running runtime.
pub async fn tasks(
    db: &Path,
    tasks: usize,
    concurrency: usize,
    progress: bool,
) -> anyhow::Result<TaskBench> {
    let mut cfg = config(db);
    cfg.concurrency = concurrency;
    let rt = Runtime::open(cfg)?;
    let running = rt.start().await?;
    let start = Instant::now();
    let mut ids = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        ids.push(rt.kernel().submit("primary", DEMO, None).await?.id);
    }
    let store = rt.kernel().ports().tasks.clone();
    let final_tasks = loop {
        let mut done = Vec::new();
        for id in &ids {
            if let Some(t) = store.get_task(*id).await?
                && t.status.is_final()
            {
                done.push(t);
            }
        }
        if progress {
            eprint!("\r  {}/{} tasks finished…", done.len(), tasks);
        }
        if done.len() == tasks {
            break done;
        }
        anyhow::ensure!(
            start.elapsed().as_secs() < 600,
            "tasks did not finish within 10 minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let seconds = start.elapsed().as_secs_f64();
    if progress {
        eprint!("\r{:60}\r", "");
    }
    running.shutdown(std::time::Duration::from_secs(10)).await;
    let mut lat: Vec<u64> = final_tasks
        .iter()
        .map(|t| t.updated_at - t.created_at)
        .collect();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    Ok(TaskBench {
        tasks,
        succeeded: final_tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Succeeded)
            .count(),
        seconds,
        p50_ms: pct(0.5),
        p95_ms: pct(0.95),
    })
}

/// Peak and current resident memory of this process, in KiB (Linux).
pub fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Public on-demand prices in us-east-1 (USD), used to turn calls into cost.
pub mod prices {
    /// DynamoDB on-demand, per write request unit (1 KB; 2 units per KB in a
    /// transaction).
    pub const DYNAMODB_WRU: f64 = 0.625 / 1e6;
    /// DynamoDB on-demand, per read request unit (4 KB strongly consistent).
    pub const DYNAMODB_RRU: f64 = 0.125 / 1e6;
    /// SQS FIFO, per request (each 64 KB of a request counts as one).
    pub const SQS_FIFO_REQUEST: f64 = 0.50 / 1e6;
    /// Lambda, per invocation.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// Lambda arm64, per GB-second.
    pub const LAMBDA_GB_SECOND: f64 = 0.000_013_333_4;
}

/// What the AWS backend benchmark measured.
#[derive(Clone, Debug)]
pub struct AwsBench {
    pub tasks: usize,
    pub wakes: u64,
    pub seconds: f64,
    /// Calls the wakes made, by operation (the wake's own path).
    pub wake_calls: std::collections::BTreeMap<String, u64>,
    /// Calls of the trigger loop (Lambda's event source mapping on AWS).
    pub trigger_calls: std::collections::BTreeMap<String, u64>,
    /// HTTP attempts minus calls (the SDK's retries), by operation.
    pub retries: std::collections::BTreeMap<String, u64>,
    /// Items in the table by kind: (count, average bytes).
    pub items: std::collections::BTreeMap<&'static str, (u64, f64)>,
    /// Write and read request units per wake, estimated from the stored item sizes.
    pub wru_per_wake: f64,
    pub rru_per_wake: f64,
    /// Records per Lambda invocation (the event source mapping's batches).
    pub records_per_batch: f64,
}

/// Operations only the trigger loop makes (Lambda's event source mapping on AWS).
pub const TRIGGER_OPS: [&str; 5] = [
    "SQS.ReceiveMessage",
    "SQS.DeleteMessage",
    "SQS.DeleteMessageBatch",
    "SQS.ChangeMessageVisibility",
    "SQS.ChangeMessageVisibilityBatch",
];

impl AwsBench {
    pub fn per_wake(&self, calls: u64) -> f64 {
        calls as f64 / self.wakes.max(1) as f64
    }

    /// USD per million wakes, excluding the model: (DynamoDB, SQS, Lambda requests).
    pub fn cost_per_million(&self) -> (f64, f64, f64) {
        let m = 1e6;
        let dynamo = m
            * (self.wru_per_wake * prices::DYNAMODB_WRU + self.rru_per_wake * prices::DYNAMODB_RRU);
        let sqs_requests: u64 = self
            .wake_calls
            .iter()
            .chain(self.trigger_calls.iter())
            .filter(|(op, _)| op.starts_with("SQS."))
            .map(|(_, n)| *n)
            .sum();
        let sqs = m * self.per_wake(sqs_requests) * prices::SQS_FIFO_REQUEST;
        let lambda = m * prices::LAMBDA_REQUEST / self.records_per_batch.max(1.0);
        (dynamo, sqs, lambda)
    }
}

/// DynamoDB's size of an attribute value, in bytes (names are added by the caller).
fn value_size(v: &aos_aws::aws_sdk_dynamodb::types::AttributeValue) -> usize {
    use aos_aws::aws_sdk_dynamodb::types::AttributeValue as A;
    match v {
        A::S(s) => s.len(),
        A::N(n) => n.len() / 2 + 2,
        A::B(b) => b.as_ref().len(),
        A::Bool(_) | A::Null(_) => 1,
        A::L(l) => 3 + l.iter().map(|x| 1 + value_size(x)).sum::<usize>(),
        A::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| 1 + k.len() + value_size(x))
                .sum::<usize>()
        }
        A::Ss(s) => s.iter().map(String::len).sum(),
        A::Ns(n) => n.iter().map(|x| x.len() / 2 + 2).sum(),
        _ => 0,
    }
}

/// The AWS backend against moto: drains `tasks` demo tasks through the same trigger
/// path as `aos dev --backend aws` and counts every AWS call by operation.
pub async fn aws(
    aws: aos_aws::AwsBackend,
    tasks: usize,
    progress: bool,
) -> anyhow::Result<AwsBench> {
    let mut cfg = config(Path::new("unused.db"));
    cfg.batch_size = 10;
    let counter = aws.counter().clone();
    let table = aws.settings.table.clone();
    let dynamodb = aws.clients.dynamodb.clone();
    let rt = Runtime::open_aws(cfg, aws)?;
    submit_all(&rt, tasks, 20, progress).await?;
    let before = counter.snapshot();
    let seconds = drain(&rt, progress).await?;
    let used = counter.snapshot().since(&before);
    ensure_all_succeeded(&rt, tasks).await?;
    let batches = rt.metrics().batches.load(Ordering::Relaxed);
    let wakes = rt.metrics().applied.load(Ordering::Relaxed);

    // Request units from the stored items' sizes: each wake reads its session, marker,
    // task and memory item (1 unit per 4 KB, 1 at least) and transactionally writes its
    // session, marker, task and events items (2 units per KB).
    let mut sizes: std::collections::BTreeMap<&'static str, (u64, u64)> = Default::default();
    let mut start_key = None;
    loop {
        let out = dynamodb
            .scan()
            .table_name(&table)
            .set_exclusive_start_key(start_key.take())
            .send()
            .await?;
        for item in out.items() {
            let size: usize = item.iter().map(|(k, v)| k.len() + value_size(v)).sum();
            let sk = item
                .get("sk")
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                .unwrap_or("");
            let kind = match sk {
                "STATE" => "session",
                "TASK" => "task",
                "MEMORY" => "memory",
                s if s.starts_with("A#") => "marker",
                s if s.starts_with("E#") => "events",
                _ => "other",
            };
            let e = sizes.entry(kind).or_default();
            e.0 += 1;
            e.1 += size as u64;
        }
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start_key = Some(k),
            _ => break,
        }
    }
    let avg = |kind: &str| {
        sizes
            .get(kind)
            .map(|(n, bytes)| *bytes as f64 / (*n).max(1) as f64)
            .unwrap_or(0.0)
    };
    let units = |bytes: f64, per: f64| (bytes / per).ceil().max(1.0);
    let event_items_per_wake =
        sizes.get("events").map(|(n, _)| *n as f64).unwrap_or(0.0) / wakes.max(1) as f64;
    let wru_per_wake = 2.0
        * (units(avg("session"), 1024.0)
            + units(avg("marker"), 1024.0)
            + units(avg("task"), 1024.0)
            + event_items_per_wake * units(avg("events"), 1024.0));
    let rru_per_wake = units(avg("session"), 4096.0)
        + units(avg("marker"), 4096.0)
        + units(avg("task"), 4096.0)
        + units(avg("memory"), 4096.0);

    let (trigger_calls, wake_calls) = used
        .calls
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .partition(|(k, _)| TRIGGER_OPS.contains(&k.as_str()));
    Ok(AwsBench {
        tasks,
        wakes,
        seconds,
        wake_calls,
        trigger_calls,
        retries: used
            .attempts
            .iter()
            .filter_map(|(op, a)| {
                let r = a.saturating_sub(used.calls_of(op));
                (r > 0).then(|| (op.clone(), r))
            })
            .collect(),
        items: sizes
            .iter()
            .map(|(k, (n, bytes))| (*k, (*n, *bytes as f64 / (*n).max(1) as f64)))
            .collect(),
        wru_per_wake,
        rru_per_wake,
        records_per_batch: wakes as f64 / batches.max(1) as f64,
    })
}
