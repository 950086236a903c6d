//! A scripted HTTP server for the provider tests: it records every request and answers
//! from a script, so a test can assert exactly what went on the wire and what came back.

use aos_kernel::llm::{Content, Message, ModelRequest, Role, ToolSpec};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The API key the tests configure; no error reason may contain it.
pub const KEY: &str = "sk-test-3f9a7c1e-secret";

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// The path as sent, percent-encoding kept.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self::status(200, body)
    }
    pub fn status(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Recorded>>,
}

/// A running scripted server on 127.0.0.1; it stops with the test's runtime.
pub struct Scripted {
    pub url: String,
    script: Arc<Script>,
}

impl Scripted {
    pub async fn start(replies: Vec<Reply>) -> Self {
        let script = Arc::new(Script {
            replies: Mutex::new(replies.into()),
            seen: Mutex::default(),
        });
        let app = Router::new().fallback(answer).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, app).into_future());
        Self { url, script }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.script.seen.lock().unwrap().clone()
    }

    /// The one request the test expected.
    pub fn only_request(&self) -> Recorded {
        let seen = self.requests();
        assert_eq!(seen.len(), 1, "expected exactly one request, got {seen:?}");
        seen.into_iter().next().unwrap()
    }
}

async fn answer(
    State(script): State<Arc<Script>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    script.seen.lock().unwrap().push(Recorded {
        method,
        path: uri.path().to_string(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let next = script.replies.lock().unwrap().pop_front();
    let Some(reply) = next else {
        return (StatusCode::IM_A_TEAPOT, "script exhausted").into_response();
    };
    tokio::time::sleep(reply.delay).await;
    let mut response = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        response = response.header(*k, v);
    }
    response.body(reply.body.into()).unwrap()
}

/// A wake in the middle of a tool loop: the user asked, the assistant called a tool,
/// the tool answered; memory arrives as context.
pub fn tool_loop_request(route: &str) -> ModelRequest {
    ModelRequest {
        model: route.into(),
        fallbacks: Vec::new(),
        agent: "tester".into(),
        system: "You are terse.".into(),
        messages: vec![
            Message::user("What is the weather in Paris?"),
            Message {
                role: Role::Assistant,
                content: vec![
                    Content::Text {
                        text: "Let me check.".into(),
                    },
                    Content::ToolUse {
                        id: "call_1".into(),
                        name: "weather".into(),
                        input: json!({"city": "Paris"}),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![Content::ToolResult {
                    tool_use_id: "call_1".into(),
                    content: "18C, sunny".into(),
                    is_error: false,
                }],
            },
        ],
        context: Some("Memory: the user prefers Celsius.".into()),
        tools: vec![weather_tool()],
        max_tokens: 512,
        cache_key: Some("session-42".into()),
        timeout_ms: None,
    }
}

/// The first wake of a session: one user message, no tools, no context.
pub fn simple_request(route: &str) -> ModelRequest {
    ModelRequest {
        model: route.into(),
        fallbacks: Vec::new(),
        agent: "tester".into(),
        system: "You are terse.".into(),
        messages: vec![Message::user("Hi")],
        context: None,
        tools: Vec::new(),
        max_tokens: 64,
        cache_key: None,
        timeout_ms: None,
    }
}

pub fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "weather".into(),
        description: "Current weather for a city".into(),
        input_schema: json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        }),
    }
}

/// The inputs of the response's tool calls, in order.
pub fn tool_inputs(content: &[Content]) -> Vec<(String, String, Value)> {
    content
        .iter()
        .filter_map(|c| match c {
            Content::ToolUse { id, name, input } => Some((id.clone(), name.clone(), input.clone())),
            _ => None,
        })
        .collect()
}
