//! Logging set-up shared by every function (bridge, redrive, reconcile): Lambda's level and format (`AWS_LAMBDA_LOG_LEVEL` /
//! `RUST_LOG`, `AWS_LAMBDA_LOG_FORMAT=JSON`), with the HTTP and AWS SDK crates capped below the
//! levels at which they print request and response bodies — those carry PII (the queued postback,
//! names, emails) — whatever level the operator chooses.

use std::str::FromStr;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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

/// The filter for `level`: a level (`"info"`, `"TRACE"`) or `target=level` directives with an
/// optional default level (`"warn,cartpanda_redtrack=debug"`; without one, `info`), with the caps
/// applied under the default level. A per-target filter, not `EnvFilter`: span and field
/// directives are not read (text that is not directives means `info`), and the regex engine
/// `EnvFilter` links stays out of the binary (docs/performance.md).
pub fn filter(level: &str) -> Targets {
    let chosen = match LevelFilter::from_str(level) {
        Ok(simple) => Targets::new().with_default(simple),
        Err(_) => Targets::from_str(level).unwrap_or_default(),
    };
    let base = chosen.default_level().unwrap_or(LevelFilter::INFO);
    CAPS.iter()
        .fold(chosen.with_default(base), |filter, (target, cap)| {
            filter.with_target(*target, base.min(*cap))
        })
}

/// Installs the subscriber for a Lambda function.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter(&level));
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .without_time();
    if json {
        // Fields at the top level of each JSON line, so Logs Insights reads `outcome`, `order_id`.
        registry.with(layer.json().flatten_event(true)).init();
    } else {
        registry.with(layer).init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    fn hint(filter: Targets) -> Option<LevelFilter> {
        tracing_subscriber::Layer::<tracing_subscriber::Registry>::max_level_hint(&filter)
    }

    #[test]
    fn caps_never_make_a_crate_more_verbose_than_the_chosen_level() {
        // At `info` nothing logs at `debug` (the SDK's debug lines cost CPU on every call).
        assert_eq!(hint(filter("info")), Some(LevelFilter::INFO));
        assert_eq!(hint(filter("INFO")), Some(LevelFilter::INFO));
        assert_eq!(hint(filter("warn")), Some(LevelFilter::WARN));
        // At `trace` our code traces, the capped crates stop at their caps.
        assert_eq!(hint(filter("trace")), Some(LevelFilter::TRACE));
    }

    /// The most verbose level at which an event of `$target` is enabled under the current
    /// subscriber (`tracing::enabled!` needs its target and level as constants).
    macro_rules! most_verbose {
        ($target:literal) => {
            if tracing::enabled!(target: $target, Level::TRACE) {
                LevelFilter::TRACE
            } else if tracing::enabled!(target: $target, Level::DEBUG) {
                LevelFilter::DEBUG
            } else if tracing::enabled!(target: $target, Level::INFO) {
                LevelFilter::INFO
            } else if tracing::enabled!(target: $target, Level::WARN) {
                LevelFilter::WARN
            } else if tracing::enabled!(target: $target, Level::ERROR) {
                LevelFilter::ERROR
            } else {
                LevelFilter::OFF
            }
        };
    }

    /// The most verbose level events of `target` (a module inside the crate, as the crates log)
    /// pass `filter` at.
    fn verbosity(filter: Targets, target: &str) -> LevelFilter {
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::with_default(subscriber, || match target {
            "aws_smithy_runtime" => most_verbose!("aws_smithy_runtime::client::orchestrator"),
            "aws_smithy_runtime_api" => most_verbose!("aws_smithy_runtime_api::client::http"),
            "aws_smithy_http_client" => most_verbose!("aws_smithy_http_client::hyper_impl"),
            "aws_sigv4" => most_verbose!("aws_sigv4::http_request::sign"),
            "aws_config" => most_verbose!("aws_config::meta::region"),
            "hyper" => most_verbose!("hyper::proto::h1::io"),
            "hyper_util" => most_verbose!("hyper_util::client::legacy::pool"),
            "h2" => most_verbose!("h2::codec::framed_write"),
            "reqwest" => most_verbose!("reqwest::connect"),
            "rustls" => most_verbose!("rustls::client::hs"),
            "cartpanda_redtrack" => most_verbose!("cartpanda_redtrack::bridge"),
            other => panic!("add `{other}` to this test's targets"),
        })
    }

    #[test]
    fn each_capped_crate_stops_at_its_cap_and_our_code_at_the_chosen_level() {
        for level in [
            LevelFilter::TRACE,
            LevelFilter::DEBUG,
            LevelFilter::INFO,
            LevelFilter::WARN,
        ] {
            let chosen = level.to_string().to_ascii_lowercase();
            for (target, cap) in CAPS {
                assert_eq!(
                    verbosity(filter(&chosen), target),
                    level.min(*cap),
                    "{target} at `{chosen}` (cap {cap})"
                );
            }
            assert_eq!(verbosity(filter(&chosen), "cartpanda_redtrack"), level);
        }
        // Directives the operator writes keep the caps too.
        assert_eq!(
            verbosity(filter("cartpanda_redtrack=trace,hyper=trace"), "hyper"),
            LevelFilter::INFO
        );
        assert_eq!(
            verbosity(
                filter("cartpanda_redtrack=trace,hyper=trace"),
                "cartpanda_redtrack"
            ),
            LevelFilter::TRACE
        );
        // A default level among the directives is the level the caps stay under.
        assert_eq!(
            verbosity(filter("warn,hyper=trace"), "hyper"),
            LevelFilter::WARN
        );
        assert_eq!(
            verbosity(filter("warn,hyper=trace"), "cartpanda_redtrack"),
            LevelFilter::WARN
        );
        // Text that is not directives: the default.
        assert_eq!(
            verbosity(filter("[span{x=1}]=trace"), "cartpanda_redtrack"),
            LevelFilter::INFO
        );
    }
}
