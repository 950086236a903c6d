//! A kernel over in-memory ports with agents shaped like the reference ones.
#![allow(dead_code, clippy::unwrap_used)]

use aos_kernel::Catalog;
use aos_kernel::model::AgentDef;
use aos_kernel::testkit::MemSystem;
use aos_kernel::tools::ToolRegistry;

pub fn system() -> MemSystem {
    let defs = [
        "name='primary'\npurpose='orchestrator'\nsystem_prompt='s'\nmay_message=['weather','finance']\n",
        "name='weather'\npurpose='weather'\nsystem_prompt='s'\nkeywords=['weather']\n",
        "name='finance'\npurpose='money'\nsystem_prompt='s'\nkeywords=['eur','usd','gbp']\n",
    ];
    let agents: Vec<AgentDef> = defs
        .iter()
        .map(|d| AgentDef::from_toml(d).unwrap())
        .collect();
    MemSystem::new(Catalog::new(agents).unwrap(), ToolRegistry::new(), None)
}

pub fn fixture(path: &str) -> String {
    let full = format!("{}/../../events/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}
