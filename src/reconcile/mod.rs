//! Reconciliation: the conversions no webhook brought. A scheduled run lists each reconciled
//! shop's paid orders from Cartpanda's order list ([`orders`]) since its watermark
//! ([`watermark`], less one run of overlap), turns every order into the conversions its paid and
//! upsell webhooks would have made — the same event IDs (the S2S ones for a shop fed by S2S) —
//! and hands them to the bridge's own claim → send path ([`run`]), so whichever of webhook and
//! reconciliation comes first sends, and the other finds the claim. Refunds and chargebacks are
//! reconciled only with an "updated since" filter (`CARTPANDA_ORDER_LIST_UPDATED_FILTER`).
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
pub mod orders;
pub mod run;
pub mod watermark;

use crate::bridge::Bridge;
use crate::inbound::auth::Secret;
use crate::ledger::dynamo::DynamoLedger;
use crate::shops::directory::ShopRecord;
use run::{Reconciler, RunOptions, Since, Summary, Target};
use std::sync::Arc;

/// The default shop's target, when `RECONCILE=true`.
pub fn default_target(reconciler: &Reconciler) -> Option<Target> {
    let shop = reconciler.settings.default_shop.as_ref()?;
    Some(Target {
        shop: None,
        profile: Arc::clone(&reconciler.bridge.config.profile),
        slug: shop.slug.clone(),
        token: shop.token.clone(),
        s2s: shop.s2s,
    })
}

/// A named shop's target, when its record has reconciliation on.
pub async fn shop_target(
    reconciler: &Reconciler,
    record: &ShopRecord,
) -> Result<Option<Target>, String> {
    if !record.reconcile {
        return Ok(None);
    }
    let profile = record
        .profile()
        .map_err(|p| format!("shop `{}`: {p}", record.name))?;
    let Some(slug) = &record.shop_slug else {
        return Err(format!(
            "shop `{}`: reconcile needs its Cartpanda slug and API token",
            record.name
        ));
    };
    Ok(Some(Target {
        shop: Some(record.name.clone()),
        profile: Arc::new(profile),
        slug: slug.clone(),
        token: shop_api_token(reconciler, record).await?,
        s2s: record.s2s,
    }))
}

/// A named shop's Cartpanda API token: from the SSM parameter its record names, or in the clear
/// in a record written before tokens moved to SSM.
async fn shop_api_token(reconciler: &Reconciler, record: &ShopRecord) -> Result<Secret, String> {
    if let Some(token) = &record.cartpanda_api_token {
        return Ok(Secret::new(token.clone()));
    }
    let (Some(parameter), Some(shops)) = (
        &record.cartpanda_api_token_parameter,
        &reconciler.bridge.shops,
    ) else {
        return Err(format!(
            "shop `{}`: reconcile needs its Cartpanda slug and API token",
            record.name
        ));
    };
    shops
        .api_token(parameter)
        .await
        .map_err(|e| format!("shop `{}`: {e}", record.name))
}

/// Every shop that has reconciliation on: the default one first, then named shops by name.
pub async fn targets(reconciler: &Reconciler) -> Result<Vec<Target>, String> {
    let mut out: Vec<Target> = default_target(reconciler).into_iter().collect();
    let shops = reconciler
        .table
        .list_shops()
        .await
        .map_err(|e| format!("could not list the shops: {e}"))?;
    for record in shops.iter().filter(|r| r.reconcile) {
        match shop_target(reconciler, record).await {
            Ok(Some(target)) => out.push(target),
            Ok(None) => {}
            Err(problem) => {
                tracing::error!(shop = %record.name, problem = %problem, "shop not reconciled")
            }
        }
    }
    Ok(out)
}

/// The scheduled run: each reconciled shop once, from its watermark, one after the other, all
/// within the invocation's deadline (a shop not reached resumes next time).
pub async fn run_scheduled(
    reconciler: &Reconciler,
    deadline_ms: i64,
) -> Result<Vec<Summary>, String> {
    let mut out = Vec::new();
    for target in targets(reconciler).await? {
        let options = RunOptions {
            since: Since::Watermark,
            dry_run: false,
            deadline_ms,
        };
        out.push(reconciler.run(&target, options).await);
    }
    if out.is_empty() {
        tracing::warn!("no shop has reconciliation on (RECONCILE=true, or a shop's --reconcile)");
    }
    Ok(out)
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
) -> Result<Summary, String> {
    let now_s = reconciler.bridge.clock.now_ms() / 1000;
    let from_s = config::parse_since(since, now_s).map_err(|e| format!("--since {e}"))?;
    let target = match shop {
        None => default_target(reconciler).ok_or(
            "the default shop is not reconciled: set RECONCILE=true, CARTPANDA_API_TOKEN and CARTPANDA_SHOP_SLUG, or name a shop with --shop",
        )?,
        Some(name) => {
            let record = reconciler
                .table
                .list_shops()
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|r| r.name == name)
                .ok_or_else(|| format!("no shop `{name}`"))?;
            shop_target(reconciler, &record).await?.ok_or_else(|| {
                format!("shop `{name}` does not have reconciliation on (shop put … --reconcile true)")
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
/// them.
pub async fn from_env(aws: &aws_config::SdkConfig) -> Result<Reconciler, String> {
    use crate::ops::config::{Config, Environment};
    use crate::postback::redtrack::{RedTrackClient, RetryPolicy};
    use crate::redrive::queue::{RedriveQueue, SqsQueue};
    let secrets = Arc::new(crate::ops::secrets::SsmSecrets::from_sdk(aws));
    let env = Environment::read(|name| std::env::var(name).ok(), secrets.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let config = Config::from_lookup(|name| env.get(name)).map_err(|e| e.to_string())?;
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
