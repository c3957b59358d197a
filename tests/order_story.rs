//! An order's story and a re-send (issue 23), through the admin commands' own functions (what
//! `cartpanda-redtrack-admin order` and `resend` run once the environment is read): moto as the
//! ledger, wiremock as RedTrack and as Cartpanda's order API, the order's conversions delivered
//! through the real webhook handler first.

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use cartpanda_redtrack::reconcile::config::ReconcileSettings;
use cartpanda_redtrack::reconcile::run::Reconciler;
use cartpanda_redtrack::story::{self, Request};
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_TOKEN: &str = "cp-api-token-for-tests";
const SLUG: &str = "vitalidade-natural";

struct Setup {
    h: Harness,
    cartpanda: MockServer,
    reconciler: Reconciler,
}

/// A harness whose Cartpanda order API is wiremock; with `api`, the default shop has its API
/// token and slug (reconciliation on), else neither.
async fn setup(api: bool) -> Setup {
    setup_with(api, &[]).await
}

/// The same, with more reconciliation settings.
async fn setup_with(api: bool, more: &[(&str, &str)]) -> Setup {
    let cartpanda = MockServer::start().await;
    let order_url = format!(
        "{}/api/v3/{{shop_slug}}/orders/{{order_id}}",
        cartpanda.uri()
    );
    let h = harness_with(Options {
        env: vec![("CARTPANDA_ORDER_URL", order_url)],
        ..Options::default()
    })
    .await;
    let mut vars: HashMap<String, String> =
        HashMap::from([("CARTPANDA_API_MIN_INTERVAL_MS".into(), "0".into())]);
    if api {
        vars.extend([
            ("RECONCILE".into(), "true".into()),
            ("CARTPANDA_API_TOKEN".into(), API_TOKEN.into()),
            ("CARTPANDA_SHOP_SLUG".into(), SLUG.into()),
        ]);
    }
    vars.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let settings = ReconcileSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let reconciler = reconciler(&h, settings);
    Setup {
        h,
        cartpanda,
        reconciler,
    }
}

/// RedTrack accepts every postback but the first of `failing` (an event ID), which it refuses
/// with 400 (an unknown conversion type, say).
async fn redtrack_refusing_once(h: &Harness, failing: &str) {
    Mock::given(method("GET"))
        .and(path("/postback"))
        .and(query_param("rdtk_event_id", failing))
        .respond_with(ResponseTemplate::new(400))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&h.redtrack)
        .await;
    redtrack_accepts(h).await;
}

/// The order as Cartpanda's API gives it once everything happened: two upsells, then a refund.
fn api_order(order_id: u64) -> Value {
    let mut order = upsell_order(order_id, true)["order"].clone();
    order["status_id"] = json!("Refunded");
    order["payment_status"] = json!(3);
    order["refunds"] = refund_order(order_id)["order"]["refunds"].clone();
    order
}

/// Order `order_id` delivered by webhook: its sale, its two upsells (RedTrack refuses the second
/// once: FAILED), its refund; Cartpanda's API serves it.
async fn an_order_with_a_failed_send(s: &Setup, order_id: u64) {
    redtrack_refusing_once(&s.h, &format!("{order_id}-upsell-90003")).await;
    assert_eq!(deliver(&s.h, &paid_order(order_id)).await.status, 200);
    let upsells = deliver(&s.h, &upsell_order(order_id, true)).await;
    assert_eq!(upsells.status, 502, "{}", upsells.body);
    assert_eq!(deliver(&s.h, &refund_order(order_id)).await.status, 200);
    Mock::given(method("GET"))
        .and(path(format!("/api/v3/{SLUG}/orders/{order_id}")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"order": api_order(order_id)})),
        )
        .mount(&s.cartpanda)
        .await;
}

fn request<'a>(order_id: &'a str, format: &'a str) -> Request<'a> {
    Request {
        order_id,
        shop: None,
        format,
        rate: 1000,
    }
}

/// The JSON story's lines as `(event ID, state, attempts, via, RedTrack status)`.
fn lines(story: &Value) -> Vec<(Value, Value, Value, Value, Value)> {
    story["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["event_id"].clone(),
                l["state"].clone(),
                l["attempts"].clone(),
                l["via"].clone(),
                l["rt_status"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn order_tells_the_story_of_a_purchase_an_upsell_a_refund_and_a_failed_send() {
    let s = setup(true).await;
    an_order_with_a_failed_send(&s, 23101).await;

    let text = story::command(&s.reconciler, &request("23101", "json"))
        .await
        .unwrap();
    let story: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(story["found"]["method"], "event_ids", "{text}");
    assert_eq!(story["found"]["api_requests"], 1);
    assert_eq!(
        story["found"]["get_items"],
        4 + 2 + 5,
        "conversions, notes, refusals"
    );
    let sent = |id: &str| {
        (
            json!(id),
            json!("SENT"),
            json!(1),
            json!("webhook"),
            json!(200),
        )
    };
    let mut got = lines(&story);
    got.sort_by_key(|l| l.0.to_string());
    assert_eq!(
        got,
        [
            sent("23101-purchase"),
            sent("23101-refund-777"),
            sent("23101-upsell-90002"),
            (
                json!("23101-upsell-90003"),
                json!("FAILED"),
                json!(1),
                json!("webhook"),
                json!(400)
            ),
        ],
        "{text}"
    );
    let refund = &story["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["event_id"] == "23101-refund-777")
        .unwrap();
    assert_eq!(
        (
            &refund["conversion_type"],
            &refund["sum"],
            &refund["currency"],
            &refund["event"]
        ),
        (
            &json!("Refund"),
            &json!("1234.56"),
            &json!("BRL"),
            &json!("order.refunded")
        )
    );
    assert!(
        !text.contains("Conceição") && !text.contains("gmail"),
        "no PII: {text}"
    );

    let table = story::command(&s.reconciler, &request("23101", "table"))
        .await
        .unwrap();
    let first = table.lines().next().unwrap();
    assert!(
        first.contains("found from its event IDs: 1 request(s) to Cartpanda's API, 11 GetItem(s)"),
        "{table}"
    );
    let failed = table
        .lines()
        .find(|l| l.contains("23101-upsell-90003"))
        .unwrap();
    for word in ["Upsell", "FAILED", "webhook", "400", "order.upsell"] {
        assert!(failed.contains(word), "{word} in {failed}");
    }
    assert_eq!(table.lines().count(), 2 + 4, "{table}");
}

#[tokio::test]
async fn resend_sends_a_failed_conversion_once_and_never_a_sent_one() {
    let s = setup(true).await;
    an_order_with_a_failed_send(&s, 23201).await;
    let before = postbacks(&s.h).await.len();

    let done = story::resend::command(&s.reconciler, "23201-upsell-90003", None).await;
    assert_eq!(
        done.as_deref(),
        Ok(
            "23201-upsell-90003 re-sent (RedTrack answered 200 after 1 attempt(s)); recorded SENT (via operator)"
        )
    );
    let sent = postbacks(&s.h).await;
    assert_eq!(sent.len(), before + 1);
    assert_eq!(sent[before]["rdtk_event_id"], "23201-upsell-90003");
    assert_eq!(sent[before]["clickid"], "67d42f3b9a1e5c0012ab34cd");

    // Sent now: never again, nor the purchase the webhook sent.
    for event_id in ["23201-upsell-90003", "23201-purchase"] {
        let refused = story::resend::command(&s.reconciler, event_id, None).await;
        let message = refused.expect_err("a SENT conversion is not re-sent");
        assert!(message.contains("never sent again"), "{message}");
    }
    assert_eq!(postbacks(&s.h).await.len(), before + 1);

    // The story shows the re-send: the operator's, its attempts counted on from the failed one.
    let text = story::command(&s.reconciler, &request("23201", "json"))
        .await
        .unwrap();
    let story: Value = serde_json::from_str(&text).unwrap();
    let line = lines(&story)
        .into_iter()
        .find(|l| l.0 == "23201-upsell-90003")
        .unwrap();
    assert_eq!(
        line,
        (
            json!("23201-upsell-90003"),
            json!("SENT"),
            json!(2),
            json!("operator"),
            json!(200)
        )
    );
}

#[tokio::test]
async fn resend_makes_no_purchase_of_an_order_the_api_shows_pending_or_cancelled() {
    let s = setup(true).await;
    redtrack_accepts(&s.h).await;
    for (order_id, payment_status) in [(23401u64, 1), (23402, 4)] {
        // No record (never delivered, or released); the API shows the order unpaid.
        let mut order = paid_order(order_id)["order"].clone();
        order["payment_status"] = json!(payment_status);
        Mock::given(method("GET"))
            .and(path(format!("/api/v3/{SLUG}/orders/{order_id}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "order": order })))
            .mount(&s.cartpanda)
            .await;
        let event_id = format!("{order_id}-purchase");
        let refused = story::resend::command(&s.reconciler, &event_id, None).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("makes no conversion")),
            "{refused:?}"
        );
    }
    assert!(postbacks(&s.h).await.is_empty());
}

#[tokio::test]
async fn a_released_conversion_is_shown_unrecorded_and_can_be_resent() {
    let s = setup(true).await;
    an_order_with_a_failed_send(&s, 23301).await;
    // What a release leaves: no record (RedTrack down, no queue).
    let key = AttributeValue::S("evt#23301-refund-777".into());
    let deleted =
        s.h.dynamo
            .delete_item()
            .table_name(&s.h.table)
            .key("pk", key);
    deleted.send().await.unwrap();
    let table = story::command(&s.reconciler, &request("23301", "table"))
        .await
        .unwrap();
    let refund = table
        .lines()
        .find(|l| l.contains("23301-refund-777"))
        .unwrap();
    assert!(refund.contains("no record"), "{table}");

    let done = story::resend::command(&s.reconciler, "23301-refund-777", None).await;
    assert!(done.is_ok(), "{done:?}");
    let item = item(&s.h, "evt#23301-refund-777").await.unwrap();
    assert_eq!(item["via"].as_s().unwrap(), "operator");
    assert_eq!(item["status"].as_s().unwrap(), "SENT");
}

#[tokio::test]
async fn without_an_api_token_order_scans_and_resend_says_why_it_cannot() {
    let s = setup(false).await;
    redtrack_refusing_once(&s.h, "23401-upsell-90002").await;
    assert_eq!(deliver(&s.h, &upsell_order(23401, false)).await.status, 502);
    // A record written before `via`, `attempts` and `rt_status` existed.
    let old = [
        ("pk", "evt#23401-purchase"),
        ("status", "SENT"),
        ("order_id", "23401"),
        ("event", "order.paid"),
        ("conversion_type", "Purchase"),
        ("fingerprint", "old"),
        ("attempt", "old"),
    ];
    let mut put = s.h.dynamo.put_item().table_name(&s.h.table);
    for (k, v) in old {
        put = put.item(k, AttributeValue::S(v.into()));
    }
    put.item("sent_at_ms", AttributeValue::N("1795000000000".into()))
        .send()
        .await
        .unwrap();
    // Another order's record is not in the story.
    assert_eq!(deliver(&s.h, &paid_order(23402)).await.status, 200);

    let table = story::command(&s.reconciler, &request("23401", "table"))
        .await
        .unwrap();
    let first = table.lines().next().unwrap();
    assert!(
        first.contains("found by a scan of the table (the default shop has no Cartpanda API token"),
        "{table}"
    );
    assert!(first.contains("item(s) read in 1 page(s)"), "{table}");
    let purchase = table
        .lines()
        .find(|l| l.contains("23401-purchase"))
        .unwrap();
    assert_eq!(
        purchase.matches("unknown").count(),
        3,
        "attempts, via, RedTrack: {purchase}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("23401-upsell-90002") && l.contains("FAILED"))
    );
    assert!(!table.contains("23402"), "{table}");

    let why = story::resend::command(&s.reconciler, "23401-upsell-90002", None)
        .await
        .expect_err("no API token");
    assert!(
        why.starts_with("cannot re-send 23401-upsell-90002: the ledger keeps no click ID")
            && why.contains("the default shop has no Cartpanda API token and slug"),
        "{why}"
    );
    assert_eq!(s.cartpanda.received_requests().await.unwrap().len(), 0);
}

#[test]
fn the_commands_read_their_command_lines() {
    use cartpanda_redtrack::ops::admin::{Command, parse};
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let order = parse(&words(&[
        "order", "48213577", "--shop", "loja", "--format", "json",
    ]))
    .unwrap();
    assert!(
        matches!(order.command, Command::Order { ref order_id, ref shop, ref format, .. }
        if order_id == "48213577" && shop.as_deref() == Some("loja") && format == "json")
    );
    let resend = parse(&words(&["resend", "48213577-purchase"])).unwrap();
    assert!(
        matches!(resend.command, Command::Resend { ref event_id, shop: None } if event_id == "48213577-purchase")
    );
    assert!(parse(&words(&["resend"])).is_err());
}

#[tokio::test]
async fn a_named_shops_story_holds_its_own_records_only() {
    let s = setup(false).await;
    redtrack_accepts(&s.h).await;
    let shop_token = "shop-secret-0123456789";
    let postback = format!("{}/postback?clickid={{cid}}", s.h.redtrack.uri());
    let put = [
        "shop",
        "put",
        "loja",
        "--token",
        shop_token,
        "--postback-url",
        &postback,
        "--table",
        &s.h.table,
    ];
    let put: Vec<String> = put.iter().map(|w| w.to_string()).collect();
    cartpanda_redtrack::ops::admin::run(&put, &operator_aws())
        .await
        .unwrap();
    let body = paid_order(23501).to_string();
    let to_loja = apigw_event_at(
        "/cartpanda/loja",
        "POST",
        Some(&body),
        &[("token", shop_token)],
        &[],
    );
    assert_eq!(deliver_event(&s.h.bridge, to_loja).await.status, 200);
    assert_eq!(deliver(&s.h, &paid_order(23501)).await.status, 200);

    for shop in [Some("loja"), None] {
        let request = Request {
            shop,
            ..request("23501", "json")
        };
        let story: Value =
            serde_json::from_str(&story::command(&s.reconciler, &request).await.unwrap()).unwrap();
        assert_eq!(story["found"]["method"], "scan");
        assert_eq!(story["shop"], json!(shop));
        let got = lines(&story);
        assert_eq!(got.len(), 1, "{story}");
        assert_eq!(
            (&got[0].0, &got[0].1),
            (&json!("23501-purchase"), &json!("SENT"))
        );
    }
    let nowhere = Request {
        shop: Some("nope"),
        ..request("23501", "table")
    };
    let err = story::command(&s.reconciler, &nowhere).await.unwrap_err();
    assert_eq!(err, "no shop `nope`");
    let err = story::command(&s.reconciler, &request("23501 OR 1", "table")).await;
    assert!(err.unwrap_err().contains("is not an order ID"));
}

#[tokio::test]
async fn an_s2s_shops_upsell_recorded_under_an_earlier_versions_event_id_is_found_there() {
    let s = setup_with(true, &[("RECONCILE_S2S", "true")]).await;
    // Recorded by an earlier version under `-upsell-s2s-<step>` (issue 20 named it `-s2s-p<product>`).
    let old = [
        ("pk", "evt#23601-upsell-s2s-1"),
        ("status", "SENT"),
        ("order_id", "23601"),
        ("conversion_type", "Upsell"),
    ];
    let mut put = s.h.dynamo.put_item().table_name(&s.h.table);
    for (k, v) in old {
        put = put.item(k, AttributeValue::S(v.into()));
    }
    put.send().await.unwrap();
    let mut order = upsell_order(23601, false)["order"].clone();
    order["payment_status"] = json!(3);
    Mock::given(method("GET"))
        .and(path(format!("/api/v3/{SLUG}/orders/23601")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "order": order })))
        .mount(&s.cartpanda)
        .await;
    let text = story::command(&s.reconciler, &request("23601", "json"))
        .await
        .unwrap();
    let story: Value = serde_json::from_str(&text).unwrap();
    let states: Vec<(Value, Value)> = lines(&story).into_iter().map(|l| (l.0, l.1)).collect();
    assert_eq!(
        states,
        [
            (json!("23601-purchase"), json!("no record")),
            (json!("23601-upsell-s2s-1"), json!("SENT")),
        ],
        "{text}"
    );
    assert_eq!(story["found"]["get_items"], 1 + 2 + 2 + 5, "{text}");
}
