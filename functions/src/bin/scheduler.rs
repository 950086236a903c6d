//! The scheduler function: each EventBridge Scheduler firing becomes one task, with an
//! id that every retry of the firing shares. Setup only, done once before the first
//! event; it runs no agent, so no tool is linked in.

use aos_kernel::Kernel;
use aos_kernel::tools::ToolRegistry;
use aos_lambda::{Config, InitError, build_kernel, init_tracing};
use lambda_runtime::{Error, service_fn};

async fn setup() -> Result<Kernel, InitError> {
    let config = Config::from_env()?;
    let sdk = aos_lambda::load_sdk_config().await;
    Ok(build_kernel(&config, &sdk, ToolRegistry::new())
        .await?
        .kernel)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let kernel = setup().await.inspect_err(|e| {
        tracing::error!(error = %e, "scheduler function cannot start");
    })?;
    let kernel = &kernel;
    lambda_runtime::run(service_fn(|event| {
        aos_lambda::schedule::handle(kernel, event)
    }))
    .await
}
