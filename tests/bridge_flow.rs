//! The bridge end to end through the real handler: moto as DynamoDB, wiremock as RedTrack.

mod common;

use common::*;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

async fn redtrack_answers(h: &Harness, status: u16) {
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&h.redtrack)
        .await;
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_paid_order_sends_exactly_one_postback_with_the_expected_query() {
    let h = harness().await;
    redtrack_answers(&h, 200).await;
    let answer = deliver(&h, &paid_order(48213577)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["order_id"], "48213577");
    assert_eq!(answer.body["event"], "order.paid");
    assert_eq!(
        answer.body["conversions"],
        json!([{"event_id": "48213577-purchase", "conversion_type": "Purchase", "outcome": "sent", "redtrack_status": 200, "attempts": 1}])
    );
    let sent = postbacks(&h).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0],
        map(&[
            ("clickid", "67d42f3b9a1e5c0012ab34cd"),
            ("sum", "1234.56"),
            ("status", "approved"),
            ("fname", "João"),
            ("lname", "Conceição & Filhos"),
            ("phone", "+5511987654321"),
            ("email", "joao.conceicao@gmail.com"),
            ("contentid", "22264700"),
            ("product", "Colágeno Verisol + Ácido Hialurônico #1"),
            ("protect", "fixed token"),
            ("type", "Purchase"),
            ("rdtk_event_id", "48213577-purchase"),
        ])
    );
    let record = item(&h, "evt#48213577-purchase")
        .await
        .expect("claim recorded");
    assert_eq!(record["status"].as_s().unwrap(), "SENT");
    let expires: i64 = record["expires_at"].as_n().unwrap().parse().unwrap();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (expires - (now_s + i64::from(h.bridge.config.ttl_days) * 86_400)).abs() < 60,
        "expires_at is now + DEDUP_TTL_DAYS"
    );
}

#[tokio::test]
async fn the_same_delivery_again_sends_nothing_and_answers_duplicate() {
    let h = harness().await;
    redtrack_answers(&h, 200).await;
    assert_eq!(deliver(&h, &paid_order(1001)).await.status, 200);
    let again = deliver(&h, &paid_order(1001)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["conversions"][0]["outcome"], "duplicate");
    assert_eq!(again.body["conversions"][0]["replay"], true);
    assert_eq!(postbacks(&h).await.len(), 1);
}

#[tokio::test]
async fn paid_then_upsells_then_refund_give_distinct_postbacks() {
    let h = harness().await;
    redtrack_answers(&h, 200).await;
    assert_eq!(deliver(&h, &paid_order(2002)).await.status, 200);
    let first_upsell = deliver(&h, &upsell_order(2002, false)).await;
    assert_eq!(
        first_upsell.body["conversions"].as_array().unwrap().len(),
        1
    );
    let second_upsell = deliver(&h, &upsell_order(2002, true)).await;
    let outcomes: Vec<(String, String)> = second_upsell.body["conversions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["event_id"].as_str().unwrap().to_owned(),
                c["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("2002-upsell-90002".to_owned(), "duplicate".to_owned()),
            ("2002-upsell-90003".to_owned(), "sent".to_owned())
        ]
    );
    assert_eq!(deliver(&h, &refund_order(2002)).await.status, 200);

    let sent = postbacks(&h).await;
    let summary: Vec<(&str, &str, &str, &str)> = sent
        .iter()
        .map(|q| {
            (
                q["type"].as_str(),
                q["sum"].as_str(),
                q["rdtk_event_id"].as_str(),
                q["contentid"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("Purchase", "1234.56", "2002-purchase", "22264700"),
            ("Upsell", "194.00", "2002-upsell-90002", "22264763"),
            ("Upsell", "19.90", "2002-upsell-90003", "22264763"),
            ("Refund", "1234.56", "2002-refund-777", "22264700"),
        ]
    );
    assert!(
        sent.iter()
            .all(|q| q["clickid"] == "67d42f3b9a1e5c0012ab34cd")
    );
}

#[tokio::test]
async fn redtrack_failing_releases_the_claim_and_a_redelivery_sends_once() {
    let h = harness().await;
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(3)
        .mount(&h.redtrack)
        .await;
    redtrack_answers(&h, 200).await;
    let failed = deliver(&h, &paid_order(3003)).await;
    assert_eq!(failed.status, 502, "{}", failed.body);
    assert_eq!(failed.body["conversions"][0]["outcome"], "failed");
    assert_eq!(failed.body["conversions"][0]["attempts"], 3);
    assert!(failed.body["error"].as_str().unwrap().contains("RedTrack"));
    assert_eq!(items(&h).await, 0, "the failed claim was released");

    let retried = deliver(&h, &paid_order(3003)).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.body["conversions"][0]["outcome"], "sent");
    let accepted = h.redtrack.received_requests().await.unwrap().len();
    assert_eq!(
        accepted, 4,
        "three failed attempts, then one accepted postback"
    );
    assert_eq!(
        deliver(&h, &paid_order(3003)).await.body["conversions"][0]["outcome"],
        "duplicate"
    );
}

#[tokio::test]
async fn a_refused_conversion_is_not_retried_but_a_later_redelivery_may_send_it() {
    let h = harness().await;
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(400))
        .up_to_n_times(1)
        .mount(&h.redtrack)
        .await;
    let answer = deliver(&h, &paid_order(3004)).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.body["conversions"][0]["redtrack_status"], 400);
    assert_eq!(answer.body["conversions"][0]["attempts"], 1);
    assert_eq!(postbacks(&h).await.len(), 1);
    let record = item(&h, "evt#3004-purchase").await.unwrap();
    assert_eq!(record["status"].as_s().unwrap(), "FAILED");

    // The merchant fixes the conversion type in RedTrack; Cartpanda redelivers.
    redtrack_answers(&h, 200).await;
    let retried = deliver(&h, &paid_order(3004)).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.body["conversions"][0]["outcome"], "sent");
    assert_eq!(postbacks(&h).await.len(), 2);
}

#[tokio::test]
async fn a_conversion_refused_for_its_type_is_sent_under_the_corrected_type_on_redelivery() {
    use cartpanda_redtrack::bridge::Bridge;
    use cartpanda_redtrack::ops::config::Config;
    use wiremock::matchers::query_param;
    let h = harness().await;
    // RedTrack has the type `purchase`, not `Purchase`: it refuses the default mapping.
    Mock::given(method("GET"))
        .and(path("/postback"))
        .and(query_param("type", "Purchase"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&h.redtrack)
        .await;
    redtrack_answers(&h, 200).await;
    let refused = deliver(&h, &paid_order(3005)).await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    let record = item(&h, "evt#3005-purchase").await.unwrap();
    assert_eq!(record["status"].as_s().unwrap(), "FAILED");

    // The operator follows the README: CONVERSION_TYPES names RedTrack's type; Cartpanda
    // redelivers the order. The FAILED conversion goes out under the new type, once.
    let redtrack = h.redtrack.uri();
    let env = HashMap::from([
        (
            "REDTRACK_POSTBACK_URL",
            format!("{redtrack}{TEMPLATE_PATH}"),
        ),
        ("WEBHOOK_TOKEN", TOKEN.to_owned()),
        ("DEDUP_TABLE", h.table.clone()),
        ("DEDUP_TTL_DAYS", FIXTURE_MEMORY_DAYS.to_owned()),
        ("CONVERSION_TYPES", "order.paid=purchase".to_owned()),
    ]);
    let fixed = Bridge {
        config: Config::from_lookup(|k| env.get(k).cloned()).unwrap(),
        ledger: h.bridge.ledger.clone(),
        tracker: h.bridge.tracker.clone(),
        clock: h.bridge.clock.clone(),
        queue: None,
        shops: None,
        orders: None,
    };
    let retried = deliver_event(&fixed, post(&paid_order(3005))).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.body["conversions"][0]["outcome"], "sent");
    let sent = postbacks(&h).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1]["type"], "purchase");
    assert_eq!(sent[1]["rdtk_event_id"], "3005-purchase");
    let record = item(&h, "evt#3005-purchase").await.unwrap();
    assert_eq!(record["status"].as_s().unwrap(), "SENT");
    assert_eq!(
        deliver_event(&fixed, post(&paid_order(3005))).await.body["conversions"][0]["outcome"],
        "duplicate"
    );
}

#[tokio::test]
async fn deliveries_that_convert_nothing_send_nothing_and_leave_nothing() {
    let h = harness().await;
    redtrack_answers(&h, 200).await;
    let mut no_cid = paid_order(4001);
    no_cid["order"]["checkout_params"] = json!({"utm_source": "facebook"});
    let mut blank_cid = paid_order(4002);
    blank_cid["order"]["checkout_params"]["cid"] = json!("   ");
    let mut test_order = paid_order(4003);
    test_order["order"]["test"] = json!(1);
    let mut is_test_flag = paid_order(4004);
    is_test_flag["order"]["is_test"] = json!("1");
    let mut created = paid_order(4005);
    created["event"] = json!("order.created");
    let mut updated = paid_order(4006);
    updated["event"] = json!("order.updated");
    let mut product_event = json!({"event": "product.updated", "product": {"id": 5}});
    product_event["webhook"] = json!({});
    for (body, reason) in [
        (no_cid, "no_click_id"),
        (blank_cid, "no_click_id"),
        (test_order, "test_order"),
        (is_test_flag, "test_order"),
        (created, "event_not_mapped"),
        (updated, "not_a_conversion"),
        (product_event, "event_not_mapped"),
    ] {
        let answer = deliver(&h, &body).await;
        assert_eq!(answer.status, 200, "{reason}: {}", answer.body);
        assert_eq!(answer.body["skipped"], reason);
        assert!(answer.body["message"].as_str().unwrap().len() > 10);
    }
    assert_eq!(postbacks(&h).await.len(), 0);
    // Only the orders without a click ID leave a record: the note the report lists them by.
    assert_eq!(
        record_keys(&h).await,
        ["note#4001#no_click_id", "note#4002#no_click_id"]
    );
}

#[tokio::test]
async fn bad_requests_send_nothing_and_leave_nothing() {
    let h = harness().await;
    redtrack_answers(&h, 200).await;
    let good = paid_order(5001).to_string();
    let mut no_id = paid_order(5002);
    no_id["order"].as_object_mut().unwrap().remove("id");
    let mut bad_amount = paid_order(5003);
    bad_amount["order"]["total_price"] = json!("-5,00");
    let cases = [
        (
            apigw_event("POST", Some(&good), &[("token", "wrong")], &[]),
            401,
            "invalid token",
        ),
        (
            apigw_event("POST", Some(&good), &[], &[]),
            401,
            "missing token",
        ),
        (
            apigw_event("GET", None, &[("token", TOKEN)], &[]),
            405,
            "not allowed",
        ),
        (
            apigw_event(
                "POST",
                Some("{\"event\":\"order.paid\",\"order\":{"),
                &[("token", TOKEN)],
                &[],
            ),
            400,
            "not valid JSON",
        ),
        (
            apigw_event("POST", Some(""), &[("token", TOKEN)], &[]),
            400,
            "empty",
        ),
        (post(&no_id), 422, "`order.id` is missing"),
        (post(&bad_amount), 422, "`order.total_price` is negative"),
    ];
    for (event, status, message) in cases {
        let answer = deliver_event(&h.bridge, event).await;
        assert_eq!(answer.status, status, "{message}: {}", answer.body);
        let error = answer.body["error"].as_str().unwrap_or_default();
        assert!(error.contains(message), "expected {message:?} in {error:?}");
    }
    assert_eq!(postbacks(&h).await.len(), 0);
    // Issue 14: the two 422s leave their refusal records (`refused#…`), nothing else.
    assert_eq!(claims(&h).await, 0);
    assert_eq!(refusals(&h).await, 2);
}

#[tokio::test]
async fn chargebacks_arrive_by_event_and_by_flag_once() {
    let h = harness().await;
    redtrack_answers(&h, 200).await;
    let mut by_event = paid_order(6001);
    by_event["event"] = json!("order.chargeback");
    let mut by_flag = paid_order(6001);
    by_flag["event"] = json!("order.updated");
    by_flag["order"]["chargeback_received"] = json!(1);
    assert_eq!(
        deliver(&h, &by_event).await.body["conversions"][0]["outcome"],
        "sent"
    );
    assert_eq!(
        deliver(&h, &by_flag).await.body["conversions"][0]["outcome"],
        "duplicate"
    );
    let sent = postbacks(&h).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["type"], "Chargeback");
    assert_eq!(sent[0]["rdtk_event_id"], "6001-chargeback");
}

#[tokio::test]
async fn dry_run_renders_without_calling_redtrack_and_still_deduplicates() {
    let h = harness_with(Options {
        env: vec![("DRY_RUN", "true".to_owned())],
        ..Options::default()
    })
    .await;
    redtrack_answers(&h, 200).await;
    let first = deliver(&h, &paid_order(7001)).await;
    assert_eq!(first.status, 200);
    let entry = &first.body["conversions"][0];
    assert_eq!(entry["outcome"], "dry_run");
    let postback = url::Url::parse(entry["postback"].as_str().unwrap()).unwrap();
    let q: BTreeMap<String, String> = postback.query_pairs().into_owned().collect();
    assert_eq!(q["sum"], "1234.56");
    assert_eq!(q["rdtk_event_id"], "7001-purchase");
    assert_eq!(
        deliver(&h, &paid_order(7001)).await.body["conversions"][0]["outcome"],
        "duplicate"
    );
    assert_eq!(postbacks(&h).await.len(), 0);
    assert!(
        item(&h, "evt#7001-purchase").await.is_none(),
        "dry runs never block a live send"
    );
    assert!(item(&h, "dry#7001-purchase").await.is_some());
}

#[tokio::test]
async fn the_same_event_id_with_another_sum_is_a_conflict() {
    let h = harness().await;
    redtrack_answers(&h, 200).await;
    assert_eq!(deliver(&h, &paid_order(8001)).await.status, 200);
    let mut changed = paid_order(8001);
    changed["order"]["total_price"] = json!("999,00");
    let answer = deliver(&h, &changed).await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(answer.body["conversions"][0]["outcome"], "conflict");
    assert_eq!(postbacks(&h).await.len(), 1);
}

#[tokio::test]
async fn the_sample_events_parse_and_classify_as_documented() {
    let h = harness().await;
    redtrack_answers(&h, 200).await;
    let expect = [
        ("paid-brl.json", 200, Some("sent"), None),
        ("upsell.json", 200, Some("sent"), None),
        ("refund-full.json", 200, Some("sent"), None),
        ("refund-partial.json", 200, Some("sent"), None),
        ("chargeback.json", 200, Some("sent"), None),
        ("chargeback-flag.json", 200, Some("sent"), None),
        ("no-click-id.json", 200, None, Some("no_click_id")),
        ("test-order.json", 200, None, Some("test_order")),
        ("ignored-event.json", 200, None, Some("event_not_mapped")),
        ("wrong-token.json", 401, None, None),
        ("malformed-body.json", 400, None, None),
    ];
    for (file, status, outcome, skipped) in expect {
        let text = std::fs::read_to_string(format!("events/{file}")).unwrap();
        let mut event: serde_json::Value = serde_json::from_str(&text).unwrap();
        if event["queryStringParameters"]["token"] == "demo-token" {
            event["queryStringParameters"]["token"] = json!(TOKEN);
            event["rawQueryString"] = json!(format!("token={TOKEN}"));
        }
        let answer = deliver_event(&h.bridge, event).await;
        assert_eq!(answer.status, status, "{file}: {}", answer.body);
        if let Some(outcome) = outcome {
            assert_eq!(
                answer.body["conversions"][0]["outcome"], outcome,
                "{file}: {}",
                answer.body
            );
        }
        if let Some(reason) = skipped {
            assert_eq!(answer.body["skipped"], reason, "{file}");
        }
    }
}

#[tokio::test]
async fn the_dry_run_flag_renders_without_claiming_or_sending_and_needs_the_token() {
    let h = harness().await;
    redtrack_answers(&h, 200).await;
    let body = paid_order(9101).to_string();
    let flagged = apigw_event(
        "POST",
        Some(&body),
        &[("token", TOKEN), ("dry_run", "1")],
        &[],
    );
    let answer = deliver_event(&h.bridge, flagged).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let entry = &answer.body["conversions"][0];
    assert_eq!(entry["outcome"], "dry_run");
    let postback = url::Url::parse(entry["postback"].as_str().unwrap()).unwrap();
    let q: BTreeMap<String, String> = postback.query_pairs().into_owned().collect();
    assert_eq!(q["rdtk_event_id"], "9101-purchase");
    assert_eq!(q["fname"], "João");
    assert_eq!(postbacks(&h).await.len(), 0);
    assert_eq!(items(&h).await, 0, "nothing claimed");

    let no_token = apigw_event("POST", Some(&body), &[("dry_run", "1")], &[]);
    assert_eq!(deliver_event(&h.bridge, no_token).await.status, 401);
    // The real delivery afterwards is not blocked.
    assert_eq!(
        deliver(&h, &paid_order(9101)).await.body["conversions"][0]["outcome"],
        "sent"
    );
}

#[tokio::test]
async fn a_test_order_is_answered_with_what_would_have_been_sent() {
    let h = harness().await;
    redtrack_answers(&h, 200).await;
    let mut body = upsell_order(9102, true);
    body["order"]["test"] = json!(1);
    let answer = deliver(&h, &body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["skipped"], "test_order");
    let previews = answer.body["conversions"].as_array().unwrap();
    assert_eq!(previews.len(), 2);
    assert!(
        previews.iter().all(|p| p["outcome"] == "dry_run"
            && p["postback"].as_str().unwrap().contains("type=Upsell"))
    );
    assert_eq!(postbacks(&h).await.len(), 0);
    assert_eq!(items(&h).await, 0);

    let send = harness_with(Options {
        env: vec![("SEND_TEST_ORDERS", "true".into())],
        ..Options::default()
    })
    .await;
    redtrack_answers(&send, 200).await;
    let sent = deliver(&send, &body).await;
    assert_eq!(sent.body["conversions"].as_array().unwrap().len(), 2);
    assert_eq!(postbacks(&send).await.len(), 2);
}
