//! Text a person reads in a terminal: live progress lines, the final answer, and the
//! task timeline as a lane chart (one lane per agent, time left to right) followed by
//! the message flow and the full event list.

use aos_kernel::kernel::preview as short;
use aos_kernel::model::{Event, EventKind, Task};
use std::fmt::Write as _;

/// One live progress line for an event.
pub fn progress_line(task: &Task, e: &Event) -> String {
    let t = e.at.saturating_sub(task.created_at);
    format!(
        "  {:>6}  {:<9} {} {}",
        format!("+{t}ms"),
        e.agent,
        symbol(e.kind),
        short(&detail(e), 110)
    )
}

/// An event's detail as a person reads it (approvals are stored as JSON).
pub fn detail(e: &Event) -> String {
    match e.kind {
        EventKind::ApprovalRequested => {
            match serde_json::from_str::<aos_kernel::approvals::ApprovalRequest>(&e.detail) {
                Ok(r) => format!(
                    "approval needed: `aos approve {}` for {}({})",
                    aos_kernel::approvals::approval_id(e.task, r.envelope),
                    r.tool,
                    short(&r.arguments.to_string(), 80)
                ),
                Err(_) => e.detail.clone(),
            }
        }
        EventKind::ApprovalDecided => {
            match serde_json::from_str::<aos_kernel::approvals::Decision>(&e.detail) {
                Ok(d) => format!(
                    "{} by {}",
                    if d.approved { "approved" } else { "denied" },
                    d.by
                ),
                Err(_) => e.detail.clone(),
            }
        }
        _ => e.detail.clone(),
    }
}

fn symbol(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Submitted => "⇢",
        EventKind::Woke => "●",
        EventKind::Model => "…",
        EventKind::ToolCall => "⚙",
        EventKind::Delegated | EventKind::Replied => "✉",
        EventKind::Scheduled => "⏰",
        EventKind::Waiting => "☾",
        EventKind::Answer => "✔",
        EventKind::Failed | EventKind::DeadLettered => "✖",
        EventKind::Ignored => "·",
        EventKind::Cancelled => "⊘",
        EventKind::ApprovalRequested | EventKind::ApprovalDecided => "✋",
        EventKind::Audit => "#",
    }
}

/// The whole report printed when a task ends; `with_events` adds the full event list
/// (left out where the events were already shown live).
pub fn report(task: &Task, events: &[Event], with_events: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    match (&task.result, &task.error) {
        (Some(result), _) => {
            let _ = writeln!(out, "Answer ({}):", task.status);
            for line in result.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        (None, Some(err)) => {
            let _ = writeln!(out, "Task {}: {err}", task.status);
        }
        (None, None) => {
            let _ = writeln!(out, "Task is {}", task.status);
        }
    }
    let _ = writeln!(out);
    out.push_str(&timeline(task, events, with_events));
    out
}

/// Lane chart, message flow and (optionally) the event list.
pub fn timeline(task: &Task, events: &[Event], with_events: bool) -> String {
    let mut out = String::new();
    let t0 = task.created_at;
    let end = events.iter().map(|e| e.at).max().unwrap_or(t0).max(t0 + 1);
    let span = end - t0;
    let u = &task.usage;
    let cost = if u.cost_micros > 0 {
        format!(", {}", aos_kernel::model::dollars(u.cost_micros))
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "Timeline of task {} — {} ms, {} wakes, {} model calls, {} tool calls, {} tokens{cost}",
        task.id,
        span,
        u.wakes,
        u.llm_calls,
        u.tool_calls,
        u.tokens()
    );
    // Lanes, in order of first appearance.
    let mut lanes: Vec<String> = Vec::new();
    for e in events {
        if !lanes.contains(&e.agent) {
            lanes.push(e.agent.clone());
        }
    }
    const WIDTH: usize = 56;
    let _ = writeln!(
        out,
        "  {:<9} 0 ms{:>w$}",
        "",
        format!("{span} ms"),
        w = WIDTH - 4
    );
    for lane in &lanes {
        let mut row = vec!['·'; WIDTH];
        for e in events.iter().filter(|e| &e.agent == lane) {
            let col = (((e.at - t0) as u128 * (WIDTH as u128 - 1)) / span as u128) as usize;
            let mark = match e.kind {
                EventKind::Submitted => '▶',
                EventKind::Woke => '●',
                EventKind::Delegated => '→',
                EventKind::Replied => '↩',
                EventKind::Answer => '✔',
                EventKind::Failed | EventKind::DeadLettered => '✖',
                _ => continue,
            };
            // A wake mark never hides a more telling mark in the same column.
            if row[col] == '·' || row[col] == '●' {
                row[col] = mark;
            }
        }
        let _ = writeln!(out, "  {:<9} {}", lane, row.into_iter().collect::<String>());
    }
    let _ = writeln!(
        out,
        "  legend: ▶ submitted  ● woke  → delegated  ↩ replied  ✔ answer  ✖ failed"
    );
    let _ = writeln!(out);
    let steps: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Model | EventKind::ToolCall))
        .collect();
    if !steps.is_empty() {
        let _ = writeln!(out, "Steps (model calls and tool calls):");
        for e in steps {
            let _ = writeln!(
                out,
                "  {:>6}  {:<9} {} {}",
                format!("+{}ms", e.at - t0),
                e.agent,
                symbol(e.kind),
                short(&detail(e), 110)
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "Flow:");
    for e in events {
        let line = match e.kind {
            EventKind::Submitted => format!("user ⇒ {}", short(&e.detail, 90)),
            EventKind::Delegated => format!("{} {}", e.agent, short(&e.detail, 90)),
            EventKind::Replied => format!(
                "{} ↩ {}",
                e.agent,
                short(e.detail.trim_start_matches("→ "), 90)
            ),
            EventKind::Answer => format!("{} ⇒ user: answer ({} chars)", e.agent, e.detail.len()),
            EventKind::Failed | EventKind::DeadLettered => {
                format!("{} ✖ {}", e.agent, short(&e.detail, 90))
            }
            _ => continue,
        };
        let _ = writeln!(out, "  {:>6}  {line}", format!("+{}ms", e.at - t0));
    }
    if !with_events {
        return out;
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Events:");
    for e in events {
        let _ = writeln!(out, "{}", progress_line(task, e));
    }
    out
}
