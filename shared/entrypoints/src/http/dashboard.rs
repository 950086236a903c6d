//! The dashboard: one HTML page, its script, style sheet and icon, embedded in the
//! binary (`include_str!`, so there is no build step and `aos dev` and the api
//! function serve the same bytes) at `/` and `/assets/{file}`, without a token: they
//! hold no data. The page reads and writes everything through API v1 with the bearer
//! token a person types in, which it keeps in `sessionStorage` and sends only as an
//! `Authorization` header.
//!
//! The rule kept here: every answer carries a Content-Security-Policy that allows
//! scripts and styles from this origin only (no inline code, so an API string that
//! reached the DOM as markup still could not run), `nosniff`, no referrer and no
//! framing. These routes are not API operations and are not in the OpenAPI document.

use super::AppState;
use super::problem::ApiError;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The policy of every dashboard answer. `connect-src` also allows other HTTPS
/// origins and local ports, for a page pointed at another deployment's API.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self' https: http://127.0.0.1:* \
     http://localhost:*; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its name under `/assets/`.
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// The page at `/`.
pub const INDEX_HTML: &str = include_str!("../../assets/index.html");

/// What `/assets/{file}` serves.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../assets/icon.svg"),
    },
];

/// Adds `GET /` and `GET /assets/{file}` to the API's router.
pub(crate) fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        // Small files; a new binary's page must never meet an old cached script.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|a| a.name == file)
        .map(|a| page(a.content_type, a.body))
        .ok_or_else(|| ApiError::NotFound(format!("no dashboard asset {file:?}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn every_answer_carries_the_policy_and_its_type() {
        let page = index().await;
        let h = page.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        let js = asset(Path("app.js".into())).await.unwrap();
        assert_eq!(js.status(), StatusCode::OK);
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(js.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let missing = asset(Path("../Cargo.toml".into())).await.unwrap_err();
        assert!(matches!(missing, ApiError::NotFound(_)));
    }

    #[test]
    fn the_page_loads_only_embedded_assets_and_no_inline_code() {
        for link in INDEX_HTML
            .split(['"', '\''])
            .filter(|s| s.starts_with("assets/"))
        {
            let name = &link["assets/".len()..];
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "index.html links {link}, which is not embedded"
            );
        }
        for a in ["app.js", "app.css"] {
            assert!(INDEX_HTML.contains(&format!("assets/{a}")), "{a} is linked");
        }
        // The CSP forbids inline code; the page must not need any.
        let lower = INDEX_HTML.to_ascii_lowercase();
        assert!(!lower.contains("<script>"), "no inline script");
        assert!(!lower.contains("<style"), "no inline style sheet");
        assert!(!lower.contains(" style="), "no style attributes");
        // No inline event handlers (` onclick=` and the like).
        for (i, _) in lower.match_indices(" on") {
            let name: String = lower[i + 3..]
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            assert!(
                !lower[i + 3 + name.len()..].starts_with('='),
                "inline handler on{name}="
            );
        }
        // The script puts API data into the page as text only.
        let js = ASSETS[0].body;
        assert!(!js.contains("innerHTML"), "no innerHTML in app.js");
        assert!(
            !js.contains("insertAdjacentHTML"),
            "no HTML parsing in app.js"
        );
        assert!(!js.contains("eval("), "no eval in app.js");
    }
}
