//! The finance agent's function: its SQS queue's batches, woken under the invocation
//! deadline. Setup only, done once before the first event; only the finance agent's
//! tools (`convert_currency`, `calculator`, `check_invoice`, `send_payment`) are linked in.

use aos_kernel::tools::ToolRegistry;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    aos_lambda::run_agent("finance", |_| {
        ToolRegistry::new()
            .with(Arc::new(aos_agents::CurrencyTool))
            .with(Arc::new(aos_agents::CalculatorTool))
            .with(Arc::new(aos_agents::InvoiceTool))
            .with(Arc::new(aos_agents::PaymentTool))
    })
    .await
}
