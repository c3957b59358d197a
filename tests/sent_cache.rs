//! Duplicates of sent conversions answered from memory (src/ledger/cache.rs), against moto behind
//! a proxy that counts every DynamoDB call the function makes, as `benches/lambda.rs` does.
//! Alone in its test binary: its tests capture the log with thread-scoped subscribers.

mod common;

use cartpanda_redtrack::bridge::Bridge;
use cartpanda_redtrack::ledger::cache::CachedLedger;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

type Calls = Arc<Mutex<BTreeMap<String, u64>>>;

/// A TCP proxy in front of moto counting the requests that pass by DynamoDB operation (the
/// `x-amz-target` header line).
fn counting_proxy(upstream: &str) -> (String, Calls) {
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let calls: Calls = Arc::default();
    let counts = Arc::clone(&calls);
    thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut from_client, mut to_server) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let counts = Arc::clone(&counts);
            thread::spawn(move || {
                let mut line = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = from_client.read(&mut buf) {
                    for &b in &buf[..n] {
                        if b != b'\n' {
                            line.push(b);
                            continue;
                        }
                        let text = String::from_utf8_lossy(&line);
                        let header = "x-amz-target:";
                        if text.len() > header.len()
                            && text[..header.len()].eq_ignore_ascii_case(header)
                        {
                            let target = &text[header.len()..];
                            let op = target.trim().rsplit('.').next().unwrap_or("").to_owned();
                            *counts.lock().unwrap().entry(op).or_default() += 1;
                        }
                        line.clear();
                    }
                    if to_server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_server.shutdown(Shutdown::Write);
            });
            let (mut from_server, mut to_client) = (server, client);
            thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
                let _ = to_client.shutdown(Shutdown::Both);
            });
        }
    });
    (url, calls)
}

fn total(calls: &Calls) -> BTreeMap<String, u64> {
    calls.lock().unwrap().clone()
}

/// A harness whose function reaches DynamoDB through the counting proxy.
async fn counted_harness() -> (Harness, Calls) {
    let (url, calls) = counting_proxy(&moto_endpoint());
    let h = harness_with(Options {
        dynamo_endpoint: Some(url),
        ..Options::default()
    })
    .await;
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    (h, calls)
}

/// One instance of the function: the harness's bridge with its own memory of sent conversions,
/// wired as `src/entry.rs` (`bridge()`) wires it.
fn instance(h: &Harness) -> Bridge {
    Bridge {
        config: h.bridge.config.clone(),
        ledger: Arc::new(CachedLedger::new(h.bridge.ledger.clone())),
        tracker: h.bridge.tracker.clone(),
        clock: h.bridge.clock.clone(),
        queue: None,
        shops: None,
        orders: None,
    }
}

fn outcome(answer: &Answer) -> (u16, &str, bool) {
    let c = &answer.body["conversions"][0];
    (
        answer.status,
        c["outcome"].as_str().unwrap_or("?"),
        c["replay"].as_bool().unwrap_or(false),
    )
}

// Every test of this binary captures its thread's log lines (`capture_json_logs`): tracing
// caches whether a log line's call site is wanted when it is first hit, and a test hitting it
// first without a subscriber would make it unwanted for the others.

#[tokio::test]
async fn the_second_delivery_of_a_sent_conversion_makes_no_dynamodb_call() {
    let (capture, _guard) = capture_json_logs();

    let (h, calls) = counted_harness().await;
    let bridge = instance(&h);
    let first = deliver_event(&bridge, post(&paid_order(16001))).await;
    assert_eq!(outcome(&first), (200, "sent", false), "{}", first.body);
    let after_first = total(&calls);
    assert_eq!(after_first.get("PutItem"), Some(&1), "{after_first:?}");
    assert_eq!(after_first.get("UpdateItem"), Some(&1), "{after_first:?}");

    for _ in 0..3 {
        let again = deliver_event(&bridge, post(&paid_order(16001))).await;
        assert_eq!(outcome(&again), (200, "duplicate", true), "{}", again.body);
        assert_eq!(again.body, {
            // The answer is today's answer for a duplicate.
            let mut expected = again.body.clone();
            expected["conversions"][0] = json!({
                "event_id": "16001-purchase",
                "conversion_type": "Purchase",
                "outcome": "duplicate",
                "replay": true,
            });
            expected
        });
    }
    assert_eq!(
        total(&calls),
        after_first,
        "no DynamoDB call for duplicates"
    );
    assert_eq!(postbacks(&h).await.len(), 1);

    // The decision log lines: only the duplicates say they came from memory.
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let decisions: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "conversion")
        .collect();
    assert_eq!(decisions.len(), 4, "{text}");
    assert_eq!(decisions[0]["outcome"], "sent");
    assert!(
        decisions[0].get("from_memory").is_none(),
        "{}",
        decisions[0]
    );
    for d in &decisions[1..] {
        assert_eq!(d["outcome"], "duplicate");
        assert_eq!(d["from_memory"], true, "{d}");
    }
}

#[tokio::test]
async fn a_changed_sum_still_gets_409() {
    let _logs = capture_json_logs();
    let (h, calls) = counted_harness().await;
    let bridge = instance(&h);
    assert_eq!(
        outcome(&deliver_event(&bridge, post(&paid_order(16002))).await),
        (200, "sent", false)
    );
    let before = total(&calls);
    let mut changed = paid_order(16002);
    changed["order"]["total_price"] = json!("999,00");
    let answer = deliver_event(&bridge, post(&changed)).await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(answer.body["conversions"][0]["outcome"], "conflict");
    let after = total(&calls);
    assert_eq!(
        after.get("PutItem"),
        before.get("PutItem").map(|n| n + 1).as_ref(),
        "the changed conversion asked the table"
    );
    // The original is still answered from memory.
    let again = deliver_event(&bridge, post(&paid_order(16002))).await;
    assert_eq!(outcome(&again), (200, "duplicate", true));
    assert_eq!(total(&calls), after);
    assert_eq!(postbacks(&h).await.len(), 1);
}

#[tokio::test]
async fn an_instance_learns_a_sent_conversion_from_the_table_once() {
    let _logs = capture_json_logs();
    let (h, calls) = counted_harness().await;
    let (sender, other) = (instance(&h), instance(&h));
    assert_eq!(
        outcome(&deliver_event(&sender, post(&paid_order(16003))).await),
        (200, "sent", false)
    );
    let before = total(&calls);
    // The other instance has not seen it: one failed conditional PutItem tells it.
    let first = deliver_event(&other, post(&paid_order(16003))).await;
    assert_eq!(outcome(&first), (200, "duplicate", true));
    let learned = total(&calls);
    assert_eq!(
        learned.get("PutItem"),
        before.get("PutItem").map(|n| n + 1).as_ref()
    );
    let second = deliver_event(&other, post(&paid_order(16003))).await;
    assert_eq!(outcome(&second), (200, "duplicate", true));
    assert_eq!(total(&calls), learned);
}

#[tokio::test]
async fn dry_run_and_live_conversions_are_remembered_apart() {
    let _logs = capture_json_logs();
    let (h, calls) = counted_harness().await;
    let mut dry = instance(&h);
    dry.config.dry_run = true;
    let answer = deliver_event(&dry, post(&paid_order(16004))).await;
    assert_eq!(outcome(&answer), (200, "dry_run", false), "{}", answer.body);
    // The same instance memory, now live: the dry run does not make it a duplicate.
    let live = Bridge {
        config: h.bridge.config.clone(),
        ledger: dry.ledger.clone(),
        tracker: h.bridge.tracker.clone(),
        clock: h.bridge.clock.clone(),
        queue: None,
        shops: None,
        orders: None,
    };
    let before = total(&calls);
    let sent = deliver_event(&live, post(&paid_order(16004))).await;
    assert_eq!(outcome(&sent), (200, "sent", false), "{}", sent.body);
    assert!(total(&calls).get("PutItem") > before.get("PutItem"));
    assert_eq!(postbacks(&h).await.len(), 1);
}
