//! Amazon Bedrock Converse with the official SDK. The rule: SDK types stay in this
//! module, and the SDK neither retries nor sleeps. A failed call returns at once,
//! sorted into transient or permanent, so the kernel releases the record with a delay
//! instead of holding the invocation.

use crate::http::{
    DEFAULT_TIMEOUT, chain, effective_timeout, is_transient_status, model_id, retry_after_ms,
    truncate,
};
use aos_kernel::llm::{
    Content, LlmError, Message, Model, ModelRequest, ModelResponse, Role, StopReason,
};
use aos_kernel::model::Usage;
use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::{ConverseError, ConverseOutput};
use aws_sdk_bedrockruntime::types::{
    CachePointBlock, CachePointType, ContentBlock, ConversationRole, ConverseOutput as Output,
    InferenceConfiguration, Message as WireMessage, StopReason as WireStop, SystemContentBlock,
    Tool, ToolConfiguration, ToolInputSchema, ToolResultBlock, ToolResultContentBlock,
    ToolResultStatus, ToolSpecification, ToolUseBlock,
};
use aws_smithy_types::{Document, Number};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

/// The route prefix: `bedrock:<model id or inference profile>`.
pub const PREFIX: &str = "bedrock";

/// Bedrock Converse behind the kernel's [`Model`] port.
pub struct BedrockConverse {
    client: Client,
    timeout: Duration,
}

impl fmt::Debug for BedrockConverse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BedrockConverse")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl BedrockConverse {
    /// A client from the caller's configuration (region, credentials, endpoint), with
    /// the SDK's retries turned off: throttling is the kernel's to wait out.
    pub fn new(config: &SdkConfig) -> Self {
        let conf = aws_sdk_bedrockruntime::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .build();
        Self {
            client: Client::from_conf(conf),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Replaces the default request timeout ([`crate::DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl Model for BedrockConverse {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, LlmError> {
        let model = model_id(PREFIX, &request.model)?;
        let caching = supports_cache_points(model);
        let timeout = effective_timeout(self.timeout, request.timeout_ms);
        let mut call = self
            .client
            .converse()
            .model_id(model)
            .set_messages(Some(messages(request, caching).map_err(build_error)?))
            .inference_config(
                InferenceConfiguration::builder()
                    .max_tokens(i32::try_from(request.max_tokens).unwrap_or(i32::MAX))
                    .build(),
            );
        if !request.system.is_empty() {
            let mut system = vec![SystemContentBlock::Text(request.system.clone())];
            if caching {
                system.push(SystemContentBlock::CachePoint(
                    cache_point().map_err(build_error)?,
                ));
            }
            call = call.set_system(Some(system));
        }
        if !request.tools.is_empty() {
            call = call.tool_config(tool_config(request).map_err(build_error)?);
        }
        let output = call
            .customize()
            .config_override(
                aws_sdk_bedrockruntime::config::Builder::default()
                    .timeout_config(TimeoutConfig::builder().operation_timeout(timeout).build()),
            )
            .send()
            .await
            .map_err(|e| sdk_error(e, timeout))?;
        response(model, output)
    }
}

/// Only Claude and Nova take cache points on Bedrock; other models (Llama, Mistral,
/// Qwen…) reject a request that carries one. An application inference profile's ARN
/// hides its model, so it goes without: caching is a saving, a rejected call is a
/// failed task.
fn supports_cache_points(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    m.contains("claude") || m.contains("nova")
}

fn cache_point() -> Result<CachePointBlock, BuildError> {
    CachePointBlock::builder()
        .r#type(CachePointType::Default)
        .build()
}

fn build_error(e: BuildError) -> LlmError {
    LlmError::Permanent(format!("{PREFIX}: cannot build the request: {e}"))
}

/// The transcript, a cache point after its last block, then the context as a last
/// text block of the last user message.
fn messages(request: &ModelRequest, caching: bool) -> Result<Vec<WireMessage>, BuildError> {
    let mut turns: Vec<(ConversationRole, Vec<ContentBlock>)> = Vec::new();
    for m in &request.messages {
        let blocks = blocks(m)?;
        if !blocks.is_empty() {
            let role = match m.role {
                Role::User => ConversationRole::User,
                Role::Assistant => ConversationRole::Assistant,
            };
            turns.push((role, blocks));
        }
    }
    if caching && let Some((_, blocks)) = turns.last_mut() {
        blocks.push(ContentBlock::CachePoint(cache_point()?));
    }
    if let Some(context) = request.context.as_ref().filter(|c| !c.is_empty()) {
        let block = ContentBlock::Text(context.clone());
        match turns.last_mut() {
            Some((ConversationRole::User, blocks)) => blocks.push(block),
            _ => turns.push((ConversationRole::User, vec![block])),
        }
    }
    turns
        .into_iter()
        .map(|(role, content)| {
            WireMessage::builder()
                .role(role)
                .set_content(Some(content))
                .build()
        })
        .collect()
}

/// A message's blocks; empty text is left out because Converse rejects blank text.
fn blocks(m: &Message) -> Result<Vec<ContentBlock>, BuildError> {
    let mut out = Vec::with_capacity(m.content.len());
    for c in &m.content {
        match c {
            Content::Text { text } if text.is_empty() => {}
            Content::Text { text } => out.push(ContentBlock::Text(text.clone())),
            Content::ToolUse { id, name, input } => out.push(ContentBlock::ToolUse(
                ToolUseBlock::builder()
                    .tool_use_id(id)
                    .name(name)
                    .input(to_document(&crate::object_input(input)))
                    .build()?,
            )),
            Content::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => out.push(ContentBlock::ToolResult(
                ToolResultBlock::builder()
                    .tool_use_id(tool_use_id)
                    .content(ToolResultContentBlock::Text(content.clone()))
                    .status(if *is_error {
                        ToolResultStatus::Error
                    } else {
                        ToolResultStatus::Success
                    })
                    .build()?,
            )),
        }
    }
    Ok(out)
}

fn tool_config(request: &ModelRequest) -> Result<ToolConfiguration, BuildError> {
    let tools = request
        .tools
        .iter()
        .map(|t| {
            ToolSpecification::builder()
                .name(&t.name)
                .description(&t.description)
                .input_schema(ToolInputSchema::Json(to_document(&t.input_schema)))
                .build()
                .map(Tool::ToolSpec)
        })
        .collect::<Result<Vec<_>, _>>()?;
    ToolConfiguration::builder().set_tools(Some(tools)).build()
}

fn response(model: &str, output: ConverseOutput) -> Result<ModelResponse, LlmError> {
    let mut content = Vec::new();
    if let Some(Output::Message(message)) = output.output() {
        for block in message.content() {
            match block {
                ContentBlock::Text(text) => content.push(Content::Text { text: text.clone() }),
                ContentBlock::ToolUse(tool) => content.push(Content::ToolUse {
                    id: tool.tool_use_id().to_string(),
                    name: tool.name().to_string(),
                    input: from_document(tool.input()),
                }),
                // Reasoning, citations and the like are the provider's business.
                _ => {}
            }
        }
    }
    let has_calls = content.iter().any(|c| matches!(c, Content::ToolUse { .. }));
    let stop = match output.stop_reason() {
        WireStop::EndTurn | WireStop::StopSequence => StopReason::EndTurn,
        WireStop::ToolUse => StopReason::ToolUse,
        WireStop::MaxTokens | WireStop::ModelContextWindowExceeded => StopReason::MaxTokens,
        WireStop::GuardrailIntervened | WireStop::ContentFiltered => StopReason::ContentFilter,
        // A fresh sample may well be well-formed.
        WireStop::MalformedModelOutput | WireStop::MalformedToolUse => {
            return Err(LlmError::transient(format!(
                "{PREFIX}: the model's output was malformed ({})",
                output.stop_reason().as_str()
            )));
        }
        _ if has_calls => StopReason::ToolUse,
        _ => StopReason::EndTurn,
    };
    let count = |n: i32| u64::try_from(n).unwrap_or(0);
    let usage = output.usage().map(|u| Usage {
        llm_calls: 1,
        input_tokens: count(u.input_tokens()),
        output_tokens: count(u.output_tokens()),
        cache_read_tokens: u.cache_read_input_tokens().map(count).unwrap_or(0),
        cache_write_tokens: u.cache_write_input_tokens().map(count).unwrap_or(0),
        ..Usage::default()
    });
    Ok(ModelResponse {
        content,
        stop,
        usage: usage.unwrap_or(Usage {
            llm_calls: 1,
            ..Usage::default()
        }),
        model: format!("{PREFIX}:{model}"),
    })
}

/// Sorts a failed call. Service errors are sorted by their code, then by status for
/// codes this SDK version does not know; everything that got no answer is transient
/// except a request that could not be built.
fn sdk_error(e: SdkError<ConverseError>, timeout: Duration) -> LlmError {
    match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let raw = service.raw();
            let status = raw.status().as_u16();
            let code = err.code().unwrap_or("error");
            let message = truncate(err.message().unwrap_or_default(), 300);
            let reason = format!("{PREFIX} HTTP {status} ({code}): {message}");
            // ModelErrorException (424) is the model failing on this sample, not the
            // request being wrong.
            let transient = err.is_throttling_exception()
                || err.is_service_unavailable_exception()
                || err.is_model_not_ready_exception()
                || err.is_internal_server_exception()
                || err.is_model_timeout_exception()
                || err.is_model_error_exception()
                || (!err.is_validation_exception()
                    && !err.is_access_denied_exception()
                    && !err.is_resource_not_found_exception()
                    && is_transient_status(status));
            if transient {
                let headers = raw.headers();
                LlmError::Transient {
                    reason,
                    retry_after_ms: retry_after_ms(|name| headers.get(name), SystemTime::now()),
                }
            } else {
                LlmError::Permanent(reason)
            }
        }
        SdkError::TimeoutError(_) => LlmError::transient(format!(
            "{PREFIX}: no answer within {} ms",
            timeout.as_millis()
        )),
        SdkError::ConstructionFailure(_) => {
            LlmError::Permanent(format!("{PREFIX}: cannot send the request: {}", chain(&e)))
        }
        _ => LlmError::transient(format!("{PREFIX}: {}", chain(&e))),
    }
}

/// JSON to the SDK's document type, for tool schemas and tool input.
fn to_document(v: &Value) -> Document {
    match v {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            Number::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(a) => Document::Array(a.iter().map(to_document).collect()),
        Value::Object(o) => Document::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), to_document(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// The SDK's document type back to JSON, for the model's tool input.
fn from_document(d: &Document) -> Value {
    match d {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => Value::from(*u),
        Document::Number(Number::NegInt(i)) => Value::from(*i),
        // JSON has no NaN or infinity; null is what serde_json makes of them too.
        Document::Number(Number::Float(f)) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Document::String(s) => Value::String(s.clone()),
        Document::Array(a) => Value::Array(a.iter().map(from_document).collect()),
        Document::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), from_document(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_round_trip_json() {
        let v = json!({
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": -3, "maximum": 18446744073709551615u64}},
            "required": ["n"],
            "f": 1.5,
            "t": true,
            "z": null,
        });
        assert_eq!(from_document(&to_document(&v)), v);
    }

    #[test]
    fn cache_points_only_for_models_that_take_them() {
        assert!(supports_cache_points(
            "anthropic.claude-3-5-haiku-20241022-v1:0"
        ));
        assert!(supports_cache_points(
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
        ));
        assert!(supports_cache_points("amazon.nova-pro-v1:0"));
        assert!(!supports_cache_points("meta.llama3-70b-instruct-v1:0"));
        assert!(supports_cache_points(
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0"
        ));
        assert!(!supports_cache_points(
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
        ));
    }
}
