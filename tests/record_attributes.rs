//! What a conversion record says about its story (issue 23): which input brought it (`via`), the
//! postback attempts made so far (`attempts`), RedTrack's last status (`rt_status`) and the click
//! ID sent (`click_id`), written in the writes the claim protocol already makes. Each input is
//! driven through its own entry point (the HTTP handler's webhook and S2S routes, the reconcile
//! run, the redrive consumer, the operator's `redrive` command) against moto, with a proxy in
//! front of moto counting the DynamoDB calls of each delivery (2 new, 1 duplicate: unchanged).

mod common;
mod fault_proxy;

use aws_sdk_dynamodb::types::AttributeValue;
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::reconcile::config::ReconcileSettings;
use cartpanda_redtrack::reconcile::run::{RunOptions, Since};
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CID: &str = "67d42f3b9a1e5c0012ab34cd";

fn s(item: &HashMap<String, AttributeValue>, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn n(item: &HashMap<String, AttributeValue>, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// `(status, via, attempts, rt_status, click_id)` of the record under `key`.
async fn story(
    h: &Harness,
    key: &str,
) -> (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
) {
    let item = item(h, key)
        .await
        .unwrap_or_else(|| panic!("no record {key}"));
    (
        s(&item, "status"),
        s(&item, "via"),
        n(&item, "attempts"),
        n(&item, "rt_status"),
        s(&item, "click_id"),
    )
}

fn some(text: &str) -> Option<String> {
    Some(text.to_owned())
}

async fn redtrack(h: &Harness, status: u16, times: Option<u64>) {
    let mock = Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(status));
    match times {
        Some(n) => mock.up_to_n_times(n).mount(&h.redtrack).await,
        None => mock.mount(&h.redtrack).await,
    }
}

fn s2s_event(order_id: &str) -> Value {
    let at = (SystemClock.now_ms() / 1000 - 600).to_string();
    let query = [
        ("token", TOKEN),
        ("order_id", order_id),
        ("cid", CID),
        ("total_price", "197.00"),
        ("currency", "BRL"),
        ("product_id", "29662470"),
        ("order_type", "main"),
        ("upsell_no", "0"),
        ("datetime_unix", at.as_str()),
    ];
    apigw_event_at("/cartpanda/s2s", "GET", None, &query, &[])
}

#[tokio::test]
async fn the_webhook_and_s2s_routes_leave_their_input_and_a_delivery_still_costs_2_or_1_calls() {
    let proxy = fault_proxy::FaultProxy::start(&moto_endpoint(), 1).await;
    let h = harness_with(Options {
        dynamo_endpoint: Some(proxy.url.clone()),
        ..Options::default()
    })
    .await;
    redtrack(&h, 200, None).await;
    let calls = || proxy.counts.forwarded.load(Ordering::SeqCst);

    let before = calls();
    let first = deliver(&h, &paid_order(23001)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(calls() - before, 2, "a new conversion: the claim and SENT");
    let before = calls();
    let again = deliver(&h, &paid_order(23001)).await;
    assert_eq!(again.body["conversions"][0]["outcome"], "duplicate");
    assert_eq!(calls() - before, 1, "a duplicate: the claim only");
    assert_eq!(
        story(&h, "evt#23001-purchase").await,
        (some("SENT"), some("webhook"), Some(1), Some(200), some(CID))
    );

    let before = calls();
    let sale = deliver_event(&h.bridge, s2s_event("23002")).await;
    assert_eq!(sale.status, 200, "{}", sale.body);
    assert_eq!(calls() - before, 2);
    assert_eq!(
        story(&h, "evt#23002-purchase").await,
        (some("SENT"), some("s2s"), Some(1), Some(200), some(CID))
    );

    // What is not sent says how it came too: a note, a refusal.
    let mut no_click = paid_order(23003);
    no_click["order"]["checkout_params"] = json!({"utm_source": "facebook"});
    assert_eq!(deliver(&h, &no_click).await.status, 200);
    let note = item(&h, "note#23003#no_click_id").await.expect("the note");
    assert_eq!(s(&note, "via"), some("webhook"));
    let refused = deliver_event(&h.bridge, s2s_event("")).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let keys = record_keys(&h).await;
    let refusal = keys
        .iter()
        .find(|k| k.starts_with("refused#default#no-id-"))
        .expect("the refusal record");
    assert_eq!(s(&item(&h, refusal).await.unwrap(), "via"), some("s2s"));
}

#[tokio::test]
async fn a_refused_postback_is_failed_with_its_status_and_attempts() {
    let h = harness().await;
    redtrack(&h, 400, None).await;
    let answer = deliver(&h, &paid_order(23011)).await;
    assert_eq!(answer.body["conversions"][0]["outcome"], "failed");
    assert_eq!(
        story(&h, "evt#23011-purchase").await,
        (
            some("FAILED"),
            some("webhook"),
            Some(1),
            Some(400),
            some(CID)
        )
    );
}

/// Runs the consumer on what waits in the redrive queue.
async fn consume(h: &Harness) {
    let (_, event) = receive_as_sqs_event(&h.sqs, h.queue_url.as_ref().unwrap(), None).await;
    assert_eq!(event.records.len(), 1);
    let response = redrive_consumer(h, None)
        .handle_batch(event, SystemClock.now_ms() + 10_000)
        .await;
    assert!(response.batch_item_failures.is_empty());
}

#[tokio::test]
async fn a_queued_conversion_counts_its_attempts_across_claims_and_the_redrive_is_recorded() {
    let h = harness_with(queued_options()).await;
    redtrack(&h, 503, Some(3)).await;
    let answer = deliver(&h, &paid_order(23021)).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(
        story(&h, "evt#23021-purchase").await,
        (
            some("QUEUED"),
            some("webhook"),
            Some(3),
            Some(503),
            some(CID)
        )
    );
    redtrack(&h, 200, None).await;
    consume(&h).await;
    assert_eq!(
        story(&h, "evt#23021-purchase").await,
        (some("SENT"), some("redrive"), Some(4), Some(200), some(CID)),
        "the consumer's claim carried the 3 attempts of the record it replaced"
    );
}

#[tokio::test]
async fn a_postback_the_operator_moves_back_from_the_dlq_is_recorded_as_the_operators() {
    let h = harness_with(queued_options()).await;
    redtrack(&h, 503, Some(3)).await;
    assert_eq!(deliver(&h, &paid_order(23031)).await.status, 202);
    // The message as the DLQ would hold it.
    let queue = h.queue_url.clone().unwrap();
    let dlq = create_queue(&h.sqs, "dlq").await;
    let (messages, _) = receive_as_sqs_event(&h.sqs, &queue, Some(30)).await;
    let body = messages[0].body().unwrap();
    h.sqs
        .send_message()
        .queue_url(&dlq)
        .message_body(body)
        .send()
        .await
        .unwrap();
    let receipt = messages[0].receipt_handle().unwrap();
    let deleted = h
        .sqs
        .delete_message()
        .queue_url(&queue)
        .receipt_handle(receipt);
    deleted.send().await.unwrap();

    let args: Vec<String> = ["redrive", "--from", &dlq, "--to", &queue]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let moved = cartpanda_redtrack::ops::admin::run(&args, &operator_aws()).await;
    assert!(
        moved.as_deref().is_ok_and(|m| m.contains("moved 1")),
        "{moved:?}"
    );
    redtrack(&h, 200, None).await;
    consume(&h).await;
    assert_eq!(
        story(&h, "evt#23031-purchase").await,
        (
            some("SENT"),
            some("operator"),
            Some(4),
            Some(200),
            some(CID)
        )
    );
}

#[tokio::test]
async fn reconciliation_records_its_claims_as_its_own() {
    let cartpanda = MockServer::start().await;
    let h = harness().await;
    redtrack(&h, 200, None).await;
    let vars: HashMap<String, String> = HashMap::from([
        ("RECONCILE".into(), "true".into()),
        (
            "CARTPANDA_API_TOKEN".into(),
            "cp-api-token-for-tests".into(),
        ),
        ("CARTPANDA_SHOP_SLUG".into(), "vitalidade-natural".into()),
        (
            "CARTPANDA_ORDER_LIST_URL".into(),
            format!("{}/api/v3/{{shop_slug}}/orders", cartpanda.uri()),
        ),
        ("CARTPANDA_API_MIN_INTERVAL_MS".into(), "20".into()),
        ("RECONCILE_SETTLE_MIN".into(), "0".into()),
    ]);
    let mut settings = ReconcileSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    settings.margin = Duration::from_millis(300);
    let mut order = paid_order(23041)["order"].clone();
    let created = SystemClock.now_ms() / 1000 - 3600;
    order["created_at"] = json!(cartpanda_redtrack::inbound::datetime::format_utc(created));
    order["payment_status"] = json!(3);
    Mock::given(method("GET"))
        .and(path("/api/v3/vitalidade-natural/orders"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"orders": {
            "data": [order], "current_page": 1, "last_page": 1, "per_page": 50, "total": 1
        }})))
        .mount(&cartpanda)
        .await;
    let reconciler = reconciler(&h, settings);
    let target = cartpanda_redtrack::reconcile::default_target(&reconciler).unwrap();
    let options = RunOptions {
        since: Since::Watermark,
        dry_run: false,
        deadline_ms: SystemClock.now_ms() + 60_000,
    };
    let summary = reconciler.run(&target, options).await;
    assert_eq!(summary.sent, 1, "{summary:?}");
    assert_eq!(
        story(&h, "evt#23041-purchase").await,
        (
            some("SENT"),
            some("reconcile"),
            Some(1),
            Some(200),
            some(CID)
        )
    );
}
