//! `aos-aws`: the kernel's ports on AWS with the official SDK.
//!
//! | port | adapter | service |
//! |---|---|---|
//! | SessionStore, TaskStore | [`DynamoStore`] | DynamoDB, one table (S3 for oversized values) |
//! | Mailbox, Inbox | [`SqsQueues`] | SQS FIFO queue + FIFO DLQ per agent |
//! | BlobStore | [`S3Blobs`] | S3, one bucket |
//! | Scheduler | [`EventScheduler`] | EventBridge Scheduler one-time schedules |
//! | Schedules | [`EventSchedules`] | EventBridge Scheduler schedules invoking the scheduler function |
//!
//! Endpoints come from the SDK's standard configuration, so `AWS_ENDPOINT_URL` (or
//! `AWS_ENDPOINT_URL_DYNAMODB`, `_SQS`, `_S3`, `_SCHEDULER`) points everything at an
//! emulator with no code change. [`CallCounter`] counts calls per operation.

mod counter;
mod dynamo;
pub mod emulator;
mod error;
mod provision;
mod s3;
mod scheduler;
mod schedules;
mod sqs;

pub use aws_sdk_dynamodb;
pub use aws_sdk_sqs;
pub use counter::{CallCounter, CallCounts};
pub use dynamo::{
    APPLIED_TTL_SECS, DynamoStore, GSI, GSI_PK, GSI_SK, ITEM_VALUE_LIMIT, MEMORY_KEEP,
    MEMORY_NOTE_LIMIT, PK, SK, TTL,
};
pub use provision::provision;
pub use s3::S3Blobs;
pub use scheduler::{EventScheduler, at_expression, parse_at_expression, schedule_name};
pub use schedules::{EventSchedules, TaskScheduleSettings};
pub use sqs::{QueueRef, QueueSettings, SQS_MESSAGE_LIMIT, SqsQueues, arn_from_url};

use aos_kernel::ports::Clock;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Names of the AWS resources, from the environment the SAM template sets.
#[derive(Clone, Debug)]
pub struct AwsSettings {
    /// `AOS_TABLE`
    pub table: String,
    /// `AOS_BUCKET`
    pub bucket: String,
    /// `AOS_SCHEDULE_GROUP`
    pub schedule_group: String,
    /// `AOS_SCHEDULER_ROLE_ARN`: the role EventBridge Scheduler assumes to send to
    /// the queues.
    pub scheduler_role_arn: String,
    pub queues: QueueSettings,
    /// Where task schedules (the `Schedules` port) live and what they invoke.
    pub task_schedules: TaskScheduleSettings,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            table: "aos".into(),
            bucket: "aos-blobs".into(),
            schedule_group: "aos".into(),
            scheduler_role_arn: "arn:aws:iam::123456789012:role/aos-scheduler".into(),
            queues: QueueSettings::default(),
            task_schedules: TaskScheduleSettings::default(),
        }
    }
}

impl AwsSettings {
    /// Reads `AOS_TABLE`, `AOS_BUCKET`, `AOS_SCHEDULE_GROUP`,
    /// `AOS_SCHEDULER_ROLE_ARN`, `AOS_QUEUE_PREFIX` and `AOS_QUEUE_URL_<AGENT>`
    /// (agent upper-cased, `-` as `_`), and for task schedules
    /// `AOS_TASK_SCHEDULE_GROUP`, `AOS_SCHEDULER_FUNCTION_ARN`,
    /// `AOS_TASK_SCHEDULE_ROLE_ARN` and `AOS_SCHEDULE_DLQ_ARN`, with defaults for the
    /// rest.
    pub fn from_env() -> Self {
        let d = Self::default();
        let var = |k: &str, default: String| std::env::var(k).unwrap_or(default);
        let by_agent = |prefix: &str| -> HashMap<String, String> {
            // Environment names cannot hold `-`: MY_AGENT stands for my-agent and
            // for my_agent alike.
            std::env::vars()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|a| (a.to_lowercase(), v)))
                .flat_map(|(a, v)| [(a.replace('_', "-"), v.clone()), (a, v)])
                .collect()
        };
        let urls = by_agent("AOS_QUEUE_URL_");
        let mut dlq_urls = by_agent("AOS_DLQ_URL_");
        if let (Ok(agent), Ok(url)) = (std::env::var("AOS_AGENT"), std::env::var("AOS_DLQ_URL")) {
            dlq_urls.entry(agent).or_insert(url);
        }
        Self {
            table: var("AOS_TABLE", d.table),
            bucket: var("AOS_BUCKET", d.bucket),
            schedule_group: var("AOS_SCHEDULE_GROUP", d.schedule_group),
            scheduler_role_arn: var("AOS_SCHEDULER_ROLE_ARN", d.scheduler_role_arn),
            queues: QueueSettings {
                prefix: var("AOS_QUEUE_PREFIX", d.queues.prefix),
                urls,
                dlq_urls,
                ..d.queues
            },
            task_schedules: TaskScheduleSettings {
                group: var("AOS_TASK_SCHEDULE_GROUP", d.task_schedules.group),
                target_arn: var("AOS_SCHEDULER_FUNCTION_ARN", d.task_schedules.target_arn),
                role_arn: var("AOS_TASK_SCHEDULE_ROLE_ARN", d.task_schedules.role_arn),
                dead_letter_arn: std::env::var("AOS_SCHEDULE_DLQ_ARN")
                    .ok()
                    .filter(|v| !v.is_empty()),
            },
        }
    }
}

/// Retries for throttling, 5xx and transient network failures: the SDK's standard
/// mode (exponential backoff with jitter, a retry token bucket), 5 attempts.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(5)
        .with_initial_backoff(Duration::from_millis(50))
        .with_max_backoff(Duration::from_secs(5))
}

/// Loads the SDK's standard configuration (environment, profile, IMDS), with AOS's
/// retry and timeout settings. When `AWS_ENDPOINT_URL` is set and no credentials are,
/// static dummy credentials and `us-east-1` are used: emulators accept any.
pub async fn load_sdk_config() -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(20))
                .build(),
        );
    let emulated = std::env::var_os("AWS_ENDPOINT_URL").is_some();
    if emulated && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            "aos-emulator",
            "aos-emulator",
            None,
            None,
            "aos-emulator",
        ));
    }
    if emulated
        && std::env::var_os("AWS_REGION").is_none()
        && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        loader = loader.region(aws_config::Region::new("us-east-1"));
    }
    loader.load().await
}

/// The SDK configuration for an emulator at `endpoint`: dummy credentials,
/// `us-east-1`, AOS's retries.
pub async fn emulator_sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "aos-emulator",
            "aos-emulator",
            None,
            None,
            "aos-emulator",
        ))
        .retry_config(retry_config())
        .load()
        .await
}

/// The SDK clients, each with the call counter attached.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub counter: CallCounter,
}

impl AwsClients {
    pub fn new(config: &SdkConfig) -> Self {
        let counter = CallCounter::new();
        // An endpoint override is an emulator on a host name that is not a bucket's.
        let path_style = config.endpoint_url().is_some();
        Self {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(config)
                    .interceptor(counter.clone())
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(config)
                    .interceptor(counter.clone())
                    .build(),
            ),
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(config)
                    .force_path_style(path_style)
                    .interceptor(counter.clone())
                    .build(),
            ),
            scheduler: aws_sdk_scheduler::Client::from_conf(
                aws_sdk_scheduler::config::Builder::from(config)
                    .interceptor(counter.clone())
                    .build(),
            ),
            counter,
        }
    }
}

/// Every port on AWS, sharing clients and the call counter.
#[derive(Clone, Debug)]
pub struct AwsBackend {
    pub clients: AwsClients,
    pub settings: AwsSettings,
    pub store: DynamoStore,
    pub queues: SqsQueues,
    pub blobs: S3Blobs,
    pub scheduler: EventScheduler,
    /// Task schedules (cron, rate, one-time) that invoke the scheduler function.
    pub schedules: EventSchedules,
}

impl AwsBackend {
    pub fn new(clients: AwsClients, settings: AwsSettings, clock: Arc<dyn Clock>) -> Self {
        let blobs = S3Blobs::new(clients.s3.clone(), settings.bucket.clone());
        let queues = SqsQueues::new(
            clients.sqs.clone(),
            blobs.clone(),
            settings.queues.clone(),
            clock.clone(),
        );
        let store = DynamoStore::new(
            clients.dynamodb.clone(),
            settings.table.clone(),
            blobs.clone(),
            clock.clone(),
        );
        let scheduler = EventScheduler::new(
            clients.scheduler.clone(),
            queues.clone(),
            blobs.clone(),
            settings.schedule_group.clone(),
            settings.scheduler_role_arn.clone(),
            clock.clone(),
        );
        let schedules =
            EventSchedules::new(clients.scheduler.clone(), settings.task_schedules.clone());
        Self {
            clients,
            settings,
            store,
            queues,
            blobs,
            scheduler,
            schedules,
        }
    }

    /// From the environment: the SDK's configuration and [`AwsSettings::from_env`].
    pub async fn from_env(clock: Arc<dyn Clock>) -> Self {
        let config = load_sdk_config().await;
        Self::new(AwsClients::new(&config), AwsSettings::from_env(), clock)
    }

    pub fn counter(&self) -> &CallCounter {
        &self.clients.counter
    }
}
