//! Reconciliation fanned out over a queue (`RECONCILE_QUEUE_URL`), through the reconcile
//! function's handler: the schedule's invocation queues one message per due shop in moto's SQS,
//! and the same handler, fed the SQS event Lambda's poller would build from those messages,
//! reconciles one shop per message against a wiremock Cartpanda (one order list per shop slug) and
//! a wiremock RedTrack.

mod common;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::reconcile::config::ReconcileSettings;
use cartpanda_redtrack::reconcile::fanout::{self, Answer, ShopMessage, ShopQueue, SqsShopQueue};
use cartpanda_redtrack::reconcile::run::Reconciler;
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wiremock::{Mock, MockServer, ResponseTemplate};

const DEFAULT_SLUG: &str = "loja-padrao";

/// Cartpanda's order list per shop slug: the orders it lists, or a status it answers with,
/// after an optional delay; every request is counted by slug.
#[derive(Clone, Default)]
struct Lists {
    orders: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    status: Arc<Mutex<HashMap<String, u16>>>,
    delay: Arc<Mutex<HashMap<String, Duration>>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Lists {
    fn add(&self, slug: &str, order_id: u64) {
        let mut order = upsell_order(order_id, false)["order"].clone();
        let created = SystemClock.now_ms() / 1000 - 3600;
        order["created_at"] = json!(cartpanda_redtrack::inbound::datetime::format_utc(created));
        order["payment_status"] = json!(3);
        let mut orders = self.orders.lock().unwrap();
        orders.entry(slug.to_owned()).or_default().push(order);
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl wiremock::Respond for Lists {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let slug = request
            .url
            .path()
            .split('/')
            .nth(3)
            .unwrap_or("")
            .to_owned();
        self.asked.lock().unwrap().push(slug.clone());
        let delay = self.delay.lock().unwrap().get(&slug).copied();
        let answer = match self.status.lock().unwrap().get(&slug) {
            Some(status) => ResponseTemplate::new(*status),
            None => {
                let orders = self.orders.lock().unwrap().get(&slug).cloned();
                ResponseTemplate::new(200).set_body_json(json!({"orders": {
                    "data": orders.unwrap_or_default(), "current_page": 1, "last_page": 1
                }}))
            }
        };
        answer.set_delay(delay.unwrap_or_default())
    }
}

struct Setup {
    h: Harness,
    lists: Lists,
    _cartpanda: MockServer,
    reconciler: Arc<Reconciler>,
    queue_url: String,
    queue: Arc<dyn ShopQueue>,
}

async fn setup() -> Setup {
    let h = harness().await;
    redtrack_accepts(&h).await;
    let cartpanda = MockServer::start().await;
    let lists = Lists::default();
    Mock::given(wiremock::matchers::method("GET"))
        .respond_with(lists.clone())
        .mount(&cartpanda)
        .await;
    let list_url = format!("{}/api/v3/{{shop_slug}}/orders", cartpanda.uri());
    let vars: HashMap<&str, String> = HashMap::from([
        ("RECONCILE", "true".to_owned()),
        ("CARTPANDA_API_TOKEN", "cp-default-token".to_owned()),
        ("CARTPANDA_SHOP_SLUG", DEFAULT_SLUG.to_owned()),
        ("CARTPANDA_ORDER_LIST_URL", list_url),
        ("CARTPANDA_API_MIN_INTERVAL_MS", "0".to_owned()),
        ("RECONCILE_SETTLE_MIN", "0".to_owned()),
    ]);
    let mut settings = ReconcileSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    settings.margin = Duration::from_millis(300);
    // One retry (after 1 s): a request cut by the run's stop is then the deadline, not a failure.
    settings.list.max_attempts = 2;
    let reconciler = Arc::new(reconciler(&h, settings));
    let queue_url = create_queue(&h.sqs, "reconcile").await;
    let queue = Arc::new(SqsShopQueue {
        client: h.sqs.clone(),
        url: queue_url.clone(),
    });
    Setup {
        h,
        lists,
        _cartpanda: cartpanda,
        reconciler,
        queue_url,
        queue,
    }
}

/// A named shop with reconciliation on (or off) whose Cartpanda slug is its name.
async fn put_shop(s: &Setup, name: &str, reconcile: bool) {
    let postback_url = format!("{}{TEMPLATE_PATH}", s.h.redtrack.uri());
    let record = reconciled_shop(name, reconcile, postback_url);
    s.reconciler.table.put_shop(&record, 0).await.unwrap();
}

/// EventBridge Scheduler's event, as the reconcile function receives it.
fn schedule_event() -> Value {
    json!({"version": "0", "source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": {}})
}

/// The schedule's invocation of the reconcile handler, with the queue or without.
async fn scheduled(s: &Setup, queue: bool) -> Value {
    let queue = queue.then(|| Arc::clone(&s.queue));
    let deadline_ms = SystemClock.now_ms() + 60_000;
    fanout::handle_event(&s.reconciler, queue, schedule_event(), deadline_ms)
        .await
        .unwrap()
}

/// The reconcile handler fed an SQS batch: the IDs of the messages it reported failed.
async fn handle_batch(s: &Setup, event: SqsEvent, deadline_ms: i64) -> Vec<String> {
    let event = serde_json::to_value(event).unwrap();
    let queue = Some(Arc::clone(&s.queue));
    let answer = fanout::handle_event(&s.reconciler, queue, event, deadline_ms)
        .await
        .unwrap();
    let response: SqsBatchResponse = serde_json::from_value(answer).unwrap();
    response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect()
}

/// The queued messages (received as Lambda's poller would), handed to the consumer with
/// `budget_ms` to go: the shops they named, and the message IDs reported failed.
async fn consume(s: &Setup, budget_ms: i64) -> (Vec<Option<String>>, Vec<String>) {
    let (messages, event) = receive_as_sqs_event(&s.h.sqs, &s.queue_url, Some(60)).await;
    let mut shops: Vec<Option<String>> = messages
        .iter()
        .map(
            |m| match serde_json::from_str::<ShopMessage>(m.body().unwrap()) {
                Ok(message) => message.shop,
                Err(_) => Some("(unreadable)".to_owned()),
            },
        )
        .collect();
    shops.sort();
    let deadline_ms = SystemClock.now_ms() + budget_ms;
    let failed = handle_batch(s, event, deadline_ms).await;
    for m in &messages {
        if !failed.iter().any(|f| Some(f.as_str()) == m.message_id()) {
            // What the event source mapping does with a message not reported failed.
            s.h.sqs
                .delete_message()
                .queue_url(&s.queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    (shops, failed)
}

async fn sent_ids(s: &Setup) -> Vec<String> {
    sent_event_ids(&s.h).await
}

#[tokio::test]
async fn the_scheduled_run_queues_each_shop_and_the_consumer_sends_its_missing_orders_once() {
    let s = setup().await;
    put_shop(&s, "loja-um", true).await;
    put_shop(&s, "loja-desligada", false).await;
    s.lists.add(DEFAULT_SLUG, 501);
    s.lists.add("loja-um", 601);
    s.lists.add("loja-desligada", 701);

    let answer = scheduled(&s, true).await;
    assert_eq!(answer, json!({"queued": 2, "failed": []}));
    assert!(
        s.lists.asked().is_empty(),
        "the scheduled run lists nothing"
    );
    assert!(postbacks(&s.h).await.is_empty(), "and sends nothing");

    let (shops, failed) = consume(&s, 60_000).await;
    assert_eq!(
        shops,
        [None, Some("loja-um".to_owned())],
        "one message per due shop"
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        sent_ids(&s).await,
        [
            "501-purchase",
            "501-upsell-90002",
            "601-purchase",
            "601-upsell-90002"
        ]
    );

    // The next schedule queues both again; their runs find everything sent.
    assert_eq!(scheduled(&s, true).await["queued"], 2);
    let (shops, failed) = consume(&s, 60_000).await;
    assert_eq!((shops.len(), failed.len()), (2, 0));
    assert_eq!(postbacks(&s.h).await.len(), 4, "nothing sent twice");
    assert!(!s.lists.asked().contains(&"loja-desligada".to_owned()));
}

#[tokio::test]
async fn without_the_queue_the_scheduled_run_reconciles_every_shop_itself() {
    let s = setup().await;
    put_shop(&s, "loja-um", true).await;
    s.lists.add(DEFAULT_SLUG, 502);
    s.lists.add("loja-um", 602);
    let answer = scheduled(&s, false).await;
    assert_eq!(answer["shops"].as_array().unwrap().len(), 2, "{answer}");
    assert_eq!(answer["failed"], json!([]));
    assert_eq!(sent_ids(&s).await.len(), 4);
    assert!(
        peek(&s.h.sqs, &s.queue_url).await.is_empty(),
        "nothing queued"
    );
}

#[tokio::test]
async fn a_shop_failing_for_a_while_is_retried_a_refused_one_is_not_and_neither_holds_up_another() {
    let s = setup().await;
    for name in ["loja-fora", "loja-recusada", "loja-um"] {
        put_shop(&s, name, true).await;
    }
    s.lists.add("loja-um", 603);
    s.lists.add(DEFAULT_SLUG, 503);
    s.lists
        .status
        .lock()
        .unwrap()
        .insert("loja-fora".into(), 503);
    s.lists
        .status
        .lock()
        .unwrap()
        .insert("loja-recusada".into(), 401);
    assert_eq!(scheduled(&s, true).await["queued"], 4);

    let (messages, event) = receive_as_sqs_event(&s.h.sqs, &s.queue_url, Some(60)).await;
    assert_eq!(messages.len(), 4);
    let deadline_ms = SystemClock.now_ms() + 60_000;
    let failed: Vec<Option<String>> = handle_batch(&s, event, deadline_ms)
        .await
        .iter()
        .map(|f| {
            let m = messages
                .iter()
                .find(|m| m.message_id() == Some(f.as_str()))
                .unwrap();
            serde_json::from_str::<ShopMessage>(m.body().unwrap())
                .unwrap()
                .shop
        })
        .collect();
    assert_eq!(
        failed,
        [Some("loja-fora".to_owned())],
        "only the shop whose API was unavailable is retried (401 needs the operator)"
    );
    assert_eq!(
        sent_ids(&s).await,
        [
            "503-purchase",
            "503-upsell-90002",
            "603-purchase",
            "603-upsell-90002"
        ],
        "the healthy shops were reconciled in the same batch"
    );
}

#[tokio::test]
async fn a_shop_cut_short_by_its_deadline_is_queued_again_and_goes_on() {
    let s = setup().await;
    s.lists.add(DEFAULT_SLUG, 504);
    let slow = Duration::from_millis(2_000);
    s.lists
        .delay
        .lock()
        .unwrap()
        .insert(DEFAULT_SLUG.into(), slow);
    assert_eq!(scheduled(&s, true).await["queued"], 1);

    let (shops, failed) = consume(&s, 1_000).await;
    assert_eq!((shops, failed), (vec![None], Vec::<String>::new()));
    assert!(postbacks(&s.h).await.is_empty());
    let again = peek(&s.h.sqs, &s.queue_url).await;
    assert_eq!(again.len(), 1, "the shop is queued again to go on");

    s.lists.delay.lock().unwrap().clear();
    let (shops, failed) = consume(&s, 60_000).await;
    assert_eq!((shops.len(), failed.len()), (1, 0));
    assert_eq!(sent_ids(&s).await, ["504-purchase", "504-upsell-90002"]);
    assert!(peek(&s.h.sqs, &s.queue_url).await.is_empty());
}

#[tokio::test]
async fn an_unreadable_message_is_retried_then_left_to_the_dlq_and_a_removed_shop_is_done() {
    let s = setup().await;
    s.h.sqs
        .send_message()
        .queue_url(&s.queue_url)
        .message_body("{\"shop\": 7}")
        .send()
        .await
        .unwrap();
    let gone = ShopMessage {
        v: fanout::MESSAGE_VERSION,
        shop: Some("loja-apagada".to_owned()),
        queued_at_ms: 0,
    };
    assert!(s.queue.enqueue(&[gone]).await.is_empty());
    let (shops, failed) = consume(&s, 60_000).await;
    assert_eq!(
        shops,
        [
            Some("(unreadable)".to_owned()),
            Some("loja-apagada".to_owned())
        ]
    );
    assert_eq!(failed.len(), 1, "the unreadable one");
    assert!(s.lists.asked().is_empty());
}

#[tokio::test]
async fn a_queue_that_refuses_leaves_the_shops_failed_by_name() {
    let s = setup().await;
    put_shop(&s, "loja-um", true).await;
    // (Straight to the schedule's function: the handler takes its queue from the environment.)
    let nowhere = SqsShopQueue {
        client: s.h.sqs.clone(),
        url: format!("{}-gone", s.queue_url),
    };
    let deadline_ms = SystemClock.now_ms() + 60_000;
    let answer = fanout::scheduled(&s.reconciler, Some(&nowhere), deadline_ms)
        .await
        .unwrap();
    match answer {
        Answer::Queued(fanned) => {
            assert_eq!(fanned.queued, 0);
            assert_eq!(fanned.failed, ["(default)", "loja-um"]);
        }
        Answer::Ran(_) => panic!("queued, not run"),
    }
}

#[tokio::test]
async fn two_messages_of_one_shop_at_once_run_it_once_and_the_busy_one_is_done() {
    let s = setup().await;
    put_shop(&s, "loja-um", true).await;
    s.lists.add("loja-um", 605);
    let slow = Duration::from_millis(1_500);
    for slug in [DEFAULT_SLUG, "loja-um"] {
        s.lists.delay.lock().unwrap().insert(slug.into(), slow);
    }
    // Runs list only their own windows (no daily coverage pass of yesterday).
    coverage_measured_yesterday(&s.h, None).await;
    coverage_measured_yesterday(&s.h, Some("loja-um")).await;
    // Two schedules' messages for each shop (the second queued before the first is taken).
    assert_eq!(scheduled(&s, true).await["queued"], 2);
    assert_eq!(scheduled(&s, true).await["queued"], 2);
    let (messages, event) = receive_as_sqs_event(&s.h.sqs, &s.queue_url, Some(60)).await;
    assert_eq!(messages.len(), 4);
    // Two invocations at once, each with one message of each shop, in the same order.
    let mut records = event.records;
    records.sort_by_key(|r| r.body.clone());
    let (mut first, mut second) = (SqsEvent::default(), SqsEvent::default());
    for (i, record) in records.into_iter().enumerate() {
        match i % 2 {
            0 => first.records.push(record),
            _ => second.records.push(record),
        }
    }
    let deadline_ms = SystemClock.now_ms() + 60_000;
    let (a, b) = tokio::join!(
        handle_batch(&s, first, deadline_ms),
        handle_batch(&s, second, deadline_ms)
    );
    assert!(a.is_empty() && b.is_empty(), "{a:?} {b:?}: neither retried");
    // Both start with the same shop (sorted by body); the busy one is done at once and goes on
    // to the next shop while the other still lists the first.
    let asked = s.lists.asked();
    let first_shop = asked.first().cloned().unwrap();
    let runs = asked.iter().filter(|a| **a == first_shop).count();
    assert_eq!(
        runs, 1,
        "{asked:?}: the shop both took at once listed by one run"
    );
    assert_eq!(sent_ids(&s).await, ["605-purchase", "605-upsell-90002"]);
    assert!(
        peek(&s.h.sqs, &s.queue_url).await.is_empty(),
        "nothing queued again"
    );
}
