//! The sweep function, run on a schedule: re-sends the first envelope of queued tasks
//! and fails tasks past their deadline. Setup only, done once before the first event;
//! it runs no agent, so no tool is linked in.

use aos_kernel::tools::ToolRegistry;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (_, built) = aos_lambda::setup("sweep", |_| ToolRegistry::new()).await?;
    let kernel = &built.kernel;
    lambda_runtime::run(service_fn(|event| aos_lambda::sweep::handle(kernel, event))).await
}
