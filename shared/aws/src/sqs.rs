//! [`SqsQueues`]: one SQS FIFO queue and one FIFO dead-letter queue per agent.
//!
//! Sends use `MessageGroupId` = session (one session's envelopes stay in order; other
//! sessions run in parallel) and `MessageDeduplicationId` = envelope id (a re-sent
//! outbox is dropped by SQS within its 5-minute window; after that the kernel's applied
//! markers drop it). Envelopes are batched per destination queue, and only the entries
//! SQS failed are retried. A message over SQS's size limit travels with its body in
//! S3.
//!
//! The consuming side ([`Inbox`]) is what Lambda's event source mapping does on AWS;
//! the local trigger loop and the tests use it against an emulator.

use crate::error::{is_code, sdk_error};
use crate::s3::S3Blobs;
use aos_kernel::model::Envelope;
use aos_kernel::ports::{BlobStore, Clock, DeadLetter, Inbox, Mailbox, PortError, Received};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// SQS's largest message (body and attributes).
pub const SQS_MESSAGE_LIMIT: usize = 256 * 1024;
/// Entries per SQS batch call.
const BATCH: usize = 10;
/// Attempts of a batch send for the entries SQS reports as failed (not the SDK's own
/// retries of a whole failed call, which come on top).
const SEND_ATTEMPTS: u32 = 5;
const REASON_ATTR: &str = "aos-reason";
const AT_ATTR: &str = "aos-at";
/// Reasons are for people; a dead letter keeps the first 4 KiB.
const REASON_LIMIT: usize = 4096;

/// Where an agent's queues are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRef {
    pub url: String,
    pub arn: String,
    /// Looked up on first use when not configured.
    pub dlq_url: Option<String>,
}

/// `arn:<partition>:sqs:<region>:<account>:<name>` for an SQS endpoint URL.
pub fn arn_from_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://sqs.")?;
    let (host, path) = rest.split_once('/')?;
    let region = host.split('.').next()?;
    let (account, name) = path.trim_end_matches('/').split_once('/')?;
    let partition = if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    };
    (!region.is_empty() && !account.is_empty() && !name.is_empty() && !name.contains('/'))
        .then(|| format!("arn:{partition}:sqs:{region}:{account}:{name}"))
}

/// How queues are found and, against an emulator, created.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    /// Queue names are `{prefix}{agent}.fifo` and `{prefix}{agent}-dlq.fifo`.
    pub prefix: String,
    /// Explicit queue URLs by agent (from `AOS_QUEUE_URL_<AGENT>`), which win over
    /// names.
    pub urls: HashMap<String, String>,
    /// Explicit dead-letter queue URLs by agent (`AOS_DLQ_URL_<AGENT>`, or
    /// `AOS_DLQ_URL` for the function's own `AOS_AGENT`).
    pub dlq_urls: HashMap<String, String>,
    /// Create missing queues (with their DLQ and redrive policy) on first use. For
    /// emulators and development; on AWS the template creates them.
    pub create_missing: bool,
    /// The redrive policy's `maxReceiveCount` for queues this adapter creates, and the
    /// count reported for messages the queue redrove.
    pub max_receives: u32,
    /// The visibility timeout of queues this adapter creates, in seconds.
    pub visibility_secs: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            prefix: "aos-".into(),
            urls: HashMap::new(),
            dlq_urls: HashMap::new(),
            create_missing: false,
            max_receives: 5,
            visibility_secs: 30,
        }
    }
}

/// Every agent's queues: the [`Mailbox`] the kernel sends through and the [`Inbox`]
/// a trigger loop receives from. Cloning shares the queue-URL cache.
#[derive(Clone)]
pub struct SqsQueues {
    client: Client,
    blobs: S3Blobs,
    settings: Arc<QueueSettings>,
    clock: Arc<dyn Clock>,
    cache: Arc<Mutex<HashMap<String, QueueRef>>>,
}

impl std::fmt::Debug for SqsQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQueues")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Milliseconds to SQS's whole seconds, rounding up so nothing is visible early.
fn secs(ms: u64) -> i32 {
    i32::try_from(ms.div_ceil(1000))
        .unwrap_or(43_200)
        .min(43_200)
}

fn string_attr(v: impl Into<String>) -> Result<MessageAttributeValue, PortError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .map_err(|e| PortError::Rejected(format!("SQS message attribute: {e}")))
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Receipt handles that are stale or unknown: the message was received again or is
/// gone, so there is nothing to delete or release.
const STALE_RECEIPT: &[&str] = &[
    "ReceiptHandleIsInvalid",
    "AWS.SimpleQueueService.MessageNotInflight",
    "MessageNotInflight",
];

/// A call on a stale or unknown receipt handle has nothing left to do: the message
/// was received again (its new receiver settles it) or is gone.
fn stale_is_done<E, R>(
    op: &str,
    e: aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> Result<(), PortError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static + crate::error::HttpStatus,
{
    if e.as_service_error()
        .is_some_and(|s| is_code(s.code(), STALE_RECEIPT))
    {
        Ok(())
    } else {
        Err(sdk_error(op, e))
    }
}

impl SqsQueues {
    pub fn new(
        client: Client,
        blobs: S3Blobs,
        settings: QueueSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            client,
            blobs,
            settings: Arc::new(settings),
            clock,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Whether missing queues are created on first use (emulators, development).
    pub fn set_create_missing(&mut self, yes: bool) {
        Arc::make_mut(&mut self.settings).create_missing = yes;
    }

    pub fn queue_name(&self, agent: &str) -> String {
        format!("{}{agent}.fifo", self.settings.prefix)
    }

    pub fn dlq_name(&self, agent: &str) -> String {
        format!("{}{agent}-dlq.fifo", self.settings.prefix)
    }

    /// The agent's queues, looked up once and cached.
    pub async fn queue(&self, agent: &str) -> Result<QueueRef, PortError> {
        if let Some(q) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(agent)
        {
            return Ok(q.clone());
        }
        let q = self.find_or_create(agent).await?;
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(agent.to_string(), q.clone());
        Ok(q)
    }

    async fn url_of(&self, name: &str) -> Result<Option<String>, PortError> {
        match self.client.get_queue_url().queue_name(name).send().await {
            Ok(out) => Ok(out.queue_url),
            Err(e) => {
                if e.as_service_error().is_some_and(|s| {
                    s.is_queue_does_not_exist()
                        || is_code(
                            s.code(),
                            &[
                                "AWS.SimpleQueueService.NonExistentQueue",
                                "QueueDoesNotExist",
                            ],
                        )
                }) {
                    Ok(None)
                } else {
                    Err(sdk_error("SQS GetQueueUrl", e))
                }
            }
        }
    }

    async fn arn_of(&self, url: &str) -> Result<String, PortError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| sdk_error("SQS GetQueueAttributes", e))?;
        out.attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| PortError::Corrupt(format!("queue {url} has no ARN")))
    }

    async fn create(
        &self,
        name: &str,
        attributes: HashMap<QueueAttributeName, String>,
    ) -> Result<String, PortError> {
        let out = self
            .client
            .create_queue()
            .queue_name(name)
            .set_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| sdk_error("SQS CreateQueue", e))?;
        out.queue_url
            .ok_or_else(|| PortError::Corrupt(format!("CreateQueue {name} returned no URL")))
    }

    async fn find_or_create(&self, agent: &str) -> Result<QueueRef, PortError> {
        let name = self.queue_name(agent);
        let dlq_name = self.dlq_name(agent);
        let explicit = self.settings.urls.get(agent).cloned();
        let explicit_dlq = self.settings.dlq_urls.get(agent).cloned();
        let url = match explicit {
            Some(url) => Some(url),
            None => self.url_of(&name).await?,
        };
        if let Some(url) = url {
            // On Lambda the URLs come from the template and the ARNs follow from them,
            // so a wake needs no lookups; the dead-letter queue is looked up when used.
            return Ok(QueueRef {
                arn: self.arn_for(&url).await?,
                url,
                dlq_url: explicit_dlq,
            });
        }
        if !self.settings.create_missing {
            return Err(PortError::Rejected(format!(
                "agent {agent} has no queue: expected SQS FIFO queues {name} and {dlq_name} \
                 (or set AOS_QUEUE_URL_{})",
                agent.to_uppercase().replace('-', "_")
            )));
        }
        let fifo = || {
            HashMap::from([
                (QueueAttributeName::FifoQueue, "true".to_string()),
                (
                    QueueAttributeName::ContentBasedDeduplication,
                    "true".to_string(),
                ),
            ])
        };
        let dlq_url = match self.url_of(&dlq_name).await? {
            Some(u) => u,
            None => {
                let mut attrs = fifo();
                attrs.insert(QueueAttributeName::MessageRetentionPeriod, "1209600".into());
                self.create(&dlq_name, attrs).await?
            }
        };
        let dlq_arn = self.arn_of(&dlq_url).await?;
        let mut attrs = fifo();
        attrs.insert(
            QueueAttributeName::VisibilityTimeout,
            self.settings.visibility_secs.to_string(),
        );
        attrs.insert(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({
                "deadLetterTargetArn": dlq_arn,
                "maxReceiveCount": self.settings.max_receives,
            })
            .to_string(),
        );
        let url = self.create(&name, attrs).await?;
        Ok(QueueRef {
            arn: self.arn_of(&url).await?,
            url,
            dlq_url: Some(dlq_url),
        })
    }

    /// The queue's ARN: from an SQS URL (`https://sqs.<region>.amazonaws.com/<account>/
    /// <name>`) without a call, else asked of the service.
    async fn arn_for(&self, url: &str) -> Result<String, PortError> {
        match arn_from_url(url) {
            Some(arn) => Ok(arn),
            None => self.arn_of(url).await,
        }
    }

    /// The URL of the agent's dead-letter queue.
    async fn dlq_url(&self, agent: &str) -> Result<String, PortError> {
        let q = self.queue(agent).await?;
        if let Some(u) = q.dlq_url {
            return Ok(u);
        }
        let name = self.dlq_name(agent);
        let url = self.url_of(&name).await?.ok_or_else(|| {
            PortError::Rejected(format!(
                "agent {agent} has no dead-letter queue {name} (or set AOS_DLQ_URL_{})",
                agent.to_uppercase().replace('-', "_")
            ))
        })?;
        if let Some(entry) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(agent)
        {
            entry.dlq_url = Some(url.clone());
        }
        Ok(url)
    }

    /// The envelope as an SQS message body, with its body moved to S3 when the
    /// message would exceed SQS's limit.
    async fn message_body(&self, envelope: &Envelope) -> Result<String, PortError> {
        let json = envelope.to_json();
        if json.len() <= SQS_MESSAGE_LIMIT - 1024 {
            return Ok(json);
        }
        let mut e = envelope.clone();
        let key = format!("bodies/{}", e.id);
        self.blobs.put(&key, e.body.as_bytes()).await?;
        e.body = String::new();
        e.body_ref = Some(key);
        let json = e.to_json();
        if json.len() > SQS_MESSAGE_LIMIT - 1024 {
            return Err(PortError::Rejected(format!(
                "envelope {} is {} bytes without its body; SQS takes {SQS_MESSAGE_LIMIT}",
                e.id,
                json.len()
            )));
        }
        Ok(json)
    }

    /// Sends envelopes to one agent's queue in batches, retrying only the entries
    /// that failed.
    async fn send_to(&self, agent: &str, envelopes: &[&Envelope]) -> Result<(), PortError> {
        let queue = self.queue(agent).await?;
        let mut entries = Vec::with_capacity(envelopes.len());
        for (i, e) in envelopes.iter().enumerate() {
            let body = self.message_body(e).await?;
            entries.push((
                body.len(),
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .message_group_id(e.session.as_str())
                    .message_deduplication_id(e.id.to_string())
                    .build()
                    .map_err(|err| PortError::Rejected(format!("SQS entry: {err}")))?,
            ));
        }
        // Batches of at most 10 entries and SQS_MESSAGE_LIMIT bytes in all.
        let mut batches: Vec<Vec<SendMessageBatchRequestEntry>> = Vec::new();
        let mut size = 0;
        for (len, entry) in entries {
            let full = batches
                .last()
                .is_none_or(|b| b.len() == BATCH || size + len > SQS_MESSAGE_LIMIT);
            if full {
                batches.push(Vec::new());
                size = 0;
            }
            size += len;
            if let Some(b) = batches.last_mut() {
                b.push(entry);
            }
        }
        for batch in batches {
            self.send_batch(&queue.url, batch).await?;
        }
        Ok(())
    }

    async fn send_batch(
        &self,
        url: &str,
        mut pending: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<(), PortError> {
        for attempt in 0..SEND_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            let out = self
                .client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(pending.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("SQS SendMessageBatch", e))?;
            let failed = out.failed();
            if failed.is_empty() {
                return Ok(());
            }
            if let Some(f) = failed.iter().find(|f| f.sender_fault()) {
                return Err(PortError::Rejected(format!(
                    "SQS refused a message: {}: {}",
                    f.code(),
                    f.message().unwrap_or_default()
                )));
            }
            tracing::debug!(
                failed = failed.len(),
                "SQS failed some batch entries; retrying them"
            );
            let ids: Vec<&str> = failed.iter().map(|f| f.id()).collect();
            pending.retain(|e| ids.contains(&e.id()));
        }
        Err(PortError::Unavailable(format!(
            "SQS kept failing {} entries after {SEND_ATTEMPTS} attempts",
            pending.len()
        )))
    }

    /// Messages in a queue (waiting, in flight and delayed).
    async fn count(&self, url: &str) -> Result<u64, PortError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| sdk_error("SQS GetQueueAttributes", e))?;
        Ok(out
            .attributes
            .unwrap_or_default()
            .values()
            .filter_map(|v| v.parse::<u64>().ok())
            .sum())
    }
}

#[async_trait]
impl Mailbox for SqsQueues {
    async fn send(&self, envelopes: &[Envelope]) -> Result<(), PortError> {
        let mut by_queue: Vec<(&str, Vec<&Envelope>)> = Vec::new();
        for e in envelopes {
            match by_queue.iter_mut().find(|(a, _)| *a == e.to.as_str()) {
                Some((_, list)) => list.push(e),
                None => by_queue.push((e.to.as_str(), vec![e])),
            }
        }
        // One batch send per destination queue, all at once.
        let sends = by_queue
            .iter()
            .map(|(agent, list)| self.send_to(agent, list));
        for result in futures::future::join_all(sends).await {
            result?;
        }
        Ok(())
    }

    async fn dead_letter(&self, agent: &str, body: &str, reason: &str) -> Result<(), PortError> {
        let dlq_url = self.dlq_url(agent).await?;
        let id = ulid::Ulid::new().to_string();
        let mut text = truncate(body, SQS_MESSAGE_LIMIT - 2 * REASON_LIMIT).to_string();
        if text.len() < body.len() {
            text.push_str(&format!(" [{} bytes omitted]", body.len() - text.len()));
        }
        if text.is_empty() {
            // SQS takes no empty bodies.
            text.push_str("(empty)");
        }
        self.client
            .send_message()
            .queue_url(&dlq_url)
            .message_body(text)
            // A group per dead letter: nothing waits behind another, and listing is
            // not held up by the FIFO group lock.
            .message_group_id(&id)
            .message_deduplication_id(&id)
            .message_attributes(REASON_ATTR, string_attr(truncate(reason, REASON_LIMIT))?)
            .message_attributes(AT_ATTR, string_attr(self.clock.now_ms().to_string())?)
            .send()
            .await
            .map_err(|e| sdk_error("SQS SendMessage (dead letter)", e))?;
        Ok(())
    }
}

impl SqsQueues {
    /// Makes received messages visible again at once (best effort: otherwise they
    /// come back when their visibility timeout ends).
    async fn show_again(&self, url: &str, receipts: &[String]) {
        for chunk in receipts.chunks(BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect::<Vec<_>>();
            if let Err(e) = self
                .client
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                tracing::warn!(error = %crate::error::display(&e), "dead letters stay hidden until their visibility timeout");
            }
        }
    }
}

fn system_attr(m: &aws_sdk_sqs::types::Message, name: MessageSystemAttributeName) -> Option<&str> {
    m.attributes()
        .and_then(|a| a.get(&name))
        .map(String::as_str)
}

#[async_trait]
impl Inbox for SqsQueues {
    async fn receive(
        &self,
        agent: &str,
        max: usize,
        visibility_ms: u64,
    ) -> Result<Vec<Received>, PortError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let queue = self.queue(agent).await?;
        let out = self
            .client
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(i32::try_from(max.min(BATCH)).unwrap_or(10))
            .visibility_timeout(secs(visibility_ms))
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| sdk_error("SQS ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| Received {
                receive_count: system_attr(&m, MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
                sent_at: system_attr(&m, MessageSystemAttributeName::SentTimestamp)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                group: system_attr(&m, MessageSystemAttributeName::MessageGroupId)
                    .unwrap_or_default()
                    .to_string(),
                receipt: m.receipt_handle.unwrap_or_default(),
                message_id: m.message_id.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
            })
            .collect())
    }

    async fn delete(&self, agent: &str, receipt: &str) -> Result<(), PortError> {
        let queue = self.queue(agent).await?;
        match self
            .client
            .delete_message()
            .queue_url(&queue.url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => stale_is_done("SQS DeleteMessage", e),
        }
    }

    async fn delete_batch(&self, agent: &str, receipts: &[String]) -> Result<(), PortError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let queue = self.queue(agent).await?;
        for chunk in receipts.chunks(BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .map_err(|e| PortError::Rejected(format!("SQS entry: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&queue.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_error("SQS DeleteMessageBatch", e))?;
            // A stale receipt fails its entry; that message was received again and
            // its new receiver settles it.
            for f in out.failed() {
                if !STALE_RECEIPT.contains(&f.code()) {
                    return Err(PortError::Unavailable(format!(
                        "SQS DeleteMessageBatch: {}: {}",
                        f.code(),
                        f.message().unwrap_or_default()
                    )));
                }
            }
        }
        Ok(())
    }

    async fn release(&self, agent: &str, receipt: &str, delay_ms: u64) -> Result<(), PortError> {
        let queue = self.queue(agent).await?;
        match self
            .client
            .change_message_visibility()
            .queue_url(&queue.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(delay_ms))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => stale_is_done("SQS ChangeMessageVisibility", e),
        }
    }

    /// Peeks at the dead-letter queue: receives up to `limit` messages and makes them
    /// visible again at once, so listing takes nothing away.
    async fn dead_letters(&self, agent: &str, limit: usize) -> Result<Vec<DeadLetter>, PortError> {
        let dlq_url = self.dlq_url(agent).await?;
        let waiting = self.count(&dlq_url).await?;
        let mut seen = Vec::new();
        let mut receipts = Vec::new();
        let mut empty = 0;
        // Each dead letter written here has its own group; messages the queue redrove
        // keep theirs, so a receive returns at most the head of each such group. A
        // short poll samples only some of SQS's servers, so an empty answer ends the
        // listing only once the queue's count is reached or after a few long polls.
        while (seen.len() as u64) < waiting && seen.len() < limit.max(1) * 2 + BATCH && empty < 3 {
            let out = self
                .client
                .receive_message()
                .queue_url(&dlq_url)
                .max_number_of_messages(10)
                .visibility_timeout(10)
                .wait_time_seconds(if empty == 0 { 0 } else { 1 })
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| sdk_error("SQS ReceiveMessage (dead letters)", e))?;
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                empty += 1;
                continue;
            }
            for m in messages {
                let attr = |name: &str| {
                    m.message_attributes()
                        .and_then(|a| a.get(name))
                        .and_then(|v| v.string_value())
                        .map(str::to_string)
                };
                let reason = attr(REASON_ATTR);
                let at = attr(AT_ATTR).and_then(|v| v.parse().ok()).or_else(|| {
                    system_attr(&m, MessageSystemAttributeName::SentTimestamp)
                        .and_then(|v| v.parse().ok())
                });
                let max = self.settings.max_receives;
                let (reason, receive_count) = match reason {
                    Some(r) => (r, 0),
                    None => (
                        format!(
                            "received {max} times without success (max receives {max}); \
                             moved by the queue's redrive policy"
                        ),
                        max,
                    ),
                };
                if let Some(r) = &m.receipt_handle {
                    receipts.push(r.clone());
                }
                seen.push(DeadLetter {
                    id: m.message_id.clone().unwrap_or_default(),
                    body: m.body.clone().unwrap_or_default(),
                    reason,
                    at: at.unwrap_or(0),
                    receive_count,
                });
            }
        }
        self.show_again(&dlq_url, &receipts).await;
        seen.sort_by_key(|d| d.at);
        seen.truncate(limit);
        Ok(seen)
    }

    /// Receives the dead-letter queue, sends each chosen message to the agent's
    /// queue (its FIFO group kept, deduplicated by the dead letter's message id, so a
    /// retry after a crash is dropped) and only then deletes it from the dead-letter
    /// queue. The others are made visible again. SQS's `StartMessageMoveTask` moves
    /// only whole queues and emulators lack it, hence this by hand.
    ///
    /// As with listing, a FIFO group's later messages wait behind its head: a dead
    /// letter queued behind one that is not chosen is found by a later redrive.
    async fn redrive(&self, agent: &str, ids: Option<&[String]>) -> Result<usize, PortError> {
        let queue = self.queue(agent).await?;
        let dlq_url = self.dlq_url(agent).await?;
        let waiting = self.count(&dlq_url).await?;
        let mut seen = 0u64;
        let mut moved = 0;
        let mut skipped = Vec::new();
        let mut empty = 0;
        let result = async {
            while seen < waiting && empty < 3 && ids.is_none_or(|ids| moved < ids.len()) {
                let out = self
                    .client
                    .receive_message()
                    .queue_url(&dlq_url)
                    .max_number_of_messages(10)
                    .visibility_timeout(30)
                    .wait_time_seconds(if empty == 0 { 0 } else { 1 })
                    .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                    .send()
                    .await
                    .map_err(|e| sdk_error("SQS ReceiveMessage (redrive)", e))?;
                let messages = out.messages.unwrap_or_default();
                if messages.is_empty() {
                    empty += 1;
                    continue;
                }
                for m in messages {
                    seen += 1;
                    let (Some(id), Some(receipt)) = (m.message_id(), m.receipt_handle()) else {
                        continue;
                    };
                    if ids.is_some_and(|ids| !ids.iter().any(|i| i == id)) {
                        skipped.push(receipt.to_string());
                        continue;
                    }
                    let group =
                        system_attr(&m, MessageSystemAttributeName::MessageGroupId).unwrap_or(id);
                    self.client
                        .send_message()
                        .queue_url(&queue.url)
                        .message_body(m.body().unwrap_or_default())
                        .message_group_id(group)
                        .message_deduplication_id(format!("redrive-{id}"))
                        .send()
                        .await
                        .map_err(|e| sdk_error("SQS SendMessage (redrive)", e))?;
                    match self
                        .client
                        .delete_message()
                        .queue_url(&dlq_url)
                        .receipt_handle(receipt)
                        .send()
                        .await
                    {
                        Ok(_) => {}
                        Err(e) => stale_is_done("SQS DeleteMessage (redrive)", e)?,
                    }
                    moved += 1;
                }
            }
            Ok::<_, PortError>(())
        }
        .await;
        self.show_again(&dlq_url, &skipped).await;
        result.map(|()| moved)
    }

    async fn depth(&self, agent: &str) -> Result<u64, PortError> {
        // An agent whose queue does not exist has nothing waiting.
        if !self.settings.create_missing
            && !self.settings.urls.contains_key(agent)
            && self.url_of(&self.queue_name(agent)).await?.is_none()
        {
            return Ok(0);
        }
        let queue = self.queue(agent).await?;
        self.count(&queue.url).await
    }
}

#[cfg(test)]
mod tests {
    use super::arn_from_url;

    #[test]
    fn arns_follow_from_sqs_urls() {
        assert_eq!(
            arn_from_url("https://sqs.eu-west-1.amazonaws.com/123456789012/aos-primary.fifo")
                .as_deref(),
            Some("arn:aws:sqs:eu-west-1:123456789012:aos-primary.fifo")
        );
        assert_eq!(
            arn_from_url("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q.fifo").as_deref(),
            Some("arn:aws-cn:sqs:cn-north-1:123456789012:q.fifo")
        );
        assert_eq!(
            arn_from_url("http://127.0.0.1:5000/123456789012/q.fifo"),
            None
        );
    }
}
