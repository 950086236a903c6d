//! Tools: what a tool is (name, description, JSON schema of its input) and how the
//! kernel may run it ([`ToolMeta`]: timeout, idempotent, read-only, needs approval).
//!
//! The rule kept here: only a tool that is read-only or idempotent runs inline in a
//! wake, because a wake that crashes before its commit runs again from the start (its
//! result is journaled, so a retry normally replays it, but a crash between the call
//! and the journal write runs it again). A tool with effects that is neither goes
//! through the outbox and runs in a wake of its own, at most once.

use crate::ids::TaskId;
use crate::llm::ToolSpec;
use crate::model::{AgentName, SessionId};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a tool knows of the wake that calls it.
#[derive(Clone, Debug)]
pub struct ToolContext {
    pub agent: AgentName,
    pub session: SessionId,
    pub task: TaskId,
    pub now_ms: u64,
}

/// A tool's failure; its text goes back to the model as an error result.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct ToolError(pub String);

/// How the kernel may run a tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolMeta {
    /// Longest a call may take; past it the model gets a timeout error as the result.
    pub timeout_ms: u64,
    /// Running it twice with the same input has the effect of running it once.
    pub idempotent: bool,
    /// It changes nothing in the world (a lookup, a computation).
    pub read_only: bool,
    /// A person must approve each call before it runs.
    pub requires_approval: bool,
    /// Same input, same output, and no I/O (a computation over bundled data): running
    /// it again is free and exact, so its result is not journaled.
    pub deterministic: bool,
}

impl Default for ToolMeta {
    /// A read-only lookup with a 10 s timeout.
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            idempotent: true,
            read_only: true,
            requires_approval: false,
            deterministic: false,
        }
    }
}

impl ToolMeta {
    /// A pure computation: read-only, idempotent and deterministic.
    pub fn pure() -> Self {
        Self {
            deterministic: true,
            ..Self::default()
        }
    }
}

impl ToolMeta {
    /// Safe to run inline, where a crash may run it again.
    pub fn runs_inline(&self) -> bool {
        self.read_only || self.idempotent
    }
}

#[async_trait]
pub trait Tool: Send + Sync {
    fn spec(&self) -> ToolSpec;
    /// How the kernel may run this tool; by default a read-only lookup.
    fn meta(&self) -> ToolMeta {
        ToolMeta::default()
    }
    async fn call(&self, input: Value, ctx: &ToolContext) -> Result<String, ToolError>;
}

/// The JSON schema of a tool's typed arguments, as providers take it (no `$schema`
/// or `title` keys, which some providers refuse).
pub fn schema_of<T: schemars::JsonSchema>() -> Value {
    let mut v = schemars::schema_for!(T).to_value();
    if let Value::Object(map) = &mut v {
        map.remove("$schema");
        map.remove("title");
    }
    v
}

/// Parses a tool's JSON input into its typed arguments. The error, which goes back to
/// the model as the tool result, says what was wrong and shows the schema, so the
/// model can correct itself on its next step.
pub fn parse_args<T: serde::de::DeserializeOwned>(
    tool: &str,
    input: Value,
    schema: &Value,
) -> Result<T, ToolError> {
    let input = match input {
        // Some providers send no arguments at all for an empty object.
        Value::Null => Value::Object(Default::default()),
        // Some send the arguments as a JSON string.
        Value::String(s) => serde_json::from_str(&s)
            .map_err(|e| ToolError(format!("{tool}: arguments are not valid JSON ({e})")))?,
        v => v,
    };
    serde_json::from_value(input).map_err(|e| {
        ToolError(format!(
            "{tool}: invalid arguments: {e}. Expected input matching this JSON schema: {schema}"
        ))
    })
}

/// Tools by name.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

impl ToolRegistry {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with(mut self, tool: Arc<dyn Tool>) -> Self {
        self.insert(tool);
        self
    }
    pub fn insert(&mut self, tool: Arc<dyn Tool>) {
        self.tools.insert(tool.spec().name, tool);
    }
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }
}
