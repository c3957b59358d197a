//! Logging set-up shared by both functions: Lambda's level and format (`AWS_LAMBDA_LOG_LEVEL` /
//! `RUST_LOG`, `AWS_LAMBDA_LOG_FORMAT=JSON`), with the HTTP and AWS SDK crates capped below the
//! levels at which they print request and response bodies — those carry PII (the queued postback,
//! names, emails) — whatever level the operator chooses.

use std::str::FromStr;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{Directive, LevelFilter};

/// Crates that print bodies or full URLs at their most verbose levels, and the level they are
/// held to.
const CAPS: &[&str] = &[
    "aws_smithy_runtime=debug",
    "aws_smithy_runtime_api=debug",
    "aws_smithy_http_client=debug",
    "aws_sigv4=info",
    "aws_config=info",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
    "reqwest=info",
    "rustls=info",
];

/// The filter for `level` (e.g. `"info"`, `"trace"`, or any `EnvFilter` directives), with the caps.
pub fn filter(level: &str) -> EnvFilter {
    let default = LevelFilter::from_str(level).unwrap_or(LevelFilter::INFO);
    let mut filter = EnvFilter::builder()
        .with_default_directive(default.into())
        .parse_lossy(if LevelFilter::from_str(level).is_ok() {
            ""
        } else {
            level
        });
    for cap in CAPS {
        if let Ok(directive) = Directive::from_str(cap) {
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
