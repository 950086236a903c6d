//! [`DynamoStore`]: sessions, applied markers, tasks, timelines and agent memory in one
//! DynamoDB table (single-table design; see `shared/aws/README.md` for the layout).
//!
//! The wake's read is one `BatchGetItem` (session, applied marker, task, agent memory)
//! and its write is one `TransactWriteItems` of at most five actions plus one per
//! 300 KB of timeline, conditioned on the session version and on the marker not
//! existing yet. Anything too big for an item goes to S3 first and the item keeps the
//! key.

use crate::error::{is_code, sdk_error};
use crate::s3::S3Blobs;
use aos_kernel::ids::{EnvelopeId, TaskId};
use aos_kernel::model::DEFAULT_TENANT;
use aos_kernel::model::{
    Event, MemoryNote, OutboxItem, Session, SessionKey, Task, TaskStatus, TaskUpdate, Usage,
};
use aos_kernel::ports::{
    BlobStore, Clock, Commit, Loaded, PortError, SessionStore, TaskQuery, TaskStore,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem, Update};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;

type Item = HashMap<String, AttributeValue>;

/// Attribute names of the table's keys and of its one index.
pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const GSI: &str = "gsi1";
pub const GSI_PK: &str = "gsi1pk";
pub const GSI_SK: &str = "gsi1sk";
/// Epoch seconds after which DynamoDB's TTL may delete the item.
pub const TTL: &str = "ttl";

/// A value larger than this is stored in S3 and the item keeps its key (items are
/// limited to 400 KB, names and keys included).
pub const ITEM_VALUE_LIMIT: usize = 300 * 1024;
/// Applied markers outlive any redelivery of their envelope: SQS keeps a message at
/// most 14 days.
pub const APPLIED_TTL_SECS: u64 = 15 * 24 * 3600;
/// Memory notes kept per agent; older ones are compacted away once the list holds
/// twice this many.
pub const MEMORY_KEEP: usize = 128;
/// Longest memory note as stored (JSON), so the agent's memory item stays far below
/// 400 KB. The kernel's `remember` tool refuses notes over 1,000 characters first.
pub const MEMORY_NOTE_LIMIT: usize = 1536;
/// Notes removed by one compaction at most (DynamoDB expressions are at most 4 KB).
const MEMORY_COMPACT_MAX: usize = 200;

/// A task's result or error too big for its item is stored in S3, and the attribute
/// holds this prefix and the key.
const S3_REF: &str = "\u{0}aos-s3:";

const STATUSES: [TaskStatus; 6] = [
    TaskStatus::Queued,
    TaskStatus::Running,
    TaskStatus::Waiting,
    TaskStatus::Succeeded,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
];

/// Sessions, tasks, timelines and memory on DynamoDB (with S3 for oversized values).
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    blobs: S3Blobs,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn session_pk(key: &SessionKey) -> String {
    format!("S#{}#{}", key.agent, key.session)
}

fn task_pk(id: TaskId) -> String {
    format!("T#{id}")
}

/// The memory item of a scope ([`aos_kernel::model::memory_scope`]: the agent, or
/// `tenant/agent`).
fn memory_pk(scope: &str) -> String {
    format!("A#{scope}")
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, PortError> {
    serde_json::to_string(value).map_err(|e| PortError::Rejected(format!("{what}: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, PortError> {
    serde_json::from_str(text).map_err(|e| PortError::Corrupt(format!("stored {what}: {e}")))
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &Item, name: &str) -> Result<u64, PortError> {
    match item.get(name) {
        None => Ok(0),
        Some(v) => v
            .as_n()
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| PortError::Corrupt(format!("attribute {name} is not a number"))),
    }
}

/// Usage counters are attributes of their own so concurrent wakes can `ADD` to them.
const USAGE: [&str; 8] = [
    "u_wakes", "u_llm", "u_in", "u_out", "u_cost", "u_tools", "u_cread", "u_cwrite",
];

fn usage_values(u: &Usage) -> [u64; 8] {
    [
        u.wakes,
        u.llm_calls,
        u.input_tokens,
        u.output_tokens,
        u.cost_micros,
        u.tool_calls,
        u.cache_read_tokens,
        u.cache_write_tokens,
    ]
}

/// A task item: the task as JSON for its fixed fields, and attributes for what
/// changes (status, result, error, usage, updated time).
fn task_item(task: &Task) -> Result<Item, PortError> {
    let mut item = key(task_pk(task.id), "TASK");
    item.insert("doc".into(), s(encode("task", task)?));
    item.insert("status".into(), s(task.status.as_str()));
    // Top level, so listings filter by tenant on the server.
    item.insert("tenant".into(), s(task.tenant.clone()));
    item.insert(GSI_PK.into(), s(format!("TASKS#{}", task.status.as_str())));
    item.insert(GSI_SK.into(), s(task.id.to_string()));
    item.insert("updated".into(), n(task.updated_at));
    for (name, v) in USAGE.iter().zip(usage_values(&task.usage)) {
        item.insert((*name).into(), n(v));
    }
    if let Some(r) = &task.result {
        item.insert("result".into(), s(r.clone()));
    }
    if let Some(e) = &task.error {
        item.insert("error".into(), s(e.clone()));
    }
    Ok(item)
}

fn task_from_item(item: &Item) -> Result<Task, PortError> {
    let doc =
        get_s(item, "doc").ok_or_else(|| PortError::Corrupt("task item has no doc".into()))?;
    let mut task: Task = decode("task", doc)?;
    let status = get_s(item, "status").unwrap_or_default();
    task.status = TaskStatus::parse(status)
        .ok_or_else(|| PortError::Corrupt(format!("task status {status:?}")))?;
    task.result = get_s(item, "result").map(str::to_string);
    task.error = get_s(item, "error").map(str::to_string);
    task.updated_at = get_n(item, "updated")?;
    let mut u = [0u64; 8];
    for (slot, name) in u.iter_mut().zip(USAGE) {
        *slot = get_n(item, name)?;
    }
    task.usage = Usage {
        wakes: u[0],
        llm_calls: u[1],
        input_tokens: u[2],
        output_tokens: u[3],
        cost_micros: u[4],
        tool_calls: u[5],
        cache_read_tokens: u[6],
        cache_write_tokens: u[7],
    };
    Ok(task)
}

/// How much of a task update a transaction carries. A transaction fails whole when
/// one condition fails, so when the task's condition fails the update is retried with
/// less: without the status (the task is already final: the first final status
/// wins), then without the task at all (it does not exist).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TaskPart {
    Full,
    CountersOnly,
    Nothing,
}

/// The `Update` of a task item for `update`, conditioned on the task existing and, if
/// the status changes, on it not being final yet.
fn task_update(
    table: &str,
    id: TaskId,
    update: &TaskUpdate,
    now: u64,
    part: TaskPart,
) -> Result<Option<Update>, PortError> {
    if part == TaskPart::Nothing {
        return Ok(None);
    }
    let mut sets = vec!["updated = :now".to_string()];
    let mut adds = Vec::new();
    let mut values: Item = HashMap::from([(":now".to_string(), n(now))]);
    let mut names: HashMap<String, String> = HashMap::new();
    for (i, (name, v)) in USAGE.iter().zip(usage_values(&update.usage)).enumerate() {
        if v > 0 {
            adds.push(format!("{name} :u{i}"));
            values.insert(format!(":u{i}"), n(v));
        }
    }
    let mut condition = format!("attribute_exists({PK})");
    if let Some(status) = update.status
        && part == TaskPart::Full
    {
        names.insert("#st".into(), "status".into());
        sets.push("#st = :st".into());
        sets.push(format!("{GSI_PK} = :g"));
        values.insert(":st".into(), s(status.as_str()));
        values.insert(":g".into(), s(format!("TASKS#{}", status.as_str())));
        if let Some(r) = &update.result {
            sets.push("#res = :res".into());
            names.insert("#res".into(), "result".into());
            values.insert(":res".into(), s(r.clone()));
        }
        if let Some(e) = &update.error {
            sets.push("#err = :err".into());
            names.insert("#err".into(), "error".into());
            values.insert(":err".into(), s(e.clone()));
        }
        let open: Vec<String> = STATUSES
            .iter()
            .filter(|st| !st.is_final())
            .enumerate()
            .map(|(i, st)| {
                values.insert(format!(":open{i}"), s(st.as_str()));
                format!(":open{i}")
            })
            .collect();
        condition.push_str(&format!(" AND #st IN ({})", open.join(", ")));
    }
    let mut expr = format!("SET {}", sets.join(", "));
    if !adds.is_empty() {
        expr.push_str(&format!(" ADD {}", adds.join(", ")));
    }
    Update::builder()
        .key(PK, s(task_pk(id)))
        .key(SK, s("TASK"))
        .update_expression(expr)
        .condition_expression(condition)
        .set_expression_attribute_names((!names.is_empty()).then_some(names))
        .set_expression_attribute_values(Some(values))
        .table_name(table)
        .build()
        .map(Some)
        .map_err(|e| PortError::Rejected(format!("DynamoDB update: {e}")))
}

/// FNV-1a, 64 bits: names an events item after the ids it holds.
fn fnv64(parts: impl Iterator<Item = String>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Timeline events in items of at most [`ITEM_VALUE_LIMIT`] bytes each. An item's key
/// is its first event's time and a hash of its event ids, so writing the same events
/// again (a re-run wake) lands on the same item, and other events never overwrite it.
fn event_items(task: TaskId, events: &[Event]) -> Result<Vec<Item>, PortError> {
    let mut chunks: Vec<Vec<(&Event, String)>> = Vec::new();
    let mut size = 0;
    for e in events {
        let mut text = encode("event", e)?;
        if text.len() > ITEM_VALUE_LIMIT / 2 {
            // A timeline entry that big is an answer or a reason quoting a body; the
            // task keeps the full text, the timeline a preview.
            let mut short = e.clone();
            let mut end = e.detail.len().min(64 * 1024);
            while !short.detail.is_char_boundary(end) {
                end -= 1;
            }
            short.detail = format!(
                "{}… [{} bytes omitted from the timeline]",
                &e.detail[..end],
                e.detail.len() - end
            );
            text = encode("event", &short)?;
        }
        if chunks.is_empty() || size + text.len() > ITEM_VALUE_LIMIT {
            chunks.push(Vec::new());
            size = 0;
        }
        size += text.len() + 1;
        if let Some(c) = chunks.last_mut() {
            c.push((e, text));
        }
    }
    Ok(chunks
        .into_iter()
        .filter_map(|chunk| {
            let first = chunk.first()?.0;
            let hash = fnv64(chunk.iter().map(|(e, _)| e.id.to_string()));
            let mut item = key(task_pk(task), &format!("E#{:016x}#{hash:016x}", first.at));
            let texts: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
            item.insert("events".into(), s(format!("[{}]", texts.join(","))));
            Some(item)
        })
        .collect())
}

/// What a failed transaction means for the caller.
enum TxOutcome {
    Done,
    /// These actions' conditions failed.
    Failed(Vec<usize>),
}

impl DynamoStore {
    pub fn new(
        client: Client,
        table: impl Into<String>,
        blobs: S3Blobs,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            blobs,
            clock,
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Runs a transaction. A failed condition is reported by action index. A
    /// cancellation for any other reason — another transaction on the same items (the
    /// shared task item makes that common in a fan-out), throttling — is retried here
    /// with jittered backoff: the conditions are checked again, so this is safe, and it
    /// spares the kernel a re-run of the whole wake (model calls included).
    async fn transact(&self, actions: Vec<TransactWriteItem>) -> Result<TxOutcome, PortError> {
        const ATTEMPTS: u32 = 6;
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let base = 20u64 << attempt.min(6);
                let jitter = u64::from(ulid::Ulid::new().random() as u16) % base;
                tokio::time::sleep(std::time::Duration::from_millis(base / 2 + jitter)).await;
            }
            let err = match self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(TxOutcome::Done),
                Err(e) => e,
            };
            let Some(service) = err.as_service_error() else {
                return Err(sdk_error("DynamoDB TransactWriteItems", err));
            };
            match service {
                TransactWriteItemsError::TransactionCanceledException(c) => {
                    let reasons = c.cancellation_reasons();
                    let failed: Vec<usize> = reasons
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                        .map(|(i, _)| i)
                        .collect();
                    if !failed.is_empty() {
                        return Ok(TxOutcome::Failed(failed));
                    }
                    let codes: Vec<&str> = reasons
                        .iter()
                        .filter_map(|r| r.code())
                        .filter(|c| *c != "None")
                        .collect();
                    let transient = codes.iter().all(|c| {
                        matches!(
                            *c,
                            "TransactionConflict"
                                | "ThrottlingError"
                                | "ProvisionedThroughputExceeded"
                                | "RequestLimitExceeded"
                        )
                    });
                    if !transient {
                        return Err(PortError::Rejected(format!(
                            "DynamoDB TransactWriteItems cancelled: {}",
                            codes.join(", ")
                        )));
                    }
                    last = codes.join(", ");
                }
                _ if is_code(
                    service.code(),
                    &[
                        "TransactionConflictException",
                        "TransactionInProgressException",
                    ],
                ) =>
                {
                    last = service.code().unwrap_or_default().to_string();
                }
                _ => return Err(sdk_error("DynamoDB TransactWriteItems", err)),
            }
        }
        Err(PortError::Unavailable(format!(
            "DynamoDB TransactWriteItems kept being cancelled ({last}) after {ATTEMPTS} attempts"
        )))
    }

    fn put(&self, item: Item, condition: Option<&str>) -> Result<TransactWriteItem, PortError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_string))
            .build()
            .map_err(|e| PortError::Rejected(format!("DynamoDB put: {e}")))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn update_action(update: Update) -> TransactWriteItem {
        TransactWriteItem::builder().update(update).build()
    }

    /// Stores `text` in the item under `name`, or in S3 under `blob_key` (the item
    /// then keeps the key under `{name}_ref`) when it is too big for an item.
    async fn put_value(
        &self,
        item: &mut Item,
        name: &str,
        text: String,
        blob_key: impl FnOnce() -> String,
    ) -> Result<(), PortError> {
        if text.len() > ITEM_VALUE_LIMIT {
            let k = blob_key();
            self.blobs.put(&k, text.as_bytes()).await?;
            item.insert(format!("{name}_ref"), s(k));
        } else {
            item.insert(name.to_string(), s(text));
        }
        Ok(())
    }

    /// Reads a value written by [`Self::put_value`].
    async fn get_value(&self, item: &Item, name: &str) -> Result<Option<String>, PortError> {
        if let Some(text) = get_s(item, name) {
            return Ok(Some(text.to_string()));
        }
        let Some(k) = get_s(item, &format!("{name}_ref")) else {
            return Ok(None);
        };
        let bytes = self.blobs.get(k).await?.ok_or_else(|| {
            PortError::Corrupt(format!("{name} is stored at s3 key {k}, which is missing"))
        })?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| PortError::Corrupt(format!("{name} at s3 key {k} is not UTF-8")))
    }

    /// Moves a result or error too big for the task item to S3, leaving a reference.
    async fn offload_text(
        &self,
        task: TaskId,
        what: &str,
        text: &Option<String>,
    ) -> Result<Option<String>, PortError> {
        match text {
            Some(t) if t.len() > ITEM_VALUE_LIMIT / 2 => {
                let key = format!("tasks/{task}/{what}-{}", ulid::Ulid::new());
                self.blobs.put(&key, t.as_bytes()).await?;
                Ok(Some(format!("{S3_REF}{key}")))
            }
            other => Ok(other.clone()),
        }
    }

    /// The update with its result and error offloaded when too big for the item.
    async fn offload_update(
        &self,
        task: TaskId,
        update: &TaskUpdate,
    ) -> Result<TaskUpdate, PortError> {
        let mut u = update.clone();
        u.result = self.offload_text(task, "result", &update.result).await?;
        u.error = self.offload_text(task, "error", &update.error).await?;
        Ok(u)
    }

    /// Reads back a result or error stored by [`Self::offload_text`].
    async fn resolve_task(&self, mut task: Task) -> Result<Task, PortError> {
        for field in [&mut task.result, &mut task.error] {
            if let Some(key) = field.as_deref().and_then(|t| t.strip_prefix(S3_REF)) {
                let bytes = self.blobs.get(key).await?.ok_or_else(|| {
                    PortError::Corrupt(format!("task text at s3 key {key} is missing"))
                })?;
                *field = Some(String::from_utf8(bytes).map_err(|_| {
                    PortError::Corrupt(format!("task text at s3 key {key} is not UTF-8"))
                })?);
            }
        }
        Ok(task)
    }

    /// Drops the oldest notes once an agent's memory holds twice [`MEMORY_KEEP`]. The
    /// condition on the list's length makes a concurrent append win: then nothing is
    /// removed and the next load tries again.
    async fn compact_memory(&self, agent: &str, len: usize) {
        let drop = (len - MEMORY_KEEP).min(MEMORY_COMPACT_MAX);
        let removes: Vec<String> = (0..drop).map(|i| format!("notes[{i}]")).collect();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(memory_pk(agent)))
            .key(SK, s("MEMORY"))
            .update_expression(format!("REMOVE {}", removes.join(", ")))
            .condition_expression("size(notes) = :len")
            .expression_attribute_values(":len", n(len as u64))
            .send()
            .await;
        if let Err(e) = result {
            tracing::debug!(%agent, error = %e, "memory compaction skipped; will retry on a later load");
        }
    }

    async fn get_item(&self, k: Item) -> Result<Option<Item>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(k))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB GetItem", e))?;
        Ok(out.item)
    }

    /// Runs a transaction holding a task update with the fallbacks of [`TaskPart`]:
    /// when only the task's condition failed, retry with less of the update. Any
    /// other failed condition is a conflict. Returns whether the task was written
    /// (false: it does not exist; an empty transaction is not sent).
    async fn transact_with_task(
        &self,
        build: impl Fn(TaskPart) -> Result<(Vec<TransactWriteItem>, Option<usize>), PortError>,
        has_status: bool,
    ) -> Result<bool, PortError> {
        let mut part = TaskPart::Full;
        loop {
            let (actions, task_at) = build(part)?;
            if actions.is_empty() {
                return Ok(false);
            }
            match self.transact(actions).await? {
                TxOutcome::Done => return Ok(part != TaskPart::Nothing),
                TxOutcome::Failed(failed) => {
                    if task_at.is_none_or(|t| failed != [t]) {
                        return Err(PortError::Conflict);
                    }
                    part = match part {
                        TaskPart::Full if has_status => TaskPart::CountersOnly,
                        _ => TaskPart::Nothing,
                    };
                }
            }
        }
    }
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn load(
        &self,
        key_: &SessionKey,
        task: TaskId,
        envelope: EnvelopeId,
        memory_scope: &str,
        memory_limit: usize,
    ) -> Result<Loaded, PortError> {
        let spk = session_pk(key_);
        let wanted = vec![
            key(spk.clone(), "STATE"),
            key(spk.clone(), &format!("A#{envelope}")),
            key(task_pk(task), "TASK"),
            key(memory_pk(memory_scope), "MEMORY"),
        ];
        let request = KeysAndAttributes::builder()
            .set_keys(Some(wanted))
            .consistent_read(true)
            .build()
            .map_err(|e| PortError::Rejected(format!("DynamoDB BatchGetItem: {e}")))?;
        let mut items: Vec<Item> = Vec::with_capacity(4);
        let mut pending = Some(request);
        let mut attempt = 0u32;
        while let Some(request) = pending.take() {
            if attempt == 8 {
                return Err(PortError::Unavailable(
                    "DynamoDB kept returning unprocessed keys (throttled)".into(),
                ));
            }
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB BatchGetItem", e))?;
            if let Some(mut got) = out.responses
                && let Some(rows) = got.remove(&self.table)
            {
                items.extend(rows);
            }
            if let Some(rest) = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table))
                && !rest.keys().is_empty()
            {
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt.min(5))).await;
                pending = Some(rest);
                attempt += 1;
            }
        }
        let mut loaded = Loaded::default();
        for item in &items {
            let sk = get_s(item, SK).unwrap_or_default();
            if sk == "STATE" {
                let text = self
                    .get_value(item, "state")
                    .await?
                    .ok_or_else(|| PortError::Corrupt("session item has no state".into()))?;
                let mut session: Session = decode("session", &text)?;
                session.version = get_n(item, "v")?;
                loaded.session = Some(session);
            } else if sk.starts_with("A#") {
                let text = self
                    .get_value(item, "outbox")
                    .await?
                    .unwrap_or_else(|| "[]".into());
                loaded.applied = Some(decode::<Vec<OutboxItem>>("outbox", &text)?);
            } else if sk == "TASK" {
                loaded.task = Some(self.resolve_task(task_from_item(item)?).await?);
            } else if sk == "MEMORY" {
                let notes: &[AttributeValue] = item
                    .get("notes")
                    .and_then(|v| v.as_l().ok())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let skip = notes.len().saturating_sub(memory_limit);
                loaded.memory = notes[skip..]
                    .iter()
                    .map(|v| {
                        v.as_s()
                            .map_err(|_| PortError::Corrupt("memory note is not a string".into()))
                            .and_then(|t| decode::<MemoryNote>("memory note", t))
                    })
                    .collect::<Result<_, _>>()?;
                if notes.len() >= 2 * MEMORY_KEEP {
                    self.compact_memory(memory_scope, notes.len()).await;
                }
            }
        }
        Ok(loaded)
    }

    async fn commit(&self, c: &Commit) -> Result<(), PortError> {
        let spk = session_pk(&c.key);
        let now = c
            .events
            .last()
            .map(|e| e.at)
            .unwrap_or_else(|| self.clock.now_ms());
        // Values too big for an item go to S3 before the transaction; a transaction
        // that then fails leaves an unreferenced object, which the bucket's lifecycle
        // rule expires.
        let session_item = match &c.session {
            Some(session) => {
                let mut item = key(spk.clone(), "STATE");
                item.insert("v".into(), n(session.version));
                let text = encode("session", session)?;
                self.put_value(&mut item, "state", text, || {
                    // Unique per attempt: a wake that loses the race must not
                    // overwrite the winner's object.
                    format!(
                        "state/{}/{}/{}-{}",
                        c.key.agent,
                        c.key.session,
                        session.version,
                        ulid::Ulid::new()
                    )
                })
                .await?;
                Some(item)
            }
            None => None,
        };
        let mut marker = key(spk.clone(), &format!("A#{}", c.envelope));
        marker.insert(TTL.into(), n(now / 1000 + APPLIED_TTL_SECS));
        self.put_value(&mut marker, "outbox", encode("outbox", &c.outbox)?, || {
            format!(
                "outbox/{}/{}/{}-{}",
                c.key.agent,
                c.key.session,
                c.envelope,
                ulid::Ulid::new()
            )
        })
        .await?;
        let events = event_items(c.task, &c.events)?;
        let task_update_ = self.offload_update(c.task, &c.task_update).await?;
        let notes: Vec<AttributeValue> = c
            .memory
            .iter()
            .map(|m| {
                let mut note = m.clone();
                let mut text = encode("memory note", &note)?;
                if text.len() > MEMORY_NOTE_LIMIT {
                    // Only reachable past the kernel's own limit: keep what fits.
                    let cut = m
                        .text
                        .len()
                        .saturating_sub(text.len() - MEMORY_NOTE_LIMIT + 64);
                    let mut end = cut.min(m.text.len());
                    while !m.text.is_char_boundary(end) {
                        end -= 1;
                    }
                    note.text = format!("{}…", &m.text[..end]);
                    text = encode("memory note", &note)?;
                }
                Ok(s(text))
            })
            .collect::<Result<_, _>>()?;

        let build = |part: TaskPart| -> Result<(Vec<TransactWriteItem>, Option<usize>), PortError> {
            let mut actions = Vec::with_capacity(4 + events.len());
            if let Some(item) = &session_item {
                let put = if c.expected_version == 0 {
                    Put::builder().condition_expression(format!("attribute_not_exists({PK})"))
                } else {
                    Put::builder()
                        .condition_expression("v = :v")
                        .expression_attribute_values(":v", n(c.expected_version))
                };
                let put = put
                    .table_name(&self.table)
                    .set_item(Some(item.clone()))
                    .build()
                    .map_err(|e| PortError::Rejected(format!("DynamoDB put: {e}")))?;
                actions.push(TransactWriteItem::builder().put(put).build());
            }
            actions.push(self.put(marker.clone(), Some(&format!("attribute_not_exists({PK})")))?);
            let task_at = match task_update(&self.table, c.task, &task_update_, now, part)? {
                Some(u) => {
                    actions.push(Self::update_action(u));
                    Some(actions.len() - 1)
                }
                None => None,
            };
            for item in &events {
                actions.push(self.put(item.clone(), None)?);
            }
            if !notes.is_empty() {
                let update = Update::builder()
                    .table_name(&self.table)
                    .key(PK, s(memory_pk(&c.memory_scope)))
                    .key(SK, s("MEMORY"))
                    .update_expression(
                        "SET notes = list_append(if_not_exists(notes, :empty), :new)",
                    )
                    .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
                    .expression_attribute_values(":new", AttributeValue::L(notes.clone()))
                    .build()
                    .map_err(|e| PortError::Rejected(format!("DynamoDB update: {e}")))?;
                actions.push(TransactWriteItem::builder().update(update).build());
            }
            if actions.len() > 100 {
                return Err(PortError::Rejected(format!(
                    "a commit of {} actions exceeds DynamoDB's 100 per transaction",
                    actions.len()
                )));
            }
            Ok((actions, task_at))
        };
        self.transact_with_task(build, c.task_update.status.is_some())
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl TaskStore for DynamoStore {
    async fn create_task(&self, task: &Task, event: &Event) -> Result<bool, PortError> {
        let mut actions = vec![self.put(
            task_item(task)?,
            Some(&format!("attribute_not_exists({PK})")),
        )?];
        for item in event_items(task.id, std::slice::from_ref(event))? {
            actions.push(self.put(item, None)?);
        }
        match self.transact(actions).await? {
            TxOutcome::Done => Ok(true),
            TxOutcome::Failed(_) => Ok(false),
        }
    }

    async fn get_task(&self, id: TaskId) -> Result<Option<Task>, PortError> {
        match self.get_item(key(task_pk(id), "TASK")).await? {
            Some(item) => Ok(Some(self.resolve_task(task_from_item(&item)?).await?)),
            None => Ok(None),
        }
    }

    async fn task_events(&self, id: TaskId) -> Result<Vec<Event>, PortError> {
        let mut events: Vec<Event> = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :e)")
                .expression_attribute_values(":pk", s(task_pk(id)))
                .expression_attribute_values(":e", s("E#"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB Query", e))?;
            for item in out.items() {
                let text = get_s(item, "events").unwrap_or("[]");
                events.extend(decode::<Vec<Event>>("events", text)?);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        events.sort_by_key(|e| (e.at, e.id));
        // Each id once, its earliest copy (as the embedded store keeps the first).
        let mut seen = std::collections::HashSet::new();
        events.retain(|e| seen.insert(e.id));
        Ok(events)
    }

    async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<Task>, PortError> {
        let limit = q.limit;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let wanted: Vec<TaskStatus> = match q.status {
            Some(st) => vec![st],
            None => STATUSES.to_vec(),
        };
        let mut condition = format!("{GSI_PK} = :g");
        if q.before.is_some() {
            condition.push_str(&format!(" AND {GSI_SK} < :b"));
        }
        // Items written before tenants existed have no tenant: the default one.
        let filter = q.tenant.as_ref().map(|t| {
            if t == DEFAULT_TENANT {
                "attribute_not_exists(tenant) OR tenant = :t"
            } else {
                "tenant = :t"
            }
        });
        let mut tasks = Vec::new();
        for st in wanted {
            // A query returns at most 1 MB a page, and the filter applies after the
            // page's limit: follow the pages up to `limit`.
            let mut found = 0;
            let mut start: Option<Item> = None;
            loop {
                let mut query = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(GSI)
                    .key_condition_expression(&condition)
                    .expression_attribute_values(":g", s(format!("TASKS#{}", st.as_str())))
                    .scan_index_forward(false)
                    .limit(i32::try_from(limit - found).unwrap_or(i32::MAX))
                    .set_exclusive_start_key(start.take());
                if let Some(before) = q.before {
                    query = query.expression_attribute_values(":b", s(before.to_string()));
                }
                if let (Some(filter), Some(tenant)) = (filter, &q.tenant) {
                    query = query
                        .filter_expression(filter)
                        .expression_attribute_values(":t", s(tenant.clone()));
                }
                let out = query
                    .send()
                    .await
                    .map_err(|e| sdk_error("DynamoDB Query", e))?;
                for item in out.items() {
                    tasks.push(self.resolve_task(task_from_item(item)?).await?);
                    found += 1;
                }
                match out.last_evaluated_key {
                    Some(k) if !k.is_empty() && found < limit => start = Some(k),
                    _ => break,
                }
            }
        }
        tasks.sort_by_key(|t| std::cmp::Reverse(t.id));
        tasks.truncate(limit);
        Ok(tasks)
    }

    async fn claim_idempotency_key(
        &self,
        key_: &str,
        task: TaskId,
        fingerprint: &str,
    ) -> Result<(TaskId, String), PortError> {
        let pk = format!("I#{key_}");
        let mut item = key(pk.clone(), "IDEMPOTENCY");
        item.insert("task".into(), s(task.to_string()));
        item.insert("fingerprint".into(), s(fingerprint.to_string()));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(format!("attribute_not_exists({PK})"))
            .send()
            .await;
        match put {
            Ok(_) => return Ok((task, fingerprint.to_string())),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| is_code(se.code(), &["ConditionalCheckFailedException"])) => {
            }
            Err(e) => return Err(sdk_error("DynamoDB PutItem", e)),
        }
        let item = self
            .get_item(key(pk, "IDEMPOTENCY"))
            .await?
            .ok_or_else(|| PortError::Unavailable("idempotency key vanished; retry".into()))?;
        let bound = get_s(&item, "task")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| PortError::Corrupt(format!("idempotency key {key_:?}: bad task")))?;
        let first = get_s(&item, "fingerprint").unwrap_or_default().to_string();
        Ok((bound, first))
    }

    async fn update_task(
        &self,
        id: TaskId,
        update: &TaskUpdate,
        events: &[Event],
    ) -> Result<Option<Task>, PortError> {
        let now = events
            .last()
            .map(|e| e.at)
            .unwrap_or_else(|| self.clock.now_ms());
        let event_items = event_items(id, events)?;
        let update = &self.offload_update(id, update).await?;
        let build = |part: TaskPart| -> Result<(Vec<TransactWriteItem>, Option<usize>), PortError> {
            let Some(u) = task_update(&self.table, id, update, now, part)? else {
                // The task does not exist: write nothing.
                return Ok((Vec::new(), None));
            };
            let mut actions = vec![Self::update_action(u)];
            for item in &event_items {
                actions.push(self.put(item.clone(), None)?);
            }
            Ok((actions, Some(0)))
        };
        if !self
            .transact_with_task(build, update.status.is_some())
            .await?
        {
            return Ok(None);
        }
        self.get_task(id).await
    }
}
