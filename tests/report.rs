//! The report's figures against what the stand-ins recorded: deliveries through the real handler
//! (moto as the ledger, wiremock as RedTrack), then `report::build` over the table.

mod common;

use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::report::{self, DEFAULT_SHOP, Format};
use common::*;
use rust_decimal::Decimal;
use serde_json::json;
use std::str::FromStr;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

const REFUSED_CLICK: &str = "67d42f3b9a1e5c0012ab0bad";

#[tokio::test]
async fn the_report_counts_what_redtrack_received_and_lists_what_needs_a_look() {
    let h = harness().await;
    Mock::given(method("GET"))
        .and(path("/postback"))
        .and(query_param("clickid", REFUSED_CLICK))
        .respond_with(ResponseTemplate::new(400))
        .with_priority(1)
        .mount(&h.redtrack)
        .await;
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    let since_ms = SystemClock.now_ms() - 1000;

    // Two sales, one with an upsell, the upsell delivered twice (a duplicate costs no record).
    assert_eq!(deliver(&h, &paid_order(7001)).await.status, 200);
    assert_eq!(deliver(&h, &paid_order(7002)).await.status, 200);
    assert_eq!(deliver(&h, &upsell_order(7002, false)).await.status, 200);
    assert_eq!(deliver(&h, &upsell_order(7002, false)).await.status, 200);
    // RedTrack refuses one; one order has no click ID.
    let mut refused = paid_order(7003);
    refused["order"]["checkout_params"]["cid"] = json!(REFUSED_CLICK);
    assert_eq!(deliver(&h, &refused).await.status, 502);
    let mut no_click = paid_order(7004);
    no_click["order"]["checkout_params"] = json!({"utm_source": "facebook"});
    assert_eq!(deliver(&h, &no_click).await.body["skipped"], "no_click_id");

    let now_ms = SystemClock.now_ms();
    let built = report::build(&h.dynamo, &h.table, since_ms, None, now_ms, false)
        .await
        .unwrap();

    // What RedTrack accepted, by type, from the stand-in's own log.
    let accepted: Vec<_> = postbacks(&h)
        .await
        .into_iter()
        .filter(|p| p["clickid"] != REFUSED_CLICK)
        .collect();
    let sum_of = |kind: &str| -> (u64, Decimal) {
        let of_kind: Vec<_> = accepted.iter().filter(|p| p["type"] == kind).collect();
        let total = of_kind
            .iter()
            .map(|p| Decimal::from_str(&p["sum"]).unwrap())
            .sum();
        (of_kind.len() as u64, total)
    };
    let row = |kind: &str| {
        built
            .rows
            .iter()
            .find(|r| r.conversion_type == kind && r.shop == DEFAULT_SHOP)
            .unwrap_or_else(|| panic!("no {kind} row in {:#?}", built.rows))
    };
    for kind in ["Purchase", "Upsell"] {
        let (count, total) = sum_of(kind);
        assert_eq!(row(kind).sent, count, "{kind}");
        assert_eq!(
            row(kind).sums["BRL"],
            cartpanda_redtrack::inbound::money::format_sum(total),
            "{kind}"
        );
    }
    assert_eq!(row("Purchase").sent, 2);
    assert_eq!(row("Purchase").failed, 1);
    assert_eq!(row("Upsell").sent, 1, "the duplicate is not counted");
    assert_eq!(row("order.paid").no_click_id, 1);

    let looks: Vec<_> = built
        .needs_a_look
        .iter()
        .map(|l| (l.order_id.as_str(), l.reason.as_str()))
        .collect();
    assert_eq!(looks, [("7003", "failed"), ("7004", "no_click_id")]);

    // A shop filter that matches nothing, and the three formats.
    let other = report::build(&h.dynamo, &h.table, since_ms, Some("loja"), now_ms, false)
        .await
        .unwrap();
    assert!(other.rows.is_empty() && other.needs_a_look.is_empty());
    let csv = report::render(&built, Format::Csv);
    assert!(
        csv.contains(",(default),Purchase,2,0,1,0,0,0,BRL "),
        "{csv}"
    );
    let table = report::render(&built, Format::Table);
    assert!(table.contains("Orders that need a look: 2"), "{table}");
    for pii in ["joao", "João", "98765", "@", "67d42f3b9a1e5c0012ab34cd"] {
        assert!(
            !table.contains(pii) && !csv.contains(pii),
            "{pii} in the report"
        );
    }
}

#[tokio::test]
async fn a_dry_run_deployment_reports_its_dry_run_conversions_apart() {
    let h = harness_with(Options {
        env: vec![("DRY_RUN", "true".to_owned())],
        ..Options::default()
    })
    .await;
    let since_ms = SystemClock.now_ms() - 1000;
    assert_eq!(deliver(&h, &paid_order(7101)).await.status, 200);
    assert_eq!(deliver(&h, &upsell_order(7101, false)).await.status, 200);
    assert!(postbacks(&h).await.is_empty(), "a dry run sends nothing");
    let now_ms = SystemClock.now_ms();
    let live = report::build(&h.dynamo, &h.table, since_ms, None, now_ms, false)
        .await
        .unwrap();
    assert!(live.rows.is_empty(), "no live conversion: {live:?}");
    let dry = report::build(&h.dynamo, &h.table, since_ms, None, now_ms, true)
        .await
        .unwrap();
    let sent: Vec<(&str, u64)> = dry
        .rows
        .iter()
        .map(|r| (r.conversion_type.as_str(), r.sent))
        .collect();
    assert_eq!(sent, [("Purchase", 1), ("Upsell", 1)]);
    assert!(report::render(&dry, Format::Table).starts_with("Dry-run conversions since"));
}
