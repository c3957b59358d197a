//! One reconciliation run of one shop: list the window's orders page by page, turn each into the
//! conversions its webhooks would have made (same event IDs), and hand them to the bridge's own
//! [`Bridge::process`] — the same claim → render → send → record path as a webhook — so an order
//! that also arrives by webhook (before, during or after the run) is sent once.

use crate::bridge::{Bridge, Outcome, Report};
use crate::conversion::classify::{self, Decision};
use crate::conversion::clickid;
use crate::conversion::rules::{Conversion, Skip};
use crate::inbound::auth::Secret;
use crate::inbound::lenient::Text;
use crate::inbound::webhook::{Delivery, EventField, Order, OrderField};
use crate::ledger::dynamo::DynamoLedger;
use crate::ops::config::Profile;
use crate::reconcile::config::ReconcileSettings;
use crate::reconcile::orders::{ListError, OrderLister, Pass, Window};
use crate::reconcile::watermark::{self, Cursor, Mark};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A shop to reconcile.
#[derive(Debug, Clone)]
pub struct Target {
    /// `None` for the default shop.
    pub shop: Option<String>,
    pub profile: Arc<Profile>,
    /// The shop's Cartpanda slug.
    pub slug: String,
    /// Cartpanda's API token.
    pub token: Secret,
    /// Fed by S2S: upsells get the S2S event IDs (`<order>-upsell-s2s-<n>`).
    pub s2s: bool,
}

/// Where a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// From the shop's watermark (less one run of overlap), or its unfinished window; the
    /// scheduled runs. The watermark advances when the window is listed to the end.
    Watermark,
    /// From this time (epoch seconds) to now: a back-fill. The watermark is neither read nor
    /// moved.
    From(i64),
}

/// What to do.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub since: Since,
    /// List and classify, look each conversion up in the ledger, claim and send nothing, write
    /// nothing.
    pub dry_run: bool,
    /// The invocation's deadline (epoch milliseconds); the run stops taking orders
    /// `ReconcileSettings::margin` before it.
    pub deadline_ms: i64,
}

/// What a run did: logged, counted (EMF) and answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub shop: Option<String>,
    /// The window listed (`YYYY-MM-DD HH:MM:SS`, UTC).
    pub from: String,
    pub to: String,
    pub pages: u32,
    pub orders_seen: u64,
    /// Conversions this run found not yet recorded and claimed: sent, queued or failed.
    pub missing: u64,
    pub sent: u64,
    pub queued: u64,
    pub failed: u64,
    /// Conversions already recorded (sent by a webhook or an earlier run).
    pub already_sent: u64,
    /// Conversions a concurrent webhook delivery was processing at that moment.
    pub in_progress: u64,
    /// Same event ID, another click ID / type / sum / currency: not sent (see the logs).
    pub conflicts: u64,
    /// Dry run: conversions that would have been sent.
    pub would_send: u64,
    pub skipped_no_click_id: u64,
    pub skipped_test: u64,
    /// Orders created longer ago than the ledger's memory (`DEDUP_TTL_DAYS`): never sent.
    #[serde(default)]
    pub skipped_too_old: u64,
    /// Orders whose conversions could not be built (classification refused them).
    pub unusable: u64,
    /// The window was listed to the end.
    pub complete: bool,
    /// Why the run stopped early (`deadline`, or an error of the order list or the ledger).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// The reconciler of a deployment: the bridge it sends through, the order list, the table.
pub struct Reconciler {
    pub bridge: Arc<Bridge>,
    pub lister: Arc<OrderLister>,
    /// The ledger's table (watermarks, notes, dry-run look-ups).
    pub table: DynamoLedger,
    pub settings: ReconcileSettings,
}

enum Stop {
    Deadline,
    Failed(String),
}

impl Reconciler {
    /// Runs one shop once: its window, the window's pages (each order sent), its watermark.
    pub async fn run(&self, target: &Target, options: RunOptions) -> Summary {
        let now_ms = self.bridge.clock.now_ms();
        let stop_at = self.stop_at(options.deadline_ms, now_ms);
        let shop = target.shop.as_deref();
        let mut summary = Summary {
            shop: target.shop.clone(),
            ..Summary::default()
        };
        let uses_mark = options.since == Since::Watermark;
        let mark = if uses_mark {
            match watermark::get(self.table.client(), self.table.table(), shop).await {
                Ok(mark) => mark,
                Err(err) => {
                    summary.stopped = Some(format!("ledger: {err}"));
                    self.finish(&summary);
                    return summary;
                }
            }
        } else {
            Mark::default()
        };
        let mut cursor = self.start(options.since, mark, now_ms / 1000);
        summary.from = crate::inbound::datetime::format_utc(cursor.window.from_s);
        summary.to = crate::inbound::datetime::format_utc(cursor.window.to_s);
        let stop = if cursor.window.to_s <= cursor.window.from_s {
            None
        } else {
            self.list(target, options, &mut cursor, stop_at, &mut summary)
                .await
        };
        match &stop {
            None => summary.complete = true,
            Some(Stop::Deadline) => summary.stopped = Some("deadline".to_owned()),
            Some(Stop::Failed(why)) => summary.stopped = Some(why.clone()),
        }
        if uses_mark && !options.dry_run {
            self.advance(shop, mark, cursor, stop.is_none(), &mut summary)
                .await;
        }
        self.finish(&summary);
        summary
    }

    /// When a run stops taking orders: [`ReconcileSettings::margin`] before the deadline.
    fn stop_at(&self, deadline_ms: i64, now_ms: i64) -> Instant {
        let left_ms = deadline_ms - now_ms - self.settings.margin.as_millis() as i64;
        Instant::now() + Duration::from_millis(left_ms.max(0) as u64)
    }

    /// Where a run starts: a back-fill's window; else the unfinished window's cursor, or a new
    /// window from the watermark less the overlap (the first lookback without one). Windows end
    /// [`ReconcileSettings::settle`] before `now_s`.
    fn start(&self, since: Since, mark: Mark, now_s: i64) -> Cursor {
        let to_s = now_s - self.settings.settle.as_secs() as i64;
        let first_page = |window| Cursor {
            window,
            pass: Pass::Created,
            page: 1,
        };
        match (since, mark.cursor) {
            (Since::From(from_s), _) => first_page(Window { from_s, to_s }),
            // One page early: orders paid since may have shifted the list by a few places.
            (Since::Watermark, Some(cursor)) => Cursor {
                page: cursor.page.saturating_sub(1).max(1),
                ..cursor
            },
            (Since::Watermark, None) => {
                let from_s = match mark.watermark_s {
                    Some(w) => w - self.settings.overlap.as_secs() as i64,
                    None => to_s - self.settings.first_lookback.as_secs() as i64,
                };
                first_page(Window { from_s, to_s })
            }
        }
    }

    /// Records where the shop stands: a window listed to the end moves the watermark to its
    /// end; an unfinished one keeps the watermark and saves the cursor to resume from.
    async fn advance(
        &self,
        shop: Option<&str>,
        mark: Mark,
        cursor: Cursor,
        complete: bool,
        summary: &mut Summary,
    ) {
        let next = if complete {
            Mark {
                watermark_s: Some(cursor.window.to_s.max(mark.watermark_s.unwrap_or(i64::MIN))),
                cursor: None,
            }
        } else {
            Mark {
                watermark_s: mark.watermark_s,
                cursor: Some(cursor),
            }
        };
        let now_ms = self.bridge.clock.now_ms();
        if let Err(err) =
            watermark::put(self.table.client(), self.table.table(), shop, &next, now_ms).await
        {
            tracing::error!(shop, error = %err, "could not record the reconciliation watermark");
            summary.stopped.get_or_insert(format!("ledger: {err}"));
        }
    }

    /// The window's pages from `cursor` on, each order sent; the created pass, then the updated
    /// one when there is an "updated since" filter. `cursor` ends where the listing stopped.
    async fn list(
        &self,
        target: &Target,
        options: RunOptions,
        cursor: &mut Cursor,
        stop_at: Instant,
        summary: &mut Summary,
    ) -> Option<Stop> {
        loop {
            if Instant::now() >= stop_at {
                return Some(Stop::Deadline);
            }
            let listed = self
                .lister
                .page(
                    &target.slug,
                    &target.token,
                    cursor.pass,
                    cursor.window,
                    cursor.page,
                    stop_at,
                )
                .await;
            let listed = match listed {
                Ok(listed) => listed,
                Err(ListError::Deadline) => return Some(Stop::Deadline),
                Err(err) => {
                    tracing::error!(shop = target.shop.as_deref(), pass = cursor.pass.as_str(), page = cursor.page, error = %err, "order list failed; the run resumes from here next time");
                    return Some(Stop::Failed(err.to_string()));
                }
            };
            summary.pages += 1;
            for order in &listed.orders {
                if Instant::now() >= stop_at {
                    return Some(Stop::Deadline);
                }
                if let Err(why) = self
                    .order(target, options, cursor.pass, order, summary)
                    .await
                {
                    return Some(Stop::Failed(why));
                }
            }
            if listed.orders.is_empty()
                || cursor.page >= listed.last_page
                || cursor.page >= MAX_PAGES
            {
                if cursor.pass == Pass::Created && self.lister.settings.updated_filter.is_some() {
                    cursor.pass = Pass::Updated;
                    cursor.page = 1;
                    continue;
                }
                return None;
            }
            cursor.page += 1;
        }
    }

    /// One listed order: its conversions, claimed and sent through the bridge (looked up only,
    /// on a dry run).
    async fn order(
        &self,
        target: &Target,
        options: RunOptions,
        pass: Pass,
        value: &serde_json::Value,
        summary: &mut Summary,
    ) -> Result<(), String> {
        summary.orders_seen += 1;
        let Some(probe) = delivery(value, "order.paid", target) else {
            summary.unusable += 1;
            return Ok(());
        };
        let events: Vec<&str> = match pass {
            Pass::Created => vec!["order.paid", "order.upsell"],
            Pass::Updated => updated_events(order_of(&probe)),
        };
        let profile = target.profile.as_ref();
        let mut noted = false;
        for event in events {
            let Some(delivery) = delivery(value, event, target) else {
                continue;
            };
            let classified = match classify::classify(&delivery, &profile.rules) {
                Ok(c) => self.bridge.age_rule(c),
                Err(reject) => {
                    tracing::warn!(shop = target.shop.as_deref(), event, reason = %reject, "reconcile: listed order unusable");
                    summary.unusable += 1;
                    break;
                }
            };
            let order_id = classified.order_id.clone().unwrap_or_default();
            match (&classified.decision, classified.order) {
                (Decision::Convert(conversions), Some(_)) if options.dry_run => {
                    self.look_up(profile, conversions, summary).await?;
                }
                (Decision::Convert(conversions), Some(order)) => {
                    let deadline_ms = options.deadline_ms;
                    let report = self
                        .send(profile, event, &order_id, order, conversions, deadline_ms)
                        .await;
                    count(&report, summary)?;
                }
                (Decision::Skip(skip @ (Skip::NoClickId | Skip::TooOld { .. })), _) if !noted => {
                    noted = true;
                    self.not_sent(target, options, &order_id, event, *skip, summary)
                        .await;
                }
                // A test order counts by its sale (not again by its upsells), and by each refund
                // or chargeback of the updated pass.
                (Decision::Skip(Skip::TestOrder), _)
                    if event == "order.paid" || pass == Pass::Updated =>
                {
                    summary.skipped_test += 1;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Dry run: whether each conversion is already recorded as sent, or would be sent.
    async fn look_up(
        &self,
        profile: &Profile,
        conversions: &[Conversion<'_>],
        summary: &mut Summary,
    ) -> Result<(), String> {
        for conversion in conversions {
            let key = profile.record_key(&conversion.event_id, false);
            match self.recorded(&key).await {
                Ok(true) => summary.already_sent += 1,
                Ok(false) => summary.would_send += 1,
                Err(err) => return Err(format!("ledger: {err}")),
            }
        }
        Ok(())
    }

    /// A listed order's conversions through [`Bridge::process`].
    async fn send(
        &self,
        profile: &Profile,
        event: &str,
        order_id: &str,
        order: &Order,
        conversions: &[Conversion<'_>],
        run_deadline_ms: i64,
    ) -> Report {
        // Each order's claims are leased for a short while, not the whole run: a run that
        // dies leaves no claim that blocks a webhook for long.
        let deadline_ms = (self.bridge.clock.now_ms() + ORDER_BUDGET_MS).min(run_deadline_ms);
        self.bridge
            .process(
                profile,
                event,
                order_id,
                order,
                conversions,
                Some(deadline_ms),
            )
            .await
    }

    /// An order without a click ID, or older than the ledger's memory: counted and logged, and
    /// a note left unless on a dry run.
    async fn not_sent(
        &self,
        target: &Target,
        options: RunOptions,
        order_id: &str,
        event: &str,
        skip: Skip,
        summary: &mut Summary,
    ) {
        let too_old = matches!(skip, Skip::TooOld { .. });
        if too_old {
            summary.skipped_too_old += 1;
        } else {
            summary.skipped_no_click_id += 1;
        }
        tracing::info!(
            shop = target.shop.as_deref(),
            order_id,
            event,
            outcome = "skipped",
            reason = skip.code(),
            "reconcile: order not sent"
        );
        match (options.dry_run, too_old) {
            (true, _) => {}
            (false, true) => {
                let shop = target.shop.as_deref();
                self.bridge.note_too_old(shop, order_id, event).await;
            }
            (false, false) => self.note(target, order_id, event).await,
        }
    }

    async fn note(&self, target: &Target, order_id: &str, event: &str) {
        let note = crate::ledger::notes::Note::no_click_id(
            target.shop.as_deref(),
            order_id,
            event,
            self.bridge.clock.now_ms(),
            self.settings.keep_days,
        );
        crate::ledger::notes::leave(self.bridge.ledger.as_ref(), &note).await;
    }

    /// Whether a conversion's record says it was sent.
    async fn recorded(&self, key: &str) -> Result<bool, String> {
        let out = self
            .table
            .client()
            .get_item()
            .table_name(self.table.table())
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(key.to_owned()),
            )
            .send()
            .await
            .map_err(|e| {
                aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&e)
                    .unwrap_or("request failed")
                    .to_owned()
            })?;
        Ok(out.item.is_some_and(|item| {
            let now_s = self.bridge.clock.now_ms() / 1000;
            let status = item.get("status").and_then(|v| v.as_s().ok());
            let expires = item
                .get("expires_at")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(i64::MAX);
            status.is_some_and(|s| s == crate::ledger::claim::STATUS_SENT) && expires >= now_s
        }))
    }

    /// The run's log line and metrics.
    fn finish(&self, summary: &Summary) {
        tracing::info!(
            shop = summary.shop.as_deref(),
            from = %summary.from,
            to = %summary.to,
            pages = summary.pages,
            orders_seen = summary.orders_seen,
            missing = summary.missing,
            sent = summary.sent,
            queued = summary.queued,
            failed = summary.failed,
            already_sent = summary.already_sent,
            in_progress = summary.in_progress,
            conflicts = summary.conflicts,
            would_send = summary.would_send,
            skipped_no_click_id = summary.skipped_no_click_id,
            skipped_too_old = summary.skipped_too_old,
            skipped_test = summary.skipped_test,
            unusable = summary.unusable,
            complete = summary.complete,
            stopped = summary.stopped.as_deref(),
            "reconcile run"
        );
        let mut out = std::io::stdout().lock();
        let _ =
            std::io::Write::write_all(&mut out, format!("{}\n", metrics_line(summary)).as_bytes());
    }
}

/// The budget of an admin back-fill (`reconcile --since`).
pub const CLI_BUDGET_MS: i64 = 60 * 60 * 1000;

/// The lease (and RedTrack's time) of one order's conversions.
pub const ORDER_BUDGET_MS: i64 = 30_000;

/// Most pages one pass reads (a runaway `last_page` cannot keep a run going).
pub const MAX_PAGES: u32 = 10_000;

/// The EMF line of a run: `ReconcileOrders`, `ReconcileMissing`, `ReconcileSent`,
/// `ReconcileAlreadySent`, `ReconcileNoClickId`, `ReconcileFailed` and `ReconcileIncomplete`,
/// without dimensions (the alarm and the dashboard read the totals).
pub fn metrics_line(summary: &Summary) -> String {
    let metrics = [
        ("ReconcileOrders", summary.orders_seen),
        ("ReconcileMissing", summary.missing),
        ("ReconcileSent", summary.sent),
        ("ReconcileAlreadySent", summary.already_sent),
        ("ReconcileNoClickId", summary.skipped_no_click_id),
        ("ReconcileFailed", summary.failed + summary.queued),
        ("ReconcileIncomplete", u64::from(!summary.complete)),
    ];
    let mut doc = serde_json::Map::new();
    for (name, value) in metrics {
        doc.insert(name.to_owned(), serde_json::json!(value));
    }
    doc.insert(
        "_aws".to_owned(),
        serde_json::json!({
            "Timestamp": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            "CloudWatchMetrics": [{
                "Namespace": crate::ops::metrics::NAMESPACE,
                "Dimensions": [[]],
                "Metrics": metrics
                    .iter()
                    .map(|(name, _)| serde_json::json!({"Name": name, "Unit": "Count"}))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    serde_json::Value::Object(doc).to_string()
}

/// Adds a listed order's outcomes to the run's counts; the ledger unavailable stops the run.
fn count(report: &Report, summary: &mut Summary) -> Result<(), String> {
    for entry in &report.conversions {
        match entry.outcome {
            Outcome::Sent | Outcome::DryRun => {
                summary.missing += 1;
                summary.sent += 1;
            }
            Outcome::Queued => {
                summary.missing += 1;
                summary.queued += 1;
            }
            Outcome::Failed => {
                summary.missing += 1;
                summary.failed += 1;
            }
            Outcome::Duplicate => summary.already_sent += 1,
            Outcome::InProgress => summary.in_progress += 1,
            Outcome::Conflict => summary.conflicts += 1,
            Outcome::LedgerUnavailable => {
                return Err("ledger: DynamoDB unavailable".to_owned());
            }
            Outcome::NotAttempted => {}
        }
    }
    Ok(())
}

fn order_of(delivery: &Delivery) -> Option<&Order> {
    match &delivery.order {
        OrderField::Object(order) => Some(order),
        _ => None,
    }
}

/// The refund and chargeback events an updated order stands for.
fn updated_events(order: Option<&Order>) -> Vec<&'static str> {
    let Some(order) = order else {
        return Vec::new();
    };
    let status = order.status_id.get().unwrap_or("").to_ascii_lowercase();
    let mut events = Vec::new();
    if !order.refunds.is_empty()
        || status.contains("refund")
        || order.line_items.iter().any(|i| i.is_refunded.0)
    {
        events.push("order.refunded");
    }
    if order.chargeback_received.0 || status.contains("chargeback") {
        events.push("order.chargeback");
    }
    events
}

/// A listed order as the delivery of `event` would carry it, click ID resolved; an S2S shop's
/// upsell lines take the S2S line IDs (`s2s-<n>`), so the event IDs are the S2S input's.
fn delivery(value: &serde_json::Value, event: &str, target: &Target) -> Option<Delivery> {
    let mut order = Order::deserialize(value).ok()?;
    if target.s2s {
        s2s_line_ids(&mut order);
    }
    clickid::apply(&mut order, &target.profile.click_id_sources);
    Some(Delivery {
        event: EventField::Name(event.to_owned()),
        order: OrderField::Object(Box::new(order)),
    })
}

/// The line IDs the S2S input gives upsells: `s2s-<n>`, `n` the number in `up_sell_type`
/// (`Upsell 2` → 2), else the upsell's position; see [`crate::inbound::s2s`].
pub fn s2s_line_ids(order: &mut Order) {
    let mut position = 0;
    for item in order.line_items.iter_mut().filter(|i| i.is_upsell()) {
        position += 1;
        let number: String = item
            .up_sell_type
            .get()
            .unwrap_or("")
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let number = number
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(position);
        item.id = Text(Some(format!("s2s-{number}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s2s_shops_get_s2s_upsell_ids() {
        let mut order: Order = serde_json::from_value(serde_json::json!({
            "id": 5, "line_items": [
                {"id": 1, "up_sell_id": 0},
                {"id": 2, "up_sell_id": 7, "up_sell_type": "Upsell 2"},
                {"id": 3, "up_sell_id": 8, "up_sell_type": "Downsell"}
            ]
        }))
        .unwrap();
        s2s_line_ids(&mut order);
        let ids: Vec<_> = order.line_items.iter().map(|i| i.id.get()).collect();
        assert_eq!(ids, [Some("1"), Some("s2s-2"), Some("s2s-2")]);
    }

    #[test]
    fn updated_orders_stand_for_their_refunds_and_chargebacks() {
        let order = |v: serde_json::Value| -> Order { serde_json::from_value(v).unwrap() };
        assert_eq!(
            updated_events(Some(&order(
                serde_json::json!({"id": 1, "status_id": "Refunded"})
            ))),
            ["order.refunded"]
        );
        assert_eq!(
            updated_events(Some(&order(
                serde_json::json!({"id": 1, "chargeback_received": 1})
            ))),
            ["order.chargeback"]
        );
        assert!(
            updated_events(Some(&order(
                serde_json::json!({"id": 1, "status_id": "New"})
            )))
            .is_empty()
        );
    }

    #[test]
    fn the_metrics_line_is_emf() {
        let summary = Summary {
            orders_seen: 3,
            missing: 2,
            sent: 2,
            complete: true,
            ..Summary::default()
        };
        let v: serde_json::Value = serde_json::from_str(&metrics_line(&summary)).unwrap();
        assert_eq!(v["ReconcileMissing"], 2);
        assert_eq!(v["ReconcileIncomplete"], 0);
        let d = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["Namespace"], "CartpandaRedTrack");
        assert_eq!(d["Metrics"].as_array().unwrap().len(), 7);
    }
}
