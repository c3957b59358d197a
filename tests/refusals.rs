//! A 422 is not a silent loss: every order refused with 422, by the webhook or the S2S path,
//! leaves a `refused#…` record in the ledger (field and reason, no values, a TTL), and a failed
//! write of it still answers 422. Against moto.

mod common;

use common::*;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

fn s(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    k: &str,
) -> String {
    item.get(k)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn every_422_leaves_a_refusal_record_with_the_field_and_no_values() {
    let h = harness().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    // Webhook: an ambiguous total nothing in the order decides.
    let mut body = paid_order(880_001);
    body["order"]["total_price"] = json!("1.500");
    body["order"]["line_items"][0]["price"] = json!(15);
    body["order"]["payment"] = json!({"currency": "BRL"});
    let answer = deliver(&h, &body).await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert!(
        answer.body["error"]
            .as_str()
            .unwrap()
            .starts_with("`order.total_price` is ambiguous"),
        "{}",
        answer.body
    );
    let rec = item(&h, "refused#default#880001#order.paid")
        .await
        .expect("a refusal record");
    assert_eq!(s(&rec, "kind"), "refused");
    assert_eq!(s(&rec, "order_id"), "880001");
    assert_eq!(s(&rec, "event"), "order.paid");
    assert_eq!(s(&rec, "shop"), "default");
    assert_eq!(s(&rec, "field"), "order.total_price");
    assert!(s(&rec, "reason").starts_with("is ambiguous"));
    let text = format!("{rec:?}");
    for value in ["1.500", "joao", "Conceição", "98765"] {
        assert!(
            !text.contains(value),
            "no values or PII in the record: {value}"
        );
    }
    let expires: i64 = rec["expires_at"].as_n().unwrap().parse().unwrap();
    let at: i64 = rec["refused_at_ms"].as_n().unwrap().parse().unwrap();
    assert_eq!(expires, at / 1000 + 30 * 86_400);

    // S2S: a quantity is fixed at 1 there, so refuse an unreadable total.
    let s2s = apigw_event_at(
        "/cartpanda/s2s",
        "GET",
        None,
        &[
            ("token", TOKEN),
            ("order_id", "880002"),
            ("cid", "67d42f3b9a1e5c0012ab34cd"),
            ("total_price", "abc"),
        ],
        &[],
    );
    let answer = deliver_event(&h.bridge, s2s).await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    let rec = item(&h, "refused#default#880002#order.paid")
        .await
        .expect("a refusal record for S2S");
    assert_eq!(s(&rec, "field"), "order.total_price");
    assert_eq!(s(&rec, "reason"), "is not a number");

    // A bad quantity, and an order without a usable ID.
    let mut qty = upsell_order(880_003, false);
    qty["order"]["line_items"][1]["quantity"] = json!(2.5);
    assert_eq!(deliver(&h, &qty).await.status, 422);
    let rec = item(&h, "refused#default#880003#order.upsell")
        .await
        .unwrap();
    assert_eq!(s(&rec, "field"), "order.line_items[1].quantity");
    let mut no_id = paid_order(1);
    no_id["order"]["id"] = json!(-5);
    assert_eq!(deliver(&h, &no_id).await.status, 422);

    // Not a 422: no record (a 401, a 400, a skip).
    let wrong = apigw_event("POST", Some(&body.to_string()), &[("token", "nope")], &[]);
    assert_eq!(deliver_event(&h.bridge, wrong).await.status, 401);
    let scan = h.dynamo.scan().table_name(&h.table).send().await.unwrap();
    let keys: Vec<String> = scan.items().iter().map(|i| s(i, "pk")).collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("refused#")), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("refused#default#no-id-")),
        "{keys:?}"
    );
    assert_eq!(postbacks(&h).await.len(), 0);
}

#[tokio::test]
async fn a_refusal_that_cannot_be_recorded_is_still_a_422() {
    let h = harness_with(Options {
        dynamo_endpoint: Some("http://127.0.0.1:9".to_owned()),
        ..Options::default()
    })
    .await;
    let mut body = upsell_order(880_010, false);
    body["order"]["line_items"][1]["quantity"] = json!(-1);
    let answer = deliver(&h, &body).await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert_eq!(
        answer.body["error"],
        "`order.line_items[1].quantity` is negative"
    );
    assert_eq!(items(&h).await, 0);
}
