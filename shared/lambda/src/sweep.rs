//! The sweep function, run on a schedule: [`Kernel::sweep`] on AWS. It sends again
//! the first envelope of every task still queued (what a local start does with
//! `recover()`) and fails every task past its deadline, so no task waits forever on a
//! message that was lost or dead-lettered. The rule: the sweep is idempotent, so a
//! retried or overlapping run does no harm, and a failure is retryable (the next run
//! picks up where this one stopped).

use crate::WakeError;
use aos_kernel::{Kernel, SweepReport};
use lambda_runtime::LambdaEvent;
use serde_json::Value;

/// The Lambda handler; the event (a schedule's payload) is not read.
pub async fn handle(kernel: &Kernel, _event: LambdaEvent<Value>) -> Result<SweepReport, WakeError> {
    let report = kernel.sweep().await.map_err(|e| {
        tracing::error!(error = %e, "sweep failed; the next run retries");
        WakeError::Retryable(e.to_string())
    })?;
    tracing::info!(
        resent = report.resent,
        timed_out = report.timed_out.len(),
        "sweep done"
    );
    Ok(report)
}
