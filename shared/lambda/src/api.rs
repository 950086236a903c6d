//! The HTTP API function: the very axum `Router` that `aos dev` serves, handed to
//! `lambda_http`, which turns API Gateway HTTP API (v2) events into requests and the
//! responses back. The rule: no route, status or body differs between the two; this
//! module only supplies the AWS ports.

use aos_entrypoints::http::{AppState, app};
use aos_kernel::Kernel;
use aos_kernel::ports::Inbox;
use std::sync::Arc;

/// The API over `kernel`, listing dead letters through `inbox` (the agents' queues).
pub fn router(kernel: Kernel, inbox: Arc<dyn Inbox>) -> axum::Router {
    app(AppState {
        kernel,
        inbox: Some(inbox),
    })
}
