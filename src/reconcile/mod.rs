//! Reconciliation: the conversions no webhook brought. A scheduled run lists each reconciled
//! shop's paid orders from Cartpanda's order list ([`orders`]) since its watermark
//! ([`watermark`], less one run of overlap), turns every order into the conversions its paid and
//! upsell webhooks would have made — the same event IDs (the S2S ones for a shop fed by S2S) —
//! and hands them to the bridge's own claim → send path ([`run`]), so whichever of webhook and
//! reconciliation comes first sends, and the other finds the claim. Refunds and chargebacks are
//! reconciled only with an "updated since" filter (`CARTPANDA_ORDER_LIST_UPDATED_FILTER`); that
//! pass also makes the sales of orders paid after they were created (boleto, PIX). Without the
//! filter a lookback pass lists the paid orders of the last `RECONCILE_PAID_LOOKBACK_H` at least
//! daily for them. Conversions found but not settled (RedTrack down and no queue) are retried by
//! later runs ([`retry`]). Each scheduled run counts the shops whose run failed and the shops
//! with no complete run for two hours (`ReconcileShopsFailed`, `ReconcileShopsStale`, alarmed;
//! the shop names in the log and the answer), and the shops whose webhooks went silent
//! (`ShopsSilent`, [`silence`]). Once a day per shop, the run measures the previous day's
//! coverage ([`coverage`]), and compares RedTrack's own count of the day before with what was
//! sent ([`rtcount`]).
//!
//! Switches ([`config`]): `RECONCILE=true` with `CARTPANDA_API_TOKEN` (or the SSM parameter
//! `CARTPANDA_API_TOKEN_PARAMETER` names, read as the webhook function reads it) and
//! `CARTPANDA_SHOP_SLUG` for the default shop; `--reconcile` (with its slug and token, which
//! `shop put` keeps in SSM) for a named shop. Order
//! verification is not affected (it keeps its own trigger, the token; `VERIFY_ORDERS=false` opts
//! out while a token is set).
//!
//! Entry points: the Lambda `cartpanda-redtrack-reconcile` (EventBridge Scheduler; runnable
//! locally) calls [`run_scheduled`]; the admin command `reconcile --since … [--shop] [--dry-run]`
//! calls [`command`].

pub mod config;
pub mod coverage;
pub mod error;
pub mod fanout;
pub mod orders;
pub mod retry;
pub mod rtcount;
pub mod run;
pub mod shops;
pub mod silence;
pub mod watermark;

use crate::bridge::Bridge;
use crate::inbound::auth::Secret;
use crate::ledger::dynamo::DynamoLedger;
use crate::shops::directory::ShopRecord;
use error::ReconcileError;
use run::{Reconciler, RunOptions, Since, Summary, Target};
use serde::Serialize;
use std::sync::Arc;

/// A shop with no complete run for this long is stale (`ReconcileShopsStale`).
pub const STALE_AFTER_MS: i64 = 2 * 3600 * 1000;

/// How the default shop is named in a scheduled run's answer (its log lines carry no `shop`).
pub const DEFAULT_SHOP: &str = "(default)";

/// The default shop's target, when `RECONCILE=true`.
pub fn default_target(reconciler: &Reconciler) -> Option<Target> {
    let shop = reconciler.settings.default_shop.as_ref()?;
    Some(Target {
        shop: None,
        profile: Arc::clone(&reconciler.bridge.config.profile),
        slug: shop.slug.clone(),
        token: shop.token.clone(),
        s2s: shop.s2s,
        timezone: shop.timezone,
    })
}

/// A named shop's target, when its record has reconciliation on.
pub async fn shop_target(
    reconciler: &Reconciler,
    record: &ShopRecord,
) -> Result<Option<Target>, ReconcileError> {
    if !record.reconcile {
        return Ok(None);
    }
    let profile = record
        .profile()
        .map_err(|p| ReconcileError::Setup(format!("shop `{}`: {p}", record.name)))?;
    let Some(slug) = &record.shop_slug else {
        return Err(needs_slug_and_token(record));
    };
    Ok(Some(Target {
        shop: Some(record.name.clone()),
        profile: Arc::new(profile),
        slug: slug.clone(),
        token: shop_api_token(reconciler, record).await?,
        s2s: record.s2s,
        timezone: config::timezone(record.timezone.as_deref())
            .map_err(|p| ReconcileError::Setup(format!("shop `{}`: {p}", record.name)))?,
    }))
}

/// A named shop's Cartpanda API token: from the SSM parameter its record names, or in the clear
/// in a record written before tokens moved to SSM.
pub(crate) async fn shop_api_token(
    reconciler: &Reconciler,
    record: &ShopRecord,
) -> Result<Secret, ReconcileError> {
    if let Some(token) = &record.cartpanda_api_token {
        return Ok(Secret::new(token.clone()));
    }
    let (Some(parameter), Some(shops)) = (
        &record.cartpanda_api_token_parameter,
        &reconciler.bridge.shops,
    ) else {
        return Err(needs_slug_and_token(record));
    };
    shops
        .api_token(parameter)
        .await
        .map_err(|e| ReconcileError::Secret(format!("shop `{}`: {e}", record.name)))
}

fn needs_slug_and_token(record: &ShopRecord) -> ReconcileError {
    ReconcileError::Setup(format!(
        "shop `{}`: reconcile needs its Cartpanda slug and API token",
        record.name
    ))
}

/// A scheduled run's answer: each shop's summary, and the shops that need a look.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scheduled {
    pub shops: Vec<Summary>,
    /// Shops whose run failed (not the deadline) or whose setup failed; the default shop is
    /// [`DEFAULT_SHOP`].
    pub failed: Vec<String>,
    /// Shops with no complete run for [`STALE_AFTER_MS`].
    pub stale: Vec<String>,
    /// Shops whose webhooks went silent ([`silence`]).
    #[serde(default)]
    pub silent: Vec<String>,
    /// The days measured by this run's coverage passes ([`coverage`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub coverage: Vec<coverage::Coverage>,
    /// The shops' days whose RedTrack count this run checked ([`rtcount`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redtrack: Vec<rtcount::Count>,
    /// Shops another run was reconciling (their lease held): not run this time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub busy: Vec<String>,
}

/// The scheduled run: each reconciled shop once ([`shops::due_shops`]), from its watermark,
/// several at a time, each within its own budget and the invocation's deadline
/// ([`shops::each_shop`]; a shop not reached, or cut short, resumes next time). Ends with the EMF
/// line of `ReconcileShopsFailed` and `ReconcileShopsStale` (no shop dimension: the names are
/// in the log line and the answer).
pub async fn run_scheduled(
    reconciler: &Reconciler,
    deadline_ms: i64,
) -> Result<Scheduled, ReconcileError> {
    let due = shops::due_shops(reconciler).await?;
    let outcomes = shops::each_shop(reconciler, &due, deadline_ms).await;
    let mut out = Scheduled::default();
    for outcome in outcomes {
        if outcome.failed() {
            out.failed.push(outcome.name());
        }
        if outcome.stale() {
            out.stale.push(outcome.name());
        }
        if outcome.daily.silent {
            out.silent.push(outcome.name());
        }
        let name = outcome.name();
        out.coverage.extend(outcome.daily.coverage);
        out.redtrack.extend(outcome.daily.redtrack);
        match outcome.state {
            shops::ShopState::Ran(summary) => out.shops.push(*summary),
            shops::ShopState::Busy => out.busy.push(name),
            shops::ShopState::Off | shops::ShopState::Broken { .. } => {}
        }
    }
    if due.is_empty() {
        tracing::warn!("no shop has reconciliation on (RECONCILE=true, or a shop's --reconcile)");
    }
    report_shops(&out);
    Ok(out)
}

/// Whether a shop whose setup failed is stale too: by its watermark record's last complete run.
pub(crate) async fn broken_is_stale(reconciler: &Reconciler, name: &str) -> bool {
    let table = &reconciler.table;
    let now_ms = reconciler.bridge.clock.now_ms();
    watermark::get(table.client(), table.table(), Some(name))
        .await
        .is_ok_and(|mark| run::stale(&mark, now_ms))
}

/// The scheduled run's log line (shop names) and EMF line (counts only).
fn report_shops(out: &Scheduled) {
    if out.failed.is_empty() && out.stale.is_empty() && out.silent.is_empty() {
        tracing::info!(shops = out.shops.len(), "reconcile: every shop ran");
    } else {
        tracing::error!(failed = ?out.failed, stale = ?out.stale, silent = ?out.silent, "reconcile: shops need a look");
    }
    let line = shops_line(out);
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut stdout, format!("{line}\n").as_bytes());
}

/// The scheduled run's EMF line: `ReconcileShopsFailed`, `ReconcileShopsStale`, `ShopsSilent`.
pub fn shops_line(out: &Scheduled) -> String {
    run::emf(&[
        ("ReconcileShopsFailed", out.failed.len() as u64),
        ("ReconcileShopsStale", out.stale.len() as u64),
        ("ShopsSilent", out.silent.len() as u64),
    ])
}

/// The admin command: `reconcile --since <RFC 3339 time | 48h> [--shop NAME] [--dry-run]`, a
/// back-fill from `since` to now that neither reads nor moves the watermark. Without `--shop`
/// the default shop (which needs `RECONCILE=true`); a named shop needs `--reconcile` on.
pub async fn command(
    reconciler: &Reconciler,
    since: &str,
    shop: Option<&str>,
    dry_run: bool,
    deadline_ms: i64,
) -> Result<Summary, ReconcileError> {
    let now_s = reconciler.bridge.clock.now_ms() / 1000;
    let from_s = config::parse_since(since, now_s)
        .map_err(|e| ReconcileError::Usage(format!("--since {e}")))?;
    let target = match shop {
        None => default_target(reconciler).ok_or_else(|| ReconcileError::Usage(
            "the default shop is not reconciled: set RECONCILE=true, CARTPANDA_API_TOKEN and CARTPANDA_SHOP_SLUG, or name a shop with --shop".to_owned(),
        ))?,
        Some(name) => {
            let record = crate::shops::directory::ShopDirectory::get(&reconciler.table, name)
                .await
                .map_err(|e| ReconcileError::Ledger(e.to_string()))?
                .ok_or_else(|| ReconcileError::Usage(format!("no shop `{name}`")))?;
            shop_target(reconciler, &record).await?.ok_or_else(|| {
                ReconcileError::Usage(format!("shop `{name}` does not have reconciliation on (shop put … --reconcile true)"))
            })?
        }
    };
    let options = RunOptions {
        since: Since::From(from_s),
        dry_run,
        deadline_ms,
    };
    Ok(reconciler.run(&target, options).await)
}

/// Builds the reconciler from the environment: the bridge's configuration (`Config`), the
/// reconciliation settings, DynamoDB, RedTrack and the redrive queue as the webhook function has
/// them. Reconciliation authenticates no request: `WEBHOOK_TOKEN` and `WEBHOOK_TOKEN_PARAMETER`
/// are neither required nor read (the default profile gets a random token nobody knows).
pub async fn from_env(aws: &aws_config::SdkConfig) -> Result<Reconciler, String> {
    use crate::ops::config::{Config, Environment};
    use crate::postback::redtrack::{RedTrackClient, RetryPolicy};
    use crate::redrive::queue::{RedriveQueue, SqsQueue};
    let secrets = Arc::new(crate::ops::secrets::SsmSecrets::from_sdk(aws));
    let lookup = |name: &str| match name {
        "WEBHOOK_TOKEN" | "WEBHOOK_TOKEN_PARAMETER" => None,
        _ => std::env::var(name).ok(),
    };
    let env = Environment::read(lookup, secrets.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let unused_token = format!(
        "{:016x}{:016x}",
        crate::ops::clock::random_u64(),
        crate::ops::clock::random_u64()
    );
    let config = Config::from_lookup(|name| match name {
        "WEBHOOK_TOKEN" => Some(unused_token.clone()),
        _ => env.get(name),
    })
    .map_err(|e| e.to_string())?;
    crate::ops::config::warn_if_short_memory(config.ttl_days);
    let settings =
        config::ReconcileSettings::from_lookup(|name| env.get(name)).map_err(|e| e.to_string())?;
    let table = DynamoLedger::new(aws_sdk_dynamodb::Client::new(aws), config.table.clone());
    let tracker = RedTrackClient::new(config.redtrack_timeout, RetryPolicy::default())
        .map_err(|e| e.to_string())?;
    let queue = config.redrive_queue_url.clone().map(|url| {
        Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(aws), url)) as Arc<dyn RedriveQueue>
    });
    let lister = orders::OrderLister::new(settings.list.clone()).map_err(|e| e.to_string())?;
    let ledger = Arc::new(table.clone());
    let bridge = Bridge {
        config,
        ledger: ledger.clone(),
        tracker: Arc::new(tracker),
        clock: Arc::new(crate::ops::clock::SystemClock),
        queue,
        shops: Some(crate::shops::directory::ShopCache::new(ledger).with_secrets(secrets)),
        orders: None,
    };
    Ok(Reconciler {
        bridge: Arc::new(bridge),
        lister: Arc::new(lister),
        table,
        settings,
    })
}
