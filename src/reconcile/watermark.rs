//! Where each shop's reconciliation stands, kept in the ledger's table in its own key space:
//! `watermark#default` for the default shop, `watermark#shop#<name>` for a named shop.
//!
//! Attributes: `kind` = `watermark`; `watermark_s`, the end of the last window listed to the
//! end (epoch seconds; the next window starts one run of overlap before it); and, while a window
//! is unfinished because a run reached its deadline, the cursor to resume from: `cursor_from_s`,
//! `cursor_to_s`, `cursor_pass` (`created` or `updated`), `cursor_page`. The time zones
//! ([`crate::reconcile::orders::ListTimes`]): `list_timezone`, the zone the last complete window's
//! filters were written in, and `shop_timezone`, the zone the shop's listed orders showed (both
//! absent while unknown, as in records written before them). No expiry.
//!
//! One run per shop at a time, whatever started it (the schedule, a queue message, a back-fill):
//! a run takes the shop's lease in this record first ([`acquire`]: `lease_owner`, a random ID,
//! and `lease_until_ms`, at most one lease span ahead and never past the run's deadline, plus
//! [`LEASE_GRACE_MS`]; a conditional write that succeeds only when no lease is held or the one
//! held has expired, and that reads the state in the same call). A second run meanwhile is told
//! the shop is busy and does nothing. A run longer than half a span renews its lease between
//! pages ([`renew`]), so a run that dies (a back-fill interrupted) holds its shop at most a span
//! past its last renewal; one whose lease was taken over stops. The run's
//! last write ([`put`]) releases the lease (the record is written without it) and is conditional
//! too: only while the run still holds its lease, and never moving `watermark_s` backwards (nor
//! removing it). A back-fill, which leaves the watermark alone, releases with [`release`].
//! Records written before leases existed have none: free.

use crate::ledger::claim::LedgerError;
use crate::ledger::dynamo::{failed_condition, get_n, get_opt_s};
use crate::reconcile::orders::{Pass, Window};
use crate::reconcile::retry::RetryEntry;
use aws_sdk_dynamodb::types::{AttributeValue as V, ReturnValue};
use std::collections::{BTreeMap, HashMap};

/// Where an unfinished window stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub window: Window,
    pub pass: Pass,
    /// The page that was being read when the run stopped.
    pub page: u32,
}

/// A shop's reconciliation state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mark {
    pub watermark_s: Option<i64>,
    pub cursor: Option<Cursor>,
    /// When a run last listed its window to the end (epoch milliseconds).
    pub completed_at_ms: Option<i64>,
    /// When a run first wrote this record (epoch milliseconds).
    pub first_run_ms: Option<i64>,
    /// The end of the last complete lookback pass (epoch seconds).
    pub lookback_s: Option<i64>,
    /// The retry set: order ID → how many later runs retried it, and which pass listed it.
    pub retry: BTreeMap<String, RetryEntry>,
    /// The zone the last complete window's filters were written in.
    pub list_timezone: Option<String>,
    /// The zone the shop's listed orders showed (`shop.timezone` and their times' offsets).
    pub shop_timezone: Option<String>,
}

impl Mark {
    /// When the shop last had a complete run (epoch milliseconds): recorded, or for a record
    /// written before that was recorded, its watermark.
    pub fn last_complete_ms(&self) -> Option<i64> {
        self.completed_at_ms
            .or(self.watermark_s.map(|s| s.saturating_mul(1000)))
    }
}

/// The record key of a shop's watermark.
pub fn key(shop: Option<&str>) -> String {
    crate::ledger::keys::watermark(shop)
}

fn unavailable<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(err: &E) -> LedgerError {
    LedgerError::Unavailable(err.code().unwrap_or("request failed").to_owned())
}

/// Reads a shop's state (the default when there is none yet).
pub async fn get(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shop: Option<&str>,
) -> Result<Mark, LedgerError> {
    let out = client
        .get_item()
        .table_name(table)
        .key("pk", V::S(key(shop)))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| unavailable(&e))?;
    let Some(item) = out.item else {
        return Ok(Mark::default());
    };
    Ok(from_item(&item))
}

/// A stored record read back.
fn from_item(item: &HashMap<String, V>) -> Mark {
    let num = |k: &str| get_n(item, k);
    let cursor = match (
        num("cursor_from_s"),
        num("cursor_to_s"),
        item.get("cursor_pass")
            .and_then(|v| v.as_s().ok())
            .and_then(|p| Pass::parse(p)),
        num("cursor_page"),
    ) {
        (Some(from_s), Some(to_s), Some(pass), Some(page)) if page >= 1 => Some(Cursor {
            window: Window { from_s, to_s },
            pass,
            page: u32::try_from(page).unwrap_or(1),
        }),
        _ => None,
    };
    Mark {
        watermark_s: num("watermark_s"),
        cursor,
        completed_at_ms: num("completed_at_ms"),
        first_run_ms: num("first_run_ms"),
        lookback_s: num("lookback_s"),
        retry: retry_from(item.get("retry")),
        list_timezone: get_opt_s(item, "list_timezone"),
        shop_timezone: get_opt_s(item, "shop_timezone"),
    }
}

/// The retry set as stored: `{"<order id>": {"runs": N, "pass": "created"}}`; entries that do
/// not read are dropped.
fn retry_from(value: Option<&V>) -> BTreeMap<String, RetryEntry> {
    let Some(map) = value.and_then(|v| v.as_m().ok()) else {
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(order_id, entry)| {
            let entry = entry.as_m().ok()?;
            let runs = get_n(entry, "runs")?;
            let pass = Pass::parse(entry.get("pass")?.as_s().ok()?)?;
            let runs = u32::try_from(runs).ok()?;
            Some((order_id.clone(), RetryEntry { runs, pass }))
        })
        .collect()
}

fn retry_to(retry: &BTreeMap<String, RetryEntry>) -> V {
    V::M(
        retry
            .iter()
            .map(|(order_id, e)| {
                let entry = HashMap::from([
                    ("runs".to_owned(), V::N(e.runs.to_string())),
                    ("pass".to_owned(), V::S(e.pass.as_str().to_owned())),
                ]);
                (order_id.clone(), V::M(entry))
            })
            .collect(),
    )
}

/// How long a lease outlives the deadline of the run that took it: time for its last write.
pub const LEASE_GRACE_MS: i64 = 30_000;

/// How far ahead a lease is taken or renewed at most (`ReconcileSettings::lease_span`).
pub const LEASE_SPAN_MS: i64 = 5 * 60 * 1000;

/// A run's hold on its shop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// A random ID of the run.
    pub owner: String,
    /// When the lease expires and another run may take the shop (epoch milliseconds).
    pub until_ms: i64,
    /// The run's deadline, which no renewal goes past.
    pub deadline_ms: i64,
    /// How far ahead it is taken or renewed at most.
    pub span_ms: i64,
}

impl Lease {
    /// A new lease at `now_ms` for a run whose deadline is `deadline_ms`.
    pub fn new(now_ms: i64, deadline_ms: i64, span_ms: i64) -> Self {
        let mut lease = Lease {
            owner: format!("{:016x}", crate::ops::clock::random_u64()),
            until_ms: 0,
            deadline_ms,
            span_ms,
        };
        lease.until_ms = lease.until(now_ms);
        lease
    }

    /// When a lease taken or renewed at `now_ms` expires.
    fn until(&self, now_ms: i64) -> i64 {
        self.deadline_ms
            .min(now_ms.saturating_add(self.span_ms))
            .saturating_add(LEASE_GRACE_MS)
    }

    /// Whether to renew it at `now_ms`: less than half a span left, and a renewal would move it.
    pub fn due(&self, now_ms: i64) -> bool {
        let left_ms = self.until_ms - LEASE_GRACE_MS - now_ms;
        left_ms < self.span_ms / 2 && self.until(now_ms) > self.until_ms
    }
}

/// What [`acquire`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The lease is this run's; the shop's state as it stands.
    Held(Mark),
    /// Another run holds the shop's lease, which has not expired.
    Busy,
}

/// Takes the shop's lease when it is free or expired at `now_ms`, and reads the shop's state in
/// the same write.
pub async fn acquire(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shop: Option<&str>,
    lease: &Lease,
    now_ms: i64,
) -> Result<Taken, LedgerError> {
    let out = client
        .update_item()
        .table_name(table)
        .key("pk", V::S(key(shop)))
        .update_expression("SET kind = :kind, lease_owner = :owner, lease_until_ms = :until")
        .condition_expression("attribute_not_exists(lease_until_ms) OR lease_until_ms < :now")
        .expression_attribute_values(":kind", V::S("watermark".to_owned()))
        .expression_attribute_values(":owner", V::S(lease.owner.clone()))
        .expression_attribute_values(":until", V::N(lease.until_ms.to_string()))
        .expression_attribute_values(":now", V::N(now_ms.to_string()))
        .return_values(ReturnValue::AllNew)
        .send()
        .await;
    match out {
        Ok(out) => Ok(Taken::Held(
            out.attributes.as_ref().map(from_item).unwrap_or_default(),
        )),
        Err(err) if failed_condition(&err) => Ok(Taken::Busy),
        Err(err) => Err(unavailable(&err)),
    }
}

/// Gives the shop's lease back, when this run still holds it.
pub async fn release(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shop: Option<&str>,
    lease: &Lease,
) -> Result<(), LedgerError> {
    let remove = "REMOVE lease_owner, lease_until_ms";
    held_update(client, table, shop, lease, remove, None).await?;
    Ok(())
}

/// Moves the run's lease on from `now_ms` ([`Lease::due`] says when); `Ok(false)`: the run no
/// longer holds it (it expired and another run took the shop).
pub async fn renew(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shop: Option<&str>,
    lease: &mut Lease,
    now_ms: i64,
) -> Result<bool, LedgerError> {
    let until_ms = lease.until(now_ms);
    let set = "SET lease_until_ms = :until";
    let held = held_update(client, table, shop, lease, set, Some(until_ms)).await?;
    if held {
        lease.until_ms = until_ms;
    }
    Ok(held)
}

/// An update of the shop's record made only while the run holds `lease`; whether it was.
async fn held_update(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shop: Option<&str>,
    lease: &Lease,
    expression: &str,
    until_ms: Option<i64>,
) -> Result<bool, LedgerError> {
    let mut update = client
        .update_item()
        .table_name(table)
        .key("pk", V::S(key(shop)))
        .update_expression(expression)
        .condition_expression("lease_owner = :owner")
        .expression_attribute_values(":owner", V::S(lease.owner.clone()));
    if let Some(until_ms) = until_ms {
        update = update.expression_attribute_values(":until", V::N(until_ms.to_string()));
    }
    match update.send().await {
        Ok(_) => Ok(true),
        Err(err) if failed_condition(&err) => Ok(false),
        Err(err) => Err(unavailable(&err)),
    }
}

/// The condition of [`put`]: the lease still held (when given), the watermark not going back.
fn write_condition(mark: &Mark, lease: Option<&Lease>) -> String {
    let forward = match mark.watermark_s {
        Some(_) => "(attribute_not_exists(watermark_s) OR watermark_s <= :watermark_s)",
        None => "attribute_not_exists(watermark_s)",
    };
    match lease {
        Some(_) => format!("lease_owner = :owner AND {forward}"),
        None => forward.to_owned(),
    }
}

/// Writes a shop's state, which releases `lease` (the record is written without one). Written
/// only while the run holds `lease` (when given), and never moving `watermark_s` backwards:
/// `Ok(false)` when the table refused it for either reason (another run took the shop over, or
/// went further).
pub async fn put(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shop: Option<&str>,
    mark: &Mark,
    now_ms: i64,
    lease: Option<&Lease>,
) -> Result<bool, LedgerError> {
    let condition = write_condition(mark, lease);
    let mut put = client
        .put_item()
        .table_name(table)
        .item("pk", V::S(key(shop)))
        .item("kind", V::S("watermark".to_owned()))
        .item("updated_at_ms", V::N(now_ms.to_string()));
    if let Some(shop) = shop {
        put = put.item("shop", V::S(shop.to_owned()));
    }
    if let Some(w) = mark.watermark_s {
        put = put
            .item("watermark_s", V::N(w.to_string()))
            .expression_attribute_values(":watermark_s", V::N(w.to_string()));
    }
    if let Some(lease) = lease {
        put = put.expression_attribute_values(":owner", V::S(lease.owner.clone()));
    }
    let optional = [
        ("completed_at_ms", mark.completed_at_ms),
        ("first_run_ms", mark.first_run_ms),
        ("lookback_s", mark.lookback_s),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            put = put.item(name, V::N(v.to_string()));
        }
    }
    for (name, zone) in [
        ("list_timezone", &mark.list_timezone),
        ("shop_timezone", &mark.shop_timezone),
    ] {
        if let Some(zone) = zone {
            put = put.item(name, V::S(zone.clone()));
        }
    }
    if !mark.retry.is_empty() {
        put = put.item("retry", retry_to(&mark.retry));
    }
    if let Some(c) = mark.cursor {
        put = put
            .item("cursor_from_s", V::N(c.window.from_s.to_string()))
            .item("cursor_to_s", V::N(c.window.to_s.to_string()))
            .item("cursor_pass", V::S(c.pass.as_str().to_owned()))
            .item("cursor_page", V::N(c.page.to_string()));
    }
    match put.condition_expression(condition).send().await {
        Ok(_) => Ok(true),
        Err(err) if failed_condition(&err) => Ok(false),
        Err(err) => Err(unavailable(&err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_set_reads_back_what_was_written() {
        let retry = BTreeMap::from([
            (
                "101".to_owned(),
                RetryEntry {
                    runs: 3,
                    pass: Pass::Created,
                },
            ),
            (
                "102".to_owned(),
                RetryEntry {
                    runs: 0,
                    pass: Pass::Updated,
                },
            ),
        ]);
        let mut item = HashMap::from([("retry".to_owned(), retry_to(&retry))]);
        assert_eq!(from_item(&item).retry, retry);
        item.insert("retry".to_owned(), V::S("junk".to_owned()));
        assert!(from_item(&item).retry.is_empty());
    }

    #[test]
    fn a_record_written_before_completion_times_were_kept_uses_its_watermark() {
        let item = HashMap::from([("watermark_s".to_owned(), V::N("1000".to_owned()))]);
        assert_eq!(from_item(&item).last_complete_ms(), Some(1_000_000));
        let item = HashMap::from([
            ("watermark_s".to_owned(), V::N("1000".to_owned())),
            ("completed_at_ms".to_owned(), V::N("2000500".to_owned())),
        ]);
        assert_eq!(from_item(&item).last_complete_ms(), Some(2_000_500));
    }

    #[test]
    fn a_lease_spans_at_most_its_span_and_never_past_the_deadline_plus_grace() {
        let span = 300_000;
        let lease = Lease::new(0, 3_600_000, span);
        assert_eq!(lease.until_ms, span + LEASE_GRACE_MS);
        assert!(!lease.due(100_000), "more than half a span left");
        assert!(lease.due(200_000));
        let short = Lease::new(0, 60_000, span);
        assert_eq!(short.until_ms, 60_000 + LEASE_GRACE_MS);
        assert!(!short.due(59_000), "a renewal would not move it");
    }

    #[test]
    fn keys_have_their_own_space() {
        assert_eq!(super::key(None), "watermark#default");
        assert_eq!(super::key(Some("default")), "watermark#shop#default");
    }
}
