//! MCP tools against a real MCP server (the one in `common`: rmcp's streamable HTTP
//! server in axum on 127.0.0.1 port 0, with a read-only `lookup_order`, a
//! `create_ticket` with effects that counts its calls, an unannotated `cancel_order`
//! and a `slow` tool). Reached through `aos_mcp::connect` and the kernel's `Tool`
//! trait, as a wake would reach them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aos_kernel::tools::{Tool, ToolContext, ToolError};
use aos_kernel::{AgentName, SessionId, TaskId};
use aos_mcp::{McpError, McpServer};
use common::TestServer;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn ctx() -> ToolContext {
    ToolContext {
        agent: AgentName::new("support").unwrap(),
        session: SessionId::new("s-1").unwrap(),
        task: TaskId::new(0),
        now_ms: 0,
    }
}

async fn tools_of(server: McpServer) -> BTreeMap<String, Arc<dyn Tool>> {
    aos_mcp::connect(&[server])
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.spec().name, t))
        .collect()
}

async fn call(
    tools: &BTreeMap<String, Arc<dyn Tool>>,
    name: &str,
    input: Value,
) -> Result<String, ToolError> {
    tools[name].call(input, &ctx()).await
}

#[tokio::test]
async fn listing_gives_each_tool_under_the_server_name_with_its_schema_and_meta() {
    let server = TestServer::start().await;
    let tools = tools_of(server.config().timeout(Duration::from_millis(4321))).await;
    assert_eq!(
        tools.keys().collect::<Vec<_>>(),
        [
            "shop__cancel_order",
            "shop__create_ticket",
            "shop__lookup_order",
            "shop__slow"
        ]
    );

    let lookup = &tools["shop__lookup_order"];
    let spec = lookup.spec();
    assert_eq!(spec.description, "Look up an order by its id.");
    assert_eq!(spec.input_schema["type"], "object");
    assert_eq!(
        spec.input_schema["properties"]["order_id"]["type"],
        "string"
    );
    assert_eq!(
        spec.input_schema["properties"]["order_id"]["description"],
        "The order's id, e.g. A-1."
    );
    assert_eq!(spec.input_schema["required"], json!(["order_id"]));
    assert!(spec.input_schema.get("$schema").is_none());
    let meta = lookup.meta();
    assert!(meta.read_only && meta.idempotent && meta.runs_inline());
    assert!(!meta.requires_approval);
    assert_eq!(meta.timeout_ms, 4321);

    let ticket = &tools["shop__create_ticket"];
    assert_eq!(ticket.spec().input_schema["required"], json!(["title"]));
    let meta = ticket.meta();
    assert!(!meta.read_only && !meta.idempotent);
    assert!(
        !meta.runs_inline(),
        "a tool with effects must go through the outbox"
    );

    // No annotations at all: MCP's defaults, a tool with effects.
    let meta = tools["shop__cancel_order"].meta();
    assert!(!meta.read_only && !meta.idempotent && !meta.runs_inline());
    server.stop().await;
}

#[tokio::test]
async fn calls_return_the_tools_text_and_run_once_each() {
    let server = TestServer::start().await;
    let tools = tools_of(server.config()).await;

    let order = call(&tools, "shop__lookup_order", json!({"order_id": "A-1"})).await;
    assert_eq!(
        order.unwrap(),
        "Order A-1: 2 items,\nshipped on 2025-03-02."
    );

    let first = call(
        &tools,
        "shop__create_ticket",
        json!({"title": "Printer on fire"}),
    )
    .await;
    assert_eq!(first.unwrap(), "ticket T-1 opened: Printer on fire");
    // Arguments as a JSON string, as some providers send them.
    let second = call(
        &tools,
        "shop__create_ticket",
        json!("{\"title\": \"Again\"}"),
    )
    .await;
    assert_eq!(second.unwrap(), "ticket T-2 opened: Again");
    assert_eq!(server.tickets.load(Ordering::SeqCst), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_tool_error_and_a_refused_call_come_back_as_tool_errors() {
    let server = TestServer::start().await;
    let tools = tools_of(server.config()).await;

    let err = call(&tools, "shop__lookup_order", json!({"order_id": "Z-9"}))
        .await
        .unwrap_err();
    assert_eq!(err, ToolError("no order with id Z-9".into()));

    // Arguments that do not fit the schema: the server says why, for the model to fix.
    let err = call(&tools, "shop__create_ticket", json!({"name": "x"}))
        .await
        .unwrap_err();
    assert!(err.0.contains("missing field `title`"), "{err}");

    // A JSON-RPC error: the server refused the request itself.
    let err = call(&tools, "shop__cancel_order", json!({"order_id": "A-1"}))
        .await
        .unwrap_err();
    assert_eq!(
        err.0,
        "shop__cancel_order: the MCP server `shop` refused the call: \
         orders such as A-1 cannot be cancelled here"
    );

    let err = call(&tools, "shop__create_ticket", json!([1, 2]))
        .await
        .unwrap_err();
    assert!(err.0.contains("must be a JSON object"), "{err}");
    assert_eq!(server.tickets.load(Ordering::SeqCst), 0);
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_gives_a_readable_error() {
    // A port that was just free: nothing listens on it.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = McpServer::new("shop", format!("http://{addr}/mcp?key=secret"))
        .timeout(Duration::from_secs(3));
    let err = aos_mcp::connect(&[config])
        .await
        .err()
        .expect("no server, no tools");
    assert!(matches!(err, McpError::Unavailable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("MCP server `shop` at http://{addr}/mcp: ")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
    assert!(!text.contains("secret"), "the query is left out: {text}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_at_connect_with_the_status() {
    let server = TestServer::start().await;
    let config = McpServer::new("shop", format!("http://{}/mcp", server.addr))
        .header("Authorization", "Bearer wrong");
    let err = aos_mcp::connect(&[config]).await.err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("HTTP 401 Unauthorized: no entry"), "{text}");
    assert!(
        !text.contains("wrong"),
        "the credential is not shown: {text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_call_to_a_stopped_server_is_a_readable_tool_error_and_a_later_call_reconnects() {
    let server = TestServer::start().await;
    let addr = server.addr;
    let tools = tools_of(server.config()).await;
    server.stop().await;

    let err = call(&tools, "shop__lookup_order", json!({"order_id": "A-1"}))
        .await
        .unwrap_err();
    assert!(
        err.0
            .starts_with("shop__lookup_order: the MCP server `shop` is unavailable:"),
        "{err}"
    );
    assert!(err.0.to_lowercase().contains("connection refused"), "{err}");

    // The server comes back; the next call opens a new session by itself.
    let server = TestServer::start_on(addr).await;
    let ticket = call(&tools, "shop__create_ticket", json!({"title": "Back"})).await;
    assert_eq!(ticket.unwrap(), "ticket T-1 opened: Back");
    assert_eq!(server.tickets.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_session_is_reopened_on_the_next_call_which_runs_once() {
    let first = TestServer::start().await;
    let addr = first.addr;
    let tools = tools_of(first.config()).await;
    assert!(
        call(&tools, "shop__lookup_order", json!({"order_id": "A-1"}))
            .await
            .is_ok()
    );
    // The server restarts: every session it knew is gone.
    first.stop().await;
    let second = TestServer::start_on(addr).await;

    let ticket = call(
        &tools,
        "shop__create_ticket",
        json!({"title": "After restart"}),
    )
    .await;
    assert_eq!(ticket.unwrap(), "ticket T-1 opened: After restart");
    assert_eq!(second.tickets.load(Ordering::SeqCst), 1);
    let again = call(&tools, "shop__lookup_order", json!({"order_id": "A-1"})).await;
    assert!(again.is_ok(), "{again:?}");
    second.stop().await;
}

#[tokio::test]
async fn a_slow_call_times_out_with_a_readable_error_and_the_session_survives() {
    let server = TestServer::start().await;
    let tools = tools_of(server.config().timeout(Duration::from_millis(300))).await;

    let err = call(&tools, "shop__slow", json!({})).await.unwrap_err();
    assert!(err.0.contains("no answer within 300 ms"), "{err}");
    let order = call(&tools, "shop__lookup_order", json!({"order_id": "A-1"})).await;
    assert!(order.is_ok(), "{order:?}");
    server.stop().await;
}

#[tokio::test]
async fn two_servers_under_one_name_are_refused_before_connecting() {
    let server = TestServer::start().await;
    let err = aos_mcp::connect(&[server.config(), server.config()])
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, McpError::Config { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "MCP server `shop`: two servers are configured under this name"
    );
    server.stop().await;
}
