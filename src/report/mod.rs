//! The report an agency reads: `report --since 7d [--shop NAME] [--format table|csv|json]`, from
//! the ledger's table alone.
//!
//! Per day (UTC, of the claim), shop and conversion type: conversions **sent**, **queued**
//! (waiting for RedTrack in the redrive queue), **failed** (RedTrack refused them), **in
//! progress**, orders **refused** (the `refused_*` notes, e.g. 422) and **skipped without a
//! click ID** (the `no_click_id` notes), and the sums sent by currency. Then the orders that need
//! a look: failed, queued for more than an hour, stuck in progress, refused, without a click ID.
//! Duplicates cost no write and are not recorded; their rate is on the dashboard (metrics).
//!
//! Read from the records: `conversion_type`, `status`, `claimed_at_ms`, `amount`, `currency`
//! (written with each claim since this report exists; older records have no sum), `order_id`,
//! and the notes of [`crate::ledger::notes`]. Never PII: there is none in the table.

use crate::ledger::claim::{STATUS_FAILED, STATUS_IN_PROGRESS, STATUS_QUEUED, STATUS_SENT};
use crate::ledger::notes::{NO_CLICK_ID, NOTE_PREFIX, day_of};
use aws_sdk_dynamodb::types::AttributeValue;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

/// The label of the default shop (the one the environment configures).
pub const DEFAULT_SHOP: &str = "(default)";
/// A conversion queued longer than this needs a look.
pub const QUEUED_TOO_LONG_MS: i64 = 3600 * 1000;

/// One line: a day, a shop, a conversion type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    pub day: String,
    pub shop: String,
    /// The RedTrack conversion type; for notes, which precede conversion, the Cartpanda event.
    pub conversion_type: String,
    pub sent: u64,
    pub queued: u64,
    pub failed: u64,
    pub in_progress: u64,
    pub refused: u64,
    pub no_click_id: u64,
    /// Sums sent, by currency (`""` when the record has no currency), as plain decimals.
    pub sums: BTreeMap<String, String>,
}

/// An order that needs a look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Look {
    pub day: String,
    pub shop: String,
    pub order_id: String,
    /// The event ID (conversions) or the Cartpanda event (notes).
    pub what: String,
    /// `failed`, `queued_too_long`, `stuck_in_progress`, `no_click_id`, `refused_422`, …
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub since: String,
    pub shop: Option<String>,
    pub rows: Vec<Row>,
    pub needs_a_look: Vec<Look>,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "--format must be table, csv or json, got `{other}`"
            )),
        }
    }
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, key: &str) -> &'a str {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .map_or("", String::as_str)
}

fn number(item: &HashMap<String, AttributeValue>, key: &str) -> Option<i64> {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// The shop and the rest of a record key after its prefix: `evt#<id>` or `evt#<shop>#<id>`;
/// `note#<order>#<reason>` or `note#<shop>#<order>#<reason>`.
fn split_key(rest: &str, parts_without_shop: usize) -> (String, Vec<&str>) {
    let parts: Vec<&str> = rest.split('#').collect();
    if parts.len() > parts_without_shop {
        (parts[0].to_owned(), parts[1..].to_vec())
    } else {
        (DEFAULT_SHOP.to_owned(), parts)
    }
}

/// A row and its sums by currency while they are added up.
type RowSums = (Row, BTreeMap<String, Decimal>);

/// Builds the report from the table's items (a scan of `evt#` and `note#` records).
pub fn from_items(
    items: &[HashMap<String, AttributeValue>],
    since_ms: i64,
    shop: Option<&str>,
    now_ms: i64,
) -> Report {
    let mut rows: BTreeMap<(String, String, String), RowSums> = BTreeMap::new();
    let mut looks = Vec::new();
    let wanted = |s: &str| shop.is_none_or(|want| want == s);
    for item in items {
        let pk = text(item, "pk");
        if let Some(rest) = pk.strip_prefix("evt#") {
            let (record_shop, parts) = split_key(rest, 1);
            let Some(at) = number(item, "claimed_at_ms").filter(|at| *at >= since_ms) else {
                continue;
            };
            if !wanted(&record_shop) {
                continue;
            }
            let day = day_of(at);
            let kind = text(item, "conversion_type").to_owned();
            let (row, sums) = rows
                .entry((day.clone(), record_shop.clone(), kind.clone()))
                .or_insert_with(|| {
                    (
                        Row {
                            day: day.clone(),
                            shop: record_shop.clone(),
                            conversion_type: kind,
                            ..Row::default()
                        },
                        BTreeMap::new(),
                    )
                });
            let status = text(item, "status");
            let event_id = parts.join("#");
            let look = |reason: &str| Look {
                day: day.clone(),
                shop: record_shop.clone(),
                order_id: text(item, "order_id").to_owned(),
                what: event_id.clone(),
                reason: reason.to_owned(),
            };
            match status {
                STATUS_SENT => {
                    row.sent += 1;
                    if let Ok(amount) = Decimal::from_str(text(item, "amount")) {
                        *sums.entry(text(item, "currency").to_owned()).or_default() += amount;
                    }
                }
                STATUS_QUEUED => {
                    row.queued += 1;
                    if now_ms - at > QUEUED_TOO_LONG_MS {
                        looks.push(look("queued_too_long"));
                    }
                }
                STATUS_FAILED => {
                    row.failed += 1;
                    looks.push(look("failed"));
                }
                STATUS_IN_PROGRESS => {
                    row.in_progress += 1;
                    if number(item, "lease_until_ms").is_some_and(|l| l < now_ms) {
                        looks.push(look("stuck_in_progress"));
                    }
                }
                _ => {}
            }
        } else if let Some(rest) = pk.strip_prefix(NOTE_PREFIX) {
            let (record_shop, parts) = split_key(rest, 2);
            let Some(at) = number(item, "created_at_ms").filter(|at| *at >= since_ms) else {
                continue;
            };
            if !wanted(&record_shop) {
                continue;
            }
            let day = day_of(at);
            let reason = text(item, "reason").to_owned();
            let event = text(item, "event").to_owned();
            let (row, _) = rows
                .entry((day.clone(), record_shop.clone(), event.clone()))
                .or_insert_with(|| {
                    (
                        Row {
                            day: day.clone(),
                            shop: record_shop.clone(),
                            conversion_type: event.clone(),
                            ..Row::default()
                        },
                        BTreeMap::new(),
                    )
                });
            if reason == NO_CLICK_ID {
                row.no_click_id += 1;
            } else if reason.starts_with("refused") {
                row.refused += 1;
            }
            looks.push(Look {
                day,
                shop: record_shop,
                order_id: parts.first().map_or("", |p| p).to_owned(),
                what: event,
                reason,
            });
        }
    }
    looks.sort_by(|a, b| (&a.day, &a.shop, &a.order_id).cmp(&(&b.day, &b.shop, &b.order_id)));
    Report {
        since: crate::inbound::datetime::format_utc(since_ms / 1000),
        shop: shop.map(str::to_owned),
        rows: rows
            .into_values()
            .map(|(mut row, sums)| {
                row.sums = sums
                    .into_iter()
                    .map(|(c, v)| (c, crate::inbound::money::format_sum(v)))
                    .collect();
                row
            })
            .collect(),
        needs_a_look: looks,
    }
}

/// Reads the table and builds the report. `shop`: a named shop, or [`DEFAULT_SHOP`]; `None`
/// reports every shop.
pub async fn build(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    since_ms: i64,
    shop: Option<&str>,
    now_ms: i64,
) -> Result<Report, String> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .filter_expression(
                "(begins_with(pk, :evt) AND claimed_at_ms >= :since) \
                 OR (begins_with(pk, :note) AND created_at_ms >= :since)",
            )
            .expression_attribute_values(":evt", AttributeValue::S("evt#".to_owned()))
            .expression_attribute_values(":note", AttributeValue::S(NOTE_PREFIX.to_owned()))
            .expression_attribute_values(":since", AttributeValue::N(since_ms.to_string()))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| {
                format!(
                    "could not read the table: {}",
                    aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&e)
                        .unwrap_or("request failed")
                )
            })?;
        items.extend(page.items().iter().cloned());
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    Ok(from_items(&items, since_ms, shop, now_ms))
}

fn sums_text(row: &Row) -> String {
    row.sums
        .iter()
        .map(|(c, v)| {
            if c.is_empty() {
                v.clone()
            } else {
                format!("{c} {v}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', ';']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The report as text.
pub fn render(report: &Report, format: Format) -> String {
    const HEAD: [&str; 10] = [
        "day",
        "shop",
        "type",
        "sent",
        "queued",
        "failed",
        "in_progress",
        "refused",
        "no_click_id",
        "sums",
    ];
    let cells = |r: &Row| -> Vec<String> {
        vec![
            r.day.clone(),
            r.shop.clone(),
            r.conversion_type.clone(),
            r.sent.to_string(),
            r.queued.to_string(),
            r.failed.to_string(),
            r.in_progress.to_string(),
            r.refused.to_string(),
            r.no_click_id.to_string(),
            sums_text(r),
        ]
    };
    let look_cells = |l: &Look| -> Vec<String> {
        vec![
            l.day.clone(),
            l.shop.clone(),
            l.order_id.clone(),
            l.what.clone(),
            l.reason.clone(),
        ]
    };
    const LOOK_HEAD: [&str; 5] = ["day", "shop", "order_id", "what", "reason"];
    match format {
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default(),
        Format::Csv => {
            let mut out = String::new();
            let mut line = |fields: Vec<String>| {
                out.push_str(
                    &fields
                        .iter()
                        .map(|f| csv_field(f))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                out.push('\n');
            };
            line(HEAD.iter().map(|h| (*h).to_owned()).collect());
            for row in &report.rows {
                line(cells(row));
            }
            out.push('\n');
            let mut line = |fields: Vec<String>| {
                out.push_str(
                    &fields
                        .iter()
                        .map(|f| csv_field(f))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                out.push('\n');
            };
            line(LOOK_HEAD.iter().map(|h| (*h).to_owned()).collect());
            for look in &report.needs_a_look {
                line(look_cells(look));
            }
            out
        }
        Format::Table => {
            let mut out = format!(
                "Conversions since {} UTC{}\n",
                report.since,
                report
                    .shop
                    .as_deref()
                    .map(|s| format!(", shop {s}"))
                    .unwrap_or_default()
            );
            out.push_str(&table(
                &HEAD,
                &report.rows.iter().map(cells).collect::<Vec<_>>(),
            ));
            out.push_str(&format!(
                "\nOrders that need a look: {}\n",
                report.needs_a_look.len()
            ));
            if !report.needs_a_look.is_empty() {
                out.push_str(&table(
                    &LOOK_HEAD,
                    &report
                        .needs_a_look
                        .iter()
                        .map(look_cells)
                        .collect::<Vec<_>>(),
                ));
            }
            out
        }
    }
}

fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut text = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut out = line(head.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The admin command: `report --since <7d | RFC 3339> [--shop NAME] [--format table|csv|json]`.
pub async fn command(
    client: &aws_sdk_dynamodb::Client,
    table_name: &str,
    since: &str,
    shop: Option<&str>,
    format: &str,
    now_ms: i64,
) -> Result<String, String> {
    let format: Format = format.parse()?;
    let since_s = crate::reconcile::config::parse_since(since, now_ms / 1000)
        .map_err(|e| format!("--since {e}"))?;
    let report = build(client, table_name, since_s * 1000, shop, now_ms).await?;
    Ok(render(&report, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, &str)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| {
                let value = if k.ends_with("_ms") {
                    AttributeValue::N((*v).to_owned())
                } else {
                    AttributeValue::S((*v).to_owned())
                };
                ((*k).to_owned(), value)
            })
            .collect()
    }

    const DAY: i64 = 1_795_000_000_000; // 2026-11-18

    #[test]
    fn counts_and_sums_per_day_shop_and_type() {
        let t = DAY.to_string();
        let old = (DAY - 10 * 86_400_000).to_string();
        let items = vec![
            item(&[
                ("pk", "evt#1-purchase"),
                ("status", "SENT"),
                ("conversion_type", "Purchase"),
                ("claimed_at_ms", &t),
                ("amount", "10.50"),
                ("currency", "BRL"),
                ("order_id", "1"),
            ]),
            item(&[
                ("pk", "evt#2-purchase"),
                ("status", "SENT"),
                ("conversion_type", "Purchase"),
                ("claimed_at_ms", &t),
                ("amount", "4.50"),
                ("currency", "BRL"),
                ("order_id", "2"),
            ]),
            item(&[
                ("pk", "evt#3-purchase"),
                ("status", "FAILED"),
                ("conversion_type", "Purchase"),
                ("claimed_at_ms", &t),
                ("order_id", "3"),
            ]),
            item(&[
                ("pk", "evt#loja#4-purchase"),
                ("status", "SENT"),
                ("conversion_type", "Purchase"),
                ("claimed_at_ms", &t),
                ("amount", "7.00"),
                ("currency", "USD"),
                ("order_id", "4"),
            ]),
            item(&[
                ("pk", "evt#5-purchase"),
                ("status", "SENT"),
                ("conversion_type", "Purchase"),
                ("claimed_at_ms", &old),
                ("amount", "99.00"),
                ("currency", "BRL"),
            ]),
            item(&[
                ("pk", "note#6#no_click_id"),
                ("reason", "no_click_id"),
                ("event", "order.paid"),
                ("created_at_ms", &t),
                ("order_id", "6"),
            ]),
            item(&[("pk", "store#loja"), ("postback_url", "https://x")]),
        ];
        let report = from_items(&items, DAY - 86_400_000, None, DAY + 1000);
        assert_eq!(report.rows.len(), 3, "{:#?}", report.rows);
        let default = &report.rows[0];
        assert_eq!(
            (default.shop.as_str(), default.conversion_type.as_str()),
            (DEFAULT_SHOP, "Purchase")
        );
        assert_eq!((default.sent, default.failed), (2, 1));
        assert_eq!(default.sums["BRL"], "15.00");
        assert_eq!(report.rows[1].no_click_id, 1);
        assert_eq!(report.rows[2].shop, "loja");
        let reasons: Vec<_> = report
            .needs_a_look
            .iter()
            .map(|l| (l.order_id.as_str(), l.reason.as_str()))
            .collect();
        assert_eq!(reasons, [("3", "failed"), ("6", "no_click_id")]);
        let only = from_items(&items, DAY - 86_400_000, Some("loja"), DAY);
        assert_eq!(only.rows.len(), 1);
        let csv = render(&report, Format::Csv);
        assert!(csv.starts_with("day,shop,type,sent,queued,failed,in_progress,refused,no_click_id,sums\n2026-11-18,(default),Purchase,2,0,1,0,0,0,BRL 15.00\n"), "{csv}");
        let table = render(&report, Format::Table);
        assert!(table.contains("Orders that need a look: 2"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&render(&report, Format::Json)).unwrap();
        assert_eq!(json["rows"][0]["sums"]["BRL"], "15.00");
        assert_eq!(
            "xml".parse::<Format>().unwrap_err(),
            "--format must be table, csv or json, got `xml`"
        );
    }
}
