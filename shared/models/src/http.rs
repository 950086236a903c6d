//! The rules every HTTP provider keeps: one `reqwest` client per provider, a request
//! timeout never longer than the caller's deadline, and one mapping from failed calls
//! to [`LlmError`] that keeps the status and the provider's retry advice. The rule: a
//! failure's reason names the provider and the status, quotes the provider's message
//! (truncated), and never carries the API key.

use aos_kernel::llm::LlmError;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::time::{Duration, SystemTime};

/// How long a call may take when the request names no deadline. Long enough for a
/// non-streamed answer of several thousand tokens; the kernel's `timeout_ms` (the
/// invocation deadline less a margin) is the limit that usually applies.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A host that does not accept a connection in this long is down, whatever the
/// request's own deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a provider's error message a reason quotes: enough to read, short
/// enough for a task's failure line.
const MESSAGE_CHARS: usize = 300;

/// A provider that could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{provider}: the API key is not a valid HTTP header value")]
    BadApiKey { provider: &'static str },
    #[error("{provider}: cannot build the HTTP client: {reason}")]
    Client {
        provider: &'static str,
        reason: String,
    },
}

/// One provider's JSON endpoint: where to post, with which headers, and how to read
/// its failures.
pub(crate) struct Endpoint {
    provider: &'static str,
    client: reqwest::Client,
    url: String,
    /// Authentication and version headers, the key marked sensitive.
    headers: HeaderMap,
    /// The API key, kept only to scrub it from any text that reaches a reason.
    secret: Option<String>,
    timeout: Duration,
    /// Error codes that make a transient status permanent (OpenAI's exhausted quota
    /// arrives as a 429 that no retry will fix).
    permanent_codes: &'static [&'static str],
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("provider", &self.provider)
            .field("url", &self.url)
            .field("api_key", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Endpoint {
    pub(crate) fn new(
        provider: &'static str,
        url: String,
        headers: HeaderMap,
        secret: Option<String>,
        permanent_codes: &'static [&'static str],
    ) -> Result<Self, SetupError> {
        // No client-wide timeout: each call sets its own from the request's deadline.
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| SetupError::Client {
                provider,
                reason: e.to_string(),
            })?;
        Ok(Self {
            provider,
            client,
            url,
            headers,
            secret: secret.filter(|s| !s.is_empty()),
            timeout: DEFAULT_TIMEOUT,
            permanent_codes,
        })
    }

    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Posts `body` and reads a `T` from a 2xx answer; any other outcome is an
    /// [`LlmError`] sorted by [`status_error`] or [`transport_error`].
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        body: &Value,
        timeout_ms: Option<u64>,
    ) -> Result<T, LlmError> {
        let timeout = effective_timeout(self.timeout, timeout_ms);
        let response = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| self.scrub(transport_error(self.provider, &e, timeout)))?;
        let status = response.status();
        let headers = response.headers();
        let retry_after = retry_after_ms(
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            SystemTime::now(),
        );
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.scrub(transport_error(self.provider, &e, timeout)))?;
        if !status.is_success() {
            return Err(self.scrub(status_error(
                self.provider,
                status,
                retry_after,
                &bytes,
                self.permanent_codes,
            )));
        }
        // A complete 2xx body the adapter cannot read will read no better next time:
        // usually a base URL pointing at something that is not this API.
        serde_json::from_slice(&bytes).map_err(|e| {
            self.scrub(LlmError::Permanent(format!(
                "{}: unexpected response ({e}): {}",
                self.provider,
                truncate(&String::from_utf8_lossy(&bytes), MESSAGE_CHARS)
            )))
        })
    }

    fn scrub(&self, e: LlmError) -> LlmError {
        let Some(secret) = self.secret.as_deref() else {
            return e;
        };
        match e {
            LlmError::Transient {
                reason,
                retry_after_ms,
            } => LlmError::Transient {
                reason: reason.replace(secret, "[redacted]"),
                retry_after_ms,
            },
            LlmError::Permanent(reason) => {
                LlmError::Permanent(reason.replace(secret, "[redacted]"))
            }
        }
    }
}

/// The provider's default, shortened to the request's deadline when that is sooner.
pub(crate) fn effective_timeout(default: Duration, timeout_ms: Option<u64>) -> Duration {
    match timeout_ms {
        Some(ms) => default.min(Duration::from_millis(ms)),
        None => default,
    }
}

/// Statuses a later attempt can succeed on: request timeout, conflict, too early,
/// throttling, and every server-side failure (Anthropic's 529 "overloaded" included).
pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 425 | 429 | 500..=599)
}

/// Sorts a non-2xx answer. The reason reads `provider HTTP status (code): message`.
pub(crate) fn status_error(
    provider: &str,
    status: StatusCode,
    retry_after_ms: Option<u64>,
    body: &[u8],
    permanent_codes: &[&str],
) -> LlmError {
    let detail = ErrorDetail::parse(body);
    let code = detail
        .code
        .as_deref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    let reason = format!(
        "{provider} HTTP {}{code}: {}",
        status.as_u16(),
        truncate(&detail.message, MESSAGE_CHARS)
    );
    let permanent_code = detail
        .codes
        .iter()
        .any(|c| permanent_codes.contains(&c.as_str()));
    if is_transient_status(status.as_u16()) && !permanent_code {
        LlmError::Transient {
            reason,
            retry_after_ms,
        }
    } else {
        LlmError::Permanent(reason)
    }
}

/// Sorts a call that got no complete answer. Only a request that could not be built
/// is permanent; a timeout, a refused connection or a cut-off body may pass next time.
pub(crate) fn transport_error(provider: &str, e: &reqwest::Error, timeout: Duration) -> LlmError {
    if e.is_timeout() {
        return LlmError::transient(format!(
            "{provider}: no answer within {} ms",
            timeout.as_millis()
        ));
    }
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_body() {
        "answer cut off"
    } else if e.is_builder() {
        return LlmError::Permanent(format!("{provider}: bad request: {}", chain(e)));
    } else {
        "request failed"
    };
    LlmError::transient(format!("{provider}: {what}: {}", chain(e)))
}

/// The error with its sources, truncated: reqwest and the AWS SDK keep the useful part
/// (refused, reset, DNS, credentials) in a source.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    truncate(&out, MESSAGE_CHARS)
}

/// The provider's retry advice in ms: `retry-after-ms` (OpenAI), else `retry-after` in
/// seconds or as an HTTP date. `header` reads a header by name from whichever HTTP
/// types the caller has.
pub(crate) fn retry_after_ms<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    now: SystemTime,
) -> Option<u64> {
    let header = |name: &str| header(name).map(str::trim);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(ms.ceil() as u64);
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).ceil() as u64);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(now)
            .map(|d| d.as_millis().try_into().unwrap_or(u64::MAX))
            .unwrap_or(0),
    )
}

/// What a provider's error body says, in the shapes OpenAI (`{"error": {"message",
/// "type", "code"}}`), Anthropic (`{"error": {"type", "message"}}`), Ollama
/// (`{"error": "..."}`) and AWS (`{"message"}`) use; plain text otherwise.
struct ErrorDetail {
    message: String,
    /// The most specific code, shown in the reason.
    code: Option<String>,
    /// Every code and type the body names, matched against permanent codes.
    codes: Vec<String>,
}

impl ErrorDetail {
    fn parse(body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let Ok(json) = serde_json::from_slice::<Value>(body) else {
            return Self {
                message: text.trim().to_string(),
                code: None,
                codes: Vec::new(),
            };
        };
        let error = json.get("error").unwrap_or(&json);
        let field = |name: &str| match error.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let message = match error {
            Value::String(s) => Some(s.clone()),
            _ => field("message"),
        }
        .unwrap_or_else(|| text.trim().to_string());
        let codes: Vec<String> = [field("code"), field("type")]
            .into_iter()
            .flatten()
            .collect();
        Self {
            message,
            code: codes.first().cloned(),
            codes,
        }
    }
}

/// At most `max` characters, cut on a character boundary, marked when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// The model id of a `provider:model` route, or a permanent error when the route is
/// for another provider.
pub(crate) fn model_id<'a>(prefix: &str, route: &'a str) -> Result<&'a str, LlmError> {
    route
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(':'))
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            LlmError::Permanent(format!(
                "route `{route}` is not a {prefix} route (expected `{prefix}:<model>`)"
            ))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn retry_after(pairs: &[(&'static str, &str)], now: SystemTime) -> Option<u64> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        retry_after_ms(|name| h.get(name).and_then(|v| v.to_str().ok()), now)
    }

    #[test]
    fn retry_after_prefers_milliseconds_then_seconds_then_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let both = [("retry-after-ms", "1500.2"), ("retry-after", "9")];
        assert_eq!(retry_after(&both, now), Some(1501));
        assert_eq!(retry_after(&[("retry-after", "7")], now), Some(7000));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&[("retry-after", &date)], now), Some(30_000));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&[("retry-after", &past)], now), Some(0));
        assert_eq!(retry_after(&[("retry-after", "soon")], now), None);
        assert_eq!(retry_after(&[], now), None);
    }

    #[test]
    fn statuses_sort_into_retry_and_fail() {
        for s in [408, 409, 429, 500, 502, 503, 529] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 422] {
            assert!(!is_transient_status(s), "{s}");
        }
    }

    #[test]
    fn an_exhausted_quota_is_permanent_even_as_a_429() {
        let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let e = status_error(
            "openai",
            StatusCode::TOO_MANY_REQUESTS,
            Some(1000),
            body,
            &["insufficient_quota"],
        );
        assert_eq!(
            e,
            LlmError::Permanent(
                "openai HTTP 429 (insufficient_quota): You exceeded your current quota".into()
            )
        );
    }

    #[test]
    fn reasons_quote_a_truncated_message_from_any_body_shape() {
        let long = "x".repeat(1000);
        let body = serde_json::to_vec(&serde_json::json!({"error": long})).unwrap();
        let LlmError::Permanent(r) =
            status_error("ollama", StatusCode::NOT_FOUND, None, &body, &[])
        else {
            panic!("404 must be permanent")
        };
        assert!(r.starts_with("ollama HTTP 404: xxx"), "{r}");
        assert!(r.chars().count() < 330, "{r}");
        let e = status_error(
            "x",
            StatusCode::BAD_GATEWAY,
            None,
            b"<html>bad gateway</html>",
            &[],
        );
        assert_eq!(
            e,
            LlmError::Transient {
                reason: "x HTTP 502: <html>bad gateway</html>".into(),
                retry_after_ms: None
            }
        );
    }

    #[test]
    fn routes_strip_their_own_prefix_only() {
        assert_eq!(model_id("openai", "openai:llama3.1:8b"), Ok("llama3.1:8b"));
        assert!(model_id("openai", "anthropic:claude").is_err());
        assert!(model_id("openai", "openai:").is_err());
        assert!(model_id("openai", "openaix:gpt").is_err());
    }

    #[test]
    fn the_request_deadline_shortens_the_default_only() {
        let d = Duration::from_secs(60);
        assert_eq!(effective_timeout(d, None), d);
        assert_eq!(effective_timeout(d, Some(250)), Duration::from_millis(250));
        assert_eq!(effective_timeout(d, Some(600_000)), d);
    }
}
