//! The set of agents a deployment runs, checked as a whole: every agent an agent may
//! message exists, every tool it names is registered.

use crate::model::{AgentDef, AgentName, ModelError};
use crate::tools::ToolRegistry;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct Catalog {
    agents: BTreeMap<AgentName, AgentDef>,
}

impl Catalog {
    pub fn new(defs: impl IntoIterator<Item = AgentDef>) -> Result<Self, ModelError> {
        let mut agents = BTreeMap::new();
        for def in defs {
            if agents.contains_key(&def.name) {
                return Err(ModelError::InvalidAgent(format!(
                    "agent {} is defined twice",
                    def.name
                )));
            }
            agents.insert(def.name.clone(), def);
        }
        for def in agents.values() {
            for peer in &def.may_message {
                if !agents.contains_key(peer) {
                    return Err(ModelError::InvalidAgent(format!(
                        "agent {} may message {peer}, which is not defined",
                        def.name
                    )));
                }
            }
        }
        Ok(Self { agents })
    }

    /// Fails when an agent names a tool the registry lacks.
    pub fn check_tools(&self, tools: &ToolRegistry) -> Result<(), ModelError> {
        for def in self.agents.values() {
            for t in &def.tools {
                if tools.get(t).is_none() {
                    return Err(ModelError::InvalidAgent(format!(
                        "agent {} uses tool {t:?}, which is not registered (registered: {})",
                        def.name,
                        tools.names().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&AgentDef> {
        self.agents.get(name)
    }

    pub fn agents(&self) -> impl Iterator<Item = &AgentDef> {
        self.agents.values()
    }

    pub fn names(&self) -> String {
        self.agents
            .keys()
            .map(AgentName::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
