//! The layout of the store file and how a file is brought up to it.
//!
//! Rule: opening is idempotent and never loses data. Every table and index is created
//! with `IF NOT EXISTS`, and SQLite's `user_version` records which layout a file has, so
//! a file written by a newer build is refused with a readable error instead of being
//! misread.

use crate::LocalError;
use rusqlite::Connection;

/// The layout this build writes. Bump it, and add a step to [`prepare`], when a table
/// changes shape. A file at an older version gets the whole (idempotent) schema run
/// again, which is how new tables arrive: 2 added `task_schedules`.
pub const SCHEMA_VERSION: i64 = 2;

/// Every statement is idempotent. Values that grow large (session state, blobs) live in
/// ordinary rowid tables; small keyed rows use `WITHOUT ROWID`, so each write touches
/// one b-tree, not a table plus its key index.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    agent   TEXT NOT NULL,
    session TEXT NOT NULL,
    version INTEGER NOT NULL,
    state   TEXT NOT NULL,
    PRIMARY KEY (agent, session)
);

-- The applied marker of an envelope, holding that wake's outbox for re-sends.
-- WITHOUT ROWID: one b-tree to write per commit instead of a table and its key index.
CREATE TABLE IF NOT EXISTS applied (
    agent    TEXT NOT NULL,
    session  TEXT NOT NULL,
    envelope TEXT NOT NULL,
    outbox   TEXT NOT NULL,
    at       INTEGER NOT NULL,
    PRIMARY KEY (agent, session, envelope)
) WITHOUT ROWID;

-- status is copied out of the JSON so list_tasks can filter through an index.
CREATE TABLE IF NOT EXISTS tasks (
    id     TEXT PRIMARY KEY NOT NULL,
    status TEXT NOT NULL,
    task   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, id);

-- One b-tree keyed for dedupe; a timeline is short, so it is sorted by time on read.
CREATE TABLE IF NOT EXISTS events (
    task  TEXT NOT NULL,
    id    TEXT NOT NULL,
    at    INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (task, id)
) WITHOUT ROWID;

-- An API client's idempotency key (tenant/key) bound to the task it created and a
-- fingerprint of the request, so a retry gets the same task and a reuse is refused.
CREATE TABLE IF NOT EXISTS idempotency (
    key         TEXT PRIMARY KEY NOT NULL,
    task        TEXT NOT NULL,
    fingerprint TEXT NOT NULL
) WITHOUT ROWID;

-- seq keeps the order notes were written in; newest notes are read first.
CREATE TABLE IF NOT EXISTS memory (
    seq   INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    note  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memory_by_agent ON memory (agent, seq);

-- Every agent's FIFO queue. seq is the send order; a message is in flight while it
-- holds a receipt and visible_at is in the future. A receipt starts with the seq, so
-- delete and release find the row by its key and need no receipt index.
CREATE TABLE IF NOT EXISTS messages (
    seq           INTEGER PRIMARY KEY,
    agent         TEXT NOT NULL,
    id            TEXT NOT NULL,
    grp           TEXT NOT NULL,
    body          TEXT NOT NULL,
    sent_at       INTEGER NOT NULL,
    receive_count INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    receipt       TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_agent ON messages (agent, seq);
-- Few messages are in flight at once, so finding locked groups stays cheap however
-- long the queue is.
CREATE INDEX IF NOT EXISTS messages_in_flight ON messages (agent, visible_at, grp)
    WHERE receipt IS NOT NULL;

-- Envelope ids accepted by send within the deduplication window.
CREATE TABLE IF NOT EXISTS dedup (
    agent TEXT NOT NULL,
    id    TEXT NOT NULL,
    at    INTEGER NOT NULL,
    PRIMARY KEY (agent, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_by_time ON dedup (at);

CREATE TABLE IF NOT EXISTS dead_letters (
    seq           INTEGER PRIMARY KEY,
    agent         TEXT NOT NULL,
    body          TEXT NOT NULL,
    reason        TEXT NOT NULL,
    at            INTEGER NOT NULL,
    receive_count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_agent ON dead_letters (agent, seq);

CREATE TABLE IF NOT EXISTS blobs (
    key   TEXT PRIMARY KEY NOT NULL,
    bytes BLOB NOT NULL
);

-- Envelopes waiting for their delivery time; id is the envelope id.
CREATE TABLE IF NOT EXISTS schedules (
    id    TEXT PRIMARY KEY NOT NULL,
    at    INTEGER NOT NULL,
    agent TEXT NOT NULL,
    grp   TEXT NOT NULL,
    body  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_by_time ON schedules (at, id);

-- Task schedules (the Schedules port: cron, rate, one-time) per tenant. body is the
-- Schedule as JSON; next_at is the firing the runtime owes next, NULL when it never
-- fires again. A one-time schedule's row goes once it has fired.
CREATE TABLE IF NOT EXISTS task_schedules (
    tenant  TEXT NOT NULL,
    id      TEXT NOT NULL,
    body    TEXT NOT NULL,
    next_at INTEGER,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS task_schedules_due ON task_schedules (next_at)
    WHERE next_at IS NOT NULL;
";

/// Sets the connection up and brings the file to [`SCHEMA_VERSION`].
pub fn prepare(conn: &mut Connection, path: &str) -> Result<(), LocalError> {
    let open = |source| LocalError::Open {
        path: path.to_string(),
        source,
    };
    // Several processes (the runtime and a CLI) may share the file: wait for a
    // writer instead of failing at once.
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open)?;
    // WAL lets readers run beside the writer; NORMAL syncs at checkpoints only, which
    // in WAL mode can lose the last commits on power loss but never corrupts the file.
    // An in-memory database answers "memory" here, which is fine.
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        .map_err(open)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open)?;
    // Enough room for every statement the store prepares, so none is re-parsed.
    conn.set_prepared_statement_cache_capacity(64);

    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(open)?;
    if found > SCHEMA_VERSION {
        return Err(LocalError::NewerSchema {
            path: path.to_string(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        // Up to date: a second process (say `aos task` beside `aos dev`) writes nothing.
        return Ok(());
    }
    // Take the write lock first: a deferred transaction that reads the schema and then
    // writes gets SQLITE_BUSY at once, without the busy timeout, if another process
    // wrote in between.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(open)?;
    tx.execute_batch(SCHEMA).map_err(open)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(open)?;
    tx.commit().map_err(open)?;
    Ok(())
}
