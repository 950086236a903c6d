//! One MCP session per server, shared by all of that server's tools, opened at start-up
//! and reopened lazily. The rule kept here: a call is never sent twice. A session found
//! closed before a call is replaced first; a call whose transport fails mid-way returns
//! the failure (the server may have acted on it) and only the *next* call reconnects.
//! (rmcp itself re-sends a request once when the server answers 404 for an expired
//! session, which the server has then not run.)

use crate::config::McpServer;
use crate::http::Http;
use crate::{McpError, error_chain};
use http::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    JsonObject, ProtocolVersion,
};
use rmcp::service::{ClientInitializeError, RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::common::client_side_sse::SseRetryPolicy;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ServiceExt, model::Tool as RemoteTool};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

type Client = RunningService<RoleClient, ClientConfig>;

/// A live session, or the means to open one.
pub(crate) struct Session {
    /// The configured name, which prefixes every message the model sees.
    name: String,
    url: String,
    /// `url` without query or fragment, for messages.
    endpoint: String,
    headers: HashMap<HeaderName, HeaderValue>,
    timeout: Duration,
    http: Http,
    /// `None` once a call found the session broken; the next call opens a new one.
    live: Mutex<Option<Arc<Client>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Why a call produced no result; its text is what the model reads.
#[derive(Debug)]
pub(crate) enum CallFailure {
    /// The server answered with a JSON-RPC error (unknown tool, invalid arguments).
    Refused(String),
    /// The server could not be reached, or the call did not finish in time.
    Unavailable(String),
}

impl Session {
    /// Opens the session and lists the server's tools, within the server's timeout.
    pub(crate) async fn connect(server: &McpServer) -> Result<(Self, Vec<RemoteTool>), McpError> {
        let headers = server.validate()?;
        let unavailable = |reason: String| McpError::Unavailable {
            server: server.name.clone(),
            endpoint: server.endpoint(),
            reason,
        };
        let http = Http::build(server.timeout)
            .map_err(|e| unavailable(format!("cannot build an HTTP client: {e}")))?;
        let session = Self {
            name: server.name.clone(),
            url: server.url.clone(),
            endpoint: server.endpoint(),
            headers,
            timeout: server.timeout,
            http,
            live: Mutex::new(None),
        };
        let listing = async {
            let client = session.open().await?;
            let tools = client
                .list_all_tools()
                .await
                .map_err(|e| format!("listing its tools failed: {}", service_failure(&e)))?;
            *session.live.lock().await = Some(client);
            Ok::<_, String>(tools)
        };
        let tools = tokio::time::timeout(session.timeout, listing)
            .await
            .map_err(|_| unavailable(session.late()))?
            .map_err(unavailable)?;
        Ok((session, tools))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    fn late(&self) -> String {
        format!("no answer within {} ms", self.timeout.as_millis())
    }

    /// A new session: the initialize handshake.
    async fn open(&self) -> Result<Arc<Client>, String> {
        let mut cfg = StreamableHttpClientTransportConfig::with_uri(self.url.clone());
        cfg.custom_headers = self.headers.clone();
        cfg.retry_config = Arc::new(FewRetries);
        // A 404 on a session means the server forgot it (a restart) and ran nothing:
        // rmcp opens a new session and sends the request once more.
        cfg.reinit_on_expired_session = true;
        let transport = StreamableHttpClientTransport::with_client(self.http.clone(), cfg);
        // The `initialize` handshake at the newest version that has one: rmcp's default
        // (2026-07-28, a draft) drops the handshake, and servers deployed today expect
        // it; a server on an older version answers with that one.
        let me = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("aos", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
        let client = me
            .serve(transport)
            .await
            .map_err(|e| format!("cannot open a session: {}", init_failure(&e)))?;
        Ok(Arc::new(client))
    }

    /// The live session, or a new one when there is none or it has closed.
    async fn client(&self) -> Result<Arc<Client>, String> {
        let mut live = self.live.lock().await;
        if let Some(client) = live.as_ref()
            && !client.is_closed()
            && !client.is_transport_closed()
        {
            return Ok(Arc::clone(client));
        }
        *live = None;
        tracing::info!(server = %self.name, endpoint = %self.endpoint, "opening an MCP session");
        let client = self.open().await?;
        *live = Some(Arc::clone(&client));
        Ok(client)
    }

    /// Drops `client` so the next call opens a new session, unless another call has
    /// already replaced it.
    async fn forget(&self, client: &Arc<Client>) {
        let mut live = self.live.lock().await;
        if live.as_ref().is_some_and(|c| Arc::ptr_eq(c, client)) {
            *live = None;
        }
    }

    /// Sends `tools/call` for `tool`, reconnecting first if the session is gone; the
    /// whole, reconnection included, within the server's timeout.
    pub(crate) async fn call(
        &self,
        tool: &str,
        arguments: Option<JsonObject>,
    ) -> Result<CallToolResult, CallFailure> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        if let Some(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        let attempt = async {
            let client = self.client().await.map_err(CallFailure::Unavailable)?;
            match client.call_tool(params).await {
                Ok(result) => Ok(result),
                Err(ServiceError::McpError(e)) => Err(CallFailure::Refused(e.message.into())),
                Err(e) => {
                    let reason = service_failure(&e);
                    tracing::warn!(server = %self.name, %reason, "MCP call failed; the session will be reopened");
                    self.forget(&client).await;
                    Err(CallFailure::Unavailable(format!(
                        "the call failed ({reason}); it may or may not have run"
                    )))
                }
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(CallFailure::Unavailable(format!(
                    "{}; the call may or may not have run",
                    self.late()
                )))
            })
    }
}

/// A failed handshake as the operator reads it: rmcp's transport errors name the
/// transport's Rust type, which says nothing; the cause underneath does.
fn init_failure(e: &ClientInitializeError) -> String {
    match e {
        ClientInitializeError::TransportError { error, context } => {
            format!("{context}: {}", error_chain(error.error.as_ref()))
        }
        other => error_chain(other),
    }
}

/// A failed request, as [`init_failure`] does it.
fn service_failure(e: &ServiceError) -> String {
    match e {
        ServiceError::TransportSend(error) => error_chain(error.error.as_ref()),
        other => error_chain(other),
    }
}

/// Reopening the server-to-client event stream: three tries, 0.5, 1 and 2 s apart.
/// rmcp's default retries forever, which in a frozen-and-thawed Lambda container only
/// piles up.
#[derive(Debug)]
struct FewRetries;

impl SseRetryPolicy for FewRetries {
    fn retry(&self, current_times: usize) -> Option<Duration> {
        (current_times < 3).then(|| Duration::from_millis(500 << current_times))
    }
}
