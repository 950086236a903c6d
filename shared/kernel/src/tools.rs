//! Synchronous tools: run inline during a wake. A tool must be safe to run again,
//! because a wake that crashes before its commit runs again from the start. Anything
//! with an effect on the world goes through the outbox instead (see the kernel tools).

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

#[async_trait]
pub trait Tool: Send + Sync {
    fn spec(&self) -> ToolSpec;
    async fn call(&self, input: Value, ctx: &ToolContext) -> Result<String, ToolError>;
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
