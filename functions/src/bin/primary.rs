//! The primary (orchestrator) agent's function: its SQS queue's batches, woken under
//! the invocation deadline. Setup only, done once before the first event; the primary
//! agent calls no tool of its own, so none is linked in.

use aos_kernel::tools::ToolRegistry;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    aos_lambda::run_agent("primary", |_| ToolRegistry::new()).await
}
