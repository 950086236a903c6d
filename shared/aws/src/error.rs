//! Sorting SDK failures into the kernel's [`PortError`]s. The SDK has already retried
//! throttling, 5xx and connection failures with backoff by the time one arrives here.

use aos_kernel::ports::PortError;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Error codes that mean "try again later".
const TRANSIENT: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "InternalServerError",
    "InternalServerException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "SlowDown",
    "TransactionInProgressException",
    "KMSThrottlingException",
];

pub(crate) fn is_code(code: Option<&str>, codes: &[&str]) -> bool {
    code.is_some_and(|c| codes.contains(&c))
}

/// Maps a failed SDK call: transient failures become `Unavailable`, a request the
/// service refused becomes `Rejected`.
pub(crate) fn sdk_error<E, R>(op: &str, e: SdkError<E, R>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static + HttpStatus,
{
    match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code();
            let message = err.message().unwrap_or_default();
            let status = service.raw().status_code();
            let shown = format!("{op}: {}: {message}", code.unwrap_or("error"));
            // Any 5xx or 429 is the service's trouble, not the request's.
            if is_code(code, TRANSIENT) || status >= 500 || status == 429 {
                PortError::Unavailable(shown)
            } else {
                PortError::Rejected(shown)
            }
        }
        SdkError::ConstructionFailure(_) => PortError::Rejected(format!("{op}: {}", display(&e))),
        _ => PortError::Unavailable(format!("{op}: {}", display(&e))),
    }
}

/// The HTTP status of a raw response.
pub(crate) trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The error with its sources, which the SDK keeps the useful part in.
pub(crate) fn display(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
