//! The report as a picture: `report --format html`, one self-contained file (inline SVG and an
//! inline style; no script, font, image or stylesheet fetched) that any browser opens offline.
//!
//! Per shop: a daily chart of what the ledger knows — conversions sent, queued, failed, and the
//! orders refused (422) and without a click ID — then a daily chart of the paid orders, covered
//! and uncovered (the coverage pass's figures; a day without them is labelled "not measured"),
//! then the tables the text report has. What RedTrack recorded of the conversions sent (its own
//! count, [`crate::reconcile::rtcount`]) is a series of the first chart. Each bar is
//! an SVG `rect` carrying its figure (`data-day`, `data-series`, `data-value`) and a label with
//! the figure above it, so what is drawn can be checked in the DOM a browser builds
//! (`tests/report_html.rs` does, in headless Chromium).

use super::{
    COVERAGE_HEAD, CoverageRow, LOOK_HEAD, Look, ROW_HEAD, Report, Row, coverage_cells, look_cells,
    row_cells,
};
use std::collections::BTreeMap;

/// One series of the daily chart: its name, its colour, and how a row adds to it.
type Series = (&'static str, &'static str, fn(&Row) -> u64);

/// The series of the daily chart.
const SERIES: [Series; 6] = [
    ("sent", "#2e7d32", |r| r.sent),
    // RedTrack's own count of the day's click IDs (0 where not measured: the table says so).
    ("redtrack_recorded", "#1565c0", |r| {
        r.rt_recorded.unwrap_or(0)
    }),
    ("queued", "#f9a825", |r| r.queued),
    ("failed", "#c62828", |r| r.failed),
    ("refused", "#6a1b9a", |r| r.refused),
    ("no_click_id", "#757575", |r| r.no_click_id),
];

/// The series of the coverage chart: paid orders, covered (noted included), uncovered.
const COVERAGE_SERIES: [(&str, &str); 3] = [
    ("paid", "#1565c0"),
    ("covered", "#2e7d32"),
    ("uncovered", "#c62828"),
];

/// Height of the tallest bar, in pixels.
const CHART_HEIGHT: u64 = 160;
/// Width of one bar, and the gap after each day's group.
const BAR: u64 = 14;
const GAP: u64 = 18;
const LEFT: u64 = 40;
const TOP: u64 = 24;

/// Text made safe for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page.
pub fn render_html(report: &Report) -> String {
    let title = super::heading(report);
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(&title)
    );
    let mut shops = by_shop(&report.rows);
    for c in &report.coverage {
        shops.entry(c.shop.clone()).or_default();
    }
    if shops.is_empty() {
        out.push_str("<p class=\"empty\">No conversions, refusals or notes in this period.</p>\n");
    }
    for (shop, rows) in &shops {
        let looks: Vec<&Look> = report
            .needs_a_look
            .iter()
            .filter(|l| &l.shop == shop)
            .collect();
        let coverage: Vec<&CoverageRow> =
            report.coverage.iter().filter(|c| &c.shop == shop).collect();
        out.push_str(&shop_section(
            shop,
            rows,
            &looks,
            &coverage_part(shop, &coverage),
        ));
    }
    out.push_str("</body></html>\n");
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#212121}\
table{border-collapse:collapse;margin:8px 0 24px}\
th,td{border:1px solid #bdbdbd;padding:2px 8px;text-align:right}\
th:nth-child(-n+3),td:nth-child(-n+3){text-align:left}\
table.looks th,table.looks td{text-align:left}\
.legend span{display:inline-block;margin-right:16px}\
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}\
svg text{font-size:10px;fill:#424242}";

/// The report's rows grouped by shop, in shop order.
fn by_shop(rows: &[Row]) -> BTreeMap<String, Vec<&Row>> {
    let mut shops: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for row in rows {
        shops.entry(row.shop.clone()).or_default().push(row);
    }
    shops
}

/// One shop: its `coverage` part ([`coverage_part`]), its chart, its rows and its orders that
/// need a look.
fn shop_section(shop: &str, rows: &[&Row], looks: &[&Look], coverage: &str) -> String {
    let mut out = format!(
        "<section class=\"shop\" data-shop=\"{s}\">\n<h2>Shop {s}</h2>\n",
        s = escape(shop)
    );
    out.push_str(coverage);
    out.push_str(&legend(
        SERIES.iter().map(|(name, colour, _)| (*name, *colour)),
    ));
    out.push_str(&chart(shop, &daily(rows)));
    let cells: Vec<Vec<String>> = rows.iter().map(|r| row_cells(r)).collect();
    out.push_str(&html_table("rows", &ROW_HEAD, &cells));
    out.push_str(&format!(
        "<h3>Orders that need a look: {}</h3>\n",
        looks.len()
    ));
    if !looks.is_empty() {
        let cells: Vec<Vec<String>> = looks.iter().map(|l| look_cells(l)).collect();
        out.push_str(&html_table("looks", &LOOK_HEAD, &cells));
    }
    out.push_str("</section>\n");
    out
}

/// One shop's coverage: its chart and table.
fn coverage_part(shop: &str, coverage: &[&CoverageRow]) -> String {
    if coverage.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "<div class=\"coverage\" data-shop=\"{}\">\n<h3>Paid orders covered (the shop's day)</h3>\n",
        escape(shop)
    );
    out.push_str(&legend(COVERAGE_SERIES.iter().copied()));
    out.push_str(&coverage_chart(shop, coverage));
    let cells: Vec<Vec<String>> = coverage.iter().map(|c| coverage_cells(c)).collect();
    out.push_str(&html_table("coverage", &COVERAGE_HEAD, &cells));
    out.push_str("</div>\n<h3>Conversions</h3>\n");
    out
}

/// The daily bars of paid, covered and uncovered orders; a day not measured is labelled so.
fn coverage_chart(shop: &str, coverage: &[&CoverageRow]) -> String {
    let figures = |c: &CoverageRow| c.measured.map(|m| [m.paid, m.covered, m.uncovered]);
    let max = coverage.iter().filter_map(|c| figures(c)).flatten().max();
    let (mut out, max) = svg_open(
        shop,
        "coverage-chart",
        COVERAGE_SERIES.len(),
        coverage.len(),
        max,
    );
    let group = BAR * COVERAGE_SERIES.len() as u64 + GAP;
    for (n, c) in coverage.iter().enumerate() {
        let x0 = LEFT + GAP + group * n as u64;
        match figures(c) {
            Some(values) => {
                for (i, ((name, colour), value)) in COVERAGE_SERIES.iter().zip(values).enumerate() {
                    out.push_str(&bar(&c.day, name, colour, value, max, x0 + BAR * i as u64));
                }
            }
            // Upright along the day's place, as tall as a bar could be.
            None => out.push_str(&format!(
                "<text class=\"not-measured\" data-day=\"{}\" x=\"{x}\" y=\"{y}\" \
                 transform=\"rotate(-90 {x} {y})\">not measured</text>\n",
                escape(&c.day),
                x = x0 + BAR,
                y = TOP + CHART_HEIGHT - 4,
            )),
        }
        out.push_str(&day_label(x0, &c.day));
    }
    out.push_str("</svg>\n");
    out
}

/// A day's name under its bars.
fn day_label(x0: u64, day: &str) -> String {
    format!(
        "<text class=\"day\" x=\"{x0}\" y=\"{}\">{}</text>\n",
        TOP + CHART_HEIGHT + 16,
        escape(day)
    )
}

/// An SVG chart's opening, axis and scale for `groups` days of `series` bars each, the tallest
/// `max`; the scale's top (at least 1).
fn svg_open(
    shop: &str,
    class: &str,
    series: usize,
    groups: usize,
    max: Option<u64>,
) -> (String, u64) {
    let max = max.unwrap_or(0).max(1);
    let group = BAR * series as u64 + GAP;
    let width = LEFT + group * groups.max(1) as u64 + GAP;
    let height = TOP + CHART_HEIGHT + 40;
    let base = TOP + CHART_HEIGHT;
    let out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"{class}\" data-shop=\"{}\" \
         width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">\n\
         <line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{width}\" y2=\"{base}\" stroke=\"#9e9e9e\"/>\n\
         <text x=\"2\" y=\"{TOP}\">{max}</text><text x=\"2\" y=\"{base}\">0</text>\n",
        escape(shop)
    );
    (out, max)
}

fn legend<'a>(series: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let items: String = series
        .map(|(name, colour)| format!("<span><i style=\"background:{colour}\"></i>{name}</span>"))
        .collect();
    format!("<p class=\"legend\">{items}</p>\n")
}

/// Each day's figures, summed over conversion types, in [`SERIES`] order.
fn daily(rows: &[&Row]) -> BTreeMap<String, [u64; SERIES.len()]> {
    let mut days: BTreeMap<String, [u64; SERIES.len()]> = BTreeMap::new();
    for row in rows {
        let day = days.entry(row.day.clone()).or_default();
        for (i, (_, _, of)) in SERIES.iter().enumerate() {
            day[i] += of(row);
        }
    }
    days
}

/// The daily bar chart of one shop.
fn chart(shop: &str, days: &BTreeMap<String, [u64; SERIES.len()]>) -> String {
    let max = days.values().flatten().copied().max();
    let (mut out, max) = svg_open(shop, "chart", SERIES.len(), days.len(), max);
    let group = BAR * SERIES.len() as u64 + GAP;
    for (n, (day, figures)) in days.iter().enumerate() {
        let x0 = LEFT + GAP + group * n as u64;
        for (i, (name, colour, _)) in SERIES.iter().enumerate() {
            out.push_str(&bar(
                day,
                name,
                colour,
                figures[i],
                max,
                x0 + BAR * i as u64,
            ));
        }
        out.push_str(&day_label(x0, day));
    }
    out.push_str("</svg>\n");
    out
}

/// One bar and the label of its figure.
fn bar(day: &str, series: &str, colour: &str, value: u64, max: u64, x: u64) -> String {
    let h = if value == 0 {
        0
    } else {
        (value * CHART_HEIGHT).div_ceil(max).max(1)
    };
    let y = TOP + CHART_HEIGHT - h;
    format!(
        "<rect class=\"bar\" data-day=\"{d}\" data-series=\"{series}\" data-value=\"{value}\" \
         x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"{colour}\">\
         <title>{d} {series}: {value}</title></rect>\
         <text class=\"figure\" data-day=\"{d}\" data-series=\"{series}\" x=\"{x}\" y=\"{ly}\">{value}</text>\n",
        d = escape(day),
        w = BAR - 2,
        ly = y.saturating_sub(2),
    )
}

fn html_table(class: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let head: String = head
        .iter()
        .map(|h| format!("<th>{}</th>", escape(h)))
        .collect();
    let body: String = rows
        .iter()
        .map(|row| {
            let cells: String = row
                .iter()
                .map(|c| format!("<td>{}</td>", escape(c)))
                .collect();
            format!("<tr>{cells}</tr>\n")
        })
        .collect();
    format!(
        "<table class=\"{class}\"><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(day: &str, shop: &str, sent: u64, failed: u64) -> Row {
        Row {
            day: day.to_owned(),
            shop: shop.to_owned(),
            conversion_type: "Purchase".to_owned(),
            sent,
            failed,
            ..Row::default()
        }
    }

    #[test]
    fn a_self_contained_page_with_a_bar_per_figure() {
        let report = Report {
            since: "2026-11-24 00:00:00".to_owned(),
            shop: None,
            dry_run: false,
            rows: vec![
                row("2026-11-29", "loja", 4, 0),
                row("2026-11-30", "loja", 8, 2),
                row("2026-11-30", "<b>x</b>", 1, 0),
            ],
            needs_a_look: Vec::new(),
            coverage: Vec::new(),
        };
        let page = render_html(&report);
        for fetched in ["<script", "src=", "href=", "@import", "url("] {
            assert!(
                !page.contains(fetched),
                "the page fetches nothing: {fetched}"
            );
        }
        assert!(page.contains(
            "data-day=\"2026-11-30\" data-series=\"sent\" data-value=\"8\" x=\"160\" y=\"24\" \
             width=\"12\" height=\"160\""
        ));
        assert!(page.contains("data-series=\"sent\" data-value=\"4\""));
        assert!(page.contains("data-series=\"failed\" data-value=\"2\""));
        assert!(page.contains("Shop &lt;b&gt;x&lt;/b&gt;") && !page.contains("<b>x</b>"));
    }

    #[test]
    fn bars_are_proportional_and_none_is_drawn_for_zero() {
        let b = bar("d", "sent", "#000", 0, 10, 0);
        assert!(b.contains("height=\"0\""));
        let b = bar("d", "sent", "#000", 5, 10, 0);
        assert!(b.contains("height=\"80\"") && b.contains("y=\"104\""));
        let b = bar("d", "sent", "#000", 1, 1000, 0);
        assert!(
            b.contains("height=\"1\""),
            "a figure above zero stays visible"
        );
    }
}
