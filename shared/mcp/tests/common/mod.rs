//! The MCP server the tests talk to: rmcp's streamable HTTP server, mounted in axum on
//! 127.0.0.1 (port 0 unless told), behind a bearer token. It serves a read-only
//! `lookup_order`, a `create_ticket` with effects that numbers its tickets, an
//! unannotated `cancel_order` that always refuses, and a read-only `slow`. Every
//! `tools/call` request that reaches it is logged by name before rmcp sees it, so a
//! test can prove a call never left the client.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use aos_mcp::McpServer;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct LookupOrder {
    /// The order's id, e.g. A-1.
    order_id: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct CreateTicket {
    /// One line saying what is wrong.
    title: String,
}

#[derive(Clone)]
struct Shop {
    tool_router: ToolRouter<Shop>,
    /// `create_ticket` calls this server instance has run; numbers the tickets.
    tickets: Arc<AtomicUsize>,
}

#[tool_router]
impl Shop {
    #[tool(
        description = "Look up an order by its id.",
        annotations(read_only_hint = true)
    )]
    async fn lookup_order(
        &self,
        Parameters(LookupOrder { order_id }): Parameters<LookupOrder>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(match order_id.as_str() {
            "A-1" => CallToolResult::success(vec![
                ContentBlock::text("Order A-1: 2 items,"),
                ContentBlock::text("shipped on 2025-03-02."),
            ]),
            _ => CallToolResult::error(vec![ContentBlock::text(format!(
                "no order with id {order_id}"
            ))]),
        })
    }

    #[tool(
        description = "Open a support ticket.",
        annotations(
            read_only_hint = false,
            idempotent_hint = false,
            destructive_hint = false
        )
    )]
    async fn create_ticket(
        &self,
        Parameters(CreateTicket { title }): Parameters<CreateTicket>,
    ) -> Result<CallToolResult, ErrorData> {
        let n = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "ticket T-{n} opened: {title}"
        ))]))
    }

    #[tool(description = "Cancel an order (always refused here).")]
    async fn cancel_order(
        &self,
        Parameters(LookupOrder { order_id }): Parameters<LookupOrder>,
    ) -> Result<CallToolResult, ErrorData> {
        Err(ErrorData::invalid_request(
            format!("orders such as {order_id} cannot be cancelled here"),
            None,
        ))
    }

    #[tool(
        description = "Takes five seconds.",
        annotations(read_only_hint = true)
    )]
    async fn slow(&self) -> Result<CallToolResult, ErrorData> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(CallToolResult::success(vec![ContentBlock::text("done")]))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Shop {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// A running MCP server.
pub struct TestServer {
    pub addr: SocketAddr,
    /// `create_ticket` calls that ran, over every session.
    pub tickets: Arc<AtomicUsize>,
    /// The tool named by every `tools/call` request that reached the server, in order,
    /// whether or not the tool then accepted its arguments.
    calls: Arc<Mutex<Vec<String>>>,
    stop: Box<dyn FnOnce() + Send>,
    task: tokio::task::JoinHandle<()>,
}

/// Requests without this header get a 401.
pub const TOKEN: &str = "Bearer t0ken";

/// Largest request body the call log reads; MCP requests in these tests are tiny.
const MAX_LOGGED_BODY: usize = 1024 * 1024;

impl TestServer {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        let tickets = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let config = StreamableHttpServerConfig::default().with_sse_keep_alive(None);
        let token = config.cancellation_token.clone();
        let service: StreamableHttpService<Shop, LocalSessionManager> = StreamableHttpService::new(
            {
                let tickets = Arc::clone(&tickets);
                move || {
                    Ok(Shop {
                        tool_router: Shop::tool_router(),
                        tickets: Arc::clone(&tickets),
                    })
                }
            },
            Default::default(),
            config,
        );
        // Layers run outside in: the token check first, so only accepted requests
        // are logged.
        let app = axum::Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&calls),
                log_calls,
            ))
            .layer(axum::middleware::from_fn(require_token));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn({
            let token = token.clone();
            async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { token.cancelled_owned().await })
                    .await
                    .unwrap();
            }
        });
        Self {
            addr,
            tickets,
            calls,
            stop: Box::new(move || token.cancel()),
            task,
        }
    }

    /// This server configured as `shop`, with its token and a 5 s timeout.
    pub fn config(&self) -> McpServer {
        self.config_as("shop")
    }

    /// This server configured under `name`, with its token and a 5 s timeout.
    pub fn config_as(&self, name: &str) -> McpServer {
        McpServer::new(name, format!("http://{}/mcp", self.addr))
            .header("Authorization", TOKEN)
            .timeout(Duration::from_secs(5))
    }

    /// The server's names of the tools called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Ends every session and stops listening.
    pub async fn stop(self) {
        (self.stop)();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

async fn require_token(request: Request, next: Next) -> Response {
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|v| v == TOKEN);
    if authorized {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, "no entry").into_response()
    }
}

/// Logs the tool name of a `tools/call` request, then hands the request on unchanged.
async fn log_calls(
    State(calls): State<Arc<Mutex<Vec<String>>>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_LOGGED_BODY).await.unwrap();
    if let Ok(message) = serde_json::from_slice::<Value>(&bytes)
        && message["method"] == "tools/call"
        && let Some(name) = message["params"]["name"].as_str()
    {
        calls.lock().unwrap().push(name.to_owned());
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}
