//! The HTTP API v1 as one axum `Router`: the same app is served by `aos dev` on a
//! socket and by API Gateway through Lambda.
//!
//! Module map:
//! - [`routes`]: the route table. Every operation is one [`Route`] that carries its
//!   handler, its scope and its documentation; [`app`] builds the router from it and
//!   [`openapi`] the OpenAPI 3.1 document served at `/v1/openapi.json`.
//! - [`auth`]: bearer JWTs (tenant and scopes), checked by a gate in front of each
//!   route; [`guard`]: refuses cross-site writes and non-JSON bodies.
//! - [`problem`]: the one error shape (`application/problem+json`).
//! - [`views`]: request and response bodies and their schemas.
//! - `tasks`, `agents`, `approvals`, `schedules`: the handlers.
//! - [`dashboard`]: the web page at `/` (embedded HTML, script and style sheet, no
//!   token needed to load it; it calls the API with the token a person types in).
//!
//! The rules kept here: every route but health, the document and the dashboard's
//! static files needs a token whose scope covers it, and sees only its tenant's data
//! (another tenant's ids are 404s); every error is a problem document, 4xx saying
//! what to fix, 5xx saying nothing.

pub mod auth;
pub mod dashboard;
pub mod guard;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod views;

mod agents;
mod approvals;
mod schedules;
mod tasks;

pub use auth::{Auth, Caller, Claims, Scope};
pub use openapi::{Route, openapi};
pub use problem::{ApiError, Problem};
pub use schedules::{NewSchedule, ScheduleList};
pub use tasks::{DEFAULT_AGENT, StreamSettings};
pub use views::MAX_REQUEST_BYTES;

use aos_kernel::Kernel;
use aos_kernel::Schedules;
use aos_kernel::ports::Inbox;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub kernel: Kernel,
    /// How tokens are trusted: a local secret, or API Gateway's authorizer.
    pub auth: Arc<Auth>,
    /// For dead letters; `None` where the deployment reads DLQs elsewhere (501).
    pub inbox: Option<Arc<dyn Inbox>>,
    /// For schedules; `None` where the deployment has no schedule store (501).
    pub schedules: Option<Arc<dyn Schedules>>,
    /// How the event stream polls.
    pub stream: StreamSettings,
}

impl AppState {
    /// The API over `kernel` with `auth`, without dead letters or schedules.
    pub fn new(kernel: Kernel, auth: Auth) -> Self {
        Self {
            kernel,
            auth: Arc::new(auth),
            inbox: None,
            schedules: None,
            stream: StreamSettings::default(),
        }
    }
    pub fn with_inbox(mut self, inbox: Arc<dyn Inbox>) -> Self {
        self.inbox = Some(inbox);
        self
    }
    pub fn with_schedules(mut self, schedules: Arc<dyn Schedules>) -> Self {
        self.schedules = Some(schedules);
        self
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("auth", &self.auth)
            .field("inbox", &self.inbox.is_some())
            .field("schedules", &self.schedules.is_some())
            .finish()
    }
}

/// The API: every route of [`routes::routes`] behind its gate, the 404 fallback, the
/// body limit, the cross-site guard, and problem documents for every error.
pub fn app(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    for route in routes::routes() {
        let mut handler = route.handler;
        if let Some(scope) = route.scope {
            let gate = auth::Gate {
                auth: state.auth.clone(),
                scope,
            };
            handler = handler.route_layer(middleware::from_fn_with_state(gate, auth::gate));
        }
        router = router.route(route.path, handler);
    }
    dashboard::routes(router)
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn(guard::same_site_json))
        .layer(middleware::from_fn(problem::problem_layer))
        .with_state(state)
}
