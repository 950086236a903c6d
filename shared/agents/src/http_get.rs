//! `http_get`: fetches one URL and gives the model its text. The rule it keeps: it only
//! ever talks to hosts an operator allowed ([`HostAllowList`]: exact hosts, and
//! `*.example.com` for the subdomains of one), over http or https, with no credentials
//! in the URL; a redirect is followed only to an allowed host, and each hop is checked
//! before it is sent. With no host allowed, every URL is refused with an error saying
//! how to allow one. What comes back is bounded: the whole fetch within the timeout,
//! the body cut at [`MAX_BODY_BYTES`] (and said so), and text only (any other content
//! type is named, not shown).

use crate::ToolsConfig;
use aos_kernel::llm::ToolSpec;
use aos_kernel::tools::{Tool, ToolContext, ToolError, ToolMeta, parse_args, schema_of};
use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The tool's name, as agent definitions list it.
pub const NAME: &str = "http_get";
/// Most body bytes given to the model; the rest is not downloaded.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most redirects followed for one fetch.
pub const MAX_REDIRECTS: usize = 5;
/// Longest URL accepted.
const MAX_URL_CHARS: usize = 2048;
/// Body bytes shown with an error status: enough for an API's error message.
const ERROR_EXCERPT_BYTES: usize = 1024;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Args {
    /// The absolute http or https URL to fetch, e.g. "https://api.example.com/v1/status".
    url: String,
}

/// The hosts `http_get` may reach. Patterns are exact hosts (`api.example.com`,
/// `127.0.0.1`, `[::1]`) or `*.example.com`, which allows every subdomain of
/// `example.com` but not `example.com` itself (list both for both). Any port of an
/// allowed host is allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAllowList {
    /// Normalized hosts (lowercase, IDNA as ASCII, IPv6 in brackets).
    exact: Vec<String>,
    /// `.example.com` for `*.example.com`.
    suffixes: Vec<String>,
}

impl HostAllowList {
    /// Parses the patterns; the error names the first bad one and why.
    pub fn parse(patterns: &[String]) -> Result<Self, String> {
        let mut list = Self::default();
        for raw in patterns {
            let pattern = raw.trim();
            let (wildcard, host) = match pattern.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, pattern),
            };
            let bad = |why: &str| format!("http_get allow-list entry `{raw}`: {why}");
            if host.is_empty() || host.contains('*') {
                return Err(bad(
                    "use an exact host or `*.example.com`; no other wildcard is accepted",
                ));
            }
            let url = Url::parse(&format!("http://{host}/"))
                .map_err(|e| bad(&format!("not a host name ({e})")))?;
            if url.port().is_some()
                || url.path() != "/"
                || url.query().is_some()
                || url.fragment().is_some()
                || !url.username().is_empty()
                || url.password().is_some()
            {
                return Err(bad(
                    "only a host name is expected: no scheme, port, path or credentials",
                ));
            }
            let Some(normalized) = url.host_str().map(normalize_host) else {
                return Err(bad("not a host name"));
            };
            if wildcard {
                list.suffixes.push(format!(".{normalized}"));
            } else {
                list.exact.push(normalized);
            }
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    /// `host` as a parsed URL gives it (`Url::host_str`).
    pub fn allows(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.exact.contains(&host)
            || self
                .suffixes
                .iter()
                .any(|s| host.len() > s.len() && host.ends_with(s.as_str()))
    }

    /// The patterns, for messages.
    fn describe(&self) -> String {
        self.exact
            .iter()
            .cloned()
            .chain(self.suffixes.iter().map(|s| format!("*{s}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Lowercase and without the DNS root's trailing dot, so `Example.com.` is `example.com`.
fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The `http_get` tool. Cheap to clone; holds the shared HTTP client.
#[derive(Clone, Debug)]
pub struct HttpGetTool {
    /// The parsed allow-list, or why the configured one is unusable (then every URL is
    /// refused with that reason, so the operator sees it).
    allow: Result<HostAllowList, String>,
    /// Must not follow redirects by itself: each hop is checked here.
    client: Option<reqwest::Client>,
    /// For the whole fetch, redirects included.
    timeout: Duration,
}

impl HttpGetTool {
    /// The tool over `cfg.http_allow` and `cfg.timeout`, with its own client (no
    /// automatic redirects, unlike the weather tool's).
    pub fn new(cfg: &ToolsConfig) -> Self {
        let allow = HostAllowList::parse(&cfg.http_allow);
        if let Err(e) = &allow {
            tracing::error!(error = %e, "http_get refuses every URL until its allow-list is fixed");
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.timeout)
            .user_agent(concat!("aos-agents/", env!("CARGO_PKG_VERSION")))
            .build();
        let client = match client {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client; http_get refuses every URL");
                None
            }
        };
        Self {
            allow,
            client,
            timeout: cfg.timeout,
        }
    }

    /// Fetches `url` and gives the text the model reads.
    pub async fn fetch(&self, url: &str) -> Result<String, ToolError> {
        let allow = self.allow.as_ref().map_err(|e| ToolError(e.clone()))?;
        if allow.is_empty() {
            return Err(ToolError(format!(
                "{NAME} is switched off: no host is allowed. An operator allows hosts in \
                 `ToolsConfig::http_allow`, as exact hosts (`api.example.com`) or \
                 `*.example.com` for every subdomain of one."
            )));
        }
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| ToolError(format!("{NAME}: no HTTP client is available")))?;
        let url = url.trim();
        if url.chars().count() > MAX_URL_CHARS {
            return Err(ToolError(format!(
                "{NAME}: the URL is longer than {MAX_URL_CHARS} characters"
            )));
        }
        let mut current = Url::parse(url)
            .map_err(|e| ToolError(format!("{NAME}: `{url}` is not an absolute URL ({e})")))?;
        check(allow, &current).map_err(|r| ToolError(format!("{NAME}: {r}")))?;
        let deadline = Instant::now() + self.timeout;
        let mut hops = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.late(&current));
            }
            let response = client
                .get(current.clone())
                .timeout(remaining)
                .send()
                .await
                .map_err(|e| self.failed(&current, e))?;
            let status = response.status();
            if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                let next = redirect_target(&current, &response)?;
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(ToolError(format!(
                        "{NAME}: more than {MAX_REDIRECTS} redirects from {url}"
                    )));
                }
                check(allow, &next).map_err(|r| {
                    ToolError(format!(
                        "{NAME}: {current} redirects to {next}, which is refused: {r}"
                    ))
                })?;
                current = next;
                continue;
            }
            return self.read(&current, status, response).await;
        }
    }

    async fn read(
        &self,
        url: &Url,
        status: StatusCode,
        mut response: reqwest::Response,
    ) -> Result<String, ToolError> {
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let length = response.content_length();
        if let Some(ct) = content_type.as_deref().filter(|ct| !is_text(ct)) {
            let size = length.map(|n| format!(", {n} bytes")).unwrap_or_default();
            return Err(ToolError(format!(
                "{NAME}: {url} answered HTTP {status} with `{ct}` content{size}; \
                 {NAME} reads text only"
            )));
        }
        let cap = if status.is_success() {
            MAX_BODY_BYTES
        } else {
            ERROR_EXCERPT_BYTES
        };
        let mut body = Vec::new();
        let mut cut = false;
        while let Some(chunk) = response.chunk().await.map_err(|e| self.failed(url, e))? {
            let room = cap - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                cut = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let text = match std::str::from_utf8(&body) {
            Ok(text) => text.to_owned(),
            // A cut can split a character: drop its first bytes.
            Err(e) if cut && e.error_len().is_none() => {
                String::from_utf8_lossy(&body[..e.valid_up_to()]).into_owned()
            }
            Err(_) if content_type.is_none() => {
                return Err(ToolError(format!(
                    "{NAME}: {url} answered HTTP {status} with binary content of no stated \
                     type; {NAME} reads text only"
                )));
            }
            Err(_) => String::from_utf8_lossy(&body).into_owned(),
        };
        let content_type = content_type.unwrap_or_else(|| "no content type".into());
        if !status.is_success() {
            let more = if cut { " …" } else { "" };
            return Err(ToolError(format!(
                "{NAME}: {url} answered HTTP {status} ({content_type}): {}{more}",
                text.trim()
            )));
        }
        let mut out = format!("HTTP {status} from {url} ({content_type})\n\n{text}");
        if cut {
            let size = match length {
                Some(n) => format!("is {n} bytes"),
                None => format!("is over {} KiB", MAX_BODY_BYTES / 1024),
            };
            out.push_str(&format!(
                "\n\n[cut: the body {size}; only the first {} KiB are shown]",
                MAX_BODY_BYTES / 1024
            ));
        }
        Ok(out)
    }

    fn late(&self, url: &Url) -> ToolError {
        ToolError(format!(
            "{NAME}: {url} did not answer within {} ms",
            self.timeout.as_millis()
        ))
    }

    fn failed(&self, url: &Url, e: reqwest::Error) -> ToolError {
        if e.is_timeout() {
            return self.late(url);
        }
        // Without the URL, which the message already names once.
        let e = e.without_url();
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        ToolError(format!("{NAME}: fetching {url} failed: {reason}"))
    }
}

/// A URL `http_get` may send: http or https, no credentials, an allowed host. The
/// error is the reason alone; callers say which URL.
fn check(allow: &HostAllowList, url: &Url) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "only http and https URLs are fetched, not `{}`",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URLs with credentials (user:password@) are refused".into());
    }
    let host = url.host_str().unwrap_or_default();
    if !allow.allows(host) {
        return Err(format!(
            "the host `{host}` is not allowed; allowed: {}",
            allow.describe()
        ));
    }
    Ok(())
}

/// Where a redirect points, resolved against the URL that gave it.
fn redirect_target(from: &Url, response: &reqwest::Response) -> Result<Url, ToolError> {
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ToolError(format!(
                "{NAME}: {from} answered HTTP {} without a usable Location",
                response.status()
            ))
        })?;
    from.join(location).map_err(|e| {
        ToolError(format!(
            "{NAME}: {from} redirects to `{location}`, which is not a URL ({e})"
        ))
    })
}

/// Text a model can read: `text/*`, JSON, XML, YAML, CSV, JavaScript and their kin.
fn is_text(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind == "text"
        || sub.ends_with("+json")
        || sub.ends_with("+xml")
        || (kind == "application"
            && matches!(
                sub,
                "json"
                    | "xml"
                    | "javascript"
                    | "ecmascript"
                    | "x-javascript"
                    | "yaml"
                    | "x-yaml"
                    | "csv"
                    | "x-ndjson"
                    | "x-www-form-urlencoded"
                    | "graphql"
            ))
}

#[async_trait]
impl Tool for HttpGetTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: NAME.into(),
            description: format!(
                "Fetch one URL with HTTP GET and read its text (HTML, JSON, plain text, XML). \
                 Only hosts on the operator's allow-list can be reached; the error says which \
                 are. Bodies over {} KiB are cut, and say so; other content (images, PDFs) \
                 is named but not shown.",
                MAX_BODY_BYTES / 1024
            ),
            input_schema: schema_of::<Args>(),
        }
    }

    fn meta(&self) -> ToolMeta {
        // A GET changes nothing; a margin over our own deadline lets our message win.
        ToolMeta {
            timeout_ms: u64::try_from(self.timeout.as_millis())
                .unwrap_or(u64::MAX)
                .saturating_add(1_000),
            idempotent: true,
            read_only: true,
            ..ToolMeta::default()
        }
    }

    async fn call(&self, input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        let args: Args = parse_args(NAME, input, &schema_of::<Args>())?;
        self.fetch(&args.url).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> HostAllowList {
        HostAllowList::parse(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn host(url: &str) -> String {
        Url::parse(url).unwrap().host_str().unwrap().to_owned()
    }

    #[test]
    fn exact_hosts_match_only_themselves() {
        let allow = list(&["api.example.com", "127.0.0.1", "[::1]"]);
        assert!(allow.allows(&host("https://api.example.com/x")));
        assert!(allow.allows(&host("https://API.Example.com./x")));
        assert!(allow.allows(&host("http://127.0.0.1:8080/")));
        assert!(allow.allows(&host("http://[::1]:8080/")));
        assert!(!allow.allows(&host("https://example.com/")));
        assert!(!allow.allows(&host("https://x.api.example.com/")));
        assert!(!allow.allows(&host("https://api.example.com.evil.net/")));
        assert!(!allow.allows(&host("http://127.0.0.2/")));
    }

    #[test]
    fn a_wildcard_matches_subdomains_only() {
        let allow = list(&["*.Example.com"]);
        assert!(allow.allows(&host("https://a.example.com/")));
        assert!(allow.allows(&host("https://a.b.example.com/")));
        assert!(!allow.allows(&host("https://example.com/")));
        assert!(!allow.allows(&host("https://badexample.com/")));
        assert!(!allow.allows(&host("https://example.com.evil.net/")));
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in [
            "*",
            "*.",
            "a*.example.com",
            "https://example.com",
            "example.com:8080",
            "example.com/path",
            "user@example.com",
            "",
        ] {
            let err = HostAllowList::parse(&[bad.to_string()]).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
    }

    #[test]
    fn text_types_are_told_from_others() {
        for t in [
            "text/html; charset=utf-8",
            "application/json",
            "application/ld+json",
            "application/atom+xml",
            "TEXT/PLAIN",
            "application/x-yaml",
        ] {
            assert!(is_text(t), "{t}");
        }
        for t in [
            "image/png",
            "application/pdf",
            "application/octet-stream",
            "garbage",
        ] {
            assert!(!is_text(t), "{t}");
        }
    }
}
