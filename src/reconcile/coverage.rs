//! Coverage: did every sale of a shop's day reach RedTrack? Once a day per reconciled shop, the
//! scheduled run lists the orders paid the day before (the shop's day, [`previous_day`]) from
//! Cartpanda's order list and checks each **distinct order** in the ledger (BatchGetItem of its
//! purchase record, its notes and its refusal record):
//!
//! - **covered**: its purchase recorded `SENT` or `QUEUED` (waiting in the redrive queue);
//! - **covered as noted**: a test order, or noted in the ledger as without a click ID, too old
//!   for the ledger's memory, or refused (422);
//! - **uncovered**: neither (no record, `FAILED`, still in progress). Their order IDs go to the
//!   log (never PII).
//!
//! The figures go out as the EMF metrics `OrdersPaid`, `OrdersCovered` (covered, noted
//! included) and `OrdersUncovered`, without a shop dimension (CloudWatch sums them over shops;
//! the `OrdersUncovered` alarm fires above `COVERAGE_ALARM_ORDERS` a day), and are stored per
//! shop and day in the table (`coverage#<shop or default>#<day>`, attributes `kind` =
//! `coverage`, `day`, `from_s`, `to_s`, `day_end_ms`, `paid`, `covered`, `noted`, `uncovered`,
//! `measured_at_ms`, `expires_at`) for the report. A shop without reconciliation has no such
//! record: the report says "not measured", never 100 %.
//!
//! The pass runs in the first scheduled run that listed its window to the end
//! [`AFTER_DAY_END_S`] after the day ended (the day's webhooks, reconciliation and first retries
//! have had their chance) and whose day has no coverage record yet; a pass that fails or runs out
//! of time stores nothing and the next run does it again.

use crate::conversion::classify::{self, Decision};
use crate::conversion::rules::{self, Kind, Skip};
use crate::inbound::webhook::Order;
use crate::inbound::zone::Zone;
use crate::ledger::claim::{LedgerError, STATUS_QUEUED, STATUS_SENT};
use crate::ledger::dynamo::{get_n, get_s, ledger_error};
use crate::ledger::{keys, notes};
use crate::reconcile::error::ReconcileError;
use crate::reconcile::orders::{ListError, ListTimes, PageRequest, Paging, Pass, Window};
use crate::reconcile::run::{self, MAX_PAGES, Reconciler, Target};
use aws_sdk_dynamodb::types::{AttributeValue as V, KeysAndAttributes};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// How long after a shop's day ended its coverage is measured, at the earliest.
pub const AFTER_DAY_END_S: i64 = 2 * 3600;

/// Most uncovered order IDs one log line names.
const LOGGED_IDS: usize = 200;

/// A shop's day: its date and its UTC bounds (both inclusive, seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopDay {
    /// `YYYY-MM-DD`, in the shop's zone.
    pub day: String,
    pub from_s: i64,
    pub to_s: i64,
}

/// The one place that says in which zone a shop's day runs: the zone its order list's times are
/// written in (`zone`: the one its listed orders showed, else its configured one), else UTC; the
/// day before `now_s`, as UTC bounds (the zone's offset at `now_s` moves them).
pub fn previous_day(zone: Option<&Zone>, now_s: i64) -> ShopDay {
    let offset_s = zone.map_or(0, |zone| i64::from(zone.offset_at(now_s)));
    day_before(offset_s, now_s)
}

/// The day before `now_s` in a zone `offset_s` seconds ahead of UTC, as UTC bounds.
fn day_before(offset_s: i64, now_s: i64) -> ShopDay {
    let local_start = (now_s + offset_s).div_euclid(86_400) * 86_400 - 86_400;
    let from_s = local_start - offset_s;
    ShopDay {
        day: crate::inbound::datetime::format_utc(local_start)[..10].to_owned(),
        from_s,
        to_s: from_s + 86_399,
    }
}

/// A listed order's ID when it counts for `day`: not saying it is unpaid (the list's filter asks
/// for paid orders; one without `payment_status`, or with a code nobody explains, is taken as the
/// list gives it), and created within the day, or without a readable `created_at`.
fn in_day(order: &serde_json::Value, zone: Option<&Zone>, day: &ShopDay) -> Option<String> {
    if let Ok(read) = Order::deserialize(order) {
        let unpaid = matches!(
            rules::payment(&read),
            rules::Payment::Pending | rules::Payment::Cancelled
        );
        let created_s = rules::created_s(&read, zone);
        if unpaid || created_s.is_some_and(|s| s < day.from_s || s > day.to_s) {
            return None;
        }
    }
    run::order_id_of(order)
}

/// One shop's day, measured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// `None` for the default shop.
    pub shop: Option<String>,
    pub day: String,
    /// Distinct orders paid that day.
    pub paid: u64,
    /// Their purchase sent or queued, or noted (test, no click ID, too old, refused).
    pub covered: u64,
    /// Of the covered: noted.
    pub noted: u64,
    pub uncovered: u64,
    /// The uncovered orders' IDs.
    pub uncovered_orders: Vec<String>,
}

/// What the ledger says of one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Covered,
    Noted(&'static str),
    Uncovered(&'static str),
}

/// The ledger records that can cover one order: its purchase's record (when its order makes
/// one), its notes and its refusal record; and whether it is a test order (which leaves none).
struct Probe {
    order_id: String,
    purchase: Option<String>,
    test: bool,
    others: [(String, &'static str); 3],
}

impl Probe {
    fn keys(&self) -> impl Iterator<Item = &String> {
        self.purchase
            .iter()
            .chain(self.others.iter().map(|(k, _)| k))
    }

    /// What the records read say: the purchase first, then a test order, then a note.
    fn judge(&self, found: &HashMap<String, HashMap<String, V>>) -> Found {
        let status = self
            .purchase
            .as_ref()
            .and_then(|k| found.get(k))
            .map(|item| get_s(item, "status"));
        match status.as_deref() {
            Some(STATUS_SENT | STATUS_QUEUED) => return Found::Covered,
            _ if self.test => return Found::Noted("test_order"),
            _ => {}
        }
        if let Some((_, reason)) = self.others.iter().find(|(k, _)| found.contains_key(k)) {
            return Found::Noted(reason);
        }
        match status.as_deref() {
            None => Found::Uncovered("no_record"),
            Some(crate::ledger::claim::STATUS_FAILED) => Found::Uncovered("failed"),
            Some(_) => Found::Uncovered("in_progress"),
        }
    }
}

impl Reconciler {
    /// The shop's daily coverage pass, when it is due: measured, logged, counted and stored.
    /// `None` when not due, or when it failed (logged; the next run tries again).
    /// `zone`: the zone the shop's run wrote its filters in (its [`crate::reconcile::run::Summary`]'s
    /// `timezone`), else its configured one.
    pub async fn coverage(
        &self,
        target: &Target,
        zone: Option<&'static Zone>,
        deadline_ms: i64,
    ) -> Option<Coverage> {
        let now_ms = self.bridge.clock.now_ms();
        let day = previous_day(zone, now_ms / 1000);
        let shop = target.shop.as_deref();
        let measured = async {
            if now_ms / 1000 < day.to_s + 1 + AFTER_DAY_END_S || self.measured(shop, &day).await? {
                return Ok(None);
            }
            let stop_at = Instant::now()
                + Duration::from_millis(
                    (deadline_ms - now_ms - self.settings.margin.as_millis() as i64).max(0) as u64,
                );
            let coverage = self.measure(target, zone, &day, stop_at).await?;
            if !self.store(&coverage, &day).await? {
                tracing::info!(shop, day = %day.day, "coverage: the day was measured by another run meanwhile; not counted twice");
                return Ok(None);
            }
            Ok::<_, ReconcileError>(Some(coverage))
        };
        match measured.await {
            Ok(Some(coverage)) => {
                self.announce(&coverage);
                Some(coverage)
            }
            Ok(None) => None,
            Err(ReconcileError::Cartpanda(ListError::Deadline)) => {
                tracing::warn!(shop, day = %day.day, "coverage: no time left to measure the day; the next run does");
                None
            }
            Err(err) => {
                tracing::error!(shop, day = %day.day, error = %err, retryable = err.retryable(), "coverage: the day could not be measured; the next run tries again");
                None
            }
        }
    }

    /// Whether the day's coverage is stored already.
    async fn measured(&self, shop: Option<&str>, day: &ShopDay) -> Result<bool, ReconcileError> {
        let key = keys::coverage(shop, &day.day);
        Ok(self.table.read(&key).await?.is_some())
    }

    /// Lists the day's paid orders and judges each distinct one by its ledger records.
    async fn measure(
        &self,
        target: &Target,
        zone: Option<&'static Zone>,
        day: &ShopDay,
        stop_at: Instant,
    ) -> Result<Coverage, ReconcileError> {
        let orders = self.paid_orders(target, zone, day, stop_at).await?;
        let probes: Vec<Probe> = orders
            .iter()
            .map(|(id, value)| self.probe(target, id, value))
            .collect();
        let keys: Vec<String> = probes.iter().flat_map(Probe::keys).cloned().collect();
        let found = read_many(self.table.client(), self.table.table(), &keys).await?;
        let mut coverage = Coverage {
            shop: target.shop.clone(),
            day: day.day.clone(),
            paid: probes.len() as u64,
            ..Coverage::default()
        };
        for probe in &probes {
            match probe.judge(&found) {
                Found::Covered => coverage.covered += 1,
                Found::Noted(_) => {
                    coverage.covered += 1;
                    coverage.noted += 1;
                }
                Found::Uncovered(why) => {
                    coverage.uncovered += 1;
                    coverage.uncovered_orders.push(probe.order_id.clone());
                    tracing::info!(shop = target.shop.as_deref(), day = %day.day, order_id = %probe.order_id, found = why, "coverage: order not covered");
                }
            }
        }
        Ok(coverage)
    }

    /// The distinct paid orders the list gives for the day, by order ID: the filters written in
    /// `zone` (widened 14 h each side while it is unknown), and only the orders created within
    /// the day as [`rules::created_s`] reads them (a widened list gives its neighbours' too).
    async fn paid_orders(
        &self,
        target: &Target,
        zone: Option<&'static Zone>,
        day: &ShopDay,
        stop_at: Instant,
    ) -> Result<BTreeMap<String, serde_json::Value>, ReconcileError> {
        let times = ListTimes {
            zone,
            widen: zone.is_none(),
        };
        let window = Window {
            from_s: day.from_s,
            to_s: day.to_s,
        };
        let (mut orders, mut paging) = (BTreeMap::new(), Paging::default());
        for page in 1..=MAX_PAGES {
            let (slug, token) = (&target.slug, &target.token);
            let request = PageRequest {
                pass: Pass::Created,
                window,
                page,
                times,
            };
            let listed = self.lister.page(slug, token, &request, stop_at).await?;
            let more = paging.more(page, &listed);
            for order in listed.orders {
                if let Some(id) = in_day(&order, zone, day) {
                    orders.entry(id).or_insert(order);
                }
            }
            if !more {
                break;
            }
        }
        Ok(orders)
    }

    /// The records that can cover a listed order: its purchase's (as its `order.paid` webhook
    /// would have made it), its notes and its refusal.
    fn probe(&self, target: &Target, order_id: &str, value: &serde_json::Value) -> Probe {
        let profile = target.profile.as_ref();
        let dry_run = self.bridge.config.dry_run;
        let shop = target.shop.as_deref();
        let delivery = run::delivery(value, "order.paid", target);
        let decision = delivery
            .as_ref()
            .and_then(|d| classify::classify(d, &profile.rules).ok())
            .map(|c| c.decision);
        let purchase = match &decision {
            Some(Decision::Convert(conversions)) => conversions
                .iter()
                .find(|c| c.kind == Kind::Purchase)
                .map(|c| profile.record_key(&c.event_id, dry_run)),
            _ => None,
        };
        Probe {
            order_id: order_id.to_owned(),
            purchase,
            test: matches!(decision, Some(Decision::Skip(Skip::TestOrder))),
            others: [
                (
                    keys::note(shop, order_id, notes::NO_CLICK_ID),
                    "no_click_id",
                ),
                (keys::note(shop, order_id, notes::TOO_OLD), "too_old"),
                (keys::refusal(shop, order_id, "order.paid"), "refused"),
            ],
        }
    }

    /// Stores the day's figures for the report (a later measure of the same day replaces them).
    /// Stores the measured day; `false` when another run stored it first (two of a shop's queue
    /// messages overlapping after its lease: the day is counted once, by the run that stored it).
    async fn store(&self, c: &Coverage, day: &ShopDay) -> Result<bool, ReconcileError> {
        let now_ms = self.bridge.clock.now_ms();
        let keep_s = i64::from(self.settings.keep_days) * 86_400;
        let n = |v: i64| V::N(v.to_string());
        let mut put = self
            .table
            .client()
            .put_item()
            .table_name(self.table.table())
            .item("pk", V::S(keys::coverage(c.shop.as_deref(), &c.day)))
            .item("kind", V::S("coverage".to_owned()))
            .item("day", V::S(c.day.clone()))
            .item("from_s", n(day.from_s))
            .item("to_s", n(day.to_s))
            .item("day_end_ms", n((day.to_s + 1) * 1000))
            .item("paid", n(c.paid as i64))
            .item("covered", n(c.covered as i64))
            .item("noted", n(c.noted as i64))
            .item("uncovered", n(c.uncovered as i64))
            .item("measured_at_ms", n(now_ms))
            .item("expires_at", n(day.to_s + 1 + keep_s));
        if let Some(shop) = &c.shop {
            put = put.item("shop", V::S(shop.clone()));
        }
        match put
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if crate::ledger::dynamo::failed_condition(&err) => Ok(false),
            Err(err) => Err(ledger_error(err).into()),
        }
    }

    /// The day's log line (uncovered order IDs, no PII) and EMF line (no shop dimension).
    fn announce(&self, c: &Coverage) {
        let ids = &c.uncovered_orders[..c.uncovered_orders.len().min(LOGGED_IDS)];
        let shop = c.shop.as_deref();
        if c.uncovered > self.settings.coverage_alarm_orders {
            tracing::error!(shop, day = %c.day, paid = c.paid, covered = c.covered, noted = c.noted, uncovered = c.uncovered, uncovered_orders = ?ids, "coverage: paid orders did not reach RedTrack");
        } else {
            tracing::info!(shop, day = %c.day, paid = c.paid, covered = c.covered, noted = c.noted, uncovered = c.uncovered, uncovered_orders = ?ids, "coverage: the day is measured");
        }
        let line = metrics_line(c);
        let mut out = std::io::stdout().lock();
        let _ = std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes());
    }
}

/// The EMF line of a measured day: `OrdersPaid`, `OrdersCovered`, `OrdersUncovered`.
pub fn metrics_line(c: &Coverage) -> String {
    run::emf(&[
        ("OrdersPaid", c.paid),
        ("OrdersCovered", c.covered),
        ("OrdersUncovered", c.uncovered),
    ])
}

/// Reads many records by key (BatchGetItem, 100 keys a request, consistent), the unprocessed
/// ones again after a pause; the items found, by key.
async fn read_many(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: &[String],
) -> Result<HashMap<String, HashMap<String, V>>, LedgerError> {
    let mut found = HashMap::new();
    for chunk in keys.chunks(100) {
        let mut pending: Vec<HashMap<String, V>> = chunk
            .iter()
            .map(|k| HashMap::from([("pk".to_owned(), V::S(k.clone()))]))
            .collect();
        for attempt in 0.. {
            if pending.is_empty() {
                break;
            }
            if attempt >= 6 {
                return Err(LedgerError::Throttled);
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(pending))
                .consistent_read(true)
                .build()
                .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
            let out = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(ledger_error)?;
            for item in out
                .responses
                .and_then(|mut r| r.remove(table))
                .into_iter()
                .flatten()
            {
                found.insert(get_s(&item, "pk"), item);
            }
            pending = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(table))
                .map(|k| k.keys)
                .unwrap_or_default();
        }
    }
    Ok(found)
}

/// A stored coverage record read back (for the report): the figures, `None` when it lacks them.
pub fn figures(item: &HashMap<String, V>) -> Option<[u64; 4]> {
    let n = |k: &str| get_n(item, k).and_then(|v| u64::try_from(v).ok());
    Some([n("paid")?, n("covered")?, n("noted")?, n("uncovered")?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_before_is_bounded_in_utc() {
        let utc = |s| crate::inbound::datetime::format_utc(s);
        // 2026-12-01 02:30:00 UTC
        let now = 1_796_092_200;
        let day = day_before(0, now);
        assert_eq!(day.day, "2026-11-30");
        assert_eq!(utc(day.from_s), "2026-11-30 00:00:00");
        assert_eq!(utc(day.to_s), "2026-11-30 23:59:59");
        assert_eq!(day_before(0, day.from_s).day, "2026-11-29");
        // A zone three hours behind UTC: its 30 November runs from 03:00 UTC to 02:59:59.
        let sp = day_before(-3 * 3600, now + 3 * 3600);
        assert_eq!(
            (sp.day.as_str(), utc(sp.from_s)),
            ("2026-11-30", "2026-11-30 03:00:00".to_owned())
        );
        assert_eq!(utc(sp.to_s), "2026-12-01 02:59:59");
        // The shop's zone decides: at 02:30 UTC it is still 30 November in São Paulo.
        let sao_paulo = Zone::find("America/Sao_Paulo");
        let day = previous_day(sao_paulo, now);
        assert_eq!(
            (day.day.as_str(), utc(day.from_s)),
            ("2026-11-29", "2026-11-29 03:00:00".to_owned())
        );
        assert_eq!(previous_day(None, now).day, "2026-11-30");
    }

    #[test]
    fn the_metrics_line_counts_without_a_shop() {
        let c = Coverage {
            shop: Some("loja".to_owned()),
            day: "2026-11-30".to_owned(),
            paid: 5,
            covered: 4,
            noted: 1,
            uncovered: 1,
            uncovered_orders: vec!["9".to_owned()],
        };
        let v: serde_json::Value = serde_json::from_str(&metrics_line(&c)).unwrap();
        assert_eq!(
            (
                v["OrdersPaid"].as_u64(),
                v["OrdersCovered"].as_u64(),
                v["OrdersUncovered"].as_u64()
            ),
            (Some(5), Some(4), Some(1))
        );
        assert!(v.get("shop").is_none());
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([[]])
        );
    }
}
