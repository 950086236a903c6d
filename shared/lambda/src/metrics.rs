//! Metrics of an agent function, in CloudWatch Embedded Metric Format: one JSON line
//! per wake on stdout, which CloudWatch Logs turns into metrics with no API call and
//! no agent. The rule: one record per started wake, whatever its outcome, with the
//! agent as the only dimension (so the metric count stays fixed) and the ids as
//! properties (searchable in Logs Insights, not dimensions).
//!
//! Namespace `AOS`, dimension `Agent`, and per wake:
//!
//! | metric | unit | what |
//! |---|---|---|
//! | `Wakes` | Count | 1 |
//! | `Failures` | Count | 1 when the wake failed and its record goes back to the queue |
//! | `Retries` | Count | 1 when the record had been delivered before |
//! | `DeadLetters` | Count | 1 when the record was dead-lettered |
//! | `ModelCalls` | Count | model calls answered during the wake (journal replays are free and not counted) |
//! | `TokensIn` | Count | input tokens of those calls, cached ones included |
//! | `TokensOut` | Count | output tokens |
//! | `CostMicros` | None | their price in millionths of a dollar |
//! | `AwsCalls` | Count | DynamoDB, SQS, S3 and EventBridge Scheduler operations the wake asked for (not the SDK's retries of them; not Bedrock, which `ModelCalls` counts) |
//! | `WakeDurationMs` | Milliseconds | from the start of the wake to its end |

use aos_entrypoints::sqs::{WakeReport, WakeResult};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::{Value, json};

/// The CloudWatch namespace of every AOS metric.
pub const NAMESPACE: &str = "AOS";

/// Every metric of a wake record and its unit, in order.
pub const METRICS: &[(&str, &str)] = &[
    ("Wakes", "Count"),
    ("Failures", "Count"),
    ("Retries", "Count"),
    ("DeadLetters", "Count"),
    ("ModelCalls", "Count"),
    ("TokensIn", "Count"),
    ("TokensOut", "Count"),
    ("CostMicros", "None"),
    ("AwsCalls", "Count"),
    ("WakeDurationMs", "Milliseconds"),
];

/// The invocation a wake ran in, from the Lambda context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    pub request_id: String,
    /// `Root=…;Parent=…;Sampled=…`, when Lambda sent one.
    pub xray_trace_id: Option<String>,
}

/// The EMF record of one wake of `agent`.
pub fn wake_record(agent: &str, wake: &WakeReport, invocation: &Invocation) -> Value {
    let flag = |b: bool| u64::from(b);
    let u = &wake.usage;
    let values: [u64; 10] = [
        1,
        flag(wake.result == WakeResult::Failed),
        flag(wake.redelivered),
        flag(wake.result == WakeResult::DeadLettered),
        u.llm_calls,
        u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
        u.output_tokens,
        u.cost_micros,
        wake.aws_calls,
        wake.duration_ms,
    ];
    let mut record = json!({
        "_aws": {
            "Timestamp": wake.ended_at_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Agent"]],
                "Metrics": METRICS
                    .iter()
                    .map(|(name, unit)| json!({"Name": name, "Unit": unit}))
                    .collect::<Vec<_>>(),
            }],
        },
        "Agent": agent,
    });
    if let Value::Object(map) = &mut record {
        for ((name, _), value) in METRICS.iter().zip(values) {
            map.insert((*name).to_string(), value.into());
        }
        map.insert("outcome".into(), wake.result.as_str().into());
        map.insert("message_id".into(), wake.message_id.as_str().into());
        for (key, value) in [
            ("task_id", &wake.task_id),
            ("envelope_id", &wake.envelope_id),
            ("trace_id", &wake.trace_id),
            ("xray_trace_id", &invocation.xray_trace_id),
        ] {
            if let Some(v) = value {
                map.insert(key.into(), v.as_str().into());
            }
        }
        map.insert("request_id".into(), invocation.request_id.as_str().into());
    }
    record
}

/// The SDK interceptor that counts each AWS operation against the wake running it
/// ([`aos_entrypoints::sqs::count_aws_call`]); added to the function's DynamoDB, SQS,
/// S3 and Scheduler clients by [`crate::build_kernel`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WakeCalls;

impl Intercept for WakeCalls {
    fn name(&self) -> &'static str {
        "AosWakeCalls"
    }

    // Once per operation, before its first attempt: retries are not new calls.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        aos_entrypoints::sqs::count_aws_call();
        Ok(())
    }
}

/// The function's SDK clients with [`WakeCalls`] added to each (the call counter of
/// `aos-aws` stays on them).
pub fn count_wake_calls(mut clients: aos_aws::AwsClients) -> aos_aws::AwsClients {
    clients.dynamodb = aws_sdk_dynamodb::Client::from_conf(
        clients
            .dynamodb
            .config()
            .to_builder()
            .interceptor(WakeCalls)
            .build(),
    );
    clients.sqs = aws_sdk_sqs::Client::from_conf(
        clients
            .sqs
            .config()
            .to_builder()
            .interceptor(WakeCalls)
            .build(),
    );
    clients.s3 = aws_sdk_s3::Client::from_conf(
        clients
            .s3
            .config()
            .to_builder()
            .interceptor(WakeCalls)
            .build(),
    );
    clients.scheduler = aws_sdk_scheduler::Client::from_conf(
        clients
            .scheduler
            .config()
            .to_builder()
            .interceptor(WakeCalls)
            .build(),
    );
    clients
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use aos_kernel::model::Usage;

    fn wake(result: WakeResult) -> WakeReport {
        WakeReport {
            message_id: "m-1".into(),
            task_id: Some("01TASK".into()),
            envelope_id: Some("01ENV".into()),
            trace_id: Some("1-5759e988-bd862e3fe1be46a994272793".into()),
            result,
            redelivered: true,
            usage: Usage {
                llm_calls: 2,
                input_tokens: 100,
                cache_read_tokens: 64,
                output_tokens: 30,
                cost_micros: 420,
                ..Usage::default()
            },
            aws_calls: 3,
            duration_ms: 1234,
            ended_at_ms: 1_800_000_000_000,
        }
    }

    #[test]
    fn a_wake_record_is_valid_emf_with_every_metric_declared_and_set() {
        let invocation = Invocation {
            request_id: "req-1".into(),
            xray_trace_id: Some("Root=1-5759e988-bd862e3fe1be46a994272793".into()),
        };
        let r = wake_record("weather", &wake(WakeResult::Applied), &invocation);
        // The EMF specification: _aws.Timestamp (ms), one directive with a namespace,
        // dimension sets naming top-level string members, metric definitions naming
        // top-level numeric members.
        assert_eq!(r["_aws"]["Timestamp"], 1_800_000_000_000u64);
        let directives = r["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1);
        let d = &directives[0];
        assert_eq!(d["Namespace"], "AOS");
        assert_eq!(d["Dimensions"], json!([["Agent"]]));
        assert!(r["Agent"].is_string());
        assert_eq!(r["Agent"], "weather");
        let names: Vec<&str> = d["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert!(["Count", "None", "Milliseconds"].contains(&m["Unit"].as_str().unwrap()));
                m["Name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(
            names,
            [
                "Wakes",
                "Failures",
                "Retries",
                "DeadLetters",
                "ModelCalls",
                "TokensIn",
                "TokensOut",
                "CostMicros",
                "AwsCalls",
                "WakeDurationMs"
            ]
        );
        for name in &names {
            assert!(r[name].is_u64(), "{name} is not a number in {r}");
        }
        let v = |k: &str| r[k].as_u64().unwrap();
        assert_eq!(
            (v("Wakes"), v("Failures"), v("Retries"), v("DeadLetters")),
            (1, 0, 1, 0)
        );
        assert_eq!(
            (
                v("ModelCalls"),
                v("TokensIn"),
                v("TokensOut"),
                v("CostMicros")
            ),
            (2, 164, 30, 420)
        );
        assert_eq!((v("AwsCalls"), v("WakeDurationMs")), (3, 1234));
        assert_eq!(r["task_id"], "01TASK");
        assert_eq!(r["envelope_id"], "01ENV");
        assert_eq!(r["trace_id"], "1-5759e988-bd862e3fe1be46a994272793");
        assert_eq!(
            r["xray_trace_id"],
            "Root=1-5759e988-bd862e3fe1be46a994272793"
        );
        assert_eq!(r["request_id"], "req-1");
        assert_eq!(r["outcome"], "applied");
        // One line.
        assert!(!r.to_string().contains('\n'));
    }

    #[test]
    fn failures_and_dead_letters_are_counted_and_a_non_envelope_has_no_ids() {
        let r = wake_record("weather", &wake(WakeResult::Failed), &Invocation::default());
        assert_eq!(
            (r["Failures"].as_u64(), r["DeadLetters"].as_u64()),
            (Some(1), Some(0))
        );
        let mut bad = wake(WakeResult::DeadLettered);
        bad.task_id = None;
        bad.envelope_id = None;
        bad.trace_id = None;
        let r = wake_record("weather", &bad, &Invocation::default());
        assert_eq!(
            (r["Failures"].as_u64(), r["DeadLetters"].as_u64()),
            (Some(0), Some(1))
        );
        assert!(r.get("task_id").is_none() && r.get("xray_trace_id").is_none());
        assert_eq!(r["outcome"], "dead_lettered");
    }
}
