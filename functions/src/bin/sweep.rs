//! The sweep function, run on a schedule: re-sends the first envelope of queued tasks
//! and fails tasks past their deadline. Setup only, done once before the first event;
//! it runs no agent, so no tool is linked in.

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
        tracing::error!(error = %e, "sweep function cannot start");
    })?;
    let kernel = &kernel;
    lambda_runtime::run(service_fn(|event| aos_lambda::sweep::handle(kernel, event))).await
}
