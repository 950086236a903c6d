//! aos-agents
