//! The model port's vocabulary: a provider-neutral shape of tool-calling chat, close to
//! the Anthropic Messages and Bedrock Converse APIs, so real providers map onto it
//! without loss. Provider wire JSON never leaves its adapter.

use crate::model::Usage;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Content>,
}

impl Message {
    pub fn user(text: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: vec![Content::Text { text: text.into() }],
        }
    }
    /// All text blocks joined.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.content {
            if let Content::Text { text } = c {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(text);
            }
        }
        out
    }
}

/// A tool as the model sees it: a name, what it is for, and a JSON schema of its input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

/// One model call. The fields a provider must send are `system`, `messages`,
/// `context`, `tools` and `max_tokens`; the rest steer routing and caching.
///
/// Prompt caching: a wake re-sends its whole session transcript, so providers mark
/// the stable prefix for their cache: the end of `system` and the last block of the
/// last message (Anthropic `cache_control`, Bedrock `cachePoint`; OpenAI caches
/// prefixes by itself and takes `cache_key` as `prompt_cache_key`). `context` (the
/// agent's memory) changes between wakes, so it goes *after* that prefix, as a last
/// text block of the last user message, and never invalidates the cached transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRequest {
    /// Route, `provider:model` (e.g. `offline`, `anthropic:claude-sonnet-4-5`,
    /// `openai:gpt-4o-mini`, `bedrock:anthropic.claude-3-5-haiku-20241022-v1:0`).
    pub model: String,
    /// Routes tried in order when `model` (and each before it) fails transiently.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// The agent being run; lets the offline model and logs tell agents apart.
    pub agent: String,
    pub system: String,
    pub messages: Vec<Message>,
    /// Per-wake context placed after the cached prefix (see above).
    #[serde(default)]
    pub context: Option<String>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: u32,
    /// A stable key for the provider's prompt cache: the session.
    #[serde(default)]
    pub cache_key: Option<String>,
    /// The call must end within this many ms (the invocation deadline less a margin);
    /// providers use it as the request timeout when it is shorter than their own.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Why the model stopped. Only `EndTurn` and `ToolUse` are answers to act on: the
/// kernel fails a step that stopped for any other reason, and never runs a tool call
/// from a response cut off at `MaxTokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    ToolUse,
    /// Cut off at `max_tokens`: the text is incomplete and a tool call may be truncated.
    MaxTokens,
    /// The model declined to answer.
    Refusal,
    /// The provider's content filter or guardrail stopped the answer.
    ContentFilter,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelResponse {
    pub content: Vec<Content>,
    pub stop: StopReason,
    /// Tokens and cost of this one call (`llm_calls` = 1).
    pub usage: Usage,
    /// The model that actually answered.
    pub model: String,
}

impl ModelResponse {
    pub fn tool_uses(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.content.iter().filter_map(|c| match c {
            Content::ToolUse { id, name, input } => Some((id.as_str(), name.as_str(), input)),
            _ => None,
        })
    }
    pub fn text(&self) -> String {
        Message {
            role: Role::Assistant,
            content: self.content.clone(),
        }
        .text()
    }
}

/// Model failures, sorted the way the kernel must treat them.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum LlmError {
    /// Throttling (429, Anthropic 529), 5xx, timeouts, connection failures: the wake is
    /// retried later, after `retry_after_ms` when the provider said (`retry-after`,
    /// `retry-after-ms`), by releasing the record with that delay, never by sleeping.
    #[error("model temporarily unavailable: {reason}")]
    Transient {
        reason: String,
        retry_after_ms: Option<u64>,
    },
    /// Bad request, unknown model, refused credentials, exhausted quota: the task fails
    /// with this reason.
    #[error("model call failed: {0}")]
    Permanent(String),
}

impl LlmError {
    /// A transient failure with no advice on when to retry.
    pub fn transient(reason: impl Into<String>) -> Self {
        LlmError::Transient {
            reason: reason.into(),
            retry_after_ms: None,
        }
    }
}

/// A tool-calling language model.
#[async_trait]
pub trait Model: Send + Sync {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, LlmError>;
}
