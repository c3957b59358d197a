//! S2S upsells without `upsell_no` (issue 14): told apart by what the postback carries, by one
//! pure function reconciliation can call. Pure: no table, no network.

use cartpanda_redtrack::conversion::classify::{self, Decision};
use cartpanda_redtrack::conversion::rules::Rules;
use cartpanda_redtrack::inbound::s2s;
use std::collections::HashMap;

fn s2s_event_id(pairs: &[(&str, &str)]) -> String {
    let mut query: HashMap<String, String> = [
        ("order_id", "5100"),
        ("cid", "67d42f3b9a1e5c0012ab34cd"),
        ("total_price", "97.00"),
        ("currency", "BRL"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in pairs {
        query.insert((*k).to_owned(), (*v).to_owned());
    }
    let delivery = s2s::delivery(&query);
    let classified = classify::classify(&delivery, &Rules::default()).unwrap();
    match classified.decision {
        Decision::Convert(conversions) => conversions[0].event_id.clone(),
        Decision::Skip(reason) => panic!("skipped: {reason:?}"),
    }
}

#[test]
fn s2s_upsells_without_upsell_no_are_told_apart_by_product() {
    let first = s2s_event_id(&[("order_type", "upsell"), ("product_id", "29662470")]);
    let second = s2s_event_id(&[("order_type", "upsell"), ("product_id", "29662471")]);
    assert_eq!(first, "5100-upsell-s2s-p29662470");
    assert_eq!(
        second, "5100-upsell-s2s-p29662471",
        "a second upsell is not a duplicate"
    );
    assert_eq!(
        s2s_event_id(&[("order_type", "upsell"), ("product_id", "29662470")]),
        first,
        "the same upsell again is the same"
    );
    assert_eq!(
        s2s_event_id(&[("order_type", "downsell"), ("product_id", "29662470")]),
        "5100-upsell-s2s-dp29662470"
    );
    // `upsell_no` filled: the IDs so far.
    assert_eq!(
        s2s_event_id(&[("upsell_no", "2"), ("product_id", "29662470")]),
        "5100-upsell-s2s-2"
    );
    assert_eq!(
        s2s_event_id(&[("order_type", "upsell"), ("upsell_no", "{upsell_no}")]),
        "5100-upsell-s2s-1",
        "nothing tells it apart"
    );
    assert_eq!(
        s2s::upsell_event_id("5100", None, Some("29662470"), "upsell"),
        first,
        "the one pure function reconciliation calls"
    );
}
