//! Counts AWS calls by service and operation with an SDK interceptor, so a benchmark
//! or a test can say exactly what one wake cost.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Calls and attempts (retries included) per `Service.Operation`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// One per operation the code asked for.
    pub calls: BTreeMap<String, u64>,
    /// One per HTTP attempt: calls plus the SDK's retries.
    pub attempts: BTreeMap<String, u64>,
}

impl CallCounts {
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }
    pub fn total_attempts(&self) -> u64 {
        self.attempts.values().sum()
    }
    pub fn calls_of(&self, op: &str) -> u64 {
        self.calls.get(op).copied().unwrap_or(0)
    }
    /// What happened since `earlier` (a snapshot of the same counter).
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        fn diff(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
            a.iter()
                .filter_map(|(k, v)| {
                    let d = v.saturating_sub(b.get(k).copied().unwrap_or(0));
                    (d > 0).then(|| (k.clone(), d))
                })
                .collect()
        }
        CallCounts {
            calls: diff(&self.calls, &earlier.calls),
            attempts: diff(&self.attempts, &earlier.attempts),
        }
    }
}

/// The interceptor. Clones share one set of counts; add it to every client.
#[derive(Clone, Debug, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<CallCounts>>,
}

impl CallCounter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> CallCounts {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn reset(&self) {
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner) = CallCounts::default();
    }

    fn bump(&self, cfg: &ConfigBag, attempt: bool) {
        let name = cfg
            .load::<Metadata>()
            .map(|m| format!("{}.{}", m.service(), m.name()))
            .unwrap_or_else(|| "unknown".to_string());
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let map = if attempt {
            &mut counts.attempts
        } else {
            &mut counts.calls
        };
        *map.entry(name).or_insert(0) += 1;
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "AosCallCounter"
    }

    // Not `read_before_execution`: the operation's metadata is not in the bag yet.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.bump(cfg, false);
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.bump(cfg, true);
        Ok(())
    }
}
