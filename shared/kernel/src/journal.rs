//! The journal: every model response and every inline tool result, recorded in the
//! blob store before the wake acts on it.
//!
//! The rule kept here: a retried wake never pays for a step twice. A model step is
//! keyed by a hash of its canonical request (what the model reads: agent, system
//! prompt, transcript, context, tools, output limit; not the route, so a step answered
//! by a fallback model is still that step), and a tool result by a hash of the call
//! (agent, session, call id, tool, arguments). A wake that runs again after a crash, a
//! commit conflict, a deadline or a transient error rebuilds the same requests from
//! the same state, finds their responses here and replays them, with the same tool-call
//! ids. The same records replay a whole task offline (`aos replay --task`): see
//! [`Overlay`].

use crate::ids::TaskId;
use crate::llm::{LlmError, Model, ModelRequest, ModelResponse, ToolSpec};
use crate::ports::{BlobStore, PortError};
use crate::tools::{Tool, ToolContext, ToolError, ToolMeta, ToolRegistry};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a task's journal lives in the blob store.
pub fn task_prefix(task: TaskId) -> String {
    format!("journal/{task}/")
}

/// The key of a model step: a hash of what the model reads.
pub fn step_key(task: TaskId, request: &ModelRequest) -> String {
    /// Streamed into the hash without copying the transcript.
    #[derive(Serialize)]
    struct Canonical<'a> {
        agent: &'a str,
        system: &'a str,
        messages: &'a [crate::llm::Message],
        context: &'a Option<String>,
        tools: &'a [ToolSpec],
        max_tokens: u32,
    }
    let canonical = Canonical {
        agent: &request.agent,
        system: &request.system,
        messages: &request.messages,
        context: &request.context,
        tools: &request.tools,
        max_tokens: request.max_tokens,
    };
    format!("{}model/{}", task_prefix(task), hash(&canonical))
}

/// The key of an inline tool call's result.
pub fn tool_key(
    task: TaskId,
    agent: &str,
    session: &str,
    call_id: &str,
    name: &str,
    input: &Value,
) -> String {
    let canonical = (agent, session, call_id, name, input);
    format!("{}tool/{}", task_prefix(task), hash(&canonical))
}

/// SHA-256 of the JSON encoding of `v`, in hex.
pub fn hash<T: Serialize>(v: &T) -> String {
    struct Hasher(Sha256);
    impl std::io::Write for Hasher {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hasher(Sha256::new());
    // Writing into a hasher cannot fail, and every value here encodes.
    let _ = serde_json::to_writer(&mut h, v);
    h.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A recorded tool result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolRecord {
    pub result: String,
    pub is_error: bool,
}

/// Reads and writes journal records through the blob store.
#[derive(Clone)]
pub struct Journal {
    blobs: Arc<dyn BlobStore>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

impl Journal {
    pub fn new(blobs: Arc<dyn BlobStore>) -> Self {
        Self { blobs }
    }

    /// A recorded model response. A record that no longer decodes (written by an
    /// older version) counts as absent: the step is simply paid for again.
    pub async fn response(&self, key: &str) -> Result<Option<ModelResponse>, PortError> {
        self.read(key).await
    }

    pub async fn record_response(
        &self,
        key: &str,
        response: &ModelResponse,
    ) -> Result<(), PortError> {
        self.write(key, response).await
    }

    pub async fn tool(&self, key: &str) -> Result<Option<ToolRecord>, PortError> {
        self.read(key).await
    }

    pub async fn record_tool(&self, key: &str, record: &ToolRecord) -> Result<(), PortError> {
        self.write(key, record).await
    }

    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, PortError> {
        Ok(match self.blobs.get(key).await? {
            Some(bytes) => serde_json::from_slice(&bytes).ok(),
            None => None,
        })
    }

    async fn write<T: Serialize>(&self, key: &str, value: &T) -> Result<(), PortError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| PortError::Rejected(format!("journal record does not encode: {e}")))?;
        self.blobs.put(key, &bytes).await
    }
}

/// A blob store that writes to `local` and reads journal records from `local`, then
/// from `recorded`: how `aos replay --task` runs a finished task again in a scratch
/// store from the original run's journal, with no model and no tool reachable.
pub struct Overlay {
    pub local: Arc<dyn BlobStore>,
    pub recorded: Arc<dyn BlobStore>,
    /// Model steps served from the recorded journal.
    pub replayed_steps: AtomicU64,
    /// Tool results served from the recorded journal.
    pub replayed_tools: AtomicU64,
    /// Steps that reached the model anyway ([`Diverged`] answered them).
    pub model_calls: AtomicU64,
    /// Tool calls that reached a tool anyway ([`ReplayTool`] refused them).
    pub tool_runs: AtomicU64,
}

impl Overlay {
    pub fn new(local: Arc<dyn BlobStore>, recorded: Arc<dyn BlobStore>) -> Self {
        Self {
            local,
            recorded,
            replayed_steps: AtomicU64::new(0),
            replayed_tools: AtomicU64::new(0),
            model_calls: AtomicU64::new(0),
            tool_runs: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Overlay")
    }
}

#[async_trait]
impl BlobStore for Overlay {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), PortError> {
        self.local.put(key, bytes).await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        match self.local.get(key).await? {
            Some(b) => Ok(Some(b)),
            None if key.starts_with("journal/") || key.starts_with("bodies/") => {
                let found = self.recorded.get(key).await?;
                if found.is_some() {
                    let counter = if key.contains("/model/") {
                        &self.replayed_steps
                    } else {
                        &self.replayed_tools
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(found)
            }
            None => Ok(None),
        }
    }
}

/// The model of a replay: every step must come from the journal, so reaching this
/// model means the run diverged from the recording (a prompt, a tool list or code
/// changed) at this step. It fails the task with a reason that says so.
#[derive(Debug)]
pub struct Diverged(pub Arc<Overlay>);

#[async_trait]
impl Model for Diverged {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, LlmError> {
        self.0.model_calls.fetch_add(1, Ordering::Relaxed);
        Err(LlmError::Permanent(format!(
            "replay diverged: no recorded response for this step of agent {} \
             (step {} of its session); the prompt, the tools or the transcript differ \
             from the recorded run",
            request.agent,
            request.messages.len().div_ceil(2)
        )))
    }
}

/// A tool in a replay: the model sees the real tool's spec, but it never runs; its
/// result must come from the journal.
pub struct ReplayTool {
    pub tool: Arc<dyn Tool>,
    pub overlay: Arc<Overlay>,
}

impl std::fmt::Debug for ReplayTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplayTool")
    }
}

#[async_trait]
impl Tool for ReplayTool {
    fn spec(&self) -> ToolSpec {
        self.tool.spec()
    }
    fn meta(&self) -> ToolMeta {
        self.tool.meta()
    }
    async fn call(&self, _input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        self.overlay.tool_runs.fetch_add(1, Ordering::Relaxed);
        Err(ToolError(format!(
            "replay diverged: no recorded result for this call of {}",
            self.tool.spec().name
        )))
    }
}

/// The registry of a replay: every tool of `tools` as a [`ReplayTool`], but for the
/// deterministic ones (pure computations, never journaled), which run again.
pub fn replay_tools(tools: &ToolRegistry, overlay: &Arc<Overlay>) -> ToolRegistry {
    let mut out = ToolRegistry::new();
    for name in tools.names() {
        if let Some(t) = tools.get(name) {
            if t.meta().deterministic {
                out.insert(t.clone());
            } else {
                out.insert(Arc::new(ReplayTool {
                    tool: t.clone(),
                    overlay: overlay.clone(),
                }));
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::llm::Message;

    fn request() -> ModelRequest {
        ModelRequest {
            model: "openai:a".into(),
            fallbacks: vec![],
            agent: "primary".into(),
            system: "s".into(),
            messages: vec![Message::user("hi")],
            context: None,
            tools: vec![],
            max_tokens: 10,
            cache_key: Some("sess".into()),
            timeout_ms: Some(5),
        }
    }

    #[test]
    fn a_step_is_the_same_step_whichever_route_answers_it() {
        let t = TaskId::new(1);
        let a = request();
        let mut b = request();
        b.model = "anthropic:b".into();
        b.timeout_ms = None;
        b.cache_key = None;
        assert_eq!(step_key(t, &a), step_key(t, &b));
        let mut c = request();
        c.system = "changed prompt".into();
        assert_ne!(step_key(t, &a), step_key(t, &c));
        let mut d = request();
        d.context = Some("memory".into());
        assert_ne!(step_key(t, &a), step_key(t, &d));
        assert!(step_key(t, &a).starts_with(&task_prefix(t)));
    }
}
