//! `aos bench`: figures, not assertions. Two measurements on the embedded store with
//! the offline model and offline tools:
//!
//! 1. kernel wakes per second on one core: tasks are submitted first (untimed), then
//!    one thread drains every queue through the same SQS batch handler the trigger
//!    loop uses (receive, wake, delete), so each wake includes its queue work;
//! 2. end-to-end three-agent tasks per second through the running local runtime.
//!
//! It also prints peak resident memory.

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

/// Kernel wakes per second. Call from a current-thread runtime to measure one core.
pub async fn wakes(db: &Path, tasks: usize, progress: bool) -> anyhow::Result<WakeBench> {
    let rt = Runtime::open(config(db))?;
    for i in 0..tasks {
        rt.kernel().submit("primary", DEMO, None).await?;
        if progress && i % 500 == 0 {
            eprint!("\r  submitting {i}/{tasks}…");
        }
    }
    let agents: Vec<String> = rt
        .kernel()
        .catalog()
        .agents()
        .map(|a| a.name.to_string())
        .collect();
    let arns: Vec<String> = agents.iter().map(|a| Runtime::queue_arn(a)).collect();
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
    let done = rt
        .kernel()
        .ports()
        .tasks
        .list_tasks(Some(TaskStatus::Succeeded), usize::MAX)
        .await?
        .len();
    anyhow::ensure!(done == tasks, "only {done} of {tasks} tasks succeeded");
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
