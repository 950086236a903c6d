//! # aos-entrypoints
//!
//! The ways events enter AOS, each a thin translation from an AWS event shape to a
//! kernel call. The same functions run under Lambda and in the local runtime (which
//! builds the same event shapes itself), so `events/` fixtures replay through either.
//!
//! - [`sqs`]: an agent's SQS batch handler, with partial batch responses.
//! - [`http`]: the HTTP API as one axum `Router` (API Gateway or `aos dev`).
//! - [`schedule`]: EventBridge scheduled tasks.

pub mod http;
pub mod schedule;
pub mod sqs;

pub use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
