//! Anthropic Messages (`POST {base}/v1/messages`). The rule: the stable prefix carries
//! the cache markers (`cache_control` on the last system block and on the last block of
//! the transcript) and the per-wake context comes after both, so a new context never
//! invalidates the cached transcript.

use crate::http::{Endpoint, SetupError, model_id};
use aos_kernel::llm::{
    Content, LlmError, Message, Model, ModelRequest, ModelResponse, Role, StopReason,
};
use aos_kernel::model::Usage;
use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The route prefix: `anthropic:<model>`.
pub const PREFIX: &str = "anthropic";
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
const API_VERSION: &str = "2023-06-01";

/// The Messages API behind the kernel's [`Model`] port.
#[derive(Debug)]
pub struct AnthropicMessages {
    endpoint: Endpoint,
}

impl AnthropicMessages {
    /// `base_url` defaults to [`DEFAULT_BASE_URL`]; `/v1/messages` is appended.
    pub fn new(api_key: String, base_url: Option<String>) -> Result<Self, SetupError> {
        let base = base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let mut headers = HeaderMap::new();
        let mut key = HeaderValue::from_str(&api_key)
            .map_err(|_| SetupError::BadApiKey { provider: PREFIX })?;
        key.set_sensitive(true);
        headers.insert(HeaderName::from_static("x-api-key"), key);
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        );
        let url = format!("{}/v1/messages", base.trim_end_matches('/'));
        let endpoint = Endpoint::new(PREFIX, url, headers, Some(api_key), &[])?;
        Ok(Self { endpoint })
    }

    /// Replaces the default request timeout ([`crate::DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.endpoint.set_timeout(timeout);
        self
    }
}

#[async_trait]
impl Model for AnthropicMessages {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, LlmError> {
        let model = model_id(PREFIX, &request.model)?;
        let body = request_body(model, request);
        let wire: MessagesResponse = self.endpoint.post(&body, request.timeout_ms).await?;
        Ok(response(model, wire))
    }
}

fn cache_control() -> Value {
    json!({"type": "ephemeral"})
}

fn request_body(model: &str, request: &ModelRequest) -> Value {
    let mut messages: Vec<Value> = request.messages.iter().filter_map(wire_message).collect();
    if let Some(block) = messages
        .last_mut()
        .and_then(|m| m["content"].as_array_mut())
        .and_then(|blocks| blocks.last_mut())
    {
        block["cache_control"] = cache_control();
    }
    if let Some(context) = request.context.as_ref().filter(|c| !c.is_empty()) {
        let block = json!({"type": "text", "text": context});
        match messages.last_mut() {
            Some(last) if last["role"] == "user" => {
                if let Some(blocks) = last["content"].as_array_mut() {
                    blocks.push(block);
                }
            }
            _ => messages.push(json!({"role": "user", "content": [block]})),
        }
    }
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_tokens,
        "messages": messages,
    });
    // The API rejects empty text blocks, so an empty system prompt is left out.
    if !request.system.is_empty() {
        body["system"] = json!([{
            "type": "text",
            "text": request.system,
            "cache_control": cache_control(),
        }]);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.input_schema,
                })
            })
            .collect();
    }
    body
}

/// A transcript message on the wire; `None` when nothing in it can be sent (the API
/// rejects empty messages and empty text blocks).
fn wire_message(m: &Message) -> Option<Value> {
    let blocks: Vec<Value> = m
        .content
        .iter()
        .filter_map(|c| match c {
            Content::Text { text } if text.is_empty() => None,
            Content::Text { text } => Some(json!({"type": "text", "text": text})),
            Content::ToolUse { id, name, input } => Some(json!({
                "type": "tool_use",
                "id": id,
                "name": name,
                "input": crate::object_input(input),
            })),
            Content::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => Some(json!({
                "type": "tool_result",
                "tool_use_id": tool_use_id,
                "content": content,
                "is_error": is_error,
            })),
        })
        .collect();
    if blocks.is_empty() {
        return None;
    }
    let role = match m.role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    Some(json!({"role": role, "content": blocks}))
}

#[derive(Deserialize)]
struct MessagesResponse {
    /// Always sent by Anthropic; a gateway in front of it may leave it out.
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<Value>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

fn response(requested: &str, wire: MessagesResponse) -> ModelResponse {
    let mut content = Vec::new();
    for block in wire.content {
        let text = |k: &str| block.get(k).and_then(Value::as_str).unwrap_or_default();
        match block.get("type").and_then(Value::as_str) {
            Some("text") => content.push(Content::Text {
                text: text("text").to_string(),
            }),
            Some("tool_use") => content.push(Content::ToolUse {
                id: text("id").to_string(),
                name: text("name").to_string(),
                input: block.get("input").cloned().unwrap_or_else(|| json!({})),
            }),
            // Thinking and server-tool blocks are the provider's business.
            _ => {}
        }
    }
    let has_calls = content.iter().any(|c| matches!(c, Content::ToolUse { .. }));
    let stop = match wire.stop_reason.as_deref() {
        Some("tool_use") => StopReason::ToolUse,
        Some("max_tokens" | "model_context_window_exceeded") => StopReason::MaxTokens,
        Some("refusal") => StopReason::Refusal,
        Some("end_turn" | "stop_sequence") => StopReason::EndTurn,
        _ if has_calls => StopReason::ToolUse,
        _ => StopReason::EndTurn,
    };
    let u = wire.usage;
    ModelResponse {
        content,
        stop,
        usage: Usage {
            llm_calls: 1,
            input_tokens: u.input_tokens.unwrap_or(0),
            output_tokens: u.output_tokens.unwrap_or(0),
            cache_write_tokens: u.cache_creation_input_tokens.unwrap_or(0),
            cache_read_tokens: u.cache_read_input_tokens.unwrap_or(0),
            ..Usage::default()
        },
        model: format!("{PREFIX}:{}", wire.model.as_deref().unwrap_or(requested)),
    }
}
