//! Logging set-up shared by both functions: Lambda's level and format (`AWS_LAMBDA_LOG_LEVEL` /
//! `RUST_LOG`, `AWS_LAMBDA_LOG_FORMAT=JSON`), with the HTTP and AWS SDK crates capped below the
//! levels at which they print request and response bodies — those carry PII (the queued postback,
//! names, emails) — whatever level the operator chooses.

use std::str::FromStr;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{Directive, LevelFilter};

/// Crates that print bodies or full URLs at their most verbose levels, and the most verbose level
/// each may log at (never more verbose than the level chosen for everything else).
const CAPS: &[(&str, LevelFilter)] = &[
    ("aws_smithy_runtime", LevelFilter::DEBUG),
    ("aws_smithy_runtime_api", LevelFilter::DEBUG),
    ("aws_smithy_http_client", LevelFilter::DEBUG),
    ("aws_sigv4", LevelFilter::INFO),
    ("aws_config", LevelFilter::INFO),
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
    ("reqwest", LevelFilter::INFO),
    ("rustls", LevelFilter::INFO),
];

/// The filter for `level` (e.g. `"info"`, `"trace"`, or any `EnvFilter` directives), with the caps.
pub fn filter(level: &str) -> EnvFilter {
    let simple = LevelFilter::from_str(level).ok();
    let base = simple.unwrap_or(LevelFilter::INFO);
    let mut filter = EnvFilter::builder()
        .with_default_directive(base.into())
        .parse_lossy(if simple.is_some() { "" } else { level });
    for (target, cap) in CAPS {
        if let Ok(directive) = Directive::from_str(&format!("{target}={}", base.min(*cap))) {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Installs the subscriber for a Lambda function.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_env_filter(filter(&level));
    if json {
        // Fields at the top level of each JSON line, so Logs Insights reads `outcome`, `order_id`.
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_never_make_a_crate_more_verbose_than_the_chosen_level() {
        // At `info` nothing logs at `debug` (the SDK's debug lines cost CPU on every call).
        assert_eq!(filter("info").max_level_hint(), Some(LevelFilter::INFO));
        assert_eq!(filter("INFO").max_level_hint(), Some(LevelFilter::INFO));
        assert_eq!(filter("warn").max_level_hint(), Some(LevelFilter::WARN));
        // At `trace` our code traces, the capped crates stop at their caps.
        assert_eq!(filter("trace").max_level_hint(), Some(LevelFilter::TRACE));
    }
}
