//! The scheduler function: each EventBridge Scheduler firing becomes one task, with an
//! id that every retry of the firing shares. Setup only, done once before the first
//! event; it runs no agent, so no tool is linked in.

use aos_kernel::tools::ToolRegistry;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (_, built) = aos_lambda::setup("scheduler", |_| ToolRegistry::new()).await?;
    let kernel = &built.kernel;
    lambda_runtime::run(service_fn(|event| {
        aos_lambda::schedule::handle(kernel, event)
    }))
    .await
}
