//! The weather agent's function: its SQS queue's batches, woken under the invocation
//! deadline. Setup only, done once before the first event; only the weather agent's
//! tool (`get_weather`) is linked in.

use aos_kernel::tools::ToolRegistry;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    aos_lambda::run_agent("weather", |config| {
        ToolRegistry::new().with(Arc::new(aos_agents::weather_tool(&config.tools)))
    })
    .await
}
