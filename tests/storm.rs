//! The storm (issue 20, "Done when"): concurrent deliveries of 60 conversions while a proxy in
//! front of moto cuts and black-holes DynamoDB's connections for up to 5 s at seeded moments.
//! Then, as Cartpanda would, every delivery not answered 2xx is redelivered until all are, with
//! the redrive consumer running between rounds. RedTrack (wiremock) must have received every
//! conversion exactly once, by `rdtk_event_id`: none twice, none lost.
//!
//! The function runs with the production SDK configuration (the timeouts of `ops::budget`) and
//! the production ledger stack (the sent-memory in front of DynamoDB); SQS is moto, not cut.
//! `STORM_SEED` picks another storm.

mod common;
mod fault_proxy;

use cartpanda_redtrack::bridge::Bridge;
use cartpanda_redtrack::inbound::{http, runtime};
use cartpanda_redtrack::ledger::cache::CachedLedger;
use cartpanda_redtrack::ledger::claim::Ledger;
use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::ops::config::Config;
use cartpanda_redtrack::postback::redtrack::{RedTrackClient, RetryPolicy};
use cartpanda_redtrack::redrive::consumer::{Consumer, Redriver};
use cartpanda_redtrack::redrive::queue::{RedriveQueue, SqsQueue};
use common::*;
use fault_proxy::FaultProxy;
use lambda_http::RequestExt;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Each invocation's time, from the delivery to its deadline (the claims' lease).
const INVOCATION: Duration = Duration::from_secs(8);
/// Deliveries start within this much of the storm's start.
const SPREAD_MS: u64 = 4_000;
/// How long RedTrack takes to accept a postback: an outage may begin in between.
const REDTRACK_TAKES: Duration = Duration::from_millis(800);
/// Redelivery rounds at most (one a second or so, after the storm).
const ROUNDS: usize = 40;

/// One delivery Cartpanda makes: a name for the report and its body.
struct Delivery {
    name: String,
    body: Value,
    start_ms: u64,
}

/// 40 orders: 25 with the purchase only, 10 with one upsell, 5 with two (their upsell
/// deliveries: the first line alone, then both lines, as Cartpanda sends them): 60 conversions
/// in 60 deliveries, about half of them delivered twice.
fn deliveries(proxy: &FaultProxy) -> Vec<Delivery> {
    let mut out = Vec::new();
    for i in 0..40u64 {
        let id = 95_000 + i;
        out.push((format!("{id} paid"), paid_order(id)));
        if i >= 25 {
            out.push((format!("{id} upsell"), upsell_order(id, false)));
        }
        if i >= 35 {
            out.push((format!("{id} upsells"), upsell_order(id, true)));
        }
    }
    let twice: Vec<_> = out
        .iter()
        .filter(|_| proxy.random() % 2 == 0)
        .map(|(name, body)| (format!("{name} again"), body.clone()))
        .collect();
    out.extend(twice);
    out.into_iter()
        .map(|(name, body)| Delivery {
            name,
            body,
            start_ms: proxy.random() % SPREAD_MS,
        })
        .collect()
}

/// Five outages, each 1 to 5 s long, starting within the first 7 s.
fn outages(proxy: &FaultProxy) -> Vec<(Duration, Duration)> {
    (0..5)
        .map(|_| {
            (
                Duration::from_millis(300 + proxy.random() % 6_700),
                Duration::from_millis(1_000 + proxy.random() % 4_001),
            )
        })
        .collect()
}

struct World {
    bridge: Arc<Bridge>,
    consumer: Consumer,
    redtrack: MockServer,
    queue_url: String,
}

async fn world(proxy: &FaultProxy) -> World {
    let moto = moto_endpoint();
    let table = create_table(&dynamo_client(&moto)).await;
    let redtrack = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(REDTRACK_TAKES))
        .mount(&redtrack)
        .await;
    // The production SDK configuration, DynamoDB behind the proxy.
    let sdk = cartpanda_redtrack::ops::aws::load().await;
    let ledger_client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url(&proxy.url)
            .build(),
    );
    let dynamo = Arc::new(DynamoLedger::new(ledger_client, table.clone()));
    let sqs = sqs_client(&moto);
    let queue_url = create_queue(&sqs, "storm").await;
    let env = [
        (
            "REDTRACK_POSTBACK_URL",
            format!(
                "{}/postback?clickid={{cid}}&sum={{total_price}}",
                redtrack.uri()
            ),
        ),
        ("WEBHOOK_TOKEN", TOKEN.to_owned()),
        ("DEDUP_TABLE", table.clone()),
        ("REDTRACK_TIMEOUT_MS", "2000".to_owned()),
        ("REDRIVE_DELAY_S", "0".to_owned()),
        ("DEDUP_TTL_DAYS", FIXTURE_MEMORY_DAYS.to_owned()),
    ];
    let config =
        Config::from_lookup(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap();
    let tracker =
        || Arc::new(RedTrackClient::new(config.redtrack_timeout, RetryPolicy::default()).unwrap());
    let queue: Arc<dyn RedriveQueue> = Arc::new(SqsQueue::new(sqs.clone(), queue_url.clone()));
    let consumer = Consumer {
        redriver: Redriver {
            ledger: dynamo.clone(),
            tracker: tracker(),
            clock: Arc::new(SystemClock),
            ttl_days: config.ttl_days,
            dlq: None,
        },
        sqs,
        queue_url: queue_url.clone(),
        dlq_url: None,
    };
    let bridge = Bridge {
        ledger: Arc::new(CachedLedger::new(dynamo as Arc<dyn Ledger>)),
        tracker: tracker(),
        clock: Arc::new(SystemClock),
        queue: Some(queue),
        shops: None,
        orders: None,
        config,
    };
    World {
        bridge: Arc::new(bridge),
        consumer,
        redtrack,
        queue_url,
    }
}

/// One delivery through the runtime adapter and the real handler: status and answer.
async fn deliver_now(bridge: &Bridge, body: &Value) -> (u16, Value) {
    let payload: lambda_http::request::LambdaRequest = serde_json::from_value(post(body)).unwrap();
    let mut ctx = lambda_http::Context::default();
    ctx.deadline = (SystemClock.now_ms() + INVOCATION.as_millis() as i64) as u64;
    let response = http::handle(
        bridge,
        runtime::into_request(payload).with_lambda_context(ctx),
    )
    .await;
    let text = match response.body() {
        lambda_http::Body::Text(t) => t.clone(),
        _ => String::new(),
    };
    (
        response.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// Delivers each of `which` (starting each `start_ms` after now), concurrently; their answers.
async fn deliver_all(
    w: &World,
    all: &[Delivery],
    which: &[usize],
    spread: bool,
) -> Vec<(u16, Value)> {
    let tasks: Vec<_> = which
        .iter()
        .map(|&i| {
            let bridge = Arc::clone(&w.bridge);
            let body = all[i].body.clone();
            let start = Duration::from_millis(if spread { all[i].start_ms } else { 0 });
            tokio::spawn(async move {
                tokio::time::sleep(start).await;
                deliver_now(&bridge, &body).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// One pass of the redrive consumer over what waits in the queue, deleting what it finished
/// (as Lambda's SQS trigger does). Returns how many messages it handled.
async fn consume(w: &World) -> usize {
    let sqs = &w.consumer.sqs;
    let (messages, event) = receive_as_sqs_event(sqs, &w.queue_url, Some(30)).await;
    let deadline = SystemClock.now_ms() + 30_000;
    let failed: BTreeSet<String> = w
        .consumer
        .handle_batch(event, deadline)
        .await
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    for m in &messages {
        if !failed.contains(m.message_id().unwrap_or("")) {
            sqs.delete_message()
                .queue_url(&w.queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    messages.len()
}

/// How many postbacks RedTrack received, per `rdtk_event_id`.
async fn received_per_event(w: &World) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for r in w.redtrack.received_requests().await.unwrap_or_default() {
        let id = r
            .url
            .query_pairs()
            .find(|(k, _)| k == "rdtk_event_id")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        *per.entry(id).or_insert(0) += 1;
    }
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_on_dynamodb_doubles_nothing_and_loses_nothing() {
    let seed = std::env::var("STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4u64);
    let proxy = FaultProxy::start(&moto_endpoint(), seed).await;
    let w = world(&proxy).await;
    let all = deliveries(&proxy);
    let storm = outages(&proxy);
    let storm_over = Instant::now() + storm.iter().map(|(at, len)| *at + *len).max().unwrap();
    let started = Instant::now();
    proxy.storm(&storm);

    let everyone: Vec<usize> = (0..all.len()).collect();
    let mut answers = deliver_all(&w, &all, &everyone, true).await;
    let first_non_2xx = answers.iter().filter(|(s, _)| *s >= 300).count();
    tokio::time::sleep_until(storm_over.into()).await;

    // Cartpanda redelivers every delivery not answered 2xx; the redrive consumer keeps up.
    let mut redeliveries = 0;
    let mut rounds = 0;
    for _ in 0..ROUNDS {
        while consume(&w).await > 0 {}
        let pending: Vec<usize> = everyone
            .iter()
            .copied()
            .filter(|&i| answers[i].0 >= 300)
            .collect();
        if pending.is_empty() {
            break;
        }
        rounds += 1;
        redeliveries += pending.len();
        for (i, answer) in pending
            .iter()
            .zip(deliver_all(&w, &all, &pending, false).await)
        {
            answers[*i] = answer;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    while consume(&w).await > 0 {}

    // What should have been sent: every conversion any answer named.
    let expected: BTreeSet<String> = answers
        .iter()
        .flat_map(|(_, body)| body["conversions"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["event_id"].as_str().map(str::to_owned))
        .collect();
    let per = received_per_event(&w).await;
    let doubled: Vec<_> = per.iter().filter(|(_, n)| **n > 1).collect();
    let lost: Vec<_> = expected
        .iter()
        .filter(|id| !per.contains_key(*id))
        .collect();
    eprintln!(
        "storm seed {seed}: {} deliveries, outages {storm:?}; {first_non_2xx} answered non-2xx at first, \
         {redeliveries} redeliveries in {rounds} rounds; proxy: {} forwarded, {} answers lost, {} black-holed; \
         {} conversions, {} postbacks; doubled {doubled:?}; lost {lost:?}; took {:?}",
        all.len(),
        proxy.counts.forwarded.load(Ordering::SeqCst),
        proxy.counts.answers_lost.load(Ordering::SeqCst),
        proxy.counts.black_holed.load(Ordering::SeqCst),
        expected.len(),
        per.values().sum::<usize>(),
        started.elapsed(),
    );
    let unanswered: Vec<_> = answers
        .iter()
        .zip(&all)
        .filter(|((status, _), _)| *status >= 300)
        .map(|((status, body), d)| format!("{} → {status} {body}", d.name))
        .collect();
    assert!(unanswered.is_empty(), "still not 2xx: {unanswered:#?}");
    assert_eq!(expected.len(), 60, "the 60 conversions: {expected:?}");
    assert!(
        proxy.counts.answers_lost.load(Ordering::SeqCst)
            + proxy.counts.black_holed.load(Ordering::SeqCst)
            > 0,
        "the storm hit"
    );
    assert!(doubled.is_empty(), "sent twice: {doubled:?}");
    assert!(lost.is_empty(), "never sent: {lost:?}");
    assert_eq!(per.len(), 60, "no other postback: {per:?}");
}
