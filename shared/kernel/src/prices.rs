//! Model prices: a table the user edits (`functions/prices.toml`), in US dollars per
//! million tokens, by route pattern. The kernel prices every model call from it, so
//! budgets in dollars hold whatever provider answered.
//!
//! The rule kept here: the most specific pattern wins (an exact route, then the
//! pattern with the most literal characters), so `openai:gpt-4o-mini*` beats
//! `openai:gpt-4o*` for `openai:gpt-4o-mini-2024-07-18`.

use crate::model::Usage;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Dollars per million tokens of each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    /// Defaults to the input price when absent.
    pub cache_read: Option<f64>,
    /// Defaults to the input price when absent.
    pub cache_write: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    #[serde(default)]
    models: BTreeMap<String, Price>,
}

impl PriceTable {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let table: PriceTable =
            toml::from_str(text).map_err(|e| format!("price table does not parse: {e}"))?;
        for (pattern, p) in &table.models {
            let all = [
                p.input,
                p.output,
                p.cache_read.unwrap_or(0.0),
                p.cache_write.unwrap_or(0.0),
            ];
            if all.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(format!(
                    "price of {pattern:?} must be a non-negative number"
                ));
            }
        }
        Ok(table)
    }

    /// The price of `route`, if any pattern matches it.
    pub fn price(&self, route: &str) -> Option<&Price> {
        self.models
            .iter()
            .filter(|(pattern, _)| glob(pattern, route))
            .max_by_key(|(pattern, _)| (!pattern.contains('*'), pattern.replace('*', "").len()))
            .map(|(_, p)| p)
    }

    /// The cost of `usage` on `route`, in micro-dollars; `None` when the route has no
    /// price.
    pub fn cost_micros(&self, route: &str, usage: &Usage) -> Option<u64> {
        let p = self.price(route)?;
        // Dollars per million tokens are exactly micro-dollars per token.
        let micros = usage.input_tokens as f64 * p.input
            + usage.output_tokens as f64 * p.output
            + usage.cache_read_tokens as f64 * p.cache_read.unwrap_or(p.input)
            + usage.cache_write_tokens as f64 * p.cache_write.unwrap_or(p.input);
        Some(micros.ceil() as u64)
    }
}

/// `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TABLE: &str = r#"
[models."openai:gpt-4o*"]
input = 2.5
output = 10.0
cache_read = 1.25
[models."openai:gpt-4o-mini*"]
input = 0.15
output = 0.6
[models."bedrock:*anthropic.claude-haiku-4-5*"]
input = 1.0
output = 5.0
cache_read = 0.1
cache_write = 1.25
"#;

    #[test]
    fn the_most_specific_pattern_prices_each_kind_of_token() {
        let t = PriceTable::from_toml(TABLE).unwrap();
        let u = Usage {
            input_tokens: 1_000,
            output_tokens: 100,
            cache_read_tokens: 10_000,
            cache_write_tokens: 2_000,
            ..Usage::default()
        };
        // mini: 1000*0.15 + 100*0.6 + 10000*0.15 + 2000*0.15 = 150+60+1500+300
        assert_eq!(
            t.cost_micros("openai:gpt-4o-mini-2024-07-18", &u),
            Some(2_010)
        );
        // 4o: 2500 + 1000 + 12500 + 5000
        assert_eq!(t.cost_micros("openai:gpt-4o", &u), Some(21_000));
        // 1000 + 500 + 1000 + 2500
        assert_eq!(
            t.cost_micros("bedrock:us.anthropic.claude-haiku-4-5-20251001-v1:0", &u),
            Some(5_000)
        );
        assert_eq!(t.cost_micros("anthropic:unknown", &u), None);
    }

    #[test]
    fn bad_prices_are_refused_with_the_pattern_named() {
        let err = PriceTable::from_toml("[models.\"x\"]\ninput = -1.0\n").unwrap_err();
        assert!(err.contains("\"x\""), "{err}");
        assert!(PriceTable::from_toml("[models.\"x\"]\ninptu = 1.0\n").is_err());
    }
}
