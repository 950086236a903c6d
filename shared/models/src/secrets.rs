//! Provider API keys from SSM Parameter Store or Secrets Manager, fetched once when a
//! container starts (behind the `secrets` feature). On Lambda the environment says
//! *where* a key is, never what it is; the binary parses a [`SecretRef`], calls
//! [`resolve_keys`] in `main`, and puts the result in a
//! [`ProviderConfig`](crate::ProviderConfig).
//!
//! The rule: a secret's value leaves this module only as the `Ok` value. Errors, parse
//! errors and `Debug` name the parameter or secret and say why it could not be used
//! (not found, access denied, empty, unusable shape, no answer), never what it held,
//! and a string that is not a reference (a key pasted where its location belongs) is
//! not echoed back. Like the rest of the crate, this reads no environment.

use crate::http::{chain, truncate};
use aws_config::SdkConfig;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// The fields of a JSON secret that hold the key, in the order they are tried. A
/// Secrets Manager secret is often a JSON object of several fields; the console's
/// key/value editor writes one.
pub const JSON_FIELDS: &[&str] = &["api_key", "key", "value"];

/// Where a key is kept.
///
/// Written `ssm:<parameter name or ARN>` or `secretsmanager:<secret id or ARN>`; a bare
/// `arn:…:ssm:…` or `arn:…:secretsmanager:…` ARN names its service itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// An SSM parameter, read with decryption, so a `SecureString` comes back in clear.
    /// A `name:version` or `name:label` selector is passed through.
    Ssm(String),
    /// A Secrets Manager secret's `SecretString` (its current version).
    SecretsManager(String),
}

const SSM: &str = "ssm";
const SECRETS_MANAGER: &str = "secretsmanager";
const FORMS: &str = "expected `ssm:<parameter name>`, `secretsmanager:<secret id or ARN>`, \
                     or an SSM parameter or Secrets Manager secret ARN";

impl SecretRef {
    /// The parameter name or secret id, without the service.
    pub fn name(&self) -> &str {
        match self {
            SecretRef::Ssm(name) | SecretRef::SecretsManager(name) => name,
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Ssm(name) => write!(f, "{SSM}:{name}"),
            SecretRef::SecretsManager(id) => write!(f, "{SECRETS_MANAGER}:{id}"),
        }
    }
}

impl FromStr for SecretRef {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, SecretError> {
        let bad = |why: String| SecretError::BadRef { why };
        let s = s.trim();
        if s.is_empty() {
            return Err(bad("empty".into()));
        }
        // arn:<partition>:<service>:<region>:<account>:<resource>
        if s.starts_with("arn:") {
            return match s.split(':').nth(2) {
                Some(SSM) => Ok(SecretRef::Ssm(s.into())),
                Some(SECRETS_MANAGER) => Ok(SecretRef::SecretsManager(s.into())),
                // Not a key's shape: keys do not start with `arn:`.
                Some(service) if is_name(service, |b| b.is_ascii_digit() || b == b'-') => {
                    Err(bad(format!("an ARN of service `{service}`")))
                }
                _ => Err(bad("a malformed ARN".into())),
            };
        }
        let Some((kind, name)) = s.split_once(':') else {
            return Err(bad("no `kind:` prefix".into()));
        };
        let name = name.trim();
        let make = match kind {
            SSM => SecretRef::Ssm,
            SECRETS_MANAGER => SecretRef::SecretsManager,
            // Named only when it cannot be the start of a key, which has digits or dashes.
            _ if is_name(kind, |_| false) => return Err(bad(format!("unknown kind `{kind}`"))),
            _ => return Err(bad("unknown kind".into())),
        };
        if name.is_empty() {
            return Err(bad(format!("nothing after `{kind}:`")));
        }
        Ok(make(name.into()))
    }
}

/// A short lowercase word (plus what `also` allows), safe to repeat in an error.
fn is_name(s: &str, also: impl Fn(u8) -> bool) -> bool {
    (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || also(b))
}

/// Why a key could not be had. Every variant names where it was looked for (or, for
/// [`SecretError::BadRef`], what was wrong with the reference); none holds a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("not a secret reference ({why}): {FORMS}")]
    BadRef { why: String },
    #[error("{secret}: not found")]
    NotFound { secret: SecretRef },
    /// IAM or KMS refused: the function's role lacks `ssm:GetParameter`,
    /// `secretsmanager:GetSecretValue` or `kms:Decrypt`.
    #[error("{secret}: access denied: {detail}")]
    AccessDenied { secret: SecretRef, detail: String },
    #[error("{secret}: empty")]
    Empty { secret: SecretRef },
    /// Found, but not a usable key: a binary secret, or a JSON object without a string
    /// field [`JSON_FIELDS`] names.
    #[error("{secret}: {why}")]
    Unusable { secret: SecretRef, why: String },
    /// Throttled, a 5xx, or no answer: the same call may work on the next cold start.
    #[error("{secret}: unavailable: {detail}")]
    Unavailable { secret: SecretRef, detail: String },
    /// Any other refusal (a malformed name, a secret pending deletion).
    #[error("{secret}: refused: {detail}")]
    Rejected { secret: SecretRef, detail: String },
}

impl SecretError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SecretError::Unavailable { .. })
    }
}

/// Fetches one key, trimmed of surrounding whitespace; an empty one is an error.
pub async fn resolve(sdk: &SdkConfig, secret: &SecretRef) -> Result<String, SecretError> {
    let raw = match secret {
        SecretRef::Ssm(name) => {
            let out = aws_sdk_ssm::Client::new(sdk)
                .get_parameter()
                .name(name)
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| sdk_error(secret, e))?;
            out.parameter
                .and_then(|p| p.value)
                .ok_or_else(|| SecretError::Empty {
                    secret: secret.clone(),
                })?
        }
        SecretRef::SecretsManager(id) => {
            let out = aws_sdk_secretsmanager::Client::new(sdk)
                .get_secret_value()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| sdk_error(secret, e))?;
            match (out.secret_string, out.secret_binary) {
                (Some(text), _) => from_json(secret, text)?,
                (None, Some(_)) => {
                    return Err(SecretError::Unusable {
                        secret: secret.clone(),
                        why: "a binary secret; store the key as SecretString".into(),
                    });
                }
                (None, None) => String::new(),
            }
        }
    };
    let key = raw.trim();
    if key.is_empty() {
        return Err(SecretError::Empty {
            secret: secret.clone(),
        });
    }
    Ok(key.to_string())
}

/// Fetches the OpenAI and Anthropic keys concurrently, for
/// [`ProviderConfig::openai_api_key`](crate::ProviderConfig::openai_api_key) and
/// [`ProviderConfig::anthropic_api_key`](crate::ProviderConfig::anthropic_api_key).
/// A `None` reference stays `None`; the first failure is returned.
pub async fn resolve_keys(
    sdk: &SdkConfig,
    openai: Option<SecretRef>,
    anthropic: Option<SecretRef>,
) -> Result<(Option<String>, Option<String>), SecretError> {
    let one = |r: Option<SecretRef>| async move {
        match r {
            Some(r) => resolve(sdk, &r).await.map(Some),
            None => Ok(None),
        }
    };
    futures::future::try_join(one(openai), one(anthropic)).await
}

/// The key inside a JSON object secret, or the whole string when it is not one.
fn from_json(secret: &SecretRef, text: String) -> Result<String, SecretError> {
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(&text) else {
        return Ok(text);
    };
    let unusable = |why: String| SecretError::Unusable {
        secret: secret.clone(),
        why,
    };
    for name in JSON_FIELDS {
        match fields.remove(*name) {
            Some(Value::String(key)) => return Ok(key),
            Some(_) => return Err(unusable(format!("JSON field `{name}` is not a string"))),
            None => {}
        }
    }
    // Sending the whole object as a bearer token would only fail later, as a 401.
    Err(unusable(format!(
        "a JSON object with none of the fields `{}`",
        JSON_FIELDS.join("`, `")
    )))
}

/// Codes both services use for "no such parameter or secret".
const NOT_FOUND: &[&str] = &[
    "ParameterNotFound",
    "ParameterVersionNotFound",
    "ResourceNotFoundException",
];
/// IAM, credentials, and KMS refusing to decrypt.
const DENIED: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "DecryptionFailure",
    "InvalidKeyId",
];
const THROTTLED: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "InternalServerError",
    "InternalServiceError",
    "InternalFailure",
    "ServiceUnavailable",
];

/// Sorts a failed call by error code, then by status. The SDK has retried what its
/// retry configuration allows by now. Service messages are about the request (which
/// carries only the name), so they are safe to show.
fn sdk_error<E>(secret: &SecretRef, e: SdkError<E>) -> SecretError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let secret = secret.clone();
    match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let status = service.raw().status().as_u16();
            let code = err.code().unwrap_or("error");
            let detail = format!(
                "{code}: {}",
                truncate(err.message().unwrap_or_default(), 300)
            );
            if NOT_FOUND.contains(&code) {
                SecretError::NotFound { secret }
            } else if DENIED.contains(&code) || status == 403 {
                SecretError::AccessDenied { secret, detail }
            } else if THROTTLED.contains(&code) || status >= 500 || status == 429 {
                SecretError::Unavailable { secret, detail }
            } else {
                SecretError::Rejected { secret, detail }
            }
        }
        SdkError::ConstructionFailure(_) => SecretError::Rejected {
            secret,
            detail: chain(&e),
        },
        _ => SecretError::Unavailable {
            secret,
            detail: chain(&e),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_in_every_accepted_form() {
        let cases = [
            (
                "ssm:/aos/openai-key",
                SecretRef::Ssm("/aos/openai-key".into()),
            ),
            (" ssm: /aos/key:3 \n", SecretRef::Ssm("/aos/key:3".into())),
            (
                "secretsmanager:aos/anthropic",
                SecretRef::SecretsManager("aos/anthropic".into()),
            ),
            (
                "secretsmanager:arn:aws:secretsmanager:eu-west-1:123456789012:secret:aos-AbCdEf",
                SecretRef::SecretsManager(
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:aos-AbCdEf".into(),
                ),
            ),
            (
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:aos-AbCdEf",
                SecretRef::SecretsManager(
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:aos-AbCdEf".into(),
                ),
            ),
            (
                "arn:aws-us-gov:ssm:us-gov-west-1:123456789012:parameter/aos/key",
                SecretRef::Ssm(
                    "arn:aws-us-gov:ssm:us-gov-west-1:123456789012:parameter/aos/key".into(),
                ),
            ),
        ];
        for (text, want) in cases {
            let got: SecretRef = text.parse().unwrap();
            assert_eq!(got, want, "{text:?}");
        }
        // Display round-trips.
        let r = SecretRef::SecretsManager("aos/anthropic".into());
        assert_eq!(r.to_string().parse::<SecretRef>().unwrap(), r);
    }

    #[test]
    fn bad_references_name_the_accepted_forms_and_do_not_echo_a_key() {
        for (text, why) in [
            ("", "empty"),
            ("sk-proj-AbC123xyz", "no `kind:` prefix"),
            ("vault:aos/key", "unknown kind `vault`"),
            ("ssm:", "nothing after `ssm:`"),
            ("arn:aws:s3:::bucket/key", "an ARN of service `s3`"),
            ("sk-ant-api03:Zz9", "unknown kind)"),
        ] {
            let err = text.parse::<SecretRef>().unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
            assert!(err.contains("`ssm:<parameter name>`"), "{err}");
            assert!(err.contains("`secretsmanager:<secret id or ARN>`"), "{err}");
            assert!(!err.contains("sk-"), "{err}");
        }
    }

    #[test]
    fn json_secrets_give_their_key_field() {
        let s = SecretRef::SecretsManager("x".into());
        let pick = |text: &str| from_json(&s, text.into());
        assert_eq!(pick(r#"{"api_key":"a","key":"b"}"#).unwrap(), "a");
        assert_eq!(pick(r#"{"key":"b","value":"c"}"#).unwrap(), "b");
        assert_eq!(pick(r#"{"value":"c"}"#).unwrap(), "c");
        assert_eq!(pick("sk-plain").unwrap(), "sk-plain");
        assert_eq!(pick(r#""quoted""#).unwrap(), r#""quoted""#);
        let err = pick(r#"{"token":"sk-hidden"}"#).unwrap_err().to_string();
        assert!(
            err.contains("none of the fields `api_key`, `key`, `value`"),
            "{err}"
        );
        assert!(!err.contains("sk-hidden"), "{err}");
        let err = pick(r#"{"api_key":12345}"#).unwrap_err().to_string();
        assert!(err.contains("`api_key` is not a string"), "{err}");
        assert!(!err.contains("12345"), "{err}");
    }
}
