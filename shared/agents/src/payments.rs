//! `send_payment`: the reference tool a person must approve. It stands for any call
//! with effects in the world (a payment, an order, an email): it is neither read-only
//! nor idempotent, so the kernel runs it at most once, in a wake of its own, and only
//! after a person approved the call (`requires_approval`).
//!
//! It is a simulation and says so: no money moves. Its reference is derived from the
//! task and the call, so the same approved call always reports the same reference.

use aos_kernel::llm::ToolSpec;
use aos_kernel::tools::{Tool, ToolContext, ToolError, ToolMeta};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const SEND_PAYMENT: &str = "send_payment";

/// Largest amount the simulation accepts, so a runaway model cannot ask for absurd sums.
pub const MAX_AMOUNT: f64 = 1_000_000.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentInput {
    amount: f64,
    currency: String,
    payee: String,
    #[serde(default)]
    memo: String,
}

/// The `send_payment` tool.
#[derive(Clone, Copy, Debug, Default)]
pub struct PaymentTool;

#[async_trait]
impl Tool for PaymentTool {
    fn meta(&self) -> ToolMeta {
        ToolMeta {
            timeout_ms: 10_000,
            idempotent: false,
            read_only: false,
            requires_approval: true,
            deterministic: false,
        }
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: SEND_PAYMENT.into(),
            description: "Sends a payment to a payee (simulated: no money moves). A person \
                          must approve every call before it runs; if they deny it, do not \
                          try again."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_AMOUNT},
                    "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$", "description": "ISO 4217 code, e.g. EUR."},
                    "payee": {"type": "string", "minLength": 1, "maxLength": 120},
                    "memo": {"type": "string", "maxLength": 200, "description": "What the payment is for, e.g. an invoice number."}
                },
                "required": ["amount", "currency", "payee"],
                "additionalProperties": false
            }),
        }
    }

    async fn call(&self, input: Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let p: PaymentInput = serde_json::from_value(input).map_err(|e| {
            ToolError(format!(
                "{SEND_PAYMENT} takes {{\"amount\": 120, \"currency\": \"EUR\", \"payee\": \"ACME Ltd\", \"memo\": \"invoice 42\"}}: {e}"
            ))
        })?;
        if !(p.amount > 0.0 && p.amount <= MAX_AMOUNT) {
            return Err(ToolError(format!(
                "the amount must be above 0 and at most {MAX_AMOUNT}"
            )));
        }
        let currency = p.currency.to_uppercase();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(ToolError(format!(
                "{:?} is not a currency code",
                p.currency
            )));
        }
        let payee = p.payee.trim();
        if payee.is_empty() {
            return Err(ToolError("the payee is empty".into()));
        }
        let digest = Sha256::digest(
            format!(
                "{}|{}|{}|{}|{}",
                ctx.task, payee, p.amount, currency, p.memo
            )
            .as_bytes(),
        );
        let reference: String = digest[..5].iter().map(|b| format!("{b:02X}")).collect();
        let memo = if p.memo.trim().is_empty() {
            String::new()
        } else {
            format!(" for {}", p.memo.trim())
        };
        Ok(format!(
            "payment of {:.2} {currency} to {payee}{memo} sent, reference PAY-{reference} \
             (simulated: no money moved)",
            p.amount
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use aos_kernel::TaskId;

    fn ctx() -> ToolContext {
        ToolContext {
            agent: aos_kernel::AgentName::new("finance").unwrap(),
            session: aos_kernel::SessionId::new("s").unwrap(),
            task: TaskId::new(1_700_000_000_000),
            now_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_payment_needs_approval_runs_at_most_once_and_says_it_is_simulated() {
        let meta = PaymentTool.meta();
        assert!(meta.requires_approval && !meta.runs_inline());
        let input =
            json!({"amount": 120, "currency": "eur", "payee": "ACME Ltd", "memo": "invoice 42"});
        let ctx = ctx();
        let out = PaymentTool.call(input.clone(), &ctx).await.unwrap();
        assert!(
            out.starts_with(
                "payment of 120.00 EUR to ACME Ltd for invoice 42 sent, reference PAY-"
            ),
            "{out}"
        );
        assert!(out.contains("simulated"));
        assert_eq!(out, PaymentTool.call(input, &ctx).await.unwrap());
        let err = PaymentTool
            .call(json!({"amount": -1, "currency": "EUR", "payee": "x"}), &ctx)
            .await
            .unwrap_err();
        assert!(err.0.contains("above 0"), "{err}");
    }
}
