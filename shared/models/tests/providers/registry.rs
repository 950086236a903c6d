//! The provider registry: built from plain configuration, found by route prefix, and
//! silent about keys.

use crate::scripted::{KEY, Reply, Scripted, simple_request};
use aos_kernel::llm::Model;
use aos_kernel::ports::SystemClock;
use aos_kernel::route::{BreakerPolicy, Router};
use aos_models::{ProviderConfig, Providers};
use serde_json::json;
use std::sync::Arc;

#[tokio::test]
async fn providers_are_built_from_config_and_serve_the_kernels_router() {
    let anthropic = Scripted::start(vec![Reply::status(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )])
    .await;
    let openai = Scripted::start(vec![Reply::ok(json!({
        "model": "qwen2.5:7b",
        "choices": [{"message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"}],
    }))])
    .await;
    let config = ProviderConfig {
        openai_base_url: Some(format!("{}/v1", openai.url)),
        anthropic_api_key: Some(KEY.into()),
        anthropic_base_url: Some(anthropic.url.clone()),
        ..ProviderConfig::default()
    };

    let providers = Providers::new(config).unwrap();

    assert_eq!(
        providers.prefixes().collect::<Vec<_>>(),
        ["anthropic", "openai"]
    );
    assert!(providers.for_route("openai:qwen2.5:7b").is_some());
    assert!(
        providers
            .for_route("bedrock:amazon.nova-pro-v1:0")
            .is_none()
    );
    let router = providers.into_iter().fold(
        Router::new(Arc::new(SystemClock), BreakerPolicy::default()),
        |r, (p, m)| r.with(p, m),
    );
    let mut request = simple_request("anthropic:claude-haiku-4-5");
    request.fallbacks = vec!["openai:qwen2.5:7b".into()];

    // Anthropic is overloaded (transient), so the router falls back to the local server.
    let response = router.complete(&request).await.unwrap();

    assert_eq!(response.model, "openai:qwen2.5:7b");
    assert_eq!(response.text(), "Hello.");
    assert_eq!(response.usage.llm_calls, 1);
    assert_eq!(anthropic.only_request().body["model"], "claude-haiku-4-5");
    assert_eq!(openai.only_request().body["model"], "qwen2.5:7b");
}

#[test]
fn nothing_configured_builds_nothing() {
    let providers = Providers::new(ProviderConfig::default()).unwrap();
    assert_eq!(providers.prefixes().count(), 0);
}

#[test]
fn debug_output_never_shows_a_key() {
    let config = ProviderConfig {
        openai_api_key: Some(KEY.into()),
        anthropic_api_key: Some(format!("{KEY}-anthropic")),
        ..ProviderConfig::default()
    };
    let shown = format!("{config:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(
        shown.contains("openai_api_key: Some(\"<redacted>\")"),
        "{shown}"
    );
    let shown = format!(
        "{:?} {:?}",
        Providers::new(config.clone()).unwrap(),
        aos_models::OpenAiChat::new(config.openai_api_key, None).unwrap()
    );
    assert!(!shown.contains(KEY), "{shown}");
}

#[test]
fn a_key_that_cannot_be_a_header_is_a_setup_error() {
    let e = Providers::new(ProviderConfig {
        anthropic_api_key: Some("bad\nkey".into()),
        ..ProviderConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "anthropic: the API key is not a valid HTTP header value"
    );
}
