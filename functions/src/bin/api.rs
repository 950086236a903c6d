//! The HTTP API function: API Gateway HTTP API (v2) events served by the same axum
//! `Router` as `aos dev`, through `lambda_http`. Setup only, done once before the first
//! request; it runs no agent, so no tool is linked in.

use aos_kernel::tools::ToolRegistry;
use lambda_http::Error;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (config, built) = aos_lambda::setup("api", |_| ToolRegistry::new()).await?;
    let schedules = aos_lambda::task_schedules(&config, &built.aws);
    let app = aos_lambda::api::router_with(built.kernel, Arc::new(built.aws.queues), schedules);
    lambda_http::run(app).await
}
