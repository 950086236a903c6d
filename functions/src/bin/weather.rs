//! The weather agent's function: its SQS queue's batches, woken under the invocation
//! deadline. Setup only, done once before the first event; only the weather agent's
//! tool (`get_weather`) is linked in.

use aos_kernel::tools::ToolRegistry;
use aos_lambda::{Config, InitError, SqsHandler, build_kernel, init_tracing};
use lambda_runtime::{Error, service_fn};
use std::sync::Arc;

const AGENT: &str = "weather";

async fn setup() -> Result<SqsHandler, InitError> {
    let config = Config::from_env()?;
    let agent = config.agent_for(AGENT)?;
    let sdk = aos_lambda::load_sdk_config().await;
    let tools = ToolRegistry::new().with(Arc::new(aos_agents::weather_tool(&config.tools)));
    let built = build_kernel(&config, &sdk, tools).await?;
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
