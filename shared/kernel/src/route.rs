//! Routing a model call to a provider: `provider:model` routes, a fallback chain on
//! transient failure, and a circuit breaker per provider.
//!
//! The rule kept here: there is one retry loop, and it is SQS redelivery. The router
//! never sleeps: it tries each route of the chain once, skips a provider whose breaker
//! is open, and when every route failed transiently it returns one transient error
//! carrying the shortest `retry-after` it was given (or the time until the first open
//! breaker closes), so the record is released with that delay.

use crate::llm::{LlmError, Model, ModelRequest, ModelResponse};
use crate::ports::Clock;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// When a provider's breaker opens and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive transient failures that open the breaker.
    pub failures: u32,
    /// How long an open breaker skips the provider before letting one call through.
    pub open_ms: u64,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 3,
            open_ms: 30_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Breaker {
    consecutive: u32,
    open_until: u64,
}

/// The provider part of a route (`openai` of `openai:gpt-4o-mini`).
pub fn provider_of(route: &str) -> &str {
    route.split_once(':').map(|(p, _)| p).unwrap_or(route)
}

/// A [`Model`] that dispatches by route to the configured providers.
pub struct Router {
    providers: BTreeMap<String, Arc<dyn Model>>,
    /// Answers routes whose provider is not configured (a replay's stand-in).
    default: Option<Arc<dyn Model>>,
    breakers: Mutex<HashMap<String, Breaker>>,
    policy: BreakerPolicy,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("policy", &self.policy)
            .finish()
    }
}

impl Router {
    pub fn new(clock: Arc<dyn Clock>, policy: BreakerPolicy) -> Self {
        Self {
            providers: BTreeMap::new(),
            default: None,
            breakers: Mutex::new(HashMap::new()),
            policy,
            clock,
        }
    }

    /// Adds a provider under its route prefix (`offline`, `openai`, `anthropic`, ...).
    pub fn with(mut self, prefix: impl Into<String>, model: Arc<dyn Model>) -> Self {
        self.providers.insert(prefix.into(), model);
        self
    }

    /// Sends every route whose provider is not configured to `model`.
    pub fn with_default(mut self, model: Arc<dyn Model>) -> Self {
        self.default = Some(model);
        self
    }

    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }

    pub fn has(&self, prefix: &str) -> bool {
        self.providers.contains_key(prefix)
    }

    fn breakers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Breaker>> {
        match self.breakers.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// `Some(ms)`: the breaker is open for that much longer.
    fn open_for(&self, provider: &str) -> Option<u64> {
        let now = self.clock.now_ms();
        let b = self.breakers().get(provider).copied().unwrap_or_default();
        (b.open_until > now).then(|| b.open_until - now)
    }

    fn record(&self, provider: &str, ok: bool) {
        let now = self.clock.now_ms();
        let mut map = self.breakers();
        let b = map.entry(provider.to_string()).or_default();
        if ok {
            *b = Breaker::default();
        } else {
            b.consecutive += 1;
            if b.consecutive >= self.policy.failures {
                b.open_until = now.saturating_add(self.policy.open_ms);
                tracing::warn!(
                    provider,
                    open_ms = self.policy.open_ms,
                    "circuit breaker opened"
                );
            }
        }
    }
}

#[async_trait]
impl Model for Router {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, LlmError> {
        let chain: Vec<&String> = std::iter::once(&request.model)
            .chain(request.fallbacks.iter())
            .collect();
        let mut reasons = Vec::new();
        let mut retry_after: Option<u64> = None;
        let mut soonest = |ms: u64| retry_after = Some(retry_after.map_or(ms, |r| r.min(ms)));
        for route in chain {
            let provider = provider_of(route);
            let Some(model) = self.providers.get(provider).or(self.default.as_ref()) else {
                reasons.push(format!(
                    "{route}: no provider '{provider}' is configured (configured: {})",
                    self.providers
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                continue;
            };
            if let Some(ms) = self.open_for(provider) {
                reasons.push(format!("{route}: circuit open for another {ms} ms"));
                soonest(ms);
                continue;
            }
            // The chosen route needs no copy of the request; a fallback does.
            let fallback;
            let r = if *route == request.model {
                request
            } else {
                let mut copy = request.clone();
                copy.model = route.clone();
                fallback = copy;
                &fallback
            };
            match model.complete(r).await {
                Ok(response) => {
                    self.record(provider, true);
                    return Ok(response);
                }
                Err(LlmError::Transient {
                    reason,
                    retry_after_ms,
                }) => {
                    self.record(provider, false);
                    if let Some(ms) = retry_after_ms {
                        soonest(ms);
                    }
                    reasons.push(format!("{route}: {reason}"));
                }
                Err(LlmError::Permanent(reason)) => {
                    return Err(LlmError::Permanent(format!("{route}: {reason}")));
                }
            }
        }
        let any_transient = reasons.iter().any(|r| !r.contains("no provider"));
        let reason = reasons.join("; ");
        if any_transient {
            Err(LlmError::Transient {
                reason,
                retry_after_ms: retry_after,
            })
        } else {
            Err(LlmError::Permanent(reason))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::llm::{Content, Message, StopReason};
    use crate::model::Usage;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    struct Fixed(AtomicU64);
    impl Clock for Fixed {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// Fails transiently `fail` times, then answers with its name.
    struct Flaky {
        name: &'static str,
        fail: usize,
        calls: AtomicUsize,
        retry_after: Option<u64>,
    }
    #[async_trait]
    impl Model for Flaky {
        async fn complete(&self, r: &ModelRequest) -> Result<ModelResponse, LlmError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail {
                return Err(LlmError::Transient {
                    reason: format!("{} 503", self.name),
                    retry_after_ms: self.retry_after,
                });
            }
            Ok(ModelResponse {
                content: vec![Content::Text {
                    text: self.name.into(),
                }],
                stop: StopReason::EndTurn,
                usage: Usage::default(),
                model: r.model.clone(),
            })
        }
    }

    fn flaky(name: &'static str, fail: usize, retry_after: Option<u64>) -> Arc<Flaky> {
        Arc::new(Flaky {
            name,
            fail,
            calls: AtomicUsize::new(0),
            retry_after,
        })
    }

    fn req(model: &str, fallbacks: &[&str]) -> ModelRequest {
        ModelRequest {
            model: model.into(),
            fallbacks: fallbacks.iter().map(|s| s.to_string()).collect(),
            agent: "a".into(),
            system: String::new(),
            messages: vec![Message::user("x")],
            context: None,
            tools: vec![],
            max_tokens: 5,
            cache_key: None,
            timeout_ms: None,
        }
    }

    #[tokio::test]
    async fn a_transient_failure_falls_back_and_the_breaker_opens_then_closes() {
        let clock = Arc::new(Fixed(AtomicU64::new(1_000)));
        let a = flaky("a", usize::MAX, Some(4_000));
        let b = flaky("b", 0, None);
        let router = Router::new(
            clock.clone(),
            BreakerPolicy {
                failures: 2,
                open_ms: 10_000,
            },
        )
        .with("pa", a.clone())
        .with("pb", b.clone());
        let r = req("pa:m1", &["pb:m2"]);
        for _ in 0..3 {
            let out = router.complete(&r).await.unwrap();
            assert_eq!(out.model, "pb:m2");
        }
        // Two failures opened pa's breaker: the third call never reached it.
        assert_eq!(a.calls.load(Ordering::SeqCst), 2);
        assert_eq!(b.calls.load(Ordering::SeqCst), 3);
        // Only the open provider left: transient, retry when the breaker closes.
        match router.complete(&req("pa:m1", &[])).await {
            Err(LlmError::Transient { retry_after_ms, .. }) => {
                assert_eq!(retry_after_ms, Some(10_000))
            }
            other => panic!("{other:?}"),
        }
        clock.0.store(11_001, Ordering::SeqCst);
        let err = router.complete(&req("pa:m1", &[])).await.unwrap_err();
        assert_eq!(
            a.calls.load(Ordering::SeqCst),
            3,
            "half-open lets one call through"
        );
        match err {
            LlmError::Transient { retry_after_ms, .. } => assert_eq!(retry_after_ms, Some(4_000)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unconfigured_provider_is_a_permanent_error_that_names_it() {
        let clock = Arc::new(Fixed(AtomicU64::new(0)));
        let router = Router::new(clock, BreakerPolicy::default()).with("pb", flaky("b", 0, None));
        let err = router.complete(&req("anthropic:x", &[])).await.unwrap_err();
        match err {
            LlmError::Permanent(m) => assert!(m.contains("no provider 'anthropic'"), "{m}"),
            other => panic!("{other:?}"),
        }
        // ...but a configured fallback still answers.
        let ok = router
            .complete(&req("anthropic:x", &["pb:y"]))
            .await
            .unwrap();
        assert_eq!(ok.model, "pb:y");
    }
}
