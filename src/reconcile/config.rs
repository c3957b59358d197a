//! Reconciliation's settings from the environment (the bridge's own [`crate::ops::config::Config`]
//! is read next to them: the reconciler sends through the same bridge).

use crate::inbound::auth::Secret;
use crate::ops::config::ConfigError;
use std::time::Duration;

/// Cartpanda's order list, as public clients use it.
pub const DEFAULT_LIST_URL: &str = "https://accounts.cartpanda.com/api/v3/{shop_slug}/orders";
/// The list's filters: orders created in the window, paid (`payment_status=3`), page by page.
/// `{from}`, `{to}` (`YYYY-MM-DD HH:MM:SS`, UTC) and `{page}` are filled per request.
pub const DEFAULT_LIST_QUERY: &str =
    "created_at_min={from}&created_at_max={to}&payment_status=3&page={page}";

/// The order list's request settings.
#[derive(Debug, Clone)]
pub struct ListSettings {
    /// `CARTPANDA_ORDER_LIST_URL`: the list's URL, `{shop_slug}` filled per shop.
    pub url: String,
    /// `CARTPANDA_ORDER_LIST_QUERY`: the filters, with `{from}`, `{to}` and `{page}`.
    pub query: String,
    /// `CARTPANDA_ORDER_LIST_UPDATED_FILTER` (e.g. `updated_at_min`): with it, a second pass lists
    /// the orders updated since the window's start and reconciles their refunds and chargebacks.
    pub updated_filter: Option<String>,
    /// `CARTPANDA_API_MIN_INTERVAL_MS`: at least this long between two requests (one at a time).
    pub min_interval: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Attempts per page (429, 5xx, timeouts and connection errors are retried).
    pub max_attempts: u32,
    /// Largest answer read, in bytes.
    pub max_bytes: usize,
}

impl ListSettings {
    /// The name of the page parameter: the one whose value is `{page}`.
    pub fn page_param(&self) -> &str {
        self.query
            .split('&')
            .find_map(|pair| pair.strip_suffix("={page}"))
            .unwrap_or("page")
    }
}

/// The default shop's reconciliation, from `RECONCILE=true`.
#[derive(Debug, Clone)]
pub struct DefaultShop {
    pub slug: String,
    pub token: Secret,
    /// `RECONCILE_S2S=true`: the shop is fed by Cartpanda's S2S postback (S2S event IDs).
    pub s2s: bool,
}

/// Everything reconciliation needs besides the bridge.
#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    pub list: ListSettings,
    /// `RECONCILE_OVERLAP_MIN`: each window starts this long before the previous one ended (one
    /// run of the schedule), so an order created at a window's edge is never missed.
    pub overlap: Duration,
    /// `RECONCILE_SETTLE_MIN`: orders younger than this are left to their webhooks for now (a
    /// run never races a webhook that is on its way, and never counts it as missing).
    pub settle: Duration,
    /// `RECONCILE_FIRST_LOOKBACK_H`: the first window of a shop without a watermark.
    pub first_lookback: Duration,
    /// Time kept free before the invocation's deadline: a run stops taking new orders then.
    pub margin: Duration,
    /// `RECONCILE_PAID_LOOKBACK_H`: without an "updated since" filter, a lookback pass lists the
    /// paid orders created this long before each run, at least daily (late payments: boleto,
    /// PIX).
    pub paid_lookback: Duration,
    /// `RECONCILE_RETRY_RUNS`: how many later runs retry an order whose conversions could not
    /// be settled before it is given up ([`crate::reconcile::retry`]).
    pub retry_runs: u32,
    /// `RECONCILE_SHOP_CONCURRENCY`: how many shops a scheduled run reconciles at once (each
    /// shop's own API calls stay one at a time).
    pub shop_concurrency: usize,
    /// `RECONCILE_SHOP_BUDGET_S`: the longest one shop's run may take within a scheduled run
    /// (then it resumes next time), so no shop holds the others up.
    pub shop_budget: Duration,
    /// The default shop, when `RECONCILE=true`.
    pub default_shop: Option<DefaultShop>,
    /// How long notes are kept (the ledger's `DEDUP_TTL_DAYS`).
    pub keep_days: u32,
}

fn err(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

fn number(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Result<u64, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(err(
                var,
                format!(
                    "must be {unit} from {} to {}, got `{v}`",
                    range.start(),
                    range.end()
                ),
            )),
        },
    }
}

/// Checks the list URL: `{shop_slug}` is the only placeholder; https (http for loopback).
pub fn check_list_url(template: &str) -> Result<(), String> {
    let probe = template.replace("{shop_slug}", "shop");
    if probe.contains(['{', '}']) {
        return Err("may only use the placeholder {shop_slug}".to_owned());
    }
    let url = url::Url::parse(&probe).map_err(|e| format!("is not a valid URL ({e})"))?;
    if url.query().is_some() {
        return Err(
            "must not carry a query: the filters are CARTPANDA_ORDER_LIST_QUERY".to_owned(),
        );
    }
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err("must use https".to_owned());
    }
    Ok(())
}

/// Checks the query template: `{page}` required, only `{from}`, `{to}`, `{page}` as values.
pub fn check_list_query(query: &str) -> Result<(), String> {
    if !query.split('&').any(|p| p.ends_with("={page}")) {
        return Err("must carry a page parameter `<name>={page}`".to_owned());
    }
    let probe = query
        .replace("{from}", "")
        .replace("{to}", "")
        .replace("{page}", "");
    if probe.contains(['{', '}']) {
        return Err("may only use the placeholders {from}, {to} and {page}".to_owned());
    }
    if query
        .split('&')
        .any(|p| p.split_once('=').is_none_or(|(k, _)| k.is_empty()))
    {
        return Err("must be name=value pairs joined by &".to_owned());
    }
    Ok(())
}

impl ReconcileSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The settings from `lookup` (values trimmed, empty as unset): the order list, the run's
    /// durations, then the default shop.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let list = list_settings(&get)?;
        let overlap = number(&get, "RECONCILE_OVERLAP_MIN", 15, 1..=1440, "minutes")?;
        let settle = number(&get, "RECONCILE_SETTLE_MIN", 5, 0..=240, "minutes")?;
        let first = number(&get, "RECONCILE_FIRST_LOOKBACK_H", 24, 1..=2160, "hours")?;
        let keep_days = number(
            &get,
            "DEDUP_TTL_DAYS",
            u64::from(crate::ops::config::DEFAULT_TTL_DAYS),
            1..=3650,
            "days",
        )? as u32;
        let paid_lookback = number(&get, "RECONCILE_PAID_LOOKBACK_H", 168, 1..=2160, "hours")?;
        let retry_runs = number(&get, "RECONCILE_RETRY_RUNS", 96, 1..=10_000, "runs")? as u32;
        let shop_concurrency = number(&get, "RECONCILE_SHOP_CONCURRENCY", 4, 1..=64, "shops")?;
        let shop_budget = number(&get, "RECONCILE_SHOP_BUDGET_S", 120, 30..=900, "seconds")?;
        let default_shop = default_shop(&get)?;
        Ok(ReconcileSettings {
            list,
            overlap: Duration::from_secs(overlap * 60),
            settle: Duration::from_secs(settle * 60),
            first_lookback: Duration::from_secs(first * 3600),
            margin: Duration::from_secs(20),
            paid_lookback: Duration::from_secs(paid_lookback * 3600),
            retry_runs,
            shop_concurrency: shop_concurrency as usize,
            shop_budget: Duration::from_secs(shop_budget),
            default_shop,
            keep_days,
        })
    }
}

/// A true/false variable; unset is false.
fn flag(get: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<bool, ConfigError> {
    match get(var).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("0" | "false" | "no" | "off") => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some(other) => Err(err(var, format!("must be true or false, got `{other}`"))),
    }
}

/// The order list's settings: `CARTPANDA_ORDER_LIST_URL`, `…_QUERY`, `…_UPDATED_FILTER` and
/// `CARTPANDA_API_MIN_INTERVAL_MS`, each checked.
fn list_settings(get: &impl Fn(&str) -> Option<String>) -> Result<ListSettings, ConfigError> {
    let url = get("CARTPANDA_ORDER_LIST_URL").unwrap_or_else(|| DEFAULT_LIST_URL.to_owned());
    check_list_url(&url).map_err(|p| err("CARTPANDA_ORDER_LIST_URL", p))?;
    let query = get("CARTPANDA_ORDER_LIST_QUERY").unwrap_or_else(|| DEFAULT_LIST_QUERY.to_owned());
    check_list_query(&query).map_err(|p| err("CARTPANDA_ORDER_LIST_QUERY", p))?;
    let updated_filter = get("CARTPANDA_ORDER_LIST_UPDATED_FILTER");
    if let Some(f) = &updated_filter {
        if !f
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'[' | b']'))
        {
            return Err(err(
                "CARTPANDA_ORDER_LIST_UPDATED_FILTER",
                "must be a query parameter name (A-Z a-z 0-9 _ - . [ ])",
            ));
        }
    }
    let min_interval = number(
        get,
        "CARTPANDA_API_MIN_INTERVAL_MS",
        1000,
        0..=60_000,
        "milliseconds",
    )?;
    Ok(ListSettings {
        url,
        query,
        updated_filter,
        min_interval: Duration::from_millis(min_interval),
        timeout: Duration::from_secs(10),
        max_attempts: 5,
        max_bytes: 8 * 1024 * 1024,
    })
}

/// The default shop with `RECONCILE=true`: its API token and slug required, `RECONCILE_S2S`
/// checked either way.
fn default_shop(get: &impl Fn(&str) -> Option<String>) -> Result<Option<DefaultShop>, ConfigError> {
    if !flag(get, "RECONCILE")? {
        flag(get, "RECONCILE_S2S")?;
        return Ok(None);
    }
    let token = get("CARTPANDA_API_TOKEN").ok_or_else(|| {
        err(
            "CARTPANDA_API_TOKEN",
            "is not set (nor CARTPANDA_API_TOKEN_PARAMETER): RECONCILE=true reads Cartpanda's order list with it",
        )
    })?;
    let slug = get("CARTPANDA_SHOP_SLUG").ok_or_else(|| {
        err(
            "CARTPANDA_SHOP_SLUG",
            "is not set: RECONCILE=true lists the orders of this Cartpanda shop",
        )
    })?;
    if slug.len() > 128 || slug.contains(['/', '?', '#', ' ']) {
        return Err(err("CARTPANDA_SHOP_SLUG", "is not a shop slug"));
    }
    Ok(Some(DefaultShop {
        slug,
        token: Secret::new(token),
        s2s: flag(get, "RECONCILE_S2S")?,
    }))
}

/// Reads `--since`: an RFC 3339 time (or Cartpanda's `YYYY-MM-DD HH:MM:SS`, UTC), or a duration
/// back from `now_s` such as `90m`, `48h`, `7d`. Returns epoch seconds.
pub fn parse_since(text: &str, now_s: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Some(t) = crate::inbound::datetime::parse_unix(text) {
        return if t > now_s {
            Err(format!("`{text}` is in the future"))
        } else {
            Ok(t)
        };
    }
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match digits.parse::<i64>() {
        Ok(n) if seconds > 0 && (1..=3650 * 86_400).contains(&(n * seconds)) => {
            Ok(now_s - n * seconds)
        }
        _ => Err(format!(
            "`{text}` is neither an RFC 3339 time nor a duration such as 48h or 7d"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<ReconcileSettings, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ReconcileSettings::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_and_errors_name_their_variable() {
        let s = settings(&[]).unwrap();
        assert!(s.default_shop.is_none());
        assert_eq!(s.list.url, DEFAULT_LIST_URL);
        assert_eq!(s.list.page_param(), "page");
        assert_eq!(s.overlap, Duration::from_secs(900));
        assert_eq!(s.paid_lookback, Duration::from_secs(168 * 3600));
        assert_eq!(s.retry_runs, 96);
        assert_eq!((s.shop_concurrency, s.shop_budget.as_secs()), (4, 120));
        let on = settings(&[
            ("RECONCILE", "true"),
            ("CARTPANDA_API_TOKEN", "tok"),
            ("CARTPANDA_SHOP_SLUG", "loja"),
        ])
        .unwrap();
        assert_eq!(on.default_shop.unwrap().slug, "loja");
        for (pairs, var, problem) in [
            (
                vec![("RECONCILE", "true")],
                "CARTPANDA_API_TOKEN",
                "not set",
            ),
            (
                vec![("RECONCILE", "true"), ("CARTPANDA_API_TOKEN", "t")],
                "CARTPANDA_SHOP_SLUG",
                "not set",
            ),
            (vec![("RECONCILE", "maybe")], "RECONCILE", "true or false"),
            (
                vec![(
                    "CARTPANDA_ORDER_LIST_URL",
                    "http://x.example/{shop_slug}/orders",
                )],
                "CARTPANDA_ORDER_LIST_URL",
                "https",
            ),
            (
                vec![(
                    "CARTPANDA_ORDER_LIST_URL",
                    "https://x.example/{store}/orders",
                )],
                "CARTPANDA_ORDER_LIST_URL",
                "placeholder",
            ),
            (
                vec![("CARTPANDA_ORDER_LIST_QUERY", "created_at_min={from}")],
                "CARTPANDA_ORDER_LIST_QUERY",
                "{page}",
            ),
            (
                vec![("CARTPANDA_ORDER_LIST_UPDATED_FILTER", "a=b")],
                "CARTPANDA_ORDER_LIST_UPDATED_FILTER",
                "parameter name",
            ),
            (
                vec![("RECONCILE_OVERLAP_MIN", "0")],
                "RECONCILE_OVERLAP_MIN",
                "1 to 1440",
            ),
            (
                vec![("RECONCILE_RETRY_RUNS", "0")],
                "RECONCILE_RETRY_RUNS",
                "1 to 10000",
            ),
            (
                vec![("RECONCILE_SHOP_CONCURRENCY", "0")],
                "RECONCILE_SHOP_CONCURRENCY",
                "1 to 64",
            ),
            (
                vec![("RECONCILE_SHOP_BUDGET_S", "10")],
                "RECONCILE_SHOP_BUDGET_S",
                "30 to 900",
            ),
            (
                vec![("RECONCILE_PAID_LOOKBACK_H", "week")],
                "RECONCILE_PAID_LOOKBACK_H",
                "1 to 2160",
            ),
        ] {
            let e = settings(&pairs).unwrap_err();
            assert_eq!(e.var, var, "{pairs:?}");
            assert!(e.to_string().contains(problem), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn since_reads_times_and_durations() {
        let now = 1_795_000_000;
        assert_eq!(parse_since("48h", now), Ok(now - 48 * 3600));
        assert_eq!(parse_since("7d", now), Ok(now - 7 * 86_400));
        assert_eq!(parse_since("90m", now), Ok(now - 5400));
        assert_eq!(
            parse_since("2026-11-18T00:00:00Z", now),
            Ok(crate::inbound::datetime::parse_unix("2026-11-18 00:00:00").unwrap())
        );
        for bad in [
            "",
            "7",
            "7w",
            "-1h",
            "0h",
            "2030-01-01T00:00:00Z",
            "yesterday",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }
}
