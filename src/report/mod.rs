//! The report an agency reads: `report --since 7d [--shop NAME] [--format table|csv|json|html]`, from
//! the ledger's table alone.
//!
//! Per day (UTC, of the claim), shop and conversion type: conversions **sent**, **queued**
//! (waiting for RedTrack in the redrive queue), **failed** (RedTrack refused them), **in
//! progress**, orders **refused** with 422 (their `refused#…` records,
//! [`crate::ledger::refusal`]) and **skipped without a click ID** (the `no_click_id` notes), and
//! the sums sent by currency. Then the orders that need a look: failed, queued for more than an
//! hour, stuck in progress, refused, without a click ID. Duplicates leave no record and are not
//! counted; their rate is on the dashboard (metrics).
//!
//! Then the coverage of paid orders per shop and day (the shop's day): paid, covered (sent,
//! queued or noted), of them noted, uncovered, and the share covered, from the records the
//! reconcile function's daily coverage pass stores ([`crate::reconcile::coverage`]); a shop and
//! day without one (a shop without reconciliation, a day not measured yet) says "not measured",
//! never 100 %.
//!
//! Read from the records: `conversion_type`, `status`, `claimed_at_ms`, `amount`, `currency`
//! (written with each claim since this report exists; older records have no sum), `order_id`,
//! the notes of [`crate::ledger::notes`] and the refusal records. Never PII: there is none in the
//! table.

use crate::ledger::claim::{STATUS_FAILED, STATUS_IN_PROGRESS, STATUS_QUEUED, STATUS_SENT};
use crate::ledger::keys::{self, Key};
use crate::ledger::notes::{NO_CLICK_ID, day_of};
pub mod html;

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
    /// RedTrack's own count of the day (its `rtcount#…` record,
    /// [`crate::reconcile::rtcount`]): conversions of the day's click IDs RedTrack recorded,
    /// sent but not recorded, recorded more often than sent. `None`: not measured (no RedTrack
    /// API key, RedTrack refused it, or the day not checked yet).
    pub rt_recorded: Option<u64>,
    pub rt_missing: Option<u64>,
    pub rt_doubled: Option<u64>,
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

/// The figures of a measured day ([`crate::reconcile::coverage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Measured {
    pub paid: u64,
    /// Sent, queued or noted.
    pub covered: u64,
    /// Of the covered: noted (test, no click ID, too old, refused).
    pub noted: u64,
    pub uncovered: u64,
}

/// The coverage of a shop's day: measured, or not (`None`: no reconciliation, or not yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoverageRow {
    pub day: String,
    pub shop: String,
    pub measured: Option<Measured>,
    /// The share covered (`71.4%`), or `not measured`.
    pub coverage: String,
}

/// The share of paid orders covered, to a tenth of a percent (rounded down: 99.96 % is not
/// shown as 100 %), or `not measured`.
pub fn coverage_text(measured: Option<&Measured>) -> String {
    match measured {
        None => "not measured".to_owned(),
        Some(m) if m.paid == 0 => "no paid orders".to_owned(),
        Some(m) => {
            let tenths = m.covered.min(m.paid) * 1000 / m.paid;
            format!("{}.{}%", tenths / 10, tenths % 10)
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub since: String,
    pub shop: Option<String>,
    /// Of the dry-run conversions (`report --dry-runs`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    pub rows: Vec<Row>,
    pub needs_a_look: Vec<Look>,
    /// Per shop and day: paid orders and how many were covered ([`CoverageRow`]).
    pub coverage: Vec<CoverageRow>,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    /// One self-contained page with a chart per shop ([`html`]).
    Html,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            other => Err(format!(
                "--format must be table, csv, json or html, got `{other}`"
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

/// The report's name of the shop a record key names.
fn shop_name(shop: Option<&str>) -> String {
    shop.map_or_else(|| DEFAULT_SHOP.to_owned(), str::to_owned)
}

/// A row and its sums by currency while they are added up.
type RowSums = (Row, BTreeMap<String, Decimal>);

/// Builds the report from the table's items (a scan of `evt#`, `note#` and `refused#` records).
pub fn from_items(
    items: &[HashMap<String, AttributeValue>],
    since_ms: i64,
    shop: Option<&str>,
    now_ms: i64,
) -> Report {
    from_items_of(items, since_ms, shop, now_ms, false)
}

/// [`from_items`], of the dry-run conversions (`dry#…`, `DRY_RUN=true`) when `dry_run`.
pub fn from_items_of(
    items: &[HashMap<String, AttributeValue>],
    since_ms: i64,
    shop: Option<&str>,
    now_ms: i64,
    dry_run: bool,
) -> Report {
    let mut tally = Tally {
        since_ms,
        now_ms,
        shop,
        rows: BTreeMap::new(),
        looks: Vec::new(),
        measured: BTreeMap::new(),
        rt_counts: Vec::new(),
    };
    for item in items {
        match keys::parse(text(item, "pk")) {
            Some(Key::Conversion {
                shop,
                event_id,
                dry_run: of_dry_run,
            }) if of_dry_run == dry_run => tally.conversion(item, shop_name(shop), event_id),
            Some(Key::Note { shop, order_id, .. }) => tally.note(item, shop_name(shop), order_id),
            Some(Key::Refusal { .. }) => tally.refusal(item),
            Some(Key::Coverage { shop, day }) if !dry_run => {
                tally.coverage(item, shop_name(shop), day)
            }
            Some(Key::RtCount { shop, day }) if !dry_run => {
                tally.rt_count(item, shop_name(shop), day)
            }
            _ => {}
        }
    }
    let mut report = tally.report();
    report.dry_run = dry_run;
    if dry_run {
        report.coverage.clear();
    }
    report
}

/// The rows and the orders that need a look, while the records are read.
struct Tally<'a> {
    since_ms: i64,
    now_ms: i64,
    /// The one shop reported, if one.
    shop: Option<&'a str>,
    rows: BTreeMap<(String, String, String), RowSums>,
    looks: Vec<Look>,
    /// The measured days, by (day, shop).
    measured: BTreeMap<(String, String), Measured>,
    /// The (day, shop) RedTrack's count measured, with its figures by type.
    rt_counts: Vec<(String, String, BTreeMap<String, [u64; 3]>)>,
}

impl Tally<'_> {
    /// Whether a record of this shop is reported.
    fn wanted(&self, shop: &str) -> bool {
        self.shop.is_none_or(|want| want == shop)
    }

    /// The row of a day, shop and conversion type (or event), empty at first.
    fn row(&mut self, day: &str, shop: &str, kind: &str) -> &mut RowSums {
        self.rows
            .entry((day.to_owned(), shop.to_owned(), kind.to_owned()))
            .or_insert_with(|| {
                let row = Row {
                    day: day.to_owned(),
                    shop: shop.to_owned(),
                    conversion_type: kind.to_owned(),
                    ..Row::default()
                };
                (row, BTreeMap::new())
            })
    }

    /// A conversion record (`evt#…`, its shop and event ID read from the key): counted by status, its sum added when
    /// sent; failed, long queued or stuck in progress, it needs a look.
    fn conversion(&mut self, item: &HashMap<String, AttributeValue>, shop: String, event_id: &str) {
        let Some(at) = number(item, "claimed_at_ms").filter(|at| *at >= self.since_ms) else {
            return;
        };
        if !self.wanted(&shop) {
            return;
        }
        let day = day_of(at);
        let now_ms = self.now_ms;
        let (row, sums) = self.row(&day, &shop, text(item, "conversion_type"));
        let reason = match text(item, "status") {
            STATUS_SENT => {
                row.sent += 1;
                if let Ok(amount) = Decimal::from_str(text(item, "amount")) {
                    *sums.entry(text(item, "currency").to_owned()).or_default() += amount;
                }
                None
            }
            STATUS_QUEUED => {
                row.queued += 1;
                (now_ms - at > QUEUED_TOO_LONG_MS).then_some("queued_too_long")
            }
            STATUS_FAILED => {
                row.failed += 1;
                Some("failed")
            }
            STATUS_IN_PROGRESS => {
                row.in_progress += 1;
                let stuck = number(item, "lease_until_ms").is_some_and(|l| l < now_ms);
                stuck.then_some("stuck_in_progress")
            }
            _ => None,
        };
        if let Some(reason) = reason {
            self.looks.push(Look {
                day,
                shop,
                order_id: text(item, "order_id").to_owned(),
                what: event_id.to_owned(),
                reason: reason.to_owned(),
            });
        }
    }

    /// A note (`note#…`, its shop and order ID read from the key): an order refused or without a click ID, counted
    /// under its Cartpanda event; it needs a look.
    fn note(&mut self, item: &HashMap<String, AttributeValue>, shop: String, order_id: &str) {
        let Some(at) = number(item, "created_at_ms").filter(|at| *at >= self.since_ms) else {
            return;
        };
        if !self.wanted(&shop) {
            return;
        }
        let day = day_of(at);
        let reason = text(item, "reason").to_owned();
        let event = text(item, "event").to_owned();
        let (row, _) = self.row(&day, &shop, &event);
        if reason == NO_CLICK_ID {
            row.no_click_id += 1;
        } else if reason.starts_with("refused") {
            row.refused += 1;
        }
        self.looks.push(Look {
            day,
            shop,
            order_id: order_id.to_owned(),
            what: event,
            reason,
        });
    }

    /// An order refused with 422 (`refused#…`, [`crate::ledger::refusal`]): counted as refused
    /// under its Cartpanda event; it needs a look, with the field refused.
    fn refusal(&mut self, item: &HashMap<String, AttributeValue>) {
        let Some(at) = number(item, "refused_at_ms").filter(|at| *at >= self.since_ms) else {
            return;
        };
        let shop = match text(item, "shop") {
            "" | "default" => DEFAULT_SHOP.to_owned(),
            named => named.to_owned(),
        };
        if !self.wanted(&shop) {
            return;
        }
        let day = day_of(at);
        let event = text(item, "event").to_owned();
        self.row(&day, &shop, &event).0.refused += 1;
        self.looks.push(Look {
            day,
            shop,
            order_id: text(item, "order_id").to_owned(),
            what: event,
            reason: format!(
                "refused_422: `{}` {}",
                text(item, "field"),
                text(item, "reason")
            ),
        });
    }

    /// A coverage record (`coverage#…`): the figures of a shop's day, when the day ended after
    /// the report's start.
    fn coverage(&mut self, item: &HashMap<String, AttributeValue>, shop: String, day: &str) {
        let in_period = number(item, "day_end_ms").is_some_and(|end| end > self.since_ms);
        let figures = crate::reconcile::coverage::figures(item);
        if let (true, true, Some([paid, covered, noted, uncovered])) =
            (in_period, self.wanted(&shop), figures)
        {
            let measured = Measured {
                paid,
                covered,
                noted,
                uncovered,
            };
            self.measured.insert((day.to_owned(), shop), measured);
        }
    }

    /// Every shop and day the report shows (its rows' and the measured ones), with its
    /// coverage or "not measured".
    fn coverage_rows(&self) -> Vec<CoverageRow> {
        let mut days: BTreeMap<(String, String), Option<Measured>> = self
            .rows
            .keys()
            .map(|(day, shop, _)| ((day.clone(), shop.clone()), None))
            .collect();
        for (key, measured) in &self.measured {
            days.insert(key.clone(), Some(*measured));
        }
        days.into_iter()
            .map(|((day, shop), measured)| CoverageRow {
                coverage: coverage_text(measured.as_ref()),
                day,
                shop,
                measured,
            })
            .collect()
    }

    /// RedTrack's count of a shop's day (`rtcount#…`): kept when measured, to fill its rows.
    fn rt_count(&mut self, item: &HashMap<String, AttributeValue>, shop: String, day: &str) {
        let measured = item.get("measured").and_then(|v| v.as_bool().ok()) == Some(&true);
        if !measured || day < day_of(self.since_ms).as_str() || !self.wanted(&shop) {
            return;
        }
        let mut types = BTreeMap::new();
        if let Some(map) = item.get("types").and_then(|v| v.as_m().ok()) {
            for (kind, figures) in map {
                let Ok(f) = figures.as_m() else { continue };
                let get = |k: &str| number(f, k).unwrap_or(0).max(0) as u64;
                types.insert(
                    kind.clone(),
                    [get("recorded"), get("missing"), get("doubled")],
                );
            }
        }
        self.rt_counts.push((day.to_owned(), shop, types));
    }

    /// Fills the rows of the days RedTrack's count measured: its figures by type (a type it
    /// found but no row had gets a row), zero for the day's other types.
    fn fill_rt_counts(&mut self) {
        for (day, shop, types) in std::mem::take(&mut self.rt_counts) {
            for (kind, [recorded, missing, doubled]) in &types {
                let (row, _) = self.row(&day, &shop, kind);
                row.rt_recorded = Some(*recorded);
                row.rt_missing = Some(*missing);
                row.rt_doubled = Some(*doubled);
            }
            for ((d, s, _), (row, _)) in self.rows.iter_mut() {
                if *d == day && *s == shop && row.rt_recorded.is_none() {
                    (row.rt_recorded, row.rt_missing, row.rt_doubled) = (Some(0), Some(0), Some(0));
                }
            }
        }
    }

    /// The report: rows in day, shop, type order with their sums as text; looks by day, shop
    /// and order.
    fn report(mut self) -> Report {
        self.fill_rt_counts();
        self.looks
            .sort_by(|a, b| (&a.day, &a.shop, &a.order_id).cmp(&(&b.day, &b.shop, &b.order_id)));
        let coverage = self.coverage_rows();
        Report {
            coverage,
            since: crate::inbound::datetime::format_utc(self.since_ms / 1000),
            shop: self.shop.map(str::to_owned),
            dry_run: false,
            rows: self
                .rows
                .into_values()
                .map(|(mut row, sums)| {
                    row.sums = sums
                        .into_iter()
                        .map(|(c, v)| (c, crate::inbound::money::format_sum(v)))
                        .collect();
                    row
                })
                .collect(),
            needs_a_look: self.looks,
        }
    }
}

/// Reads the table and builds the report. `shop`: a named shop, or [`DEFAULT_SHOP`]; `None`
/// reports every shop. `dry_run`: of the dry-run conversions instead of the live ones.
pub async fn build(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    since_ms: i64,
    shop: Option<&str>,
    now_ms: i64,
    dry_run: bool,
) -> Result<Report, String> {
    let conversions = if dry_run {
        keys::DRY_RUN
    } else {
        keys::CONVERSION
    };
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .filter_expression(
                "(begins_with(pk, :evt) AND claimed_at_ms >= :since) \
                 OR (begins_with(pk, :note) AND created_at_ms >= :since) \
                 OR (begins_with(pk, :refused) AND refused_at_ms >= :since) \
                 OR (begins_with(pk, :coverage) AND day_end_ms > :since) \
                 OR (begins_with(pk, :rtcount) AND checked_at_ms >= :since)",
            )
            .expression_attribute_values(":coverage", AttributeValue::S(keys::COVERAGE.to_owned()))
            .expression_attribute_values(":rtcount", AttributeValue::S(keys::RT_COUNT.to_owned()))
            .expression_attribute_values(":refused", AttributeValue::S(keys::REFUSED.to_owned()))
            .expression_attribute_values(":evt", AttributeValue::S(conversions.to_owned()))
            .expression_attribute_values(":note", AttributeValue::S(keys::NOTE.to_owned()))
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
    Ok(from_items_of(&items, since_ms, shop, now_ms, dry_run))
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

/// The columns of a row.
const ROW_HEAD: [&str; 13] = [
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
    "rt_recorded",
    "rt_missing",
    "rt_doubled",
];

/// The columns of a shop's day's coverage.
const COVERAGE_HEAD: [&str; 7] = [
    "day",
    "shop",
    "paid",
    "covered",
    "noted",
    "uncovered",
    "coverage",
];

/// A coverage row's cells, in [`COVERAGE_HEAD`]'s order (figures empty when not measured).
fn coverage_cells(c: &CoverageRow) -> Vec<String> {
    let figure = |of: fn(&Measured) -> u64| c.measured.as_ref().map(of).map(|n| n.to_string());
    vec![
        c.day.clone(),
        c.shop.clone(),
        figure(|m| m.paid).unwrap_or_default(),
        figure(|m| m.covered).unwrap_or_default(),
        figure(|m| m.noted).unwrap_or_default(),
        figure(|m| m.uncovered).unwrap_or_default(),
        c.coverage.clone(),
    ]
}

/// A figure of RedTrack's count, or that it was not measured.
fn measured(figure: Option<u64>) -> String {
    figure.map_or_else(|| "not measured".to_owned(), |n| n.to_string())
}

/// The columns of an order that needs a look.
const LOOK_HEAD: [&str; 5] = ["day", "shop", "order_id", "what", "reason"];

/// A row's cells, in [`ROW_HEAD`]'s order.
fn row_cells(r: &Row) -> Vec<String> {
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
        measured(r.rt_recorded),
        measured(r.rt_missing),
        measured(r.rt_doubled),
    ]
}

/// An order's cells, in [`LOOK_HEAD`]'s order.
fn look_cells(l: &Look) -> Vec<String> {
    vec![
        l.day.clone(),
        l.shop.clone(),
        l.order_id.clone(),
        l.what.clone(),
        l.reason.clone(),
    ]
}

/// The report as text.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default(),
        Format::Csv => render_csv(report),
        Format::Table => render_table(report),
        Format::Html => html::render_html(report),
    }
}

/// One CSV line, fields quoted where needed.
fn csv_line<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = fields
        .iter()
        .map(|f| csv_field(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

/// The report as CSV: the rows, a blank line, the orders that need a look, each with its head.
fn render_csv(report: &Report) -> String {
    let mut out = csv_line(&ROW_HEAD);
    for row in &report.rows {
        out.push_str(&csv_line(&row_cells(row)));
    }
    out.push('\n');
    out.push_str(&csv_line(&LOOK_HEAD));
    for look in &report.needs_a_look {
        out.push_str(&csv_line(&look_cells(look)));
    }
    if !report.coverage.is_empty() {
        out.push('\n');
        out.push_str(&csv_line(&COVERAGE_HEAD));
        for c in &report.coverage {
            out.push_str(&csv_line(&coverage_cells(c)));
        }
    }
    out
}

/// The report's heading: what it counts (conversions, or dry-run conversions), since when, of
/// which shop.
fn heading(report: &Report) -> String {
    format!(
        "{} since {} UTC{}",
        if report.dry_run {
            "Dry-run conversions"
        } else {
            "Conversions"
        },
        report.since,
        report
            .shop
            .as_deref()
            .map(|s| format!(", shop {s}"))
            .unwrap_or_default()
    )
}

/// The report as aligned columns: a title, the rows, then how many orders need a look and
/// which.
fn render_table(report: &Report) -> String {
    let mut out = format!("{}\n", heading(report));
    let rows: Vec<_> = report.rows.iter().map(row_cells).collect();
    out.push_str(&table(&ROW_HEAD, &rows));
    out.push_str(&format!(
        "\nOrders that need a look: {}\n",
        report.needs_a_look.len()
    ));
    if !report.needs_a_look.is_empty() {
        let looks: Vec<_> = report.needs_a_look.iter().map(look_cells).collect();
        out.push_str(&table(&LOOK_HEAD, &looks));
    }
    if !report.coverage.is_empty() {
        out.push_str("\nCoverage of paid orders (the shop's day):\n");
        let cells: Vec<_> = report.coverage.iter().map(coverage_cells).collect();
        out.push_str(&table(&COVERAGE_HEAD, &cells));
    }
    out
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

/// What `report` is asked.
pub struct Request<'a> {
    pub since: &'a str,
    pub shop: Option<&'a str>,
    pub format: &'a str,
    /// `--dry-runs`: the dry-run conversions (`dry#…`) instead of the live ones.
    pub dry_run: bool,
}

/// The admin command: `report --since <7d | RFC 3339> [--shop NAME]
/// [--format table|csv|json|html] [--dry-runs]`.
pub async fn command(
    client: &aws_sdk_dynamodb::Client,
    table_name: &str,
    request: &Request<'_>,
    now_ms: i64,
) -> Result<String, String> {
    let format: Format = request.format.parse()?;
    let since_s = crate::reconcile::config::parse_since(request.since, now_ms / 1000)
        .map_err(|e| format!("--since {e}"))?;
    let (shop, dry_run) = (request.shop, request.dry_run);
    let report = build(client, table_name, since_s * 1000, shop, now_ms, dry_run).await?;
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
    fn coverage_is_never_rounded_up_to_100_percent_nor_claimed_unmeasured() {
        let m = |paid, covered| Measured {
            paid,
            covered,
            noted: 0,
            uncovered: paid - covered,
        };
        assert_eq!(coverage_text(Some(&m(10_000, 9_999))), "99.9%");
        assert_eq!(coverage_text(Some(&m(7, 5))), "71.4%");
        assert_eq!(coverage_text(Some(&m(3, 3))), "100.0%");
        assert_eq!(coverage_text(Some(&m(0, 0))), "no paid orders");
        assert_eq!(coverage_text(None), "not measured");
        // A day measured, a shop with conversions and no coverage record: not measured.
        let t = DAY.to_string();
        let end = (DAY + 86_400_000).to_string();
        let mut covered = item(&[("pk", "coverage#default#2026-11-18"), ("day_end_ms", &end)]);
        for (k, v) in [
            ("paid", "4"),
            ("covered", "3"),
            ("noted", "1"),
            ("uncovered", "1"),
        ] {
            covered.insert(k.to_owned(), AttributeValue::N(v.to_owned()));
        }
        let items = vec![
            covered,
            item(&[
                ("pk", "evt#loja#1-purchase"),
                ("status", "SENT"),
                ("conversion_type", "Purchase"),
                ("claimed_at_ms", &t),
            ]),
        ];
        let report = from_items(&items, DAY - 1000, None, DAY + 1000);
        let rows: Vec<_> = report
            .coverage
            .iter()
            .map(|c| (c.shop.as_str(), c.coverage.as_str()))
            .collect();
        assert_eq!(rows, [(DEFAULT_SHOP, "75.0%"), ("loja", "not measured")]);
        let later = from_items(&items, DAY + 86_400_000, None, DAY + 86_400_000);
        assert!(
            later.coverage.is_empty(),
            "a day that ended before the report's start"
        );
    }

    #[test]
    fn orders_refused_with_422_are_counted_and_listed() {
        let t = DAY.to_string();
        let items = vec![
            item(&[
                ("pk", "refused#default#7#order.paid"),
                ("kind", "refused"),
                ("shop", "default"),
                ("order_id", "7"),
                ("event", "order.paid"),
                ("field", "order.total_price"),
                ("reason", "is ambiguous"),
                ("refused_at_ms", &t),
            ]),
            item(&[
                ("pk", "refused#loja#8#order.upsell"),
                ("shop", "loja"),
                ("order_id", "8"),
                ("event", "order.upsell"),
                ("field", "order.line_items[].quantity"),
                ("reason", "is negative"),
                ("refused_at_ms", &t),
            ]),
        ];
        let report = from_items(&items, DAY - 1000, Some(DEFAULT_SHOP), DAY + 1000);
        assert_eq!(report.rows.len(), 1, "{:#?}", report.rows);
        assert_eq!(report.rows[0].refused, 1);
        assert_eq!(report.rows[0].conversion_type, "order.paid");
        let all = from_items(&items, DAY - 1000, None, DAY + 1000);
        assert_eq!(all.rows.iter().map(|r| r.refused).sum::<u64>(), 2);
        assert_eq!(all.needs_a_look.len(), 2);
        assert!(
            all.needs_a_look[0].reason.contains("order.total_price"),
            "{:?}",
            all.needs_a_look[0]
        );
    }

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
        assert!(csv.starts_with("day,shop,type,sent,queued,failed,in_progress,refused,no_click_id,sums,rt_recorded,rt_missing,rt_doubled\n2026-11-18,(default),Purchase,2,0,1,0,0,0,BRL 15.00,not measured,not measured,not measured\n"), "{csv}");
        let table = render(&report, Format::Table);
        assert!(table.contains("Orders that need a look: 2"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&render(&report, Format::Json)).unwrap();
        assert_eq!(json["rows"][0]["sums"]["BRL"], "15.00");
        assert_eq!(
            "xml".parse::<Format>().unwrap_err(),
            "--format must be table, csv, json or html, got `xml`"
        );
    }

    /// A stored `rtcount#…` item: measured with figures by type, or not.
    fn rt_item(
        pk: &str,
        day: &str,
        measured: bool,
        types: &[(&str, [i64; 4])],
    ) -> HashMap<String, AttributeValue> {
        let mut item = item(&[
            ("pk", pk),
            ("day", day),
            ("checked_at_ms", &DAY.to_string()),
        ]);
        let figures = |f: &[i64; 4]| {
            let names = ["sent", "recorded", "missing", "doubled"];
            let map = names
                .iter()
                .zip(f)
                .map(|(k, v)| ((*k).to_owned(), AttributeValue::N(v.to_string())));
            AttributeValue::M(map.collect())
        };
        let types = types
            .iter()
            .map(|(k, f)| ((*k).to_owned(), figures(f)))
            .collect();
        item.insert("types".to_owned(), AttributeValue::M(types));
        item.insert("measured".to_owned(), AttributeValue::Bool(measured));
        item
    }

    #[test]
    fn redtracks_count_fills_its_days_rows_and_says_where_it_was_not_measured() {
        let t = DAY.to_string();
        let day = day_of(DAY);
        let conversion = |pk: &str, kind: &str| {
            item(&[
                ("pk", pk),
                ("status", "SENT"),
                ("conversion_type", kind),
                ("claimed_at_ms", &t),
            ])
        };
        let items = vec![
            conversion("evt#loja#1-purchase", "Purchase"),
            conversion("evt#loja#2-purchase", "Purchase"),
            conversion("evt#loja#1-upsell-9", "Upsell"),
            conversion("evt#nokey#5-purchase", "Purchase"),
            rt_item(
                &format!("rtcount#loja#{day}"),
                &day,
                true,
                &[("Purchase", [2, 1, 1, 0]), ("Conversion", [0, 1, 0, 1])],
            ),
            rt_item(&format!("rtcount#nokey#{day}"), &day, false, &[]),
        ];
        let report = from_items(&items, DAY - 1000, None, DAY + 1000);
        let figures = |shop: &str, kind: &str| {
            let row = report
                .rows
                .iter()
                .find(|r| r.shop == shop && r.conversion_type == kind);
            let row = row.unwrap_or_else(|| panic!("no row {shop} {kind}: {:#?}", report.rows));
            (row.sent, row.rt_recorded, row.rt_missing, row.rt_doubled)
        };
        assert_eq!(figures("loja", "Purchase"), (2, Some(1), Some(1), Some(0)));
        assert_eq!(
            figures("loja", "Conversion"),
            (0, Some(1), Some(0), Some(1))
        );
        assert_eq!(figures("loja", "Upsell"), (1, Some(0), Some(0), Some(0)));
        assert_eq!(figures("nokey", "Purchase"), (1, None, None, None));
        let csv = render(&report, Format::Csv);
        assert!(
            csv.contains(&format!("{day},loja,Conversion,0,0,0,0,0,0,,1,0,1\n")),
            "{csv}"
        );
        assert!(
            csv.contains(&format!(
                "{day},nokey,Purchase,1,0,0,0,0,0,,not measured,not measured,not measured\n"
            )),
            "{csv}"
        );
    }
}
