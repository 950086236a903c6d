//! The HTTP API function: API Gateway HTTP API (v2) events served by the same axum
//! `Router` as `aos dev`, through `lambda_http`. Setup only, done once before the first
//! request; it runs no agent, so no tool is linked in.

use aos_kernel::tools::ToolRegistry;
use aos_lambda::{Config, InitError, build_kernel, init_tracing};
use lambda_http::Error;
use std::sync::Arc;

async fn setup() -> Result<axum::Router, InitError> {
    let config = Config::from_env()?;
    let sdk = aos_lambda::load_sdk_config().await;
    let built = build_kernel(&config, &sdk, ToolRegistry::new()).await?;
    Ok(aos_lambda::api::router(
        built.kernel,
        Arc::new(built.aws.queues),
    ))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let app = setup().await.inspect_err(|e| {
        tracing::error!(error = %e, "api function cannot start");
    })?;
    lambda_http::run(app).await
}
