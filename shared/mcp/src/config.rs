//! [`McpServer`]: where one MCP server is and how to reach it. Plain data: the caller
//! fills it (from its own typed configuration); this crate never reads the
//! environment. The rule kept here: a configuration is checked whole before anything
//! is sent, and header values (credentials) never appear in `Debug` output or errors.

use crate::McpError;
use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::time::Duration;

/// Longest server name: it prefixes every tool name, which providers cap at 64.
pub const MAX_SERVER_NAME: usize = 24;

/// Headers the transport sets itself; a configured one would fight it.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "content-type",
    "content-length",
    "host",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// One remote MCP server, spoken to over streamable HTTP.
#[derive(Clone, PartialEq, Eq)]
pub struct McpServer {
    /// Prefix of its tools' names (`<name>__<tool>`), so two servers' `search` tools
    /// stay apart: ASCII letters, digits, `_` and `-`, at most [`MAX_SERVER_NAME`].
    pub name: String,
    /// The streamable HTTP endpoint, e.g. `https://mcp.example.com/mcp`.
    pub url: String,
    /// Sent with every request, e.g. `("Authorization", "Bearer …")`. Never logged.
    pub headers: Vec<(String, String)>,
    /// Longest a connection (initialize and tool listing) or one tool call may take;
    /// also each tool's [`ToolMeta::timeout_ms`](aos_kernel::tools::ToolMeta).
    pub timeout: Duration,
}

impl McpServer {
    /// A server with no headers and a 30 s timeout.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            headers: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Adds a header sent with every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL without its query and fragment, which may carry secrets: for messages.
    pub(crate) fn endpoint(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(mut url) => {
                url.set_query(None);
                url.set_fragment(None);
                url.to_string()
            }
            Err(_) => "<invalid URL>".into(),
        }
    }

    /// Checks the whole configuration; gives the headers ready to send, values marked
    /// sensitive so `http`'s own `Debug` hides them.
    pub(crate) fn validate(&self) -> Result<HashMap<HeaderName, HeaderValue>, McpError> {
        let bad = |reason: String| McpError::Config {
            server: self.name.clone(),
            reason,
        };
        if self.name.is_empty()
            || self.name.len() > MAX_SERVER_NAME
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(bad(format!(
                "the server name must be 1 to {MAX_SERVER_NAME} ASCII letters, digits, `_` or `-`"
            )));
        }
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| bad(format!("the URL does not parse ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!(
                "the URL's scheme is `{}`; streamable HTTP needs http or https",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "the URL carries credentials; send them as a header (e.g. Authorization) instead"
                    .into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(bad("the timeout is zero".into()));
        }
        let mut headers = HashMap::new();
        for (name, value) in &self.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(format!("`{name}` is not a valid header name")))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(bad(format!(
                    "the header `{name}` is set by the transport and cannot be configured"
                )));
            }
            // The value is left out of the message: it is likely a credential.
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| bad(format!("the value of header `{name}` is not valid")))?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        Ok(headers)
    }
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, _)| format!("{name}: <redacted>"))
            .collect();
        f.debug_struct("McpServer")
            .field("name", &self.name)
            .field("url", &self.endpoint())
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reason(server: &McpServer) -> String {
        match server.validate() {
            Err(McpError::Config { reason, .. }) => reason,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn a_good_configuration_gives_its_headers_marked_sensitive() {
        let server = McpServer::new("crm", "https://mcp.example.com/mcp")
            .header("Authorization", "Bearer s3cret");
        let headers = server.validate().unwrap();
        let value = &headers[&HeaderName::from_static("authorization")];
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Bearer s3cret");
    }

    #[test]
    fn bad_configurations_say_what_is_wrong() {
        assert!(reason(&McpServer::new("", "https://x/mcp")).contains("server name"));
        assert!(reason(&McpServer::new("my crm", "https://x/mcp")).contains("server name"));
        assert!(reason(&McpServer::new("a".repeat(25), "https://x/mcp")).contains("1 to 24"));
        assert!(reason(&McpServer::new("crm", "not a url")).contains("does not parse"));
        assert!(reason(&McpServer::new("crm", "ftp://x/mcp")).contains("`ftp`"));
        assert!(reason(&McpServer::new("crm", "https://u:p@x/mcp")).contains("credentials"));
        assert!(
            reason(&McpServer::new("crm", "https://x/mcp").timeout(Duration::ZERO))
                .contains("timeout")
        );
        assert!(
            reason(&McpServer::new("crm", "https://x/mcp").header("Mcp-Session-Id", "1"))
                .contains("set by the transport")
        );
        assert!(
            reason(&McpServer::new("crm", "https://x/mcp").header("bad header", "1"))
                .contains("not a valid header name")
        );
        let err = reason(&McpServer::new("crm", "https://x/mcp").header("X-Key", "a\nb"));
        assert!(err.contains("X-Key") && !err.contains("a\nb"));
    }

    #[test]
    fn debug_output_hides_header_values_and_the_query() {
        let server = McpServer::new("crm", "https://x.example/mcp?token=abc")
            .header("Authorization", "Bearer s3cret");
        let shown = format!("{server:?}");
        assert!(shown.contains("Authorization: <redacted>"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("abc"),
            "{shown}"
        );
    }
}
