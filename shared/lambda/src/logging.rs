//! Logs of a function, to stdout where Lambda collects them. The rule: one line per
//! event, in the format the function is configured for (JSON when
//! `AWS_LAMBDA_LOG_FORMAT` is `JSON`, so CloudWatch Logs Insights can query fields),
//! at the level `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG` asks for (info by default), and
//! no timestamps or colours in text lines, which Lambda stamps itself.

use tracing_subscriber::EnvFilter;

/// Installs the subscriber; a second call does nothing.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| {
            let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").unwrap_or_default();
            EnvFilter::try_new(if level.is_empty() { "info" } else { &level })
        })
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false);
    let _ = if json {
        fmt.json()
            .with_current_span(false)
            .flatten_event(true)
            .try_init()
    } else {
        fmt.without_time().try_init()
    };
}
