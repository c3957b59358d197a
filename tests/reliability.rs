//! Exactly once under concurrency and faults: moto serves DynamoDB and SQS, wiremock plays RedTrack.

mod common;
mod fault_proxy;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_dynamodb::types::AttributeValue;
use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::postback::redtrack::RetryPolicy;
use cartpanda_redtrack::redrive::consumer;
use cartpanda_redtrack::redrive::queue::SqsQueue;
use common::*;
use fault_proxy::FaultProxy;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

async fn redtrack(h: &Harness, status: u16, times: Option<u64>, delay_ms: u64) {
    let mock = Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(status).set_delay(Duration::from_millis(delay_ms)));
    match times {
        Some(n) => mock.up_to_n_times(n).mount(&h.redtrack).await,
        None => mock.mount(&h.redtrack).await,
    }
}

async fn received(h: &Harness) -> usize {
    h.redtrack
        .received_requests()
        .await
        .unwrap_or_default()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_deliveries_of_one_order_send_exactly_once() {
    let h = harness().await;
    redtrack(&h, 200, None, 300).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let bridge = Arc::clone(&h.bridge);
        tasks.push(tokio::spawn(async move {
            deliver_event(&bridge, post(&paid_order(90001))).await
        }));
    }
    let mut sent = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        let outcome = answer.body["conversions"][0]["outcome"]
            .as_str()
            .unwrap()
            .to_owned();
        match (answer.status, outcome.as_str()) {
            (200, "sent") => sent += 1,
            (200, "duplicate") => {}
            (409, "in_progress") => assert!(answer.headers.contains_key("retry-after")),
            other => panic!("unexpected answer {other:?}: {}", answer.body),
        }
    }
    assert_eq!(sent, 1, "exactly one delivery sends");
    assert_eq!(
        received(&h).await,
        1,
        "exactly one request reaches RedTrack"
    );
}

#[tokio::test]
async fn a_crashed_attempts_lease_blocks_while_live_and_is_taken_over_after() {
    let h = harness().await;
    redtrack(&h, 200, None, 0).await;
    // What an invocation that died mid-send leaves: IN_PROGRESS with a lease 1.5 s from now.
    let body = paid_order(90002);
    let fingerprint = {
        let text = body.to_string();
        let delivery = cartpanda_redtrack::inbound::webhook::parse(text.as_bytes()).unwrap();
        let c = cartpanda_redtrack::conversion::classify::classify(&delivery, &Default::default())
            .unwrap();
        let cartpanda_redtrack::conversion::classify::Decision::Convert(convs) = &c.decision else {
            panic!()
        };
        cartpanda_redtrack::conversion::classify::fingerprint(c.order.unwrap(), &convs[0])
    };
    let now = SystemClock.now_ms();
    h.dynamo
        .put_item()
        .table_name(&h.table)
        .item("pk", AttributeValue::S("evt#90002-purchase".into()))
        .item("status", AttributeValue::S("IN_PROGRESS".into()))
        .item("fingerprint", AttributeValue::S(fingerprint))
        .item("attempt", AttributeValue::S("crashed".into()))
        .item(
            "lease_until_ms",
            AttributeValue::N((now + 1500).to_string()),
        )
        .item(
            "expires_at",
            AttributeValue::N((now / 1000 + 86_400).to_string()),
        )
        .send()
        .await
        .unwrap();

    let blocked = deliver(&h, &body).await;
    assert_eq!(blocked.status, 409, "{}", blocked.body);
    assert_eq!(blocked.body["conversions"][0]["outcome"], "in_progress");
    let retry_after: u64 = blocked.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(received(&h).await, 0);

    tokio::time::sleep(Duration::from_millis(1700)).await;
    let taken_over = deliver(&h, &body).await;
    assert_eq!(taken_over.status, 200, "{}", taken_over.body);
    assert_eq!(taken_over.body["conversions"][0]["outcome"], "sent");
    assert_eq!(received(&h).await, 1);
}

#[tokio::test]
async fn redtrack_503_twice_then_200_is_one_accepted_postback_after_three_attempts() {
    let h = harness().await;
    redtrack(&h, 503, Some(2), 0).await;
    redtrack(&h, 200, None, 0).await;
    let answer = deliver(&h, &paid_order(90003)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversions"][0]["outcome"], "sent");
    assert_eq!(answer.body["conversions"][0]["attempts"], 3);
    assert_eq!(received(&h).await, 3);
}

#[tokio::test]
async fn redtrack_400_is_a_permanent_failure_recorded_without_retries() {
    let h = harness().await;
    redtrack(&h, 400, None, 0).await;
    let answer = deliver(&h, &paid_order(90004)).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.body["conversions"][0]["outcome"], "failed");
    assert!(
        answer.body["conversions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 400")
    );
    assert_eq!(received(&h).await, 1, "no retry storm");
    let record = item(&h, "evt#90004-purchase")
        .await
        .expect("kept for the operator");
    assert_eq!(record["status"].as_s().unwrap(), "FAILED");
}

#[tokio::test]
async fn dynamodb_unreachable_answers_503_and_sends_nothing() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let h = harness_with(Options {
        dynamo_endpoint: Some(dead_url),
        ..Options::default()
    })
    .await;
    redtrack(&h, 200, None, 0).await;
    let answer = deliver(&h, &paid_order(90005)).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(
        answer.body["conversions"][0]["outcome"],
        "store_unavailable"
    );
    assert!(answer.body["error"].as_str().unwrap().contains("DynamoDB"));
    assert_eq!(received(&h).await, 0);
}

/// Receives the queued messages as the Lambda SQS trigger would hand them over.
async fn sqs_event(h: &Harness) -> SqsEvent {
    sqs_event_hidden_for(h, None).await
}

/// The messages as Lambda's SQS poller hands them over, received with `visibility` seconds of
/// visibility timeout (the queue's default when `None`).
async fn sqs_event_hidden_for(h: &Harness, visibility: Option<i32>) -> SqsEvent {
    receive_as_sqs_event(&h.sqs, h.queue_url.as_ref().unwrap(), visibility)
        .await
        .1
}

#[tokio::test]
async fn redtrack_down_queues_the_conversion_and_the_consumer_sends_it_exactly_once() {
    let h = harness_with(queued_options()).await;
    redtrack(&h, 503, Some(3), 0).await;
    let answer = deliver(&h, &paid_order(90006)).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.body["conversions"][0]["outcome"], "queued");
    assert_eq!(
        item(&h, "evt#90006-purchase").await.unwrap()["status"]
            .as_s()
            .unwrap(),
        "QUEUED"
    );
    assert_eq!(received(&h).await, 3);

    // RedTrack recovers; the consumer runs on the queued message.
    redtrack(&h, 200, None, 0).await;
    let event = sqs_event(&h).await;
    assert_eq!(event.records.len(), 1);
    let c = redrive_consumer(&h, None);
    let deadline = SystemClock.now_ms() + 10_000;
    let response = c.handle_batch(event.clone(), deadline).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        received(&h).await,
        4,
        "one more request: the accepted postback"
    );
    let accepted = &h.redtrack.received_requests().await.unwrap()[3];
    let q: std::collections::BTreeMap<_, _> = accepted.url.query_pairs().into_owned().collect();
    assert_eq!(q["rdtk_event_id"], "90006-purchase");
    assert_eq!(q["sum"], "1234.56");
    assert_eq!(
        item(&h, "evt#90006-purchase").await.unwrap()["status"]
            .as_s()
            .unwrap(),
        "SENT"
    );

    // The same message again (SQS delivers at least once): still one postback.
    let again = c.handle_batch(event, deadline).await;
    assert!(again.batch_item_failures.is_empty());
    assert_eq!(received(&h).await, 4);
    // And Cartpanda redelivering the webhook: duplicate.
    assert_eq!(
        deliver(&h, &paid_order(90006)).await.body["conversions"][0]["outcome"],
        "duplicate"
    );
    assert_eq!(received(&h).await, 4);
}

#[tokio::test]
async fn the_consumer_begins_no_message_it_has_no_time_for_and_puts_the_rest_off() {
    use cartpanda_redtrack::ops::budget::{BEFORE_CLAIM, SDK_OPERATION};
    use cartpanda_redtrack::redrive::consumer::visibility_after;
    let h = harness_with(queued_options()).await;
    redtrack(&h, 503, Some(9), 0).await;
    for order in [90011, 90012, 90013] {
        assert_eq!(deliver(&h, &paid_order(order)).await.status, 202);
    }
    // RedTrack is back but slow. The batch's invocation has time for one message and a little
    // more: it begins the first, then puts the two others off, rather than running into its
    // timeout (which fails the whole batch) or sending them on a cut-short attempt.
    redtrack(&h, 200, None, 500).await;
    let event = sqs_event_hidden_for(&h, Some(2)).await;
    assert_eq!(event.records.len(), 3);
    let left = (BEFORE_CLAIM + SDK_OPERATION).as_millis() as i64 + 300;
    let response = redrive_consumer(&h, None)
        .handle_batch(event, SystemClock.now_ms() + left)
        .await;
    assert_eq!(
        received(&h).await,
        9 + 1,
        "the first message sent, no other"
    );
    assert_eq!(response.batch_item_failures.len(), 2);
    let sent = [
        "evt#90011-purchase",
        "evt#90012-purchase",
        "evt#90013-purchase",
    ];
    let mut statuses = Vec::new();
    for key in sent {
        statuses.push(
            item(&h, key).await.unwrap()["status"]
                .as_s()
                .unwrap()
                .clone(),
        );
    }
    statuses.sort();
    assert_eq!(statuses, ["QUEUED", "QUEUED", "SENT"]);
    // Put off for the delay their receive earned (a minute), not the 2 s they were received for.
    assert!(visibility_after(1) > 5);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // (Without the check, all three were sent: 12 requests, no failure.)
    // Only the sent message is back (Lambda's poller would have deleted it; here nobody did).
    let back = sqs_event_hidden_for(&h, Some(2)).await.records;
    let put_off: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(back.len(), 1);
    assert!(!put_off.contains(back[0].message_id.as_ref().unwrap()));
}

#[tokio::test]
async fn a_redelivery_sends_a_queued_conversion_and_the_consumer_then_skips_it() {
    let h = harness_with(queued_options()).await;
    redtrack(&h, 503, Some(3), 0).await;
    assert_eq!(deliver(&h, &paid_order(90007)).await.status, 202);
    redtrack(&h, 200, None, 0).await;
    assert_eq!(
        deliver(&h, &paid_order(90007)).await.body["conversions"][0]["outcome"],
        "sent"
    );
    let response = redrive_consumer(&h, None)
        .handle_batch(sqs_event(&h).await, SystemClock.now_ms() + 10_000)
        .await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        received(&h).await,
        4,
        "three failures, one accepted; the consumer sent nothing"
    );
}

#[tokio::test]
async fn the_consumer_retries_later_while_redtrack_stays_down_and_dead_letters_refusals() {
    let h = harness_with(queued_options()).await;
    redtrack(&h, 503, Some(5), 0).await;
    assert_eq!(deliver(&h, &paid_order(90008)).await.status, 202);
    let dlq_url = create_queue(&h.sqs, "dlq").await;
    let c = redrive_consumer(&h, Some(dlq_url.clone()));
    // Received hidden for 1 s only, so the message stays hidden after that only if the consumer
    // made its visibility grow (to `visibility_after(1)`, 60 s).
    let event = sqs_event_hidden_for(&h, Some(1)).await;
    let id = event.records[0].message_id.clone().unwrap();
    let response = c.handle_batch(event, SystemClock.now_ms() + 10_000).await;
    assert_eq!(response.batch_item_failures.len(), 1, "retried later");
    assert_eq!(response.batch_item_failures[0].item_identifier, id);
    assert_eq!(
        item(&h, "evt#90008-purchase").await.unwrap()["status"]
            .as_s()
            .unwrap(),
        "QUEUED"
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // (Without the check, all three were sent: 12 requests, no failure.)
    assert!(
        peek(&h.sqs, h.queue_url.as_ref().unwrap()).await.is_empty(),
        "hidden for its visibility timeout, longer than the 1 s it was received with"
    );

    // RedTrack now refuses for good: the conversion goes to the DLQ at once, not 77 more hours.
    h.redtrack.reset().await;
    redtrack(&h, 400, None, 0).await;
    let message = serde_json::from_str(
        &serde_json::to_string(&json!({"Records": [{"messageId": "m2", "receiptHandle": "r2",
            "body": peek_body(&h, &dlq_url).await, "attributes": {"ApproximateReceiveCount": "2"}}]})).unwrap(),
    )
    .unwrap();
    let response = c.handle_batch(message, SystemClock.now_ms() + 10_000).await;
    assert!(response.batch_item_failures.is_empty());
    let dead = peek(&h.sqs, &dlq_url).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(received(&h).await, 1, "a refusal is not retried");

    // After the operator fixes RedTrack: `make redrive` moves it back, and it is sent.
    let moved = consumer::move_messages(&h.sqs, &dlq_url, h.queue_url.as_ref().unwrap(), 100)
        .await
        .unwrap();
    assert_eq!(moved, 1);
    assert!(peek(&h.sqs, &dlq_url).await.is_empty());
}

/// The body of the conversion queued for order 90008 (re-created: the original is in flight).
async fn peek_body(h: &Harness, _dlq: &str) -> String {
    let record = item(h, "evt#90008-purchase").await.unwrap();
    json!({
        "v": 1, "key": "evt#90008-purchase", "event_id": "90008-purchase",
        "fingerprint": record["fingerprint"].as_s().unwrap(), "order_id": "90008", "event": "order.paid",
        "conversion_type": "Purchase", "postback": format!("{}/postback?clickid=abc&sum=1.00", h.redtrack.uri()),
        "first_failure_ms": 0
    })
    .to_string()
}

#[tokio::test]
async fn an_unreachable_queue_releases_the_claim_and_answers_502() {
    let mut h = harness_with(queued_options()).await;
    redtrack(&h, 503, None, 0).await;
    let bridge = Arc::get_mut(&mut h.bridge).unwrap();
    bridge.queue = Some(Arc::new(SqsQueue::new(
        h.sqs.clone(),
        "http://127.0.0.1:5055/123456789012/no-such-queue",
    )));
    let answer = deliver(&h, &paid_order(90009)).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert_eq!(answer.body["conversions"][0]["outcome"], "failed");
    assert_eq!(
        items(&h).await,
        0,
        "released, so Cartpanda's redelivery can send"
    );
}

/// Delivers `body` through the runtime adapter and the real handler, with an invocation deadline
/// `within` from now.
async fn deliver_within(h: &Harness, body: &serde_json::Value, within: Duration) -> Answer {
    use cartpanda_redtrack::inbound::{http, runtime};
    use lambda_http::RequestExt;
    let payload: lambda_http::request::LambdaRequest = serde_json::from_value(post(body)).unwrap();
    let mut ctx = lambda_http::Context::default();
    ctx.deadline = (SystemClock.now_ms() + within.as_millis() as i64) as u64;
    let req = runtime::into_request(payload).with_lambda_context(ctx);
    let response = http::handle(&h.bridge, req).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = match response.body() {
        lambda_http::Body::Text(t) => t.clone(),
        _ => String::new(),
    };
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON: {text}")),
    }
}

/// A harness whose function reaches DynamoDB through `proxy`, with the production SDK
/// configuration (its retries and the timeouts of `ops::budget`).
async fn harness_behind(proxy: &FaultProxy, options: Options) -> Harness {
    let mut h = harness_with(options).await;
    let client = production_client(&proxy.url).await;
    Arc::get_mut(&mut h.bridge).unwrap().ledger =
        Arc::new(DynamoLedger::new(client, h.table.clone()));
    h
}

/// A DynamoDB client with the function's SDK configuration, for `endpoint`.
async fn production_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let sdk = cartpanda_redtrack::ops::aws::load().await;
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url(endpoint)
            .build(),
    )
}

/// Issue 20, item 5: DynamoDB applies the claim, its answer is lost, the SDK retries and meets
/// the claim's own record. That is this delivery's claim: it sends, once.
#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_ours_and_sent_once() {
    let proxy = FaultProxy::start(&moto_endpoint(), 5).await;
    let h = harness_behind(&proxy, Options::default()).await;
    redtrack(&h, 200, None, 0).await;
    proxy.lose_answers("PutItem", 1);
    let answer = deliver(&h, &paid_order(90010)).await;
    assert_eq!(
        proxy
            .counts
            .answers_lost
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the claim's answer was lost"
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversions"][0]["outcome"], "sent");
    assert_eq!(received(&h).await, 1);
    let record = item(&h, "evt#90010-purchase").await.unwrap();
    assert_eq!(record["status"].as_s().unwrap(), "SENT");
    // A redelivery is a duplicate.
    let again = deliver(&h, &paid_order(90010)).await;
    assert_eq!(again.body["conversions"][0]["outcome"], "duplicate");
    assert_eq!(received(&h).await, 1);
}

/// Issue 20, item 8: RedTrack accepts, the `UpdateItem` to `SENT` keeps failing for the whole
/// invocation. The delivery stays `sent`; "record SENT" goes to the redrive queue; a redelivery
/// during the lease is told to wait, the consumer records `SENT` without sending, and a
/// redelivery after the lease is a duplicate: RedTrack gets the conversion once.
#[tokio::test]
async fn a_sent_conversion_whose_sent_write_failed_is_never_sent_again() {
    let proxy = FaultProxy::start(&moto_endpoint(), 8).await;
    let h = harness_behind(
        &proxy,
        Options {
            retry: RetryPolicy::default(),
            ..queued_options()
        },
    )
    .await;
    redtrack(&h, 200, None, 0).await;
    proxy.refuse("UpdateItem", 1000);
    let invocation = Duration::from_millis(6500);
    let lease_end = std::time::Instant::now() + invocation;
    let answer = deliver_within(&h, &paid_order(90011), invocation).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversions"][0]["outcome"], "sent");
    assert_eq!(received(&h).await, 1);

    // A redelivery while the lease lives waits; DynamoDB comes back.
    let blocked = deliver(&h, &paid_order(90011)).await;
    assert_eq!(blocked.status, 409, "{}", blocked.body);
    proxy.clear();
    let event = sqs_event(&h).await;
    let response = redrive_consumer(&h, None)
        .handle_batch(event, SystemClock.now_ms() + 10_000)
        .await;
    assert!(response.batch_item_failures.is_empty());
    // After the lease: a duplicate, not a second postback.
    tokio::time::sleep_until((lease_end + Duration::from_millis(300)).into()).await;
    let after = deliver(&h, &paid_order(90011)).await;
    assert_eq!(
        after.body["conversions"][0]["outcome"], "duplicate",
        "{}",
        after.body
    );
    assert_eq!(received(&h).await, 1, "RedTrack got the conversion once");
    let record = item(&h, "evt#90011-purchase").await.unwrap();
    assert_eq!(record["status"].as_s().unwrap(), "SENT");
    // What the sender saw travels with "record SENT" (issue 23).
    let story = ["via", "attempts", "rt_status"].map(|k| record.get(k).cloned());
    let (s, n) = (
        |v: &str| Some(AttributeValue::S(v.into())),
        |v: &str| Some(AttributeValue::N(v.into())),
    );
    assert_eq!(story, [s("webhook"), n("1"), n("200")]);
    assert!(peek(&h.sqs, h.queue_url.as_ref().unwrap()).await.is_empty());
    let refused = proxy
        .counts
        .black_holed
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        refused > 3,
        "the SENT write was tried again: {refused} requests"
    );
}

/// Issue 20, item 8, on the consumer's side: the consumer sends a queued conversion, its `SENT`
/// write fails; the message is replaced by "record SENT", which the next pass records without
/// sending, even after the consumer's lease ended.
#[tokio::test]
async fn the_consumer_records_what_it_sent_when_its_sent_write_failed() {
    let proxy = FaultProxy::start(&moto_endpoint(), 9).await;
    let h = harness_with(queued_options()).await;
    redtrack(&h, 503, Some(3), 0).await;
    assert_eq!(deliver(&h, &paid_order(90012)).await.status, 202);
    redtrack(&h, 200, None, 0).await;
    let mut c = redrive_consumer(&h, None);
    c.redriver.ledger = Arc::new(DynamoLedger::new(
        production_client(&proxy.url).await,
        h.table.clone(),
    ));
    proxy.refuse("UpdateItem", 1000);
    let deadline = SystemClock.now_ms() + 6_000;
    let response = c.handle_batch(sqs_event(&h).await, deadline).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "replaced, not retried"
    );
    assert_eq!(received(&h).await, 4, "three failures, one accepted");
    proxy.clear();
    // Past the consumer's lease: only the record's attempt ID keeps it from being sent again.
    let left = deadline - SystemClock.now_ms();
    tokio::time::sleep(Duration::from_millis(left.max(0) as u64 + 200)).await;
    let event = sqs_event(&h).await;
    assert_eq!(event.records.len(), 1, "a record-SENT message in its place");
    let response = c.handle_batch(event, SystemClock.now_ms() + 10_000).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(received(&h).await, 4, "nothing sent again");
    let record = item(&h, "evt#90012-purchase").await.unwrap();
    assert_eq!(record["status"].as_s().unwrap(), "SENT");
    let story = ["via", "attempts", "rt_status"].map(|k| record.get(k).cloned());
    let (s, n) = (
        |v: &str| Some(AttributeValue::S(v.into())),
        |v: &str| Some(AttributeValue::N(v.into())),
    );
    assert_eq!(
        story,
        [s("redrive"), n("4"), n("200")],
        "three failed, one accepted"
    );
    assert_eq!(
        deliver(&h, &paid_order(90012)).await.body["conversions"][0]["outcome"],
        "duplicate"
    );
    assert_eq!(received(&h).await, 4);
}

/// Issue 20, "smaller": the deadline is checked before each claim. The invocation starts with
/// 3 s left; RedTrack takes 1.5 s for the first upsell, after which less than `BEFORE_CLAIM`
/// (2 s) is left, so the second is left unclaimed (503) for a redelivery, which sends it.
#[tokio::test]
async fn no_conversion_is_claimed_without_the_time_to_send_it() {
    let h = harness_with(Options {
        env: vec![("REDTRACK_TIMEOUT_MS", "4000".to_owned())],
        ..Options::default()
    })
    .await;
    redtrack(&h, 200, None, 1500).await;
    let order = upsell_order(90013, true);
    let answer = deliver_within(&h, &order, Duration::from_millis(3000)).await;
    assert_eq!(
        received(&h).await,
        1,
        "no postback started without the time to finish it"
    );
    assert_eq!(answer.status, 503, "{}", answer.body);
    let outcomes: Vec<_> = answer.body["conversions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["sent", "not_attempted"]);
    assert_eq!(claims(&h).await, 1, "the second conversion left unclaimed");
    let again = deliver_within(&h, &order, Duration::from_millis(10_000)).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(received(&h).await, 2);
}

/// Under Lambda's default 3 s timeout a delivery with two upsells sends both when RedTrack
/// answers at once: the check before each claim leaves a conversion for a redelivery only when
/// its time is really gone. And a deadline already past when the invocation starts (a local
/// emulator's: `cargo lambda watch`, or one that gives the invoke time) bounds nothing.
#[tokio::test]
async fn a_short_invocation_still_sends_every_conversion_it_has_time_for() {
    let h = harness().await;
    redtrack(&h, 200, None, 0).await;
    let answer = deliver_within(&h, &upsell_order(90015, true), Duration::from_millis(3000)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(received(&h).await, 2);
    let emulated = deliver_within(&h, &upsell_order(90016, true), Duration::ZERO).await;
    assert_eq!(emulated.status, 200, "{}", emulated.body);
    assert_eq!(received(&h).await, 4);
}

/// Under Lambda's default 3 s timeout the retry margin (3.6 s) leaves RedTrack no time at all;
/// the first attempt still gets a usable timeout, so a RedTrack answering in 300 ms is sent (it
/// was cut at 50 ms and answered 502).
#[tokio::test]
async fn a_short_invocation_gives_redtrack_a_real_first_attempt() {
    let h = harness_with(Options {
        retry: RetryPolicy::default(),
        ..Options::default()
    })
    .await;
    redtrack(&h, 200, None, 300).await;
    let answer = deliver_within(&h, &paid_order(90017), Duration::from_millis(3000)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversions"][0]["outcome"], "sent");
    assert_eq!(received(&h).await, 1);
}

/// Issue 20, item 8: a "record SENT" message whose record changed hands (here: a later attempt
/// found RedTrack down and queued the conversion) is claimed and recorded `SENT`; the queued
/// send that follows finds it sent, and nothing reaches RedTrack again.
#[tokio::test]
async fn record_sent_on_a_record_that_changed_hands_claims_it_and_sends_nothing() {
    let h = harness_with(queued_options()).await;
    redtrack(&h, 503, Some(3), 0).await;
    assert_eq!(deliver(&h, &paid_order(90014)).await.status, 202);
    let queued = sqs_event(&h).await;
    let record = item(&h, "evt#90014-purchase").await.unwrap();
    assert_eq!(record["status"].as_s().unwrap(), "QUEUED");
    let record_sent = json!({
        "v": 1, "kind": "record_sent", "attempt": "an-earlier-attempt-that-sent",
        "key": "evt#90014-purchase", "event_id": "90014-purchase",
        "fingerprint": record["fingerprint"].as_s().unwrap(), "order_id": "90014",
        "event": "order.paid", "conversion_type": "Purchase", "postback": "",
        "first_failure_ms": SystemClock.now_ms()
    });
    let event = serde_json::from_value(
        json!({"Records": [{"messageId": "m1", "receiptHandle": "r1",
        "body": record_sent.to_string(), "attributes": {"ApproximateReceiveCount": "1"}}]}),
    )
    .unwrap();
    redtrack(&h, 200, None, 0).await;
    let c = redrive_consumer(&h, None);
    let response = c.handle_batch(event, SystemClock.now_ms() + 10_000).await;
    assert!(response.batch_item_failures.is_empty());
    let response = c.handle_batch(queued, SystemClock.now_ms() + 10_000).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(received(&h).await, 3, "RedTrack's three failures only");
    let record = item(&h, "evt#90014-purchase").await.unwrap();
    assert_eq!(record["status"].as_s().unwrap(), "SENT");
    assert_eq!(
        deliver(&h, &paid_order(90014)).await.body["conversions"][0]["outcome"],
        "duplicate"
    );
}
