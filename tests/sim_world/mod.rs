//! The world of the simulation (issue 21), shared by `tests/sim.rs` (the deterministic runs, the
//! in-memory ledger) and `tests/sim_moto.rs` (the DynamoDB ledger against moto).
//!
//! One `u64` seed decides everything — the shop (webhook-fed or S2S-fed, verification on or off,
//! the ledger's memory), the orders, the deliveries' schedule (duplicated, reordered, concurrent,
//! delayed), the faults (the ledger failing before or after applying a write or slow; RedTrack
//! 5xx, 429, 4xx, slow, timing out before or after accepting; the queue refusing; an instance
//! dying at an await point) and the clock's jumps (past leases, past the `QUEUED` and `FAILED`
//! records' keep, past the ledger's memory) — and the same seed replays the same history: a
//! current-thread runtime with tokio's clock paused (every monotonic time decision in `src/` reads
//! tokio's `Instant`), the injected [`SimClock`] built on that same paused clock, and one seeded
//! generator.
//!
//! The world is the project's own code: [`Bridge::deliver`] for every webhook and every S2S
//! postback (what the HTTP handler calls after the token; the S2S query read by
//! `inbound::s2s::delivery`), the redrive consumer ([`Redriver::handle`]) for every queued
//! message, and the operator's `redrive` (the DLQ's messages moved back to the queue, as
//! `redrive::consumer::move_messages` does with SQS).
#![allow(dead_code)]

use async_trait::async_trait;
use cartpanda_redtrack::bridge::{Bridge, DeliveryOptions, Handled, Outcome};
use cartpanda_redtrack::inbound::auth::Secret;
use cartpanda_redtrack::inbound::verify::{OrderSource, VerifyError};
use cartpanda_redtrack::inbound::webhook::{self, Delivery, Order};
use cartpanda_redtrack::inbound::zone::Zone;
use cartpanda_redtrack::ledger::cache::CachedLedger;
use cartpanda_redtrack::ledger::claim::{
    Claim, ClaimOutcome, Finish, Ledger, LedgerError, Record, STATUS_SENT, Via,
};
use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ledger::notes::Note;
use cartpanda_redtrack::ledger::refusal::Refusal;
use cartpanda_redtrack::ops::clock::Clock;
use cartpanda_redtrack::ops::config::Config;
use cartpanda_redtrack::postback::redtrack::{Accepted, SendError, Tracker};
use cartpanda_redtrack::reconcile::config::ReconcileSettings;
use cartpanda_redtrack::reconcile::coverage::{AFTER_DAY_END_S, Coverage, previous_day};
use cartpanda_redtrack::reconcile::orders::OrderLister;
use cartpanda_redtrack::reconcile::run::{Reconciler, RunOptions, Since};
use cartpanda_redtrack::redrive::consumer::{Disposition, MAX_RECEIVES, Redriver};
use cartpanda_redtrack::redrive::queue::{QueueError, RedriveKind, RedriveMessage, RedriveQueue};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// When every history begins (2026-11-24 UTC).
pub const START_MS: i64 = 1_795_000_000_000;
pub const CLICK_ID: &str = "67d42f3b9a1e5c0012ab34cd";
const DAY_MS: i64 = 86_400_000;

// ------------------------------------------------------------------------------------------------
// The random source: one seeded generator, shared by the world and the schedule.

#[derive(Clone)]
pub struct Dice(Arc<Mutex<fastrand::Rng>>);

impl Dice {
    pub fn new(seed: u64) -> Self {
        Dice(Arc::new(Mutex::new(fastrand::Rng::with_seed(seed))))
    }
    /// True with probability `percent` / 100.
    pub fn chance(&self, percent: u32) -> bool {
        self.0.lock().unwrap().u32(0..100) < percent
    }
    pub fn below(&self, n: usize) -> usize {
        self.0.lock().unwrap().usize(0..n.max(1))
    }
}

/// Faults are injected only while the storm lasts.
#[derive(Clone)]
pub struct Storm {
    pub dice: Dice,
    pub on: Arc<Mutex<bool>>,
    pub trace: Trace,
    /// Real time (the moto variant): no slow dependencies, whose pauses would be real.
    pub real_time: bool,
}

impl Storm {
    pub fn strikes(&self, percent: u32) -> bool {
        *self.on.lock().unwrap() && self.dice.chance(percent)
    }

    /// A pause of up to `max_ms` on the paused clock (a slow dependency), during the storm.
    async fn slow(&self, percent: u32, max_ms: usize, who: &str, what: &str) {
        if !self.real_time && self.strikes(percent) {
            let ms = self.dice.below(max_ms) as u64;
            self.trace
                .say(format_args!("  {who} {what}: slow, {ms} ms"));
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// The history's trace: its lines are written only when it is kept (a replay, a failure), so a
/// bulk run pays nothing for it.
#[derive(Clone, Default)]
pub struct Trace {
    pub lines: Arc<Mutex<Vec<String>>>,
    pub kept: bool,
}

impl Trace {
    pub fn say(&self, line: std::fmt::Arguments<'_>) {
        if self.kept {
            self.lines.lock().unwrap().push(line.to_string());
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The clock: the bridge's epoch milliseconds are tokio's (paused) monotonic clock since the
// history began, plus the jumps the simulation makes. So a pause in the code under test (a retry's
// backoff, a slow RedTrack) moves both clocks together, and a jump moves the epoch clock (leases,
// expiry, the age rule) past what an invocation's monotonic budget sees.

pub struct SimClock {
    base: Instant,
    jumped: AtomicI64,
}

impl SimClock {
    /// Made inside the runtime (its paused clock).
    pub fn new() -> Self {
        SimClock {
            base: Instant::now(),
            jumped: AtomicI64::new(0),
        }
    }
    pub fn jump(&self, ms: i64) {
        self.jumped.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        START_MS + self.jumped.load(Ordering::SeqCst) + self.base.elapsed().as_millis() as i64
    }
}

// ------------------------------------------------------------------------------------------------
// The ledger, with faults: failing before applying, after applying (the answer lost), slow; and
// the SDK's retry of a claim whose answer was lost. Notes and refusals are kept for the checks.

pub struct FaultyLedger {
    pub inner: Arc<dyn Ledger>,
    pub storm: Storm,
    /// Keys whose `SENT` record failed to be written (window 1 of docs/reliability.md).
    pub sent_write_lost: Mutex<Vec<String>>,
    /// (order ID, reason) of every note left.
    pub notes: Mutex<Vec<(String, String)>>,
    /// Order IDs of every refusal recorded.
    pub refusals: Mutex<Vec<String>>,
}

impl FaultyLedger {
    pub fn new(inner: Arc<dyn Ledger>, storm: Storm) -> Self {
        FaultyLedger {
            inner,
            storm,
            sent_write_lost: Mutex::default(),
            notes: Mutex::default(),
            refusals: Mutex::default(),
        }
    }

    async fn fault(&self, what: &str, key: &str) -> Option<bool> {
        tokio::task::yield_now().await;
        // No slower than the SDK's operation timeout, which would fail the call instead.
        let most = cartpanda_redtrack::ops::budget::SDK_OPERATION.as_millis() as usize;
        self.storm.slow(3, most, "ledger", what).await;
        if self.storm.strikes(4) {
            self.storm
                .trace
                .say(format_args!("  ledger {what} {key}: fails before applying"));
            return Some(false);
        }
        if self.storm.strikes(4) {
            self.storm
                .trace
                .say(format_args!("  ledger {what} {key}: applied, answer lost"));
            return Some(true);
        }
        None
    }
}

fn lost() -> LedgerError {
    LedgerError::Unavailable("simulated".to_owned())
}

#[async_trait]
impl Ledger for FaultyLedger {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
        match self.fault("claim", &claim.key).await {
            Some(false) => Err(lost()),
            Some(true) => {
                // Applied; the SDK retries the same request, which meets the record it wrote.
                self.inner.claim(claim).await?;
                self.inner.claim(claim).await
            }
            None => self.inner.claim(claim).await,
        }
    }

    async fn finish(
        &self,
        claim: &Claim,
        finish: Finish,
        now_ms: i64,
        expires_at_s: i64,
    ) -> Result<bool, LedgerError> {
        let fault = self.fault("finish", &claim.key).await;
        if fault.is_some() && finish == Finish::Sent {
            self.sent_write_lost.lock().unwrap().push(claim.key.clone());
        }
        match fault {
            Some(false) => Err(lost()),
            Some(true) => {
                self.inner
                    .finish(claim, finish, now_ms, expires_at_s)
                    .await?;
                Err(lost())
            }
            None => self.inner.finish(claim, finish, now_ms, expires_at_s).await,
        }
    }

    async fn release(&self, claim: &Claim) -> Result<(), LedgerError> {
        match self.fault("release", &claim.key).await {
            Some(false) => Err(lost()),
            Some(true) => {
                self.inner.release(claim).await?;
                Err(lost())
            }
            None => self.inner.release(claim).await,
        }
    }

    async fn note(&self, note: &Note) -> Result<(), LedgerError> {
        self.notes
            .lock()
            .unwrap()
            .push((note.order_id.clone(), note.reason.clone()));
        self.inner.note(note).await
    }

    async fn note_refusal(&self, refusal: &Refusal) -> Result<(), LedgerError> {
        self.refusals
            .lock()
            .unwrap()
            .push(refusal.order_id.clone().unwrap_or_default());
        self.inner.note_refusal(refusal).await
    }

    async fn look_up(&self, key: &str) -> Result<Option<Record>, LedgerError> {
        tokio::task::yield_now().await;
        if self.storm.strikes(4) {
            self.storm
                .trace
                .say(format_args!("  ledger look_up {key}: fails"));
            return Err(lost());
        }
        self.inner.look_up(key).await
    }
}

// ------------------------------------------------------------------------------------------------
// RedTrack: records every postback it accepted; 5xx and 429 (before accepting), 4xx (refused),
// slow (past the caller's deadline: a timeout, before or after accepting), accepted with its
// answer lost.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postback {
    pub event_id: String,
    pub conversion_type: String,
    pub sum: String,
    pub click_id: String,
}

pub struct SimRedTrack {
    pub storm: Storm,
    pub accepted: Mutex<Vec<Postback>>,
    /// Event IDs whose acceptance was followed by a lost answer (window 2).
    pub answer_lost: Mutex<Vec<String>>,
}

fn postback_of(url: &url::Url) -> Postback {
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    Postback {
        event_id: get("rdtk_event_id"),
        conversion_type: get("type"),
        sum: get("sum"),
        click_id: get("clickid"),
    }
}

fn unavailable(reason: &str, status: Option<u16>) -> SendError {
    SendError::Unavailable {
        target: "sim".to_owned(),
        reason: reason.to_owned(),
        last_status: status,
        attempts: 1,
    }
}

impl SimRedTrack {
    fn accept(&self, postback: Postback) {
        self.accepted.lock().unwrap().push(postback);
    }

    fn lose_answer(&self, event_id: &str, how: &str) -> SendError {
        self.storm
            .trace
            .say(format_args!("  redtrack {event_id}: accepted, {how}"));
        self.answer_lost.lock().unwrap().push(event_id.to_owned());
        unavailable("timeout", None)
    }

    /// A slow answer: past the deadline it is a timeout (RedTrack may have accepted meanwhile).
    async fn slow(&self, postback: &Postback, deadline: Instant) -> Option<SendError> {
        if self.storm.real_time || !self.storm.strikes(4) {
            return None;
        }
        let ms = self.storm.dice.below(6_000) as u64;
        let answer_at = Instant::now() + Duration::from_millis(ms);
        // As the real client cuts its attempt: the retry margin before the deadline, but at least
        // the first attempt's floor.
        let deadline = deadline
            .checked_sub(cartpanda_redtrack::ops::budget::AFTER_SEND)
            .unwrap_or(deadline)
            .max(Instant::now() + cartpanda_redtrack::postback::redtrack::FIRST_ATTEMPT_FLOOR);
        if answer_at <= deadline {
            tokio::time::sleep_until(answer_at).await;
            return None;
        }
        tokio::time::sleep_until(deadline).await;
        if self.storm.dice.chance(50) {
            self.accept(postback.clone());
            return Some(self.lose_answer(&postback.event_id, "timed out after accepting"));
        }
        self.storm
            .trace
            .say(format_args!("  redtrack {}: timeout", postback.event_id));
        Some(unavailable("timeout", None))
    }
}

#[async_trait]
impl Tracker for SimRedTrack {
    async fn send(&self, url: &url::Url, deadline: Instant) -> Result<Accepted, SendError> {
        tokio::task::yield_now().await;
        let postback = postback_of(url);
        let id = postback.event_id.clone();
        if let Some(err) = self.slow(&postback, deadline).await {
            return Err(err);
        }
        if self.storm.strikes(8) {
            self.storm.trace.say(format_args!("  redtrack {id}: 503"));
            return Err(unavailable("HTTP 503", Some(503)));
        }
        if self.storm.strikes(3) {
            self.storm.trace.say(format_args!("  redtrack {id}: 429"));
            return Err(unavailable("HTTP 429", Some(429)));
        }
        if self.storm.strikes(2) {
            self.storm.trace.say(format_args!("  redtrack {id}: 400"));
            return Err(SendError::Rejected {
                target: "sim".to_owned(),
                status: 400,
                attempts: 1,
            });
        }
        self.accept(postback);
        if self.storm.strikes(4) {
            return Err(self.lose_answer(&id, "answer lost"));
        }
        self.storm
            .trace
            .say(format_args!("  redtrack {id}: accepted"));
        Ok(Accepted {
            status: 200,
            attempts: 1,
        })
    }
}

// ------------------------------------------------------------------------------------------------
// The redrive queue (messages with their receive counts; refuses during the storm) and its DLQ.

pub struct SimQueue {
    pub name: &'static str,
    pub storm: Storm,
    /// Whether it refuses now and then during the storm.
    pub faulty: bool,
    pub messages: Mutex<Vec<(RedriveMessage, u32)>>,
    /// Event IDs of the messages the queue refused.
    pub refused: Mutex<Vec<String>>,
    /// Event IDs of the "record SENT" messages it took.
    pub record_sent: Mutex<Vec<String>>,
}

impl SimQueue {
    pub fn new(name: &'static str, storm: &Storm, faulty: bool) -> Self {
        SimQueue {
            name,
            storm: storm.clone(),
            faulty,
            messages: Mutex::default(),
            refused: Mutex::default(),
            record_sent: Mutex::default(),
        }
    }

    pub fn holds(&self, event_id: &str) -> bool {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .any(|(m, _)| m.event_id == event_id)
    }
}

#[async_trait]
impl RedriveQueue for SimQueue {
    async fn enqueue(&self, message: &RedriveMessage, _delay_s: u32) -> Result<(), QueueError> {
        tokio::task::yield_now().await;
        let name = self.name;
        if self.faulty && self.storm.strikes(10) {
            self.storm
                .trace
                .say(format_args!("  {name} {}: refused", message.event_id));
            self.refused.lock().unwrap().push(message.event_id.clone());
            return Err(QueueError("simulated".to_owned()));
        }
        self.storm
            .trace
            .say(format_args!("  {name} {}: queued", message.event_id));
        if message.kind == RedriveKind::RecordSent {
            self.record_sent
                .lock()
                .unwrap()
                .push(message.event_id.clone());
        }
        self.messages.lock().unwrap().push((message.clone(), 0));
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// Cartpanda's API: each order as it stands at the end of its life; unavailable now and then.

pub struct SimApi {
    pub storm: Storm,
    pub orders: HashMap<String, Value>,
}

#[async_trait]
impl OrderSource for SimApi {
    async fn fetch(&self, url: &str, _token: &Secret) -> Result<Option<Order>, VerifyError> {
        tokio::task::yield_now().await;
        let id = url.rsplit('/').next().unwrap_or_default();
        if self.storm.strikes(5) {
            self.storm.trace.say(format_args!("  api order {id}: 503"));
            return Err(VerifyError::Unavailable("HTTP 503".to_owned()));
        }
        let order = self.orders.get(id).cloned();
        Ok(order.map(|o| serde_json::from_value(o).expect("the model's orders read")))
    }
}

// ------------------------------------------------------------------------------------------------
// The order list as Cartpanda's API serves it to reconciliation, in today's shape, with the two
// other shapes the reference lists and the times' forms ready to be switched on (issue 22's
// parsing): one flag each.

/// How the list wraps its orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListShape {
    /// `{"orders": {"data": [...], "current_page", "last_page", ...}}` (today's).
    Paginator,
    /// `{"orders": [...], "meta": {"current_page", "last_page", ...}}`.
    Meta,
    /// A bare array.
    Bare,
}

/// How the list writes `created_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeForm {
    /// `2026-11-24 10:00:00` read as UTC (today's).
    Naive,
    /// `2026-11-24T07:00:00-03:00`.
    SaoPaulo,
    /// `2026-11-24 07:00:00`, São Paulo's local time, the order's `shop.timezone` saying so (and
    /// the list's filters read in that zone).
    SaoPauloNaive,
}

/// The shape a history's fake list answers in, by its seed (each shape a third of the histories;
/// not drawn from the history's dice, so kept seeds replay the histories they were kept for).
pub fn list_shape_of(seed: u64) -> ListShape {
    [ListShape::Paginator, ListShape::Meta, ListShape::Bare][(seed % 3) as usize]
}

/// The form of a history's order times, by its seed, as [`list_shape_of`].
pub fn times_of(seed: u64) -> TimeForm {
    [TimeForm::Naive, TimeForm::SaoPaulo, TimeForm::SaoPauloNaive][((seed / 3) % 3) as usize]
}

/// One page of `orders` (every order fits: pages of 50).
pub fn list_page(orders: Vec<Value>, shape: ListShape, page: u32) -> Value {
    let per_page = 50usize;
    let last_page = orders.len().div_ceil(per_page).max(1) as u32;
    let data: Vec<Value> = orders
        .into_iter()
        .skip((page.max(1) as usize - 1) * per_page)
        .take(per_page)
        .collect();
    let total = data.len();
    match shape {
        ListShape::Paginator => json!({"orders": {"data": data, "current_page": page,
            "last_page": last_page, "per_page": per_page, "total": total}}),
        ListShape::Meta => json!({"orders": data, "meta": {"current_page": page,
            "last_page": last_page, "per_page": per_page, "total": total}}),
        ListShape::Bare => json!(data),
    }
}

/// A time in the list's form.
pub fn list_time(ms: i64, form: TimeForm) -> String {
    let s = ms.div_euclid(1000);
    match form {
        TimeForm::Naive => cartpanda_redtrack::inbound::datetime::format_utc(s),
        TimeForm::SaoPaulo => {
            let local = cartpanda_redtrack::inbound::datetime::format_utc(s - 3 * 3600);
            format!("{}-03:00", local.replacen(' ', "T", 1))
        }
        TimeForm::SaoPauloNaive => cartpanda_redtrack::inbound::datetime::format_utc(s - 3 * 3600),
    }
}

// ------------------------------------------------------------------------------------------------
// The shop and the model of an order's life.

/// How the history's shop is set up.
#[derive(Debug, Clone, Copy)]
pub struct Shop {
    /// Sales and upsells come as Cartpanda's S2S postback (refunds and chargebacks stay
    /// webhooks: S2S never sends them).
    pub s2s: bool,
    /// Orders are verified against Cartpanda's API.
    pub verify: bool,
    /// `DEDUP_TTL_DAYS`.
    pub memory_days: u32,
    /// The operator redrives the DLQ once RedTrack recovers.
    pub operator_redrives: bool,
    /// The history ends with the clock jumping past the memory and every input delivered again.
    pub past_the_memory: bool,
    /// The form of its orders' times ([`times_of`]: by seed, not by the dice).
    pub times: TimeForm,
}

impl Shop {
    /// Drawn first, so a shrunk history keeps its shop and its ending.
    pub fn new(dice: &Dice) -> Shop {
        Shop {
            s2s: dice.chance(30),
            verify: dice.chance(50),
            memory_days: if dice.chance(50) { 400 } else { 30 },
            operator_redrives: dice.chance(80),
            past_the_memory: dice.chance(20),
            times: TimeForm::Naive,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Life {
    pub id: u64,
    pub test: bool,
    pub click_id: bool,
    /// Created longer ago than the ledger's memory: nothing is sent.
    pub old: bool,
    /// The front offer, in cents.
    pub front: i64,
    /// Upsell lines: (line ID, price in cents, label).
    pub upsells: Vec<(u64, i64, String)>,
    pub refunded: bool,
    /// The refund is listed in `refunds[]` (else only the status says `Refunded`).
    pub refund_record: bool,
    /// Charged back; `true`: only as an `order.updated` with `chargeback_received = 1`.
    pub chargeback: Option<bool>,
    /// Paid after it was created (boleto, PIX): an `order.created` with `payment_status` 1 first.
    pub paid_late: bool,
    /// Created, never paid, cancelled: `order.created` and `order.cancelled` only; earns nothing.
    pub cancelled_unpaid: bool,
    /// How the webhooks write amounts: 0 `"505.07"`, 1 `505.07`, 2 `"1.505,07"` (Brazilian),
    /// 3 Brazilian with the total also in cents (`unformatted_total_price`).
    pub shape: u8,
}

/// An amount as the order's webhooks write it.
fn amount(cents: i64, shape: u8) -> Value {
    match shape {
        0 => json!(money(cents)),
        1 => json!(cents as f64 / 100.0),
        _ => {
            let units = cents / 100;
            let grouped = if units >= 1000 {
                format!("{}.{:03}", units / 1000, units % 1000)
            } else {
                units.to_string()
            };
            json!(format!("{grouped},{:02}", cents % 100))
        }
    }
}

pub fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// One input Cartpanda sends: a webhook (event, order) or an S2S postback (its query).
#[derive(Debug, Clone)]
pub enum Input {
    Webhook(String, Value),
    S2s(BTreeMap<String, String>),
}

impl Input {
    pub fn label(&self) -> String {
        match self {
            Input::Webhook(event, order) => format!("{event} of {}", order["id"]),
            Input::S2s(q) => format!(
                "s2s {} of {}",
                q.get("upsell_no")
                    .map_or("sale".to_owned(), |n| format!("upsell {n}")),
                q["order_id"]
            ),
        }
    }

    /// A sale or an upsell (what reconciliation can make good when it is lost).
    pub fn is_sale(&self) -> bool {
        match self {
            Input::Webhook(event, _) => event == "order.paid" || event == "order.upsell",
            Input::S2s(_) => true,
        }
    }

    /// How far into its order's life the input is: (upsells taken, refunded, charged back).
    fn stage(&self) -> (usize, bool, bool) {
        match self {
            Input::Webhook(event, order) => (
                order["line_items"].as_array().map_or(1, Vec::len) - 1,
                event == "order.refunded",
                event == "order.chargeback" || event == "order.updated",
            ),
            Input::S2s(q) => (
                q.get("upsell_no").and_then(|n| n.parse().ok()).unwrap_or(0),
                false,
                false,
            ),
        }
    }

    pub fn order_id(&self) -> String {
        match self {
            Input::Webhook(_, order) => order["id"].to_string(),
            Input::S2s(q) => q["order_id"].clone(),
        }
    }

    fn delivery(&self) -> Delivery {
        match self {
            Input::Webhook(event, order) => {
                let body = json!({"event": event, "order": order, "webhook": {"id": 1}});
                webhook::parse(body.to_string().as_bytes()).expect("the model's webhooks parse")
            }
            Input::S2s(q) => {
                let query: HashMap<String, String> =
                    q.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                cartpanda_redtrack::inbound::s2s::delivery(&query)
            }
        }
    }
}

impl Life {
    pub fn new(id: u64, dice: &Dice) -> Life {
        let upsells = (0..dice.below(4))
            .map(|n| {
                let label = if dice.chance(30) {
                    "Downsell"
                } else {
                    "Upsell"
                };
                (
                    id * 10 + n as u64 + 1,
                    (dice.below(200) as i64 + 1) * 100 + 90,
                    format!("{label} {}", n + 1),
                )
            })
            .collect();
        Life {
            id,
            test: dice.chance(10),
            click_id: !dice.chance(10),
            old: dice.chance(5),
            front: (dice.below(500) as i64 + 5) * 100 + 7,
            upsells,
            refunded: dice.chance(20),
            refund_record: dice.chance(50),
            chargeback: dice.chance(15).then(|| dice.chance(50)),
            shape: dice.below(4) as u8,
            paid_late: false,
            cancelled_unpaid: false,
        }
    }

    fn total(&self, upsells: usize) -> i64 {
        self.front + self.upsells[..upsells].iter().map(|u| u.1).sum::<i64>()
    }

    /// When the order was created: an hour before the history, or past the memory.
    pub fn created_ms(&self, shop: &Shop) -> i64 {
        if self.old {
            START_MS - (i64::from(shop.memory_days) + 3) * DAY_MS
        } else {
            START_MS - 3_600_000
        }
    }

    /// The event ID of upsell `n` (0-based): its line's on the webhook path, its product's on the
    /// S2S path.
    fn upsell_event_id(&self, shop: &Shop, n: usize) -> String {
        if shop.s2s {
            format!("{}-upsell-s2s-p{}", self.id, 100 + n)
        } else {
            format!("{}-upsell-{}", self.id, self.upsells[n].0)
        }
    }

    /// The conversions the order earned: event ID → (type, sum).
    pub fn earned(&self, shop: &Shop) -> BTreeMap<String, (String, String)> {
        let mut out = BTreeMap::new();
        if self.test || !self.click_id || self.old || self.cancelled_unpaid {
            return out;
        }
        let all = self.upsells.len();
        out.insert(
            format!("{}-purchase", self.id),
            ("Purchase".into(), money(self.front)),
        );
        for (n, (_, price, _)) in self.upsells.iter().enumerate() {
            out.insert(
                self.upsell_event_id(shop, n),
                ("Upsell".into(), money(*price)),
            );
        }
        if self.refunded {
            // The refund's key: its record's ID, else `1` (made from the status alone).
            let key = if self.refund_record { 700 + self.id } else { 1 };
            out.insert(
                format!("{}-refund-{key}", self.id),
                ("Refund".into(), money(self.total(all))),
            );
        }
        if self.chargeback.is_some() {
            out.insert(
                format!("{}-chargeback", self.id),
                ("Chargeback".into(), money(self.total(all))),
            );
        }
        out
    }

    /// The order as a webhook carries it with its first `upsells` upsells.
    pub fn order(&self, shop: &Shop, upsells: usize) -> Value {
        let shape = self.shape;
        let mut lines = vec![json!({"id": self.id * 10, "product_id": 1, "name": "Front",
            "price": amount(self.front, shape), "quantity": 1, "up_sell_id": 0})];
        for (n, (line, price, label)) in self.upsells[..upsells].iter().enumerate() {
            lines.push(json!({"id": line, "product_id": 100 + n, "name": label,
                "price": amount(*price, shape), "quantity": 1, "up_sell_id": 7 + n, "up_sell_type": label}));
        }
        let created = list_time(self.created_ms(shop), shop.times);
        let mut order = json!({
            "id": self.id, "test": u8::from(self.test), "currency": "BRL",
            "total_price": amount(self.total(upsells), shape), "status_id": "New",
            "payment_status": 3, "chargeback_received": 0, "created_at": created,
            "email": "buyer@example.com", "line_items": lines, "refunds": [],
            "customer": {"first_name": "Ana", "last_name": "Souza", "email": "buyer@example.com"},
            "shop": {"slug": "sim-shop"},
        });
        if self.click_id {
            order["checkout_params"] = json!({"cid": CLICK_ID});
        }
        if shop.times == TimeForm::SaoPauloNaive {
            order["shop"]["timezone"] = json!("America/Sao_Paulo");
        }
        if shape == 3 {
            order["unformatted_total_price"] = json!(self.total(upsells));
        }
        order
    }

    /// The order refunded in full: its status, and its refund record when it has one.
    fn refund(&self, order: &mut Value) {
        order["status_id"] = json!("Refunded");
        if self.refund_record {
            let all = self.upsells.len();
            order["refunds"] = json!([{"id": 700 + self.id,
                "total_amount": amount(self.total(all), self.shape)}]);
        }
    }

    /// The order created, not (yet) paid.
    fn unpaid(&self, shop: &Shop) -> Value {
        let mut order = self.order(shop, 0);
        order["payment_status"] = json!(1);
        order
    }

    /// The order cancelled unpaid.
    fn cancelled(&self, shop: &Shop) -> Value {
        let mut order = self.order(shop, 0);
        order["payment_status"] = json!(4);
        order["status_id"] = json!("Cancelled");
        order
    }

    /// The order as Cartpanda's API shows it at the end of its life.
    pub fn in_the_api(&self, shop: &Shop) -> Value {
        if self.cancelled_unpaid {
            return self.cancelled(shop);
        }
        let mut order = self.order(shop, self.upsells.len());
        if self.refunded {
            self.refund(&mut order);
        }
        if self.chargeback.is_some() {
            order["chargeback_received"] = json!(1);
        }
        order
    }

    /// The order as Cartpanda's list shows it once `emitted` were sent (none of its own: not
    /// listed yet).
    pub fn as_listed(&self, shop: &Shop, emitted: &[Input]) -> Option<Value> {
        let id = self.id.to_string();
        let stages: Vec<(usize, bool, bool)> = emitted
            .iter()
            .filter(|i| i.order_id() == id)
            .map(Input::stage)
            .collect();
        let upsells = stages.iter().map(|s| s.0).max()?;
        let mut order = self.order(shop, upsells.min(self.upsells.len()));
        let kinds: Vec<&str> = emitted
            .iter()
            .filter(|i| i.order_id() == id)
            .map(|i| match i {
                Input::Webhook(event, _) => event.as_str(),
                Input::S2s(_) => "s2s",
            })
            .collect();
        if kinds.contains(&"order.cancelled") {
            return Some(self.cancelled(shop));
        }
        if kinds.iter().all(|k| *k == "order.created") {
            order["payment_status"] = json!(1);
        }
        if stages.iter().any(|s| s.1) {
            self.refund(&mut order);
        }
        if stages.iter().any(|s| s.2) {
            order["chargeback_received"] = json!(1);
        }
        Some(order)
    }

    /// The S2S postback of the sale (`n` = 0) or of upsell `n` (1-based).
    fn s2s(&self, shop: &Shop, n: usize) -> Input {
        let (product, name, price) = if n == 0 {
            ("1".to_owned(), "Front".to_owned(), self.front)
        } else {
            let (_, price, label) = &self.upsells[n - 1];
            ((100 + n - 1).to_string(), label.clone(), *price)
        };
        let mut q: BTreeMap<String, String> = [
            ("order_id", self.id.to_string()),
            ("product_id", product),
            ("product_name", name.clone()),
            ("shop_slug", "sim-shop".to_owned()),
            ("total_price", money(price)),
            ("currency", "BRL".to_owned()),
            ("is_test", u8::from(self.test).to_string()),
            (
                "datetime_utc",
                list_time(self.created_ms(shop), TimeForm::Naive),
            ),
            (
                "cid",
                if self.click_id { CLICK_ID } else { "{cid}" }.to_owned(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if n > 0 {
            q.insert("upsell_no".to_owned(), n.to_string());
            q.insert("order_type".to_owned(), name.to_lowercase());
        }
        Input::S2s(q)
    }

    /// Every input of the order's life, in the order Cartpanda would send them.
    pub fn inputs(&self, shop: &Shop) -> Vec<Input> {
        let all = self.upsells.len();
        let webhook = |event: &str, order: Value| Input::Webhook(event.to_owned(), order);
        let mut out = Vec::new();
        if self.paid_late || self.cancelled_unpaid {
            out.push(webhook("order.created", self.unpaid(shop)));
        }
        if self.cancelled_unpaid {
            out.push(webhook("order.cancelled", self.cancelled(shop)));
            return out;
        }
        if shop.s2s {
            out.extend((0..=all).map(|n| self.s2s(shop, n)));
        } else {
            out.push(webhook("order.paid", self.order(shop, 0)));
            for n in 1..=all {
                out.push(webhook("order.upsell", self.order(shop, n)));
            }
        }
        if self.refunded {
            let mut order = self.order(shop, all);
            self.refund(&mut order);
            out.push(webhook("order.refunded", order));
        }
        if let Some(only_updated) = self.chargeback {
            let mut order = self.order(shop, all);
            order["chargeback_received"] = json!(1);
            let event = if only_updated {
                "order.updated"
            } else {
                "order.chargeback"
            };
            out.push(webhook(event, order));
        }
        out
    }

    /// Simpler versions of this life, for shrinking: one upsell fewer, no refund, no chargeback.
    pub fn simpler(&self) -> Vec<Life> {
        let mut out = Vec::new();
        if !self.upsells.is_empty() {
            let mut l = self.clone();
            l.upsells.pop();
            out.push(l);
        }
        if self.refunded {
            out.push(Life {
                refunded: false,
                ..self.clone()
            });
        }
        if self.chargeback.is_some() {
            out.push(Life {
                chargeback: None,
                ..self.clone()
            });
        }
        out
    }
}

/// The orders of a history (1–4), from its seed. What was added to the model later is drawn from
/// a generator of its own, so the seeds kept in `tests/sim.rs` still replay their histories.
pub fn lives(seed: u64) -> Vec<Life> {
    let dice = Dice::new(seed ^ 0x5eed);
    let later = Dice::new(seed ^ 0x1a7e);
    (0..1 + dice.below(4))
        .map(|n| Life::new(1000 + n as u64, &dice))
        .map(|life| Life {
            paid_late: later.chance(10),
            cancelled_unpaid: later.chance(5),
            ..life
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------
// An instance dying mid-flight: the future is dropped after a number of polls.

struct DieAfter<F> {
    inner: Pin<Box<F>>,
    polls_left: u32,
}

impl<F: Future> Future for DieAfter<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polls_left == 0 {
            return Poll::Ready(None);
        }
        self.polls_left -= 1;
        self.inner.as_mut().poll(cx).map(Some)
    }
}

// ------------------------------------------------------------------------------------------------
// One history's world.

pub struct World {
    pub shop: Shop,
    pub bridge: Arc<Bridge>,
    /// Reconciliation of the shop (the moto variant), over the fake order list.
    pub reconciler: Option<Reconciler>,
    /// The orders as Cartpanda's list shows them now (what the inputs emitted so far made).
    pub listed: Arc<Mutex<Vec<Value>>>,
    /// Inputs emitted so far (delivered or lost).
    pub emitted: Mutex<Vec<Input>>,
    pub redriver: Redriver,
    pub ledger: Arc<FaultyLedger>,
    pub redtrack: Arc<SimRedTrack>,
    pub queue: Arc<SimQueue>,
    pub dlq: Arc<SimQueue>,
    pub clock: Arc<SimClock>,
    pub storm: Storm,
    /// Event IDs RedTrack accepted during a delivery of their order that then died mid-flight or
    /// at its Lambda timeout (window 1: after RedTrack accepted, before the record said so).
    pub died: Mutex<Vec<String>>,
    /// Answers that do not mean what they say, found as they were given.
    pub lies: Mutex<Vec<String>>,
    /// Event IDs ever answered `queued`.
    pub queued: Mutex<BTreeSet<String>>,
    /// Inputs lost (never delivered), and conversions reconciliation sent.
    pub lost: AtomicI64,
    pub reconciled: AtomicI64,
    /// Per order ID, the inputs that carried it to the bridge (a record's `via` must be one).
    pub vias: Mutex<BTreeMap<String, BTreeSet<&'static str>>>,
    /// The zone the last reconciliation run wrote its filters in (its summary's `timezone`).
    pub zone: Mutex<Option<String>>,
}

/// What a history runs over beside its seed and lives.
pub struct Setup {
    /// The ledger: the in-memory one, or DynamoDB's.
    pub base: Arc<dyn Ledger>,
    /// Keep the trace.
    pub kept: bool,
    /// Real time (the moto variant): no slow dependencies.
    pub real_time: bool,
    /// Reconciliation on: the settings' variables (the list's URL and the like) and the table
    /// (watermarks); the order list the fake Cartpanda serves is `listed`.
    pub reconcile: Option<(HashMap<String, String>, DynamoLedger)>,
    pub listed: Arc<Mutex<Vec<Value>>>,
}

impl Setup {
    /// The deterministic simulation's: the in-memory ledger, no reconciliation.
    pub fn in_memory(base: Arc<dyn Ledger>, kept: bool) -> Setup {
        Setup {
            base,
            kept,
            real_time: false,
            reconcile: None,
            listed: Arc::default(),
        }
    }
}

/// The world of one history.
pub fn world(seed: u64, lives: &[Life], setup: Setup) -> World {
    let dice = Dice::new(seed);
    let storm = Storm {
        dice,
        on: Arc::new(Mutex::new(true)),
        trace: Trace {
            lines: Arc::default(),
            kept: setup.kept,
        },
        real_time: setup.real_time,
    };
    let base = setup.base;
    let shop = Shop {
        times: times_of(seed),
        ..Shop::new(&storm.dice)
    };
    storm.trace.say(format_args!("shop: {shop:?}"));
    let clock = Arc::new(SimClock::new());
    let ledger = Arc::new(FaultyLedger::new(base, storm.clone()));
    let redtrack = Arc::new(SimRedTrack {
        storm: storm.clone(),
        accepted: Mutex::default(),
        answer_lost: Mutex::default(),
    });
    let queue = Arc::new(SimQueue::new("queue", &storm, true));
    let dlq = Arc::new(SimQueue::new("dlq", &storm, false));
    let api = SimApi {
        storm: storm.clone(),
        orders: lives
            .iter()
            .map(|l| (l.id.to_string(), l.in_the_api(&shop)))
            .collect(),
    };
    let order_url = setup
        .reconcile
        .as_ref()
        .and_then(|(env, _)| env.get("CARTPANDA_ORDER_URL").cloned());
    let config = config(&shop, order_url.as_deref());
    let ttl_days = config.ttl_days;
    let bridge = Arc::new(Bridge {
        config,
        // As the webhook function has it: the memory of sent conversions over the ledger.
        ledger: Arc::new(CachedLedger::new(ledger.clone())),
        tracker: redtrack.clone(),
        clock: clock.clone(),
        queue: Some(queue.clone()),
        shops: None,
        orders: Some(Arc::new(api)),
    });
    let reconciler = setup
        .reconcile
        .map(|(env, table)| reconciler(&bridge, &shop, env, table));
    let redriver = Redriver {
        ledger: ledger.clone(),
        tracker: redtrack.clone(),
        clock: clock.clone(),
        ttl_days,
        dlq: Some(dlq.clone()),
    };
    World {
        shop,
        bridge,
        reconciler,
        listed: setup.listed,
        emitted: Mutex::default(),
        redriver,
        ledger,
        redtrack,
        queue,
        dlq,
        clock,
        storm,
        died: Mutex::default(),
        lies: Mutex::default(),
        queued: Mutex::default(),
        lost: AtomicI64::new(0),
        reconciled: AtomicI64::new(0),
        vias: Mutex::default(),
        zone: Mutex::default(),
    }
}

/// The reconciler of the history's shop (its default shop), listing the fake order list.
fn reconciler(
    bridge: &Arc<Bridge>,
    shop: &Shop,
    mut env: HashMap<String, String>,
    table: DynamoLedger,
) -> Reconciler {
    env.insert("RECONCILE".into(), "true".into());
    env.insert("RECONCILE_S2S".into(), shop.s2s.to_string());
    env.insert("RECONCILE_SETTLE_MIN".into(), "0".into());
    env.insert("DEDUP_TTL_DAYS".into(), shop.memory_days.to_string());
    let mut settings = ReconcileSettings::from_lookup(|k| env.get(k).cloned()).expect("settings");
    settings.margin = Duration::from_millis(300);
    Reconciler {
        bridge: Arc::clone(bridge),
        lister: Arc::new(OrderLister::new(settings.list.clone()).expect("lister")),
        table,
        settings,
    }
}

/// The webhook function's configuration; `order_url`: where Cartpanda's single orders are read
/// (the fake's, when reconciling).
fn config(shop: &Shop, order_url: Option<&str>) -> Config {
    let memory = shop.memory_days.to_string();
    let mut env: HashMap<&str, &str> = HashMap::from([
        (
            "REDTRACK_POSTBACK_URL",
            "https://trk.example/postback?clickid={cid}&sum={total_price}&status=approved",
        ),
        ("WEBHOOK_TOKEN", "a-token-long-enough-for-the-sim"),
        ("DEDUP_TABLE", "sim"),
        ("DEDUP_TTL_DAYS", memory.as_str()),
    ]);
    if shop.verify {
        env.insert("CARTPANDA_API_TOKEN", "a-cartpanda-api-token");
    }
    if let Some(url) = order_url {
        env.insert("CARTPANDA_ORDER_URL", url);
    }
    Config::from_lookup(|k| env.get(k).map(|v| (*v).to_owned())).expect("config")
}

impl World {
    /// `via` carried `order_id` to the bridge.
    fn used(&self, order_id: &str, via: Via) {
        self.vias
            .lock()
            .unwrap()
            .entry(order_id.to_owned())
            .or_default()
            .insert(via.as_str());
    }

    fn lie(&self, line: String) {
        self.storm.trace.say(format_args!("  LIE: {line}"));
        self.lies.lock().unwrap().push(line);
    }

    fn sent_before(&self, event_id: &str) -> bool {
        self.redtrack
            .accepted
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.event_id == event_id)
    }

    /// Every answer means what it says, checked as it is given: `sent` and `duplicate`: RedTrack
    /// has it; `queued`: a message is in the queue; a skip for no click ID or age: its note.
    fn check_answer(&self, order_id: &str, handled: &Handled) {
        match handled {
            Handled::Converted(report) => {
                for c in &report.conversions {
                    let id = &c.event_id;
                    self.storm
                        .trace
                        .say(format_args!("  answer {id}: {}", c.outcome.as_str()));
                    match c.outcome {
                        Outcome::Sent | Outcome::Duplicate if !self.sent_before(id) => {
                            self.lie(format!(
                                "{id} answered {} but RedTrack never had it",
                                c.outcome.as_str()
                            ))
                        }
                        Outcome::Queued if !self.queue.holds(id) => {
                            self.lie(format!("{id} answered queued but no message is queued"))
                        }
                        Outcome::Queued => {
                            self.queued.lock().unwrap().insert(id.clone());
                        }
                        _ => {}
                    }
                }
            }
            Handled::Skipped { reason, .. } => {
                let code = reason.code();
                self.storm
                    .trace
                    .say(format_args!("  answer: skipped, {code}"));
                if matches!(code, "no_click_id" | "too_old") {
                    let notes = self.ledger.notes.lock().unwrap();
                    if !notes.iter().any(|(o, r)| o == order_id && r == code) {
                        drop(notes);
                        self.lie(format!("{order_id} skipped ({code}) with no note"));
                    }
                }
            }
        }
    }
}

/// Lambda timeouts an invocation may have: 3 s (Lambda's default), 6, 15 and 30 s.
const TIMEOUTS_MS: [i64; 4] = [3_000, 6_000, 15_000, 30_000];

/// One input delivered within a Lambda invocation of `timeout_ms`, killed at its deadline: its
/// status (`None`: the instance died before answering).
pub async fn deliver(w: &World, input: &Input, die_after: Option<u32>) -> Option<u16> {
    let timeout_ms = if *w.storm.on.lock().unwrap() {
        TIMEOUTS_MS[w.storm.dice.below(TIMEOUTS_MS.len())]
    } else {
        30_000
    };
    let delivery = input.delivery();
    let order_id = input.order_id();
    let profile = Arc::clone(&w.bridge.config.profile);
    // The route it comes by, as the HTTP handler says (`via`).
    let via = match input {
        Input::S2s(_) => Via::S2s,
        Input::Webhook(..) => Via::Webhook,
    };
    w.used(&order_id, via);
    let options = DeliveryOptions {
        deadline_ms: Some(w.clock.now_ms() + timeout_ms),
        via,
        ..DeliveryOptions::default()
    };
    let killed_at = Instant::now() + Duration::from_millis(timeout_ms as u64);
    let accepted_before = w.redtrack.accepted.lock().unwrap().len();
    let work = async {
        match w.bridge.deliver(&profile, delivery, options).await {
            Ok(answer) => {
                w.check_answer(&order_id, &answer.result);
                answer.status()
            }
            Err(err) => {
                let status = err.status();
                w.storm.trace.say(format_args!("  answer: {status} {err}"));
                if status == 422 && !w.ledger.refusals.lock().unwrap().contains(&order_id) {
                    w.lie(format!("{order_id} refused (422) with no refusal record"));
                }
                status
            }
        }
    };
    let work = async {
        let timed = tokio::time::timeout_at(killed_at, work).await;
        if timed.is_err() {
            w.storm
                .trace
                .say(format_args!("  killed at its {timeout_ms} ms timeout"));
        }
        timed.ok()
    };
    let status = match die_after {
        None => work.await,
        Some(polls) => DieAfter {
            inner: Box::pin(work),
            polls_left: polls,
        }
        .await
        .flatten(),
    };
    if status.is_none() {
        died(w, &order_id, accepted_before);
    }
    status
}

/// A delivery of `order_id` died: the conversions of that order RedTrack accepted since
/// `accepted_before` may have no record saying so (window 1's first case).
fn died(w: &World, order_id: &str, accepted_before: usize) {
    let prefix = format!("{order_id}-");
    let accepted = w.redtrack.accepted.lock().unwrap();
    w.died.lock().unwrap().extend(
        accepted[accepted_before..]
            .iter()
            .filter(|p| p.event_id.starts_with(&prefix))
            .map(|p| p.event_id.clone()),
    );
}

/// The storm: the inputs in a random order, some twice, some together, some cut short; the clock
/// jumping between batches (past leases now and then, by days rarely).
pub async fn storm(w: &World, lives: &[Life]) -> Vec<(Input, Option<u16>)> {
    let dice = w.storm.dice.clone();
    let mut pending: Vec<Input> = Vec::new();
    for life in lives {
        for input in life.inputs(&w.shop) {
            if dice.chance(25) {
                pending.push(input.clone());
            }
            pending.push(input);
        }
    }
    let mut done = Vec::new();
    let mut days_jumped = 0;
    while !pending.is_empty() {
        let mut batch: Vec<Input> = Vec::new();
        for _ in 0..1 + dice.below(3) {
            if !pending.is_empty() {
                let at = dice.below(pending.len());
                batch.push(pending.swap_remove(at));
            }
        }
        batch.retain(|input| {
            emit(w, lives, input);
            let lost = w.reconciler.is_some() && input.is_sale() && dice.chance(10);
            if lost {
                w.lost.fetch_add(1, Ordering::Relaxed);
                w.storm
                    .trace
                    .say(format_args!("{} is lost (never delivered)", input.label()));
            }
            !lost
        });
        let runs = batch.iter().map(|input| {
            let die = dice.chance(5).then(|| 1 + dice.below(8) as u32);
            w.storm.trace.say(format_args!(
                "deliver {}{}",
                input.label(),
                die.map_or(String::new(), |p| format!(" (dies after {p} polls)"))
            ));
            deliver(w, input, die)
        });
        let statuses = join_all(runs.collect()).await;
        for (input, status) in batch.into_iter().zip(statuses) {
            w.storm
                .trace
                .say(format_args!("  -> {}: {status:?}", input.label()));
            done.push((input, status));
        }
        days_jumped += jump(w, &dice, days_jumped);
        drain_some(w).await;
        if w.reconciler.is_some() && dice.chance(15) {
            reconcile(w, Since::Watermark).await;
        }
    }
    done
}

/// A jump of the clock between batches: seconds mostly, past the leases (minutes) sometimes, by
/// days rarely (past the `FAILED` and `QUEUED` records' keep; never past the ledger's memory,
/// which the end of the history jumps over on purpose). Returns the days jumped.
fn jump(w: &World, dice: &Dice, days_so_far: i64) -> i64 {
    let ms = dice.below(20_000) as i64;
    w.clock.jump(ms);
    if dice.chance(10) {
        let minutes = 1 + dice.below(30) as i64;
        w.storm
            .trace
            .say(format_args!("the clock jumps {minutes} min"));
        w.clock.jump(minutes * 60_000);
    }
    let budget = i64::from(w.shop.memory_days) / 2 - days_so_far;
    if dice.chance(3) && budget > 1 {
        let days = 1 + dice.below(budget.min(16) as usize) as i64;
        w.storm
            .trace
            .say(format_args!("the clock jumps {days} days"));
        w.clock.jump(days * DAY_MS);
        return days;
    }
    0
}

/// Cartpanda emits an input: its order's list entry now shows what the inputs so far made.
fn emit(w: &World, lives: &[Life], input: &Input) {
    let mut emitted = w.emitted.lock().unwrap();
    emitted.push(input.clone());
    let listed = lives
        .iter()
        .filter_map(|life| life.as_listed(&w.shop, &emitted))
        .collect();
    *w.listed.lock().unwrap() = listed;
}

/// A reconciliation run of the shop (a scheduled one from its watermark, or an operator's
/// back-fill); its `sent` must be what RedTrack accepted meanwhile.
pub async fn reconcile(w: &World, since: Since) {
    let Some(r) = &w.reconciler else {
        return;
    };
    let target =
        cartpanda_redtrack::reconcile::default_target(r).expect("the default shop reconciles");
    let options = RunOptions {
        since,
        dry_run: false,
        deadline_ms: w.clock.now_ms() + 60_000,
    };
    w.storm.trace.say(format_args!("reconcile ({since:?})"));
    let listed: Vec<String> = w
        .listed
        .lock()
        .unwrap()
        .iter()
        .map(|o| o["id"].to_string())
        .collect();
    for order_id in listed {
        w.used(&order_id, Via::Reconcile);
    }
    let before = w.redtrack.accepted.lock().unwrap().len();
    let summary = r.run(&target, options).await;
    let accepted = (w.redtrack.accepted.lock().unwrap().len() - before) as u64;
    w.reconciled
        .fetch_add(summary.sent as i64, Ordering::Relaxed);
    if summary.timezone.is_some() {
        w.zone.lock().unwrap().clone_from(&summary.timezone);
    }
    w.storm.trace.say(format_args!(
        "  -> listed {}, sent {}, queued {}, already sent {}, failed {}, error {:?}",
        summary.orders_seen,
        summary.sent,
        summary.queued,
        summary.already_sent,
        summary.failed,
        summary.error
    ));
    if summary.sent > accepted {
        w.lie(format!(
            "reconciliation said sent {} but RedTrack accepted {accepted}",
            summary.sent
        ));
    }
}

/// Runs futures concurrently on this thread, in a fixed polling order.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut boxed: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = boxed.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (i, f) in boxed.iter_mut().enumerate() {
            if out[i].is_none() {
                if let Poll::Ready(v) = f.as_mut().poll(cx) {
                    out[i] = Some(v);
                }
            }
        }
        if out.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// The consumer takes the queue's messages once each (a batch), as SQS would deliver them; a
/// message received [`MAX_RECEIVES`] times and still failing goes to the DLQ, as SQS's redrive
/// policy moves it; during the storm a handled message's delete is lost now and then (delivered
/// again).
pub async fn drain_some(w: &World) {
    let batch: Vec<(RedriveMessage, u32)> = std::mem::take(&mut *w.queue.messages.lock().unwrap());
    for (message, receives) in batch {
        let deadline = w.clock.now_ms() + 30_000;
        w.used(&message.order_id, message.via.unwrap_or(Via::Redrive));
        w.storm.trace.say(format_args!(
            "redrive {} (receive {})",
            message.event_id,
            receives + 1
        ));
        match w.redriver.handle(&message, receives + 1, deadline).await {
            // SQS delivers at least once: a handled message whose delete was lost comes back.
            Disposition::Done if w.storm.strikes(5) => {
                w.storm.trace.say(format_args!(
                    "  {}: its delete lost, redelivered",
                    message.event_id
                ));
                w.queue
                    .messages
                    .lock()
                    .unwrap()
                    .push((message, receives + 1));
            }
            Disposition::Done => {}
            Disposition::RetryAfter(_) if receives + 1 >= MAX_RECEIVES => {
                w.storm.trace.say(format_args!(
                    "  {}: to the DLQ (max receives)",
                    message.event_id
                ));
                w.dlq.messages.lock().unwrap().push((message, 0));
            }
            Disposition::RetryAfter(_) => w
                .queue
                .messages
                .lock()
                .unwrap()
                .push((message, receives + 1)),
            // As the consumer's handler does: the "record SENT" message in its place, the
            // handled one done either way.
            Disposition::Requeue(record_sent) => {
                let _ = w.queue.enqueue(&record_sent, 0).await;
            }
        }
    }
}

/// The operator's `redrive`: every DLQ message back to the queue (received anew).
pub fn operator_redrive(w: &World) {
    let moved: Vec<(RedriveMessage, u32)> = std::mem::take(&mut *w.dlq.messages.lock().unwrap());
    w.storm.trace.say(format_args!(
        "the operator redrives {} message(s) from the DLQ",
        moved.len()
    ));
    w.queue
        .messages
        .lock()
        .unwrap()
        .extend(moved.into_iter().map(|(mut m, _)| {
            // As `redrive --from <DLQ>` moves it: marked as the operator's.
            m.via = Some(Via::Operator);
            (m, 0)
        }));
}

/// After the storm: no faults, leases run out, every input not answered 2xx is redelivered and
/// the queue drained, until everything is answered; the operator redrives the DLQ (in most
/// histories).
pub async fn recover(w: &World, mut open: Vec<Input>) -> bool {
    *w.storm.on.lock().unwrap() = false;
    w.storm.trace.say(format_args!("the storm ends"));
    let redrives = w.shop.operator_redrives;
    for _ in 0..10 {
        w.clock.jump(120_000);
        drain_some(w).await;
        if redrives && !w.dlq.messages.lock().unwrap().is_empty() {
            operator_redrive(w);
            drain_some(w).await;
        }
        let mut still = Vec::new();
        for input in open {
            w.storm
                .trace
                .say(format_args!("redeliver {}", input.label()));
            let status = deliver(w, &input, None).await;
            w.storm.trace.say(format_args!("  -> {status:?}"));
            if !matches!(status, Some(200..=299)) {
                still.push(input);
            }
        }
        open = still;
        if open.is_empty() && w.queue.messages.lock().unwrap().is_empty() {
            break;
        }
    }
    redrives
}

/// Past the memory: the clock jumps beyond the ledger's memory (records expired, orders too old)
/// and every input is delivered once more; nothing may reach RedTrack. Returns what did.
pub async fn past_the_memory(w: &World, lives: &[Life]) -> Vec<String> {
    let days = i64::from(w.shop.memory_days) + 2;
    w.storm
        .trace
        .say(format_args!("the clock jumps {days} days, past the memory"));
    w.clock.jump(days * DAY_MS);
    let before = w.redtrack.accepted.lock().unwrap().len();
    for life in lives {
        for input in life.inputs(&w.shop) {
            w.storm
                .trace
                .say(format_args!("deliver again {}", input.label()));
            deliver(w, &input, None).await;
        }
    }
    w.redtrack.accepted.lock().unwrap()[before..]
        .iter()
        .map(|p| format!("{} sent after the memory's end", p.event_id))
        .collect()
}

/// What a history broke, if anything; and the copies that fell in each named window.
pub fn check(w: &World, lives: &[Life], redriven: bool) -> (Vec<String>, Copies) {
    let accepted = w.redtrack.accepted.lock().unwrap().clone();
    let mut problems = w.lies.lock().unwrap().clone();
    let mut windows = Copies::default();
    let mut earned = BTreeMap::new();
    for life in lives {
        earned.extend(life.earned(&w.shop));
    }
    let mut got: BTreeMap<&str, Vec<&Postback>> = BTreeMap::new();
    for p in &accepted {
        got.entry(p.event_id.as_str()).or_default().push(p);
    }
    let in_dlq: BTreeSet<String> = w
        .dlq
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|(m, _)| m.event_id.clone())
        .collect();
    for (event_id, (conversion_type, sum)) in &earned {
        match got.get(event_id.as_str()) {
            None if !redriven && in_dlq.contains(event_id) => {}
            None => problems.push(format!("{event_id} was never sent (lost)")),
            Some(copies) => {
                for p in copies {
                    if (&p.conversion_type, &p.sum, p.click_id.as_str())
                        != (conversion_type, sum, CLICK_ID)
                    {
                        problems.push(format!(
                            "{event_id} sent as {p:?}, earned {conversion_type} {sum}"
                        ));
                    }
                }
                if copies.len() > 1 {
                    match windows.count(w, event_id, copies.len() - 1) {
                        Ok(counted) => windows = counted,
                        Err(unnamed) => problems.push(format!(
                            "{event_id} sent {} times ({unnamed} copies in no named window)",
                            copies.len()
                        )),
                    }
                }
            }
        }
    }
    for event_id in got.keys() {
        if !earned.contains_key(*event_id) {
            problems.push(format!(
                "{event_id} was sent but not earned (test order, no click ID, too old, or unknown)"
            ));
        }
    }
    for event_id in w.queued.lock().unwrap().iter() {
        if !got.contains_key(event_id.as_str()) && !in_dlq.contains(event_id) {
            problems.push(format!(
                "{event_id} was queued, then neither sent nor in the DLQ"
            ));
        }
    }
    (problems, windows)
}

/// Issue 23's record attributes, for every conversion RedTrack accepted that an order earned: its
/// ledger record (read past the fault injector: `GetItem` over DynamoDB) says which input brought
/// it (`via`, one the model used for that order), the click ID sent, and, once the record says how
/// the send ended, `attempts` >= 1; a `SENT` record says RedTrack answered 2xx (`rt_status`).
/// Every record of a history is new: a missing attribute is a failure, not "unknown".
pub async fn check_records(w: &World, lives: &[Life]) -> Vec<String> {
    let accepted: BTreeSet<String> = w
        .redtrack
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.event_id.clone())
        .collect();
    let vias = w.vias.lock().unwrap().clone();
    let mut problems = Vec::new();
    for life in lives {
        let order_id = life.id.to_string();
        let used = vias.get(&order_id).cloned().unwrap_or_default();
        for event_id in life.earned(&w.shop).keys() {
            if !accepted.contains(event_id) {
                continue;
            }
            let key = cartpanda_redtrack::ledger::keys::conversion(None, event_id, false);
            let record = match w.ledger.inner.look_up(&key).await {
                Ok(Some(record)) => record,
                Ok(None) => {
                    problems.push(format!("{event_id}: RedTrack accepted it, no record"));
                    continue;
                }
                Err(err) => {
                    problems.push(format!("{event_id}: its record unreadable: {err}"));
                    continue;
                }
            };
            problems.extend(record_problems(event_id, &record, &used));
        }
    }
    problems
}

/// What one accepted conversion's record gets wrong (see [`check_records`]).
fn record_problems(event_id: &str, r: &Record, used: &BTreeSet<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut wrong = |what: String| problems.push(format!("{event_id} ({}): {what}", r.status));
    if !r.via.as_deref().is_some_and(|via| used.contains(via)) {
        wrong(format!("via {:?}, the order came by {used:?}", r.via));
    }
    if r.click_id.as_deref() != Some(CLICK_ID) {
        wrong(format!("click_id {:?}, sent {CLICK_ID}", r.click_id));
    }
    let finished = r.status != cartpanda_redtrack::ledger::claim::STATUS_IN_PROGRESS;
    if finished && r.attempts.is_none_or(|n| n < 1) {
        wrong(format!("attempts {:?}", r.attempts));
    }
    if r.status == STATUS_SENT && !r.rt_status.is_some_and(|s| (200..300).contains(&s)) {
        wrong(format!("rt_status {:?} on a SENT record", r.rt_status));
    }
    problems
}

/// Copies of a conversion RedTrack already had, per window docs/reliability.md names (issue 21).
/// Window 2: RedTrack's answer lost after it accepted; each lost answer explains one copy (the
/// retry or queued send that followed it). Window 1 (RedTrack accepted, `SENT` not written), its
/// three cases: the instance dying between RedTrack's answer and the record (`died`); the `SENT`
/// write lost with the queue refusing the `record_sent` message too (`refused`); that message not
/// yet applied when the lease ended and another attempt (a redelivery, the queued send of the same
/// conversion) took the claim over (`late`; seed 9746). A copy none of them explains fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copies {
    pub window2: usize,
    pub died: usize,
    pub refused: usize,
    pub late: usize,
}

impl Copies {
    /// Window 1's copies (its three cases).
    pub fn window1(&self) -> usize {
        self.died + self.refused + self.late
    }

    pub fn total(&self) -> usize {
        self.window1() + self.window2
    }

    /// The sum of two histories' counts.
    pub fn add(self, o: Copies) -> Copies {
        Copies {
            window2: self.window2 + o.window2,
            died: self.died + o.died,
            refused: self.refused + o.refused,
            late: self.late + o.late,
        }
    }

    /// `extra` copies of `event_id` counted in the windows that explain them: as many as its lost
    /// answers in window 2, the rest in the first of window 1's cases that happened to it; `Err`:
    /// how many no named window explains.
    fn count(self, w: &World, event_id: &str, extra: usize) -> Result<Copies, usize> {
        let lost = w.redtrack.answer_lost.lock().unwrap();
        let window2 = extra.min(lost.iter().filter(|e| *e == event_id).count());
        drop(lost);
        let rest = extra - window2;
        let mut counted = Copies {
            window2: self.window2 + window2,
            ..self
        };
        if rest == 0 {
            return Ok(counted);
        }
        let case = match window1_case(w, event_id) {
            Some(case) => case,
            None => return Err(rest),
        };
        *match case {
            Window1::Died => &mut counted.died,
            Window1::Refused => &mut counted.refused,
            Window1::Late => &mut counted.late,
        } += rest;
        Ok(counted)
    }
}

impl std::fmt::Display for Copies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} copies inside the named windows: window 1 (SENT not written) {} ({} died, {} \
             SENT lost and the queue refused, {} record SENT late), window 2 (answer lost) {}",
            self.total(),
            self.window1(),
            self.died,
            self.refused,
            self.late,
            self.window2
        )
    }
}

/// Window 1's three cases (see [`Copies`]).
enum Window1 {
    Died,
    Refused,
    Late,
}

/// Which of window 1's cases happened to `event_id`, if any.
fn window1_case(w: &World, event_id: &str) -> Option<Window1> {
    if w.died.lock().unwrap().iter().any(|e| e == event_id) {
        return Some(Window1::Died);
    }
    let sent_lost = w.ledger.sent_write_lost.lock().unwrap();
    let refused = w.queue.refused.lock().unwrap();
    if sent_lost
        .iter()
        .any(|k| k.ends_with(&format!("#{event_id}")))
        && refused.iter().any(|e| e == event_id)
    {
        return Some(Window1::Refused);
    }
    let record_sent = w.queue.record_sent.lock().unwrap();
    record_sent
        .iter()
        .any(|e| e == event_id)
        .then_some(Window1::Late)
}

/// Issue 23's coverage pass over the history's day (a reconciling history, after the back-fill):
/// the clock moved past the day's end + 2 h, the day measured as the scheduled run would (in the
/// zone the runs wrote their filters in, else the configured one), and checked against the model:
/// `paid` the distinct orders created that day and paid (test and click-less ones too; cancelled
/// unpaid ones not), none of them uncovered unless its purchase is not in RedTrack (in the DLQ)
/// or a window-1 case left its record in progress. A clock the storm moved days ahead measures a
/// later day, which had no orders.
pub async fn check_coverage(w: &World, lives: &[Life]) -> (Vec<String>, Option<Coverage>) {
    let Some(r) = &w.reconciler else {
        return (Vec::new(), None);
    };
    let target =
        cartpanda_redtrack::reconcile::default_target(r).expect("the default shop reconciles");
    let named = w.zone.lock().unwrap().clone();
    let zone = named.as_deref().and_then(Zone::find).or(target.timezone);
    let orders_day = previous_day(zone, (START_MS - 3_600_000) / 1000 + 86_400);
    let due_ms = (orders_day.to_s + 1 + AFTER_DAY_END_S + 60) * 1000;
    w.clock.jump((due_ms - w.clock.now_ms()).max(0));
    let day = previous_day(zone, w.clock.now_ms() / 1000);
    w.storm
        .trace
        .say(format_args!("coverage of {} ({:?})", day.day, named));
    let deadline_ms = w.clock.now_ms() + 60_000;
    let Some(c) = r.coverage(&target, zone, deadline_ms).await else {
        return (vec!["the coverage pass measured no day".to_owned()], None);
    };
    w.storm.trace.say(format_args!("  -> {c:?}"));
    let mut problems = Vec::new();
    let in_day = |l: &&Life| (day.from_s..=day.to_s).contains(&(l.created_ms(&w.shop) / 1000));
    let paid: Vec<&Life> = lives
        .iter()
        .filter(|l| !l.cancelled_unpaid)
        .filter(in_day)
        .collect();
    if (c.day.as_str(), c.paid) != (day.day.as_str(), paid.len() as u64) {
        problems.push(format!(
            "coverage of {} says {} paid; the model made {} paid orders on {}",
            c.day,
            c.paid,
            paid.len(),
            day.day
        ));
    }
    for life in paid {
        let purchase = format!("{}-purchase", life.id);
        let excused = life.earned(&w.shop).contains_key(&purchase)
            && (!w.sent_before(&purchase) || window1_case(w, &purchase).is_some());
        if !excused && c.uncovered_orders.contains(&life.id.to_string()) {
            problems.push(format!("coverage says order {} is uncovered", life.id));
        }
    }
    (problems, Some(c))
}

/// One history's result.
pub struct Outcomes {
    pub problems: Vec<String>,
    pub windows: Copies,
    pub trace: Vec<String>,
    /// Inputs lost, and conversions reconciliation sent.
    pub lost: i64,
    pub reconciled: i64,
    /// What RedTrack accepted, in order.
    pub accepted: Vec<Postback>,
    /// The coverage pass of the history's day (reconciling histories).
    pub coverage: Option<Coverage>,
}

/// Lives one history in the runtime it is called in: the storm, the recovery, the jump past the
/// memory (in a fifth of the histories), the checks.
pub async fn live(seed: u64, lives: &[Life], setup: Setup) -> Outcomes {
    let w = world(seed, lives, setup);
    for life in lives {
        w.storm.trace.say(format_args!("order {life:?}"));
    }
    let delivered = storm(&w, lives).await;
    let open = delivered
        .into_iter()
        .filter(|(_, status)| !matches!(status, Some(200..=299)))
        .map(|(input, _)| input)
        .collect();
    let redriven = recover(&w, open).await;
    if w.reconciler.is_some() {
        // The operator's back-fill over the orders' day: what was lost is sent now.
        reconcile(&w, Since::From(START_MS / 1000 - 2 * 3600)).await;
        drain_some(&w).await;
    }
    let (mut problems, windows) = check(&w, lives, redriven);
    problems.extend(check_records(&w, lives).await);
    let (uncovered, coverage) = check_coverage(&w, lives).await;
    problems.extend(uncovered);
    if w.shop.past_the_memory {
        let lies_before = w.lies.lock().unwrap().len();
        problems.extend(past_the_memory(&w, lives).await);
        problems.extend(w.lies.lock().unwrap()[lies_before..].iter().cloned());
    }
    let trace = w.storm.trace.lines.lock().unwrap().clone();
    Outcomes {
        problems,
        windows,
        trace,
        lost: w.lost.load(Ordering::Relaxed),
        reconciled: w.reconciled.load(Ordering::Relaxed),
        accepted: w.redtrack.accepted.lock().unwrap().clone(),
        coverage,
    }
}

/// Shrinks a failing history: drops orders, upsells, refunds and chargebacks while it still fails
/// (the world's seed kept), and returns the smallest failing set of lives found.
pub fn shrink(mut lives: Vec<Life>, fails: &dyn Fn(&[Life]) -> bool) -> Vec<Life> {
    loop {
        let mut candidates: Vec<Vec<Life>> = Vec::new();
        for i in 0..lives.len() {
            if lives.len() > 1 {
                let mut fewer = lives.clone();
                fewer.remove(i);
                candidates.push(fewer);
            }
            for simpler in lives[i].simpler() {
                let mut c = lives.clone();
                c[i] = simpler;
                candidates.push(c);
            }
        }
        match candidates.into_iter().find(|c| fails(c)) {
            Some(smaller) => lives = smaller,
            None => return lives,
        }
    }
}

/// The steps of a set of lives (for the report of a shrunk history).
pub fn steps(lives: &[Life]) -> usize {
    let shop = Shop {
        s2s: false,
        verify: false,
        memory_days: 400,
        operator_redrives: true,
        past_the_memory: false,
        times: TimeForm::Naive,
    };
    lives.iter().map(|l| l.inputs(&shop).len()).sum()
}
