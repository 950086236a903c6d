//! The commands that work on the local store and on a remote API alike: what each
//! prints and its exit code. Each returns the process's exit code; errors (an
//! unknown task, a refused token, an API's problem detail) go up to `main`, which
//! prints them and exits 1.

use super::client::ApiClient;
use super::config::{self, Endpoint, Saved};
use super::progress::Progress;
use super::target::{Followed, Target};
use aos::render;
use aos_kernel::approvals::Approval;
use aos_kernel::kernel::preview;
use aos_kernel::schedules::format_utc;
use aos_kernel::{ScheduleKind, Task, TaskId, TaskStatus};
use std::io::{BufRead, IsTerminal, Write};

fn task_id(text: &str) -> anyhow::Result<TaskId> {
    text.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a task id (a 26-character ULID)"))
}

/// 0 when the task succeeded, 1 otherwise.
fn exit_code(task: &Task) -> i32 {
    if task.status == TaskStatus::Succeeded {
        0
    } else {
        1
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `3s`, `4m`, `2h`, `5d`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

pub async fn agents(target: &Target) -> anyhow::Result<i32> {
    for a in target.agents().await? {
        println!("{:<9} {}", a.name, a.purpose);
        if !a.tools.is_empty() {
            println!("{:<9}   tools: {}", "", a.tools.join(", "));
        }
        if !a.may_message.is_empty() {
            println!("{:<9}   may message: {}", "", a.may_message.join(", "));
        }
    }
    Ok(0)
}

pub async fn tasks(
    target: &Target,
    status: Option<TaskStatus>,
    limit: usize,
    cursor: Option<&str>,
) -> anyhow::Result<i32> {
    if !(1..=1000).contains(&limit) {
        anyhow::bail!("--limit {limit} is out of range; use 1 to 1000");
    }
    let (tasks, next) = target.tasks(status, limit, cursor).await?;
    if tasks.is_empty() {
        println!(
            "no {}tasks{}",
            status.map(|s| format!("{s} ")).unwrap_or_default(),
            if cursor.is_some() {
                " on this page"
            } else {
                ""
            }
        );
    } else {
        println!(
            "{:<26}  {:<9}  {:<9}  {:>9}  {:>4}  INPUT",
            "ID", "STATUS", "AGENT", "COST", "AGE"
        );
        let now = now_ms();
        for t in &tasks {
            let cost = match t.usage.cost_micros {
                0 => "-".to_string(),
                c => aos_kernel::model::dollars(c),
            };
            println!(
                "{:<26}  {:<9}  {:<9}  {:>9}  {:>4}  {}",
                t.id,
                t.status.as_str(),
                t.agent.as_str(),
                cost,
                age(now.saturating_sub(t.created_at)),
                preview(&t.input, 60)
            );
        }
    }
    if let Some(next) = next {
        println!("next cursor: {next}  (aos tasks --cursor {next})");
    }
    Ok(0)
}

/// Prints the end of a follow and returns the exit code.
fn finished(followed: Followed, id: TaskId, target: &Target) -> i32 {
    match followed {
        Followed::Finished { task, events } => {
            print!("{}", render::report(&task, &events, false));
            let _ = std::io::stdout().flush();
            exit_code(&task)
        }
        Followed::Interrupted => {
            eprintln!(
                "\nStopped following task {id}; it {}. `aos task {id} --follow` follows it again.",
                if target.is_local() {
                    "resumes at the next `aos dev` or follow on this store"
                } else {
                    "goes on"
                }
            );
            130
        }
    }
}

pub async fn task(target: &Target, id: &str, follow: bool) -> anyhow::Result<i32> {
    let id = task_id(id)?;
    if !follow {
        let task = target.task(id).await?;
        let events = target.events(id).await?;
        print!("{}", render::report(&task, &events, true));
        return Ok(exit_code(&task));
    }
    let task = target.task(id).await?;
    eprintln!(
        "Following task {id} ({}, agent {}) on {}: {}",
        task.status,
        task.agent.as_str(),
        target.describe(),
        preview(&task.input, 80)
    );
    let mut progress = Progress::new();
    let followed = target.follow(id, &mut progress).await;
    progress.finish();
    Ok(finished(followed?, id, target))
}

pub async fn submit(
    target: &Target,
    input: &str,
    agent: &str,
    key: Option<&str>,
    wait: bool,
) -> anyhow::Result<i32> {
    let (task, created) = target.submit(agent, input, key).await?;
    println!("{}", task.id);
    let _ = std::io::stdout().flush();
    if created {
        eprintln!(
            "Task {} submitted to {} on {}",
            task.id,
            task.agent.as_str(),
            target.describe()
        );
    } else {
        eprintln!(
            "Task {} was already submitted with this idempotency key; it is {}",
            task.id, task.status
        );
    }
    if !wait {
        if target.is_local() && !task.status.is_final() {
            eprintln!(
                "It runs when `aos dev` runs on this store, or now with `aos task {} --follow`.",
                task.id
            );
        } else {
            eprintln!("Follow it with `aos task {} --follow`.", task.id);
        }
        return Ok(0);
    }
    let mut progress = Progress::new();
    let followed = target.follow(task.id, &mut progress).await;
    progress.finish();
    Ok(finished(followed?, task.id, target))
}

pub async fn cancel(target: &Target, id: &str, reason: Option<&str>) -> anyhow::Result<i32> {
    let id = task_id(id)?;
    let task = target.cancel(id, reason).await?;
    let why = task.error.as_deref().unwrap_or_default();
    println!(
        "Cancelled task {}: {}",
        task.id,
        why.strip_prefix("cancelled: ").unwrap_or(why)
    );
    Ok(0)
}

/// One approval on one line: id, status, agent, tool and arguments, the task's request.
pub fn approval_line(a: &Approval) -> String {
    format!(
        "{} [{:?}] {} wants {}({}) for task {}: {}",
        a.id,
        a.status,
        a.agent,
        a.tool,
        a.arguments,
        a.task,
        preview(&a.task_input, 80)
    )
}

pub async fn approvals(target: &Target, tenant: &str) -> anyhow::Result<i32> {
    let pending = target.approvals().await?;
    if target.is_local() {
        println!("{} approval(s) pending for tenant {tenant}", pending.len());
    } else {
        println!("{} approval(s) pending", pending.len());
    }
    for a in pending {
        println!("- {}", approval_line(&a));
    }
    Ok(0)
}

pub async fn approve(
    target: &Target,
    id: &str,
    approve: bool,
    note: Option<&str>,
    by: &str,
) -> anyhow::Result<i32> {
    let a = target.decide(id, approve, note, by).await?;
    println!(
        "{} {}: {}",
        if approve { "Approved" } else { "Denied" },
        a.id,
        approval_line(&a)
    );
    if target.is_local() {
        println!(
            "`aos dev` (or `aos task {} --follow`) carries the task on.",
            a.task
        );
    }
    Ok(0)
}

pub async fn schedule_create(
    target: &Target,
    agent: &str,
    kind: ScheduleKind,
    input: &str,
    when: &str,
) -> anyhow::Result<i32> {
    let s = target.create_schedule(agent, kind, input, when).await?;
    println!("{}", s.id);
    let next = s
        .next_fire(now_ms())
        .map(|t| format!("next firing {} UTC", format_utc(t)))
        .unwrap_or_else(|| "it never fires again".into());
    eprintln!(
        "Schedule {} on {}: a {} for {} {}; {next}{}",
        s.id,
        target.describe(),
        s.kind.as_str(),
        s.agent.as_str(),
        s.when,
        if target.is_local() {
            " (the local store fires it while `aos dev` runs)"
        } else {
            ""
        }
    );
    Ok(0)
}

pub async fn schedule_list(target: &Target) -> anyhow::Result<i32> {
    let all = target.schedules().await?;
    println!("{} schedule(s)", all.len());
    if all.is_empty() {
        return Ok(0);
    }
    println!(
        "{:<26}  {:<6}  {:<9}  {:<24}  {:<19}  INPUT",
        "ID", "KIND", "AGENT", "WHEN", "NEXT (UTC)"
    );
    let now = now_ms();
    for s in all {
        println!(
            "{:<26}  {:<6}  {:<9}  {:<24}  {:<19}  {}",
            s.id,
            s.kind.as_str(),
            s.agent.as_str(),
            s.when.to_string(),
            s.next_fire(now)
                .map(format_utc)
                .unwrap_or_else(|| "-".into()),
            preview(&s.input, 50)
        );
    }
    Ok(0)
}

pub async fn schedule_delete(target: &Target, id: &str) -> anyhow::Result<i32> {
    target.delete_schedule(id).await?;
    println!("Deleted schedule {id}");
    Ok(0)
}

pub async fn dlq(target: &Target, agent: &str, redrive: bool) -> anyhow::Result<i32> {
    let items = target.dead_letters(agent).await?;
    println!("{} dead letter(s) for {agent}", items.len());
    for d in &items {
        println!(
            "- {} after {} receive(s), {} UTC: {}\n  {}",
            d.id,
            d.receive_count,
            format_utc(d.at),
            d.reason,
            d.body.chars().take(200).collect::<String>()
        );
    }
    if redrive {
        let n = target.redrive(agent).await?;
        println!("Redrove {n} dead letter(s) to {agent}'s queue");
        if n > 0 && target.is_local() {
            println!("They run when `aos dev` (or a follow) runs on this store.");
        }
    }
    Ok(0)
}

/// Reads a token from stdin: one line (a prompt first when it is a terminal).
fn read_token(url: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Token for {url} (`aos dev` prints AOS_TOKEN=...; `aos token` mints one): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let token = line.trim();
    let token = token.strip_prefix("AOS_TOKEN=").unwrap_or(token);
    if token.is_empty() {
        anyhow::bail!("no token given; pass --token, set AOS_TOKEN or type it on stdin");
    }
    Ok(token.to_string())
}

pub async fn login(url: &str, token: Option<&str>) -> anyhow::Result<i32> {
    let url = config::normalize_url(url)?;
    let path = config::config_path().ok_or_else(|| {
        anyhow::anyhow!("neither XDG_CONFIG_HOME nor HOME is set; pass --api and --token instead")
    })?;
    let token = match token.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => t.to_string(),
        None => read_token(&url)?,
    };
    let client = ApiClient::new(Endpoint {
        url: url.clone(),
        token: Some(token.clone()),
    })?;
    let agents = client.agents().await?;
    config::save(
        &path,
        &Saved {
            api: url.clone(),
            token: Some(token),
        },
    )?;
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    println!(
        "Logged in to {url}: the token works ({} agent(s): {}).",
        agents.len(),
        names.join(", ")
    );
    println!(
        "Saved to {} (readable by you only). Commands now talk to this API; --local for the local store, `aos logout` to forget it.",
        path.display()
    );
    Ok(0)
}

pub fn logout() -> anyhow::Result<i32> {
    let Some(path) = config::config_path() else {
        println!("Not logged in.");
        return Ok(0);
    };
    match config::load(&path) {
        Ok(None) => {
            println!("Not logged in ({} does not exist).", path.display());
            return Ok(0);
        }
        Ok(Some(saved)) => {
            std::fs::remove_file(&path)?;
            println!("Logged out of {} (removed {}).", saved.api, path.display());
        }
        // Unreadable: remove it all the same, that is what was asked.
        Err(_) => {
            std::fs::remove_file(&path)?;
            println!("Removed {}.", path.display());
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_the_largest_whole_unit() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59_999), "59s");
        assert_eq!(age(60_000), "1m");
        assert_eq!(age(7_200_000), "2h");
        assert_eq!(age(3 * 86_400_000), "3d");
    }
}
