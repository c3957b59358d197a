//! Deliveries in the shapes real shops send (the sample events in `events/`, written from the
//! field lists in the project reference), through the real handler with moto as DynamoDB and
//! wiremock as RedTrack: every conversion's type, sum, currency, event ID and content ID. And the
//! `is_cartx_test` rule: a flag seen on real sales, so a sale by default.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

/// The token of the sample events.
const EVENTS_TOKEN: &str = "demo-token";

/// RedTrack's Cartpanda template plus the macros these tests check.
fn postback_url(h_uri: &str) -> String {
    format!(
        "{h_uri}/postback?clickid={{cid}}&sum={{total_price}}&currency={{currency}}&contentid={{product_id}}\
         &is_test={{is_test}}&ts={{datetime_unix}}&affiliate={{amount_affiliate}}"
    )
}

async fn shapes_harness(extra: &[(&'static str, &str)]) -> Harness {
    let redtrack = wiremock::MockServer::start().await;
    let mut env = vec![
        ("WEBHOOK_TOKEN", EVENTS_TOKEN.to_owned()),
        ("REDTRACK_POSTBACK_URL", postback_url(&redtrack.uri())),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let mut h = harness_with(Options {
        env,
        ..Options::default()
    })
    .await;
    h.redtrack = redtrack;
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    h
}

/// What RedTrack must receive for one conversion.
struct Expected {
    event_id: &'static str,
    conversion_type: &'static str,
    sum: &'static str,
    currency: &'static str,
    contentid: &'static str,
}

/// Delivers a sample event and checks the answer and every postback against `expected`, in order.
async fn check(h: &Harness, name: &str, expected: &[Expected]) -> Vec<BTreeMap<String, String>> {
    let before = postbacks(h).await.len();
    let answer = deliver_event(&h.bridge, sample(name)).await;
    assert_eq!(answer.status, 200, "{name}: {}", answer.body);
    let conversions = answer.body["conversions"].as_array().expect("conversions");
    assert_eq!(conversions.len(), expected.len(), "{name}: {}", answer.body);
    let sent = postbacks(h).await.split_off(before);
    assert_eq!(sent.len(), expected.len(), "{name}: postbacks {sent:?}");
    for ((answer, postback), want) in conversions.iter().zip(&sent).zip(expected) {
        assert_eq!(answer["event_id"], want.event_id, "{name}");
        assert_eq!(answer["conversion_type"], want.conversion_type, "{name}");
        assert_eq!(answer["outcome"], "sent", "{name}");
        assert_eq!(postback["rdtk_event_id"], want.event_id, "{name}");
        assert_eq!(postback["type"], want.conversion_type, "{name}");
        assert_eq!(postback["sum"], want.sum, "{name} {}", want.event_id);
        assert_eq!(
            postback["currency"], want.currency,
            "{name} {}",
            want.event_id
        );
        assert_eq!(
            postback["contentid"], want.contentid,
            "{name} {}",
            want.event_id
        );
    }
    sent
}

#[tokio::test]
async fn a_discounted_front_offer_converts_the_order_total_not_the_line_price() {
    let h = shapes_harness(&[]).await;
    let sent = check(
        &h,
        "paid-discounted.json",
        &[Expected {
            event_id: "51877302-purchase",
            conversion_type: "Purchase",
            sum: "7.50",
            currency: "BRL",
            contentid: "33104477",
        }],
    )
    .await;
    assert_eq!(sent[0]["clickid"], "67ab8f1c5e2d4a0011f3c9b2");
}

#[tokio::test]
async fn an_upsell_delivery_with_two_upsell_lines_converts_each_with_its_iso_timestamp() {
    let h = shapes_harness(&[]).await;
    let sent = check(
        &h,
        "upsell-two-lines.json",
        &[
            Expected {
                event_id: "50219934-upsell-69550377",
                conversion_type: "Upsell",
                sum: "67.00",
                currency: "BRL",
                contentid: "31200042",
            },
            Expected {
                event_id: "50219934-upsell-69550412",
                conversion_type: "Upsell",
                sum: "50.00",
                currency: "BRL",
                contentid: "31200090",
            },
        ],
    )
    .await;
    // processed_at "2025-02-05T07:21:07.000000Z", microseconds and all.
    assert!(sent.iter().all(|p| p["ts"] == "1738740067"), "{sent:?}");
    // Delivered again: both upsells are duplicates, nothing more is sent.
    let again = deliver_event(&h.bridge, sample("upsell-two-lines.json")).await;
    assert_eq!(again.status, 200);
    assert!(
        again.body["conversions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["outcome"] == "duplicate")
    );
    assert_eq!(postbacks(&h).await.len(), 2);
}

#[tokio::test]
async fn a_refund_with_a_numeric_amount_on_an_affiliate_sale_converts_once() {
    let h = shapes_harness(&[]).await;
    let sent = check(
        &h,
        "refund-affiliate.json",
        &[Expected {
            event_id: "50233187-refund-1",
            conversion_type: "Refund",
            sum: "149.90",
            currency: "BRL",
            contentid: "31200155",
        }],
    )
    .await;
    assert_eq!(sent[0]["affiliate"], "59.96");
}

#[tokio::test]
async fn a_cartx_flagged_sale_of_a_brl_shop_saying_usd_is_sent_as_a_brl_sale() {
    let h = shapes_harness(&[]).await;
    let sent = check(
        &h,
        "paid-cartx-usd.json",
        &[Expected {
            event_id: "49805512-purchase",
            conversion_type: "Purchase",
            sum: "297.00",
            currency: "BRL",
            contentid: "30550021",
        }],
    )
    .await;
    assert_eq!(sent[0]["is_test"], "0", "sent as a sale, so not a test");
}

#[tokio::test]
async fn cartx_test_orders_skip_restores_skipping_and_previews_a_test() {
    let h = shapes_harness(&[("CARTX_TEST_ORDERS", "skip")]).await;
    let answer = deliver_event(&h.bridge, sample("paid-cartx-usd.json")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["skipped"], "test_order");
    let preview = answer.body["conversions"][0]["postback"].as_str().unwrap();
    assert!(preview.contains("is_test=1"), "{preview}");
    assert_eq!(postbacks(&h).await.len(), 0);
    assert_eq!(items(&h).await, 0);

    // SEND_TEST_ORDERS still sends it, as the test it is.
    let send = shapes_harness(&[("CARTX_TEST_ORDERS", "skip"), ("SEND_TEST_ORDERS", "true")]).await;
    let sent = check(
        &send,
        "paid-cartx-usd.json",
        &[Expected {
            event_id: "49805512-purchase",
            conversion_type: "Purchase",
            sum: "297.00",
            currency: "BRL",
            contentid: "30550021",
        }],
    )
    .await;
    assert_eq!(sent[0]["is_test"], "1");
}

#[tokio::test]
async fn an_explicit_test_order_stays_a_test_order_whatever_the_cartx_setting() {
    for setting in ["send", "skip"] {
        let h = shapes_harness(&[("CARTX_TEST_ORDERS", setting)]).await;
        let mut event = sample("paid-cartx-usd.json");
        let mut body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
        body["order"]["test"] = Value::from(1);
        event["body"] = Value::from(body.to_string());
        let answer = deliver_event(&h.bridge, event).await;
        assert_eq!(answer.body["skipped"], "test_order", "{setting}");
        assert_eq!(postbacks(&h).await.len(), 0, "{setting}");
    }
}
