//! The ledger's memory (`DEDUP_TTL_DAYS`, issue 20 item 7) through the real handler, moto as
//! DynamoDB and wiremock as RedTrack: an order older than the memory is answered 200 `skipped`
//! with its age, noted, and never sent (webhook and S2S alike); a younger one is sent.

mod common;

use cartpanda_redtrack::inbound::datetime::format_utc;
use cartpanda_redtrack::ops::clock::{Clock, FixedClock, SystemClock};
use common::*;
use serde_json::{Value, json};
use std::sync::Arc;

const DAY_MS: i64 = 86_400_000;

/// A harness whose clock is pinned and whose ledger remembers `memory_days`.
async fn pinned(memory_days: u32, now_ms: i64) -> Harness {
    let h = harness_with(Options {
        env: vec![("DEDUP_TTL_DAYS", memory_days.to_string())],
        clock: Arc::new(FixedClock::at(now_ms)),
        ..Options::default()
    })
    .await;
    redtrack_accepts(&h).await;
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

/// Runs an operator command against moto's table `table`.
async fn admin(table: &str, args: &[&str]) -> Result<String, String> {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.extend(["--table".to_owned(), table.to_owned()]);
    cartpanda_redtrack::ops::admin::run(&all, &operator_aws()).await
}

/// Writes a record as the bridge leaves it: `status`, sent `sent_days_ago` days before `now_ms`
/// and kept `keep_days` from then.
async fn put_record(
    h: &Harness,
    pk: &str,
    status: &str,
    now_ms: i64,
    sent_days_ago: i64,
    keep_days: i64,
) {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let sent_ms = now_ms - sent_days_ago * DAY_MS;
    h.dynamo
        .put_item()
        .table_name(&h.table)
        .item("pk", V::S(pk.to_owned()))
        .item("status", V::S(status.to_owned()))
        .item("claimed_at_ms", V::N((sent_ms - 500).to_string()))
        .item("sent_at_ms", V::N(sent_ms.to_string()))
        .item(
            "expires_at",
            V::N((sent_ms / 1000 + keep_days * 86_400).to_string()),
        )
        .send()
        .await
        .expect("put record");
}

async fn expires_at(h: &Harness, pk: &str) -> i64 {
    let record = item(h, pk).await.expect("record");
    record["expires_at"].as_n().unwrap().parse().unwrap()
}

/// The number after `word` in the command's summary line.
fn count_before(line: &str, word: &str) -> u64 {
    let at = line
        .find(word)
        .unwrap_or_else(|| panic!("`{word}` in {line}"));
    line[at + word.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn ledger_extend_gives_old_records_the_memory_paced_resumable_dry_run_first() {
    let h = harness().await;
    let now_ms = SystemClock.now_ms();
    let short: Vec<String> = (1..=5).map(|i| format!("evt#900{i}-purchase")).collect();
    for (i, pk) in short.iter().enumerate() {
        put_record(&h, pk, "SENT", now_ms, 10 + i as i64, 30).await;
    }
    put_record(&h, "dry#loja#9010-refund", "SENT", now_ms, 3, 30).await;
    put_record(&h, "evt#loja#9011-refund", "SENT", now_ms, 5, 1000).await;
    put_record(&h, "evt#9012-purchase", "QUEUED", now_ms, 1, 15).await;
    put_record(&h, "note#9013#no_click_id", "SENT", now_ms, 1, 30).await;
    let untouched = [
        "evt#loja#9011-refund",
        "evt#9012-purchase",
        "note#9013#no_click_id",
    ];
    let mut before = Vec::new();
    for pk in short.iter().map(String::as_str).chain(untouched) {
        before.push((pk.to_owned(), expires_at(&h, pk).await));
    }

    // A dry run counts and writes nothing, at the rate asked (9 items at 4 a second: 2 s).
    let started = std::time::Instant::now();
    let dry = admin(
        &h.table,
        &[
            "ledger",
            "extend",
            "--dry-run",
            "--rate",
            "4",
            "--days",
            "400",
        ],
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1900),
        "paced: {:?}",
        started.elapsed()
    );
    assert_eq!(count_before(&dry, "read "), 9, "{dry}");
    assert_eq!(count_before(&dry, "would extend "), 6, "{dry}");
    assert_eq!(count_before(&dry, "extend 6, "), 1, "{dry}");
    for (pk, expiry) in &before {
        assert_eq!(expires_at(&h, pk).await, *expiry, "dry run changed {pk}");
    }

    // A partial run prints where to resume; the resumed run does the rest.
    let first = admin(
        &h.table,
        &[
            "ledger", "extend", "--max", "4", "--rate", "1000", "--days", "400",
        ],
    )
    .await
    .unwrap();
    let key = first
        .split("--resume '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("a resume key: {first}"));
    assert_eq!(count_before(&first, "read "), 4, "{first}");
    let rest = admin(
        &h.table,
        &[
            "ledger", "extend", "--resume", key, "--rate", "1000", "--days", "400",
        ],
    )
    .await
    .unwrap();
    assert_eq!(count_before(&rest, "read "), 5, "{rest}");
    assert!(rest.contains("the whole table was read"), "{rest}");
    assert_eq!(
        count_before(&first, "extended ") + count_before(&rest, "extended "),
        6,
        "each short record extended once: {first} / {rest}"
    );

    for (i, pk) in short.iter().enumerate() {
        let sent_s = (now_ms - (10 + i as i64) * DAY_MS) / 1000;
        assert_eq!(expires_at(&h, pk).await, sent_s + 400 * 86_400, "{pk}");
    }
    assert_eq!(
        expires_at(&h, "dry#loja#9010-refund").await,
        (now_ms - 3 * DAY_MS) / 1000 + 400 * 86_400
    );
    for (pk, expiry) in before
        .iter()
        .filter(|(pk, _)| untouched.contains(&pk.as_str()))
    {
        assert_eq!(expires_at(&h, pk).await, *expiry, "{pk} keeps its expiry");
    }
    let again = admin(
        &h.table,
        &["ledger", "extend", "--rate", "1000", "--days", "400"],
    )
    .await
    .unwrap();
    assert_eq!(count_before(&again, "extended "), 0, "{again}");
}
