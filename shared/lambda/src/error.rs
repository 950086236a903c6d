//! How a handler fails, in Lambda's terms. The rule kept here: an error is retryable
//! unless retrying can never help; a terminal one says what is wrong with the event.
//! Both reach Lambda as a [`Diagnostic`] whose `errorType` is `Retryable` or
//! `Terminal`, so metrics, alarms and a dead-letter reader can tell them apart.
//!
//! An SQS batch never fails as a whole: its records fail one by one in the partial
//! batch response. These errors are for the invocations that have no such response
//! (a schedule firing, a sweep).

use aos_kernel::SubmitError;
use aos_kernel::ports::PortError;
use lambda_runtime::Diagnostic;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WakeError {
    /// The backend was unavailable or busy: the same event may succeed later.
    #[error("{0}")]
    Retryable(String),
    /// The event can never be processed as it is.
    #[error("{0}")]
    Terminal(String),
}

impl WakeError {
    /// The Lambda `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            WakeError::Retryable(_) => "Retryable",
            WakeError::Terminal(_) => "Terminal",
        }
    }
}

impl From<WakeError> for Diagnostic {
    fn from(e: WakeError) -> Self {
        Diagnostic {
            error_type: e.error_type().into(),
            error_message: e.to_string(),
        }
    }
}

impl From<PortError> for WakeError {
    fn from(e: PortError) -> Self {
        match e {
            PortError::Unavailable(_) | PortError::Conflict => WakeError::Retryable(e.to_string()),
            PortError::Rejected(_) | PortError::Corrupt(_) => WakeError::Terminal(e.to_string()),
        }
    }
}

impl From<SubmitError> for WakeError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Port(p) => p.into(),
            // Recorded but not sent: the same firing (same task id) sends it.
            SubmitError::NotSent { .. } => WakeError::Retryable(e.to_string()),
            SubmitError::UnknownAgent { .. }
            | SubmitError::EmptyInput
            | SubmitError::TooLarge { .. }
            | SubmitError::IdempotencyConflict { .. }
            | SubmitError::BadIdempotencyKey
            | SubmitError::InvalidTenant(_) => WakeError::Terminal(e.to_string()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn errors_reach_lambda_with_their_kind() {
        let d: Diagnostic = WakeError::from(PortError::Unavailable("throttled".into())).into();
        assert_eq!(d.error_type, "Retryable");
        assert_eq!(d.error_message, "backend unavailable: throttled");
        let d: Diagnostic = WakeError::from(SubmitError::EmptyInput).into();
        assert_eq!(d.error_type, "Terminal");
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({
                "errorType": "Terminal",
                "errorMessage": "the request is empty; say what you want done"
            })
        );
    }
}
