//! [`LocalStore`]: sessions, tasks, FIFO queues with visibility timeouts and redrive,
//! blobs and schedules in one SQLite file.
//!
//! Rule: the contracts are those of the in-memory doubles in `aos_kernel::testkit`
//! (and of the AWS services they stand for); anything that differs is a bug here.
//! Every port call runs in one transaction under one connection lock, and the lock is
//! never held across an `.await`, so calls are short and atomic.

use crate::schema;
use aos_kernel::ids::{EnvelopeId, TaskId};
use aos_kernel::model::DEFAULT_TENANT;
use aos_kernel::model::{
    Envelope, Event, MemoryNote, OutboxItem, Session, SessionKey, Task, TaskUpdate,
};
use aos_kernel::ports::{
    BlobStore, Clock, Commit, DeadLetter, Inbox, Loaded, Mailbox, PortError, Received, Scheduler,
    SessionStore, TaskQuery, TaskStore,
};
use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How the embedded queues behave; defaults match an SQS FIFO queue with a redrive
/// policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalConfig {
    /// Receives after which a message that was never deleted moves to the dead-letter
    /// queue (SQS `maxReceiveCount`).
    pub max_receives: u32,
    /// How long `send` remembers an envelope id to drop a re-send (SQS FIFO: 5
    /// minutes). 0 turns deduplication off.
    pub dedup_window_ms: u64,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            max_receives: 5,
            dedup_window_ms: 5 * 60 * 1000,
        }
    }
}

/// Why the store file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot open the local store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the local store {path} has schema version {found}, but this aos knows versions up to {known}; use a newer aos or another file"
    )]
    NewerSchema {
        path: String,
        found: i64,
        known: i64,
    },
}

/// Every storage port of the embedded runtime on one SQLite file. Cloning is cheap
/// and shares the connection, so one store can be handed out as several
/// `Arc<dyn Port>`.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// One connection: SQLite serialises writers anyway, and a single connection lets
    /// every statement stay prepared in its cache.
    conn: Mutex<Connection>,
    /// Stamps queue times, dedupe times and dead letters; tests pass a manual clock.
    clock: Arc<dyn Clock>,
    config: LocalConfig,
    /// `None` for an in-memory store; shown in `Debug` so logs say which file.
    path: Option<PathBuf>,
    /// Counts sends, to prune expired dedupe rows every so often rather than on every
    /// send.
    sends: AtomicU64,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("path", &self.inner.path)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Expired dedupe rows are pruned once per this many `send` calls.
const PRUNE_EVERY: u64 = 256;

/// A failure inside a transaction: SQLite's own, or a port outcome such as a conflict.
/// Either way the transaction is dropped, which rolls it back.
pub(crate) enum Fail {
    Sql(rusqlite::Error),
    Port(PortError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<PortError> for Fail {
    fn from(e: PortError) -> Self {
        Fail::Port(e)
    }
}

impl From<Fail> for PortError {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Port(e) => e,
            Fail::Sql(e) => port_error(e),
        }
    }
}

/// Sorts SQLite failures into what the caller should do about them.
fn port_error(e: rusqlite::Error) -> PortError {
    use rusqlite::Error as E;
    match &e {
        E::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            PortError::Unavailable(format!("local store is busy: {e}"))
        }
        E::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            PortError::Corrupt(format!("local store file: {e}"))
        }
        E::SqliteFailure(f, _) if f.code == ErrorCode::TooBig => {
            PortError::Rejected(format!("too large for the local store: {e}"))
        }
        E::FromSqlConversionFailure(..)
        | E::InvalidColumnType(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(..) => PortError::Corrupt(format!("local store value: {e}")),
        _ => PortError::Unavailable(format!("local store: {e}")),
    }
}

fn decode<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, PortError> {
    serde_json::from_str(text).map_err(|e| PortError::Corrupt(format!("stored {what}: {e}")))
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, PortError> {
    serde_json::to_string(value).map_err(|e| PortError::Rejected(format!("{what}: {e}")))
}

/// SQLite integers are signed; milliseconds and counts beyond `i64::MAX` cannot occur
/// in practice, so they saturate rather than wrap.
pub(crate) fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn sql_len(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn count_from_sql(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(if v < 0 { 0 } else { u32::MAX })
}

impl LocalStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(
        path: &Path,
        config: LocalConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<LocalStore, LocalError> {
        let shown = path.display().to_string();
        let conn = Connection::open(path).map_err(|source| LocalError::Open {
            path: shown.clone(),
            source,
        })?;
        Self::with_connection(conn, &shown, Some(path.to_path_buf()), config, clock)
    }

    /// A store in a private in-memory SQLite database: the same SQL as a file, gone
    /// when the last clone is dropped. For tests.
    pub fn open_in_memory(
        config: LocalConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<LocalStore, LocalError> {
        let conn = Connection::open_in_memory().map_err(|source| LocalError::Open {
            path: ":memory:".into(),
            source,
        })?;
        Self::with_connection(conn, ":memory:", None, config, clock)
    }

    fn with_connection(
        mut conn: Connection,
        shown: &str,
        path: Option<PathBuf>,
        config: LocalConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<LocalStore, LocalError> {
        schema::prepare(&mut conn, shown)?;
        // A file that sat unused for days is full of expired dedupe rows.
        prune_dedup(
            &conn,
            sql_int(clock.now_ms()),
            sql_int(config.dedup_window_ms),
        )
        .map_err(|source| LocalError::Open {
            path: shown.to_string(),
            source,
        })?;
        Ok(LocalStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                clock,
                config,
                path,
                sends: AtomicU64::new(0),
            }),
        })
    }

    /// The queue settings this store was opened with.
    pub fn config(&self) -> LocalConfig {
        self.inner.config
    }

    pub(crate) fn now(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held dropped its open transaction, which rolled
        // back; the connection itself is sound, so poisoning is not a reason to stop.
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one write transaction. `BEGIN IMMEDIATE` takes the write lock up
    /// front, so two processes never both read and then fail to upgrade to writing.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Fail>,
    ) -> Result<T, PortError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(port_error)?;
        let out = f(&tx)?;
        tx.commit().map_err(port_error)?;
        Ok(out)
    }

    /// Runs `f` in one read transaction, so everything it reads is one snapshot.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, Fail>,
    ) -> Result<T, PortError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(port_error)?;
        let out = f(&tx)?;
        tx.commit().map_err(port_error)?;
        Ok(out)
    }

    /// Makes every in-flight message visible now and returns how many there were.
    /// Called at process start: whoever was processing them died with the previous
    /// process, so this is the visibility timeout expiring early. Receive counts are
    /// kept, so a message that keeps crashing the process still reaches the
    /// dead-letter queue.
    pub fn release_all_in_flight(&self) -> Result<u64, PortError> {
        let now = sql_int(self.now());
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE messages SET visible_at = ?1, receipt = NULL
                     WHERE receipt IS NOT NULL AND visible_at > ?1",
                )?
                .execute([now])?;
            Ok(n as u64)
        })
    }

    /// Moves every schedule due at `now_ms` into its agent's queue (through the same
    /// deduplication as `send`) and forgets it, in one transaction, so a crash either
    /// delivers a schedule or leaves it for the next call. Returns how many schedules
    /// were due.
    pub async fn deliver_due(&self, now_ms: u64) -> Result<usize, PortError> {
        self.deliver_due_now(now_ms)
    }

    fn deliver_due_now(&self, now_ms: u64) -> Result<usize, PortError> {
        let now = sql_int(now_ms);
        let window = sql_int(self.inner.config.dedup_window_ms);
        self.write(|tx| {
            let due: Vec<(String, String, String, String)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, agent, grp, body FROM schedules WHERE at <= ?1 ORDER BY at, id",
                )?;
                let rows =
                    stmt.query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            for (id, agent, grp, body) in &due {
                enqueue(tx, agent, id, grp, body, now, window)?;
                tx.prepare_cached("DELETE FROM schedules WHERE id = ?1")?
                    .execute([id])?;
            }
            Ok(due.len())
        })
    }

    /// When the earliest schedule is due, so the runtime can sleep until then.
    pub async fn next_due(&self) -> Result<Option<u64>, PortError> {
        self.read(|tx| {
            let at: Option<i64> = tx
                .prepare_cached("SELECT MIN(at) FROM schedules")?
                .query_row([], |r| r.get(0))?;
            Ok(at.map(from_sql))
        })
    }

    fn prune_dedup(&self) -> Result<(), PortError> {
        let now = sql_int(self.now());
        let window = sql_int(self.inner.config.dedup_window_ms);
        self.write(|tx| {
            prune_dedup(tx, now, window)?;
            Ok(())
        })
    }

    fn load_now(
        &self,
        key: &SessionKey,
        task: TaskId,
        envelope: EnvelopeId,
        memory_scope: &str,
        memory_limit: usize,
    ) -> Result<Loaded, PortError> {
        let agent = key.agent.as_str();
        let session = key.session.as_str();
        let envelope = envelope.to_string();
        let task = task.to_string();
        self.read(|tx| {
            let state: Option<String> = tx
                .prepare_cached("SELECT state FROM sessions WHERE agent = ?1 AND session = ?2")?
                .query_row([agent, session], |r| r.get(0))
                .optional()?;
            let outbox: Option<String> = tx
                .prepare_cached(
                    "SELECT outbox FROM applied
                     WHERE agent = ?1 AND session = ?2 AND envelope = ?3",
                )?
                .query_row([agent, session, &envelope], |r| r.get(0))
                .optional()?;
            let task: Option<Task> = read_task(tx, &task)?;
            let mut notes: Vec<String> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT note FROM memory WHERE agent = ?1 ORDER BY seq DESC LIMIT ?2",
                )?;
                let rows =
                    stmt.query_map(params![memory_scope, sql_len(memory_limit)], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            // Read newest first to apply the limit; the port returns oldest first.
            notes.reverse();
            Ok(Loaded {
                session: state
                    .map(|s| decode::<Session>("session", &s))
                    .transpose()?,
                applied: outbox
                    .map(|o| decode::<Vec<OutboxItem>>("outbox", &o))
                    .transpose()?,
                task,
                memory: notes
                    .iter()
                    .map(|n| decode::<MemoryNote>("memory note", n))
                    .collect::<Result<_, _>>()?,
            })
        })
    }

    fn commit_now(&self, c: &Commit) -> Result<(), PortError> {
        let agent = c.key.agent.as_str();
        let session = c.key.session.as_str();
        let envelope = c.envelope.to_string();
        // Encode before taking the lock: the lock is for SQLite work only.
        let outbox = encode("outbox", &c.outbox)?;
        let state = c
            .session
            .as_ref()
            .map(|s| encode("session", s).map(|text| (s.version, text)))
            .transpose()?;
        let notes = c
            .memory
            .iter()
            .map(|n| encode("memory note", n))
            .collect::<Result<Vec<_>, _>>()?;
        let events = encode_events(&c.events)?;
        // The task's updated_at is the wake's time, which its events carry.
        let now = c.events.last().map(|e| e.at).unwrap_or_else(|| self.now());
        self.write(|tx| {
            let applied: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM applied
                     WHERE agent = ?1 AND session = ?2 AND envelope = ?3)",
                )?
                .query_row([agent, session, &envelope], |r| r.get(0))?;
            if applied {
                return Err(PortError::Conflict.into());
            }
            if let Some((version, state)) = &state {
                let current: Option<i64> = tx
                    .prepare_cached(
                        "SELECT version FROM sessions WHERE agent = ?1 AND session = ?2",
                    )?
                    .query_row([agent, session], |r| r.get(0))
                    .optional()?;
                if current.unwrap_or(0) != sql_int(c.expected_version) {
                    return Err(PortError::Conflict.into());
                }
                tx.prepare_cached(
                    "INSERT INTO sessions (agent, session, version, state) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (agent, session)
                     DO UPDATE SET version = excluded.version, state = excluded.state",
                )?
                .execute(params![agent, session, sql_int(*version), state])?;
            }
            tx.prepare_cached(
                "INSERT INTO applied (agent, session, envelope, outbox, at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![agent, session, envelope, outbox, sql_int(now)])?;
            update_task_row(tx, c.task, &c.task_update, now)?;
            insert_events(tx, c.task, &events)?;
            for note in &notes {
                tx.prepare_cached("INSERT INTO memory (agent, note) VALUES (?1, ?2)")?
                    .execute([c.memory_scope.as_str(), note])?;
            }
            Ok(())
        })
    }

    fn create_task_now(&self, task: &Task, event: &Event) -> Result<bool, PortError> {
        let id = task.id.to_string();
        let text = encode("task", task)?;
        let events = encode_events(std::slice::from_ref(event))?;
        self.write(|tx| {
            let created = tx
                .prepare_cached(
                    "INSERT INTO tasks (id, status, task) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![id, task.status.as_str(), text])?;
            if created == 0 {
                return Ok(false);
            }
            insert_events(tx, task.id, &events)?;
            Ok(true)
        })
    }

    fn task_events_now(&self, id: TaskId) -> Result<Vec<Event>, PortError> {
        let id = id.to_string();
        let texts: Vec<String> = self.read(|tx| {
            let mut stmt = tx.prepare_cached("SELECT event FROM events WHERE task = ?1")?;
            let rows = stmt.query_map([&id], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })?;
        let mut events = texts
            .iter()
            .map(|t| decode::<Event>("event", t))
            .collect::<Result<Vec<_>, _>>()?;
        // Sorted here rather than by an index: one less b-tree to write per event.
        events.sort_by_key(|e| (e.at, e.id));
        Ok(events)
    }

    fn list_tasks_now(&self, q: &TaskQuery) -> Result<Vec<Task>, PortError> {
        // Rows written before tenants existed have none in their JSON: the default.
        let mut sql = String::from("SELECT task FROM tasks WHERE 1 = 1");
        let mut args: Vec<String> = Vec::new();
        if let Some(status) = q.status {
            // `status = ?` (not `?1 IS NULL OR ...`) keeps the status index usable.
            args.push(status.as_str().to_string());
            sql.push_str(&format!(" AND status = ?{}", args.len()));
        }
        if let Some(before) = q.before {
            args.push(before.to_string());
            sql.push_str(&format!(" AND id < ?{}", args.len()));
        }
        if let Some(tenant) = &q.tenant {
            args.push(tenant.clone());
            sql.push_str(&format!(
                " AND COALESCE(json_extract(task, '$.tenant'), '{DEFAULT_TENANT}') = ?{}",
                args.len()
            ));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", sql_len(q.limit)));
        let texts: Vec<String> = self.read(|tx| {
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })?;
        texts.iter().map(|t| decode("task", t)).collect()
    }

    fn claim_idempotency_key_now(
        &self,
        key: &str,
        task: TaskId,
        fingerprint: &str,
    ) -> Result<(TaskId, String), PortError> {
        let task = task.to_string();
        let (bound, first): (String, String) = self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO idempotency (key, task, fingerprint) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO NOTHING",
            )?
            .execute([key, &task, fingerprint])?;
            Ok(tx
                .prepare_cached("SELECT task, fingerprint FROM idempotency WHERE key = ?1")?
                .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))?)
        })?;
        let bound = bound
            .parse()
            .map_err(|_| PortError::Corrupt(format!("idempotency key {key:?}: bad task id")))?;
        Ok((bound, first))
    }

    fn update_task_now(
        &self,
        id: TaskId,
        update: &TaskUpdate,
        events: &[Event],
    ) -> Result<Option<Task>, PortError> {
        let encoded = encode_events(events)?;
        let now = events.last().map(|e| e.at).unwrap_or_else(|| self.now());
        self.write(|tx| {
            let Some(task) = update_task_row(tx, id, update, now)? else {
                return Ok(None);
            };
            insert_events(tx, id, &encoded)?;
            Ok(Some(task))
        })
    }

    fn send_now(&self, envelopes: &[Envelope]) -> Result<(), PortError> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let now = sql_int(self.now());
        let window = sql_int(self.inner.config.dedup_window_ms);
        let rows: Vec<(String, String, String)> = envelopes
            .iter()
            .map(|e| (e.id.to_string(), e.session.to_string(), e.to_json()))
            .collect();
        self.write(|tx| {
            for (e, (id, grp, body)) in envelopes.iter().zip(&rows) {
                enqueue(tx, e.to.as_str(), id, grp, body, now, window)?;
            }
            Ok(())
        })?;
        if self.inner.sends.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            // The send itself succeeded; a failed prune only leaves rows for next time.
            if let Err(e) = self.prune_dedup() {
                tracing::warn!(error = %e, "could not prune the dedupe table");
            }
        }
        Ok(())
    }

    fn dead_letter_now(&self, agent: &str, body: &str, reason: &str) -> Result<(), PortError> {
        let now = sql_int(self.now());
        self.write(|tx| {
            insert_dead_letter(tx, agent, body, reason, now, 0)?;
            Ok(())
        })
    }

    fn receive_now(
        &self,
        agent: &str,
        max: usize,
        visibility_ms: u64,
    ) -> Result<Vec<Received>, PortError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now_ms = self.now();
        let now = sql_int(now_ms);
        let visible_at = sql_int(now_ms.saturating_add(visibility_ms));
        let max_receives = self.inner.config.max_receives;
        self.write(|tx| {
            let mut out = Vec::new();
            let mut redrive = Vec::new();
            {
                // Groups with a message in flight are locked: SQL skips them whole.
                let mut stmt = tx.prepare_cached(
                    "SELECT seq, id, grp, sent_at, receive_count, visible_at, body
                     FROM messages
                     WHERE agent = ?1 AND grp NOT IN (
                         SELECT grp FROM messages
                         WHERE agent = ?1 AND receipt IS NOT NULL AND visible_at > ?2)
                     ORDER BY seq",
                )?;
                let mut rows = stmt.query(params![agent, now])?;
                // Groups that may return nothing more in this call: a message that is
                // not visible yet, or was just redriven, holds back those behind it.
                let mut blocked: HashSet<String> = HashSet::new();
                while out.len() < max {
                    let Some(row) = rows.next()? else { break };
                    let grp: String = row.get(2)?;
                    if blocked.contains(&grp) {
                        continue;
                    }
                    let seq: i64 = row.get(0)?;
                    let count = count_from_sql(row.get(4)?);
                    let row_visible_at: i64 = row.get(5)?;
                    if row_visible_at > now {
                        blocked.insert(grp);
                        continue;
                    }
                    if count >= max_receives {
                        redrive.push((seq, count));
                        blocked.insert(grp);
                        continue;
                    }
                    out.push((
                        seq,
                        Received {
                            receipt: format!("{seq}-{}", ulid::Ulid::new()),
                            message_id: row.get(1)?,
                            body: row.get(6)?,
                            group: grp,
                            receive_count: count.saturating_add(1),
                            sent_at: from_sql(row.get(3)?),
                        },
                    ));
                }
            }
            for (seq, received) in &out {
                tx.prepare_cached(
                    "UPDATE messages SET receive_count = ?2, visible_at = ?3, receipt = ?4
                     WHERE seq = ?1",
                )?
                .execute(params![
                    seq,
                    i64::from(received.receive_count),
                    visible_at,
                    received.receipt
                ])?;
            }
            for (seq, count) in redrive {
                let reason =
                    format!("received {count} times without success (max receives {max_receives})");
                tx.prepare_cached(
                    "INSERT INTO dead_letters (agent, body, reason, at, receive_count)
                     SELECT agent, body, ?2, ?3, receive_count FROM messages WHERE seq = ?1",
                )?
                .execute(params![seq, reason, now])?;
                tx.prepare_cached("DELETE FROM messages WHERE seq = ?1")?
                    .execute([seq])?;
            }
            Ok(out.into_iter().map(|(_, r)| r).collect())
        })
    }

    fn delete_now(&self, agent: &str, receipt: &str) -> Result<(), PortError> {
        let Some(seq) = receipt_seq(receipt) else {
            return Ok(());
        };
        self.write(|tx| {
            // Only the latest receive holds this receipt: a stale one matches nothing.
            tx.prepare_cached(
                "DELETE FROM messages WHERE seq = ?1 AND receipt = ?2 AND agent = ?3",
            )?
            .execute(params![seq, receipt, agent])?;
            Ok(())
        })
    }

    fn delete_batch_now(&self, agent: &str, receipts: &[String]) -> Result<(), PortError> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM messages WHERE seq = ?1 AND receipt = ?2 AND agent = ?3",
            )?;
            for receipt in receipts {
                // Only the latest receive holds this receipt: a stale one matches nothing.
                if let Some(seq) = receipt_seq(receipt) {
                    stmt.execute(params![seq, receipt, agent])?;
                }
            }
            Ok(())
        })
    }

    fn release_now(&self, agent: &str, receipt: &str, delay_ms: u64) -> Result<(), PortError> {
        let Some(seq) = receipt_seq(receipt) else {
            return Ok(());
        };
        let visible_at = sql_int(self.now().saturating_add(delay_ms));
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE messages SET visible_at = ?4, receipt = NULL
                 WHERE seq = ?1 AND receipt = ?2 AND agent = ?3",
            )?
            .execute(params![seq, receipt, agent, visible_at])?;
            Ok(())
        })
    }

    fn dead_letters_now(&self, agent: &str, limit: usize) -> Result<Vec<DeadLetter>, PortError> {
        self.read(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT body, reason, at, receive_count, seq FROM dead_letters
                 WHERE agent = ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![agent, sql_len(limit)], |r| {
                Ok(DeadLetter {
                    body: r.get(0)?,
                    reason: r.get(1)?,
                    at: from_sql(r.get(2)?),
                    receive_count: count_from_sql(r.get(3)?),
                    id: r.get::<_, i64>(4)?.to_string(),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Moves dead letters back onto the queue in one transaction, so a crash moves
    /// all of them or none. They bypass deduplication (a redriven envelope keeps its
    /// id) and go back into their envelope's session group.
    fn redrive_now(&self, agent: &str, ids: Option<&[String]>) -> Result<usize, PortError> {
        let now = sql_int(self.now());
        self.write(|tx| {
            let parked: Vec<(i64, String)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT seq, body FROM dead_letters WHERE agent = ?1 ORDER BY seq",
                )?;
                let rows = stmt.query_map([agent], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut moved = 0;
            for (seq, body) in parked {
                if ids.is_some_and(|ids| !ids.iter().any(|i| *i == seq.to_string())) {
                    continue;
                }
                let grp = Envelope::parse(&body)
                    .map_or_else(|_| format!("dead-letter-{seq}"), |e| e.session.to_string());
                tx.prepare_cached(
                    "INSERT INTO messages (agent, id, grp, body, sent_at, receive_count, visible_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5)",
                )?
                .execute(params![agent, ulid::Ulid::new().to_string(), grp, body, now])?;
                tx.prepare_cached("DELETE FROM dead_letters WHERE seq = ?1")?
                    .execute([seq])?;
                moved += 1;
            }
            Ok(moved)
        })
    }

    fn depth_now(&self, agent: &str) -> Result<u64, PortError> {
        self.read(|tx| {
            let n: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM messages WHERE agent = ?1")?
                .query_row([agent], |r| r.get(0))?;
            Ok(from_sql(n))
        })
    }

    fn put_now(&self, key: &str, bytes: &[u8]) -> Result<(), PortError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO blobs (key, bytes) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET bytes = excluded.bytes",
            )?
            .execute(params![key, bytes])?;
            Ok(())
        })
    }

    fn get_now(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.read(|tx| {
            Ok(tx
                .prepare_cached("SELECT bytes FROM blobs WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?)
        })
    }

    fn schedule_now(&self, at_ms: u64, envelope: &Envelope) -> Result<(), PortError> {
        let id = envelope.id.to_string();
        let body = envelope.to_json();
        self.write(|tx| {
            // The first schedule of an envelope wins, like creating a named
            // EventBridge schedule twice.
            tx.prepare_cached(
                "INSERT INTO schedules (id, at, agent, grp, body) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![
                id,
                sql_int(at_ms),
                envelope.to.as_str(),
                envelope.session.as_str(),
                body
            ])?;
            Ok(())
        })
    }
}

/// The message row a receipt (`"{seq}-{ulid}"`) points at. A receipt that is not ours
/// points nowhere, and deleting or releasing with it does nothing, as with any
/// receipt that is not the latest.
fn receipt_seq(receipt: &str) -> Option<i64> {
    receipt.split_once('-')?.0.parse().ok()
}

/// Forgets dedupe rows older than the window; a re-send would overwrite them anyway
/// (see [`enqueue`]), so this only keeps the table small.
fn prune_dedup(conn: &Connection, now: i64, window: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM dedup WHERE at <= ?1 - ?2")?
        .execute([now, window])
}

/// Puts one message on `agent`'s queue unless its id was accepted within the dedupe
/// window. Returns whether it was queued.
fn enqueue(
    tx: &Connection,
    agent: &str,
    id: &str,
    grp: &str,
    body: &str,
    now: i64,
    window: i64,
) -> Result<bool, Fail> {
    // Inserts a new id, or refreshes one whose window has passed; an id seen within
    // the window changes nothing, and so is a duplicate.
    let fresh = tx
        .prepare_cached(
            "INSERT INTO dedup (agent, id, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (agent, id) DO UPDATE SET at = excluded.at
             WHERE excluded.at - dedup.at >= ?4",
        )?
        .execute(params![agent, id, now, window])?;
    if fresh == 0 {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT INTO messages (agent, id, grp, body, sent_at, receive_count, visible_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?5)",
    )?
    .execute(params![agent, id, grp, body, now])?;
    Ok(true)
}

fn insert_dead_letter(
    tx: &Connection,
    agent: &str,
    body: &str,
    reason: &str,
    at: i64,
    receive_count: i64,
) -> Result<(), Fail> {
    tx.prepare_cached(
        "INSERT INTO dead_letters (agent, body, reason, at, receive_count)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![agent, body, reason, at, receive_count])?;
    Ok(())
}

fn read_task(tx: &Connection, id: &str) -> Result<Option<Task>, Fail> {
    let text: Option<String> = tx
        .prepare_cached("SELECT task FROM tasks WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(text.map(|t| decode("task", &t)).transpose()?)
}

/// Read-modify-write of a task inside the caller's transaction, through the kernel's
/// own `TaskUpdate::apply_to` so counters add and the first final status wins exactly
/// as on every other store.
fn update_task_row(
    tx: &Connection,
    id: TaskId,
    update: &TaskUpdate,
    now: u64,
) -> Result<Option<Task>, Fail> {
    let id = id.to_string();
    let Some(mut task) = read_task(tx, &id)? else {
        return Ok(None);
    };
    update.apply_to(&mut task, now);
    tx.prepare_cached("UPDATE tasks SET status = ?2, task = ?3 WHERE id = ?1")?
        .execute(params![id, task.status.as_str(), encode("task", &task)?])?;
    Ok(Some(task))
}

/// An event ready to insert: (id, at, JSON).
type EncodedEvent = (String, i64, String);

fn encode_events(events: &[Event]) -> Result<Vec<EncodedEvent>, PortError> {
    events
        .iter()
        .map(|e| Ok((e.id.to_string(), sql_int(e.at), encode("event", e)?)))
        .collect()
}

/// Appends events to a task's timeline; an event id already there is kept as it was,
/// so a re-run wake does not duplicate its timeline.
fn insert_events(tx: &Connection, task: TaskId, events: &[EncodedEvent]) -> Result<(), Fail> {
    let task = task.to_string();
    for (id, at, text) in events {
        tx.prepare_cached(
            "INSERT INTO events (task, id, at, event) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (task, id) DO NOTHING",
        )?
        .execute(params![task, id, at, text])?;
    }
    Ok(())
}

#[async_trait]
impl SessionStore for LocalStore {
    async fn load(
        &self,
        key: &SessionKey,
        task: TaskId,
        envelope: EnvelopeId,
        memory_scope: &str,
        memory_limit: usize,
    ) -> Result<Loaded, PortError> {
        self.load_now(key, task, envelope, memory_scope, memory_limit)
    }

    async fn commit(&self, commit: &Commit) -> Result<(), PortError> {
        self.commit_now(commit)
    }
}

#[async_trait]
impl TaskStore for LocalStore {
    async fn create_task(&self, task: &Task, event: &Event) -> Result<bool, PortError> {
        self.create_task_now(task, event)
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>, PortError> {
        let id = id.to_string();
        self.read(|tx| read_task(tx, &id))
    }

    async fn task_events(&self, id: TaskId) -> Result<Vec<Event>, PortError> {
        self.task_events_now(id)
    }

    async fn list_tasks(&self, query: &TaskQuery) -> Result<Vec<Task>, PortError> {
        self.list_tasks_now(query)
    }

    async fn claim_idempotency_key(
        &self,
        key: &str,
        task: TaskId,
        fingerprint: &str,
    ) -> Result<(TaskId, String), PortError> {
        self.claim_idempotency_key_now(key, task, fingerprint)
    }

    async fn update_task(
        &self,
        id: TaskId,
        update: &TaskUpdate,
        events: &[Event],
    ) -> Result<Option<Task>, PortError> {
        self.update_task_now(id, update, events)
    }
}

#[async_trait]
impl Mailbox for LocalStore {
    async fn send(&self, envelopes: &[Envelope]) -> Result<(), PortError> {
        self.send_now(envelopes)
    }

    async fn dead_letter(&self, agent: &str, body: &str, reason: &str) -> Result<(), PortError> {
        self.dead_letter_now(agent, body, reason)
    }
}

#[async_trait]
impl Inbox for LocalStore {
    async fn receive(
        &self,
        agent: &str,
        max: usize,
        visibility_ms: u64,
    ) -> Result<Vec<Received>, PortError> {
        self.receive_now(agent, max, visibility_ms)
    }

    async fn delete(&self, agent: &str, receipt: &str) -> Result<(), PortError> {
        self.delete_now(agent, receipt)
    }

    async fn delete_batch(&self, agent: &str, receipts: &[String]) -> Result<(), PortError> {
        self.delete_batch_now(agent, receipts)
    }

    async fn release(&self, agent: &str, receipt: &str, delay_ms: u64) -> Result<(), PortError> {
        self.release_now(agent, receipt, delay_ms)
    }

    async fn dead_letters(&self, agent: &str, limit: usize) -> Result<Vec<DeadLetter>, PortError> {
        self.dead_letters_now(agent, limit)
    }

    async fn redrive(&self, agent: &str, ids: Option<&[String]>) -> Result<usize, PortError> {
        self.redrive_now(agent, ids)
    }

    async fn depth(&self, agent: &str) -> Result<u64, PortError> {
        self.depth_now(agent)
    }
}

#[async_trait]
impl BlobStore for LocalStore {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), PortError> {
        self.put_now(key, bytes)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        self.get_now(key)
    }
}

#[async_trait]
impl Scheduler for LocalStore {
    async fn schedule(&self, at_ms: u64, envelope: &Envelope) -> Result<(), PortError> {
        self.schedule_now(at_ms, envelope)
    }
}
