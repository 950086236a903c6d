//! The streamable HTTP client under rmcp's transport, on the workspace's reqwest 0.12.
//! rmcp's own backend needs reqwest 0.13, a second HTTP and TLS stack in every binary;
//! rmcp takes any [`StreamableHttpClient`] instead, and this is ours.
//!
//! The rules it keeps: every body it buffers is bounded (a JSON reply at 16 MiB, an
//! error body at 64 KiB, one SSE event at the transport's limit), as rmcp's own
//! backend does; redirects are never followed, so the session id and the configured
//! headers (credentials) only ever reach the configured origin; and the status codes
//! rmcp acts on keep their meaning (202 accepted, 404 on a session is an expired
//! session, which rmcp answers by starting a new one; 401/403 and 405 end a stream's
//! retries).

use crate::error_chain;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use http::header::{ACCEPT, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::common::http_header::{
    EVENT_STREAM_MIME_TYPE, HEADER_LAST_EVENT_ID, HEADER_SESSION_ID, JSON_MIME_TYPE,
};
use rmcp::transport::streamable_http_client::{
    AuthRequiredError, HttpStatusError, InsufficientScopeError, SseError, StreamableHttpClient,
    StreamableHttpError, StreamableHttpPostResponse,
};
use sse_stream::{Sse, SseStream};
use std::borrow::Cow;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Largest JSON reply read into memory.
const MAX_JSON_BODY: usize = 16 * 1024 * 1024;
/// Largest error body read; it only goes into an error message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// SSE event limit used by the trait methods that are not told one.
const DEFAULT_MAX_SSE_EVENT: usize = 16 * 1024 * 1024;

type Error = StreamableHttpError<HttpError>;

/// A reqwest failure as one readable line, without the URL (its query may hold a
/// secret; messages name the endpoint themselves). rmcp shows only the top of a
/// client error, and reqwest keeps the cause ("connection refused") in its sources.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct HttpError(String);

impl From<reqwest::Error> for HttpError {
    fn from(e: reqwest::Error) -> Self {
        Self(error_chain(&e.without_url()))
    }
}

fn client_error(e: reqwest::Error) -> Error {
    StreamableHttpError::Client(e.into())
}

/// A reqwest 0.12 client speaking MCP's streamable HTTP. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
}

impl Http {
    /// `client` must not follow redirects (see the module docs); [`Http::build`] makes one.
    pub(crate) fn new(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// A client with a connect timeout and no redirects. No whole-request timeout: the
    /// server-to-client SSE stream stays open for the session's life, so each call's
    /// deadline is enforced around the call instead.
    pub(crate) fn build(connect_timeout: std::time::Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aos-mcp/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self::new(client))
    }

    fn request(
        &self,
        method: reqwest::Method,
        uri: &str,
        session_id: Option<&str>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.client.request(method, uri).header(
            ACCEPT,
            format!("{EVENT_STREAM_MIME_TYPE}, {JSON_MIME_TYPE}"),
        );
        if let Some(token) = auth_token {
            req = req.bearer_auth(token);
        }
        for (name, value) in custom_headers {
            req = req.header(name, value);
        }
        if let Some(id) = session_id {
            req = req.header(HEADER_SESSION_ID, id);
        }
        req
    }
}

/// 401 and 403 with a challenge, as rmcp's transport classifies them.
fn auth_failure(status: StatusCode, headers: &HeaderMap) -> Option<Error> {
    let challenge = headers.get(WWW_AUTHENTICATE)?;
    let challenge = String::from_utf8_lossy(challenge.as_bytes()).into_owned();
    match status {
        StatusCode::UNAUTHORIZED => Some(StreamableHttpError::AuthRequired(
            AuthRequiredError::new(challenge),
        )),
        StatusCode::FORBIDDEN => Some(StreamableHttpError::InsufficientScope(
            InsufficientScopeError::new(challenge, None),
        )),
        _ => None,
    }
}

/// 429 and 5xx, with their `Retry-After`.
fn status_failure(status: StatusCode, headers: &HeaderMap) -> Option<HttpStatusError> {
    if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
        return None;
    }
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Some(HttpStatusError::new(status.as_u16(), retry_after))
}

/// A redirect is refused, and says where it pointed so the operator can fix the URL.
fn redirect_failure(status: StatusCode, headers: &HeaderMap) -> Option<Error> {
    if !status.is_redirection() {
        return None;
    }
    let to = headers
        .get(LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_else(|| "an unnamed location".into());
    Some(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
        format!(
            "HTTP {status}: the server redirects to {to}; redirects are not followed, configure that URL instead"
        ),
    )))
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Reads a body, refusing one larger than `max` bytes before holding it all.
async fn read_bounded(response: reqwest::Response, max: usize) -> Result<Vec<u8>, Error> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(StreamableHttpError::ResponseBodyTooLarge { max_size: max });
    }
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.try_next().await.map_err(client_error)? {
        if chunk.len() > max - body.len() {
            return Err(StreamableHttpError::ResponseBodyTooLarge { max_size: max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A message that expects no reply (a notification, or our reply to the server).
fn expects_no_reply(message: &ClientJsonRpcMessage) -> bool {
    matches!(
        message,
        ClientJsonRpcMessage::Notification(_)
            | ClientJsonRpcMessage::Response(_)
            | ClientJsonRpcMessage::Error(_)
    )
}

impl StreamableHttpClient for Http {
    type Error = HttpError;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, Error> {
        self.post_message_with_max_sse_event_size(
            uri,
            message,
            session_id,
            auth_token,
            custom_headers,
            DEFAULT_MAX_SSE_EVENT,
        )
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, Error> {
        let had_session = session_id.is_some();
        let response = self
            .request(
                reqwest::Method::POST,
                &uri,
                session_id.as_deref(),
                auth_token,
                custom_headers,
            )
            .json(&message)
            .send()
            .await
            .map_err(client_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        if let Some(e) = auth_failure(status, &headers) {
            return Err(e);
        }
        if matches!(status, StatusCode::ACCEPTED | StatusCode::NO_CONTENT) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == StatusCode::NOT_FOUND && had_session {
            return Err(StreamableHttpError::SessionExpired);
        }
        if let Some(e) = redirect_failure(status, &headers) {
            return Err(e);
        }
        let content_type = content_type(&headers);
        let is_json = content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with(JSON_MIME_TYPE));
        let new_session = headers
            .get(HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !status.is_success() {
            let failure = status_failure(status, &headers);
            if !is_json && let Some(failure) = failure {
                return Err(failure.into());
            }
            let body = match read_bounded(response, MAX_ERROR_BODY).await {
                Ok(body) => String::from_utf8_lossy(&body).into_owned(),
                Err(_) => "<body unreadable or too large>".into(),
            };
            // A JSON-RPC error in the body is the server's answer; pass it up as one.
            if is_json
                && !matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                && let Ok(msg @ ServerJsonRpcMessage::Error(_)) = serde_json::from_str(&body)
            {
                return Ok(StreamableHttpPostResponse::Json(msg, new_session));
            }
            if let Some(failure) = failure {
                return Err(failure.into());
            }
            return Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                format!("HTTP {status}: {}", body.trim()),
            )));
        }
        // Some servers answer a notification with an empty 200 instead of 202.
        if response.content_length() == Some(0) && expects_no_reply(&message) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        match content_type.as_deref() {
            Some(ct) if ct.starts_with(EVENT_STREAM_MIME_TYPE) => {
                Ok(StreamableHttpPostResponse::Sse(
                    sse_events(response, max_sse_event_size),
                    new_session,
                ))
            }
            Some(ct) if ct.starts_with(JSON_MIME_TYPE) => {
                let body = read_bounded(response, MAX_JSON_BODY).await?;
                match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                    Ok(msg) => Ok(StreamableHttpPostResponse::Json(msg, new_session)),
                    Err(_) if expects_no_reply(&message) => {
                        Ok(StreamableHttpPostResponse::Accepted)
                    }
                    Err(e) => Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                        format!(
                            "the reply is not a JSON-RPC message ({e}): {}",
                            preview(&body)
                        ),
                    ))),
                }
            }
            _ => Err(StreamableHttpError::UnexpectedContentType(content_type)),
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), Error> {
        let response = self
            .request(
                reqwest::Method::DELETE,
                &uri,
                Some(&session_id),
                auth_token,
                custom_headers,
            )
            .send()
            .await
            .map_err(client_error)?;
        // The spec lets a server refuse to end sessions on request.
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Ok(());
        }
        response.error_for_status().map_err(client_error)?;
        Ok(())
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Error> {
        self.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_token,
            custom_headers,
            DEFAULT_MAX_SSE_EVENT,
        )
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Error> {
        let mut req = self.request(
            reqwest::Method::GET,
            &uri,
            session_id.as_deref(),
            auth_token,
            custom_headers,
        );
        if let Some(id) = last_event_id {
            req = req.header(HEADER_LAST_EVENT_ID, id);
        }
        let response = req.send().await.map_err(client_error)?;
        let status = response.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        if let Some(e) = auth_failure(status, response.headers()) {
            return Err(e);
        }
        if let Some(e) = status_failure(status, response.headers()) {
            return Err(e.into());
        }
        if let Some(e) = redirect_failure(status, response.headers()) {
            return Err(e);
        }
        let response = response.error_for_status().map_err(client_error)?;
        match content_type(response.headers()) {
            Some(ct)
                if ct.starts_with(EVENT_STREAM_MIME_TYPE) || ct.starts_with(JSON_MIME_TYPE) =>
            {
                Ok(sse_events(response, max_sse_event_size))
            }
            other => Err(StreamableHttpError::UnexpectedContentType(other)),
        }
    }
}

/// The first bytes of a body that was not what it should be, for an error message.
fn preview(body: &[u8]) -> String {
    const PREVIEW: usize = 256;
    let text = String::from_utf8_lossy(&body[..body.len().min(PREVIEW)]).into_owned();
    if body.len() > PREVIEW {
        format!("{text}…")
    } else {
        text
    }
}

/// The response body as SSE events, each at most `max_event` bytes.
fn sse_events(
    response: reqwest::Response,
    max_event: usize,
) -> BoxStream<'static, Result<Sse, SseError>> {
    let bytes = Limited {
        inner: response.bytes_stream().boxed(),
        limit: EventSizeLimit::new(max_event),
        done: false,
    };
    SseStream::from_bytes_stream(bytes).boxed()
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error(transparent)]
    Read(HttpError),
    #[error("an SSE event from the server exceeds {0} bytes")]
    EventTooLarge(usize),
}

/// A byte stream that fails, then ends, once an SSE event grows past the limit: the
/// SSE parser would otherwise buffer a never-ending event without bound.
struct Limited {
    inner: BoxStream<'static, Result<Bytes, reqwest::Error>>,
    limit: EventSizeLimit,
    done: bool,
}

impl Stream for Limited {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let item = match self.inner.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        Poll::Ready(match item {
            None => None,
            Some(Err(e)) => {
                self.done = true;
                Some(Err(BodyError::Read(e.into())))
            }
            Some(Ok(chunk)) => match self.limit.feed(&chunk) {
                Ok(()) => Some(Ok(chunk)),
                Err(max) => {
                    self.done = true;
                    Some(Err(BodyError::EventTooLarge(max)))
                }
            },
        })
    }
}

/// Counts the bytes the SSE parser holds for the event being read: the lines since
/// the last blank line, less comment lines (which it drops once they end).
#[derive(Debug)]
struct EventSizeLimit {
    max: usize,
    /// Bytes of the finished lines of the current event.
    event: usize,
    /// Bytes of the line being read.
    line: usize,
    line_is_comment: bool,
    /// The last byte was `\r`, so a `\n` now ends nothing new.
    after_cr: bool,
}

impl EventSizeLimit {
    fn new(max: usize) -> Self {
        Self {
            max,
            event: 0,
            line: 0,
            line_is_comment: false,
            after_cr: false,
        }
    }

    /// Err(max) once the event or a line grows past the limit.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), usize> {
        for &b in chunk {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    if self.line == 0 {
                        self.event = 0;
                    } else if !self.line_is_comment {
                        self.event += self.line + 1;
                    }
                    self.line = 0;
                    self.line_is_comment = false;
                }
                _ => {
                    if self.line == 0 && b == b':' {
                        self.line_is_comment = true;
                    }
                    self.line += 1;
                    let held = if self.line_is_comment {
                        self.line
                    } else {
                        self.event + self.line
                    };
                    if held > self.max {
                        return Err(self.max);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_within_the_limit_passes_and_a_blank_line_resets_the_count() {
        let mut limit = EventSizeLimit::new(16);
        assert_eq!(limit.feed(b"data: 0123456\n\n"), Ok(()));
        assert_eq!(limit.feed(b"data: 0123456\r\n\r\n"), Ok(()));
        assert_eq!(limit.feed(b"data: 01234567"), Ok(()));
        assert_eq!(limit.feed(b"\n\n"), Ok(()));
    }

    #[test]
    fn an_event_past_the_limit_fails_even_across_chunks_and_lines() {
        let mut limit = EventSizeLimit::new(16);
        assert_eq!(limit.feed(b"data: 0123"), Ok(()));
        assert_eq!(limit.feed(b"\ndata: 4567"), Err(16));

        let mut limit = EventSizeLimit::new(16);
        assert_eq!(limit.feed(b"data: 01234567890123"), Err(16));
    }

    #[test]
    fn comment_lines_do_not_count_towards_the_event() {
        let mut limit = EventSizeLimit::new(16);
        for _ in 0..10 {
            assert_eq!(limit.feed(b": keep-alive\n"), Ok(()));
        }
        assert_eq!(limit.feed(b"data: 0123456\n\n"), Ok(()));
    }

    #[test]
    fn a_preview_is_cut_and_marked() {
        assert_eq!(preview(b"short"), "short");
        let long = vec![b'x'; 300];
        let p = preview(&long);
        assert!(p.ends_with('…'));
        assert_eq!(p.chars().count(), 257);
    }
}
