//! What makes the kernel safe to expose: tenants never see or touch each other's
//! tasks, sessions or memory; a client's idempotency key never names anything but its
//! own task; a risky tool runs only after a person approves it, and exactly once; the
//! audit log verifies, and any change to it is named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_kernel::approvals::{ApprovalStatus, DecideError};
use aos_kernel::llm::ToolSpec;
use aos_kernel::model::{AgentDef, Envelope, Kind, TaskStatus};
use aos_kernel::ports::{SessionStore, TaskStore};
use aos_kernel::testkit::MemSystem;
use aos_kernel::tools::{Tool, ToolContext, ToolError, ToolMeta, ToolRegistry};
use aos_kernel::{Catalog, Submission, SubmitError, WakeOutcome};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const PAY: &str = "What is 1250 EUR in USD?";

/// A currency conversion that needs a person's approval (think: it places an order).
struct Guarded {
    runs: Arc<AtomicU64>,
    inline: bool,
}

#[async_trait]
impl Tool for Guarded {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "convert_currency".into(),
            description: "convert (needs approval)".into(),
            input_schema: json!({"type": "object"}),
        }
    }
    fn meta(&self) -> ToolMeta {
        ToolMeta {
            requires_approval: true,
            idempotent: self.inline,
            read_only: false,
            ..ToolMeta::default()
        }
    }
    async fn call(&self, input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(format!("{} EUR = {:.2} USD", input["amount"], 1356.25))
    }
}

fn system(inline: bool) -> (MemSystem, Arc<AtomicU64>) {
    let runs = Arc::new(AtomicU64::new(0));
    let agents = vec![
        AgentDef::from_toml(
            "name='finance'\npurpose='money'\nsystem_prompt='f'\ntools=['convert_currency']\nkeywords=['eur']\n",
        )
        .unwrap(),
    ];
    let tools = ToolRegistry::new().with(Arc::new(Guarded {
        runs: runs.clone(),
        inline,
    }));
    (
        MemSystem::new(Catalog::new(agents).unwrap(), tools, None),
        runs,
    )
}

async fn submit(sys: &MemSystem, tenant: &str, key: Option<&str>) -> aos_kernel::Task {
    sys.kernel
        .submit_for(Submission {
            tenant,
            agent: "finance",
            input: PAY,
            idempotency_key: key,
        })
        .await
        .unwrap()
        .task
}

#[tokio::test]
async fn an_approved_call_runs_once_and_a_denied_one_never() {
    for inline in [true, false] {
        let (sys, runs) = system(inline);
        let task = submit(&sys, "acme", None).await;
        sys.drain().await;
        let waiting = sys.store.get_task(task.id).await.unwrap().unwrap();
        assert_eq!(waiting.status, TaskStatus::Waiting, "the task waits");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "nothing ran before approval"
        );
        let pending = sys.kernel.pending_approvals("acme", 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        let a = &pending[0];
        assert_eq!(a.tool, "convert_currency");
        assert_eq!(a.arguments["amount"], json!(1250.0));
        assert_eq!(a.agent, "finance");
        assert_eq!(a.expires_at, task.deadline_ms());
        assert!(
            sys.kernel
                .pending_approvals("other", 10)
                .await
                .unwrap()
                .is_empty(),
            "another tenant sees none"
        );
        assert!(matches!(
            sys.kernel
                .decide("other", &a.id, true, "mallory", None)
                .await,
            Err(DecideError::NotFound(_))
        ));

        let decided = sys
            .kernel
            .decide("acme", &a.id, true, "alice", Some("ok"))
            .await
            .unwrap();
        assert_eq!(decided.status, ApprovalStatus::Approved);
        assert_eq!(decided.decided_by.as_deref(), Some("alice"));
        // The same decision again is harmless; the other one is refused.
        sys.kernel
            .decide("acme", &a.id, true, "alice", None)
            .await
            .unwrap();
        assert!(matches!(
            sys.kernel.decide("acme", &a.id, false, "bob", None).await,
            Err(DecideError::AlreadyDecided { .. })
        ));
        sys.drain().await;
        let done = sys.store.get_task(task.id).await.unwrap().unwrap();
        assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
        assert!(done.result.unwrap().contains("1356.25"));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "approved (twice): ran exactly once (inline: {inline})"
        );
        let report = sys.kernel.verify_audit(task.id).await.unwrap();
        assert!(report.ok(), "{report:?}");
        let actions: Vec<String> = sys
            .kernel
            .audit_log(task.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .collect();
        for want in [
            "received",
            "model_call",
            "approval_asked",
            "approval_decided",
            "tool_call",
            "answer",
        ] {
            assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
        }

        // Denied: the model goes on without the tool.
        let task = submit(&sys, "acme", None).await;
        sys.drain().await;
        let a = sys.kernel.pending_approvals("acme", 10).await.unwrap();
        assert_eq!(a.len(), 1);
        sys.kernel
            .decide("acme", &a[0].id, false, "bob", Some("not today"))
            .await
            .unwrap();
        sys.drain().await;
        let done = sys.store.get_task(task.id).await.unwrap().unwrap();
        assert_eq!(done.status, TaskStatus::Succeeded, "{:?}", done.error);
        let answer = done.result.unwrap();
        assert!(answer.contains("denied"), "{answer}");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the denied call never ran");
    }
}

#[tokio::test]
async fn a_pending_approval_expires_with_its_task() {
    let (sys, runs) = system(true);
    let task = submit(&sys, "acme", None).await;
    sys.drain().await;
    let id = sys.kernel.pending_approvals("acme", 10).await.unwrap()[0]
        .id
        .clone();
    sys.clock.advance(task.budget.timeout_secs * 1000 + 1);
    sys.kernel.sweep().await.unwrap();
    let a = sys.kernel.approval("acme", &id).await.unwrap().unwrap();
    assert_eq!(a.status, ApprovalStatus::Expired);
    assert!(matches!(
        sys.kernel.decide("acme", &id, true, "alice", None).await,
        Err(DecideError::Expired { .. })
    ));
    assert!(
        sys.kernel
            .pending_approvals("acme", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn idempotency_keys_are_scoped_to_a_tenant_and_bound_to_the_request() {
    let (sys, _) = system(true);
    let first = submit(&sys, "acme", Some("order-1")).await;
    let again = submit(&sys, "acme", Some("order-1")).await;
    assert_eq!(first.id, again.id, "same key, same body: the same task");
    let other = submit(&sys, "globex", Some("order-1")).await;
    assert_ne!(
        other.id, first.id,
        "the same key of another tenant is its own"
    );
    assert_eq!(other.tenant, "globex");
    // A key equal to another tenant's task id names nothing of theirs.
    let sneaky = submit(&sys, "globex", Some(&first.id.to_string())).await;
    assert_ne!(sneaky.id, first.id);
    let err = sys
        .kernel
        .submit_for(Submission {
            tenant: "acme",
            agent: "finance",
            input: "something else",
            idempotency_key: Some("order-1"),
        })
        .await
        .unwrap_err();
    assert_eq!(err, SubmitError::IdempotencyConflict { task: first.id });
    assert!(
        sys.kernel
            .task_for("globex", first.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        sys.kernel
            .task_for("acme", first.id)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn an_envelope_of_one_task_never_touches_another_tasks_session() {
    let (sys, _) = system(true);
    let victim = submit(&sys, "acme", None).await;
    sys.drain().await;
    let attacker = submit(&sys, "globex", None).await;
    sys.drain().await;
    let key = aos_kernel::model::SessionKey {
        agent: "finance".parse_agent(),
        session: aos_kernel::kernel::root_session(victim.id),
    };
    let before = sys
        .store
        .load(&key, victim.id, aos_kernel::EnvelopeId::new(1), "", 0)
        .await
        .unwrap()
        .session
        .unwrap();
    // A replayed envelope of the attacker's task, pointed at the victim's session.
    let mut forged = aos_kernel::kernel::first_envelope(&attacker);
    forged.id = aos_kernel::EnvelopeId::new(sys.clock.now_ms_for_test());
    forged.session = key.session.clone();
    forged.kind = Kind::Message;
    let out = sys.kernel.wake(forged.clone()).await.unwrap();
    assert!(
        matches!(&out, WakeOutcome::DeadLettered { reason } if reason.contains("another task")),
        "{out:?}"
    );
    // An envelope that names the victim's task but another tenant.
    let mut cross = forged.clone();
    cross.task = victim.id;
    cross.id = aos_kernel::EnvelopeId::new(sys.clock.now_ms_for_test() + 1);
    let out = sys.kernel.wake(cross).await.unwrap();
    assert!(
        matches!(&out, WakeOutcome::DeadLettered { reason } if reason.contains("another tenant")),
        "{out:?}"
    );
    let after = sys
        .store
        .load(&key, victim.id, aos_kernel::EnvelopeId::new(1), "", 0)
        .await
        .unwrap()
        .session
        .unwrap();
    assert_eq!(before, after, "the victim's session is untouched");
    let victim_now = sys.store.get_task(victim.id).await.unwrap().unwrap();
    assert_eq!(
        victim_now.status,
        TaskStatus::Waiting,
        "the victim's task was not failed by the refusal"
    );
    let _ = Envelope::parse(&forged.to_json()).unwrap();
}

trait ParseAgent {
    fn parse_agent(self) -> aos_kernel::AgentName;
}
impl ParseAgent for &str {
    fn parse_agent(self) -> aos_kernel::AgentName {
        aos_kernel::AgentName::new(self).unwrap()
    }
}

trait NowForTest {
    fn now_ms_for_test(&self) -> u64;
}
impl NowForTest for aos_kernel::testkit::ManualClock {
    fn now_ms_for_test(&self) -> u64 {
        use aos_kernel::ports::Clock;
        self.now_ms()
    }
}

#[tokio::test]
async fn a_changed_audit_record_is_named() {
    let (sys, _) = system(true);
    let task = submit(&sys, "acme", None).await;
    sys.drain().await;
    let events = sys.store.task_events(task.id).await.unwrap();
    let ok = aos_kernel::audit::verify(task.id, &events, &[]);
    assert!(ok.ok() && ok.records >= 3, "{ok:?}");
    let mut tampered = events.clone();
    let i = tampered.iter().position(|e| e.is_audit()).unwrap();
    tampered[i].detail = tampered[i].detail.replacen("finance", "finanse", 1);
    let report = aos_kernel::audit::verify(task.id, &tampered, &[]);
    assert_eq!(report.first_mismatch.unwrap().event, tampered[i].id);
}
