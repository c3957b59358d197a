//! Every log line, at every level and from every crate (the AWS SDK, hyper, reqwest and `log`
//! records included), captured while orders with distinctive PII go through every path: none of
//! the name, email, phone, CPF or rendered postback URL may appear.

mod common;

use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::postback::redtrack::{RedTrackClient, RetryPolicy};
use cartpanda_redtrack::redrive::consumer::{Consumer, Redriver};
use common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

const FIRST: &str = "Zephyrinaqx";
const LAST: &str = "Quillonbergz";
const EMAIL: &str = "zephyr.quillon+pii@example.org";
const PHONE: &str = "+55 (11) 97654-3210";
const CPF: &str = "987.654.321-00";

fn pii_order(id: u64) -> Value {
    let mut body = paid_order(id);
    body["order"]["customer"] = json!({"first_name": FIRST, "last_name": LAST, "email": EMAIL, "phone": PHONE, "cpf": CPF, "full_name": format!("{FIRST} {LAST}")});
    body["order"]["email"] = json!(EMAIL);
    body["order"]["phone"] = json!(PHONE);
    body
}

fn forbidden() -> Vec<String> {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    vec![
        FIRST.into(),
        LAST.into(),
        EMAIL.into(),
        encode(EMAIL),
        "zephyr.quillon".into(),
        PHONE.into(),
        encode(PHONE),
        "97654-3210".into(),
        "976543210".into(),
        CPF.into(),
        "98765432100".into(),
        "fname=".into(),
        "clickid=".into(),
        "/postback?".into(),
    ]
}

async fn redtrack(h: &Harness, status: u16, delay_ms: u64) {
    h.redtrack.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(status).set_delay(Duration::from_millis(delay_ms)))
        .mount(&h.redtrack)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_on_any_path_carries_pii_or_a_postback_url() {
    let capture = capture_everything_logged();

    // Sent, duplicate, conflict.
    let h = harness_with(Options {
        with_queue: true,
        env: vec![("REDRIVE_DELAY_S", "0".into())],
        ..Options::default()
    })
    .await;
    redtrack(&h, 200, 0).await;
    assert_eq!(deliver(&h, &pii_order(1)).await.status, 200);
    assert_eq!(deliver(&h, &pii_order(1)).await.status, 200);
    let mut changed = pii_order(1);
    changed["order"]["total_price"] = json!("1,00");
    assert_eq!(deliver(&h, &changed).await.status, 409);
    // Refused (4xx), failing (5xx with retries), timing out, then queued; the consumer re-sends.
    redtrack(&h, 400, 0).await;
    assert_eq!(deliver(&h, &pii_order(2)).await.status, 502);
    redtrack(&h, 503, 0).await;
    assert_eq!(deliver(&h, &pii_order(3)).await.status, 202);
    redtrack(&h, 200, 2_000).await;
    assert_eq!(deliver(&h, &pii_order(4)).await.status, 202);
    let consumer = Consumer {
        redriver: Redriver {
            ledger: Arc::new(DynamoLedger::new(
                dynamo_client(&moto_endpoint()),
                h.table.clone(),
            )),
            tracker: Arc::new(
                RedTrackClient::new(Duration::from_millis(300), RetryPolicy::default()).unwrap(),
            ),
            clock: Arc::new(SystemClock),
            ttl_days: 30,
            dlq: None,
        },
        sqs: h.sqs.clone(),
        queue_url: h.queue_url.clone().unwrap(),
        dlq_url: None,
    };
    let messages = h
        .sqs
        .receive_message()
        .queue_url(h.queue_url.as_ref().unwrap())
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let records: Vec<Value> = messages
        .messages()
        .iter()
        .map(|m| json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(), "attributes": {"ApproximateReceiveCount": "1"}}))
        .collect();
    assert_eq!(records.len(), 2);
    let event = serde_json::from_value(json!({ "Records": records })).unwrap();
    redtrack(&h, 500, 0).await;
    let response = consumer
        .handle_batch(event, SystemClock.now_ms() + 5_000)
        .await;
    assert_eq!(response.batch_item_failures.len(), 2);

    // RedTrack unreachable (connection refused).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable = harness_with(Options {
        env: vec![(
            "REDTRACK_POSTBACK_URL",
            format!("http://127.0.0.1:{closed_port}{TEMPLATE_PATH}"),
        )],
        ..Options::default()
    })
    .await;
    assert_eq!(deliver(&unreachable, &pii_order(5)).await.status, 502);
    // DynamoDB unreachable.
    let dead = harness_with(Options {
        dynamo_endpoint: Some(format!("http://127.0.0.1:{closed_port}")),
        ..Options::default()
    })
    .await;
    assert_eq!(deliver(&dead, &pii_order(6)).await.status, 503);
    // Dry run: the postback is in the answer, never in the log.
    let dry = harness_with(Options {
        env: vec![("DRY_RUN", "true".into())],
        ..Options::default()
    })
    .await;
    let answer = deliver(&dry, &pii_order(7)).await;
    assert!(
        answer.body["conversions"][0]["postback"]
            .as_str()
            .unwrap()
            .contains("fname=Zephyrinaqx")
    );
    // Refused before anything is claimed or sent (the 422s still write their refusal record):
    // bad amount, bad click ID, wrong token.
    let mut bad = pii_order(8);
    bad["order"]["total_price"] = json!(format!("{EMAIL}"));
    assert_eq!(deliver(&h, &bad).await.status, 422);
    let mut bad_cid = pii_order(9);
    bad_cid["order"]["checkout_params"]["cid"] = json!(format!("x&email={EMAIL}"));
    assert_eq!(deliver(&h, &bad_cid).await.status, 422);
    let wrong = apigw_event(
        "POST",
        Some(&pii_order(10).to_string()),
        &[("token", EMAIL)],
        &[],
    );
    assert_eq!(deliver_event(&h.bridge, wrong).await.status, 401);

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.lines().count() > 50,
        "the capture saw the logs ({} lines)",
        logs.lines().count()
    );
    assert!(
        logs.contains("outcome=\"sent\""),
        "decision lines are there"
    );
    for needle in forbidden() {
        if let Some(line) = logs.lines().find(|l| l.contains(&needle)) {
            panic!("log leaks {needle:?}: {line}");
        }
    }
}
