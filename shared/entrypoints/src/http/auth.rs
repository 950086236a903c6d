//! Who is calling, and may they: bearer JWTs with a tenant and scopes.
//!
//! A token's claims are `sub` (who), `tenant` (whose data: every task belongs to the
//! tenant of the token that created it), `scope` (space-separated `read`, `write`,
//! `admin`; `admin` ⊇ `write` ⊇ `read`), `exp`, and optionally `iss` / `aud`.
//!
//! Two ways to trust a token, one check after it ([`Auth`]):
//! - [`Auth::Hs256`]: `aos dev` verifies the HS256 signature itself with a local secret
//!   (`aos token` mints tokens with the same secret).
//! - [`Auth::ApiGateway`]: on AWS the HTTP API's JWT authorizer has already verified
//!   the signature, issuer, audience and expiry; the function reads the claims it
//!   passes along in the request context and still checks tenant and scope. A
//!   request without those claims gets a 401.
//!
//! The rule kept here: a request that is refused learns nothing but why (401 with
//! `WWW-Authenticate: Bearer`, or 403 naming the missing scope), and no handler runs.

use super::problem::ApiError;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;

/// What a token allows, each including the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read tasks, timelines, agents, approvals and schedules.
    Read,
    /// Also submit and cancel tasks, decide approvals, create and delete schedules.
    Write,
    /// Also read audit logs and dead letters, and redrive dead letters.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `tenant` is a valid tenant name: `[a-z0-9][a-z0-9_-]{0,63}` (the
/// kernel's rule).
pub fn valid_tenant(tenant: &str) -> bool {
    aos_kernel::model::valid_tenant(tenant)
}

/// The claims of an AOS token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// The authenticated caller, as handlers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Who (the token's subject); recorded as the decider of approvals.
    pub sub: String,
    /// Whose data this request may see and change.
    pub tenant: String,
    /// The widest scope the token carries (`None`: no known scope).
    pub scope: Option<Scope>,
}

impl Caller {
    /// Whether the token grants `scope` (admin ⊇ write ⊇ read).
    pub fn has(&self, scope: Scope) -> bool {
        self.scope.is_some_and(|s| s >= scope)
    }

    fn from_parts(
        sub: Option<&str>,
        tenant: Option<&str>,
        scopes: &str,
    ) -> Result<Self, AuthError> {
        let sub = sub.filter(|s| !s.is_empty()).ok_or(AuthError::Claims(
            "the token has no subject (`sub` claim)".into(),
        ))?;
        let tenant = tenant.ok_or(AuthError::Claims(
            "the token names no tenant (`tenant` claim)".into(),
        ))?;
        if !valid_tenant(tenant) {
            return Err(AuthError::Claims(format!(
                "the token's tenant {tenant:?} is not a tenant name ([a-z0-9][a-z0-9_-]{{0,63}})"
            )));
        }
        let scope = scopes.split([' ', ',']).filter_map(Scope::parse).max();
        Ok(Caller {
            sub: sub.to_string(),
            tenant: tenant.to_string(),
            scope,
        })
    }
}

/// Why a request's credentials were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer <token>` (`aos token` prints one)")]
    Missing,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("{0}")]
    Claims(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::Missing => None,
            _ => Some("invalid_token"),
        };
        ApiError::Unauthorized {
            detail: e.to_string(),
            code,
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Signs `claims` as an HS256 JWT with `secret`.
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(sign(secret, signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; this cannot fail.
    match <HmacSha256 as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

fn sign(secret: &[u8], input: &[u8]) -> Vec<u8> {
    let mut m = mac(secret);
    m.update(input);
    m.finalize().into_bytes().to_vec()
}

/// Checks an HS256 JWT: its header names HS256 (nothing else is accepted, `none`
/// least of all), its signature verifies (in constant time), it is not expired or
/// early, and its issuer and audience are the expected ones where configured.
pub fn verify(
    secret: &[u8],
    token: &str,
    now_secs: u64,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<Claims, AuthError> {
    let mut segments = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(AuthError::Malformed(
            "expected three base64url segments separated by '.'".into(),
        ));
    };
    let decode = |seg: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(seg)
            .map_err(|_| AuthError::Malformed(format!("its {what} is not base64url")))
    };
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let header: Header = serde_json::from_slice(&decode(h, "header")?)
        .map_err(|_| AuthError::Malformed("its header is not a JWT header".into()))?;
    if header.alg != "HS256" {
        return Err(AuthError::Malformed(format!(
            "algorithm {:?} is not accepted; tokens are HS256",
            header.alg
        )));
    }
    let signature = decode(s, "signature")?;
    let mut m = mac(secret);
    m.update(h.as_bytes());
    m.update(b".");
    m.update(p.as_bytes());
    m.verify_slice(&signature)
        .map_err(|_| AuthError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(&decode(p, "payload")?).map_err(|e| {
        AuthError::Claims(format!(
            "the token's claims are not AOS claims ({e}); they need sub, tenant, scope and exp"
        ))
    })?;
    if claims.exp <= now_secs {
        return Err(AuthError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now_secs) {
        return Err(AuthError::NotYetValid);
    }
    if let Some(want) = issuer
        && claims.iss.as_deref() != Some(want)
    {
        return Err(AuthError::Claims(format!(
            "the token's issuer is not {want:?}"
        )));
    }
    if let Some(want) = audience
        && claims.aud.as_deref() != Some(want)
    {
        return Err(AuthError::Claims(format!(
            "the token's audience is not {want:?}"
        )));
    }
    Ok(claims)
}

/// The claims API Gateway's JWT authorizer verified, as the api function receives
/// them (`requestContext.authorizer.jwt`): every claim as a string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayClaims {
    pub claims: HashMap<String, String>,
    /// Scopes API Gateway parsed from the token, if any.
    pub scopes: Vec<String>,
}

impl GatewayClaims {
    /// The claims lambda_http put in the request's extensions, if the request came
    /// through an authorizer.
    fn from_request(parts: &Parts) -> Option<Self> {
        use lambda_http::request::RequestContext;
        let ctx = parts.extensions.get::<RequestContext>()?;
        #[allow(irrefutable_let_patterns)]
        let RequestContext::ApiGatewayV2(ctx) = ctx else {
            return None;
        };
        let jwt = ctx.authorizer.as_ref()?.jwt.as_ref()?;
        Some(GatewayClaims {
            claims: jwt.claims.clone(),
            scopes: jwt.scopes.clone().unwrap_or_default(),
        })
    }
}

/// How the API trusts a token.
#[derive(Clone)]
pub enum Auth {
    /// Verify HS256 signatures with this secret (`aos dev`).
    Hs256 {
        secret: Arc<[u8]>,
        /// Required `iss`, when set.
        issuer: Option<String>,
        /// Required `aud`, when set.
        audience: Option<String>,
    },
    /// Trust the claims of API Gateway's JWT authorizer (the api Lambda function).
    ApiGateway,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Hs256 { .. } => f.write_str("Auth::Hs256"),
            Auth::ApiGateway => f.write_str("Auth::ApiGateway"),
        }
    }
}

impl Auth {
    /// HS256 with `secret`, no issuer or audience required.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Self {
        Auth::Hs256 {
            secret: Arc::from(secret.as_ref()),
            issuer: None,
            audience: None,
        }
    }

    /// Who is calling, from the request's credentials.
    pub fn authenticate(&self, parts: &Parts, now_secs: u64) -> Result<Caller, AuthError> {
        match self {
            Auth::Hs256 {
                secret,
                issuer,
                audience,
            } => {
                let token = bearer(&parts.headers)?;
                let c = verify(
                    secret,
                    token,
                    now_secs,
                    issuer.as_deref(),
                    audience.as_deref(),
                )?;
                Caller::from_parts(Some(&c.sub), Some(&c.tenant), &c.scope)
            }
            Auth::ApiGateway => {
                let Some(g) = GatewayClaims::from_request(parts) else {
                    return Err(match parts.headers.get(header::AUTHORIZATION) {
                        None => AuthError::Missing,
                        Some(_) => AuthError::Claims(
                            "the request carries no authorizer claims; it did not come through the API's JWT authorizer".into(),
                        ),
                    });
                };
                // Signature, expiry, issuer and audience are the authorizer's to check
                // (it did, or the request would not be here); tenant and scope are ours.
                // `scope` (RFC 8693, Cognito), or `scp` (some other issuers).
                let mut scopes = g
                    .claims
                    .get("scope")
                    .or_else(|| g.claims.get("scp"))
                    .cloned()
                    .unwrap_or_default();
                for s in &g.scopes {
                    scopes.push(' ');
                    scopes.push_str(s);
                }
                Caller::from_parts(
                    g.claims.get("sub").map(String::as_str),
                    g.claims.get("tenant").map(String::as_str),
                    &scopes,
                )
            }
        }
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(AuthError::Missing);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("the Authorization header is not ASCII".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(AuthError::Malformed(
            "the Authorization header is not `Bearer <token>`".into(),
        )),
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What one route's gate checks: the API's [`Auth`] and the scope the route needs.
#[derive(Clone, Debug)]
pub(crate) struct Gate {
    pub auth: Arc<Auth>,
    pub scope: Scope,
}

/// Authenticates the request and checks the route's scope before any extractor or
/// handler runs; the [`Caller`] goes into the request's extensions.
pub(crate) async fn gate(State(g): State<Gate>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = match g.auth.authenticate(&parts, now_secs()) {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if !caller.has(g.scope) {
        return ApiError::Forbidden {
            detail: format!(
                "this route needs the `{}` scope; the token has {}",
                g.scope,
                caller
                    .scope
                    .map_or("no known scope".to_string(), |s| format!("`{s}`"))
            ),
            scope: Some(g.scope.as_str()),
        }
        .into_response();
    }
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, body)).await
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Only a route's gate puts a caller here; a route without one serves nobody.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::from(AuthError::Missing))
    }
}

/// Reads the HS256 secret kept in `path`, or makes one (32 random bytes, hex) and
/// keeps it there (mode 0600), so tokens minted by `aos token` survive restarts.
pub fn load_or_create_secret(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Write;
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut f) => {
            f.write_all(secret.as_bytes())?;
            Ok(secret)
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(path)?.trim().to_string())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "ada".into(),
            tenant: "acme".into(),
            scope: "read write".into(),
            exp,
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
        }
    }

    #[test]
    fn a_minted_token_verifies_and_a_changed_one_does_not() {
        let t = mint(b"s3cret", &claims(2_000));
        assert_eq!(
            verify(b"s3cret", &t, 1_000, None, None).unwrap(),
            claims(2_000)
        );
        assert_eq!(
            verify(b"other", &t, 1_000, None, None),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(b"s3cret", &t, 2_000, None, None),
            Err(AuthError::Expired)
        );
        // A payload swapped for another tenant's keeps the old signature: refused.
        let forged = mint(
            b"s3cret",
            &Claims {
                tenant: "victim".into(),
                ..claims(2_000)
            },
        );
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged_payload = forged.split('.').nth(1).unwrap();
        parts[1] = forged_payload;
        assert_eq!(
            verify(b"s3cret", &parts.join("."), 1_000, None, None),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn unsigned_and_other_algorithms_are_refused() {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(2_000)).unwrap());
        let none = format!(
            "{}.{payload}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#)
        );
        assert!(matches!(
            verify(b"s", &none, 1, None, None),
            Err(AuthError::Malformed(m)) if m.contains("\"none\"")
        ));
        assert!(matches!(
            verify(b"s", "a.b", 1, None, None),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn scopes_nest_and_tenants_are_checked() {
        let c = Caller::from_parts(Some("a"), Some("acme"), "write").unwrap();
        assert!(c.has(Scope::Read) && c.has(Scope::Write) && !c.has(Scope::Admin));
        let none = Caller::from_parts(Some("a"), Some("acme"), "openid email").unwrap();
        assert!(!none.has(Scope::Read));
        assert!(Caller::from_parts(Some("a"), Some("Acme!"), "read").is_err());
        assert!(Caller::from_parts(Some("a"), None, "read").is_err());
        assert!(valid_tenant("default") && valid_tenant("t-1_x") && !valid_tenant("-x"));
        assert!(!valid_tenant(&"a".repeat(65)));
    }

    #[test]
    fn the_secret_file_is_made_once_and_private() {
        let dir = std::env::temp_dir().join(format!("aos-secret-{}", std::process::id()));
        let path = dir.join("jwt-secret");
        let _ = std::fs::remove_dir_all(&dir);
        let a = load_or_create_secret(&path).unwrap();
        let b = load_or_create_secret(&path).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
