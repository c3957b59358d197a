//! `make bench-reconcile` (ignored by `cargo test`): reconciliation at an agency's scale against
//! moto and local stand-ins, figures in docs/performance.md. BENCH_SHOPS named shops (200) with
//! reconciliation on, each listing BENCH_ORDERS paid orders (50) from an in-process stand-in of
//! Cartpanda's order list (wiremock, a real local HTTP server); RedTrack a wiremock accepting
//! every postback. Rounds, each a scheduled run through the reconcile handler
//! ([`fanout::handle_event`]):
//!
//! 1. fan-out, every order missing (every conversion claimed and sent);
//! 2. fan-out, nothing missing (every conversion found recorded);
//! 3. the same with BENCH_GROWTH times (10) more conversion records of other orders in the
//!    table: the DynamoDB requests per listed order must not grow;
//! 4. without the queue (the scheduled invocation runs every shop itself), nothing missing.
//!
//! In the fan-out rounds the consumer takes the queue's messages one per invocation, as the
//! stack's mapping hands them over (one after the other here: the figures are per shop and in
//! all, not the parallel wall time of the stack). `CARTPANDA_API_MIN_INTERVAL_MS` is 0: the pacing
//! is Cartpanda's politeness, not this code's cost (docs/performance.md says what it adds).
//! DynamoDB requests are counted by an interceptor on the clients the reconciler uses, by
//! operation; list requests by the stand-in.

mod common;

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::{AttributeValue as V, PutRequest, WriteRequest};
use cartpanda_redtrack::bridge::Bridge;
use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::ops::config::Config;
use cartpanda_redtrack::postback::redtrack::{RedTrackClient, RetryPolicy};
use cartpanda_redtrack::reconcile::config::ReconcileSettings;
use cartpanda_redtrack::reconcile::fanout::{self, ShopQueue, SqsShopQueue};
use cartpanda_redtrack::reconcile::orders::OrderLister;
use cartpanda_redtrack::reconcile::run::Reconciler;
use cartpanda_redtrack::shops::directory::ShopCache;
use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// DynamoDB requests by operation (`X-Amz-Target`), every attempt counted.
#[derive(Debug, Clone, Default)]
struct Requests(Arc<Mutex<BTreeMap<String, u64>>>);

impl Requests {
    fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Intercept for Requests {
    fn name(&self) -> &'static str {
        "bench-requests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let target = context.request().headers().get("x-amz-target");
        let operation = target.and_then(|t| t.split('.').nth(1)).unwrap_or("?");
        *self
            .0
            .lock()
            .unwrap()
            .entry(operation.to_owned())
            .or_default() += 1;
        Ok(())
    }
}

fn counted_client(requests: &Requests) -> aws_sdk_dynamodb::Client {
    let creds = aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "bench");
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(moto_endpoint())
        .credentials_provider(creds)
        .interceptor(requests.clone())
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// The order list of every shop (its slug is its name), one page each, as bytes ready to serve.
#[derive(Clone, Default)]
struct Lists {
    pages: Arc<HashMap<String, Vec<u8>>>,
    asked: Arc<AtomicU64>,
}

impl wiremock::Respond for Lists {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let slug = request.url.path().split('/').nth(3).unwrap_or("");
        match self.pages.get(slug) {
            Some(page) => ResponseTemplate::new(200).set_body_raw(page.clone(), "application/json"),
            None => ResponseTemplate::new(404),
        }
    }
}

fn shop_name(i: u64) -> String {
    format!("loja-{i:04}")
}

fn lists(shops: u64, orders: u64) -> Lists {
    let created = SystemClock.now_ms() / 1000 - 3600;
    let created = cartpanda_redtrack::inbound::datetime::format_utc(created);
    let template = paid_order(0)["order"].clone();
    let mut pages = HashMap::new();
    for shop in 0..shops {
        let data: Vec<Value> = (0..orders)
            .map(|o| {
                let mut order = template.clone();
                order["id"] = json!(10_000_000 + shop * 10_000 + o);
                order["created_at"] = json!(created);
                order["payment_status"] = json!(3);
                order
            })
            .collect();
        let page = json!({"orders": {"data": data, "current_page": 1, "last_page": 1}});
        pages.insert(shop_name(shop), serde_json::to_vec(&page).unwrap());
    }
    Lists {
        pages: Arc::new(pages),
        asked: Arc::default(),
    }
}

struct Bench {
    h: Harness,
    lists: Lists,
    _cartpanda: MockServer,
    reconciler: Arc<Reconciler>,
    requests: Requests,
    queue_url: String,
    queue: Arc<dyn ShopQueue>,
    listed_per_round: u64,
}

async fn bench(shops: u64, orders: u64) -> Bench {
    let h = harness().await;
    redtrack_accepts(&h).await;
    let cartpanda = MockServer::start().await;
    let lists = lists(shops, orders);
    Mock::given(wiremock::matchers::method("GET"))
        .respond_with(lists.clone())
        .mount(&cartpanda)
        .await;
    for shop in 0..shops {
        put_shop(&h, &shop_name(shop)).await;
    }
    let requests = Requests::default();
    let reconciler = Arc::new(reconciler_of(&h, &cartpanda, &requests));
    let queue_url = create_queue(&h.sqs, "reconcile-bench").await;
    let queue = Arc::new(SqsShopQueue {
        client: h.sqs.clone(),
        url: queue_url.clone(),
    });
    Bench {
        h,
        lists,
        _cartpanda: cartpanda,
        reconciler,
        requests,
        queue_url,
        queue,
        listed_per_round: shops * orders,
    }
}

async fn put_shop(h: &Harness, name: &str) {
    let record = reconciled_shop(name, true, format!("{}{TEMPLATE_PATH}", h.redtrack.uri()));
    let table = DynamoLedger::new(h.dynamo.clone(), h.table.clone());
    table.put_shop(&record, 0).await.unwrap();
}

/// The reconciler as the function builds it, its DynamoDB clients counted.
fn reconciler_of(h: &Harness, cartpanda: &MockServer, requests: &Requests) -> Reconciler {
    let list_url = format!("{}/api/v3/{{shop_slug}}/orders", cartpanda.uri());
    let vars: HashMap<&str, String> = HashMap::from([
        (
            "REDTRACK_POSTBACK_URL",
            format!("{}{TEMPLATE_PATH}", h.redtrack.uri()),
        ),
        ("WEBHOOK_TOKEN", TOKEN.to_owned()),
        ("DEDUP_TABLE", h.table.clone()),
        ("DEDUP_TTL_DAYS", FIXTURE_MEMORY_DAYS.to_owned()),
        ("CARTPANDA_ORDER_LIST_URL", list_url),
        ("CARTPANDA_API_MIN_INTERVAL_MS", "0".to_owned()),
    ]);
    let lookup = |k: &str| vars.get(k).cloned();
    let config = Config::from_lookup(lookup).unwrap();
    let settings = ReconcileSettings::from_lookup(lookup).unwrap();
    let table = DynamoLedger::new(counted_client(requests), h.table.clone());
    let ledger = Arc::new(table.clone());
    let bridge = Bridge {
        tracker: Arc::new(
            RedTrackClient::new(config.redtrack_timeout, RetryPolicy::default()).unwrap(),
        ),
        config,
        ledger: ledger.clone(),
        clock: Arc::new(SystemClock),
        queue: None,
        shops: Some(ShopCache::new(ledger)),
        orders: None,
    };
    Reconciler {
        bridge: Arc::new(bridge),
        lister: Arc::new(OrderLister::new(settings.list.clone()).unwrap()),
        table,
        settings,
    }
}

/// What one round cost.
#[derive(Debug)]
struct Round {
    name: &'static str,
    wall: Duration,
    schedule: Duration,
    invocations: u64,
    list_requests: u64,
    sent: usize,
    dynamo: BTreeMap<String, u64>,
}

impl Round {
    fn print(&self, listed: u64) {
        let total: u64 = self.dynamo.values().sum();
        println!(
            "{:<44} wall {:>7.1} s (schedule's invocation {:>6.3} s), {} shop invocations, {} list requests, {} postbacks, DynamoDB {} requests = {:.3} per listed order {:?}",
            self.name,
            self.wall.as_secs_f64(),
            self.schedule.as_secs_f64(),
            self.invocations,
            self.list_requests,
            self.sent,
            total,
            total as f64 / listed as f64,
            self.dynamo
        );
    }
}

/// The schedule's invocation, then (with the queue) every message handed to the handler one
/// per invocation, as the stack's mapping does.
async fn round(b: &Bench, name: &'static str, with_queue: bool) -> Round {
    let asked_before = b.lists.asked.load(Ordering::Relaxed);
    let sent_before = postbacks(&b.h).await.len();
    b.requests.take();
    let started = Instant::now();
    let queue = with_queue.then(|| Arc::clone(&b.queue));
    let deadline_ms = SystemClock.now_ms() + 3_600_000;
    let schedule = json!({"source": "aws.scheduler", "detail": {}});
    fanout::handle_event(&b.reconciler, queue.clone(), schedule, deadline_ms)
        .await
        .unwrap();
    let schedule = started.elapsed();
    let invocations = match queue {
        Some(queue) => drain(b, queue, name).await,
        None => 0,
    };
    Round {
        name,
        wall: started.elapsed(),
        schedule,
        invocations,
        list_requests: b.lists.asked.load(Ordering::Relaxed) - asked_before,
        sent: postbacks(&b.h).await.len() - sent_before,
        dynamo: b.requests.take(),
    }
}

/// Every queued message handed to the handler one per invocation, as the stack's mapping does,
/// each deleted once answered; how many invocations.
async fn drain(b: &Bench, queue: Arc<dyn ShopQueue>, name: &str) -> u64 {
    let mut invocations = 0;
    loop {
        let (messages, event) = receive_as_sqs_event(&b.h.sqs, &b.queue_url, Some(600)).await;
        if messages.is_empty() {
            break;
        }
        for (m, record) in messages.iter().zip(event.records) {
            let one = json!({ "Records": [record] });
            let deadline_ms = SystemClock.now_ms() + 300_000;
            let answer =
                fanout::handle_event(&b.reconciler, Some(Arc::clone(&queue)), one, deadline_ms)
                    .await
                    .unwrap();
            assert_eq!(answer["batchItemFailures"], json!([]), "{name}");
            invocations += 1;
            let receipt = m.receipt_handle().unwrap();
            let delete = b.h.sqs.delete_message().queue_url(&b.queue_url);
            delete.receipt_handle(receipt).send().await.unwrap();
        }
    }
    invocations
}

/// `times` × the listed orders' worth of conversion records of other orders, written as the
/// ledger writes a sent one (25 per BatchWriteItem, not counted).
async fn grow_table(b: &Bench, times: u64) {
    let started = Instant::now();
    let total = b.listed_per_round * times;
    let now_ms = SystemClock.now_ms();
    for chunk in (0..total).collect::<Vec<_>>().chunks(25) {
        let writes = chunk.iter().map(|i| {
            let item = HashMap::from([
                (
                    "pk".to_owned(),
                    V::S(format!("evt#{}-purchase", 90_000_000 + i)),
                ),
                ("status".to_owned(), V::S("SENT".to_owned())),
                ("fingerprint".to_owned(), V::S(format!("{:032x}", i))),
                ("order_id".to_owned(), V::S((90_000_000 + i).to_string())),
                ("event".to_owned(), V::S("order.paid".to_owned())),
                ("conversion_type".to_owned(), V::S("Purchase".to_owned())),
                ("sent_at_ms".to_owned(), V::N(now_ms.to_string())),
                (
                    "expires_at".to_owned(),
                    V::N((now_ms / 1000 + 86_400 * 30).to_string()),
                ),
            ]);
            let put = PutRequest::builder().set_item(Some(item)).build().unwrap();
            WriteRequest::builder().put_request(put).build()
        });
        let batch = b.h.dynamo.batch_write_item();
        let out = batch
            .request_items(&b.h.table, writes.collect())
            .send()
            .await
            .unwrap();
        assert!(out.unprocessed_items().is_none_or(|u| u.is_empty()));
    }
    println!(
        "table grown by {total} conversion records ({times}x the listed orders) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a bench: make bench-reconcile"]
async fn two_hundred_shops_of_fifty_orders() {
    let (shops, orders) = (knob("BENCH_SHOPS", 200), knob("BENCH_ORDERS", 50));
    let growth = knob("BENCH_GROWTH", 10);
    let b = bench(shops, orders).await;
    println!(
        "reconcile bench: {shops} shops x {orders} orders = {} listed orders a round",
        b.listed_per_round
    );
    let first = round(&b, "1. fan-out, every order missing", true).await;
    first.print(b.listed_per_round);
    assert_eq!(
        first.sent as u64, b.listed_per_round,
        "every missing conversion sent"
    );
    let steady = round(&b, "2. fan-out, nothing missing", true).await;
    steady.print(b.listed_per_round);
    assert_eq!(steady.sent, 0);
    grow_table(&b, growth).await;
    let grown = round(&b, "3. fan-out, nothing missing, table grown", true).await;
    grown.print(b.listed_per_round);
    assert_eq!(grown.sent, 0);
    let direct = round(&b, "4. no queue, nothing missing, table grown", false).await;
    direct.print(b.listed_per_round);
    for r in [&first, &steady, &grown] {
        assert_eq!(r.invocations, shops, "{}: one invocation per shop", r.name);
        assert_eq!(r.list_requests, shops, "{}: one page per shop", r.name);
    }
    let per_order = |r: &Round| r.dynamo.values().sum::<u64>() as f64 / b.listed_per_round as f64;
    println!(
        "growth: DynamoDB requests per listed order {:.3} -> {:.3} with {growth}x the records ({:+.1} %)",
        per_order(&steady),
        per_order(&grown),
        (per_order(&grown) / per_order(&steady) - 1.0) * 100.0
    );
}
