//! Builds a function's kernel on the AWS adapters, once, at init. The rule kept here:
//! a function links and registers only the tools of its own agent. The catalog still
//! holds every agent (a wake names its peers and their purposes, and the catalog checks
//! that every peer exists), so the tools of other agents are registered as
//! placeholders that say where they run. None of them can run here: a wake only runs
//! in its own agent's function, because the SQS handler dead-letters an envelope that
//! arrives on the wrong queue before waking anything.

use crate::config::Config;
use aos_agents::reference_agents;
use aos_aws::{AwsBackend, AwsClients};
use aos_kernel::llm::{Model, ToolSpec};
use aos_kernel::model::ModelError;
use aos_kernel::offline::OfflineModel;
use aos_kernel::ports::{Clock, SystemClock};
use aos_kernel::prices::PriceTable;
use aos_kernel::route::{BreakerPolicy, Router, provider_of};
use aos_kernel::tools::{Tool, ToolContext, ToolError, ToolRegistry};
use aos_kernel::{Catalog, Kernel, KernelConfig, Ports};
use aos_models::{ProviderConfig, Providers, SecretError, SetupError};
use async_trait::async_trait;
use aws_config::SdkConfig;
use serde_json::{Value, json};
use std::sync::Arc;

/// Why a function could not start. Each says what to fix; none holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("model key: {0}")]
    Secret(#[from] SecretError),
    #[error("model providers: {0}")]
    Providers(#[from] SetupError),
    #[error("agents: {0}")]
    Agents(#[from] ModelError),
    #[error("the built-in price table: {0}")]
    Prices(String),
}

/// A function's kernel and the AWS ports it runs on (the SQS handler releases
/// records through `aws.queues`; the API lists dead letters through it).
#[derive(Clone, Debug)]
pub struct Assembled {
    pub kernel: Kernel,
    pub aws: AwsBackend,
}

/// The SDK's configuration ([`aos_aws::load_sdk_config`]: region, credentials chain,
/// endpoints, retries), loaded at init. Its duration is logged at debug level as
/// `aws_config_us`, which `aos bench --lambda` reads to say what it costs.
pub async fn load_sdk_config() -> SdkConfig {
    let started = std::time::Instant::now();
    let sdk = aos_aws::load_sdk_config().await;
    tracing::debug!(aws_config_us = micros(started), "AWS configuration loaded");
    sdk
}

fn micros(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Fetches the model keys (once), builds the SDK clients, the model router (the
/// offline model, Bedrock through the function's role, OpenAI and Anthropic when
/// configured) and the kernel with the compiled-in agents and `tools`, the tools this
/// function links. Every tool of `config.agent` must be in `tools`.
pub async fn build_kernel(
    config: &Config,
    sdk: &SdkConfig,
    tools: ToolRegistry,
) -> Result<Assembled, InitError> {
    let started = std::time::Instant::now();
    let (openai_api_key, anthropic_api_key) = aos_models::secrets::resolve_keys(
        sdk,
        config.openai_key.clone(),
        config.anthropic_key.clone(),
    )
    .await?;
    let providers = Providers::new(ProviderConfig {
        openai_api_key,
        openai_base_url: config.openai_base_url.clone(),
        anthropic_api_key,
        anthropic_base_url: config.anthropic_base_url.clone(),
        bedrock: Some(sdk.clone()),
    })?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let clients = crate::metrics::count_wake_calls(AwsClients::new(sdk));
    let aws = AwsBackend::new(clients, config.aws.clone(), clock.clone());
    let catalog = Catalog::new(reference_agents()?)?;
    let tools = with_placeholders(&catalog, config.agent.as_deref(), tools);
    let kernel_config = kernel_config(config, &providers)?;
    let mut router = Router::new(clock.clone(), BreakerPolicy::default()).with(
        "offline",
        Arc::new(OfflineModel::new(&catalog)) as Arc<dyn Model>,
    );
    for (prefix, model) in providers {
        router = router.with(prefix, model);
    }
    let ports = Ports {
        sessions: Arc::new(aws.store.clone()),
        tasks: Arc::new(aws.store.clone()),
        mailbox: Arc::new(aws.queues.clone()),
        blobs: Arc::new(aws.blobs.clone()),
        scheduler: Arc::new(aws.scheduler.clone()),
        model: Arc::new(router),
        clock,
    };
    let kernel = Kernel::new(catalog, tools, ports, kernel_config)?;
    // Model keys fetched, clients and kernel built: the rest of a cold start.
    tracing::debug!(build_kernel_us = micros(started), "kernel built");
    Ok(Assembled { kernel, aws })
}

/// Every function's set-up, done once before its first event: logging, the
/// configuration from the environment, the SDK configuration, and the kernel with
/// `tools` (what this function links; `tools` sees the configuration). A failure is
/// logged with `function`'s name before it ends the process.
pub async fn setup(
    function: &str,
    tools: impl FnOnce(&Config) -> ToolRegistry,
) -> Result<(Config, Assembled), InitError> {
    crate::init_tracing();
    let built = async {
        let config = Config::from_env()?;
        let sdk = load_sdk_config().await;
        let registry = tools(&config);
        let built = build_kernel(&config, &sdk, registry).await?;
        Ok((config, built))
    };
    built.await.inspect_err(|e: &InitError| {
        tracing::error!(error = %e, "{function} function cannot start");
    })
}

/// Routes, prices and the deadline margin. The default route of `auto` agents, as the
/// CLI chooses it: `AOS_DEFAULT_MODEL`, else `Providers::default_route`, else the
/// offline model.
fn kernel_config(config: &Config, providers: &Providers) -> Result<KernelConfig, InitError> {
    let configured = |p: &str| p == "offline" || providers.get(p).is_some();
    let default_model = match &config.default_model {
        Some(m) => m.clone(),
        None => providers.default_route().unwrap_or("offline").into(),
    };
    for (var, route) in [
        ("AOS_MODEL", config.model.as_ref()),
        ("AOS_DEFAULT_MODEL", config.default_model.as_ref()),
    ] {
        if let Some(route) = route
            && !configured(provider_of(route))
        {
            let known: Vec<&str> = std::iter::once("offline")
                .chain(providers.prefixes())
                .collect();
            return Err(crate::config::ConfigError::Invalid {
                var: var.into(),
                why: format!(
                    "route {route:?} names provider '{}', which is not configured \
                     (configured: {}); set its key's _PARAM or _SECRET variable",
                    provider_of(route),
                    known.join(", ")
                ),
            }
            .into());
        }
    }
    let prices =
        PriceTable::from_toml(aos_agents::PRICES).map_err(|e| InitError::Prices(e.to_string()))?;
    Ok(KernelConfig {
        default_model,
        model_override: config.model.clone(),
        prices: Arc::new(prices),
        deadline_margin_ms: config.deadline_margin_ms,
        ..KernelConfig::default()
    })
}

/// `tools` plus a placeholder for every tool another agent names that `own` does
/// not (all of them when the function serves no agent).
fn with_placeholders(
    catalog: &Catalog,
    own: Option<&str>,
    mut tools: ToolRegistry,
) -> ToolRegistry {
    let own_tools: Vec<String> = own
        .and_then(|a| catalog.get(a))
        .map(|d| d.tools.clone())
        .unwrap_or_default();
    for def in catalog.agents() {
        for name in &def.tools {
            if tools.get(name).is_none() && !own_tools.contains(name) {
                tools.insert(Arc::new(Elsewhere {
                    name: name.clone(),
                    agent: def.name.to_string(),
                }));
            }
        }
    }
    tools
}

/// Another agent's tool, which runs in that agent's function only.
#[derive(Debug)]
struct Elsewhere {
    name: String,
    agent: String,
}

#[async_trait]
impl Tool for Elsewhere {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name.clone(),
            description: format!("runs in the {} function only", self.agent),
            input_schema: json!({"type": "object"}),
        }
    }
    async fn call(&self, _input: Value, _ctx: &ToolContext) -> Result<String, ToolError> {
        Err(ToolError(format!(
            "{} is not linked into this function; it runs in the {} function",
            self.name, self.agent
        )))
    }
}
