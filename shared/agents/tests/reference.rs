//! The reference agents and their tools fit together: every definition parses, the
//! orchestrator may reach both specialists, and every tool a definition names exists.

#![allow(clippy::unwrap_used)]

use aos_agents::{ToolsConfig, reference_agents, reference_tools};
use aos_kernel::AgentName;
use aos_kernel::tools::ToolContext;
use aos_kernel::{SessionId, TaskId};
use serde_json::json;

#[test]
fn the_three_reference_agents_parse() {
    let agents = reference_agents().unwrap();
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, vec!["primary", "weather", "finance"]);
    let primary = &agents[0];
    let reach: Vec<&str> = primary.may_message.iter().map(AgentName::as_str).collect();
    assert!(
        reach.contains(&"weather") && reach.contains(&"finance"),
        "{reach:?}"
    );
    for a in &agents[1..] {
        assert!(!a.tools.is_empty(), "{} has no tools", a.name);
        assert!(!a.keywords.is_empty(), "{} has no routing keywords", a.name);
    }
}

#[test]
fn every_tool_an_agent_names_is_registered() {
    let tools = reference_tools(&ToolsConfig::default());
    for agent in reference_agents().unwrap() {
        for tool in &agent.tools {
            let t = tools
                .get(tool)
                .unwrap_or_else(|| panic!("{} names {tool}, which is not registered", agent.name));
            let spec = t.spec();
            assert_eq!(&spec.name, tool);
            assert!(!spec.description.is_empty());
            assert_eq!(spec.input_schema["type"], "object", "{tool}");
            assert!(spec.input_schema["required"].is_array(), "{tool}");
        }
    }
}

/// The inputs the offline model builds (see `aos_kernel::offline`) are accepted as is.
#[tokio::test]
async fn the_offline_models_calls_fit_the_schemas() {
    let tools = reference_tools(&ToolsConfig {
        offline: true,
        ..ToolsConfig::default()
    });
    let ctx = ToolContext {
        agent: AgentName::new("finance").unwrap(),
        session: SessionId::new("s-1").unwrap(),
        task: TaskId::new(0),
        now_ms: 0,
    };
    let call = |name: &str, input| {
        let tool = tools.get(name).unwrap().clone();
        let ctx = ctx.clone();
        async move { tool.call(input, &ctx).await }
    };
    assert_eq!(
        call(
            "convert_currency",
            json!({"amount": 1250.0, "from": "EUR", "to": "USD"})
        )
        .await
        .unwrap(),
        "1250.00 EUR = 1356.25 USD at 1 EUR = 1.0850 USD (bundled reference-rate sample, not live)"
    );
    assert_eq!(
        call("calculator", json!({"expression": "12 * (3 + 4)"}))
            .await
            .unwrap(),
        "12 * (3 + 4) = 84"
    );
    let line = call("get_weather", json!({"city": "Paris"})).await.unwrap();
    assert!(line.contains("not live"), "{line}");
    let verdict = call(
        "check_invoice",
        json!({
            "lines": [{"description": "Widget", "quantity": 4, "unit_price": 12.5}],
            "vat_percent": 20,
            "stated_total": 60
        }),
    )
    .await
    .unwrap();
    assert!(
        verdict.starts_with("Stated total 60.00 matches"),
        "{verdict}"
    );
}

/// A payment asked of the orchestrator waits for a person: approved, it is sent once
/// and the answer carries its reference; the demo request never asks for approval.
#[tokio::test]
async fn a_payment_through_the_reference_agents_waits_for_approval_and_runs_once() {
    use aos_kernel::testkit::MemSystem;
    use aos_kernel::{Catalog, TaskStatus};
    let sys = MemSystem::new(
        Catalog::new(reference_agents().unwrap()).unwrap(),
        reference_tools(&ToolsConfig {
            offline: true,
            ..ToolsConfig::default()
        }),
        None,
    );
    let demo = sys
        .kernel
        .submit(
            "primary",
            "What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?",
            None,
        )
        .await
        .unwrap();
    let task = sys
        .kernel
        .submit("primary", "Pay 120 EUR to ACME Ltd for invoice 42", None)
        .await
        .unwrap();
    sys.drain().await;
    let get = |id| {
        let store = sys.store.clone();
        async move {
            use aos_kernel::ports::TaskStore;
            store.get_task(id).await.unwrap().unwrap()
        }
    };
    assert_eq!(get(demo.id).await.status, TaskStatus::Succeeded);
    assert_eq!(get(task.id).await.status, TaskStatus::Waiting);
    let pending = sys.kernel.pending_approvals("default", 10).await.unwrap();
    assert_eq!(pending.len(), 1, "only the payment asks: {pending:?}");
    assert_eq!(pending[0].tool, "send_payment");
    assert_eq!(pending[0].arguments["payee"], json!("ACME Ltd"));
    sys.kernel
        .decide("default", &pending[0].id, true, "alice", None)
        .await
        .unwrap();
    sys.drain().await;
    let done = get(task.id).await;
    assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
    let answer = done.result.unwrap();
    assert!(
        answer.contains("payment of 120.00 EUR to ACME Ltd for invoice 42 sent"),
        "{answer}"
    );
    assert_eq!(answer.matches("PAY-").count(), 1, "{answer}");
}
