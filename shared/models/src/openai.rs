//! OpenAI-compatible Chat Completions (`POST {base}/chat/completions`): OpenAI itself,
//! and the servers that copy its wire format (Ollama, vLLM, llama.cpp, Gemini's OpenAI
//! endpoint). The rule: a model's bad tool arguments never fail the call. They come
//! back as a `Value::String` of what the model wrote, which the kernel rejects with a
//! readable error the model can correct.

use crate::http::{Endpoint, SetupError, model_id};
use aos_kernel::llm::{
    Content, LlmError, Message, Model, ModelRequest, ModelResponse, Role, StopReason,
};
use aos_kernel::model::Usage;
use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// The route prefix: `openai:<model>`.
pub const PREFIX: &str = "openai";
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// A Chat Completions endpoint behind the kernel's [`Model`] port.
#[derive(Debug)]
pub struct OpenAiChat {
    endpoint: Endpoint,
}

impl OpenAiChat {
    /// `api_key` may be `None` for local servers that take none; `base_url` defaults to
    /// [`DEFAULT_BASE_URL`] (Ollama: `http://localhost:11434/v1`).
    pub fn new(api_key: Option<String>, base_url: Option<String>) -> Result<Self, SetupError> {
        let base = base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let mut headers = HeaderMap::new();
        let api_key = api_key.filter(|k| !k.is_empty());
        if let Some(key) = &api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| SetupError::BadApiKey { provider: PREFIX })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let url = format!("{}/chat/completions", base.trim_end_matches('/'));
        // OpenAI reports an exhausted quota as a 429; waiting does not refill it.
        let endpoint = Endpoint::new(PREFIX, url, headers, api_key, &["insufficient_quota"])?;
        Ok(Self { endpoint })
    }

    /// Replaces the default request timeout ([`crate::DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.endpoint.set_timeout(timeout);
        self
    }
}

#[async_trait]
impl Model for OpenAiChat {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, LlmError> {
        let model = model_id(PREFIX, &request.model)?;
        let body = request_body(model, request);
        let wire: ChatResponse = self.endpoint.post(&body, request.timeout_ms).await?;
        response(model, wire)
    }
}

/// One chat message on the wire, before `context` is placed.
enum WireMessage {
    User(Vec<String>),
    Assistant { text: String, calls: Vec<Value> },
    Tool { id: String, content: String },
}

fn request_body(model: &str, request: &ModelRequest) -> Value {
    let mut wire = Vec::new();
    for m in &request.messages {
        wire_messages(m, &mut wire);
    }
    if let Some(context) = request.context.as_ref().filter(|c| !c.is_empty()) {
        // After everything else, so the transcript before it stays a cacheable prefix.
        match wire.last_mut() {
            Some(WireMessage::User(parts)) => parts.push(context.clone()),
            _ => wire.push(WireMessage::User(vec![context.clone()])),
        }
    }
    let mut messages = Vec::with_capacity(wire.len() + 1);
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    messages.extend(wire.into_iter().map(|m| match m {
        WireMessage::User(parts) => json!({"role": "user", "content": user_content(parts)}),
        WireMessage::Assistant { text, calls } if calls.is_empty() => {
            json!({"role": "assistant", "content": text})
        }
        WireMessage::Assistant { text, calls } => json!({
            "role": "assistant",
            "content": if text.is_empty() { Value::Null } else { Value::String(text) },
            "tool_calls": calls,
        }),
        WireMessage::Tool { id, content } => {
            json!({"role": "tool", "tool_call_id": id, "content": content})
        }
    }));
    // `max_completion_tokens`, not `max_tokens`: OpenAI deprecated `max_tokens` and its
    // reasoning models reject it with a 400 on every call, while servers that predate
    // the new name (Ollama, LM Studio) ignore an unknown field and only lose the cap.
    let mut body = json!({
        "model": model,
        "messages": messages,
        "max_completion_tokens": request.max_tokens,
    });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.input_schema,
                }})
            })
            .collect();
    }
    if let Some(key) = &request.cache_key {
        body["prompt_cache_key"] = Value::String(key.clone());
    }
    body
}

fn wire_messages(m: &Message, out: &mut Vec<WireMessage>) {
    match m.role {
        Role::Assistant => {
            let calls = m
                .content
                .iter()
                .filter_map(|c| match c {
                    Content::ToolUse { id, name, input } => Some(json!({
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments_string(input)},
                    })),
                    _ => None,
                })
                .collect();
            out.push(WireMessage::Assistant {
                text: m.text(),
                calls,
            });
        }
        Role::User => {
            let mut parts = Vec::new();
            for c in &m.content {
                match c {
                    // Tool answers must directly follow the assistant's calls, so they
                    // go before any text of the same turn.
                    Content::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    } => out.push(WireMessage::Tool {
                        id: tool_use_id.clone(),
                        // The wire has no error flag; say it in words.
                        content: if *is_error {
                            format!("Error: {content}")
                        } else {
                            content.clone()
                        },
                    }),
                    Content::Text { text } => parts.push(text.clone()),
                    Content::ToolUse { .. } => {}
                }
            }
            if !parts.is_empty() {
                out.push(WireMessage::User(parts));
            }
        }
    }
}

/// Arguments as the model wrote them: malformed ones were kept as the raw string, and
/// are sent back verbatim.
fn arguments_string(input: &Value) -> String {
    match input {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

/// A lone part as a plain string, which every compatible server accepts; several as a
/// part list so the context stays a separate, last part.
fn user_content(mut parts: Vec<String>) -> Value {
    if parts.len() == 1 {
        return Value::String(parts.remove(0));
    }
    parts
        .into_iter()
        .map(|text| json!({"type": "text", "text": text}))
        .collect()
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    id: Option<String>,
    function: FunctionCall,
}

#[derive(Deserialize)]
struct FunctionCall {
    name: String,
    /// A JSON string by the spec; some local servers send an object.
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

fn response(requested: &str, wire: ChatResponse) -> Result<ModelResponse, LlmError> {
    let answered = wire
        .model
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| requested.to_string());
    let choice = wire
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| LlmError::Permanent(format!("{PREFIX}: the answer has no choices")))?;
    let message = choice.message;
    let mut content = Vec::new();
    if let Some(text) = message.content.filter(|t| !t.is_empty()) {
        content.push(Content::Text { text });
    }
    let refusal = message.refusal.filter(|r| !r.is_empty());
    if let Some(text) = refusal.clone() {
        content.push(Content::Text { text });
    }
    for (i, call) in message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        content.push(Content::ToolUse {
            // Some local servers leave ids out; the kernel needs one to pair the result.
            id: call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{i}")),
            name: call.function.name,
            input: parse_arguments(call.function.arguments),
        });
    }
    let has_calls = content.iter().any(|c| matches!(c, Content::ToolUse { .. }));
    let stop = if refusal.is_some() {
        StopReason::Refusal
    } else {
        match choice.finish_reason.as_deref() {
            Some("length") => StopReason::MaxTokens,
            Some("content_filter") => StopReason::ContentFilter,
            Some("tool_calls" | "function_call") => StopReason::ToolUse,
            // Some local servers say `stop` alongside tool calls.
            _ if has_calls => StopReason::ToolUse,
            _ => StopReason::EndTurn,
        }
    };
    let usage = wire.usage.map(|u| {
        let prompt = u.prompt_tokens.unwrap_or(0);
        let cached = u
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0);
        Usage {
            llm_calls: 1,
            input_tokens: prompt.saturating_sub(cached),
            cache_read_tokens: cached,
            output_tokens: u.completion_tokens.unwrap_or(0),
            ..Usage::default()
        }
    });
    Ok(ModelResponse {
        content,
        stop,
        usage: usage.unwrap_or(Usage {
            llm_calls: 1,
            ..Usage::default()
        }),
        model: format!("{PREFIX}:{answered}"),
    })
}

/// Empty arguments are an empty object; malformed ones stay the raw string so the
/// kernel's schema check names the problem to the model.
fn parse_arguments(arguments: Option<Value>) -> Value {
    match arguments {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(raw)) if raw.trim().is_empty() => json!({}),
        Some(Value::String(raw)) => serde_json::from_str(&raw).unwrap_or(Value::String(raw)),
        Some(other) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_leniently() {
        assert_eq!(parse_arguments(Some(json!(r#"{"a":1}"#))), json!({"a": 1}));
        assert_eq!(parse_arguments(Some(json!(""))), json!({}));
        assert_eq!(parse_arguments(None), json!({}));
        assert_eq!(parse_arguments(Some(json!("{oops"))), json!("{oops"));
        assert_eq!(parse_arguments(Some(json!({"b": 2}))), json!({"b": 2}));
    }

    #[test]
    fn raw_arguments_go_back_verbatim() {
        assert_eq!(arguments_string(&json!("{oops")), "{oops");
        assert_eq!(arguments_string(&json!({"a": 1})), r#"{"a":1}"#);
    }
}
