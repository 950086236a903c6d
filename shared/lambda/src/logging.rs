//! Logs of a function, to stdout where Lambda collects them. The rules: one line per
//! event, in the format the function is configured for, at the level
//! `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG` asks for (info by default), and no secret and
//! no payload in any line, whatever the level.
//!
//! - JSON (`AWS_LAMBDA_LOG_FORMAT=JSON`, the template's `LoggingConfig`): one flat
//!   object per line, [`FlatJson`]: `timestamp`, `level`, `target`, `message`, then
//!   the fields of every span the event is in, then the event's own. So a line logged
//!   during a wake carries `task_id`, `tenant`, `agent`, `envelope_id`, `trace_id` and
//!   `message_id` (the wake's span), and `request_id` and `xray_trace_id` (the Lambda
//!   runtime's span of the invocation), as top-level keys CloudWatch Logs Insights
//!   can query.
//! - Text otherwise: no timestamps or colours, which Lambda stamps itself.
//!
//! Payloads: our own code logs ids, counts and its own words, never a prompt, a
//! model's answer, a tool's result or a key. Libraries log payloads at their most
//! verbose levels (the Lambda runtime the raw event, the AWS SDK every request and
//! response body, SigV4 the canonical request with the session token), so their
//! `trace` events are dropped whatever the filter asks for ([`PAYLOAD_TARGETS`],
//! [`no_payloads`]); their other levels follow the filter.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Crates that log request or response bodies, raw events or signing material at
/// `trace`: their `trace` events are never logged.
pub const PAYLOAD_TARGETS: &[&str] = &[
    "lambda_runtime",
    "lambda_runtime_api_client",
    "lambda_http",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
    "aws_smithy_types",
    "aws_sigv4",
    "aws_runtime",
    "aws_config",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
];

/// Installs the subscriber; a second call does nothing.
pub fn init_tracing() {
    let filter = filter(
        std::env::var("RUST_LOG").ok().as_deref(),
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
    );
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let _ = if json {
        json_subscriber(filter, std::io::stdout).try_init()
    } else {
        tracing_subscriber::registry()
            .with(filter)
            .with(no_payloads())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(false)
                    .without_time(),
            )
            .try_init()
    };
}

/// The subscriber of JSON logs ([`FlatJson`] lines), writing to `writer` (stdout on
/// Lambda; a buffer in tests), with `filter` and [`no_payloads`].
pub fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry()
        .with(filter)
        .with(no_payloads())
        .with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(FlatJson)
                .with_writer(writer),
        )
}

/// The filter: `RUST_LOG`'s directives when set and valid, else the level
/// `AWS_LAMBDA_LOG_LEVEL` names, else `info`.
pub fn filter(rust_log: Option<&str>, lambda_level: Option<&str>) -> EnvFilter {
    rust_log
        .filter(|d| !d.trim().is_empty())
        .and_then(|d| EnvFilter::try_new(d).ok())
        .or_else(|| {
            lambda_level
                .filter(|l| !l.trim().is_empty())
                .and_then(|l| EnvFilter::try_new(l.trim().to_ascii_lowercase()).ok())
        })
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// Drops the `trace` events and spans of [`PAYLOAD_TARGETS`]: a cap, not a level,
/// so it never makes those crates more verbose than the filter has them.
pub fn no_payloads() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    FilterFn::new(not_a_payload as fn(&Metadata<'_>) -> bool)
}

fn not_a_payload(meta: &Metadata<'_>) -> bool {
    *meta.level() != Level::TRACE || !is_payload_target(meta.target())
}

fn is_payload_target(target: &str) -> bool {
    PAYLOAD_TARGETS.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Fields of the Lambda runtime's invocation span, in the snake case of ours.
const RENAMED: &[(&str, &str)] = &[
    ("requestId", "request_id"),
    ("xrayTraceId", "xray_trace_id"),
];

/// One JSON object per event, every field at the top level: the event's metadata,
/// then the fields of the spans it is in (outermost first, an inner span's field
/// replacing an outer one's), then its own. Span fields must be stored by
/// [`JsonFields`].
#[derive(Clone, Copy, Debug, Default)]
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let mut line = Line::default();
        line.put("timestamp", timestamp.into());
        line.put("level", level(meta.level()).into());
        line.put("target", meta.target().into());
        line.put("message", String::new().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                let Ok(map) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
                    fields.fields.as_str(),
                ) else {
                    continue;
                };
                for (k, v) in map {
                    let k = RENAMED
                        .iter()
                        .find(|(from, _)| *from == k)
                        .map_or(k.as_str(), |(_, to)| to);
                    line.put(k, v);
                }
            }
        }
        event.record(&mut line);
        writeln!(writer, "{}", line.to_json())
    }
}

fn level(l: &Level) -> &'static str {
    match *l {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

/// The keys of one line in order, a later value of a key replacing the earlier one
/// in its place.
#[derive(Default)]
struct Line(Vec<(String, serde_json::Value)>);

impl Line {
    fn put(&mut self, key: &str, value: serde_json::Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// The object, keys in order (a `serde_json::Map` would sort them).
    fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::Value::from(k.as_str()).to_string());
            out.push(':');
            out.push_str(&v.to_string());
        }
        out.push('}');
        out
    }
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field.name(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field.name(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field.name(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field.name(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field.name(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field.name(), value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::Value;
    use std::sync::{Arc, Mutex};

    /// Every line the subscriber wrote, parsed.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    fn capture(filter: EnvFilter, f: impl FnOnce()) -> Vec<Value> {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = json_subscriber(filter, move || writer.clone());
        tracing::subscriber::with_default(subscriber, f);
        out.lines()
    }

    #[test]
    fn span_fields_are_top_level_keys_of_every_line_inside() {
        let lines = capture(EnvFilter::new("trace"), || {
            let invoke = tracing::info_span!(
                "Lambda runtime invoke",
                requestId = "req-1",
                xrayTraceId = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
            );
            let _i = invoke.enter();
            tracing::info!("outside the wake");
            let wake = tracing::info_span!(
                "wake",
                agent = "weather",
                task_id = tracing::field::Empty,
                trace_id = tracing::field::Empty
            );
            let _w = wake.enter();
            wake.record("task_id", "01TASK");
            wake.record("trace_id", "1-5759e988-bd862e3fe1be46a994272793");
            tracing::warn!(model_calls = 2u64, ok = true, "wake done");
        });
        assert_eq!(lines.len(), 2);
        let outside = &lines[0];
        assert_eq!(outside["message"], "outside the wake");
        assert_eq!(outside["request_id"], "req-1");
        assert!(outside.get("task_id").is_none());
        let inside = &lines[1];
        assert_eq!(inside["level"], "WARN");
        assert_eq!(inside["message"], "wake done");
        assert_eq!(inside["agent"], "weather");
        assert_eq!(inside["task_id"], "01TASK");
        assert_eq!(inside["trace_id"], "1-5759e988-bd862e3fe1be46a994272793");
        assert_eq!(inside["request_id"], "req-1");
        assert_eq!(
            inside["xray_trace_id"],
            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
        );
        assert_eq!(inside["model_calls"], 2);
        assert_eq!(inside["ok"], true);
        assert!(inside["timestamp"].as_str().unwrap().contains('T'));
        assert!(inside.get("requestId").is_none());
    }

    #[test]
    fn payload_crates_never_log_at_trace_even_when_asked() {
        let lines = capture(filter(None, Some("TRACE")), || {
            tracing::trace!(target: "aws_smithy_runtime::client::orchestrator", body = "sk-secret", "transmitting request");
            tracing::trace!(target: "lambda_runtime::layers::api_response", body = "{}", "raw JSON event received from Lambda");
            tracing::trace!(target: "aws_sigv4", "calculated signing parameters");
            tracing::debug!(target: "aws_smithy_runtime::client::orchestrator", "beginning attempt #1");
            tracing::trace!(target: "aos_kernel::kernel", "ours at trace");
            tracing::trace!(target: "hyperion", "not hyper");
        });
        let messages: Vec<&str> = lines
            .iter()
            .map(|l| l["message"].as_str().unwrap())
            .collect();
        assert_eq!(
            messages,
            ["beginning attempt #1", "ours at trace", "not hyper"]
        );
    }

    #[test]
    fn the_level_comes_from_rust_log_then_lambda_then_info() {
        use tracing_subscriber::filter::LevelFilter;
        let at = |f: EnvFilter| f.max_level_hint();
        assert_eq!(at(filter(None, None)), Some(LevelFilter::INFO));
        assert_eq!(at(filter(None, Some("WARN"))), Some(LevelFilter::WARN));
        assert_eq!(
            at(filter(Some("debug"), Some("WARN"))),
            Some(LevelFilter::DEBUG)
        );
        assert_eq!(
            at(filter(Some(""), Some("error"))),
            Some(LevelFilter::ERROR)
        );
        // Debug for one module of ours leaves the payload crates at info.
        let lines = capture(
            filter(Some("info,aos_lambda::assemble=debug"), None),
            || {
                tracing::debug!(target: "aws_smithy_runtime", "quiet");
                tracing::debug!(target: "aos_lambda::assemble", aws_config_us = 12u64, "heard");
            },
        );
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["aws_config_us"], 12);
    }
}
