//! Configuration from the environment, checked once at cold start: a wrong value stops the
//! function with a message naming the variable and what is wrong.

use crate::conversion::currency::is_sum_currency;
use crate::conversion::rules::{CartxTestOrders, ConversionTypes, DEFAULT_CONVERSION_TYPES, Rules};
use crate::inbound::auth::{Secret, Tokens};
use crate::postback::template::PostbackTemplate;
use std::time::Duration;

/// Secrets the deployment may give as the name of an SSM SecureString instead of a value:
/// (the value's variable, the parameter's variable).
pub const SECRET_PARAMETERS: [(&str, &str); 3] = [
    ("WEBHOOK_TOKEN", "WEBHOOK_TOKEN_PARAMETER"),
    ("CARTPANDA_API_TOKEN", "CARTPANDA_API_TOKEN_PARAMETER"),
    // The default shop's RedTrack API key: read by reconciliation's daily count only.
    ("REDTRACK_API_KEY", "REDTRACK_API_KEY_PARAMETER"),
];

/// The secrets named by `*_PARAMETER` variables, read from `secrets`: (value's variable, value).
/// A parameter must lie under the deployment's path ([`crate::ops::secrets::prefix`]), and a
/// secret may be given one way only.
pub async fn resolve_secret_parameters(
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &dyn crate::ops::secrets::SecretStore,
) -> Result<Vec<(&'static str, String)>, ConfigError> {
    let get = trimmed(&lookup);
    let mut resolved = Vec::new();
    for (value_var, parameter_var) in SECRET_PARAMETERS {
        let Some(name) = get(parameter_var) else {
            continue;
        };
        if get(value_var).is_some() {
            return Err(err(
                parameter_var,
                format!("and {value_var} are both set: give the secret one way"),
            ));
        }
        let table = table(&get)?;
        crate::ops::secrets::check_parameter(&name, &table).map_err(|p| err(parameter_var, p))?;
        let value = secrets
            .get(&name)
            .await
            .map_err(|e| err(parameter_var, format!("could not be read: {e}")))?;
        resolved.push((value_var, value.expose().to_owned()));
    }
    Ok(resolved)
}

/// The variables a function reads: `lookup` (the process environment, or a map in tests) with
/// each secret named by a `*_PARAMETER` variable ([`SECRET_PARAMETERS`]) read once, so the
/// bridge's and reconciliation's settings read the same values.
pub struct Environment<L> {
    lookup: L,
    resolved: Vec<(&'static str, String)>,
}

impl<L: Fn(&str) -> Option<String>> Environment<L> {
    /// Reads the secrets `lookup` names as parameters from `secrets`.
    pub async fn read(
        lookup: L,
        secrets: &dyn crate::ops::secrets::SecretStore,
    ) -> Result<Self, ConfigError> {
        let resolved = resolve_secret_parameters(&lookup, secrets).await?;
        Ok(Environment { lookup, resolved })
    }

    /// A variable's value: a secret read from its parameter, else `lookup`'s.
    pub fn get(&self, name: &str) -> Option<String> {
        match self.resolved.iter().find(|(var, _)| *var == name) {
            Some((_, value)) => Some(value.clone()),
            None => (self.lookup)(name),
        }
    }
}

/// A configuration error: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {var} {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

fn err(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

/// What differs between shops: who may call, where to send, and how to convert. The
/// environment configures the default shop (`POST /cartpanda`); named shops
/// (`POST /cartpanda/{shop}`) live in the ledger's table (see [`crate::shops::directory`]).
#[derive(Debug, Clone)]
pub struct Profile {
    /// `None` for the default shop.
    pub shop: Option<String>,
    pub tokens: Tokens,
    pub postback: PostbackTemplate,
    pub rules: Rules,
    /// Normalise email, phone (E.164) and names before rendering.
    pub normalize_pii: bool,
    /// Re-read each order from Cartpanda's API before sending (see [`crate::inbound::verify`]).
    pub cartpanda_api_token: Option<crate::inbound::auth::Secret>,
    /// Where the click ID is looked for (`CLICKID_SOURCES`, see [`crate::conversion::clickid`]).
    pub click_id_sources: crate::conversion::clickid::ClickIdSources,
}

impl Profile {
    /// The ledger's record key of a conversion of this shop.
    pub fn record_key(&self, event_id: &str, dry_run: bool) -> String {
        crate::ledger::keys::conversion(self.shop.as_deref(), event_id, dry_run)
    }
}

/// Everything the bridge needs to know, parsed.
#[derive(Debug, Clone)]
pub struct Config {
    /// The default shop's profile, from the environment.
    pub profile: std::sync::Arc<Profile>,
    pub table: String,
    pub ttl_days: u32,
    pub dry_run: bool,
    /// Timeout of one request to RedTrack.
    pub redtrack_timeout: Duration,
    /// The redrive queue; unset, conversions RedTrack could not take are released (502).
    pub redrive_queue_url: Option<String>,
    /// How long a newly queued conversion waits before its first redrive.
    pub redrive_delay_s: u32,
    /// Where Cartpanda's API serves an order (see [`crate::inbound::verify`]).
    pub cartpanda_order_url: String,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the process environment, each secret given as an SSM parameter name
    /// ([`SECRET_PARAMETERS`]) read from `secrets` first.
    pub async fn from_env_with(
        secrets: &dyn crate::ops::secrets::SecretStore,
    ) -> Result<Self, ConfigError> {
        let env = Environment::read(|name| std::env::var(name).ok(), secrets).await?;
        Self::from_lookup(|name| env.get(name))
    }

    /// Reads configuration through `lookup` (the environment, or a map in tests). Variables are
    /// checked in this order, so with several wrong the first is the one reported.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = trimmed(&lookup);
        let dry_run = flag(&get("DRY_RUN"), "DRY_RUN", false)?;
        let postback = postback(&get, dry_run)?;
        let raw_token =
            lookup("WEBHOOK_TOKEN").ok_or_else(|| err("WEBHOOK_TOKEN", "is not set"))?;
        let tokens = Tokens::parse(&Secret::new(raw_token)).map_err(|p| err("WEBHOOK_TOKEN", p))?;
        let table = table(&get)?;
        let ttl_days = ttl_days(&get)?;
        let rules = rules(&get)?;
        let normalize_pii = flag(&get("NORMALIZE_PII"), "NORMALIZE_PII", true)?;
        let rules = Rules {
            sum_currency: sum_currency(&get)?,
            ..rules
        };
        // Verification keeps its own trigger (the token); `VERIFY_ORDERS=false` opts out while a
        // token is set for reconciliation (see `crate::reconcile`).
        let verify_orders = flag(&get("VERIFY_ORDERS"), "VERIFY_ORDERS", true)?;
        let profile = Profile {
            shop: None,
            tokens,
            postback,
            rules,
            normalize_pii,
            cartpanda_api_token: get("CARTPANDA_API_TOKEN")
                .filter(|_| verify_orders)
                .map(Secret::new),
            click_id_sources: click_id_sources(&get)?,
        };
        Ok(Config {
            profile: std::sync::Arc::new(profile),
            table,
            ttl_days,
            dry_run,
            redtrack_timeout: redtrack_timeout(&get)?,
            redrive_queue_url: get("REDRIVE_QUEUE_URL"),
            redrive_delay_s: redrive_delay_s(&get)?,
            cartpanda_order_url: cartpanda_order_url(&get)?,
        })
    }
}

/// `REDTRACK_POSTBACK_URL`, parsed (plain http allowed in dry runs).
fn postback(
    get: &impl Fn(&str) -> Option<String>,
    dry_run: bool,
) -> Result<PostbackTemplate, ConfigError> {
    let raw_url = get("REDTRACK_POSTBACK_URL").ok_or_else(|| {
        err(
            "REDTRACK_POSTBACK_URL",
            "is not set: paste the postback URL RedTrack shows",
        )
    })?;
    PostbackTemplate::parse(&raw_url, dry_run)
        .map_err(|e| err("REDTRACK_POSTBACK_URL", e.to_string()))
}

/// `CONVERSION_TYPES`, `SEND_TEST_ORDERS` and `CARTX_TEST_ORDERS` (the sum currency aside).
fn rules(get: &impl Fn(&str) -> Option<String>) -> Result<Rules, ConfigError> {
    let types_text = get("CONVERSION_TYPES").unwrap_or_else(|| DEFAULT_CONVERSION_TYPES.to_owned());
    let conversion_types =
        ConversionTypes::parse(&types_text).map_err(|p| err("CONVERSION_TYPES", p))?;
    let send_test_orders = flag(&get("SEND_TEST_ORDERS"), "SEND_TEST_ORDERS", false)?;
    let cartx_test_orders = match get("CARTX_TEST_ORDERS") {
        None => CartxTestOrders::default(),
        Some(v) => CartxTestOrders::parse(&v).map_err(|p| err("CARTX_TEST_ORDERS", p))?,
    };
    Ok(Rules {
        conversion_types,
        send_test_orders,
        cartx_test_orders,
        sum_currency: None,
    })
}

fn redrive_delay_s(get: &impl Fn(&str) -> Option<String>) -> Result<u32, ConfigError> {
    match get("REDRIVE_DELAY_S") {
        None => Ok(60),
        Some(v) => match v.parse::<u32>() {
            Ok(s @ 0..=900) => Ok(s),
            _ => Err(err(
                "REDRIVE_DELAY_S",
                format!("must be seconds from 0 to 900, got `{v}`"),
            )),
        },
    }
}

fn cartpanda_order_url(get: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let url = get("CARTPANDA_ORDER_URL")
        .unwrap_or_else(|| crate::inbound::verify::DEFAULT_ORDER_URL.to_owned());
    crate::inbound::verify::check_order_url(&url).map_err(|p| err("CARTPANDA_ORDER_URL", p))?;
    Ok(url)
}

/// `CLICKID_SOURCES`, else the default sources.
fn click_id_sources(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<crate::conversion::clickid::ClickIdSources, ConfigError> {
    match get("CLICKID_SOURCES") {
        None => Ok(crate::conversion::clickid::ClickIdSources::default()),
        Some(v) => crate::conversion::clickid::ClickIdSources::parse(&v)
            .map_err(|p| err("CLICKID_SOURCES", p)),
    }
}

/// `lookup` with values trimmed and an empty value read as unset.
fn trimmed(lookup: &impl Fn(&str) -> Option<String>) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| {
        lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }
}

/// Configuration of the redrive consumer: only what a re-send needs (no token, no template).
#[derive(Debug, Clone)]
pub struct RedriveConfig {
    pub table: String,
    pub ttl_days: u32,
    pub redtrack_timeout: Duration,
    /// The queue the consumer reads, for growing a message's visibility timeout.
    pub queue_url: String,
    /// Where permanently refused conversions go at once, for the operator.
    pub dlq_url: Option<String>,
}

impl RedriveConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = trimmed(&lookup);
        Ok(RedriveConfig {
            table: table(&get)?,
            ttl_days: ttl_days(&get)?,
            redtrack_timeout: redtrack_timeout(&get)?,
            queue_url: get("REDRIVE_QUEUE_URL").ok_or_else(|| {
                err(
                    "REDRIVE_QUEUE_URL",
                    "is not set: the URL of the redrive queue",
                )
            })?,
            dlq_url: get("REDRIVE_DLQ_URL"),
        })
    }
}

/// `SUM_CURRENCY`: USD, EUR or BRL, as Cartpanda's S2S form offers; unset (or `none`) sends the
/// amounts as charged.
pub fn sum_currency(get: &impl Fn(&str) -> Option<String>) -> Result<Option<String>, ConfigError> {
    match get("SUM_CURRENCY").map(|v| v.to_ascii_uppercase()) {
        None => Ok(None),
        Some(v) if v == "NONE" || v == "AS_CHARGED" => Ok(None),
        Some(v) if is_sum_currency(&v) => Ok(Some(v)),
        Some(v) => Err(err(
            "SUM_CURRENCY",
            format!("must be USD, EUR, BRL or none, got `{v}`"),
        )),
    }
}

fn table(get: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let table = get("DEDUP_TABLE")
        .ok_or_else(|| err("DEDUP_TABLE", "is not set: name the DynamoDB table"))?;
    if table.len() < 3
        || table.len() > 255
        || !table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(err(
            "DEDUP_TABLE",
            "is not a valid DynamoDB table name (3-255 of A-Z a-z 0-9 _ - .)",
        ));
    }
    Ok(table)
}

/// The ledger's memory when `DEDUP_TTL_DAYS` is unset: how long a conversion record is kept, and
/// the age past which an order no longer converts ([`crate::conversion::rules::too_old`]). Past
/// Cartpanda's chargeback window (180 days) with room to spare.
pub const DEFAULT_TTL_DAYS: u32 = 400;

/// Below this memory a chargeback can arrive after its sale's record is gone: still accepted
/// (stacks deployed before 400 was the default set 30), with a warning and a metric at cold
/// start ([`warn_if_short_memory`]).
pub const SHORT_MEMORY_DAYS: u32 = 200;

/// Warns (log line and metric `LedgerMemoryShort`) when the configured memory is under
/// [`SHORT_MEMORY_DAYS`]; called once at each function's cold start. Returns whether it warned.
pub fn warn_if_short_memory(ttl_days: u32) -> bool {
    if ttl_days >= SHORT_MEMORY_DAYS {
        return false;
    }
    tracing::warn!(
        ttl_days,
        recommended_days = DEFAULT_TTL_DAYS,
        "DEDUP_TTL_DAYS is under {SHORT_MEMORY_DAYS} days: a refund or chargeback that arrives after its records expire could be sent again; raise it (stack parameter DedupTtlDays) to {DEFAULT_TTL_DAYS} and run `cartpanda-redtrack-admin ledger extend`"
    );
    crate::ops::metrics::ledger_memory_short();
    true
}

fn ttl_days(get: &impl Fn(&str) -> Option<String>) -> Result<u32, ConfigError> {
    match get("DEDUP_TTL_DAYS") {
        None => Ok(DEFAULT_TTL_DAYS),
        Some(v) => match v.parse::<u32>() {
            Ok(n @ 1..=3650) => Ok(n),
            _ => Err(err(
                "DEDUP_TTL_DAYS",
                format!("must be a whole number of days from 1 to 3650, got `{v}`"),
            )),
        },
    }
}

fn redtrack_timeout(get: &impl Fn(&str) -> Option<String>) -> Result<Duration, ConfigError> {
    match get("REDTRACK_TIMEOUT_MS") {
        None => Ok(Duration::from_millis(4000)),
        Some(v) => match v.parse::<u64>() {
            Ok(ms @ 100..=60_000) => Ok(Duration::from_millis(ms)),
            _ => Err(err(
                "REDTRACK_TIMEOUT_MS",
                format!("must be milliseconds from 100 to 60000, got `{v}`"),
            )),
        },
    }
}

fn flag(value: &Option<String>, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => Err(err(var, format!("must be true or false, got `{other}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut env: HashMap<String, String> = [
            (
                "REDTRACK_POSTBACK_URL",
                "https://trk.example.com/postback?clickid={cid}&sum={total_price}",
            ),
            ("WEBHOOK_TOKEN", "a-long-enough-secret"),
            ("DEDUP_TABLE", "cartpanda-dedup"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            if v.is_empty() {
                env.remove(*k);
            } else {
                env.insert(k.to_string(), v.to_string());
            }
        }
        Config::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c.ttl_days, 400,
            "the ledger remembers past the chargeback window"
        );
        assert_eq!(config(&[("DEDUP_TTL_DAYS", "30")]).unwrap().ttl_days, 30);
        assert!(!c.dry_run && !c.profile.rules.send_test_orders);
        assert_eq!(
            c.profile.rules.cartx_test_orders,
            CartxTestOrders::Send,
            "is_cartx_test alone is a sale by default"
        );
        let skip = config(&[("CARTX_TEST_ORDERS", "skip")]).unwrap();
        assert_eq!(skip.profile.rules.cartx_test_orders, CartxTestOrders::Skip);
        assert_eq!(
            c.profile.rules.conversion_types.get("order.refunded"),
            Some("Refund")
        );
        assert_eq!(c.profile.rules.conversion_types.get("order.created"), None);
        assert!(c.profile.normalize_pii && c.profile.cartpanda_api_token.is_none());
        assert_eq!(c.profile.record_key("1-purchase", false), "evt#1-purchase");
        assert_eq!(c.profile.record_key("1-purchase", true), "dry#1-purchase");
    }

    #[test]
    fn each_error_names_its_variable() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[("REDTRACK_POSTBACK_URL", "")],
                "REDTRACK_POSTBACK_URL",
                "not set",
            ),
            (
                &[(
                    "REDTRACK_POSTBACK_URL",
                    "https://t.example/p?clickid={cid}&x={bogus}",
                )],
                "REDTRACK_POSTBACK_URL",
                "unknown macro `{bogus}`",
            ),
            (
                &[("REDTRACK_POSTBACK_URL", "http://t.example/p?clickid={cid}")],
                "REDTRACK_POSTBACK_URL",
                "https",
            ),
            (
                &[("REDTRACK_POSTBACK_URL", "https://t.example/p?clickid={cid")],
                "REDTRACK_POSTBACK_URL",
                "unclosed",
            ),
            (&[("WEBHOOK_TOKEN", "")], "WEBHOOK_TOKEN", "not set"),
            (&[("WEBHOOK_TOKEN", "   ")], "WEBHOOK_TOKEN", "empty"),
            (&[("DEDUP_TABLE", "")], "DEDUP_TABLE", "not set"),
            (&[("DEDUP_TABLE", "a b")], "DEDUP_TABLE", "not a valid"),
            (&[("DEDUP_TTL_DAYS", "0")], "DEDUP_TTL_DAYS", "1 to 3650"),
            (&[("DEDUP_TTL_DAYS", "ten")], "DEDUP_TTL_DAYS", "1 to 3650"),
            (
                &[("CONVERSION_TYPES", "order.paid")],
                "CONVERSION_TYPES",
                "event=Type",
            ),
            (
                &[("CONVERSION_TYPES", "order.paid=Purchase,order.paid=Sale")],
                "CONVERSION_TYPES",
                "twice",
            ),
            (
                &[("CONVERSION_TYPES", "order.paid=Pur&chase")],
                "CONVERSION_TYPES",
                "may only hold",
            ),
            (
                &[("SEND_TEST_ORDERS", "maybe")],
                "SEND_TEST_ORDERS",
                "true or false",
            ),
            (
                &[("CARTX_TEST_ORDERS", "maybe")],
                "CARTX_TEST_ORDERS",
                "`send` or `skip`",
            ),
            (&[("DRY_RUN", "2")], "DRY_RUN", "true or false"),
            (&[("VERIFY_ORDERS", "2")], "VERIFY_ORDERS", "true or false"),
            (
                &[("CLICKID_SOURCES", "utm_term")],
                "CLICKID_SOURCES",
                "checkout_params.<key>",
            ),
            (
                &[("REDTRACK_TIMEOUT_MS", "5")],
                "REDTRACK_TIMEOUT_MS",
                "100 to 60000",
            ),
            (&[("REDRIVE_DELAY_S", "901")], "REDRIVE_DELAY_S", "0 to 900"),
            (
                &[("SUM_CURRENCY", "GBP")],
                "SUM_CURRENCY",
                "USD, EUR, BRL or none",
            ),
            (
                &[("NORMALIZE_PII", "sometimes")],
                "NORMALIZE_PII",
                "true or false",
            ),
        ];
        for (pairs, var, problem) in cases {
            let e = config(pairs).unwrap_err();
            assert_eq!(e.var, *var, "{pairs:?}");
            let text = e.to_string();
            assert!(
                text.contains(var) && text.contains(problem),
                "{pairs:?}: {text}"
            );
        }
    }

    #[test]
    fn a_short_memory_starts_with_a_warning() {
        assert!(warn_if_short_memory(30));
        assert!(warn_if_short_memory(199));
        assert!(!warn_if_short_memory(200));
        assert!(!warn_if_short_memory(DEFAULT_TTL_DAYS));
    }

    #[test]
    fn dry_run_allows_plain_http_and_secrets_stay_hidden() {
        let c = config(&[
            ("DRY_RUN", "true"),
            ("REDTRACK_POSTBACK_URL", "http://t.example/p?clickid={cid}"),
        ])
        .unwrap();
        assert!(c.dry_run);
        assert!(!format!("{c:?}").contains("a-long-enough-secret"));
        let verified = config(&[("CARTPANDA_API_TOKEN", "cp-api-secret-value")]).unwrap();
        assert!(!format!("{verified:?}").contains("cp-api-secret-value"));
        assert!(verified.profile.cartpanda_api_token.is_some());
        let opted_out = config(&[
            ("CARTPANDA_API_TOKEN", "cp-api-secret-value"),
            ("VERIFY_ORDERS", "false"),
        ])
        .unwrap();
        assert!(opted_out.profile.cartpanda_api_token.is_none());
    }
}
