//! RedTrack's own count: once a day per reconciled shop, what RedTrack recorded for the click IDs
//! the bridge sent the day before, compared by click ID and conversion type with what was sent.
//!
//! - **Sent but not recorded** (`RedTrackMissing`): an unknown click ID, a type not set up in
//!   RedTrack, a postback RedTrack answered 2xx and then dropped.
//! - **Recorded more often than sent** (`RedTrackDoubled`): most often Cartpanda's own S2S
//!   postback still pointing at RedTrack, so every sale counts twice (under our type, or under
//!   the offer source's default type when Cartpanda's URL carries none). Conversions of click IDs
//!   the bridge never sent (other offer sources) are out of scope.
//!
//! The day `D` is the UTC day that ended [`CHECK_AFTER_S`] ago (so the queue and reconciliation
//! have had their retries). The click IDs compared are those of the conversions sent on `D`.
//! RedTrack's log is read for `D-1 … D+1`, in the account's zone (unverified; any of −12 h …
//! +14 h): a span that holds the whole UTC day `D` and lies within the UTC days `D-2 … D+2`. So a
//! pair (click ID, type) is **missing** by as many of its conversions sent on `D` as RedTrack's
//! rows lack, and **doubled** by as many rows as exceed its conversions sent over `D-2 … D+2`:
//! whatever the account's zone, neither is counted for a conversion that merely fell on the
//! other side of a day's edge. Our side comes from the table's `sent-day` index (the `sent_day`
//! attribute the SENT write already sets: no extra call per delivery): five Queries reading only
//! the shop's conversions of those days, whatever the table holds. RedTrack's side is its conversions log
//! (`GET {REDTRACK_API_URL}/conversions?api_key=…&date_from=…&date_to=…&page=…&per=…`), a page
//! of up to [`PER_PAGE`] rows per request, at least a second apart.
//!
//! Each shop's day is stored (`rtcount#<shop>#<day>`: figures by type, for the report) and is
//! checked once: the item closes the day. Without a RedTrack API key the day is stored as not
//! measured, and the log says so. Never logged: the API key, URLs carrying it, click IDs.

use crate::inbound::auth::Secret;
use crate::ledger::dynamo::{DynamoLedger, n, s};
use crate::ledger::keys;
use crate::ledger::notes::day_of;
use crate::reconcile::run::{Reconciler, emf};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// RedTrack's API, as a public client and its `swagger.json` show it (not checked against a live
/// account).
pub const DEFAULT_API_URL: &str = "https://api.redtrack.io";
/// A day is checked this long after it ended (UTC).
pub const CHECK_AFTER_S: i64 = 3 * 3600;
/// Rows asked per page of RedTrack's conversions log (it allows up to 10,000).
pub const PER_PAGE: u32 = 1000;
/// Most event IDs of each kind (missing, doubled) one log line names.
pub const LOGGED_IDS: usize = 100;
/// Most pages read for one shop's day.
pub const MAX_PAGES: u32 = 200;

/// How RedTrack's API is read.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `REDTRACK_API_URL`: the API's base URL.
    pub url: String,
    /// The default shop's key: `REDTRACK_API_KEY`, or the SSM parameter
    /// `REDTRACK_API_KEY_PARAMETER` names. Named shops keep theirs in
    /// [`crate::ops::secrets::shop_redtrack_api_key`].
    pub api_key: Option<Secret>,
    /// At least this long between two requests.
    pub min_interval: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
}

/// One type's figures of a shop's day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeCount {
    pub sent: u64,
    pub recorded: u64,
    pub missing: u64,
    pub doubled: u64,
}

/// A shop's day as checked: logged, counted (EMF), stored, answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub shop: Option<String>,
    pub day: String,
    /// False: not measured (`reason` says why); the figures are then zero.
    pub measured: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Our conversions compared (sent for the day's click IDs, `D-1 … D+1`).
    pub sent: u64,
    /// RedTrack's conversions of those click IDs.
    pub recorded: u64,
    pub missing: u64,
    pub doubled: u64,
    /// Of the missing and doubled: pairs of one click ID, recorded under another type than sent.
    pub other_type: u64,
    /// RedTrack's rows for those click IDs flagged as duplicates (`duplicate_status` not 0):
    /// not counted as recorded.
    pub flagged_duplicates: u64,
    /// Our conversions of the day sent before records carried a click ID: not compared.
    pub without_click_id: u64,
    pub by_type: BTreeMap<String, TypeCount>,
}

/// One of our sent conversions, from the `sent-day` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub event_id: String,
    pub click_id: Option<String>,
    pub conversion_type: String,
}

/// One row of RedTrack's conversions log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub click_id: String,
    pub conversion_type: String,
    pub flagged_duplicate: bool,
}

/// Why RedTrack's log could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("RedTrack refused the API key (HTTP {0}); check the shop's RedTrack API key")]
    Unauthorized(u16),
    #[error("RedTrack's API refused the request with HTTP {0}")]
    Refused(u16),
    #[error("RedTrack's API is unavailable: {0}")]
    Unavailable(String),
    #[error("RedTrack's API answered something that is not a conversions log")]
    NotALog,
    #[error("no time left before the run's deadline")]
    Deadline,
}

impl ApiError {
    /// Whether the day stays open for a later run (else it is stored as not measured).
    fn retryable(&self) -> bool {
        matches!(self, ApiError::Unavailable(_) | ApiError::Deadline)
    }
}

/// The UTC day a run at `now_ms` checks: the one that ended [`CHECK_AFTER_S`] before.
pub fn day_to_check(now_ms: i64) -> String {
    day_of(now_ms - (CHECK_AFTER_S + 86_400) * 1000)
}

/// The day `offset` days from `day` (`YYYY-MM-DD`).
fn shift(day: &str, offset: i64) -> String {
    let start = crate::inbound::datetime::parse_unix(&format!("{day} 00:00:00")).unwrap_or(0);
    day_of((start + offset * 86_400) * 1000)
}

/// Per click ID and type: our conversions sent on the day, sent over the five days, RedTrack's
/// rows, our event IDs.
#[derive(Default)]
struct Pair<'a> {
    on_day: u64,
    around: u64,
    recorded: u64,
    ids: Vec<&'a str>,
}

type Pairs<'a> = BTreeMap<(&'a str, &'a str), Pair<'a>>;

/// Compares our sent conversions (`ours`: each with its day's offset from the day checked,
/// `-2 … 2`) with RedTrack's rows (its log of `D-1 … D+1` in the account's zone), for the click
/// IDs sent on the day, by click ID and type: missing against the day's sends, doubled against
/// the five days' (the module's doc says why). The event IDs of the conversions missing and of
/// those whose click ID was doubled come back for the log.
pub fn compare(ours: &[(i64, Sent)], theirs: &[Recorded]) -> (Count, Vec<String>, Vec<String>) {
    let mut count = Count::default();
    let clicks: HashSet<&str> = ours
        .iter()
        .filter(|(offset, _)| *offset == 0)
        .filter_map(|(_, sent)| sent.click_id.as_deref())
        .collect();
    count.without_click_id = ours
        .iter()
        .filter(|(offset, sent)| *offset == 0 && sent.click_id.is_none())
        .count() as u64;
    let mut pairs = Pairs::new();
    for (offset, sent) in ours {
        let Some(click) = sent.click_id.as_deref().filter(|c| clicks.contains(c)) else {
            continue;
        };
        let pair = pairs.entry((click, &sent.conversion_type)).or_default();
        pair.on_day += u64::from(*offset == 0);
        pair.around += 1;
        pair.ids.push(&sent.event_id);
    }
    for row in theirs
        .iter()
        .filter(|r| clicks.contains(r.click_id.as_str()))
    {
        if row.flagged_duplicate {
            count.flagged_duplicates += 1;
        } else {
            let pair = pairs.entry((&row.click_id, &row.conversion_type));
            pair.or_default().recorded += 1;
        }
    }
    let (missing, doubled) = tally(&pairs, &mut count);
    (count, missing, doubled)
}

/// Adds up the pairs into `count` (by type, in all, and the pairs of one click ID recorded
/// under another type); the event IDs missing, and those of the click IDs doubled.
fn tally(pairs: &Pairs<'_>, count: &mut Count) -> (Vec<String>, Vec<String>) {
    let (mut missing_ids, mut doubled_ids) = (Vec::new(), Vec::new());
    let mut by_click: HashMap<&str, (u64, u64)> = HashMap::new();
    for ((click, kind), pair) in pairs {
        let recorded = pair.recorded;
        let (missing, doubled) = (
            pair.on_day.saturating_sub(recorded),
            recorded.saturating_sub(pair.around),
        );
        // Our sends RedTrack's window should show: as many as it recorded, within what was
        // surely in it (the day's) and what may have been (the five days'). So `sent` −
        // `recorded` = `missing` − `doubled`.
        let sent = recorded.clamp(pair.on_day, pair.around.max(pair.on_day));
        let ids = &pair.ids;
        let t = count.by_type.entry((*kind).to_owned()).or_default();
        (t.sent, t.recorded) = (t.sent + sent, t.recorded + recorded);
        (t.missing, t.doubled) = (t.missing + missing, t.doubled + doubled);
        let c = by_click.entry(click).or_default();
        (c.0, c.1) = (c.0 + missing, c.1 + doubled);
        if missing > 0 {
            missing_ids.extend(ids.iter().map(|id| (*id).to_owned()));
        }
        if doubled > 0 {
            let of_click = pairs.iter().filter(|((c, _), _)| c == click);
            doubled_ids.extend(of_click.flat_map(|(_, p)| p.ids.iter().map(|id| (*id).to_owned())));
        }
    }
    count.other_type = by_click.values().map(|(m, d)| (*m).min(*d)).sum();
    for t in count.by_type.values() {
        count.sent += t.sent;
        count.recorded += t.recorded;
        count.missing += t.missing;
        count.doubled += t.doubled;
    }
    count.measured = true;
    doubled_ids.sort();
    doubled_ids.dedup();
    (missing_ids, doubled_ids)
}

/// Reads RedTrack's rows of one answer: `{"items": [...], "total": n}` (as the swagger file
/// says) or a bare array; rows without a click ID are left out. `None` for anything else.
pub fn parse_log(body: &[u8]) -> Option<(Vec<Recorded>, usize, Option<u64>)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let (items, total) = match &value {
        serde_json::Value::Array(items) => (items, None),
        serde_json::Value::Object(map) => (
            map.get("items")?.as_array()?,
            map.get("total").and_then(serde_json::Value::as_u64),
        ),
        _ => return None,
    };
    let text = |row: &serde_json::Value, k: &str| match row.get(k) {
        Some(serde_json::Value::String(s)) => s.trim().to_owned(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let rows = items
        .iter()
        .filter_map(|row| {
            let click_id = text(row, "clickid");
            let flag = text(row, "duplicate_status");
            (!click_id.is_empty()).then(|| Recorded {
                click_id,
                conversion_type: text(row, "type"),
                flagged_duplicate: !flag.is_empty() && flag != "0",
            })
        })
        .collect();
    Some((rows, items.len(), total))
}

/// RedTrack's conversions log over HTTPS, one request at a time.
pub struct RedTrackApi {
    http: reqwest::Client,
    pub settings: ApiSettings,
}

impl RedTrackApi {
    pub fn new(settings: ApiSettings) -> Result<Self, reqwest::Error> {
        let http = crate::reconcile::orders::api_client(settings.timeout)?;
        Ok(RedTrackApi { http, settings })
    }

    /// Every row RedTrack's log holds from `from` to `to` (`YYYY-MM-DD`), page by page, at
    /// least `min_interval` apart, never past `stop_at`.
    pub async fn conversions(
        &self,
        key: &Secret,
        (from, to): (&str, &str),
        stop_at: Instant,
    ) -> Result<(Vec<Recorded>, u32), ApiError> {
        let base = self.settings.url.trim_end_matches('/');
        let mut rows = Vec::new();
        let mut read = 0usize;
        for page in 1..=MAX_PAGES {
            if page > 1 {
                pause(self.settings.min_interval, stop_at).await?;
            }
            let url = format!(
                "{base}/conversions?date_from={from}&date_to={to}&page={page}&per={PER_PAGE}"
            );
            let body = self.get(&url, key, stop_at).await?;
            let (found, len, total) = parse_log(&body).ok_or(ApiError::NotALog)?;
            rows.extend(found);
            read += len;
            let more = len >= PER_PAGE as usize && total.is_none_or(|t| (read as u64) < t);
            if !more {
                return Ok((rows, page));
            }
        }
        Ok((rows, MAX_PAGES))
    }

    /// One GET (the key added as `api_key`), retried on 429, 5xx and timeouts (three tries,
    /// honouring `Retry-After` up to a minute).
    async fn get(&self, url: &str, key: &Secret, stop_at: Instant) -> Result<Vec<u8>, ApiError> {
        let key: String = url::form_urlencoded::byte_serialize(key.expose().as_bytes()).collect();
        let url = format!("{url}&api_key={key}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = stop_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::Deadline);
            }
            let sent = self
                .http
                .get(&url)
                .header("accept", "application/json")
                .timeout(self.settings.timeout.min(left))
                .send()
                .await;
            let wait = match sent {
                Ok(r) if r.status().is_success() => {
                    let body = r.bytes().await;
                    return body
                        .map(|b| b.to_vec())
                        .map_err(|_| ApiError::Unavailable("answer cut short".to_owned()));
                }
                Ok(r) => match r.status().as_u16() {
                    s @ (401 | 403) => return Err(ApiError::Unauthorized(s)),
                    429 | 500..=599 if attempt < 3 => retry_after(&r)
                        .unwrap_or(Duration::from_secs(1 << attempt))
                        .min(Duration::from_secs(60)),
                    s @ (429 | 500..=599) => {
                        return Err(ApiError::Unavailable(format!("HTTP {s}")));
                    }
                    s => return Err(ApiError::Refused(s)),
                },
                Err(e) if attempt < 3 && (e.is_timeout() || e.is_connect()) => {
                    Duration::from_secs(1 << attempt)
                }
                Err(e) => {
                    let reason = if e.is_timeout() {
                        "timeout"
                    } else {
                        "request failed"
                    };
                    return Err(ApiError::Unavailable(reason.to_owned()));
                }
            };
            tracing::warn!(
                attempt,
                wait_ms = wait.as_millis() as u64,
                "redtrack count: retrying RedTrack's API"
            );
            pause(wait, stop_at).await?;
        }
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    value
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// Waits `wait`, unless that ends past `stop_at`.
async fn pause(wait: Duration, stop_at: Instant) -> Result<(), ApiError> {
    let resume = Instant::now() + wait;
    if resume >= stop_at {
        return Err(ApiError::Deadline);
    }
    tokio::time::sleep_until(resume).await;
    Ok(())
}

/// Why a shop's day was not measured: for good (stored, the day closed), or for now (the day
/// stays open for the next run).
enum NotMeasured {
    Closed(String),
    Open(String),
}

/// The scheduled run's check of one shop's day, when due ([`day_to_check`] not stored yet):
/// measured, or not (no API key, RedTrack refusing it), then stored, logged and counted. `None`
/// when the day was checked already or stays open (the log says why).
pub async fn check(reconciler: &Reconciler, shop: Option<&str>, deadline_ms: i64) -> Option<Count> {
    let now_ms = reconciler.bridge.clock.now_ms();
    let left_ms = deadline_ms - now_ms - reconciler.settings.margin.as_millis() as i64;
    let stop_at = Instant::now() + Duration::from_millis(left_ms.max(0) as u64);
    let day = day_to_check(now_ms);
    match reconciler.table.read(&keys::rt_count(shop, &day)).await {
        Ok(None) => {}
        Ok(Some(_)) => return None,
        Err(err) => {
            tracing::error!(shop, day, error = %err, "redtrack count: could not read the day's record");
            return None;
        }
    }
    let count = match measure(reconciler, shop, &day, stop_at).await {
        Ok(count) => count,
        Err(NotMeasured::Open(reason)) => {
            tracing::warn!(
                shop,
                day,
                reason,
                "redtrack count: not measured yet; the next run tries again"
            );
            return None;
        }
        Err(NotMeasured::Closed(reason)) => Count {
            reason: Some(reason),
            ..Count::default()
        },
    };
    let count = Count {
        shop: shop.map(str::to_owned),
        day,
        ..count
    };
    let keep_days = reconciler.settings.keep_days;
    match store(&reconciler.table, &count, now_ms, keep_days).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(
                shop,
                day = count.day,
                "redtrack count: the day was counted by another run meanwhile; not counted twice"
            );
            return None;
        }
        Err(err) => {
            tracing::error!(shop, day = count.day, error = %err, "redtrack count: could not store the day");
        }
    }
    report(&count);
    Some(count)
}

/// The shop's RedTrack API key: the default shop's from the settings, a named shop's from its
/// SSM parameter (none there: `Ok(None)`).
async fn api_key(reconciler: &Reconciler, shop: Option<&str>) -> Result<Option<Secret>, String> {
    let Some(name) = shop else {
        return Ok(reconciler.settings.redtrack.api_key.clone());
    };
    let Some(shops) = &reconciler.bridge.shops else {
        return Ok(None);
    };
    let parameter = crate::ops::secrets::shop_redtrack_api_key(reconciler.table.table(), name);
    match shops.api_token(&parameter).await {
        Ok(key) => Ok(Some(key)),
        Err(crate::ops::secrets::SecretError::NotFound(_)) => Ok(None),
        Err(err) => Err(err.to_string()),
    }
}

/// The day's figures: our sent conversions of `D-2 … D+2` from the index, RedTrack's log of
/// `D-1 … D+1` (not read when nothing with a click ID was sent on `D`), compared.
async fn measure(
    reconciler: &Reconciler,
    shop: Option<&str>,
    day: &str,
    stop_at: Instant,
) -> Result<Count, NotMeasured> {
    let key = match api_key(reconciler, shop).await {
        Ok(Some(key)) => key,
        Ok(None) => return Err(NotMeasured::Closed("no RedTrack API key".to_owned())),
        Err(err) => return Err(NotMeasured::Open(err)),
    };
    let (before, after) = (shift(day, -1), shift(day, 1));
    let mut ours = Vec::new();
    for offset in -2..=2 {
        let d = shift(day, offset);
        let sent = sent_on(&reconciler.table, shop, &d)
            .await
            .map_err(NotMeasured::Open)?;
        ours.extend(sent.into_iter().map(|s| (offset, s)));
    }
    let any = ours
        .iter()
        .any(|(offset, s)| *offset == 0 && s.click_id.is_some());
    let theirs = if any {
        let api = RedTrackApi::new(reconciler.settings.redtrack.clone())
            .map_err(|e| NotMeasured::Open(e.to_string()))?;
        let (rows, pages) = match api.conversions(&key, (&before, &after), stop_at).await {
            Ok(read) => read,
            Err(err) if err.retryable() => return Err(NotMeasured::Open(err.to_string())),
            Err(err) => return Err(NotMeasured::Closed(err.to_string())),
        };
        tracing::debug!(
            shop,
            day,
            rows = rows.len(),
            pages,
            "redtrack count: RedTrack's log read"
        );
        rows
    } else {
        Vec::new()
    };
    let (count, missing, doubled) = compare(&ours, &theirs);
    if !missing.is_empty() || !doubled.is_empty() {
        let (missing, doubled) = (
            &missing[..missing.len().min(LOGGED_IDS)],
            &doubled[..doubled.len().min(LOGGED_IDS)],
        );
        tracing::warn!(shop, day, missing = ?missing, doubled = ?doubled, "redtrack count: conversions RedTrack recorded differently than sent (event IDs)");
    }
    Ok(count)
}

/// The conversions of a shop sent on `day`, from the `sent-day` index (SENT ones only).
async fn sent_on(table: &DynamoLedger, shop: Option<&str>, day: &str) -> Result<Vec<Sent>, String> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = table
            .client()
            .query()
            .table_name(table.table())
            .index_name(keys::SENT_DAY_INDEX)
            .key_condition_expression("sent_day = :day")
            .filter_expression("#status = :sent")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":day", s(&keys::sent_day(shop, day)))
            .expression_attribute_values(":sent", s(crate::ledger::claim::STATUS_SENT))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| {
                let code = aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&e);
                format!(
                    "could not query the table's `{}` index: {}",
                    keys::SENT_DAY_INDEX,
                    code.unwrap_or("request failed")
                )
            })?;
        for item in page.items() {
            let text = |k: &str| crate::ledger::dynamo::get_opt_s(item, k);
            let pk = text("pk").unwrap_or_default();
            let event_id = match keys::parse(&pk) {
                Some(keys::Key::Conversion { event_id, .. }) => event_id.to_owned(),
                _ => continue,
            };
            out.push(Sent {
                event_id,
                click_id: text("click_id").filter(|c| !c.is_empty()),
                conversion_type: text("conversion_type").unwrap_or_default(),
            });
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(out),
        }
    }
}

/// Stores a shop's day (`rtcount#…`), kept as long as the ledger's records; `Ok(false)` when
/// another run stored it first (two of a shop's queue messages overlapping after its lease: the
/// day's figures are emitted once, by the run that stored them).
async fn store(
    table: &DynamoLedger,
    count: &Count,
    now_ms: i64,
    keep_days: u32,
) -> Result<bool, String> {
    let num = |v: u64| n(v as i64);
    let types = count
        .by_type
        .iter()
        .map(|(kind, t)| {
            let figures = HashMap::from([
                ("sent".to_owned(), num(t.sent)),
                ("recorded".to_owned(), num(t.recorded)),
                ("missing".to_owned(), num(t.missing)),
                ("doubled".to_owned(), num(t.doubled)),
            ]);
            (kind.clone(), AttributeValue::M(figures))
        })
        .collect();
    let mut put = table
        .client()
        .put_item()
        .table_name(table.table())
        .item("pk", s(&keys::rt_count(count.shop.as_deref(), &count.day)))
        .item("kind", s("rtcount"))
        .item("day", s(&count.day))
        .item("measured", AttributeValue::Bool(count.measured))
        .item("checked_at_ms", n(now_ms))
        .item(
            "expires_at",
            n(now_ms / 1000 + i64::from(keep_days) * 86_400),
        )
        .item("types", AttributeValue::M(types));
    for (name, value) in figures(count) {
        put = put.item(name, num(value));
    }
    if let Some(reason) = &count.reason {
        put = put.item("reason", s(reason));
    }
    match put
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if crate::ledger::dynamo::failed_condition(&e) => Ok(false),
        Err(e) => Err(aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&e)
            .unwrap_or("request failed")
            .to_owned()),
    }
}

/// A day's figures by attribute name.
fn figures(count: &Count) -> [(&'static str, u64); 7] {
    [
        ("sent", count.sent),
        ("recorded", count.recorded),
        ("missing", count.missing),
        ("doubled", count.doubled),
        ("other_type", count.other_type),
        ("flagged_duplicates", count.flagged_duplicates),
        ("without_click_id", count.without_click_id),
    ]
}

/// The check's log line, and its EMF line (`RedTrackMissing`, `RedTrackDoubled`, no shop
/// dimension; nothing when not measured: no figure is better than a false zero).
fn report(count: &Count) {
    let shop = count.shop.as_deref();
    if !count.measured {
        let reason = count.reason.as_deref().unwrap_or("");
        tracing::warn!(
            shop,
            day = count.day,
            measured = false,
            reason,
            "redtrack count: skipped, not measured"
        );
        return;
    }
    tracing::info!(
        shop,
        day = count.day,
        measured = true,
        sent = count.sent,
        recorded = count.recorded,
        missing = count.missing,
        doubled = count.doubled,
        other_type = count.other_type,
        flagged_duplicates = count.flagged_duplicates,
        without_click_id = count.without_click_id,
        "redtrack count"
    );
    let line = emf(&[
        ("RedTrackMissing", count.missing),
        ("RedTrackDoubled", count.doubled),
    ]);
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(event_id: &str, click_id: Option<&str>, kind: &str) -> Sent {
        Sent {
            event_id: event_id.to_owned(),
            click_id: click_id.map(str::to_owned),
            conversion_type: kind.to_owned(),
        }
    }

    fn row(click_id: &str, kind: &str, flagged: bool) -> Recorded {
        Recorded {
            click_id: click_id.to_owned(),
            conversion_type: kind.to_owned(),
            flagged_duplicate: flagged,
        }
    }

    #[test]
    fn compares_by_click_id_and_type_for_the_days_click_ids() {
        let ours = vec![
            (0, sent("1-purchase", Some("a"), "Purchase")),
            // The upsell of the same click, sent the next day: counted with it.
            (1, sent("1-upsell-7", Some("a"), "Upsell")),
            (0, sent("2-purchase", Some("b"), "Purchase")),
            // A click of the day before only: out of scope.
            (-1, sent("3-purchase", Some("c"), "Purchase")),
            (0, sent("4-purchase", None, "Purchase")),
        ];
        let theirs = vec![
            row("a", "Purchase", false),
            row("a", "Upsell", false),
            // Cartpanda's own postback, under the offer source's default type.
            row("a", "Conversion", false),
            row("a", "Purchase", true),
            row("c", "Purchase", false),
            row("c", "Purchase", false),
            row("z", "Purchase", false),
        ];
        let (count, missing, doubled) = compare(&ours, &theirs);
        assert!(count.measured);
        assert_eq!(
            (count.sent, count.recorded, count.missing, count.doubled),
            (3, 3, 1, 1)
        );
        assert_eq!((count.flagged_duplicates, count.without_click_id), (1, 1));
        assert_eq!(count.other_type, 0);
        assert_eq!(missing, ["2-purchase"]);
        assert_eq!(doubled, ["1-purchase", "1-upsell-7"]);
        assert_eq!(count.by_type["Conversion"].doubled, 1);
        assert_eq!(count.by_type["Purchase"].missing, 1);
        assert_eq!(count.by_type["Upsell"].recorded, 1);
    }

    #[test]
    fn a_conversion_on_the_far_side_of_a_days_edge_is_neither_missing_nor_doubled() {
        // An account at UTC−3: its log of D-1 … D+1 starts at D-1 03:00Z. Click `a` bought at
        // D-1 01:00Z (outside that log) and upsold on D; click `b` bought on D and upsold at
        // D+2 01:00Z (inside the log: D+1 22:00 local).
        let ours = vec![
            (-1, sent("1-purchase", Some("a"), "Purchase")),
            (0, sent("1-upsell-7", Some("a"), "Upsell")),
            (0, sent("2-purchase", Some("b"), "Purchase")),
            (2, sent("2-upsell-9", Some("b"), "Upsell")),
        ];
        let theirs = vec![
            row("a", "Upsell", false),
            row("b", "Purchase", false),
            row("b", "Upsell", false),
        ];
        let (count, missing, doubled) = compare(&ours, &theirs);
        assert_eq!(
            (count.missing, count.doubled),
            (0, 0),
            "{missing:?} {doubled:?}"
        );
        assert_eq!((count.sent, count.recorded), (3, 3));
        // The day's own conversion missing is still missing; a row beyond every send, doubled.
        let (count, missing, _) = compare(&ours, &theirs[1..]);
        assert_eq!((count.missing, count.doubled), (1, 0));
        assert_eq!(missing, ["1-upsell-7"]);
        let extra = [&theirs[..], &[row("b", "Upsell", false)]].concat();
        let (count, _, doubled) = compare(&ours, &extra);
        assert_eq!((count.missing, count.doubled), (0, 1));
        assert_eq!(doubled, ["2-purchase", "2-upsell-9"]);
    }

    #[test]
    fn a_conversion_recorded_under_another_type_is_both_and_counted_as_such() {
        let ours = vec![(0, sent("1-purchase", Some("a"), "Purchase"))];
        let (count, _, _) = compare(&ours, &[row("a", "purchase", false)]);
        assert_eq!((count.missing, count.doubled, count.other_type), (1, 1, 1));
    }

    #[test]
    fn reads_the_log_as_the_swagger_file_and_a_bare_list_give_it() {
        let body = br#"{"items": [{"clickid": "a", "type": "Purchase", "duplicate_status": 0},
            {"clickid": "b", "type": "Upsell", "duplicate_status": 1}, {"type": "Purchase"}],
            "total": 3}"#;
        let (rows, len, total) = parse_log(body).unwrap();
        assert_eq!(
            rows,
            [row("a", "Purchase", false), row("b", "Upsell", true)]
        );
        assert_eq!((len, total), (3, Some(3)));
        let (rows, _, total) = parse_log(br#"[{"clickid": "a", "type": "Purchase"}]"#).unwrap();
        assert_eq!((rows.len(), total), (1, None));
        for bad in [&b"{}"[..], b"<html>", br#"{"items": 3}"#] {
            assert!(parse_log(bad).is_none());
        }
    }

    #[test]
    fn the_day_checked_is_the_utc_day_that_ended_three_hours_before() {
        let midnight = crate::inbound::datetime::parse_unix("2026-11-19 00:00:00").unwrap() * 1000;
        assert_eq!(day_to_check(midnight + 3 * 3_600_000), "2026-11-18");
        assert_eq!(day_to_check(midnight + 3 * 3_600_000 - 1), "2026-11-17");
        assert_eq!(shift("2026-11-01", -1), "2026-10-31");
        assert_eq!(shift("2026-12-31", 1), "2027-01-01");
    }
}
