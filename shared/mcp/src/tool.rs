//! [`McpTool`]: one remote MCP tool as a kernel [`Tool`]. The rules kept here: its name
//! is `<server>__<tool>` and always fits providers' `^[a-zA-Z0-9_-]{1,64}$`; its
//! [`ToolMeta`] follows the server's annotations with MCP's own defaults, so a tool the
//! server says nothing about is taken to have effects (not read-only, not idempotent)
//! and never runs inline; and whatever goes wrong comes back to the model as a
//! [`ToolError`] it can read.

use crate::session::{CallFailure, Session};
use aos_kernel::llm::ToolSpec;
use aos_kernel::tools::{Tool, ToolContext, ToolError, ToolMeta};
use async_trait::async_trait;
use rmcp::model::{
    CallToolResult, ContentBlock, JsonObject, ResourceContents, Tool as RemoteTool, ToolAnnotations,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Longest tool name providers accept.
pub const MAX_TOOL_NAME: usize = 64;
/// Hex digits of the hash that keeps a shortened or cleaned-up name unique.
const HASH_DIGITS: usize = 8;

/// A tool served by a remote MCP server.
#[derive(Debug)]
pub struct McpTool {
    spec: ToolSpec,
    meta: ToolMeta,
    /// The name the server knows it by.
    remote: String,
    session: Arc<Session>,
}

impl McpTool {
    pub(crate) fn new(session: Arc<Session>, remote: RemoteTool) -> Self {
        let name = qualified_name(session.name(), &remote.name);
        let description = remote
            .description
            .as_deref()
            .or(remote.title.as_deref())
            .or(remote.annotations.as_ref().and_then(|a| a.title.as_deref()))
            .filter(|d| !d.trim().is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                format!(
                    "`{}` from the MCP server `{}`.",
                    remote.name,
                    session.name()
                )
            });
        let meta = meta_of(remote.annotations.as_ref(), session.timeout());
        Self {
            spec: ToolSpec {
                name,
                description,
                input_schema: schema_of(&remote.input_schema),
            },
            meta,
            remote: remote.name.into_owned(),
            session,
        }
    }

    /// The server's name for the tool, without the `<server>__` prefix.
    pub fn remote_name(&self) -> &str {
        &self.remote
    }

    /// The configured name of the server serving it.
    pub fn server(&self) -> &str {
        self.session.name()
    }
}

#[async_trait]
impl Tool for McpTool {
    fn spec(&self) -> ToolSpec {
        self.spec.clone()
    }

    fn meta(&self) -> ToolMeta {
        self.meta.clone()
    }

    async fn call(&self, input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        let name = &self.spec.name;
        let arguments = arguments_of(name, input)?;
        match self.session.call(&self.remote, arguments).await {
            Ok(result) => {
                let is_error = result.is_error == Some(true);
                let text = render(result);
                if is_error {
                    Err(ToolError(if text.is_empty() {
                        format!("{name}: the tool reported an error without a message")
                    } else {
                        text
                    }))
                } else {
                    Ok(text)
                }
            }
            Err(CallFailure::Refused(reason)) => Err(ToolError(format!(
                "{name}: the MCP server `{}` refused the call: {reason}",
                self.server()
            ))),
            Err(CallFailure::Unavailable(reason)) => Err(ToolError(format!(
                "{name}: the MCP server `{}` is unavailable: {reason}",
                self.server()
            ))),
        }
    }
}

/// `<server>__<tool>` when that is a valid provider tool name; otherwise the same
/// with every other character made `_`, cut to fit, and ended with a hash of the
/// original so two tools that clean up alike stay apart.
pub(crate) fn qualified_name(server: &str, tool: &str) -> String {
    let raw = format!("{server}__{tool}");
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if raw.len() <= MAX_TOOL_NAME && raw.chars().all(valid) {
        return raw;
    }
    let clean: String = raw
        .chars()
        .map(|c| if valid(c) { c } else { '_' })
        .take(MAX_TOOL_NAME - HASH_DIGITS - 1)
        .collect();
    let digest = Sha256::digest(raw.as_bytes());
    let hash: String = digest
        .iter()
        .take(HASH_DIGITS / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{clean}_{hash}")
}

/// MCP's annotations are hints with defaults: `readOnlyHint` false, `idempotentHint`
/// false. `idempotentHint` only describes tools that write; a read-only tool has no
/// effect to repeat, so it counts as idempotent too.
fn meta_of(annotations: Option<&ToolAnnotations>, timeout: Duration) -> ToolMeta {
    let read_only = annotations.and_then(|a| a.read_only_hint).unwrap_or(false);
    let idempotent = read_only || annotations.and_then(|a| a.idempotent_hint).unwrap_or(false);
    ToolMeta {
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        idempotent,
        read_only,
        ..ToolMeta::default()
    }
}

/// The server's input schema as providers take it: without `$schema` and `title`
/// (some refuse them, as [`aos_kernel::tools::schema_of`] notes), and an object.
fn schema_of(schema: &JsonObject) -> Value {
    let mut schema = schema.clone();
    schema.remove("$schema");
    schema.remove("title");
    schema
        .entry("type")
        .or_insert_with(|| Value::String("object".into()));
    Value::Object(schema)
}

/// The model's input as MCP arguments: an object, or nothing.
fn arguments_of(tool: &str, input: Value) -> Result<Option<JsonObject>, ToolError> {
    let input = match input {
        // Some providers send a string of JSON, or nothing for an empty object.
        Value::String(s) => serde_json::from_str(&s)
            .map_err(|e| ToolError(format!("{tool}: arguments are not valid JSON ({e})")))?,
        v => v,
    };
    match input {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map)),
        other => Err(ToolError(format!(
            "{tool}: arguments must be a JSON object, not {other}"
        ))),
    }
}

/// The result as the model reads it: the text blocks, one per line; other blocks
/// named, not inlined; the structured result when there is no text at all.
fn render(result: CallToolResult) -> String {
    let mut parts = Vec::new();
    for block in result.content {
        match block {
            ContentBlock::Text(t) => parts.push(t.text),
            ContentBlock::Resource(r) => match r.resource {
                ResourceContents::TextResourceContents { text, .. } => parts.push(text),
                ResourceContents::BlobResourceContents { uri, mime_type, .. } => parts.push(
                    format!("[binary resource {uri} ({}) not shown]", mime_or(mime_type)),
                ),
                _ => parts.push("[resource of an unknown kind not shown]".into()),
            },
            ContentBlock::Image(i) => parts.push(format!("[image ({}) not shown]", i.mime_type)),
            ContentBlock::Audio(a) => parts.push(format!("[audio ({}) not shown]", a.mime_type)),
            ContentBlock::ResourceLink(l) => parts.push(format!("[resource link: {}]", l.uri)),
            _ => parts.push("[content of an unknown kind not shown]".into()),
        }
    }
    if parts.is_empty()
        && let Some(structured) = result.structured_content
    {
        return structured.to_string();
    }
    parts.join("\n")
}

fn mime_or(mime: Option<String>) -> String {
    mime.unwrap_or_else(|| "unknown type".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn is_provider_name(name: &str) -> bool {
        (1..=MAX_TOOL_NAME).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    fn annotations(v: Value) -> ToolAnnotations {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn meta_follows_the_annotations_with_mcp_defaults() {
        let t = Duration::from_millis(2500);
        let none = meta_of(None, t);
        assert!(!none.read_only && !none.idempotent && !none.runs_inline());
        assert_eq!(none.timeout_ms, 2500);
        assert!(!none.requires_approval);

        let empty = meta_of(Some(&annotations(json!({}))), t);
        assert!(!empty.runs_inline());

        let read_only = meta_of(Some(&annotations(json!({"readOnlyHint": true}))), t);
        assert!(read_only.read_only && read_only.idempotent && read_only.runs_inline());

        let idempotent = meta_of(
            Some(&annotations(
                json!({"readOnlyHint": false, "idempotentHint": true}),
            )),
            t,
        );
        assert!(!idempotent.read_only && idempotent.idempotent && idempotent.runs_inline());
    }

    #[test]
    fn a_valid_name_is_kept_as_is() {
        assert_eq!(qualified_name("crm", "lookup_order"), "crm__lookup_order");
    }

    #[test]
    fn an_invalid_or_long_name_is_cleaned_cut_and_kept_apart() {
        let dotted = qualified_name("crm", "orders.lookup");
        let underscored = qualified_name("crm", "orders_lookup");
        assert!(is_provider_name(&dotted), "{dotted}");
        assert!(dotted.starts_with("crm__orders_lookup_"), "{dotted}");
        assert_ne!(dotted, underscored);

        let long_a = qualified_name("crm", &format!("{}a", "x".repeat(80)));
        let long_b = qualified_name("crm", &format!("{}b", "x".repeat(80)));
        assert!(is_provider_name(&long_a) && is_provider_name(&long_b));
        assert_eq!(long_a.len(), MAX_TOOL_NAME);
        assert_ne!(long_a, long_b);

        let unicode = qualified_name("crm", "résumé");
        assert!(is_provider_name(&unicode), "{unicode}");
    }

    #[test]
    fn the_schema_loses_keys_providers_refuse_and_is_an_object() {
        let schema = json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Args", "type": "object", "properties": {"id": {"type": "string"}}});
        let Value::Object(schema) = schema else {
            unreachable!()
        };
        assert_eq!(
            schema_of(&schema),
            json!({"type": "object", "properties": {"id": {"type": "string"}}})
        );
        assert_eq!(schema_of(&JsonObject::new()), json!({"type": "object"}));
    }

    #[test]
    fn arguments_are_an_object_or_nothing() {
        assert_eq!(arguments_of("t", Value::Null).unwrap(), None);
        assert_eq!(
            arguments_of("t", json!({"a": 1})).unwrap().unwrap()["a"],
            json!(1)
        );
        assert_eq!(
            arguments_of("t", json!("{\"a\": 1}")).unwrap().unwrap()["a"],
            json!(1)
        );
        let err = arguments_of("t", json!([1])).unwrap_err();
        assert!(err.0.contains("must be a JSON object"), "{err}");
        let err = arguments_of("t", json!("{oops")).unwrap_err();
        assert!(err.0.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn results_render_text_and_name_everything_else() {
        let result: CallToolResult = serde_json::from_value(json!({
            "content": [
                {"type": "text", "text": "first"},
                {"type": "image", "data": "AAAA", "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "inner"}},
                {"type": "text", "text": "last"}
            ]
        }))
        .unwrap();
        assert_eq!(
            render(result),
            "first\n[image (image/png) not shown]\ninner\nlast"
        );
        let structured: CallToolResult =
            serde_json::from_value(json!({"content": [], "structuredContent": {"n": 3}})).unwrap();
        assert_eq!(render(structured), "{\"n\":3}");
    }
}
