//! The report as a picture, opened in a real browser: headless Chromium (Debian's `chromium` or
//! `chromium-headless-shell`, which `make test` installs; `REPORT_BROWSER` names another) loads
//! the page `report --format html` writes, takes a screenshot, and the DOM it built is read back:
//! the bars and labels of known figures must be there, at the heights the figures give.

use aws_sdk_dynamodb::types::AttributeValue;
use cartpanda_redtrack::report::{self, Format};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const DAY_1: &str = "2025-11-29";
const DAY_2: &str = "2025-11-30";
const DAY_2_MS: i64 = 1_764_460_800_000;

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

fn conversion(key: &str, status: &str, at_ms: i64) -> HashMap<String, AttributeValue> {
    item(&[
        ("pk", key),
        ("status", status),
        ("conversion_type", "Purchase"),
        ("claimed_at_ms", &at_ms.to_string()),
        ("amount", "97.00"),
        ("currency", "BRL"),
        (
            "order_id",
            key.rsplit('#').next().unwrap().split('-').next().unwrap(),
        ),
    ])
}

/// A week of a shop `loja`: day 1, 3 sent; day 2, 6 sent and 2 failed; an order without a click
/// ID on day 2; day 2's coverage measured (9 paid orders: 7 covered, 1 of them noted, 2 not),
/// day 1's not. RedTrack's own count recorded 5 of day 2's 6 sent.
fn week() -> report::Report {
    let day_1 = DAY_2_MS - 86_400_000;
    let mut items = Vec::new();
    for n in 0..3 {
        items.push(conversion(
            &format!("evt#loja#{n}-purchase"),
            "SENT",
            day_1 + n,
        ));
    }
    for n in 10..16 {
        items.push(conversion(
            &format!("evt#loja#{n}-purchase"),
            "SENT",
            DAY_2_MS + n,
        ));
    }
    for n in 20..22 {
        items.push(conversion(
            &format!("evt#loja#{n}-purchase"),
            "FAILED",
            DAY_2_MS + n,
        ));
    }
    // RedTrack's own count of day 2: 5 of the 6 recorded (day 1 not measured).
    let mut rt = item(&[
        ("pk", &format!("rtcount#loja#{DAY_2}")),
        ("day", DAY_2),
        ("checked_at_ms", &(DAY_2_MS + 86_400_000).to_string()),
    ]);
    let figures = [
        ("sent", "6"),
        ("recorded", "5"),
        ("missing", "1"),
        ("doubled", "0"),
    ]
    .map(|(k, v)| (k.to_owned(), AttributeValue::N(v.to_owned())));
    let purchase = AttributeValue::M(figures.into_iter().collect());
    rt.insert("measured".to_owned(), AttributeValue::Bool(true));
    rt.insert(
        "types".to_owned(),
        AttributeValue::M(HashMap::from([("Purchase".to_owned(), purchase)])),
    );
    items.push(rt);
    items.push(item(&[
        ("pk", "note#loja#30#no_click_id"),
        ("reason", "no_click_id"),
        ("event", "order.paid"),
        ("created_at_ms", &(DAY_2_MS + 30).to_string()),
    ]));
    let mut measured = item(&[
        ("pk", &format!("coverage#loja#{DAY_2}")),
        ("kind", "coverage"),
        ("day", DAY_2),
        ("day_end_ms", &(DAY_2_MS + 86_400_000).to_string()),
    ]);
    for (name, value) in [("paid", 9), ("covered", 7), ("noted", 1), ("uncovered", 2)] {
        measured.insert(name.to_owned(), AttributeValue::N(value.to_string()));
    }
    items.push(measured);
    report::from_items(&items, day_1 - 1, None, DAY_2_MS + 3_600_000)
}

fn browser() -> PathBuf {
    if let Ok(path) = std::env::var("REPORT_BROWSER") {
        return PathBuf::from(path);
    }
    ["/usr/bin/chromium-headless-shell", "/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("no headless Chromium: `make browser` (part of `make test`) installs Debian's chromium, or set REPORT_BROWSER")
}

/// Runs the browser headless on `page` with `args`; its standard output.
fn run_browser(page: &Path, profile: &Path, args: &[String]) -> String {
    let out = Command::new(browser())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("the browser runs");
    assert!(
        out.status.success(),
        "browser failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The attributes of every `<rect class="bar" …>` the DOM holds, by (day, series).
fn bars(dom: &str) -> HashMap<(String, String), HashMap<String, String>> {
    let mut out = HashMap::new();
    for tag in dom.split("<rect").skip(1) {
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        let attrs: HashMap<String, String> = tag
            .split('"')
            .collect::<Vec<_>>()
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| {
                (
                    c[0].trim().trim_end_matches('=').to_owned(),
                    c[1].to_owned(),
                )
            })
            .collect();
        if attrs.get("class").map(String::as_str) == Some("bar") {
            out.insert(
                (attrs["data-day"].clone(), attrs["data-series"].clone()),
                attrs,
            );
        }
    }
    out
}

#[test]
fn headless_chromium_draws_the_figures_of_the_report() {
    let dir = std::env::temp_dir().join(format!("report-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    std::fs::write(&page, report::render(&week(), Format::Html)).unwrap();

    let dom = run_browser(&page, &dir.join("profile-dom"), &["--dump-dom".to_owned()]);
    let bars = bars(&dom);
    let bar = |day: &str, series: &str| {
        bars.get(&(day.to_owned(), series.to_owned()))
            .unwrap_or_else(|| panic!("no {series} bar for {day} in the DOM"))
    };
    for (day, series, value) in [
        (DAY_1, "sent", "3"),
        (DAY_2, "sent", "6"),
        (DAY_2, "failed", "2"),
        (DAY_2, "no_click_id", "1"),
        (DAY_1, "failed", "0"),
        (DAY_2, "redtrack_recorded", "5"),
        (DAY_1, "redtrack_recorded", "0"),
    ] {
        assert_eq!(bar(day, series)["data-value"], value, "{day} {series}");
    }
    // Heights follow the figures: 6 is the tallest (160 px), 3 half of it, 0 nothing.
    assert_eq!(bar(DAY_2, "sent")["height"], "160");
    assert_eq!(bar(DAY_1, "sent")["height"], "80");
    assert_eq!(bar(DAY_1, "failed")["height"], "0");
    // The coverage chart: day 2's paid, covered and uncovered orders; day 1 not measured.
    for (series, value, height) in [
        ("paid", "9", "160"),
        ("covered", "7", "125"),
        ("uncovered", "2", "36"),
    ] {
        assert_eq!(bar(DAY_2, series)["data-value"], value, "{series}");
        assert_eq!(bar(DAY_2, series)["height"], height, "{series}");
    }
    assert!(
        !bars.contains_key(&(DAY_1.to_owned(), "paid".to_owned())),
        "day 1 was not measured"
    );
    assert!(
        dom.contains(&format!(
            "<text class=\"not-measured\" data-day=\"{DAY_1}\""
        )),
        "day 1 labelled not measured"
    );
    assert!(
        dom.contains("<td>77.7%</td>"),
        "the share covered, rounded down"
    );
    assert!(dom.contains("Shop loja"), "the shop's heading");
    assert!(dom.contains(">6</text>"), "the label of the tallest bar");
    assert!(
        dom.contains("Orders that need a look: 3"),
        "two failed, one without a click ID"
    );

    let shot = dir.join("report.png");
    run_browser(
        &page,
        &dir.join("profile-shot"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1000,800".to_owned(),
        ],
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // A blank 1000×800 page compresses to a few KB; bars, labels and tables make it larger.
    assert!(
        png.len() > 8_000,
        "the screenshot shows little: {} bytes",
        png.len()
    );
    println!("screenshot: {}", shot.display());
}
