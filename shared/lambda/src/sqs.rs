//! An agent function's SQS handler: the batch handler of `aos-entrypoints` run under
//! the invocation's deadline, then the early release of what failed.
//!
//! The rules kept here: no record starts within the margin of the deadline, and every
//! wake is told the deadline, so no wake is killed by the Lambda timeout between its
//! model calls and its commit; the records left over are reported failed, so they come
//! back. A failed record that said when to retry (a provider's `retry-after`, or 0
//! after the deadline) is released with that delay (ChangeMessageVisibility) instead of
//! waiting out the visibility timeout, and so are the records held behind it in its
//! FIFO group, which would otherwise keep the group locked.
//!
//! After the batch, each wake that started is written out as one CloudWatch Embedded
//! Metric Format line ([`crate::metrics`]) with the invocation's request id and X-Ray
//! trace id.

use crate::metrics::{Invocation, wake_record};
use aos_entrypoints::sqs::{BatchReport, Deadline, handle_batch_until};
use aos_kernel::Kernel;
use aos_kernel::ports::Inbox;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use futures::future::join_all;
use lambda_runtime::LambdaEvent;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

/// Where metric records go: one line each.
pub type MetricsSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Everything one agent's handler needs, built once at init.
#[derive(Clone)]
pub struct SqsHandler {
    kernel: Kernel,
    /// The agent's queue, to release failed records early.
    inbox: Arc<dyn Inbox>,
    agent: String,
    /// The queue's maxReceiveCount: the last receive dead-letters with a reason.
    max_receives: u32,
    /// No record starts this close to the deadline.
    margin_ms: u64,
    /// Stdout on Lambda, where CloudWatch Logs reads the EMF records.
    metrics: MetricsSink,
}

impl std::fmt::Debug for SqsHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsHandler")
            .field("agent", &self.agent)
            .field("max_receives", &self.max_receives)
            .field("margin_ms", &self.margin_ms)
            .finish_non_exhaustive()
    }
}

impl SqsHandler {
    pub fn new(
        kernel: Kernel,
        inbox: Arc<dyn Inbox>,
        agent: impl Into<String>,
        max_receives: u32,
        margin_ms: u64,
    ) -> Self {
        Self {
            kernel,
            inbox,
            agent: agent.into(),
            max_receives,
            margin_ms,
            metrics: Arc::new(|line: &str| {
                // A closed stdout loses the metric, not the batch.
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }),
        }
    }

    /// Sends the metric records to `sink` instead of stdout (tests).
    pub fn with_metrics(mut self, sink: MetricsSink) -> Self {
        self.metrics = sink;
        self
    }

    /// The Lambda handler. It never fails the batch as a whole: records fail one by one
    /// in the partial batch response (the event source mapping must have
    /// `ReportBatchItemFailures`).
    pub async fn handle(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> Result<SqsBatchResponse, crate::WakeError> {
        Ok(self.run(event).await.0)
    }

    /// [`SqsHandler::handle`] with the report of what happened to each record.
    pub async fn run(&self, event: LambdaEvent<SqsEvent>) -> (SqsBatchResponse, BatchReport) {
        let (payload, context) = event.into_parts();
        let invocation = Invocation {
            request_id: context.request_id.clone(),
            xray_trace_id: context.xray_trace_id.clone(),
        };
        // Lambda always sends one; an invocation without it (a hand-made context)
        // runs like the local runtime, with no deadline.
        let deadline = (context.deadline > 0).then_some(Deadline {
            at_ms: context.deadline,
            margin_ms: self.margin_ms,
        });
        let receipts: HashMap<String, String> = payload
            .records
            .iter()
            .filter_map(|r| Some((r.message_id.clone()?, r.receipt_handle.clone()?)))
            .collect();
        let (response, report) = handle_batch_until(
            &self.kernel,
            &self.agent,
            payload,
            self.max_receives,
            deadline,
        )
        .await;
        let releases = report.retry_after_ms.iter().filter_map(|(id, delay)| {
            let receipt = receipts.get(id)?;
            Some(async move {
                if let Err(e) = self.inbox.release(&self.agent, receipt, *delay).await {
                    tracing::warn!(agent = %self.agent, message_id = %id, error = %e,
                        "could not release a record early; it returns after its visibility timeout");
                }
            })
        });
        let released = join_all(releases).await.len();
        for wake in &report.wakes {
            (self.metrics)(&wake_record(&self.agent, wake, &invocation).to_string());
        }
        tracing::info!(
            agent = %self.agent,
            applied = report.applied,
            duplicates = report.duplicates,
            dead_lettered = report.dead_lettered,
            failed = report.failed,
            unstarted = report.unstarted,
            released,
            ms_left = deadline.map(|d| d.at_ms.saturating_sub(self.kernel.now_ms())),
            "batch done"
        );
        (response, report)
    }
}

/// An agent function's whole `main`: set up once, before the first event (config,
/// SDK clients, the kernel with the tools `tools` registers: the agent's own only, so
/// no other agent's tool code is linked into its binary), then serve its queue's
/// batches until Lambda stops the process.
pub async fn run_agent(
    agent: &'static str,
    tools: impl FnOnce(&crate::Config) -> aos_kernel::tools::ToolRegistry,
) -> Result<(), lambda_runtime::Error> {
    let (config, built) = crate::setup(agent, tools).await?;
    let name = config.agent_for(agent).inspect_err(|e| {
        tracing::error!(error = %e, "{agent} function cannot start");
    })?;
    let handler = SqsHandler::new(
        built.kernel,
        Arc::new(built.aws.queues),
        name,
        config.max_receives,
        config.deadline_margin_ms,
    );
    lambda_runtime::run(lambda_runtime::service_fn(|event| handler.handle(event))).await
}
