//! A small client of AOS API v1 for the CLI: JSON calls with the bearer token, the
//! task event stream (server-sent events), and errors a person can act on. Every
//! error body of the API is an RFC 9457 problem document; its `detail` is what the
//! user reads, and a 401 or 403 also says how to get a token that works. The token
//! never appears in an error, a log line or `Debug` output.

use super::config::Endpoint;
use aos_kernel::approvals::Approval;
use aos_kernel::{Event, Schedule, Task, TaskId};
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::Duration;

/// Why a call failed, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer at all (refused connection, DNS, TLS, timeout).
    #[error(
        "cannot reach the AOS API at {url}: {reason}; is it running (`aos dev`) and is the URL right?"
    )]
    Unreachable { url: String, reason: String },
    /// 401: no token, or one the API does not accept.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a token without the scope this needs.
    #[error("{0}")]
    Forbidden(String),
    /// Any other 4xx or 5xx, with the problem's detail.
    #[error("{detail}")]
    Problem { status: u16, detail: String },
    /// An answer that is not what API v1 sends.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
}

impl ClientError {
    /// Worth trying again later (a follow reconnects on these).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Problem { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// RFC 9457 problem document (only what the CLI reads).
#[derive(Debug, Deserialize)]
struct Problem {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

/// `GET /v1/tasks`.
#[derive(Debug, Deserialize)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TaskEvents {
    events: Vec<Event>,
}

/// `GET /v1/agents` entries.
#[derive(Debug, Deserialize)]
pub struct AgentSummary {
    pub name: String,
    pub purpose: String,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub may_message: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct AgentList {
    agents: Vec<AgentSummary>,
}

/// `GET /v1/agents/{name}/dead-letters` entries.
#[derive(Debug, Deserialize)]
pub struct DeadLetterView {
    pub id: String,
    pub reason: String,
    pub at: u64,
    pub receive_count: u32,
    pub body: String,
}

#[derive(Debug, Deserialize)]
struct DeadLetterList {
    dead_letters: Vec<DeadLetterView>,
}

#[derive(Debug, Deserialize)]
struct Redriven {
    redriven: usize,
}

#[derive(Debug, Deserialize)]
struct ApprovalList {
    approvals: Vec<Approval>,
}

#[derive(Debug, Deserialize)]
struct ScheduleList {
    schedules: Vec<Schedule>,
}

/// One server-sent event of a task's stream.
#[derive(Debug)]
pub enum StreamItem {
    /// A timeline event, with its SSE id (for `Last-Event-ID`).
    Event(Box<Event>),
    /// The task is finished; nothing follows.
    End,
}

/// A client of one AOS API.
pub struct ApiClient {
    http: reqwest::Client,
    endpoint: Endpoint,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// A reqwest error with its causes, which its own `Display` leaves out.
fn reason(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

impl ApiClient {
    pub fn new(endpoint: Endpoint) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("aos-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Protocol {
                url: endpoint.url.clone(),
                reason: reason(&e),
            })?;
        Ok(Self { http, endpoint })
    }

    /// The API's base URL.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", self.endpoint.url));
        match &self.endpoint.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.endpoint.url.clone(),
            reason: reason(e),
        }
    }

    /// The error for a refused request, from its problem document.
    async fn refused(&self, resp: reqwest::Response) -> ClientError {
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        let detail = serde_json::from_slice::<Problem>(&body)
            .ok()
            .and_then(|p| p.detail.or(p.title))
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&body);
                let text = aos_kernel::kernel::preview(&text, 200);
                if text.is_empty() {
                    status.to_string()
                } else {
                    text
                }
            });
        let url = &self.endpoint.url;
        match status {
            StatusCode::UNAUTHORIZED => ClientError::Unauthorized(match self.endpoint.token {
                None => format!(
                    "the AOS API at {url} needs a token ({detail}); run `aos login {url}` with the token it gave you (`aos dev` prints AOS_TOKEN=...; `aos token` mints one), or pass --token or set AOS_TOKEN"
                ),
                Some(_) => format!(
                    "the AOS API at {url} refused the token ({detail}); log in again with a valid one: `aos login {url}` (`aos dev` prints AOS_TOKEN=...; `aos token` mints one)"
                ),
            }),
            StatusCode::FORBIDDEN => ClientError::Forbidden(format!(
                "the AOS API at {url} refused this request ({detail}); it needs a token with more scope: for `aos dev`, `aos token --scope \"read write admin\"`, then `aos login {url}` with it"
            )),
            _ => ClientError::Problem {
                status: status.as_u16(),
                detail,
            },
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, T), ClientError> {
        let mut r = self.request(method, path).timeout(Duration::from_secs(60));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let resp = r.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.refused(resp).await);
        }
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        let value = if bytes.is_empty() {
            serde_json::from_value(Value::Null)
        } else {
            serde_json::from_slice(&bytes)
        };
        value
            .map(|v| (status, v))
            .map_err(|e| ClientError::Protocol {
                url: format!("{}{path}", self.endpoint.url),
                reason: format!("{status} with a body that is not what API v1 sends ({e})"),
            })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Ok(self.call(Method::GET, path, None, &[]).await?.1)
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: Value) -> Result<T, ClientError> {
        Ok(self.call(Method::POST, path, Some(&body), &[]).await?.1)
    }

    pub async fn agents(&self) -> Result<Vec<AgentSummary>, ClientError> {
        Ok(self.get::<AgentList>("/v1/agents").await?.agents)
    }

    pub async fn tasks(
        &self,
        status: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<TaskPage, ClientError> {
        let mut query = vec![format!("limit={limit}")];
        if let Some(s) = status {
            query.push(format!("status={}", encode(s)));
        }
        if let Some(c) = cursor {
            query.push(format!("cursor={}", encode(c)));
        }
        self.get(&format!("/v1/tasks?{}", query.join("&"))).await
    }

    pub async fn task(&self, id: TaskId) -> Result<Task, ClientError> {
        self.get(&format!("/v1/tasks/{id}")).await
    }

    pub async fn events(&self, id: TaskId) -> Result<Vec<Event>, ClientError> {
        Ok(self
            .get::<TaskEvents>(&format!("/v1/tasks/{id}/events"))
            .await?
            .events)
    }

    /// Submits a task; `true` when this call created it (202), `false` when an earlier
    /// call with the same idempotency key did (200).
    pub async fn submit(
        &self,
        agent: &str,
        input: &str,
        key: Option<&str>,
    ) -> Result<(Task, bool), ClientError> {
        let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        let (status, task) = self
            .call(
                Method::POST,
                "/v1/tasks",
                Some(&json!({"input": input, "agent": agent})),
                &headers,
            )
            .await?;
        Ok((task, status == StatusCode::ACCEPTED))
    }

    pub async fn cancel(&self, id: TaskId, reason: Option<&str>) -> Result<Task, ClientError> {
        let body = match reason {
            Some(r) => json!({"reason": r}),
            None => json!({}),
        };
        self.post(&format!("/v1/tasks/{id}/cancel"), body).await
    }

    pub async fn approvals(&self) -> Result<Vec<Approval>, ClientError> {
        Ok(self.get::<ApprovalList>("/v1/approvals").await?.approvals)
    }

    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        note: Option<&str>,
    ) -> Result<Approval, ClientError> {
        let verb = if approve { "approve" } else { "deny" };
        let body = match note {
            Some(n) => json!({"note": n}),
            None => json!({}),
        };
        self.post(&format!("/v1/approvals/{}/{verb}", encode(id)), body)
            .await
    }

    pub async fn schedules(&self) -> Result<Vec<Schedule>, ClientError> {
        Ok(self.get::<ScheduleList>("/v1/schedules").await?.schedules)
    }

    pub async fn create_schedule(
        &self,
        agent: &str,
        kind: &str,
        input: &str,
        when: &str,
    ) -> Result<Schedule, ClientError> {
        self.post(
            "/v1/schedules",
            json!({"agent": agent, "kind": kind, "input": input, "when": when}),
        )
        .await
    }

    pub async fn delete_schedule(&self, id: &str) -> Result<(), ClientError> {
        self.call::<Value>(
            Method::DELETE,
            &format!("/v1/schedules/{}", encode(id)),
            None,
            &[],
        )
        .await
        .map(|_| ())
    }

    pub async fn dead_letters(&self, agent: &str) -> Result<Vec<DeadLetterView>, ClientError> {
        Ok(self
            .get::<DeadLetterList>(&format!(
                "/v1/agents/{}/dead-letters?limit=1000",
                encode(agent)
            ))
            .await?
            .dead_letters)
    }

    pub async fn redrive(&self, agent: &str) -> Result<usize, ClientError> {
        Ok(self
            .post::<Redriven>(
                &format!("/v1/agents/{}/dead-letters/redrive", encode(agent)),
                json!({}),
            )
            .await?
            .redriven)
    }

    /// The task's event stream from the start, or after `last_event_id`: each
    /// timeline event, then [`StreamItem::End`]. The stream may close before the end
    /// (a gateway's time limit, a restart); reconnect with the last id.
    pub async fn stream(
        &self,
        id: TaskId,
        last_event_id: Option<&str>,
    ) -> Result<BoxStream<'static, Result<StreamItem, ClientError>>, ClientError> {
        let mut r = self
            .request(Method::GET, &format!("/v1/tasks/{id}/events/stream"))
            .header("Accept", "text/event-stream");
        if let Some(last) = last_event_id {
            r = r.header("Last-Event-ID", last);
        }
        let resp = r.send().await.map_err(|e| self.unreachable(&e))?;
        if !resp.status().is_success() {
            return Err(self.refused(resp).await);
        }
        let url = self.endpoint.url.clone();
        let events = sse_stream::SseStream::from_bytes_stream(resp.bytes_stream());
        Ok(events
            .filter_map(move |item| {
                let url = url.clone();
                async move {
                    let sse = match item {
                        Ok(sse) => sse,
                        Err(e) => {
                            return Some(Err(ClientError::Unreachable {
                                url,
                                reason: format!("the event stream broke: {e}"),
                            }));
                        }
                    };
                    match sse.event.as_deref() {
                        Some("event") => {
                            let data = sse.data.unwrap_or_default();
                            Some(
                                serde_json::from_str::<Event>(&data)
                                    .map(|e| StreamItem::Event(Box::new(e)))
                                    .map_err(|e| ClientError::Protocol {
                                        url,
                                        reason: format!(
                                            "an event that is not a timeline event ({e})"
                                        ),
                                    }),
                            )
                        }
                        Some("end") => Some(Ok(StreamItem::End)),
                        // Keep-alive comments and events this client does not know.
                        _ => None,
                    }
                }
            })
            .boxed())
    }
}

/// Percent-encodes a path segment or query value (RFC 3986 unreserved kept).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn path_segments_and_query_values_are_encoded() {
        assert_eq!(encode("01JD.01JE"), "01JD.01JE");
        assert_eq!(encode("a b/c?d=e&f"), "a%20b%2Fc%3Fd%3De%26f");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn a_client_never_shows_its_token() {
        let c = ApiClient::new(Endpoint {
            url: "http://127.0.0.1:1".into(),
            token: Some("secret-token".into()),
        })
        .unwrap();
        assert!(!format!("{c:?}").contains("secret-token"));
    }
}
