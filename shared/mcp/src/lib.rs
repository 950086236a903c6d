//! Tools from remote MCP servers, as kernel [`Tool`]s. A container connects once, at
//! start-up ([`connect`]), lists each server's tools once, and registers them under
//! `<server>__<tool>`; each call then goes to the server over streamable HTTP. The
//! rule this crate keeps: what a server says about its tools decides how the kernel
//! runs them, and where it says nothing the tool is taken to have effects (MCP's own
//! defaults), so it goes through the outbox, at most once, never inline.
//!
//! Module map:
//!
//! - [`config`]: [`McpServer`], one server's address, headers and timeout (plain data).
//! - [`tool`]: [`McpTool`], naming, [`ToolMeta`](aos_kernel::tools::ToolMeta) from MCP
//!   annotations, and results as text.
//! - `session`: one session per server, reopened lazily when it is dropped.
//! - `http`: the streamable HTTP client under rmcp's transport, on the workspace's
//!   reqwest 0.12 (rmcp's own backend needs reqwest 0.13, a second HTTP stack).
//!
//! ```no_run
//! # async fn start() -> Result<(), aos_mcp::McpError> {
//! use aos_kernel::tools::ToolRegistry;
//! let servers = [aos_mcp::McpServer::new("crm", "https://mcp.example.com/mcp")
//!     .header("Authorization", "Bearer …")];
//! let mut registry = ToolRegistry::new();
//! for tool in aos_mcp::connect(&servers).await? {
//!     registry.insert(tool);
//! }
//! # Ok(()) }
//! ```

pub mod config;
mod http;
mod session;
pub mod tool;

pub use config::McpServer;
pub use tool::McpTool;

use aos_kernel::tools::Tool;
use session::Session;
use std::collections::HashMap;
use std::sync::Arc;

/// Why the tools of a server could not be had at start-up.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The configuration is wrong; nothing was sent.
    #[error("MCP server `{server}`: {reason}")]
    Config { server: String, reason: String },
    /// The server could not be reached, refused the session, or could not list its
    /// tools in time.
    #[error("MCP server `{server}` at {endpoint}: {reason}")]
    Unavailable {
        server: String,
        endpoint: String,
        reason: String,
    },
    /// Two tools end up with the same name (server `a` with tool `b__c`, server `a__b`
    /// with tool `c`).
    #[error("two MCP tools are both named `{name}`: `{first}` and `{second}` (server/tool)")]
    NameClash {
        name: String,
        first: String,
        second: String,
    },
}

/// Connects to every server at once and gives all their tools; fails if any server
/// fails, so a misconfiguration shows at start-up rather than as missing tools. A
/// caller that would rather run without an unreachable server uses
/// [`connect_server`] per server.
pub async fn connect(servers: &[McpServer]) -> Result<Vec<Arc<dyn Tool>>, McpError> {
    let mut names = std::collections::HashSet::new();
    if let Some(twice) = servers.iter().find(|s| !names.insert(s.name.as_str())) {
        return Err(McpError::Config {
            server: twice.name.clone(),
            reason: "two servers are configured under this name".into(),
        });
    }
    let per_server = futures::future::try_join_all(servers.iter().map(tools_of)).await?;
    into_tools(per_server.into_iter().flatten())
}

/// Connects to one server, lists its tools once, and gives them as kernel tools that
/// share one session.
pub async fn connect_server(server: &McpServer) -> Result<Vec<Arc<dyn Tool>>, McpError> {
    into_tools(tools_of(server).await?)
}

async fn tools_of(server: &McpServer) -> Result<Vec<McpTool>, McpError> {
    let (session, remote) = Session::connect(server).await?;
    let session = Arc::new(session);
    let tools: Vec<McpTool> = remote
        .into_iter()
        .map(|remote| McpTool::new(Arc::clone(&session), remote))
        .collect();
    tracing::info!(server = %server.name, tools = tools.len(), "MCP tools listed");
    Ok(tools)
}

/// The tools as kernel tools, refusing two under one name: the registry would keep
/// only the last, and the model would call the other one's server.
fn into_tools(tools: impl IntoIterator<Item = McpTool>) -> Result<Vec<Arc<dyn Tool>>, McpError> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut out: Vec<Arc<dyn Tool>> = Vec::new();
    for tool in tools {
        let name = tool.spec().name;
        let origin = format!("{}/{}", tool.server(), tool.remote_name());
        if let Some(first) = seen.insert(name.clone(), origin.clone()) {
            return Err(McpError::NameClash {
                name,
                first,
                second: origin,
            });
        }
        out.push(Arc::new(tool));
    }
    Ok(out)
}

/// An error and its sources, as one line: rmcp and reqwest put the useful part
/// ("connection refused") several sources deep.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
