//! `cartpanda-redtrack-admin ledger extend`: gives the conversion records written before an
//! upgrade the configured memory (`DEDUP_TTL_DAYS`), so a refund or chargeback delivered after
//! the old expiry is still answered as a duplicate.
//!
//! Which records: sent conversions, `evt#…` and `dry#…` with status `SENT` (the records that
//! stop a conversion from being sent again). Claims in progress, queued and failed conversions
//! keep their own short expiries, and shop records, watermarks, notes and refusals are not
//! conversions. The new `expires_at` is the record's sent time (`sent_at_ms`, else
//! `updated_at_ms`, else `claimed_at_ms`, else now) plus the memory; a record whose expiry is
//! already as late (or that has none) is left alone, so no expiry is ever shortened, and each
//! write is conditional on that.
//!
//! Paced: the scan reads at most `rate` items a second (reads and writes follow). Resumable: it
//! prints the last key it read after every page, and `--resume <key>` starts after it. A dry
//! run counts what would change and writes nothing.

use crate::ledger::claim::{LedgerError, STATUS_SENT};
use crate::ledger::dynamo::{DynamoLedger, get_n, get_s, ledger_error, n, s};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// What to do.
#[derive(Debug, Clone)]
pub struct ExtendOptions {
    /// The memory, in days (`DEDUP_TTL_DAYS`).
    pub memory_days: u32,
    /// Count, change nothing.
    pub dry_run: bool,
    /// Most items read a second (at least 1).
    pub rate: u32,
    /// The key to start after (printed by an earlier run).
    pub resume: Option<String>,
    /// Stop after reading this many items (a partial run; resume from the key it prints).
    pub max_items: Option<u64>,
    pub now_ms: i64,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtendSummary {
    /// Items read (every kind).
    pub scanned: u64,
    /// Sent conversion records among them.
    pub conversions: u64,
    /// Records given a later expiry (on a dry run: that would be).
    pub extended: u64,
    /// Records whose expiry was already as late.
    pub kept: u64,
    /// Where to resume when the run stopped before the end of the table.
    pub resume: Option<String>,
}

impl ExtendSummary {
    /// The operator's summary line.
    pub fn line(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would extend" } else { "extended" };
        let mut out = format!(
            "read {} item(s): {} sent conversion record(s), {verb} {}, {} already kept as long",
            self.scanned, self.conversions, self.extended, self.kept
        );
        match &self.resume {
            Some(key) => out.push_str(&format!("; stopped early: resume with --resume '{key}'")),
            None => out.push_str("; the whole table was read"),
        }
        out
    }
}

/// Whether the item is a sent conversion's record (`evt#…` or `dry#…`, status `SENT`).
fn is_sent_conversion(item: &HashMap<String, AttributeValue>) -> bool {
    let key = get_s(item, "pk");
    matches!(
        crate::ledger::keys::parse(&key),
        Some(crate::ledger::keys::Key::Conversion { .. })
    ) && get_s(item, "status") == STATUS_SENT
}

/// The expiry a sent conversion record gets (epoch seconds), or `None` when it keeps its own: not
/// a sent conversion, no expiry at all (kept for ever), or one already as late.
pub fn new_expiry(
    item: &HashMap<String, AttributeValue>,
    memory_days: u32,
    now_ms: i64,
) -> Option<i64> {
    if !is_sent_conversion(item) {
        return None;
    }
    let current = get_n(item, "expires_at")?;
    let base_ms = ["sent_at_ms", "updated_at_ms", "claimed_at_ms"]
        .iter()
        .find_map(|k| get_n(item, k))
        .unwrap_or(now_ms);
    let wanted = base_ms / 1000 + i64::from(memory_days) * 86_400;
    (wanted > current).then_some(wanted)
}

/// Runs `ledger extend` over the table.
pub async fn extend(
    ledger: &DynamoLedger,
    options: &ExtendOptions,
    progress: &mut dyn FnMut(&ExtendSummary),
) -> Result<ExtendSummary, LedgerError> {
    let rate = options.rate.max(1);
    let started = Instant::now();
    let mut summary = ExtendSummary::default();
    let mut start = options
        .resume
        .as_ref()
        .map(|key| HashMap::from([("pk".to_owned(), s(key))]));
    loop {
        let left = options.max_items.map_or(u64::MAX, |m| m - summary.scanned);
        let page = ledger
            .client
            .scan()
            .table_name(&ledger.table)
            .limit(rate.min(100).min(left.min(100) as u32).max(1) as i32)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(ledger_error)?;
        for item in page.items() {
            summary.scanned += 1;
            extend_one(ledger, options, item, &mut summary).await?;
        }
        start = page.last_evaluated_key.filter(|k| !k.is_empty());
        summary.resume = start.as_ref().map(|k| get_s(k, "pk"));
        progress(&summary);
        let done = options.max_items.is_some_and(|m| summary.scanned >= m);
        if start.is_none() || done {
            return Ok(summary);
        }
        // Paced: `scanned` items may take `scanned / rate` seconds at the least.
        let due = Duration::from_secs_f64(summary.scanned as f64 / f64::from(rate));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// One item: counted, and its expiry moved when it is a sent conversion kept too short.
async fn extend_one(
    ledger: &DynamoLedger,
    options: &ExtendOptions,
    item: &HashMap<String, AttributeValue>,
    summary: &mut ExtendSummary,
) -> Result<(), LedgerError> {
    if !is_sent_conversion(item) {
        return Ok(());
    }
    let key = get_s(item, "pk");
    summary.conversions += 1;
    let Some(expires_at) = new_expiry(item, options.memory_days, options.now_ms) else {
        summary.kept += 1;
        return Ok(());
    };
    if options.dry_run {
        summary.extended += 1;
        return Ok(());
    }
    let result = ledger
        .client
        .update_item()
        .table_name(&ledger.table)
        .key("pk", s(&key))
        .update_expression("SET expires_at = :exp")
        .condition_expression("expires_at < :exp AND #status = :sent")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":exp", n(expires_at))
        .expression_attribute_values(":sent", s(STATUS_SENT))
        .send()
        .await;
    match result {
        Ok(_) => summary.extended += 1,
        // Changed since it was read (a later write, or deleted): left as it is.
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            summary.kept += 1;
        }
        Err(err) => return Err(ledger_error(err)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pk: &str, status: &str, pairs: &[(&str, i64)]) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::from([("pk".to_owned(), s(pk)), ("status".to_owned(), s(status))]);
        for (k, v) in pairs {
            item.insert((*k).to_owned(), n(*v));
        }
        item
    }

    #[test]
    fn only_sent_conversions_get_a_later_expiry_never_an_earlier_one() {
        let now_ms = 1_800_000_000_000;
        let sent_ms = now_ms - 10 * 86_400_000;
        let short = [
            ("sent_at_ms", sent_ms),
            ("expires_at", sent_ms / 1000 + 30 * 86_400),
        ];
        let wanted = sent_ms / 1000 + 400 * 86_400;
        assert_eq!(
            new_expiry(&record("evt#1-purchase", "SENT", &short), 400, now_ms),
            Some(wanted)
        );
        assert_eq!(
            new_expiry(&record("dry#s#1-refund", "SENT", &short), 400, now_ms),
            Some(wanted)
        );
        let long = [("sent_at_ms", sent_ms), ("expires_at", wanted + 1)];
        assert_eq!(
            new_expiry(&record("evt#1-purchase", "SENT", &long), 400, now_ms),
            None
        );
        for (pk, status) in [
            ("evt#1-purchase", "QUEUED"),
            ("evt#1-purchase", "IN_PROGRESS"),
            ("evt#1-purchase", "FAILED"),
            ("note#1#no_click_id", "SENT"),
            ("store#loja", "SENT"),
        ] {
            assert_eq!(
                new_expiry(&record(pk, status, &short), 400, now_ms),
                None,
                "{pk} {status}"
            );
        }
        let forever = [("sent_at_ms", sent_ms)];
        assert_eq!(
            new_expiry(&record("evt#1-purchase", "SENT", &forever), 400, now_ms),
            None
        );
        let no_time = [("expires_at", 1)];
        assert_eq!(
            new_expiry(&record("evt#1-purchase", "SENT", &no_time), 400, now_ms),
            Some(now_ms / 1000 + 400 * 86_400)
        );
    }
}
