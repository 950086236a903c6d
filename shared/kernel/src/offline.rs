//! The offline model: a deterministic stand-in for a language model, so AOS runs with
//! no API key and no network. It plans from the tools it is offered, the way a real
//! tool-calling model would: an orchestrator splits a request by the keywords of the
//! agents it may message and delegates; a specialist picks its tool calls from the
//! request; once results are in, it writes an answer from them. Every answer it writes
//! starts with [`OFFLINE_LABEL`], so nobody mistakes it for a real model.

use crate::catalog::Catalog;
use crate::kernel::SEND_MESSAGE;
use crate::llm::{Content, LlmError, Model, ModelRequest, ModelResponse, Role, StopReason};
use crate::model::Usage;
use async_trait::async_trait;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const OFFLINE_LABEL: &str = "[offline model]";

#[derive(Clone, Debug, Default)]
pub struct OfflineModel {
    /// Routing words per agent, from each agent's `keywords`.
    keywords: BTreeMap<String, Vec<String>>,
}

impl OfflineModel {
    pub fn new(catalog: &Catalog) -> Self {
        let keywords = catalog
            .agents()
            .map(|a| {
                let words = a.keywords.iter().map(|k| k.to_lowercase()).collect();
                (a.name.to_string(), words)
            })
            .collect();
        Self { keywords }
    }

    fn respond(&self, req: &ModelRequest) -> Vec<Content> {
        let Some(last) = req.messages.last() else {
            return text(format!("{OFFLINE_LABEL} There is nothing to answer."));
        };
        let has_results = last
            .content
            .iter()
            .any(|c| matches!(c, Content::ToolResult { .. }));
        if last.role == Role::User && has_results {
            return text(summarise(req));
        }
        let request = strip_request_prefix(&last.text());
        let tool_names: Vec<&str> = req.tools.iter().map(|t| t.name.as_str()).collect();
        let turn = req
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count();
        let mut calls: Vec<(String, Value)> = Vec::new();
        if tool_names.contains(&SEND_MESSAGE) {
            let allowed = allowed_agents(req);
            for (agent, sub) in self.route(&request, &allowed) {
                calls.push((SEND_MESSAGE.into(), json!({"agent": agent, "request": sub})));
            }
        }
        if calls.is_empty() && tool_names.contains(&"get_weather") {
            for city in cities(&request) {
                calls.push(("get_weather".into(), json!({"city": city})));
            }
        }
        if calls.is_empty() && tool_names.contains(&"send_payment") {
            for (amount, currency, payee, memo) in payments(&request) {
                calls.push((
                    "send_payment".into(),
                    json!({"amount": amount, "currency": currency, "payee": payee, "memo": memo}),
                ));
            }
        }
        if calls.is_empty() && tool_names.contains(&"convert_currency") {
            for (amount, from, to) in conversions(&request) {
                calls.push((
                    "convert_currency".into(),
                    json!({"amount": amount, "from": from, "to": to}),
                ));
            }
        }
        if calls.is_empty() && tool_names.contains(&"calculator") {
            for expr in expressions(&request) {
                calls.push(("calculator".into(), json!({"expression": expr})));
            }
        }
        if calls.is_empty() {
            return text(self.cannot_help(req, &request));
        }
        calls
            .into_iter()
            .enumerate()
            .map(|(i, (name, input))| Content::ToolUse {
                id: format!("toolu_offline_{turn}_{i}"),
                name,
                input,
            })
            .collect()
    }

    /// Splits a request into parts, gives each part to the agent whose keywords it
    /// mentions, and joins the parts per agent, in order of first mention.
    fn route(&self, request: &str, allowed: &[String]) -> Vec<(String, String)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        let mut last: Option<String> = None;
        for part in split_parts(request) {
            let best = allowed
                .iter()
                .map(|a| (self.score(a, &part), a))
                .filter(|(s, _)| *s > 0)
                .max_by_key(|(s, _)| *s)
                .map(|(_, a)| a.clone());
            let Some(agent) = best.or_else(|| last.clone()) else {
                continue;
            };
            match groups.iter_mut().find(|(a, _)| *a == agent) {
                Some((_, parts)) => parts.push(part),
                None => groups.push((agent.clone(), vec![part])),
            }
            last = Some(agent);
        }
        groups
            .into_iter()
            .map(|(agent, parts)| {
                let mut sub = parts.join(" and ");
                if request.trim_end().ends_with('?') {
                    sub.push('?');
                }
                (agent, capitalise(&sub))
            })
            .collect()
    }

    fn score(&self, agent: &str, part: &str) -> usize {
        let lower = part.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric() && c != '%' && c != '€' && c != '$')
            .filter(|w| !w.is_empty())
            .collect();
        self.keywords
            .get(agent)
            .map(|kws| {
                kws.iter()
                    .filter(|k| {
                        words.iter().any(|w| w == k)
                            || (k.chars().count() == 1 && lower.contains(k.as_str()))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    fn cannot_help(&self, req: &ModelRequest, request: &str) -> String {
        let allowed = allowed_agents(req);
        if allowed.is_empty() {
            format!(
                "{OFFLINE_LABEL} Agent {} found no tool call that fits {:?}; a real model \
                 would answer from its own knowledge here.",
                req.agent,
                crate::kernel::preview(request, 80)
            )
        } else {
            let hints: Vec<String> = allowed
                .iter()
                .map(|a| {
                    let kws = self.keywords.get(a).cloned().unwrap_or_default();
                    let sample: Vec<String> = kws.into_iter().take(4).collect();
                    format!("{a} ({})", sample.join(", "))
                })
                .collect();
            format!(
                "{OFFLINE_LABEL} I could not match this request to any agent I can \
                 delegate to: {}. Mention one of their topics, or configure a real model.",
                hints.join("; ")
            )
        }
    }
}

#[async_trait]
impl Model for OfflineModel {
    async fn complete(&self, req: &ModelRequest) -> Result<ModelResponse, LlmError> {
        let content = self.respond(req);
        let stop = if content.iter().any(|c| matches!(c, Content::ToolUse { .. })) {
            StopReason::ToolUse
        } else {
            StopReason::EndTurn
        };
        // Roughly four characters a token, as providers count English text.
        let in_chars: usize = req.system.len()
            + req
                .messages
                .iter()
                .map(|m| serde_json::to_string(m).map(|s| s.len()).unwrap_or(0))
                .sum::<usize>();
        let out_chars: usize = serde_json::to_string(&content)
            .map(|s| s.len())
            .unwrap_or(0);
        Ok(ModelResponse {
            content,
            stop,
            usage: Usage {
                llm_calls: 1,
                input_tokens: (in_chars / 4) as u64,
                output_tokens: (out_chars / 4) as u64,
                ..Usage::default()
            },
            model: "offline".into(),
        })
    }
}

fn text(t: String) -> Vec<Content> {
    vec![Content::Text { text: t }]
}

fn allowed_agents(req: &ModelRequest) -> Vec<String> {
    req.tools
        .iter()
        .find(|t| t.name == SEND_MESSAGE)
        .and_then(|t| t.input_schema.pointer("/properties/agent/enum"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn strip_request_prefix(text: &str) -> String {
    match text.strip_prefix("Request from agent ") {
        Some(rest) => rest
            .split_once(": ")
            .map(|(_, r)| r)
            .unwrap_or(rest)
            .to_string(),
        None => text.to_string(),
    }
}

fn strip_label(text: &str) -> &str {
    text.trim()
        .strip_prefix(OFFLINE_LABEL)
        .unwrap_or(text)
        .trim()
}

/// Writes the answer from the results of the last turn, in call order.
fn summarise(req: &ModelRequest) -> String {
    let mut calls: BTreeMap<&str, (&str, &Value)> = BTreeMap::new();
    for m in &req.messages {
        for c in &m.content {
            if let Content::ToolUse { id, name, input } = c {
                calls.insert(id, (name, input));
            }
        }
    }
    let Some(last) = req.messages.last() else {
        return OFFLINE_LABEL.into();
    };
    let mut delegated = Vec::new();
    let mut direct = Vec::new();
    for c in &last.content {
        if let Content::ToolResult {
            tool_use_id,
            content,
            is_error,
        } = c
        {
            let (name, input) = calls
                .get(tool_use_id.as_str())
                .copied()
                .unwrap_or(("tool", &Value::Null));
            let body = if *is_error {
                format!("(failed: {})", strip_label(content))
            } else {
                strip_label(content).to_string()
            };
            if name == SEND_MESSAGE {
                let agent = input
                    .get("agent")
                    .and_then(Value::as_str)
                    .unwrap_or("agent");
                delegated.push(format!("- {agent}: {}", body.replace('\n', "\n  ")));
            } else {
                direct.push(body);
            }
        }
    }
    let mut out = String::from(OFFLINE_LABEL);
    if !delegated.is_empty() {
        out.push_str(" Here is what my agents found:\n");
        out.push_str(&delegated.join("\n"));
    }
    if !direct.is_empty() {
        if !delegated.is_empty() {
            out.push('\n');
        } else {
            out.push(' ');
        }
        out.push_str(&direct.join("\n"));
    }
    out
}

/// Splits on clause boundaries: punctuation and " and " / " then " / " also ".
fn split_parts(request: &str) -> Vec<String> {
    let mut parts = Vec::new();
    for chunk in request.split([',', ';', '?', '!']) {
        let mut rest = chunk.to_string();
        loop {
            let lower = rest.to_lowercase();
            let cut = [" and ", " then ", " also "]
                .iter()
                .filter_map(|sep| lower.find(sep).map(|i| (i, sep.len())))
                .min();
            match cut {
                Some((i, len)) => {
                    parts.push(rest[..i].to_string());
                    rest = rest[i + len..].to_string();
                }
                None => {
                    parts.push(rest);
                    break;
                }
            }
        }
    }
    parts
        .into_iter()
        .map(|p| {
            let p = p.trim().trim_end_matches('.').trim();
            // "and what is ..." leaves a dangling conjunction at the front.
            let p = ["and ", "also ", "then "]
                .iter()
                .find_map(|w| p.strip_prefix(w))
                .unwrap_or(p);
            p.trim().to_string()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

const NOT_CITIES: &[&str] = &[
    "what",
    "what's",
    "whats",
    "how",
    "is",
    "will",
    "tell",
    "me",
    "the",
    "please",
    "weather",
    "and",
    "in",
    "today",
    "tomorrow",
    "i",
    "can",
    "could",
    "give",
    "show",
    "current",
    "it",
    "forecast",
    "temperature",
    "does",
    "do",
    "should",
    "would",
    "also",
    "then",
    "for",
    "at",
    "request",
    "agent",
    "hello",
    "hi",
    "now",
    "right",
    "like",
    "there",
    "rain",
    "wind",
];

/// City names: runs of capitalised words that are not question words or currency codes.
pub fn cities(request: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut run: Vec<String> = Vec::new();
    let flush = |run: &mut Vec<String>, out: &mut Vec<String>| {
        if !run.is_empty() {
            let name = run.join(" ");
            if !out.contains(&name) {
                out.push(name);
            }
            run.clear();
        }
    };
    for raw in request.split_whitespace() {
        let ends_clause = raw.ends_with([',', '?', '.', '!', ';']);
        let word: String = raw
            .trim_matches(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-')
            .to_string();
        let is_name = word.chars().next().is_some_and(char::is_uppercase)
            && !NOT_CITIES.contains(&word.to_lowercase().as_str())
            && !(word.len() == 3 && word.chars().all(|c| c.is_ascii_uppercase()));
        if is_name {
            run.push(word);
        } else {
            flush(&mut run, &mut out);
        }
        if ends_clause {
            flush(&mut run, &mut out);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// `Pay 120 EUR to ACME Ltd for invoice 42`: (amount, currency, payee, memo), when
/// the request asks to pay.
pub fn payments(request: &str) -> Vec<(f64, String, String, String)> {
    let words: Vec<&str> = request.split_whitespace().collect();
    let clean = |w: &str| {
        w.trim_matches(|c: char| matches!(c, '?' | ',' | '.' | '!' | ';' | ':'))
            .to_string()
    };
    let Some(start) = words
        .iter()
        .position(|w| matches!(clean(w).to_lowercase().as_str(), "pay" | "send"))
    else {
        return Vec::new();
    };
    let rest: Vec<String> = words[start + 1..].iter().map(|w| clean(w)).collect();
    let number = |w: &str| w.replace(',', "").parse::<f64>().ok().filter(|n| *n > 0.0);
    let code = |w: &str| {
        (w.len() == 3 && w.chars().all(|c| c.is_ascii_alphabetic())).then(|| w.to_uppercase())
    };
    let mut i = 0;
    while i + 1 < rest.len() {
        let (amount, currency) = match (number(&rest[i]), code(&rest[i + 1])) {
            (Some(a), Some(c)) => (a, c),
            _ => match (code(&rest[i]), number(&rest[i + 1])) {
                (Some(c), Some(a)) => (a, c),
                _ => {
                    i += 1;
                    continue;
                }
            },
        };
        let tail = &rest[i + 2..];
        let Some(to) = tail.iter().position(|w| w.eq_ignore_ascii_case("to")) else {
            return Vec::new();
        };
        let after = &tail[to + 1..];
        let memo_at = after
            .iter()
            .position(|w| w.eq_ignore_ascii_case("for"))
            .unwrap_or(after.len());
        let payee = after[..memo_at].join(" ");
        let memo = after
            .get(memo_at + 1..)
            .map(|m| m.join(" "))
            .unwrap_or_default();
        if payee.is_empty() {
            return Vec::new();
        }
        return vec![(amount, currency, payee, memo)];
    }
    Vec::new()
}

/// `1250 EUR in USD`, `€1,250 to USD`, `1250.50 usd into jpy`.
pub fn conversions(request: &str) -> Vec<(f64, String, String)> {
    let words: Vec<String> = request
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| matches!(c, '?' | ',' | '.' | '!' | ';' | ':'))
                .to_string()
        })
        .collect();
    let code = |w: &str| -> Option<String> {
        let symbol = match w {
            "€" => Some("EUR"),
            "$" => Some("USD"),
            "£" => Some("GBP"),
            "¥" => Some("JPY"),
            _ => None,
        };
        if let Some(s) = symbol {
            return Some(s.to_string());
        }
        (w.len() == 3
            && w.chars().all(|c| c.is_ascii_alphabetic())
            && !["the", "and", "for", "how", "use", "are", "its"]
                .contains(&w.to_lowercase().as_str()))
        .then(|| w.to_uppercase())
    };
    let number = |w: &str| -> Option<f64> {
        let cleaned: String = w.chars().filter(|c| *c != ',' && *c != '_').collect();
        cleaned.parse::<f64>().ok().filter(|n| n.is_finite())
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        // A leading currency symbol glued to the number: "€1250".
        let (sym, rest) = match w.chars().next() {
            Some(c @ ('€' | '$' | '£' | '¥')) => (Some(c.to_string()), &w[c.len_utf8()..]),
            _ => (None, w.as_str()),
        };
        if let Some(amount) = number(rest) {
            let from = match sym {
                Some(ref s) => code(s),
                None => words.get(i + 1).and_then(|n| code(n)),
            };
            if let Some(from) = from {
                let j = if sym.is_some() { i + 1 } else { i + 2 };
                let to = words
                    .iter()
                    .skip(j)
                    .take(3)
                    .position(|w| matches!(w.to_lowercase().as_str(), "in" | "to" | "into"))
                    .and_then(|p| words.get(j + p + 1))
                    .and_then(|w| code(w));
                if let Some(to) = to {
                    out.push((amount, from, to));
                    i = j;
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

/// Arithmetic in the request: the longest runs of digits, operators and brackets that
/// hold at least one operator between numbers.
pub fn expressions(request: &str) -> Vec<String> {
    let allowed = |c: char| c.is_ascii_digit() || " .+-*/()^%x×÷".contains(c);
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in request.chars().chain(std::iter::once('\n')) {
        if allowed(c) {
            cur.push(c);
        } else {
            let e = cur.trim().replace(['x', '×'], "*").replace('÷', "/");
            let has_op = e.chars().skip(1).any(|c| "+-*/^%".contains(c));
            let has_digit = e.chars().any(|c| c.is_ascii_digit());
            if has_op && has_digit {
                out.push(e);
            }
            cur.clear();
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_cities_but_not_question_words_or_currencies() {
        assert_eq!(
            cities("What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?"),
            vec!["Paris", "Tokyo"]
        );
        assert_eq!(cities("Weather in New York?"), vec!["New York"]);
    }

    #[test]
    fn finds_payments() {
        assert_eq!(
            payments("Pay 120 EUR to ACME Ltd for invoice 42."),
            vec![(120.0, "EUR".into(), "ACME Ltd".into(), "invoice 42".into())]
        );
        assert_eq!(
            payments("please send USD 75.5 to Bob"),
            vec![(75.5, "USD".into(), "Bob".into(), String::new())]
        );
        assert!(payments("What is 1250 EUR in USD?").is_empty());
    }

    #[test]
    fn finds_conversions() {
        assert_eq!(
            conversions("what is 1250 EUR in USD?"),
            vec![(1250.0, "EUR".into(), "USD".into())]
        );
        assert_eq!(
            conversions("convert €1,000.50 to gbp"),
            vec![(1000.5, "EUR".into(), "GBP".into())]
        );
    }

    #[test]
    fn finds_arithmetic() {
        assert_eq!(expressions("what is 12 * (3 + 4)?"), vec!["12 * (3 + 4)"]);
        assert!(expressions("what is 1250 EUR in USD").is_empty());
    }

    #[test]
    fn routes_the_demo_request_to_two_agents() {
        let mut m = OfflineModel::default();
        m.keywords
            .insert("weather".into(), vec!["weather".into(), "forecast".into()]);
        m.keywords
            .insert("finance".into(), vec!["eur".into(), "usd".into()]);
        let allowed = vec!["weather".to_string(), "finance".to_string()];
        let routed = m.route(
            "What's the weather in Paris and Tokyo, and what is 1250 EUR in USD?",
            &allowed,
        );
        assert_eq!(
            routed,
            vec![
                (
                    "weather".into(),
                    "What's the weather in Paris and Tokyo?".into()
                ),
                ("finance".into(), "What is 1250 EUR in USD?".into())
            ]
        );
    }
}
