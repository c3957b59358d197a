//! CloudWatch metrics in Embedded Metric Format: one JSON line on stdout per fact, which
//! CloudWatch Logs turns into metrics. No SDK, no extra call.
//!
//! Namespace `CartpandaRedTrack`: `Conversions` by `Outcome` (sent, duplicate, dry_run, queued,
//! failed, conflict, in_progress, store_unavailable, dead_lettered) and in total;
//! `RedTrackLatency` (ms, per postback sent or failed); `DuplicatesFromMemory` (by `Outcome`
//! `duplicate`, on the same line: duplicates answered from the instance's memory of sent
//! conversions, without a DynamoDB call); `Skipped` by `Reason`; `Rejected` (every request
//! refused with an error status) by `Reason`; `CartxTestOrders` by `TreatedAs` (sale, test): orders whose only test mark is
//! `is_cartx_test` = 1; `Refused` (orders refused with 422, each also recorded in the ledger) by
//! `Field`; without a dimension: `LedgerMemoryShort` (at a cold start whose `DEDUP_TTL_DAYS` is
//! under 200 days) and `TooOld` (deliveries and listed orders older than the
//! ledger's memory, never sent; also in `Skipped` with Reason `too_old`).

use serde_json::json;
use std::io::Write;

pub const NAMESPACE: &str = "CartpandaRedTrack";

/// Every metric a function emits in [`NAMESPACE`]: the bridge's and the redrive consumer's
/// (this module), the reconcile function's runs (`crate::reconcile::run::metrics_line`), its
/// scheduled run's shops (`crate::reconcile::shops_line`) and its coverage passes
/// (`crate::reconcile::coverage::metrics_line`). The stack test (`scripts/stack_test.py`)
/// reads this list to check that every dashboard widget and alarm names an emitted metric;
/// `tests/metric_names.rs` checks the list against the lines the code builds. A new metric goes
/// here too.
pub const EMITTED: &[&str] = &[
    "Conversions",
    "RedTrackLatency",
    "DuplicatesFromMemory",
    "Skipped",
    "Rejected",
    "CartxTestOrders",
    "Refused",
    "LedgerMemoryShort",
    "TooOld",
    "ReconcileOrders",
    "ReconcileMissing",
    "ReconcileSent",
    "ReconcileAlreadySent",
    "ReconcileNoClickId",
    "ReconcileFailed",
    "ReconcileRefused",
    "ReconcileRetrying",
    "ReconcileRetryGivenUp",
    "ReconcileIncomplete",
    "ReconcileShopsFailed",
    "ReconcileShopsStale",
    "ShopsSilent",
    "OrdersPaid",
    "OrdersCovered",
    "OrdersUncovered",
    "RedTrackMissing",
    "RedTrackDoubled",
];

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The EMF line for one metric with one dimension (and its dimensionless total).
pub fn line(
    metric: &str,
    unit: &str,
    dimension: &str,
    value_of_dimension: &str,
    value: f64,
    extra: Option<(&str, &str, f64)>,
) -> String {
    let mut metrics = vec![json!({"Name": metric, "Unit": unit})];
    let mut doc = json!({
        dimension: value_of_dimension,
        metric: value,
    });
    if let Some((name, unit, v)) = extra {
        metrics.push(json!({"Name": name, "Unit": unit}));
        doc[name] = json!(v);
    }
    doc["_aws"] = json!({
        "Timestamp": now_ms(),
        "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [[dimension], []], "Metrics": metrics}],
    });
    doc.to_string()
}

/// The EMF line for one metric without a dimension.
pub fn plain_line(metric: &str, unit: &str, value: f64) -> String {
    json!({
        metric: value,
        "_aws": {
            "Timestamp": now_ms(),
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [[]], "Metrics": [{"Name": metric, "Unit": unit}]}],
        },
    })
    .to_string()
}

fn emit(text: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// One conversion decision, with RedTrack's latency when a postback was attempted.
pub fn conversion(outcome: &str, redtrack_ms: Option<u64>) {
    let extra = redtrack_ms.map(|ms| ("RedTrackLatency", "Milliseconds", ms as f64));
    emit(line("Conversions", "Count", "Outcome", outcome, 1.0, extra));
}

/// A duplicate answered from the instance's memory of sent conversions (no DynamoDB call):
/// counted in `Conversions` (Outcome `duplicate`) as every duplicate, and in
/// `DuplicatesFromMemory`.
pub fn duplicate_from_memory() {
    emit(duplicate_from_memory_line());
}

fn duplicate_from_memory_line() -> String {
    line(
        "Conversions",
        "Count",
        "Outcome",
        "duplicate",
        1.0,
        Some(("DuplicatesFromMemory", "Count", 1.0)),
    )
}

/// A delivery that converted nothing.
pub fn skipped(reason: &str) {
    emit(line("Skipped", "Count", "Reason", reason, 1.0, None));
}

/// A cold start with a ledger memory under 200 days (`LedgerMemoryShort`).
pub fn ledger_memory_short() {
    emit(plain_line("LedgerMemoryShort", "Count", 1.0));
}

/// A delivery or listed order older than the ledger's memory, not sent (`TooOld`; the delivery's
/// skip also counts in `Skipped` by Reason `too_old`).
pub fn too_old() {
    emit(plain_line("TooOld", "Count", 1.0));
}

/// An order marked only by `is_cartx_test`, and whether it was treated as a sale or a test.
pub fn cartx_test(treated_as_test: bool) {
    emit(cartx_test_line(treated_as_test));
}

fn cartx_test_line(treated_as_test: bool) -> String {
    let treated_as = if treated_as_test { "test" } else { "sale" };
    line(
        "CartxTestOrders",
        "Count",
        "TreatedAs",
        treated_as,
        1.0,
        None,
    )
}

/// An order refused with 422, by the field refused (list positions dropped:
/// `order.line_items[].price`).
pub fn refused(field_class: &str) {
    emit(line("Refused", "Count", "Field", field_class, 1.0, None));
}

/// A request refused with an error status (a 4xx, or a 503 when the shop record or Cartpanda's
/// API could not be read), by its code.
pub fn rejected(reason: &str) {
    emit(line("Rejected", "Count", "Reason", reason, 1.0, None));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_embedded_metric_format() {
        let text = line(
            "Conversions",
            "Count",
            "Outcome",
            "sent",
            1.0,
            Some(("RedTrackLatency", "Milliseconds", 42.0)),
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["Outcome"], "sent");
        assert_eq!(v["Conversions"], 1.0);
        assert_eq!(v["RedTrackLatency"], 42.0);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["Outcome"], []]));
        assert_eq!(directive["Metrics"][1]["Unit"], "Milliseconds");
        assert!(v["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    }

    #[test]
    fn a_duplicate_from_memory_counts_as_a_duplicate_and_from_memory() {
        let v: serde_json::Value = serde_json::from_str(&duplicate_from_memory_line()).unwrap();
        assert_eq!(v["Outcome"], "duplicate");
        assert_eq!(v["Conversions"], 1.0);
        assert_eq!(v["DuplicatesFromMemory"], 1.0);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], json!([["Outcome"], []]));
        assert_eq!(directive["Metrics"][0]["Name"], "Conversions");
        assert_eq!(directive["Metrics"][1]["Name"], "DuplicatesFromMemory");
    }

    #[test]
    fn plain_lines_have_no_dimension() {
        let v: serde_json::Value =
            serde_json::from_str(&plain_line("LedgerMemoryShort", "Count", 1.0)).unwrap();
        assert_eq!(v["LedgerMemoryShort"], 1.0);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], json!([[]]));
        assert_eq!(directive["Metrics"][0]["Name"], "LedgerMemoryShort");
    }

    #[test]
    fn cartx_test_orders_are_counted_by_how_they_were_treated() {
        for (treated_as_test, value) in [(false, "sale"), (true, "test")] {
            let v: serde_json::Value =
                serde_json::from_str(&cartx_test_line(treated_as_test)).unwrap();
            assert_eq!(v["TreatedAs"], value);
            assert_eq!(v["CartxTestOrders"], 1.0);
            let directive = &v["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(directive["Dimensions"], json!([["TreatedAs"], []]));
            assert_eq!(directive["Metrics"][0]["Name"], "CartxTestOrders");
        }
    }
}
