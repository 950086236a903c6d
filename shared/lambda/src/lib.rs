//! # aos-lambda
//!
//! Everything an AOS Lambda function does, as a library tested in-process: the
//! binaries in `functions/` only call into it. The rule this crate keeps: all the
//! work of starting up (reading the environment, loading the AWS configuration,
//! fetching model keys, building clients and the kernel) happens once, before the
//! runtime asks for the first event, and every handler sorts its failures into
//! *retryable* or *terminal* for Lambda.
//!
//! Module map:
//! - [`config`]: [`Config::from_env`], one typed configuration whose errors name the
//!   variable to fix.
//! - [`assemble`]: [`load_sdk_config`] (timed) and [`build_kernel`], the kernel on
//!   the AWS adapters with the model providers, the built-in price table, the
//!   compiled-in agents, and only the tools the function links.
//! - [`sqs`]: [`SqsHandler`], an agent's deadline-aware SQS batch handler with
//!   partial batch responses and early release of retried records.
//! - [`api`]: the HTTP API router `aos dev` serves, for `lambda_http`.
//! - [`schedule`]: EventBridge Scheduler firings become tasks, one per firing.
//! - [`schedules`]: [`task_schedules`], the schedules port (EventBridge Scheduler)
//!   the api function hands to the API.
//! - [`sweep`]: the scheduled sweep (re-send queued tasks, fail overdue ones).
//! - [`error`]: [`WakeError`] and its Lambda [`Diagnostic`](lambda_runtime::Diagnostic).
//! - [`logging`]: the tracing subscriber (flat JSON lines with the wake's ids when
//!   Lambda's log format is JSON), payload-logging crates held at `debug`.
//! - [`metrics`]: one CloudWatch Embedded Metric Format record per wake, and the SDK
//!   interceptor that counts each wake's AWS calls.

pub mod api;
pub mod assemble;
pub mod config;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod schedule;
pub mod schedules;
pub mod sqs;
pub mod sweep;

pub use assemble::{Assembled, InitError, build_kernel, load_sdk_config, setup};
pub use config::{Config, ConfigError};
pub use error::WakeError;
pub use logging::init_tracing;
pub use schedules::task_schedules;
pub use sqs::{SqsHandler, run_agent};
