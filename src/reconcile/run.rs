//! One reconciliation run of one shop: list the window's orders page by page, turn each into the
//! conversions its webhooks would have made (same event IDs), and hand them to the bridge's own
//! [`Bridge::process`] — the same claim → render → send → record path as a webhook — so an order
//! that also arrives by webhook (before, during or after the run) is sent once. Orders whose
//! conversions could not be settled join the shop's retry set ([`crate::reconcile::retry`]),
//! which each later run re-reads first-hand from Cartpanda's order API.

use crate::bridge::{Bridge, ConversionReport, Outcome, Report};
use crate::conversion::classify::{self, Decision};
use crate::conversion::clickid;
use crate::conversion::rules::{self, Conversion, Skip};
use crate::inbound::auth::Secret;
use crate::inbound::lenient::Text;
use crate::inbound::s2s;
use crate::inbound::webhook::{Delivery, EventField, Order, OrderField};
use crate::inbound::zone::Zone;
use crate::ledger::dynamo::DynamoLedger;
use crate::ops::config::Profile;
use crate::reconcile::config::ReconcileSettings;
use crate::reconcile::error::ReconcileError;
use crate::reconcile::orders::{
    ListError, ListTimes, OrderLister, PageRequest, Paging, Pass, Window,
};
use crate::reconcile::retry::{Noted, RetrySet};
use crate::reconcile::watermark::{self, Cursor, Lease, Mark, Taken};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

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
    /// Fed by S2S: upsells get the S2S event IDs (`<order>-upsell-s2s-p<product_id>`,
    /// [`s2s_line_ids`]).
    pub s2s: bool,
    /// The shop's configured time zone (`CARTPANDA_TIMEZONE`, `shop put --timezone`), until its
    /// listed orders show theirs.
    pub timezone: Option<&'static Zone>,
}

/// Where a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// From the shop's watermark (less one run of overlap), or its unfinished window; the
    /// scheduled runs. The watermark advances when the window is listed to the end, and the
    /// retry set is retried and kept.
    Watermark,
    /// From this time (epoch seconds) to now: a back-fill. Neither the watermark nor the retry
    /// set is read or moved.
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
    /// Of the failed: refused by RedTrack for good (4xx), recorded `FAILED`, not retried.
    #[serde(default)]
    pub refused: u64,
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
    /// Orders of the retry set re-read by this run, and those of them now settled.
    #[serde(default)]
    pub retried: u64,
    #[serde(default)]
    pub recovered: u64,
    /// Orders in the shop's retry set after this run.
    #[serde(default)]
    pub retrying: u64,
    /// Orders given up after `RECONCILE_RETRY_RUNS` runs (or with the retry set full).
    #[serde(default)]
    pub given_up: u64,
    /// The zone the filters' times were written in (absent: unknown, written in UTC), and
    /// whether the window was widened by 14 hours each side (zone unknown or just changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default)]
    pub widened: bool,
    /// The window was listed to the end.
    pub complete: bool,
    /// The shop has had no complete run for [`crate::reconcile::STALE_AFTER_MS`].
    #[serde(default)]
    pub stale: bool,
    /// Why the run stopped early (`deadline`, or an error of the order list or the ledger).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// The error that stopped the run, when one did (not the deadline).
    #[serde(skip)]
    pub error: Option<ReconcileError>,
    /// What the run learnt of each order it sent through the claims: whether it arrived by
    /// webhook or S2S ([`crate::reconcile::silence`]).
    #[serde(skip)]
    pub met: Vec<crate::reconcile::silence::Met>,
    /// The order being processed, so far.
    #[serde(skip)]
    pub arrival: crate::reconcile::silence::Arrival,
    /// Another run of the shop held its lease: this one did nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub busy: bool,
}

impl Summary {
    /// The run failed: an error (not the deadline) stopped it.
    pub fn failed_run(&self) -> bool {
        self.error.is_some()
    }
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
    Failed(ReconcileError),
    /// The run's lease expired and another run took the shop over.
    Superseded,
}

/// One run's state as it goes: the shop, what to do, when to stop, where it stands.
struct Walk<'a> {
    target: &'a Target,
    options: RunOptions,
    stop_at: Instant,
    mark: &'a Mark,
    cursor: Cursor,
    retry: RetrySet,
    summary: Summary,
    times: ListTimes,
    paging: Paging,
    /// The zone the listed orders showed ([`zone_evidence`]).
    learned: Option<&'static Zone>,
    /// The run's hold on its shop (none on a dry run), renewed as it goes.
    lease: Option<Lease>,
}

/// How often, at least, the lookback pass runs (it runs in the first run this long after the
/// last one ended: daily for schedules up to an hour).
pub const LOOKBACK_EVERY_S: i64 = 23 * 3600;

impl Reconciler {
    /// Runs one shop once: its lease ([`watermark::acquire`]; a dry run takes none), its window,
    /// the window's pages (each order sent), the retry set, its watermark (which releases the
    /// lease). A shop whose lease another run holds is answered `busy`, nothing done.
    pub async fn run(&self, target: &Target, options: RunOptions) -> Summary {
        let now_ms = self.bridge.clock.now_ms();
        let shop = target.shop.as_deref();
        let mut summary = Summary {
            shop: target.shop.clone(),
            ..Summary::default()
        };
        let span_ms = self.settings.lease_span.as_millis() as i64;
        let lease = (!options.dry_run).then(|| Lease::new(now_ms, options.deadline_ms, span_ms));
        let mark = match self.begin(shop, options, lease.as_ref(), now_ms).await {
            Ok(Some(mark)) => mark,
            Ok(None) => return busy(summary),
            Err(err) => {
                tracing::error!(shop, error = %err, "could not read the reconciliation watermark");
                stopped(&mut summary, Some(Stop::Failed(err.into())));
                self.finish(&summary);
                return summary;
            }
        };
        let uses_mark = options.since == Since::Watermark;
        let mark = if uses_mark { mark } else { Mark::default() };
        let times = list_times(target.timezone, &mark);
        summary.timezone = times.zone.map(|z| z.name.to_owned());
        summary.widened = times.zone.is_none() || times.widen;
        let mut walk = Walk {
            target,
            options,
            stop_at: self.stop_at(options.deadline_ms, now_ms),
            mark: &mark,
            cursor: self.start(options.since, &mark, now_ms / 1000),
            retry: RetrySet::new(mark.retry.clone(), self.settings.retry_runs),
            summary,
            times,
            paging: Paging::default(),
            learned: None,
            lease,
        };
        let stop = self.passes(&mut walk).await;
        let Walk {
            cursor,
            retry,
            mut summary,
            learned,
            lease,
            ..
        } = walk;
        stopped(&mut summary, stop);
        match &lease {
            Some(lease) if uses_mark => {
                let at = (&mark, cursor, lease, (times.zone, learned));
                self.advance(target, at, retry, &mut summary).await;
                summary.stale = !summary.complete && stale(&mark, now_ms);
            }
            Some(lease) => self.release(shop, lease).await,
            None => {}
        }
        self.finish(&summary);
        summary
    }

    /// Takes the shop's lease and reads its state in the same write; a dry run (no lease) only
    /// reads it, and a dry back-fill reads nothing. `None`: another run holds the shop.
    async fn begin(
        &self,
        shop: Option<&str>,
        options: RunOptions,
        lease: Option<&Lease>,
        now_ms: i64,
    ) -> Result<Option<Mark>, crate::ledger::claim::LedgerError> {
        let (client, table) = (self.table.client(), self.table.table());
        match lease {
            Some(lease) => match watermark::acquire(client, table, shop, lease, now_ms).await? {
                Taken::Held(mark) => Ok(Some(mark)),
                Taken::Busy => Ok(None),
            },
            None if options.since == Since::Watermark => {
                watermark::get(client, table, shop).await.map(Some)
            }
            None => Ok(Some(Mark::default())),
        }
    }

    /// Renews the run's lease when it is due ([`Lease::due`]); the stop when another run has
    /// taken the shop over. A renewal the table could not make is logged and the run goes on
    /// (its last write is conditional on the lease anyway).
    async fn keep_lease(&self, w: &mut Walk<'_>) -> Option<Stop> {
        let now_ms = self.bridge.clock.now_ms();
        let lease = w.lease.as_mut().filter(|l| l.due(now_ms))?;
        let (client, table) = (self.table.client(), self.table.table());
        let shop = w.target.shop.as_deref();
        match watermark::renew(client, table, shop, lease, now_ms).await {
            Ok(true) => None,
            Ok(false) => {
                tracing::warn!(
                    shop,
                    "reconcile: the run's lease expired and another run took the shop over; stopping"
                );
                Some(Stop::Superseded)
            }
            Err(err) => {
                tracing::warn!(shop, error = %err, "reconcile: could not renew the shop's lease");
                None
            }
        }
    }

    /// Gives a back-fill's lease back (a scheduled run's last write releases it).
    async fn release(&self, shop: Option<&str>, lease: &Lease) {
        let (client, table) = (self.table.client(), self.table.table());
        if let Err(err) = watermark::release(client, table, shop, lease).await {
            tracing::warn!(shop, error = %err, "reconcile: could not release the shop's lease; it expires by itself");
        }
    }

    /// The window's passes, then (a scheduled run whose window was listed to the end) the
    /// retry set. Sets `summary.complete`; the stop, if any.
    async fn passes(&self, w: &mut Walk<'_>) -> Option<Stop> {
        w.summary.from = crate::inbound::datetime::format_utc(w.cursor.window.from_s);
        w.summary.to = crate::inbound::datetime::format_utc(w.cursor.window.to_s);
        if w.cursor.window.to_s > w.cursor.window.from_s {
            let listed = self.list(w).await;
            if listed.is_some() {
                return listed;
            }
        }
        w.summary.complete = true;
        if w.options.since == Since::Watermark && !w.options.dry_run {
            return self.retry(w).await;
        }
        None
    }

    /// When a run stops taking orders: [`ReconcileSettings::margin`] before the deadline.
    fn stop_at(&self, deadline_ms: i64, now_ms: i64) -> Instant {
        let left_ms = deadline_ms - now_ms - self.settings.margin.as_millis() as i64;
        Instant::now() + Duration::from_millis(left_ms.max(0) as u64)
    }

    /// Where a run starts: a back-fill's window; else the unfinished window's cursor, or a new
    /// window from the watermark less the overlap (the first lookback without one). Windows end
    /// [`ReconcileSettings::settle`] before `now_s`.
    fn start(&self, since: Since, mark: &Mark, now_s: i64) -> Cursor {
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

    /// The pass after `cursor`'s, when there is one: the updated pass with an "updated since"
    /// filter; without one, the lookback pass when the last ended [`LOOKBACK_EVERY_S`] ago (or
    /// never ran: a shop whose watermark predates the lookback), never in a shop's first window.
    fn next_pass(&self, cursor: &Cursor, mark: &Mark) -> Option<Cursor> {
        if cursor.pass != Pass::Created {
            return None;
        }
        let to_s = cursor.window.to_s;
        let (pass, window) = if self.lister.settings.updated_filter.is_some() {
            (Pass::Updated, cursor.window)
        } else if mark.watermark_s.is_some()
            && mark.lookback_s.is_none_or(|l| to_s - l >= LOOKBACK_EVERY_S)
        {
            // From the paid lookback before the last lookback's end, so an order paid up to the
            // lookback after its creation is listed by the first lookback after its payment,
            // however far apart lookbacks fall (about a day); at most twice the lookback back.
            let paid = self.settings.paid_lookback.as_secs() as i64;
            let since = mark.lookback_s.map_or(to_s, |l| l.clamp(to_s - paid, to_s));
            let from_s = since - paid;
            (Pass::Lookback, Window { from_s, to_s })
        } else {
            return None;
        };
        Some(Cursor {
            window,
            pass,
            page: 1,
        })
    }

    /// Records where the shop stands: a window listed to the end moves the watermark to its
    /// end (and the lookback's, when the lookback pass ended it); an unfinished one keeps the
    /// watermark and saves the cursor to resume from. The retry set is kept either way.
    async fn advance(
        &self,
        target: &Target,
        (mark, cursor, lease, zones): (&Mark, Cursor, &Lease, Zones),
        retry: RetrySet,
        summary: &mut Summary,
    ) {
        let shop = target.shop.as_deref();
        let now_ms = self.bridge.clock.now_ms();
        let (retry, given_up) = retry.finish();
        for order_id in &given_up {
            tracing::error!(shop, order_id = %order_id, runs = self.settings.retry_runs, "reconcile: order given up: its conversions could not be settled in RECONCILE_RETRY_RUNS runs");
        }
        summary.given_up += given_up.len() as u64;
        summary.retrying = retry.len() as u64;
        let first_run_ms = mark.first_run_ms.or(Some(now_ms));
        let next = if summary.complete {
            // A shop's first window starts the lookback's clock: its first pass comes a day later.
            let lookback_s = match (cursor.pass, mark.lookback_s) {
                (Pass::Lookback, _) | (_, None) => Some(cursor.window.to_s),
                (_, last) => last,
            };
            let (listed_in, learned) = zones;
            let name = |z: &Zone| z.name.to_owned();
            Mark {
                watermark_s: Some(cursor.window.to_s.max(mark.watermark_s.unwrap_or(i64::MIN))),
                cursor: None,
                completed_at_ms: Some(now_ms),
                first_run_ms,
                lookback_s,
                retry,
                list_timezone: listed_in.map(name),
                shop_timezone: learned.map(name).or_else(|| mark.shop_timezone.clone()),
            }
        } else {
            Mark {
                cursor: Some(cursor),
                first_run_ms,
                retry,
                ..mark.clone()
            }
        };
        self.write_mark(shop, &next, lease, summary).await;
    }

    /// The run's last watermark write (it releases the lease): a run taken over is answered
    /// `superseded`, a failed write stops the run with its error.
    async fn write_mark(
        &self,
        shop: Option<&str>,
        next: &Mark,
        lease: &Lease,
        summary: &mut Summary,
    ) {
        let now_ms = self.bridge.clock.now_ms();
        let (client, table) = (self.table.client(), self.table.table());
        match watermark::put(client, table, shop, next, now_ms, Some(lease)).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    shop,
                    "reconcile: watermark not written: another run took the shop over (this run's lease expired) or went further"
                );
                summary
                    .stopped
                    .get_or_insert_with(|| "superseded".to_owned());
            }
            Err(err) => {
                tracing::error!(shop, error = %err, "could not record the reconciliation watermark");
                if summary.error.is_none() {
                    stopped(summary, Some(Stop::Failed(err.into())));
                }
            }
        }
    }

    /// The window's pages from `cursor` on, each order sent; the created pass, then the next
    /// ones ([`Reconciler::next_pass`]). `cursor` ends where the listing stopped.
    async fn list(&self, w: &mut Walk<'_>) -> Option<Stop> {
        loop {
            if Instant::now() >= w.stop_at {
                return Some(Stop::Deadline);
            }
            if let Some(stop) = self.keep_lease(w).await {
                return Some(stop);
            }
            let (slug, token) = (&w.target.slug, &w.target.token);
            let at = w.cursor;
            let request = PageRequest {
                pass: at.pass,
                window: at.window,
                page: at.page,
                times: w.times,
            };
            let listed = self.lister.page(slug, token, &request, w.stop_at).await;
            let listed = match listed {
                Ok(listed) => listed,
                Err(ListError::Deadline) => return Some(Stop::Deadline),
                Err(err) => {
                    tracing::error!(shop = w.target.shop.as_deref(), pass = at.pass.as_str(), page = at.page, error = %err, "order list failed; the run resumes from here next time");
                    return Some(Stop::Failed(err.into()));
                }
            };
            w.summary.pages += 1;
            for order in &listed.orders {
                if Instant::now() >= w.stop_at {
                    return Some(Stop::Deadline);
                }
                w.learned = w
                    .learned
                    .or_else(|| zone_evidence(order, w.target.timezone));
                match self.order(w, at.pass, order).await {
                    Ok(settled) => self.keep(w, at.pass, order, settled),
                    Err(stop) => return Some(stop),
                }
            }
            if !w.paging.more(at.page, &listed) || at.page >= MAX_PAGES {
                match self.next_pass(&w.cursor, w.mark) {
                    Some(next) => w.cursor = next,
                    None => return None,
                }
                w.paging = Paging::default();
                continue;
            }
            w.cursor.page += 1;
        }
    }

    /// The retry set's orders this run has not met yet: each re-read from Cartpanda's order
    /// API and processed again; a settled one leaves the set.
    async fn retry(&self, w: &mut Walk<'_>) -> Option<Stop> {
        let shop = w.target.shop.as_deref();
        for (order_id, pass) in w.retry.due() {
            if Instant::now() >= w.stop_at {
                return Some(Stop::Deadline);
            }
            if let Some(stop) = self.keep_lease(w).await {
                return Some(stop);
            }
            w.summary.retried += 1;
            let url = crate::inbound::verify::order_url(
                &self.bridge.config.cartpanda_order_url,
                &w.target.slug,
                &order_id,
            );
            let value = match self.lister.order(&url, &w.target.token, w.stop_at).await {
                Ok(Some(value)) => value,
                Ok(None) => {
                    tracing::warn!(shop, order_id = %order_id, "reconcile: a retried order is no longer in Cartpanda's API; dropped");
                    w.retry.drop_order(&order_id);
                    continue;
                }
                Err(ListError::Deadline) => return Some(Stop::Deadline),
                Err(err) => {
                    tracing::error!(shop, order_id = %order_id, error = %err, "reconcile: could not re-read a retried order");
                    return Some(Stop::Failed(err.into()));
                }
            };
            match self.order(w, pass, &value).await {
                Ok(settled) => self.keep(w, pass, &value, settled),
                Err(stop) => return Some(stop),
            }
        }
        None
    }

    /// Notes a processed order in the retry set: kept when not settled, out when settled.
    fn keep(&self, w: &mut Walk<'_>, pass: Pass, value: &serde_json::Value, settled: bool) {
        let now_s = self.bridge.clock.now_ms() / 1000;
        let arrival = std::mem::take(&mut w.summary.arrival);
        w.summary.met.extend(arrival.met(value, now_s));
        let Some(order_id) = order_id_of(value) else {
            return;
        };
        let shop = w.target.shop.as_deref();
        if w.options.since != Since::Watermark {
            if !settled {
                tracing::warn!(shop, order_id = %order_id, "reconcile: conversions not settled; run the back-fill again");
            }
            return;
        }
        match w.retry.note(&order_id, pass, settled) {
            Noted::Added => {
                tracing::warn!(shop, order_id = %order_id, "reconcile: conversions not settled; kept for the next runs")
            }
            Noted::Recovered => w.summary.recovered += 1,
            Noted::Full => {
                w.summary.given_up += 1;
                tracing::error!(shop, order_id = %order_id, "reconcile: order given up: the retry set is full");
            }
            Noted::Tried | Noted::Nothing => {}
        }
    }

    /// One listed order: its conversions, claimed and sent through the bridge (looked up only,
    /// on a dry run). `Ok(false)` when a conversion could not be settled for a reason that may
    /// pass (RedTrack or the queue unavailable, a concurrent delivery holding it).
    async fn order(
        &self,
        w: &mut Walk<'_>,
        pass: Pass,
        value: &serde_json::Value,
    ) -> Result<bool, Stop> {
        let (target, options, stop_at) = (w.target, w.options, w.stop_at);
        let summary = &mut w.summary;
        summary.orders_seen += 1;
        let Some(probe) = delivery(value, "order.paid", target) else {
            summary.unusable += 1;
            return Ok(true);
        };
        let events = events_of(pass, order_of(&probe));
        let profile = target.profile.as_ref();
        let mut noted = false;
        let mut settled = true;
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
                    self.look_up(profile, &order_id, conversions, summary)
                        .await
                        .map_err(Stop::Failed)?;
                }
                (Decision::Convert(conversions), Some(order)) => {
                    let job = (event, order_id.as_str(), order);
                    let (report, cut) =
                        self.send(profile, job, conversions, options, stop_at).await;
                    settled &= count(&report, summary)?;
                    if cut {
                        return Err(Stop::Deadline);
                    }
                }
                (Decision::Skip(skip @ (Skip::NoClickId | Skip::TooOld { .. })), _) if !noted => {
                    noted = true;
                    self.not_sent(target, options, &order_id, event, *skip, summary)
                        .await;
                }
                // A test order counts by its sale (not again by its upsells), and by each refund
                // or chargeback.
                (Decision::Skip(Skip::TestOrder), _) if event != "order.upsell" => {
                    summary.skipped_test += 1;
                }
                _ => {}
            }
        }
        Ok(settled)
    }

    /// Dry run: whether each conversion is already recorded as sent (under its event ID, or one
    /// an earlier version gave it), or would be sent.
    async fn look_up(
        &self,
        profile: &Profile,
        order_id: &str,
        conversions: &[Conversion<'_>],
        summary: &mut Summary,
    ) -> Result<(), ReconcileError> {
        for conversion in conversions {
            // An S2S shop's upsell may be recorded under an ID an earlier version gave it.
            let former = crate::bridge::former::former_event_ids(order_id, conversion);
            let mut sent = false;
            for event_id in std::iter::once(&conversion.event_id).chain(&former) {
                if self.recorded(&profile.record_key(event_id, false)).await? {
                    sent = true;
                    break;
                }
            }
            if sent {
                summary.already_sent += 1;
            } else {
                summary.would_send += 1;
            }
        }
        Ok(())
    }

    /// A listed order's conversions through [`Bridge::process`], one at a time: none is claimed
    /// once the run's stop time has passed (then the second value is true, and the rest are
    /// left to the next run, which lists this page again).
    async fn send(
        &self,
        profile: &Profile,
        (event, order_id, order): (&str, &str, &Order),
        conversions: &[Conversion<'_>],
        options: RunOptions,
        stop_at: Instant,
    ) -> (Report, bool) {
        // Each order's claims are leased for a short while, not the whole run: a run that
        // dies leaves no claim that blocks a webhook for long.
        let deadline_ms = (self.bridge.clock.now_ms() + ORDER_BUDGET_MS).min(options.deadline_ms);
        let mut report = Report::default();
        for conversion in conversions {
            if Instant::now() >= stop_at {
                return (report, true);
            }
            let one = std::slice::from_ref(conversion);
            let done = self
                .bridge
                .process(profile, event, order_id, order, one, intake(deadline_ms))
                .await;
            let ledger_down = done
                .conversions
                .iter()
                .any(|c| c.outcome == Outcome::LedgerUnavailable);
            report.conversions.extend(done.conversions);
            if ledger_down {
                break;
            }
        }
        (report, false)
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
                let via = crate::ledger::claim::Via::Reconcile;
                self.bridge.note_too_old(shop, order_id, event, via).await;
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
        )
        .with_via(crate::ledger::claim::Via::Reconcile);
        crate::ledger::notes::leave(self.bridge.ledger.as_ref(), &note).await;
    }

    /// Whether a conversion's record says it was sent and has not expired, as the ledger reads
    /// a record ([`crate::ledger::dynamo::record_from_item`]).
    async fn recorded(&self, key: &str) -> Result<bool, ReconcileError> {
        let now_s = self.bridge.clock.now_ms() / 1000;
        Ok(self.table.read(key).await?.is_some_and(|item| {
            let record = crate::ledger::dynamo::record_from_item(&item);
            record.status == crate::ledger::claim::STATUS_SENT && record.expires_at_s >= now_s
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
            refused = summary.refused,
            already_sent = summary.already_sent,
            in_progress = summary.in_progress,
            conflicts = summary.conflicts,
            would_send = summary.would_send,
            skipped_no_click_id = summary.skipped_no_click_id,
            skipped_too_old = summary.skipped_too_old,
            skipped_test = summary.skipped_test,
            unusable = summary.unusable,
            retried = summary.retried,
            recovered = summary.recovered,
            retrying = summary.retrying,
            given_up = summary.given_up,
            timezone = summary.timezone.as_deref(),
            widened = summary.widened,
            complete = summary.complete,
            stale = summary.stale,
            stopped = summary.stopped.as_deref(),
            retryable = summary.error.as_ref().map(ReconcileError::retryable),
            "reconcile run"
        );
        let mut out = std::io::stdout().lock();
        let _ =
            std::io::Write::write_all(&mut out, format!("{}\n", metrics_line(summary)).as_bytes());
    }
}

/// The answer of a run that found its shop busy (another run holds its lease): logged, nothing
/// done, no metrics (the other run counts).
fn busy(mut summary: Summary) -> Summary {
    let shop = summary.shop.as_deref();
    tracing::info!(
        shop,
        outcome = "busy",
        "reconcile: the shop is busy: another run of it holds its lease"
    );
    summary.busy = true;
    summary.stopped = Some("busy".to_owned());
    summary
}

/// Records why a run stopped in its summary.
fn stopped(summary: &mut Summary, stop: Option<Stop>) {
    match stop {
        None => {}
        Some(Stop::Deadline) => summary.stopped = Some("deadline".to_owned()),
        Some(Stop::Superseded) => summary.stopped = Some("superseded".to_owned()),
        Some(Stop::Failed(err)) => {
            summary.stopped = Some(err.to_string());
            summary.error = Some(err);
        }
    }
}

/// Whether a shop whose run did not complete is stale: its last complete run (or, never
/// completed, its first run) was more than [`crate::reconcile::STALE_AFTER_MS`] ago.
pub fn stale(mark: &Mark, now_ms: i64) -> bool {
    mark.last_complete_ms()
        .or(mark.first_run_ms)
        .is_some_and(|t| now_ms - t > crate::reconcile::STALE_AFTER_MS)
}

/// The zone a run's filters are written in, and the zone its listed orders showed.
type Zones = (Option<&'static Zone>, Option<&'static Zone>);

/// How a run writes its filters' times: in the zone the shop's listed orders showed before, else
/// its configured zone; widened while there is none, or when the last complete window was written
/// in another (a changed zone, a record written before zones were kept), so no order falls
/// between the two windows. A shop's first window and a back-fill follow no window.
fn list_times(configured: Option<&'static Zone>, mark: &Mark) -> ListTimes {
    let shown = mark.shop_timezone.as_deref().and_then(Zone::find);
    let zone = shown.or(configured);
    let before = mark.list_timezone.as_deref().and_then(Zone::find);
    ListTimes {
        zone,
        widen: zone.is_none() || (mark.watermark_s.is_some() && zone != before),
    }
}

/// What a listed order shows of the zone Cartpanda writes the shop's times in: its shop's zone
/// (`shop.timezone`, else `configured`) when the offset its `created_at` carries is that zone's
/// at that time; `shop.timezone` when it is naive. A `Z` (or `+00:00`) shows nothing of the
/// filters' zone: Laravel writes every time as UTC whatever zone it compares filters in. So the
/// filters are then written in whichever of UTC and the shop's zone is further west: a wrong
/// guess makes the window lag behind what it means by the zone's offset (an order is listed
/// that much later), never run ahead of the clock (listing only orders not yet created, for
/// ever). `None` when it shows nothing (no `created_at`, an unknown zone, an offset no known
/// zone has then).
fn zone_evidence(
    value: &serde_json::Value,
    configured: Option<&'static Zone>,
) -> Option<&'static Zone> {
    let stamp = crate::inbound::datetime::parse_stamp(value.get("created_at")?.as_str()?)?;
    let own = value
        .get("shop")
        .and_then(|shop| shop.get("timezone"))
        .and_then(serde_json::Value::as_str)
        .and_then(Zone::find);
    match stamp.offset_s {
        Some(0) => own.or(configured).map(|zone| {
            if zone.offset_at(stamp.fields_s) < 0 {
                zone
            } else {
                Zone::utc()
            }
        }),
        Some(offset) => own
            .or(configured)
            .filter(|zone| i64::from(zone.offset_at(stamp.fields_s - offset)) == offset),
        None => own,
    }
}

/// The budget of an admin back-fill (`reconcile --since`).
pub const CLI_BUDGET_MS: i64 = 60 * 60 * 1000;

/// The lease (and RedTrack's time) of one order's conversions.
pub const ORDER_BUDGET_MS: i64 = 30_000;

/// Most pages one pass reads (a runaway `last_page` cannot keep a run going).
pub const MAX_PAGES: u32 = 10_000;

/// The EMF line of a run: `ReconcileOrders`, `ReconcileMissing`, `ReconcileSent`,
/// `ReconcileAlreadySent`, `ReconcileNoClickId`, `ReconcileFailed`, `ReconcileRefused`,
/// `ReconcileRetrying`, `ReconcileRetryGivenUp` and `ReconcileIncomplete`, without dimensions
/// (the alarms and the dashboard read the totals).
pub fn metrics_line(summary: &Summary) -> String {
    let metrics = [
        ("ReconcileOrders", summary.orders_seen),
        ("ReconcileMissing", summary.missing),
        ("ReconcileSent", summary.sent),
        ("ReconcileAlreadySent", summary.already_sent),
        ("ReconcileNoClickId", summary.skipped_no_click_id),
        ("ReconcileFailed", summary.failed + summary.queued),
        ("ReconcileRefused", summary.refused),
        ("ReconcileRetrying", summary.retrying),
        ("ReconcileRetryGivenUp", summary.given_up),
        ("ReconcileIncomplete", u64::from(!summary.complete)),
    ];
    emf(&metrics)
}

/// One EMF document of dimensionless counts in the namespace.
pub fn emf(metrics: &[(&str, u64)]) -> String {
    let mut doc = serde_json::Map::new();
    for (name, value) in metrics {
        doc.insert((*name).to_owned(), serde_json::json!(value));
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

/// Whether RedTrack refused a failed conversion for good (4xx other than 429: recorded
/// `FAILED`, not retried); otherwise it failed for a reason that may pass.
fn refused_for_good(entry: &ConversionReport) -> bool {
    entry
        .redtrack_status
        .is_some_and(|s| (400..500).contains(&s) && s != 429)
}

/// Adds a listed order's outcomes to the run's counts: whether every conversion is settled;
/// the ledger unavailable stops the run.
fn count(report: &Report, summary: &mut Summary) -> Result<bool, Stop> {
    let mut settled = true;
    for entry in &report.conversions {
        summary.arrival.add(entry);
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
                if refused_for_good(entry) {
                    summary.refused += 1;
                } else {
                    settled = false;
                }
            }
            Outcome::Duplicate => summary.already_sent += 1,
            Outcome::InProgress => {
                summary.in_progress += 1;
                settled = false;
            }
            Outcome::Conflict => summary.conflicts += 1,
            Outcome::LedgerUnavailable => {
                let err = ReconcileError::Ledger("DynamoDB unavailable".to_owned());
                return Err(Stop::Failed(err));
            }
            // Not claimed (no time left for it): the order is not settled, a later run retries it.
            Outcome::NotAttempted => settled = false,
        }
    }
    Ok(settled)
}

/// A listed order's ID as its order API URL takes it.
pub(crate) fn order_id_of(value: &serde_json::Value) -> Option<String> {
    match value.get("id")? {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

/// The events a listed order stands for: its sale and upsells (the created and lookback
/// passes ask for paid orders only, and trust that unless the order's own `payment_status` says
/// pending or cancelled: a list that ignored the filter, or a query without it); on the updated
/// pass its refunds and chargebacks, and its sale and upsells only when its own
/// `payment_status` says paid ([`rules::payment`]: the list is not filtered on payment).
fn events_of(pass: Pass, order: Option<&Order>) -> Vec<&'static str> {
    match pass {
        Pass::Created | Pass::Lookback => match order.map(rules::payment) {
            Some(rules::Payment::Pending | rules::Payment::Cancelled) => Vec::new(),
            _ => vec!["order.paid", "order.upsell"],
        },
        Pass::Updated => {
            let sales = if order.is_some_and(|o| rules::payment(o) == rules::Payment::Paid) {
                vec!["order.paid", "order.upsell"]
            } else {
                Vec::new()
            };
            sales.into_iter().chain(updated_events(order)).collect()
        }
    }
}

/// Every event an order read from Cartpanda's API stands for — its sale and upsells (unless its
/// `payment_status` says pending or cancelled, as for a listed order), its refunds and
/// chargebacks — each as the delivery of that event would carry it: what the admin's `order` and
/// `resend` rebuild an order's conversions from (`crate::story`).
pub fn deliveries_of(value: &serde_json::Value, target: &Target) -> Vec<(&'static str, Delivery)> {
    let Some(probe) = delivery(value, "order.paid", target) else {
        return Vec::new();
    };
    let order = order_of(&probe);
    let events = events_of(Pass::Created, order)
        .into_iter()
        .chain(updated_events(order));
    events
        .filter_map(|event| Some((event, delivery(value, event, target)?)))
        .collect()
}

/// What reconciliation's claims record: `via` = `reconcile`, leased until `deadline_ms`.
fn intake(deadline_ms: i64) -> crate::bridge::Intake {
    crate::bridge::Intake {
        via: crate::ledger::claim::Via::Reconcile,
        deadline_ms: Some(deadline_ms),
    }
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
    if !order.refunds.is_empty() || crate::conversion::rules::marked_refunded(order) {
        events.push("order.refunded");
    }
    if order.chargeback_received.0 || status.contains("chargeback") {
        events.push("order.chargeback");
    }
    events
}

/// A listed order as the delivery of `event` would carry it, click ID resolved; an S2S shop's
/// upsell lines take the S2S input's event-ID keys ([`s2s_line_ids`]).
pub(crate) fn delivery(
    value: &serde_json::Value,
    event: &str,
    target: &Target,
) -> Option<Delivery> {
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

/// Gives an S2S shop's upsell lines the keys the S2S input gives the same upsells: each line's
/// [`s2s::Upsell::key`] (`s2s-p<product_id>`; see there without a product ID), the function the
/// S2S route calls too. A key a line before it already took gets `-2`, `-3`… in line order (the
/// same product bought twice), so no two lines share an event ID. Each line also keeps the keys
/// earlier versions gave it (`s2s-<n>`, `n` the number in `up_sell_type` else the upsell's
/// position, and `s2s-dp<product_id>` for a downsell), which its claim looks up first.
pub fn s2s_line_ids(order: &mut Order) {
    let mut taken: HashMap<String, u32> = HashMap::new();
    let mut position = 0;
    for item in order.line_items.iter_mut().filter(|i| i.is_upsell()) {
        position += 1;
        let label = item.up_sell_type.get().unwrap_or("");
        let step = s2s::step_of(label);
        let upsell = s2s::Upsell {
            product_id: item.product_id.get(),
            downsell: label.to_ascii_lowercase().contains("downsell"),
            step,
            name: item.display_name(),
        };
        let key = upsell.key();
        let former = upsell.former_keys(&[step.unwrap_or(position)]);
        let times = taken.entry(key.clone()).or_insert(0);
        *times += 1;
        let key = match *times {
            1 => key,
            n => format!("{key}-{n}"),
        };
        item.id = Text(Some(key));
        item.former_ids = former;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s2s_shops_get_distinct_s2s_upsell_ids() {
        let mut order: Order = serde_json::from_value(serde_json::json!({
            "id": 5, "line_items": [
                {"id": 1, "product_id": 100, "up_sell_id": 0},
                {"id": 2, "product_id": 7, "up_sell_id": 7, "up_sell_type": "Upsell 2"},
                {"id": 3, "product_id": 8, "up_sell_id": 8, "up_sell_type": "Downsell"},
                {"id": 4, "product_id": 7, "up_sell_id": 9, "up_sell_type": "Upsell 3"},
                {"id": 5, "up_sell_id": 10, "up_sell_type": "Upsell 4", "name": "Frete"}
            ]
        }))
        .unwrap();
        s2s_line_ids(&mut order);
        let ids: Vec<_> = order.line_items.iter().map(|i| i.id.get()).collect();
        let no_product = s2s::Upsell {
            step: Some(4),
            name: Some("Frete"),
            ..s2s::Upsell::default()
        };
        assert_eq!(
            ids,
            [
                Some("1"),
                Some("s2s-p7"),
                Some("s2s-p8"),
                Some("s2s-p7-2"),
                Some(no_product.key().as_str())
            ]
        );
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "no two lines share an ID");
        let former: Vec<_> = order.line_items.iter().map(|i| &i.former_ids).collect();
        assert_eq!(
            former,
            [
                &Vec::<String>::new(),
                &vec!["s2s-2".to_owned()],
                &vec!["s2s-2".to_owned(), "s2s-dp8".to_owned()],
                &vec!["s2s-3".to_owned()],
                &vec!["s2s-4".to_owned()]
            ],
            "the keys of earlier versions: step, else position; dp for a downsell"
        );
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
    fn the_updated_pass_makes_sales_of_paid_orders_only() {
        let events = |v: serde_json::Value| {
            let order: Order = serde_json::from_value(v).unwrap();
            events_of(Pass::Updated, Some(&order))
        };
        let paid_later = serde_json::json!({"id": 1, "payment_status": 3});
        assert_eq!(events(paid_later), ["order.paid", "order.upsell"]);
        let as_text = serde_json::json!({"id": 1, "payment_status": "3", "chargeback_received": 1});
        assert_eq!(
            events(as_text),
            ["order.paid", "order.upsell", "order.chargeback"]
        );
        // Verification's rule: 3.0 and the text `paid` say paid too.
        for status in [serde_json::json!(3.0), serde_json::json!("Paid")] {
            let v = serde_json::json!({"id": 1, "payment_status": status});
            assert_eq!(events(v), ["order.paid", "order.upsell"], "{status}");
        }
        for status in [
            serde_json::json!(1),
            serde_json::json!(4),
            serde_json::json!(2),
            serde_json::Value::Null,
        ] {
            let v = serde_json::json!({"id": 1, "payment_status": status});
            assert!(events(v).is_empty(), "{status}");
        }
    }

    #[test]
    fn listed_orders_show_the_zone_their_times_are_written_in() {
        let sp = Zone::find("America/Sao_Paulo");
        let order = |created: &str, zone: Option<&str>| {
            let mut v = serde_json::json!({"id": 1, "created_at": created, "shop": {"id": 2}});
            if let Some(zone) = zone {
                v["shop"]["timezone"] = serde_json::json!(zone);
            }
            v
        };
        let shown =
            |v: serde_json::Value, configured| zone_evidence(&v, configured).map(|z| z.name);
        let naive = "2026-09-16 10:20:00";
        assert_eq!(
            shown(order(naive, Some("America/Sao_Paulo")), None),
            sp.map(|z| z.name)
        );
        assert_eq!(
            shown(order(naive, None), sp),
            None,
            "a naive time alone shows nothing"
        );
        // `Z` shows nothing of the filters' zone: the one further west of UTC and the shop's.
        let utc = "2026-09-16T13:20:00.000000Z";
        assert_eq!(
            shown(order(utc, Some("America/Sao_Paulo")), None),
            Some("America/Sao_Paulo")
        );
        assert_eq!(shown(order(utc, None), sp), Some("America/Sao_Paulo"));
        assert_eq!(shown(order(utc, Some("Europe/Lisbon")), None), Some("UTC"));
        assert_eq!(
            shown(order(utc, None), None),
            None,
            "no zone known: widened"
        );
        let offset = "2026-09-16T10:20:00-03:00";
        assert_eq!(shown(order(offset, None), sp), Some("America/Sao_Paulo"));
        assert_eq!(
            shown(order(offset, Some("Europe/Lisbon")), None),
            None,
            "not Lisbon's"
        );
        assert_eq!(shown(order(naive, Some("Mars/Olympus")), None), None);
    }

    #[test]
    fn filters_are_widened_while_the_zone_is_unknown_or_changed() {
        let target = |zone: Option<&str>| zone.and_then(Zone::find);
        let mark = |watermark: Option<i64>, listed: Option<&str>, shown: Option<&str>| Mark {
            watermark_s: watermark,
            list_timezone: listed.map(str::to_owned),
            shop_timezone: shown.map(str::to_owned),
            ..Mark::default()
        };
        let times = |t: &Option<&'static Zone>, m: &Mark| {
            let times = list_times(*t, m);
            (times.zone.map(|z| z.name), times.widen)
        };
        let sp = "America/Sao_Paulo";
        assert_eq!(times(&target(None), &Mark::default()), (None, true));
        assert_eq!(
            times(&target(Some(sp)), &Mark::default()),
            (Some(sp), false),
            "first window"
        );
        assert_eq!(
            times(&target(Some(sp)), &mark(Some(1), None, None)),
            (Some(sp), true),
            "old record"
        );
        assert_eq!(
            times(&target(Some(sp)), &mark(Some(1), Some(sp), None)),
            (Some(sp), false)
        );
        let shown_utc = mark(Some(1), Some(sp), Some("UTC"));
        assert_eq!(
            times(&target(Some(sp)), &shown_utc),
            (Some("UTC"), true),
            "orders show UTC"
        );
        assert_eq!(
            times(&target(None), &mark(Some(1), Some("UTC"), Some("UTC"))),
            (Some("UTC"), false)
        );
    }

    #[test]
    fn only_a_4xx_refusal_is_settled_for_good() {
        let failed = |status: Option<u16>| {
            let mut entry = ConversionReport::new("1-purchase", "Purchase", Outcome::Failed);
            entry.redtrack_status = status;
            let mut summary = Summary::default();
            let report = Report {
                conversions: vec![entry],
            };
            (count(&report, &mut summary).ok().unwrap(), summary.refused)
        };
        assert_eq!(failed(Some(400)), (true, 1));
        assert_eq!(failed(Some(404)), (true, 1));
        assert_eq!(failed(Some(429)), (false, 0));
        assert_eq!(failed(Some(503)), (false, 0));
        assert_eq!(failed(None), (false, 0), "a timeout");
    }

    #[test]
    fn a_shop_is_stale_two_hours_after_its_last_complete_run() {
        let now = 10_000_000_000;
        let hour = 3_600_000;
        let mark = |completed: Option<i64>, first: Option<i64>| Mark {
            completed_at_ms: completed,
            first_run_ms: first,
            ..Mark::default()
        };
        assert!(!stale(&mark(Some(now - hour), None), now));
        assert!(stale(&mark(Some(now - 2 * hour - 1), None), now));
        assert!(
            stale(&mark(None, Some(now - 3 * hour)), now),
            "never complete"
        );
        assert!(!stale(&Mark::default(), now), "no run yet");
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
        assert_eq!(d["Metrics"].as_array().unwrap().len(), 10);
    }
}
