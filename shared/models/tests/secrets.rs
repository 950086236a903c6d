//! Provider keys read from SSM Parameter Store and Secrets Manager on moto (one server
//! per test binary, each test on its own names), plus a stub that refuses access: what
//! a binary gets at start-up, and that no error ever shows what a secret holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aos_aws::emulator::Moto;
use aos_aws::emulator_sdk_config;
use aos_models::secrets::{SecretError, SecretRef, resolve, resolve_keys};
use aws_config::SdkConfig;
use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_ssm::types::ParameterType;

async fn moto() -> SdkConfig {
    let endpoint = Moto::shared_endpoint().unwrap_or_else(|e| panic!("{e}"));
    emulator_sdk_config(endpoint).await
}

async fn put_parameter(sdk: &SdkConfig, name: &str, value: &str) {
    aws_sdk_ssm::Client::new(sdk)
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(ParameterType::SecureString)
        .send()
        .await
        .unwrap();
}

async fn create_secret(sdk: &SdkConfig, name: &str, value: &str) -> String {
    let out = aws_sdk_secretsmanager::Client::new(sdk)
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
    out.arn.unwrap()
}

/// Both renderings a log line could use.
fn shown(e: &SecretError) -> String {
    format!("{e} {e:?}")
}

#[tokio::test]
async fn ssm_secure_string_comes_back_decrypted_and_trimmed() {
    let sdk = moto().await;
    put_parameter(&sdk, "/aos/test/openai-key", "  sk-ssm-Secure123\n").await;
    let r: SecretRef = "ssm:/aos/test/openai-key".parse().unwrap();
    assert_eq!(resolve(&sdk, &r).await.unwrap(), "sk-ssm-Secure123");
}

#[tokio::test]
async fn secrets_manager_json_secret_gives_its_api_key_field_by_name_or_arn() {
    let sdk = moto().await;
    let arn = create_secret(
        &sdk,
        "aos/test/anthropic-json",
        r#"{"api_key": "sk-ant-Json456", "note": "rotated monthly"}"#,
    )
    .await;
    let by_name: SecretRef = "secretsmanager:aos/test/anthropic-json".parse().unwrap();
    assert_eq!(resolve(&sdk, &by_name).await.unwrap(), "sk-ant-Json456");
    // A bare ARN, as `aws secretsmanager create-secret` prints it.
    let by_arn: SecretRef = arn.parse().unwrap();
    assert!(matches!(by_arn, SecretRef::SecretsManager(_)));
    assert_eq!(resolve(&sdk, &by_arn).await.unwrap(), "sk-ant-Json456");
}

#[tokio::test]
async fn a_plain_string_secret_is_the_key() {
    let sdk = moto().await;
    create_secret(&sdk, "aos/test/plain", "sk-plain-789\n").await;
    let r = SecretRef::SecretsManager("aos/test/plain".into());
    assert_eq!(resolve(&sdk, &r).await.unwrap(), "sk-plain-789");
}

#[tokio::test]
async fn a_missing_parameter_or_secret_is_named_in_a_readable_error() {
    let sdk = moto().await;
    let r: SecretRef = "ssm:/aos/test/never-created".parse().unwrap();
    let err = resolve(&sdk, &r).await.unwrap_err();
    assert!(matches!(err, SecretError::NotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "ssm:/aos/test/never-created: not found");
    assert!(!err.is_transient());

    let r: SecretRef = "secretsmanager:aos/test/never-created".parse().unwrap();
    let err = resolve(&sdk, &r).await.unwrap_err();
    assert!(matches!(err, SecretError::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "secretsmanager:aos/test/never-created: not found"
    );
}

#[tokio::test]
async fn errors_never_show_what_a_secret_holds() {
    let sdk = moto().await;

    // A JSON object without a key field: sending it as a bearer token would only fail
    // later, so it is refused here, without quoting it.
    create_secret(&sdk, "aos/test/wrong-json", r#"{"token": "sk-Hidden-One"}"#).await;
    let r = SecretRef::SecretsManager("aos/test/wrong-json".into());
    let err = resolve(&sdk, &r).await.unwrap_err();
    assert!(matches!(err, SecretError::Unusable { .. }), "{err:?}");
    let text = shown(&err);
    assert!(text.contains("aos/test/wrong-json"), "{text}");
    assert!(!text.contains("sk-Hidden-One"), "{text}");

    create_secret(&sdk, "aos/test/not-a-string", r#"{"api_key": 4242424242}"#).await;
    let r = SecretRef::SecretsManager("aos/test/not-a-string".into());
    let err = resolve(&sdk, &r).await.unwrap_err();
    assert!(!shown(&err).contains("4242424242"), "{err:?}");

    // Whitespace only, in either service, is empty.
    put_parameter(&sdk, "/aos/test/blank", " \n\t ").await;
    let r = SecretRef::Ssm("/aos/test/blank".into());
    let err = resolve(&sdk, &r).await.unwrap_err();
    assert!(matches!(err, SecretError::Empty { .. }), "{err:?}");
    assert_eq!(err.to_string(), "ssm:/aos/test/blank: empty");
    create_secret(&sdk, "aos/test/blank-field", r#"{"key": "   "}"#).await;
    let r = SecretRef::SecretsManager("aos/test/blank-field".into());
    let err = resolve(&sdk, &r).await.unwrap_err();
    assert!(matches!(err, SecretError::Empty { .. }), "{err:?}");

    // A binary secret is named, not dumped.
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name("aos/test/binary")
        .secret_binary(Blob::new("sk-Binary-Two"))
        .send()
        .await
        .unwrap();
    let r = SecretRef::SecretsManager("aos/test/binary".into());
    let err = resolve(&sdk, &r).await.unwrap_err();
    assert!(matches!(err, SecretError::Unusable { .. }), "{err:?}");
    assert!(!shown(&err).contains("sk-Binary-Two"), "{err:?}");

    // A key pasted where its location belongs is not echoed either.
    let err = "sk-proj-Pasted-Three".parse::<SecretRef>().unwrap_err();
    let text = shown(&err);
    assert!(text.contains("ssm:<parameter name>"), "{text}");
    assert!(!text.contains("Pasted"), "{text}");
}

#[tokio::test]
async fn both_keys_are_fetched_together_and_an_absent_reference_stays_absent() {
    let sdk = moto().await;
    put_parameter(&sdk, "/aos/test/pair-openai", "sk-pair-openai").await;
    create_secret(&sdk, "aos/test/pair-anthropic", r#"{"key":"sk-pair-ant"}"#).await;
    let openai = SecretRef::Ssm("/aos/test/pair-openai".into());
    let anthropic = SecretRef::SecretsManager("aos/test/pair-anthropic".into());

    let keys = resolve_keys(&sdk, Some(openai.clone()), Some(anthropic.clone()))
        .await
        .unwrap();
    assert_eq!(
        keys,
        (Some("sk-pair-openai".into()), Some("sk-pair-ant".into()))
    );
    let keys = resolve_keys(&sdk, None, Some(anthropic)).await.unwrap();
    assert_eq!(keys, (None, Some("sk-pair-ant".into())));
    assert_eq!(resolve_keys(&sdk, None, None).await.unwrap(), (None, None));

    let missing = SecretRef::SecretsManager("aos/test/pair-missing".into());
    let err = resolve_keys(&sdk, Some(openai), Some(missing))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "secretsmanager:aos/test/pair-missing: not found"
    );
}

/// moto grants everything, so a refusal comes from a stub speaking the services'
/// JSON protocol.
#[tokio::test]
async fn access_denied_names_the_secret_and_keeps_the_services_reason() {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;

    let app = axum::Router::new().fallback(|| async {
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
            r#"{"__type":"AccessDeniedException","message":"User: arn:aws:sts::123456789012:assumed-role/aos-worker/fn is not authorized to perform: ssm:GetParameter"}"#,
        )
            .into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let sdk = emulator_sdk_config(&url).await;

    for r in [
        SecretRef::Ssm("/aos/test/denied".into()),
        SecretRef::SecretsManager("aos/test/denied".into()),
    ] {
        let err = resolve(&sdk, &r).await.unwrap_err();
        assert!(matches!(err, SecretError::AccessDenied { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("{r}: access denied")), "{text}");
        assert!(text.contains("not authorized to perform"), "{text}");
        assert!(!err.is_transient());
    }
}
