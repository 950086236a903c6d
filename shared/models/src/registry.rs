//! The provider registry: builds each configured provider once, at start-up, keyed by
//! route prefix, for the kernel's `Router` (which dispatches, falls back and breaks
//! circuits). The rule: configuration is plain data the binary hands in (this crate
//! reads no environment), and neither it nor the registry prints a key.

use crate::http::SetupError;
use crate::{anthropic, bedrock, openai};
use aos_kernel::llm::Model;
use aos_kernel::route::provider_of;
use aws_config::SdkConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Which providers to build. A provider is built when any of its settings is given.
#[derive(Clone, Default)]
pub struct ProviderConfig {
    /// Optional even with a base URL: local servers (Ollama, llama.cpp) take no key.
    pub openai_api_key: Option<String>,
    /// Any OpenAI-compatible server; [`openai::DEFAULT_BASE_URL`] when only a key is given.
    pub openai_base_url: Option<String>,
    pub anthropic_api_key: Option<String>,
    /// A proxy or gateway in front of Anthropic; [`anthropic::DEFAULT_BASE_URL`] otherwise.
    pub anthropic_base_url: Option<String>,
    /// The caller's AWS configuration (region, credentials, endpoint) for Bedrock.
    pub bedrock: Option<SdkConfig>,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = |k: &Option<String>| k.as_ref().map(|_| "<redacted>");
        f.debug_struct("ProviderConfig")
            .field("openai_api_key", &key(&self.openai_api_key))
            .field("openai_base_url", &self.openai_base_url)
            .field("anthropic_api_key", &key(&self.anthropic_api_key))
            .field("anthropic_base_url", &self.anthropic_base_url)
            .field(
                "bedrock_region",
                &self
                    .bedrock
                    .as_ref()
                    .map(|c| c.region().map(|r| r.as_ref().to_string())),
            )
            .finish()
    }
}

/// The built providers by route prefix (`openai`, `anthropic`, `bedrock`). Hand them to
/// the kernel's router: `providers.into_iter().fold(router, |r, (p, m)| r.with(p, m))`.
#[derive(Clone, Default)]
pub struct Providers {
    models: BTreeMap<String, Arc<dyn Model>>,
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.models.keys()).finish()
    }
}

impl Providers {
    pub fn new(config: ProviderConfig) -> Result<Self, SetupError> {
        let mut providers = Self::default();
        if config.openai_api_key.is_some() || config.openai_base_url.is_some() {
            let model = openai::OpenAiChat::new(config.openai_api_key, config.openai_base_url)?;
            providers
                .models
                .insert(openai::PREFIX.into(), Arc::new(model));
        }
        if config.anthropic_api_key.is_some() || config.anthropic_base_url.is_some() {
            let model = anthropic::AnthropicMessages::new(
                config.anthropic_api_key.unwrap_or_default(),
                config.anthropic_base_url,
            )?;
            providers
                .models
                .insert(anthropic::PREFIX.into(), Arc::new(model));
        }
        if let Some(sdk) = &config.bedrock {
            let model = bedrock::BedrockConverse::new(sdk);
            providers
                .models
                .insert(bedrock::PREFIX.into(), Arc::new(model));
        }
        Ok(providers)
    }

    pub fn get(&self, prefix: &str) -> Option<&Arc<dyn Model>> {
        self.models.get(prefix)
    }

    /// The provider a `provider:model` route names; a bare route is its own prefix.
    pub fn for_route(&self, route: &str) -> Option<&Arc<dyn Model>> {
        self.get(provider_of(route))
    }

    /// The route of `auto` agents when nothing names one: Anthropic when configured,
    /// else OpenAI (or an OpenAI-compatible server), else none (the offline model).
    /// Bedrock is not chosen by default: it needs a model id the account may use.
    pub fn default_route(&self) -> Option<&'static str> {
        if self.get(anthropic::PREFIX).is_some() {
            Some("anthropic:claude-haiku-4-5")
        } else if self.get(openai::PREFIX).is_some() {
            Some("openai:gpt-4o-mini")
        } else {
            None
        }
    }

    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    pub fn into_map(self) -> BTreeMap<String, Arc<dyn Model>> {
        self.models
    }
}

impl IntoIterator for Providers {
    type Item = (String, Arc<dyn Model>);
    type IntoIter = std::collections::btree_map::IntoIter<String, Arc<dyn Model>>;
    fn into_iter(self) -> Self::IntoIter {
        self.models.into_iter()
    }
}
