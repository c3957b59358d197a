//! The path for one classified delivery: for each conversion, claim → render → send → record.
//! Talks to the world only through the [`Ledger`], [`Tracker`] and [`Clock`] it is given.

use crate::conversion::classify::Kind;
use crate::conversion::classify::{self, Conversion};
use crate::inbound::auth::Secret;
use crate::inbound::verify::{self, OrderSource, VerifyError};
use crate::inbound::webhook::Order;
use crate::ledger::claim::LedgerError;
use crate::ledger::claim::{Claim, ClaimOutcome, Finish, Ledger};
use crate::ops::clock::{Clock, random_u64};
use crate::ops::config::{Config, Profile};
use crate::postback::redtrack::Tracker;
use crate::postback::send::{Courier, QUEUED_KEEP_S, SendOutcome};
use crate::postback::values::MacroContext;
use crate::redrive::queue::{RedriveMessage, RedriveQueue};
use crate::shops::directory::ShopCache;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The configured bridge with its clients, built once at cold start.
pub struct Bridge {
    pub config: Config,
    pub ledger: Arc<dyn Ledger>,
    pub tracker: Arc<dyn Tracker>,
    pub clock: Arc<dyn Clock>,
    /// Where conversions go when RedTrack stays down for the whole invocation; without one they
    /// are released and the delivery answered 502.
    pub queue: Option<Arc<dyn RedriveQueue>>,
    /// Named stores (`POST /cartpanda/{store}`), read from the table; `None` serves the default
    /// store only.
    pub shops: Option<ShopCache>,
    /// Cartpanda's API, for stores that verify orders.
    pub orders: Option<Arc<dyn OrderSource>>,
}

/// What happened to one conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Sent,
    Duplicate,
    DryRun,
    Queued,
    InProgress,
    Conflict,
    Failed,
    /// Frozen as `store_unavailable`: metrics, alarms and log queries use the value.
    #[serde(rename = "store_unavailable")]
    LedgerUnavailable,
    NotAttempted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Duplicate => "duplicate",
            Outcome::DryRun => "dry_run",
            Outcome::Queued => "queued",
            Outcome::InProgress => "in_progress",
            Outcome::Conflict => "conflict",
            Outcome::Failed => "failed",
            Outcome::LedgerUnavailable => "store_unavailable",
            Outcome::NotAttempted => "not_attempted",
        }
    }
}

/// One entry of the response body.
#[derive(Debug, Clone, Serialize)]
pub struct ConversionReport {
    pub event_id: String,
    pub conversion_type: String,
    pub outcome: Outcome,
    /// True when the answer replays an earlier delivery's result instead of doing the work.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redtrack_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How long RedTrack took (all attempts), for the latency metric.
    #[serde(skip)]
    pub redtrack_ms: Option<u64>,
    /// A duplicate answered from this instance's memory of sent conversions, without a DynamoDB
    /// call (`crate::ledger::cache`): said by the decision log line and the metric only.
    #[serde(skip)]
    pub from_memory: bool,
}

/// Everything the delivery produced.
#[derive(Debug, Default)]
pub struct Report {
    pub conversions: Vec<ConversionReport>,
}

impl Report {
    fn any(&self, outcome: Outcome) -> bool {
        self.conversions.iter().any(|c| c.outcome == outcome)
    }

    /// The HTTP status for the whole delivery: the worst outcome decides.
    pub fn status(&self) -> u16 {
        if self.any(Outcome::LedgerUnavailable) {
            503
        } else if self.any(Outcome::Failed) {
            502
        } else if self.any(Outcome::Conflict) || self.any(Outcome::InProgress) {
            409
        } else if self.any(Outcome::Queued) {
            202
        } else {
            200
        }
    }

    /// Seconds to wait before redelivering, when a live lease blocked a conversion.
    pub fn retry_after_s(&self) -> Option<u64> {
        self.conversions
            .iter()
            .filter_map(|c| c.retry_after_s)
            .max()
    }
}

/// How long a delivery may take when the runtime gives no deadline (tests, local runs).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(15);

impl Bridge {
    /// Renders the postbacks of `conversions` without claiming or sending anything: the
    /// `?dry_run=1` request flag, and test orders when `SEND_TEST_ORDERS` is off.
    pub fn preview(
        &self,
        profile: &Profile,
        order_id: &str,
        order: &Order,
        conversions: &[Conversion<'_>],
    ) -> Report {
        let conversions = conversions
            .iter()
            .map(|conversion| {
                let mut entry = self.entry(conversion, Outcome::DryRun);
                entry.postback = Some(render(profile, order_id, order, conversion).into());
                entry
            })
            .collect();
        Report { conversions }
    }

    /// The store, tracker and clock, for one send.
    pub fn courier(&self) -> Courier<'_> {
        Courier {
            ledger: self.ledger.as_ref(),
            tracker: self.tracker.as_ref(),
            clock: self.clock.as_ref(),
            ttl_days: self.config.ttl_days,
        }
    }

    /// The profile of a named store (cached); `None` when there is no such store.
    pub async fn shop_profile(&self, name: &str) -> Result<Option<Arc<Profile>>, LedgerError> {
        match &self.shops {
            Some(cache) => cache.profile(name, self.clock.as_ref()).await,
            None => Ok(None),
        }
    }

    /// Re-reads the order from Cartpanda's API and compares it with the delivery.
    pub async fn verify(
        &self,
        order_id: &str,
        order: &Order,
        kind: Kind,
        token: &Secret,
    ) -> Result<(), VerifyError> {
        let template = &self.config.cartpanda_order_url;
        let slug = order
            .shop
            .as_ref()
            .and_then(|s| s.slug.get())
            .or_else(|| order.shop_info.as_ref().and_then(|s| s.slug.get()));
        let slug = match slug {
            Some(slug) => slug,
            None if template.contains("{shop_slug}") => {
                return Err(VerifyError::NoShop(order_id.to_owned()));
            }
            None => "",
        };
        let source = self
            .orders
            .as_ref()
            .ok_or_else(|| VerifyError::Unavailable("no Cartpanda API client".to_owned()))?;
        match source
            .fetch(&verify::order_url(template, slug, order_id), token)
            .await?
        {
            None => Err(VerifyError::NotFound(order_id.to_owned())),
            Some(api) => verify::compare(order_id, order, &api, kind),
        }
    }

    /// Processes the conversions of one order, in order, until DynamoDB fails.
    pub async fn process(
        &self,
        profile: &Profile,
        event: &str,
        order_id: &str,
        order: &Order,
        conversions: &[Conversion<'_>],
        deadline_ms: Option<i64>,
    ) -> Report {
        let now_ms = self.clock.now_ms();
        let deadline_ms = deadline_ms.unwrap_or(now_ms + DEFAULT_BUDGET.as_millis() as i64);
        let deadline = Instant::now()
            + Duration::from_millis(deadline_ms.saturating_sub(now_ms).max(0) as u64);
        let mut report = Report::default();
        let mut ledger_down = false;
        let cartx_test = classify::is_cartx_test(order);
        for conversion in conversions {
            let entry = if ledger_down {
                self.entry(conversion, Outcome::NotAttempted)
            } else {
                let started = Instant::now();
                let entry = self
                    .process_conversion(
                        profile,
                        event,
                        order_id,
                        order,
                        conversion,
                        deadline_ms,
                        deadline,
                    )
                    .await;
                tracing::info!(
                    shop = profile.shop.as_deref(),
                    order_id,
                    event,
                    event_id = %conversion.event_id,
                    conversion_type = %conversion.conversion_type,
                    outcome = entry.outcome.as_str(),
                    redtrack_status = entry.redtrack_status,
                    attempts = entry.attempts,
                    latency_ms = started.elapsed().as_millis() as u64,
                    cartx_test,
                    from_memory = entry.from_memory.then_some(true),
                    "conversion"
                );
                if entry.from_memory {
                    crate::ops::metrics::duplicate_from_memory();
                } else {
                    crate::ops::metrics::conversion(entry.outcome.as_str(), entry.redtrack_ms);
                }
                entry
            };
            ledger_down |= entry.outcome == Outcome::LedgerUnavailable;
            report.conversions.push(entry);
        }
        report
    }

    fn entry(&self, conversion: &Conversion<'_>, outcome: Outcome) -> ConversionReport {
        ConversionReport {
            event_id: conversion.event_id.clone(),
            conversion_type: conversion.conversion_type.clone(),
            outcome,
            replay: false,
            postback: None,
            redtrack_status: None,
            attempts: None,
            retry_after_s: None,
            message: None,
            redtrack_ms: None,
            from_memory: false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn process_conversion(
        &self,
        profile: &Profile,
        event: &str,
        order_id: &str,
        order: &Order,
        conversion: &Conversion<'_>,
        deadline_ms: i64,
        deadline: Instant,
    ) -> ConversionReport {
        let dry_run = self.config.dry_run;
        let now_ms = self.clock.now_ms();
        let claim = Claim {
            key: profile.record_key(&conversion.event_id, dry_run),
            fingerprint: classify::fingerprint(order, conversion),
            attempt: format!("{now_ms:x}-{:016x}", random_u64()),
            order_id: order_id.to_owned(),
            event: event.to_owned(),
            conversion_type: conversion.conversion_type.clone(),
            now_ms,
            lease_until_ms: deadline_ms.max(now_ms + 1000),
        };
        let mut entry = self.entry(conversion, Outcome::NotAttempted);
        match self.ledger.claim(&claim).await {
            Ok(ClaimOutcome::Claimed) => {}
            Ok(ClaimOutcome::AlreadySent { from_memory, .. }) => {
                entry.outcome = Outcome::Duplicate;
                entry.replay = true;
                entry.from_memory = from_memory;
                return entry;
            }
            Ok(ClaimOutcome::InProgress { lease_until_ms }) => {
                entry.outcome = Outcome::InProgress;
                entry.retry_after_s = Some(
                    ((lease_until_ms - now_ms).max(0) as u64)
                        .div_ceil(1000)
                        .max(1),
                );
                entry.message = Some(
                    "another delivery of this conversion is being processed; retry later"
                        .to_owned(),
                );
                return entry;
            }
            Ok(ClaimOutcome::Conflict) => {
                tracing::warn!(order_id, event_id = %conversion.event_id, "conflict: same event ID, different conversion");
                entry.outcome = Outcome::Conflict;
                entry.message = Some(
                    "this event ID was already recorded with a different click ID, type, sum or currency; not sent"
                        .to_owned(),
                );
                return entry;
            }
            Err(err) => {
                tracing::error!(order_id, event_id = %conversion.event_id, error = %err, "dedup store failed");
                entry.outcome = Outcome::LedgerUnavailable;
                return entry;
            }
        }

        let url = render(profile, order_id, order, conversion);
        let courier = self.courier();

        if dry_run {
            entry.outcome = Outcome::DryRun;
            courier
                .record(
                    &claim,
                    Finish::Sent,
                    i64::from(self.config.ttl_days) * 86_400,
                )
                .await;
            entry.postback = Some(url.into());
            return entry;
        }

        let sending = Instant::now();
        let sent = courier.send(&claim, &url, deadline).await;
        entry.redtrack_ms = Some(sending.elapsed().as_millis() as u64);
        match sent {
            SendOutcome::Accepted(accepted) => {
                entry.outcome = Outcome::Sent;
                entry.redtrack_status = Some(accepted.status);
                entry.attempts = Some(accepted.attempts);
            }
            SendOutcome::Refused(err) => {
                entry.outcome = Outcome::Failed;
                entry.redtrack_status = err.status();
                entry.attempts = Some(err.attempts());
                entry.message = Some(format!(
                    "{err}; not retried: check the postback URL and conversion type in RedTrack"
                ));
            }
            SendOutcome::Retryable(err) => {
                entry.redtrack_status = err.status();
                entry.attempts = Some(err.attempts());
                let message = RedriveMessage {
                    v: 1,
                    key: claim.key.clone(),
                    event_id: conversion.event_id.clone(),
                    fingerprint: claim.fingerprint.clone(),
                    order_id: order_id.to_owned(),
                    event: event.to_owned(),
                    conversion_type: conversion.conversion_type.clone(),
                    postback: url.into(),
                    first_failure_ms: self.clock.now_ms(),
                };
                let queued = match &self.queue {
                    Some(queue) => match queue.enqueue(&message, self.config.redrive_delay_s).await
                    {
                        Ok(()) => true,
                        Err(queue_err) => {
                            tracing::error!(order_id, event_id = %conversion.event_id, error = %queue_err, "could not queue for redrive");
                            false
                        }
                    },
                    None => false,
                };
                if queued {
                    courier.record(&claim, Finish::Queued, QUEUED_KEEP_S).await;
                    entry.outcome = Outcome::Queued;
                    entry.message = Some(format!("{err}; queued for redrive"));
                } else {
                    courier.release(&claim).await;
                    entry.outcome = Outcome::Failed;
                    entry.message = Some(format!("{err}; released for redelivery"));
                }
            }
        }
        entry
    }
}

/// The postback of one conversion, rendered from the store's template.
fn render(
    profile: &Profile,
    order_id: &str,
    order: &Order,
    conversion: &Conversion<'_>,
) -> url::Url {
    let context = MacroContext {
        order,
        order_id,
        conversion,
        random: random_u64() % 1_000_000_000,
        normalize: profile.normalize_pii,
    };
    profile.postback.render(|m| context.value(m))
}
