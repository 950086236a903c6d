//! An agent uses MCP tools through the kernel's wake cycle: the server in `common`
//! (rmcp over streamable HTTP, on 127.0.0.1 port 0) registered as `crm` with every tool
//! it lists, an agent allowed two of them, and a scripted model that decides each step
//! from the messages it is sent. What the user sees is asserted: the server's answers
//! reach the model and the final answer, mistakes come back to the model as errors
//! it can read, a tool the agent may not use never reaches the server, a tool with
//! effects runs once however often its envelope arrives, and the timeline names
//! every call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aos_kernel::llm::{Content, LlmError, Model, ModelRequest, ModelResponse, StopReason};
use aos_kernel::model::{AgentDef, Envelope, EventKind, Kind, TaskStatus};
use aos_kernel::ports::{Inbox, TaskStore};
use aos_kernel::testkit::MemSystem;
use aos_kernel::tools::ToolRegistry;
use aos_kernel::{Catalog, Task, TaskId, WakeOutcome};
use async_trait::async_trait;
use common::TestServer;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

type Step = (Vec<Content>, StopReason);

/// A model that answers each request from a function and keeps every request, so a
/// test can look at exactly what the model was shown.
struct Scripted<F> {
    script: F,
    requests: Mutex<Vec<ModelRequest>>,
}

impl<F> Scripted<F> {
    fn requests(&self) -> Vec<ModelRequest> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait]
impl<F> Model for Scripted<F>
where
    F: Fn(&ModelRequest) -> Step + Send + Sync,
{
    async fn complete(&self, r: &ModelRequest) -> Result<ModelResponse, LlmError> {
        self.requests.lock().unwrap().push(r.clone());
        let (content, stop) = (self.script)(r);
        Ok(ModelResponse {
            content,
            stop,
            usage: Default::default(),
            model: r.model.clone(),
        })
    }
}

fn text(t: &str) -> Step {
    (vec![Content::Text { text: t.into() }], StopReason::EndTurn)
}

fn calls(list: &[(&str, &str, Value)]) -> Step {
    let content = list
        .iter()
        .map(|(id, name, input)| Content::ToolUse {
            id: (*id).into(),
            name: (*name).into(),
            input: input.clone(),
        })
        .collect();
    (content, StopReason::ToolUse)
}

/// A tool result as the model was shown it.
#[derive(Debug, PartialEq, Eq)]
struct Shown {
    id: String,
    is_error: bool,
    content: String,
}

/// The tool results in the last message of a request.
fn results(r: &ModelRequest) -> Vec<Shown> {
    let Some(last) = r.messages.last() else {
        return Vec::new();
    };
    last.content
        .iter()
        .filter_map(|c| match c {
            Content::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => Some(Shown {
                id: tool_use_id.clone(),
                is_error: *is_error,
                content: content.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// The model's answer quoting every result it was just shown, errors marked.
fn quote_results(r: &ModelRequest) -> Step {
    let quoted: Vec<String> = results(r)
        .iter()
        .map(|s| {
            let mark = if s.is_error { "ERROR " } else { "" };
            format!("[{}] {mark}{}", s.id, s.content)
        })
        .collect();
    text(&format!("Here is what I found: {}", quoted.join(" | ")))
}

struct Rig<F> {
    server: TestServer,
    sys: MemSystem,
    model: Arc<Scripted<F>>,
}

/// The `crm` server with all its tools registered, and `support` allowed two of them.
async fn rig<F>(script: F) -> Rig<F>
where
    F: Fn(&ModelRequest) -> Step + Send + Sync + 'static,
{
    let server = TestServer::start().await;
    let mut tools = ToolRegistry::new();
    for tool in aos_mcp::connect(&[server.config_as("crm")]).await.unwrap() {
        tools.insert(tool);
    }
    let mut registered: Vec<&str> = tools.names().collect();
    registered.sort_unstable();
    assert_eq!(
        registered,
        [
            "crm__cancel_order",
            "crm__create_ticket",
            "crm__lookup_order",
            "crm__slow"
        ],
        "every tool the server lists is registered"
    );
    let support = AgentDef::from_toml(
        "name='support'\npurpose='answers customers about their orders'\n\
         system_prompt='Help the customer.'\n\
         tools=['crm__lookup_order','crm__create_ticket']\n",
    )
    .unwrap();
    let model = Arc::new(Scripted {
        script,
        requests: Mutex::new(Vec::new()),
    });
    let sys = MemSystem::new(
        Catalog::new(vec![support]).unwrap(),
        tools,
        Some(model.clone()),
    );
    Rig { server, sys, model }
}

impl<F> Rig<F> {
    async fn task(&self, id: TaskId) -> Task {
        self.sys.store.get_task(id).await.unwrap().unwrap()
    }

    /// The details of the task's tool-call events, in timeline order.
    async fn tool_calls(&self, id: TaskId) -> Vec<String> {
        self.sys
            .store
            .timeline(id)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EventKind::ToolCall)
            .map(|e| e.detail)
            .collect()
    }

    /// Takes the next envelope waiting for `support` off its queue.
    async fn next(&self) -> Envelope {
        let m = self.sys.queues.receive("support", 1, 30_000).await.unwrap();
        let m = m.into_iter().next().expect("a message waits");
        self.sys.queues.delete("support", &m.receipt).await.unwrap();
        Envelope::parse(&m.body).unwrap()
    }

    /// How many `Kind::Tool` envelopes were ever sent.
    fn tool_envelopes(&self) -> usize {
        let sent = self.sys.queues.sent.lock().unwrap();
        sent.iter().filter(|e| e.kind == Kind::Tool).count()
    }
}

const SHIPPED: &str = "Order A-1: 2 items,\nshipped on 2025-03-02.";

#[tokio::test]
async fn an_order_lookup_on_the_server_answers_the_customer() {
    let rig = rig(|r: &ModelRequest| match r.messages.len() {
        1 => calls(&[("look", "crm__lookup_order", json!({"order_id": "A-1"}))]),
        _ => quote_results(r),
    })
    .await;
    let t = rig
        .sys
        .kernel
        .submit("support", "Where is my order A-1?", None)
        .await
        .unwrap();
    rig.sys.drain().await;

    let task = rig.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{:?}", task.error);
    assert_eq!(
        task.result.as_deref(),
        Some(format!("Here is what I found: [look] {SHIPPED}").as_str())
    );
    assert_eq!(task.usage.tool_calls, 1);

    let requests = rig.model.requests();
    assert_eq!(requests.len(), 2, "one step to call, one to answer");
    // The model is offered the agent's MCP tools with the server's schema, and no
    // others from the server.
    let offered: Vec<&str> = requests[0]
        .tools
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| n.starts_with("crm__"))
        .collect();
    assert_eq!(offered, ["crm__lookup_order", "crm__create_ticket"]);
    let lookup = &requests[0].tools[0];
    assert_eq!(lookup.description, "Look up an order by its id.");
    assert_eq!(lookup.input_schema["required"], json!(["order_id"]));
    // The server's answer is the tool result, every text block of it.
    assert_eq!(
        results(&requests[1]),
        [Shown {
            id: "look".into(),
            is_error: false,
            content: SHIPPED.into(),
        }]
    );

    assert_eq!(rig.server.calls(), ["lookup_order"]);
    assert_eq!(rig.tool_envelopes(), 0, "a read-only tool runs inline");
    assert_eq!(
        rig.tool_calls(t.id).await,
        [r#"crm__lookup_order({"order_id":"A-1"}) → Order A-1: 2 items, shipped on 2025-03-02."#]
    );
    rig.server.stop().await;
}

#[tokio::test]
async fn a_disallowed_tool_and_bad_arguments_come_back_to_the_model_as_errors() {
    let rig = rig(|r: &ModelRequest| match r.messages.len() {
        1 => calls(&[
            // Registered and served, but not on the agent's list.
            ("cancel", "crm__cancel_order", json!({"order_id": "A-1"})),
            // Arguments as a string that is not JSON: never sent.
            (
                "garbled",
                "crm__lookup_order",
                Value::String("{not json".into()),
            ),
            // Well-formed, but the server's schema wants a string.
            ("typed", "crm__lookup_order", json!({"order_id": 42})),
        ]),
        _ => quote_results(r),
    })
    .await;
    let t = rig
        .sys
        .kernel
        .submit("support", "Cancel order A-1.", None)
        .await
        .unwrap();
    rig.sys.drain().await;

    let requests = rig.model.requests();
    assert_eq!(
        requests.len(),
        2,
        "the model is asked again after the errors"
    );
    let shown = results(&requests[1]);
    let ids: Vec<&str> = shown.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["cancel", "garbled", "typed"], "one result per call");
    assert!(shown.iter().all(|s| s.is_error), "{shown:#?}");
    assert_eq!(
        shown[0].content,
        r#"no tool named "crm__cancel_order" is available to you"#
    );
    assert!(
        shown[1]
            .content
            .starts_with("crm__lookup_order: arguments are not valid JSON ("),
        "{}",
        shown[1].content
    );
    // The server's own words on the type, for the model to fix its call.
    assert!(
        shown[2].content.contains("invalid type: integer `42`")
            && shown[2].content.contains("expected a string"),
        "{}",
        shown[2].content
    );

    // Only the well-formed allowed call reached the server; the disallowed tool,
    // which has effects, was not even queued to run later.
    assert_eq!(rig.server.calls(), ["lookup_order"]);
    assert_eq!(rig.tool_envelopes(), 0);

    let task = rig.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{:?}", task.error);
    let answer = task.result.unwrap();
    assert!(
        answer.contains(r#"[cancel] ERROR no tool named "crm__cancel_order""#),
        "{answer}"
    );

    let events = rig.tool_calls(t.id).await;
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(
        events[0],
        "crm__cancel_order refused: not one of this agent's tools"
    );
    assert!(
        events[1].starts_with(r#"crm__lookup_order("{not json") failed: "#),
        "{}",
        events[1]
    );
    assert!(
        events[2].starts_with(r#"crm__lookup_order({"order_id":42}) failed: "#),
        "{}",
        events[2]
    );
    rig.server.stop().await;
}

/// One ticket, then an answer quoting its result.
fn ticket_then_answer(title: Value) -> impl Fn(&ModelRequest) -> Step + Send + Sync + 'static {
    move |r: &ModelRequest| match r.messages.len() {
        1 => calls(&[("ticket", "crm__create_ticket", title.clone())]),
        _ => quote_results(r),
    }
}

#[tokio::test]
async fn a_ticket_is_opened_once_though_its_tool_envelope_is_delivered_twice() {
    let rig = rig(ticket_then_answer(
        json!({"title": "Order A-1 arrived broken"}),
    ))
    .await;
    let t = rig
        .sys
        .kernel
        .submit("support", "My order A-1 arrived broken.", None)
        .await
        .unwrap();
    let first = rig.next().await;
    rig.sys.kernel.wake(first).await.unwrap();
    let tool_env = rig.next().await;
    assert_eq!(tool_env.kind, Kind::Tool);
    assert!(rig.server.calls().is_empty(), "not run inline");

    let out = rig.sys.kernel.wake(tool_env.clone()).await.unwrap();
    assert_eq!(out, WakeOutcome::Applied { outbox: 1 });
    // The queue delivers it again: the server is not called again.
    let again = rig.sys.kernel.wake(tool_env).await.unwrap();
    assert_eq!(again, WakeOutcome::Duplicate);
    rig.sys.drain().await;

    assert_eq!(rig.server.tickets.load(Ordering::SeqCst), 1);
    assert_eq!(rig.server.calls(), ["create_ticket"]);
    assert_eq!(rig.tool_envelopes(), 1);

    let requests = rig.model.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        results(&requests[1]),
        [Shown {
            id: "ticket".into(),
            is_error: false,
            content: "ticket T-1 opened: Order A-1 arrived broken".into(),
        }]
    );
    let task = rig.task(t.id).await;
    assert_eq!(task.status, TaskStatus::Succeeded, "{:?}", task.error);
    assert_eq!(
        task.result.as_deref(),
        Some("Here is what I found: [ticket] ticket T-1 opened: Order A-1 arrived broken")
    );
    assert_eq!(task.usage.tool_calls, 1);

    let args = r#"crm__create_ticket({"title":"Order A-1 arrived broken"})"#;
    assert_eq!(
        rig.tool_calls(t.id).await,
        [
            format!("{args} queued to run at most once"),
            format!("{args} started (runs at most once)"),
            format!("{args} → ticket T-1 opened: Order A-1 arrived broken"),
        ]
    );
    rig.server.stop().await;
}

/// A ticket the server refuses (no `title`): the rig after the task has run, and the
/// results the model was shown on its second step.
async fn refused_ticket() -> (Rig<impl Fn(&ModelRequest) -> Step>, TaskId, Vec<Shown>) {
    let rig = rig(ticket_then_answer(json!({"name": "Broken"}))).await;
    let t = rig
        .sys
        .kernel
        .submit("support", "Open a ticket.", None)
        .await
        .unwrap();
    rig.sys.drain().await;
    let requests = rig.model.requests();
    assert_eq!(
        requests.len(),
        2,
        "the model is asked again after the error"
    );
    let shown = results(&requests[1]);
    (rig, t.id, shown)
}

#[tokio::test]
async fn a_ticket_the_server_refuses_reaches_the_model_with_the_reason_and_runs_once() {
    let (rig, task, shown) = refused_ticket().await;
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].id, "ticket");
    assert!(
        shown[0].content.contains("missing field `title`"),
        "{}",
        shown[0].content
    );
    assert_eq!(rig.server.calls(), ["create_ticket"], "sent once");
    assert_eq!(rig.server.tickets.load(Ordering::SeqCst), 0, "none opened");
    let events = rig.tool_calls(task).await;
    assert_eq!(events.len(), 3, "{events:#?}");
    assert!(
        events[2].starts_with(r#"crm__create_ticket({"name":"Broken"}) failed: "#),
        "{}",
        events[2]
    );
    assert_eq!(
        rig.task(task).await.status,
        TaskStatus::Succeeded,
        "the model answered"
    );
    rig.server.stop().await;
}

/// An error from a tool with effects (answered by a reply envelope) reaches the model
/// flagged as an error, exactly as the same error from an inline tool does.
#[tokio::test]
async fn a_ticket_the_server_refuses_is_flagged_as_an_error_to_the_model() {
    let (rig, _, shown) = refused_ticket().await;
    assert!(shown[0].is_error, "{shown:#?}");
    rig.server.stop().await;
}
