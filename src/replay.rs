//! Whole-run replay: `aos replay --task <id>` runs a finished task again from its
//! journal (recorded model responses and tool results) in a scratch store, with no
//! model and no tool reachable, and diffs the new timeline against the original.
//!
//! The rule kept here: a replay makes zero model and network calls. Every step must
//! come from the recording; a step that does not (because a prompt, a tool list or the
//! code changed) fails the replayed task at exactly that step, and the diff shows it.

use crate::runtime::{RecordedBlobs, Runtime, RuntimeConfig};
use anyhow::{Context, bail};
use aos_kernel::model::{Event, Task};
use aos_kernel::ports::{BlobStore, TaskStore};
use aos_kernel::{Catalog, TaskId};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What a replay found.
#[derive(Debug)]
pub struct ReplayReport {
    pub original: Task,
    pub replayed: Task,
    /// One line per timeline event, in event-id order (ids are derived, so the order
    /// is the same in both runs whatever the timing).
    pub original_lines: Vec<String>,
    pub replayed_lines: Vec<String>,
    pub diff: Vec<DiffLine>,
    /// Model steps and tool results the recording served.
    pub replayed_steps: u64,
    pub replayed_tools: u64,
    /// Steps and tool calls that were not in the recording (0 when nothing diverged);
    /// none of them reached a model or a tool.
    pub unrecorded_steps: u64,
    pub unrecorded_tools: u64,
}

impl ReplayReport {
    pub fn same(&self) -> bool {
        self.diff.iter().all(|d| matches!(d, DiffLine::Same(_)))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiffLine {
    Same(String),
    /// Only in the original run.
    Removed(String),
    /// Only in the replay.
    Added(String),
}

/// A timeline event as the diff compares it: who, what, and the detail.
pub fn line(e: &Event) -> String {
    format!("{:<9} {:<12} {}", e.agent, e.kind.as_str(), e.detail)
}

fn lines(mut events: Vec<Event>) -> Vec<String> {
    events.sort_by_key(|e| e.id.to_string());
    events.iter().map(line).collect()
}

/// Replays `task` of `tasks`/`recorded` with `catalog` (today's agent definitions) in
/// a scratch store under `scratch_dir`.
pub async fn replay_task(
    id: TaskId,
    tasks: Arc<dyn TaskStore>,
    recorded: Arc<dyn BlobStore>,
    catalog: Catalog,
    mut config: RuntimeConfig,
    scratch_dir: &std::path::Path,
    timeout: Duration,
) -> anyhow::Result<ReplayReport> {
    let original = tasks
        .get_task(id)
        .await?
        .with_context(|| format!("no task {id} in the store"))?;
    if !original.status.is_final() {
        bail!(
            "task {id} is still {}; a replay re-runs finished tasks",
            original.status
        );
    }
    let original_events = tasks.timeline(id).await?;
    std::fs::create_dir_all(scratch_dir)?;
    config.db = scratch_dir.join(format!("replay-{id}.db"));
    let _ = std::fs::remove_file(&config.db);
    config.replay_from = Some(RecordedBlobs(recorded));
    // Tools never run in a replay; no tool reaches the network either way.
    config.tools.offline = true;
    let runtime = Runtime::open_with(config, catalog)?;
    let running = runtime.start().await?;
    let kernel = runtime.kernel().clone();
    kernel
        .submit(original.agent.as_str(), &original.input, Some(id))
        .await?;
    let scratch = kernel.ports().tasks.clone();
    let until = Instant::now() + timeout;
    let replayed = loop {
        let t = scratch
            .get_task(id)
            .await?
            .context("replayed task vanished")?;
        if t.status.is_final() {
            break t;
        }
        if Instant::now() > until {
            running.shutdown(Duration::from_secs(5)).await;
            bail!("the replay of task {id} did not finish within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    running.shutdown(Duration::from_secs(5)).await;
    let replayed_events = scratch.timeline(id).await?;
    let overlay = runtime
        .replay()
        .context("the runtime is not in replay mode")?;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let original_lines = lines(original_events);
    let replayed_lines = lines(replayed_events);
    let diff = diff(&original_lines, &replayed_lines);
    Ok(ReplayReport {
        original,
        replayed,
        original_lines,
        replayed_lines,
        diff,
        replayed_steps: count(&overlay.replayed_steps),
        replayed_tools: count(&overlay.replayed_tools),
        unrecorded_steps: count(&overlay.model_calls),
        unrecorded_tools: count(&overlay.tool_runs),
    })
}

/// A line diff by longest common subsequence (timelines are short).
pub fn diff(a: &[String], b: &[String]) -> Vec<DiffLine> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n && j < m {
        if a[i] == b[j] {
            out.push(DiffLine::Same(a[i].clone()));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(DiffLine::Removed(a[i].clone()));
            i += 1;
        } else {
            out.push(DiffLine::Added(b[j].clone()));
            j += 1;
        }
    }
    out.extend(a[i..].iter().cloned().map(DiffLine::Removed));
    out.extend(b[j..].iter().cloned().map(DiffLine::Added));
    // Replies to one fan-out may arrive in any order, which moves events without
    // changing them: a line removed in one place and added in another is the same.
    let mut added: Vec<String> = out
        .iter()
        .filter_map(|l| match l {
            DiffLine::Added(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let mut moved = Vec::new();
    for l in &mut out {
        if let DiffLine::Removed(s) = l
            && let Some(k) = added.iter().position(|x| x == s)
        {
            moved.push(added.swap_remove(k));
            *l = DiffLine::Same(s.clone());
        }
    }
    out.retain(|l| match l {
        DiffLine::Added(s) => match moved.iter().position(|x| x == s) {
            Some(k) => {
                moved.swap_remove(k);
                false
            }
            None => true,
        },
        _ => true,
    });
    out
}

/// The report as `aos replay --task` prints it: the diff with two lines of context
/// around each change, then a summary.
pub fn render(report: &ReplayReport) -> String {
    let mut out = String::new();
    let d = &report.diff;
    let near_change = |k: usize| {
        let lo = k.saturating_sub(2);
        let hi = (k + 2).min(d.len().saturating_sub(1));
        (lo..=hi).any(|x| !matches!(d[x], DiffLine::Same(_)))
    };
    let mut skipped = false;
    for (k, l) in d.iter().enumerate() {
        match l {
            DiffLine::Same(s) if near_change(k) => out.push_str(&format!("  {s}\n")),
            DiffLine::Same(_) => {
                if !skipped {
                    out.push_str("  ...\n");
                }
                skipped = true;
                continue;
            }
            DiffLine::Removed(s) => out.push_str(&format!("- {s}\n")),
            DiffLine::Added(s) => out.push_str(&format!("+ {s}\n")),
        }
        skipped = false;
    }
    let r = report;
    if r.same() {
        out = format!(
            "No differences: the replay matches the original timeline ({} events).\n",
            r.original_lines.len()
        );
    } else {
        let first = d
            .iter()
            .position(|l| !matches!(l, DiffLine::Same(_)))
            .unwrap_or(0);
        out.push_str(&format!(
            "The replay diverged at timeline event {} of {}.\n",
            first + 1,
            r.original_lines.len()
        ));
    }
    out.push_str(&format!(
        "Original: {}; replay: {}. {} model steps and {} tool results replayed from the journal; \
         {} steps and {} tool calls were not in it (none reached a model or a tool).\n",
        r.original.status,
        r.replayed.status,
        r.replayed_steps,
        r.replayed_tools,
        r.unrecorded_steps,
        r.unrecorded_tools
    ));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_diff_shows_where_two_timelines_part() {
        let d = diff(&v(&["a", "b", "c", "d"]), &v(&["a", "b", "x", "d"]));
        assert_eq!(
            d,
            vec![
                DiffLine::Same("a".into()),
                DiffLine::Same("b".into()),
                DiffLine::Removed("c".into()),
                DiffLine::Added("x".into()),
                DiffLine::Same("d".into()),
            ]
        );
        assert!(
            diff(&v(&["a"]), &v(&["a"]))
                .iter()
                .all(|l| matches!(l, DiffLine::Same(_)))
        );
    }
}
