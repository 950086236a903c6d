//! Agent routes: the catalog (with each queue's depth and the caller's dead-letter
//! count), one agent with the caller's recent tasks for it, and its dead-letter
//! queue (list and redrive, `admin` only). A dead letter belongs to
//! the tenant named in its envelope; one whose body is not an envelope names nobody
//! and is shown only to the default tenant's admins (the operators).

use super::AppState;
use super::auth::Caller;
use super::problem::ApiError;
use super::views::{
    self, AgentDetail, AgentList, AgentSummary, DeadLetterList, DeadLetterView, Limit, Redrive,
    Redriven,
};
use aos_kernel::model::{AgentDef, DEFAULT_TENANT};
use aos_kernel::ports::{DeadLetter, Inbox, TaskQuery};
use aos_kernel::{Envelope, TaskId};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use std::sync::Arc;

/// How many dead letters per agent the catalog counts, at most.
const DEAD_LETTER_COUNT: usize = 1000;

pub(crate) async fn list(State(s): State<AppState>, caller: Caller) -> Json<AgentList> {
    let mut agents: Vec<AgentSummary> = s
        .kernel
        .catalog()
        .agents()
        .map(AgentSummary::from)
        .collect();
    if let Some(inbox) = &s.inbox {
        // The queues are shared by every tenant: their depth is the operators' to see.
        let operator = caller.tenant == DEFAULT_TENANT;
        let names: Vec<String> = agents.iter().map(|a| a.name.clone()).collect();
        let counts = futures::future::join_all(names.iter().map(|name| async {
            let depth = if operator {
                inbox.depth(name).await.map(Some)
            } else {
                Ok(None)
            };
            let dead = visible(&s, &caller, name, DEAD_LETTER_COUNT)
                .await
                .map(|d| d.len() as u64);
            (depth, dead)
        }))
        .await;
        // A queue that cannot be read leaves its numbers out; the catalog still answers.
        for (a, (depth, dead)) in agents.iter_mut().zip(counts) {
            match depth {
                Ok(d) => a.queue_depth = d,
                Err(e) => tracing::warn!(agent = %a.name, error = %e, "queue depth unreadable"),
            }
            match dead {
                Ok(n) => a.dead_letters = Some(n),
                Err(e) => tracing::warn!(agent = %a.name, error = %e, "dead letters unreadable"),
            }
        }
    }
    Json(AgentList { agents })
}

fn agent<'a>(s: &'a AppState, name: &str) -> Result<&'a AgentDef, ApiError> {
    s.kernel.catalog().get(name).ok_or_else(|| {
        ApiError::NotFound(format!(
            "unknown agent '{name}'; known agents: {}",
            s.kernel.catalog().names()
        ))
    })
}

pub(crate) async fn get_agent(
    State(s): State<AppState>,
    caller: Caller,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<AgentDetail>, ApiError> {
    let name = views::path(name)?;
    let def = agent(&s, &name)?;
    // The tenant's newest tasks, of which this agent's; a page is enough for "recent".
    let mut recent = s
        .kernel
        .ports()
        .tasks
        .list_tasks(&TaskQuery {
            tenant: Some(caller.tenant.clone()),
            status: None,
            before: None,
            limit: 200,
        })
        .await?;
    recent.retain(|t| t.tenant == caller.tenant && t.agent == def.name);
    recent.truncate(10);
    Ok(Json(AgentDetail::new(def, recent)))
}

fn inbox(s: &AppState) -> Result<&Arc<dyn Inbox>, ApiError> {
    s.inbox.as_ref().ok_or_else(|| {
        ApiError::NotImplemented(
            "dead letters are not readable through this deployment's API".into(),
        )
    })
}

/// The dead letters of `agent` the caller's tenant may see, with the task each
/// belongs to.
async fn visible(
    s: &AppState,
    caller: &Caller,
    agent: &str,
    limit: usize,
) -> Result<Vec<(DeadLetter, Option<TaskId>)>, ApiError> {
    let all = inbox(s)?.dead_letters(agent, limit).await?;
    Ok(all
        .into_iter()
        .filter_map(|d| match Envelope::parse(&d.body) {
            Ok(env) if env.tenant == caller.tenant => Some((d, Some(env.task))),
            Ok(_) => None,
            Err(_) if caller.tenant == DEFAULT_TENANT => Some((d, None)),
            Err(_) => None,
        })
        .collect())
}

pub(crate) async fn dead_letters(
    State(s): State<AppState>,
    caller: Caller,
    name: Result<Path<String>, PathRejection>,
    q: Result<Query<Limit>, QueryRejection>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let name = views::path(name)?;
    let q = views::query(q)?;
    let limit = views::limit(q.limit, 100, 1000)?;
    agent(&s, &name)?;
    let items = visible(&s, &caller, &name, limit).await?;
    Ok(Json(DeadLetterList {
        agent: name,
        dead_letters: items
            .into_iter()
            .map(|(d, task)| DeadLetterView {
                id: d.id,
                reason: d.reason,
                at: d.at,
                receive_count: d.receive_count,
                task,
                body: d.body,
            })
            .collect(),
    }))
}

/// How many dead letters a redrive looks at, at most.
const REDRIVE_SCAN: usize = 10_000;

pub(crate) async fn redrive(
    State(s): State<AppState>,
    caller: Caller,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Redriven>, ApiError> {
    let name = views::path(name)?;
    agent(&s, &name)?;
    let body: Redrive = views::optional_body(body, r#"{"ids": ["<dead letter id>"]}"#)?;
    let mine: Vec<String> = visible(&s, &caller, &name, REDRIVE_SCAN)
        .await?
        .into_iter()
        .map(|(d, _)| d.id)
        .collect();
    let ids = match body.ids {
        None => mine,
        Some(wanted) => {
            if let Some(missing) = wanted.iter().find(|id| !mine.contains(id)) {
                return Err(ApiError::NotFound(format!(
                    "no dead letter {missing:?} for agent '{name}'"
                )));
            }
            wanted
        }
    };
    let redriven = if ids.is_empty() {
        0
    } else {
        inbox(&s)?.redrive(&name, Some(&ids)).await?
    };
    Ok(Json(Redriven {
        agent: name,
        redriven,
    }))
}
