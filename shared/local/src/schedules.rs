//! The `Schedules` port on [`LocalStore`] (table `task_schedules`), and what the
//! embedded runtime needs to fire them: [`LocalStore::due_firings`] and
//! [`LocalStore::fired`].
//!
//! Rule: each row keeps the next firing it owes (`next_at`), and only
//! [`LocalStore::fired`] moves it on, after the firing's task was submitted. The task
//! id of a firing is derived from the schedule id and the slot time, so a crash
//! between the submit and `fired` submits the same task again, which the task store
//! turns away: every slot fires once, across restarts. Slots missed while nothing ran
//! are not caught up one by one; the first missed one fires, then the timetable goes
//! on from now (as EventBridge Scheduler does not replay missed slots either).

use crate::store::{Fail, LocalStore, from_sql, sql_int};
use aos_kernel::ports::PortError;
use aos_kernel::schedules::{Schedule, Schedules, When};
use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

/// One firing the runtime owes: submit [`Schedule::task_input`] to the schedule's
/// agent, then report it with [`LocalStore::fired`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firing {
    pub schedule: Schedule,
    /// The slot, in milliseconds since the Unix epoch; with the schedule id it names
    /// the firing's task.
    pub at: u64,
}

/// The first slot a new schedule owes: a one-time schedule's time even when it has
/// passed (it fires at once rather than never), else the first slot from creation.
fn first_slot(s: &Schedule) -> Option<u64> {
    match s.when {
        When::At(at) => Some(at),
        _ => s.next_fire(s.created_at.saturating_sub(1)),
    }
}

fn decode(body: &str) -> Result<Schedule, Fail> {
    serde_json::from_str(body)
        .map_err(|e| Fail::Port(PortError::Corrupt(format!("stored schedule: {e}"))))
}

impl LocalStore {
    /// Every firing due at `now_ms`, earliest first, at most `limit`.
    pub async fn due_firings(&self, now_ms: u64, limit: usize) -> Result<Vec<Firing>, PortError> {
        let now = sql_int(now_ms);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT body, next_at FROM task_schedules
                 WHERE next_at IS NOT NULL AND next_at <= ?1 ORDER BY next_at, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, limit], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (body, at) = row?;
                out.push(Firing {
                    schedule: decode(&body)?,
                    at: from_sql(at),
                });
            }
            Ok(out)
        })
    }

    /// Records that `firing` was submitted at `now_ms`: a one-time schedule goes, any
    /// other moves on to its first slot after both the fired one and now. A firing
    /// that is no longer owed (the schedule was deleted, or already moved on) changes
    /// nothing.
    pub async fn fired(&self, firing: &Firing, now_ms: u64) -> Result<(), PortError> {
        let s = &firing.schedule;
        self.write(|tx| {
            let owed: Option<Option<i64>> = tx
                .prepare_cached("SELECT next_at FROM task_schedules WHERE tenant = ?1 AND id = ?2")?
                .query_row(params![s.tenant, s.id], |r| r.get(0))
                .optional()?;
            if owed != Some(Some(sql_int(firing.at))) {
                return Ok(());
            }
            if s.when.is_once() {
                tx.prepare_cached("DELETE FROM task_schedules WHERE tenant = ?1 AND id = ?2")?
                    .execute(params![s.tenant, s.id])?;
            } else {
                let next = s.next_fire(firing.at.max(now_ms)).map(sql_int);
                tx.prepare_cached(
                    "UPDATE task_schedules SET next_at = ?3 WHERE tenant = ?1 AND id = ?2",
                )?
                .execute(params![s.tenant, s.id, next])?;
            }
            Ok(())
        })
    }

    /// The earliest slot any schedule owes, so a runtime can sleep until then.
    pub async fn next_firing(&self) -> Result<Option<u64>, PortError> {
        self.read(|tx| {
            let at: Option<i64> = tx
                .prepare_cached("SELECT MIN(next_at) FROM task_schedules")?
                .query_row([], |r| r.get(0))?;
            Ok(at.map(from_sql))
        })
    }
}

#[async_trait]
impl Schedules for LocalStore {
    async fn create(&self, schedule: &Schedule) -> Result<(), PortError> {
        let body = serde_json::to_string(schedule)
            .map_err(|e| PortError::Rejected(format!("schedule does not encode: {e}")))?;
        let next = first_slot(schedule).map(sql_int);
        let inserted = self.write(|tx| {
            Ok(tx
                .prepare_cached(
                    "INSERT INTO task_schedules (tenant, id, body, next_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (tenant, id) DO NOTHING",
                )?
                .execute(params![schedule.tenant, schedule.id, body, next])?)
        })?;
        if inserted == 0 {
            return Err(PortError::Rejected(format!(
                "schedule {} exists already",
                schedule.id
            )));
        }
        Ok(())
    }

    async fn list(&self, tenant: &str) -> Result<Vec<Schedule>, PortError> {
        self.read(|tx| {
            let mut stmt =
                tx.prepare_cached("SELECT body FROM task_schedules WHERE tenant = ?1 ORDER BY id")?;
            let rows = stmt.query_map([tenant], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for body in rows {
                out.push(decode(&body?)?);
            }
            Ok(out)
        })
    }

    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Schedule>, PortError> {
        self.read(|tx| {
            let body: Option<String> = tx
                .prepare_cached("SELECT body FROM task_schedules WHERE tenant = ?1 AND id = ?2")?
                .query_row(params![tenant, id], |r| r.get(0))
                .optional()?;
            body.as_deref().map(decode).transpose()
        })
    }

    async fn delete(&self, tenant: &str, id: &str) -> Result<bool, PortError> {
        self.write(|tx| {
            let n = tx
                .prepare_cached("DELETE FROM task_schedules WHERE tenant = ?1 AND id = ?2")?
                .execute(params![tenant, id])?;
            Ok(n > 0)
        })
    }
}
