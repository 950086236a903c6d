//! `aos-models`: real model providers behind the kernel's [`Model`] port.
//!
//! | module | provider | wire |
//! |---|---|---|
//! | [`openai`] | OpenAI, Ollama, vLLM, llama.cpp, Gemini's OpenAI endpoint | Chat Completions over HTTP |
//! | [`anthropic`] | Anthropic | Messages over HTTP |
//! | [`bedrock`] | Amazon Bedrock | Converse with the official SDK |
//! | [`registry`] | the configured ones, by route prefix | [`Providers`] from a plain [`ProviderConfig`], for the kernel's `Router` |
//! | `secrets` (feature `secrets`) | keys for them | SSM Parameter Store or Secrets Manager, fetched once at start-up |
//!
//! A route is `provider:model`; each provider strips its own prefix. Every failure is
//! sorted the way the kernel acts on it: [`LlmError::Transient`] (throttling, 5xx,
//! timeouts, lost connections; with the provider's retry advice) or
//! [`LlmError::Permanent`] (bad request, refused credentials, unknown model). No
//! provider retries or sleeps itself, and no reason carries an API key. The crate reads
//! no environment variables: the binary builds a [`ProviderConfig`].
//!
//! [`Model`]: aos_kernel::llm::Model
//! [`LlmError::Transient`]: aos_kernel::llm::LlmError::Transient
//! [`LlmError::Permanent`]: aos_kernel::llm::LlmError::Permanent

pub mod anthropic;
pub mod bedrock;
mod http;
pub mod openai;
pub mod registry;
#[cfg(feature = "secrets")]
pub mod secrets;

pub use anthropic::AnthropicMessages;
pub use bedrock::BedrockConverse;
pub use http::{DEFAULT_TIMEOUT, SetupError};
pub use openai::OpenAiChat;
pub use registry::{ProviderConfig, Providers};
#[cfg(feature = "secrets")]
pub use secrets::{SecretError, SecretRef};

use serde_json::{Value, json};

/// Tool input as an object, which Anthropic and Bedrock require. A transcript written
/// by another provider may hold the raw string of malformed arguments; it is wrapped
/// rather than dropped so the model can still read what it wrote.
pub(crate) fn object_input(input: &Value) -> Value {
    match input {
        Value::Object(_) => input.clone(),
        other => json!({ "arguments": other }),
    }
}
