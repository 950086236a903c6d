//! The reference agents: their definitions (`functions/<name>/agent.toml`, embedded at
//! build time) and the synchronous tools they call. The rule this crate keeps: a tool
//! never passes off sample data as live data. Every answer built from bundled data says
//! so in the line the model reads, and every tool that runs inline is safe to run again,
//! because a wake that crashes before its commit runs again from the start (the one
//! with effects, `send_payment`, runs at most once and only once a person approved it).
//!
//! Module map:
//!
//! - [`weather`]: `get_weather`, current conditions from Open-Meteo (geocoding, then
//!   forecast), falling back to bundled sample data, labelled as such, when the service
//!   cannot be reached.
//! - [`finance`]: `convert_currency` over a bundled reference-rate sample, a safe
//!   `calculator`, and `check_invoice`, which checks an invoice total to the cent.
//! - [`payments`]: `send_payment`, a simulated payment a person must approve.
//! - [`http_get`]: `http_get`, the text of one URL on a host the operator allowed
//!   ([`ToolsConfig::http_allow`]; none by default), body capped, redirects checked.
//!
//! [`reference_agents`] gives the three agent definitions; [`reference_tools`] gives a
//! registry with every tool they name.

pub mod finance;
pub mod http_get;
pub mod payments;
pub mod weather;

use aos_kernel::model::{AgentDef, ModelError};
use aos_kernel::tools::ToolRegistry;
use std::sync::Arc;
use std::time::Duration;

pub use finance::{CalculatorTool, CurrencyTool, InvoiceTool};
pub use http_get::{HostAllowList, HttpGetTool};
pub use payments::PaymentTool;
pub use weather::WeatherTool;

/// The built-in model price table (`functions/prices.toml`), compiled in: a Lambda
/// package holds only its `bootstrap`, and the CLI's `--prices` replaces it.
pub const PRICES: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../functions/prices.toml"
));

const PRIMARY_TOML: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../functions/primary/agent.toml"
));
const WEATHER_TOML: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../functions/weather/agent.toml"
));
const FINANCE_TOML: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../functions/finance/agent.toml"
));

/// The reference agents, `primary`, `weather` and `finance`, in that order, parsed from
/// the `agent.toml` files embedded at build time.
pub fn reference_agents() -> Result<Vec<AgentDef>, ModelError> {
    [PRIMARY_TOML, WEATHER_TOML, FINANCE_TOML]
        .into_iter()
        .map(AgentDef::from_toml)
        .collect()
}

/// `get_weather` with its own HTTP client, for a binary that links only the weather
/// agent's tools (a Lambda function links only its own agent's).
pub fn weather_tool(cfg: &ToolsConfig) -> WeatherTool {
    match reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .user_agent(concat!("aos-agents/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => WeatherTool::new(cfg, client),
        Err(e) => {
            // Without a client the tool can still answer from its samples, labelled.
            tracing::error!(error = %e, "cannot build the HTTP client; get_weather runs offline");
            WeatherTool::without_network(format!("HTTP client unavailable: {e}"))
        }
    }
}

/// How the tools reach the outside world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolsConfig {
    /// Open-Meteo forecast API; tests point it at a scripted local server.
    pub open_meteo_base: String,
    /// Open-Meteo geocoding API, which turns a city name into coordinates.
    pub geocoding_base: String,
    /// Skip the network entirely and answer from bundled sample data (labelled as such):
    /// for CI and machines without internet, where waiting on DNS helps nobody.
    pub offline: bool,
    /// Whole-request timeout for each HTTP call, so a slow service cannot stall a wake.
    pub timeout: Duration,
    /// Hosts `http_get` may fetch from: exact hosts (`api.example.com`) or
    /// `*.example.com` for every subdomain of one. Empty (the default): every URL is
    /// refused, with an error saying how to allow a host.
    pub http_allow: Vec<String>,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            open_meteo_base: "https://api.open-meteo.com".into(),
            geocoding_base: "https://geocoding-api.open-meteo.com".into(),
            offline: false,
            timeout: Duration::from_secs(3),
            http_allow: Vec::new(),
        }
    }
}

/// A registry holding every reference tool: `get_weather`, `convert_currency`,
/// `calculator`, `check_invoice`, `send_payment` and `http_get`. Each HTTP client is built once, here:
/// `http_get` has its own, which follows no redirect by itself.
pub fn reference_tools(cfg: &ToolsConfig) -> ToolRegistry {
    ToolRegistry::new()
        .with(Arc::new(weather_tool(cfg)))
        .with(Arc::new(CurrencyTool))
        .with(Arc::new(CalculatorTool))
        .with(Arc::new(InvoiceTool))
        .with(Arc::new(PaymentTool))
        .with(Arc::new(HttpGetTool::new(cfg)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_point_at_open_meteo() {
        let cfg = ToolsConfig::default();
        assert_eq!(cfg.open_meteo_base, "https://api.open-meteo.com");
        assert_eq!(cfg.geocoding_base, "https://geocoding-api.open-meteo.com");
        assert!(!cfg.offline);
        assert_eq!(cfg.timeout, Duration::from_secs(3));
        assert!(
            cfg.http_allow.is_empty(),
            "no host is allowed until an operator says so"
        );
    }

    #[test]
    fn the_registry_holds_six_tools() {
        let reg = reference_tools(&ToolsConfig::default());
        let names: Vec<&str> = reg.names().collect();
        assert_eq!(
            names,
            vec![
                "calculator",
                "check_invoice",
                "convert_currency",
                "get_weather",
                "http_get",
                "send_payment"
            ]
        );
        for name in names {
            assert_eq!(reg.get(name).unwrap().spec().name, name);
        }
    }
}
