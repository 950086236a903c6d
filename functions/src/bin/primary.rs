//! The primary (orchestrator) agent's function: its SQS queue's batches, woken under
//! the invocation deadline. Setup only, done once before the first event; the primary
//! agent calls no tool of its own, so none is linked in.

use aos_kernel::tools::ToolRegistry;
use aos_lambda::{Config, InitError, SqsHandler, build_kernel, init_tracing};
use lambda_runtime::{Error, service_fn};
use std::sync::Arc;

const AGENT: &str = "primary";

async fn setup() -> Result<SqsHandler, InitError> {
    let config = Config::from_env()?;
    let agent = config.agent_for(AGENT)?;
    let sdk = aos_lambda::load_sdk_config().await;
    let built = build_kernel(&config, &sdk, ToolRegistry::new()).await?;
    Ok(SqsHandler::new(
        built.kernel,
        Arc::new(built.aws.queues),
        agent,
        config.max_receives,
        config.deadline_margin_ms,
    ))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let handler = setup().await.inspect_err(|e| {
        tracing::error!(error = %e, "{AGENT} function cannot start");
    })?;
    lambda_runtime::run(service_fn(|event| handler.handle(event))).await
}
