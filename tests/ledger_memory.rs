//! The ledger's memory (`DEDUP_TTL_DAYS`, issue 20 item 7) through the real handler, moto as
//! DynamoDB and wiremock as RedTrack: an order older than the memory is answered 200 `skipped`
//! with its age, noted, and never sent (webhook and S2S alike); a younger one is sent.

mod common;

use cartpanda_redtrack::inbound::datetime::format_utc;
use cartpanda_redtrack::ops::clock::{Clock, FixedClock, SystemClock};
use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const DAY_MS: i64 = 86_400_000;

/// A harness whose clock is pinned and whose ledger remembers `memory_days`.
async fn pinned(memory_days: u32, now_ms: i64) -> Harness {
    let h = harness_with(Options {
        env: vec![("DEDUP_TTL_DAYS", memory_days.to_string())],
        clock: Arc::new(FixedClock::at(now_ms)),
        ..Options::default()
    })
    .await;
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    h
}

/// An `order.updated` still carrying `chargeback_received = 1`, created `days_ago` before `now_ms`.
fn charged_back(order_id: u64, now_ms: i64, days_ago: i64) -> Value {
    let mut v = paid_order(order_id);
    v["event"] = json!("order.updated");
    v["order"]["chargeback_received"] = json!(1);
    v["order"]["created_at"] = json!(format_utc((now_ms - days_ago * DAY_MS) / 1000));
    v
}

#[tokio::test]
async fn a_chargeback_older_than_the_memory_is_skipped_noted_and_never_sent() {
    let now_ms = SystemClock.now_ms();
    let h = pinned(400, now_ms).await;
    let answer = deliver(&h, &charged_back(8101, now_ms, 450)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["skipped"], "too_old", "{}", answer.body);
    let message = answer.body["message"].as_str().unwrap();
    assert!(
        message.contains("450 days ago") && message.contains("DEDUP_TTL_DAYS = 400"),
        "{message}"
    );
    assert!(postbacks(&h).await.is_empty(), "nothing reaches RedTrack");
    assert_eq!(
        keys(&h).await,
        ["note#8101#too_old"],
        "a note, and no claim"
    );
    let note = item(&h, "note#8101#too_old").await.unwrap();
    assert_eq!(note["reason"].as_s().unwrap(), "too_old");
    assert_eq!(note["event"].as_s().unwrap(), "order.updated");
}

#[tokio::test]
async fn a_chargeback_within_the_memory_is_sent() {
    let now_ms = SystemClock.now_ms();
    let h = pinned(400, now_ms).await;
    let answer = deliver(&h, &charged_back(8102, now_ms, 100)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversions"][0]["outcome"], "sent");
    let sent = postbacks(&h).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["rdtk_event_id"], "8102-chargeback");
    let record = item(&h, "evt#8102-chargeback").await.unwrap();
    let expires: i64 = record["expires_at"].as_n().unwrap().parse().unwrap();
    assert_eq!(expires, now_ms / 1000 + 400 * 86_400, "kept for the memory");
}

#[tokio::test]
async fn an_unreadable_created_at_does_not_block() {
    let now_ms = SystemClock.now_ms();
    let h = pinned(400, now_ms).await;
    let mut body = charged_back(8103, now_ms, 450);
    body["order"]["created_at"] = json!("not a date");
    let answer = deliver(&h, &body).await;
    assert_eq!(
        answer.body["conversions"][0]["outcome"], "sent",
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn an_s2s_sale_older_than_the_memory_is_skipped() {
    let now_ms = SystemClock.now_ms();
    let h = pinned(400, now_ms).await;
    let query = |order_id: &'static str, days_ago: i64| {
        let unix = ((now_ms - days_ago * DAY_MS) / 1000).to_string();
        let pairs = [
            ("token", TOKEN),
            ("order_id", order_id),
            ("cid", "67d42f3b9a1e5c0012ab34cd"),
            ("total_price", "197.00"),
            ("currency", "BRL"),
            ("product_id", "29662470"),
            ("order_type", "main"),
            ("datetime_unix", unix.as_str()),
        ];
        apigw_event_at("/cartpanda/s2s", "GET", None, &pairs, &[])
    };
    let old = deliver_event(&h.bridge, query("8104", 401)).await;
    assert_eq!(old.status, 200, "{}", old.body);
    assert_eq!(old.body["skipped"], "too_old", "{}", old.body);
    let recent = deliver_event(&h.bridge, query("8105", 2)).await;
    assert_eq!(
        recent.body["conversions"][0]["outcome"], "sent",
        "{}",
        recent.body
    );
    let sent = postbacks(&h).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["rdtk_event_id"], "8105-purchase");
}
