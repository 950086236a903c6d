//! The HTTP API function: the very axum `Router` that `aos dev` serves, handed to
//! `lambda_http`, which turns API Gateway HTTP API (v2) events into requests and the
//! responses back. The rule: no route, status or body differs between the two; this
//! module only supplies the AWS ports and says how tokens are trusted here: the HTTP
//! API's JWT authorizer has verified the signature, issuer, audience and expiry
//! before the function runs, so the API reads the claims it passes on (tenant,
//! scope) from the request context and still checks them on every route. A request
//! that did not come through the authorizer carries no claims and gets a 401.

use aos_entrypoints::http::{AppState, Auth, StreamSettings, app};
use aos_kernel::Kernel;
use aos_kernel::ports::Inbox;
use aos_kernel::schedules::Schedules;
use std::sync::Arc;
use std::time::Duration;

/// Longest an event stream stays open: API Gateway buffers a Lambda's response and
/// gives up on it after 30 s, so the stream ends before that and the client
/// reconnects with `Last-Event-ID`.
pub const STREAM_MAX: Duration = Duration::from_secs(25);

/// The API over `kernel`, with dead letters through `inbox` (the agents' queues) and
/// no schedules.
pub fn router(kernel: Kernel, inbox: Arc<dyn Inbox>) -> axum::Router {
    router_with(kernel, inbox, None)
}

/// The API over `kernel`, with dead letters through `inbox` and schedules through
/// `schedules` (`None`: the schedule routes answer 501).
pub fn router_with(
    kernel: Kernel,
    inbox: Arc<dyn Inbox>,
    schedules: Option<Arc<dyn Schedules>>,
) -> axum::Router {
    let mut state = AppState::new(kernel, Auth::ApiGateway).with_inbox(inbox);
    if let Some(s) = schedules {
        state = state.with_schedules(s);
    }
    state.stream = StreamSettings {
        max: STREAM_MAX,
        ..StreamSettings::default()
    };
    app(state)
}
