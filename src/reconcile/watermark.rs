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

use crate::ledger::claim::LedgerError;
use crate::reconcile::orders::{Pass, Window};
use crate::reconcile::retry::RetryEntry;
use aws_sdk_dynamodb::types::AttributeValue as V;
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

fn number(item: &HashMap<String, V>, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<i64>().ok())
}

fn text(item: &HashMap<String, V>, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

/// A stored record read back.
fn from_item(item: &HashMap<String, V>) -> Mark {
    let num = |k: &str| number(item, k);
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
        list_timezone: text(item, "list_timezone"),
        shop_timezone: text(item, "shop_timezone"),
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
            let runs = number(entry, "runs")?;
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

/// Writes a shop's state.
pub async fn put(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shop: Option<&str>,
    mark: &Mark,
    now_ms: i64,
) -> Result<(), LedgerError> {
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
        put = put.item("watermark_s", V::N(w.to_string()));
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
    put.send().await.map_err(|e| unavailable(&e))?;
    Ok(())
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
    fn keys_have_their_own_space() {
        assert_eq!(super::key(None), "watermark#default");
        assert_eq!(super::key(Some("default")), "watermark#shop#default");
    }
}
