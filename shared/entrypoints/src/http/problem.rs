//! One error shape for the whole API: RFC 9457 `application/problem+json`
//! (`{type, title, status, detail}`). Handlers return [`ApiError`]; whatever else
//! answers 4xx or 5xx (an axum rejection, the 405 of a known path, a body over the
//! limit) is rewritten into the same shape by [`problem_layer`], so a client parses
//! one thing. The rule kept here: client errors say what to fix; a 500 says nothing
//! about why (the reason goes to the log).

use aos_kernel::SubmitError;
use aos_kernel::ports::PortError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document, as every error body of the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:aos:problem:<kind>`); stable, for code.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem, the same for every occurrence.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time and what to do about it. Absent on a 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An API error: client errors say what to fix; internal ones say nothing.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    /// No usable credentials: 401 with `WWW-Authenticate: Bearer`.
    Unauthorized {
        detail: String,
        /// The RFC 6750 error code (`invalid_token`), when a token was sent.
        code: Option<&'static str>,
    },
    /// Authenticated, but not allowed (a missing scope, a cross-site request).
    Forbidden {
        detail: String,
        /// The scope the route needs, for `WWW-Authenticate`.
        scope: Option<&'static str>,
    },
    NotFound(String),
    MethodNotAllowed(String),
    Conflict(String),
    TooLarge(String),
    UnsupportedMediaType(String),
    /// Well-formed but refers to something that does not exist (an unknown agent).
    Unprocessable(String),
    /// This deployment does not offer the feature.
    NotImplemented(String),
    /// The backend could not do it now; the message says what to retry.
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            ApiError::Unauthorized { .. } => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
            ),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Request too large",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::Unprocessable(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable",
                "Unprocessable request",
            ),
            ApiError::NotImplemented(_) => (
                StatusCode::NOT_IMPLEMENTED,
                "not-implemented",
                "Not available in this deployment",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    /// The problem document this error answers with.
    pub fn problem(&self) -> Problem {
        let (status, kind, title) = self.parts();
        let detail = match self {
            ApiError::Internal(_) => None,
            ApiError::Unauthorized { detail, .. } | ApiError::Forbidden { detail, .. } => {
                Some(detail.clone())
            }
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::MethodNotAllowed(m)
            | ApiError::Conflict(m)
            | ApiError::TooLarge(m)
            | ApiError::UnsupportedMediaType(m)
            | ApiError::Unprocessable(m)
            | ApiError::NotImplemented(m)
            | ApiError::Unavailable(m) => Some(m.clone()),
        };
        Problem {
            kind: format!("urn:aos:problem:{kind}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.problem();
        write!(f, "{} {}", p.status, p.detail.unwrap_or(p.title))
    }
}

/// Writes a problem document with the right status and media type.
pub fn problem_response(problem: &Problem, mut headers: HeaderMap) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    headers.remove(header::CONTENT_LENGTH);
    let mut resp = (status, body).into_response();
    for (name, value) in &headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        match &self {
            ApiError::Internal(m) => tracing::error!(error = %m, "internal error"),
            ApiError::Unavailable(m) => tracing::warn!(error = %m, "backend unavailable"),
            ApiError::Unauthorized { detail, code } => {
                let value = match code {
                    Some(code) => format!(
                        "Bearer realm=\"aos\", error=\"{code}\", error_description=\"{}\"",
                        quoted(detail)
                    ),
                    None => "Bearer realm=\"aos\"".to_string(),
                };
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::Forbidden {
                scope: Some(scope), ..
            } => {
                let value = format!(
                    "Bearer realm=\"aos\", error=\"insufficient_scope\", scope=\"{scope}\""
                );
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            _ => {}
        }
        problem_response(&self.problem(), headers)
    }
}

/// Text safe inside a quoted header parameter (printable ASCII, no quotes).
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}

impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        match e {
            PortError::Unavailable(m) => {
                tracing::warn!(error = %m, "backend unavailable");
                ApiError::Unavailable("the backend is busy; retry shortly".into())
            }
            PortError::Rejected(m) => ApiError::BadRequest(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::UnknownAgent { .. } => ApiError::Unprocessable(e.to_string()),
            SubmitError::EmptyInput
            | SubmitError::BadIdempotencyKey
            | SubmitError::InvalidTenant(_) => ApiError::BadRequest(e.to_string()),
            SubmitError::IdempotencyConflict { .. } => ApiError::Conflict(e.to_string()),
            SubmitError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
            SubmitError::Port(p) => p.into(),
            SubmitError::NotSent { .. } => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// Rewrites every 4xx and 5xx that is not already a problem document (axum's own
/// rejections, a 405, a body over the limit) into one, keeping its status and headers
/// (`Allow`, `WWW-Authenticate`). A 5xx loses its text.
pub async fn problem_layer(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON));
    if is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let error = match status {
        StatusCode::BAD_REQUEST => ApiError::BadRequest(text),
        StatusCode::NOT_FOUND => ApiError::NotFound(text),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            ApiError::MethodNotAllowed(format!(
                "this path does not answer that method; it answers: {allow}"
            ))
        }
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(text),
        s if s.is_server_error() => {
            tracing::error!(status = %s, body = %text, "internal error");
            ApiError::Internal(text)
        }
        _ => ApiError::BadRequest(text),
    };
    let mut problem = error.problem();
    // Keep the exact status even where the kinds above lump some together.
    problem.status = status.as_u16();
    if problem.detail.as_deref() == Some("") {
        problem.detail = None;
    }
    let mut headers = parts.headers;
    headers.remove(header::CONTENT_TYPE);
    problem_response(&problem, headers)
}

/// An empty body for a response with no content (`204`).
pub fn no_content() -> Response {
    (StatusCode::NO_CONTENT, Body::empty()).into_response()
}
