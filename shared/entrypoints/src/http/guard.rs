//! Refuses cross-site writes before routing. A browser can post a form to any site
//! (`application/x-www-form-urlencoded`, `multipart/form-data`, `text/plain`) without
//! a CORS preflight; the API therefore reads bodies only as `application/json` (415
//! otherwise), and refuses any write whose `Sec-Fetch-Site` is `cross-site` or whose
//! `Origin` is not the host it was sent to (403). Bearer tokens are not sent by
//! browsers on their own, so this is defence in depth for the local server, where a
//! token may sit in a developer's shell history or a dev tool.

use super::problem::ApiError;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The middleware: see the module docs.
pub async fn same_site_json(request: Request, next: Next) -> Response {
    // A body shows in its headers on the wire; in-process (tests, Lambda adapters)
    // only in its size.
    let sized = axum::body::HttpBody::size_hint(request.body()).lower() > 0;
    if let Err(e) = check(request.method(), request.headers(), sized) {
        return e.into_response();
    }
    next.run(request).await
}

fn check(method: &Method, headers: &HeaderMap, sized: bool) -> Result<(), ApiError> {
    let writes = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !writes {
        return Ok(());
    }
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if text(header::HeaderName::from_static("sec-fetch-site")) == Some("cross-site") {
        return Err(ApiError::Forbidden {
            detail: "cross-site requests may not change anything".into(),
            scope: None,
        });
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        let host = text(header::HOST);
        if origin_host.is_none() || origin_host != host {
            return Err(ApiError::Forbidden {
                detail: format!(
                    "the request's Origin {origin:?} is not this API's host; cross-site requests may not change anything"
                ),
                scope: None,
            });
        }
    }
    let has_body = sized
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
        || headers.contains_key(header::TRANSFER_ENCODING);
    if has_body {
        let ct = text(header::CONTENT_TYPE).unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "request bodies must be `Content-Type: application/json`, not {:?}",
                if ct.is_empty() { "(none)" } else { ct }
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn form_posts_and_foreign_origins_are_refused() {
        let form = headers(&[
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-length", "9"),
        ]);
        assert!(matches!(
            check(&Method::POST, &form, false),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        let json = headers(&[
            ("content-type", "application/json; charset=utf-8"),
            ("content-length", "9"),
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(check(&Method::POST, &json, true).is_ok());
        let foreign = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert!(matches!(
            check(&Method::DELETE, &foreign, false),
            Err(ApiError::Forbidden { .. })
        ));
        let cross = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(check(&Method::POST, &cross, false).is_err());
        assert!(
            check(&Method::GET, &cross, false).is_ok(),
            "reads are not writes"
        );
        // No body at all needs no content type.
        assert!(check(&Method::POST, &headers(&[]), false).is_ok());
    }
}
