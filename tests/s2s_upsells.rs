//! The upsells of a shop fed by Cartpanda's S2S postback, through both paths that send them: the
//! S2S route (`GET /cartpanda/s2s`, the real handler) and reconciliation (the reconcile entry
//! point, Cartpanda's order list served by wiremock), against moto. Both name an upsell
//! `<order>-upsell-s2s-p<product_id>`, whichever comes first sends it and the other finds its
//! claim; records written under the IDs of earlier versions (`-s2s-<n>`, `-s2s-dp<product>`) keep
//! their upsell from being sent again.

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use cartpanda_redtrack::conversion::classify::{self, Decision};
use cartpanda_redtrack::conversion::rules::Rules;
use cartpanda_redtrack::inbound::s2s;
use cartpanda_redtrack::inbound::webhook::{Delivery, EventField, Order, OrderField};
use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::postback::redtrack::RedTrackClient;
use cartpanda_redtrack::reconcile::config::ReconcileSettings;
use cartpanda_redtrack::reconcile::run::{RunOptions, Since, Summary};
use cartpanda_redtrack::redrive::consumer::{Disposition, Redriver};
use cartpanda_redtrack::redrive::queue::RedriveMessage;
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CID: &str = "67d42f3b9a1e5c0012ab34cd";

/// One upsell line of the test order: its step label, product and price.
struct Line {
    label: &'static str,
    product: Option<&'static str>,
    name: &'static str,
    price: &'static str,
}

/// Upsell 1 and Downsell 1 (one step), and two upsells of step 2.
const LINES: [Line; 4] = [
    Line {
        label: "Upsell 1",
        product: Some("22264763"),
        name: "Kit 3 meses",
        price: "97.00",
    },
    Line {
        label: "Downsell 1",
        product: Some("22264764"),
        name: "Kit 1 mes",
        price: "47.00",
    },
    Line {
        label: "Upsell 2",
        product: Some("22264765"),
        name: "Garantia estendida",
        price: "19.90",
    },
    Line {
        label: "Upsell 2",
        product: Some("22264766"),
        name: "Frete expresso",
        price: "12.50",
    },
];

/// Now, as Cartpanda writes `created_at` (so no age rule ever takes the order for an old one).
fn created_now() -> String {
    cartpanda_redtrack::inbound::datetime::format_utc(SystemClock.now_ms() / 1000 - 600)
}

/// The order as Cartpanda's order list gives it: a front offer of 100.00 and `lines`.
fn api_order(order_id: u64, lines: &[Line]) -> Value {
    let mut items = vec![
        json!({"id": 90001, "product_id": 22264700, "name": "Colágeno",
                                "price": "100.00", "quantity": 1, "up_sell_id": 0}),
    ];
    let mut total = rust_decimal::Decimal::from(100);
    for (i, line) in lines.iter().enumerate() {
        items.push(
            json!({"id": 90002 + i, "product_id": line.product, "name": line.name,
                          "price": line.price, "quantity": 1, "up_sell_id": 42186 + i,
                          "up_sell_type": line.label}),
        );
        total += line.price.parse::<rust_decimal::Decimal>().unwrap();
    }
    json!({
        "id": order_id, "currency": "BRL", "total_price": total.to_string(), "payment_status": 3,
        "created_at": created_now(), "checkout_params": {"cid": CID},
        "payment": {"currency": "BRL"}, "line_items": items, "refunds": []
    })
}

/// The S2S query Cartpanda fires for `line` (`None`: the front sale), as the paste query asks;
/// `upsell_no` filled with the line's step or left unfilled.
fn s2s_query(order_id: u64, line: Option<&Line>, upsell_no: bool) -> Vec<(&'static str, String)> {
    let mut q = vec![
        ("token", TOKEN.to_owned()),
        ("order_id", order_id.to_string()),
        ("cid", CID.to_owned()),
        ("currency", "BRL".to_owned()),
        (
            "datetime_unix",
            (SystemClock.now_ms() / 1000 - 600).to_string(),
        ),
    ];
    match line {
        None => q.extend([
            ("total_price", "100.00".to_owned()),
            ("product_id", "22264700".to_owned()),
            ("upsell_no", "0".to_owned()),
        ]),
        Some(line) => {
            let (kind, step) = line.label.split_once(' ').unwrap();
            q.extend([
                ("total_price", line.price.to_owned()),
                ("order_type", kind.to_ascii_lowercase()),
                ("product_name", line.name.to_owned()),
            ]);
            let step = if upsell_no { step } else { "{upsell_no}" };
            q.push(("upsell_no", step.to_owned()));
            if let Some(product) = line.product {
                q.push(("product_id", product.to_owned()));
            }
        }
    }
    q
}

/// One S2S postback through the real handler: its conversion's outcome.
async fn s2s(h: &Harness, query: &[(&'static str, String)]) -> String {
    let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let event = apigw_event_at("/cartpanda/s2s", "GET", None, &pairs, &[]);
    let answer = deliver_event(&h.bridge, event).await;
    assert!(
        answer.status < 300 || answer.status == 409,
        "{} {}",
        answer.status,
        answer.body
    );
    answer.body["conversions"][0]["outcome"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A back-fill reconciliation of the default shop, fed by S2S, over `orders`.
async fn reconcile(h: &Harness, orders: Vec<Value>) -> Summary {
    reconcile_with(h, orders, false).await
}

/// [`reconcile`], or its dry run (looks each conversion up, claims and sends nothing).
async fn reconcile_with(h: &Harness, orders: Vec<Value>, dry_run: bool) -> Summary {
    let cartpanda = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/loja-s2s/orders"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"orders": {"data": orders, "current_page": 1, "last_page": 1}}),
            ),
        )
        .mount(&cartpanda)
        .await;
    let vars: HashMap<&str, String> = HashMap::from([
        ("RECONCILE", "true".to_owned()),
        ("RECONCILE_S2S", "true".to_owned()),
        ("CARTPANDA_API_TOKEN", "cp-api-token-for-tests".to_owned()),
        ("CARTPANDA_SHOP_SLUG", "loja-s2s".to_owned()),
        (
            "CARTPANDA_ORDER_LIST_URL",
            format!("{}/api/v3/{{shop_slug}}/orders", cartpanda.uri()),
        ),
        ("CARTPANDA_API_MIN_INTERVAL_MS", "0".to_owned()),
        ("RECONCILE_SETTLE_MIN", "0".to_owned()),
    ]);
    let settings = ReconcileSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let reconciler = reconciler(h, settings);
    let target = cartpanda_redtrack::reconcile::default_target(&reconciler).unwrap();
    assert!(target.s2s, "RECONCILE_S2S reaches the run");
    let now_ms = SystemClock.now_ms();
    let options = RunOptions {
        since: Since::From(now_ms / 1000 - 86_400),
        dry_run,
        deadline_ms: now_ms + 60_000,
    };
    let summary = reconciler.run(&target, options).await;
    assert!(summary.complete, "{summary:?}");
    summary
}

async fn s2s_shop() -> Harness {
    let h = harness().await;
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    h
}

/// How many times RedTrack received each event ID.
async fn sent_counts(h: &Harness) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for p in postbacks(h).await {
        *counts.entry(p["rdtk_event_id"].clone()).or_default() += 1;
    }
    counts
}

fn expected(order_id: u64) -> HashMap<String, usize> {
    let mut ids = vec![format!("{order_id}-purchase")];
    ids.extend(
        LINES
            .iter()
            .map(|l| format!("{order_id}-upsell-s2s-p{}", l.product.unwrap())),
    );
    ids.into_iter().map(|id| (id, 1)).collect()
}

#[tokio::test]
async fn upsells_of_one_step_are_each_sent_once_s2s_first_then_reconciliation() {
    let h = s2s_shop().await;
    let order_id = 7101;
    assert_eq!(s2s(&h, &s2s_query(order_id, None, true)).await, "sent");
    for line in &LINES {
        let outcome = s2s(&h, &s2s_query(order_id, Some(line), true)).await;
        assert_eq!(outcome, "sent", "{}", line.label);
    }
    let summary = reconcile(&h, vec![api_order(order_id, &LINES)]).await;
    assert_eq!((summary.sent, summary.already_sent), (0, 5), "{summary:?}");
    assert_eq!(summary.conflicts, 0, "{summary:?}");
    assert_eq!(sent_counts(&h).await, expected(order_id));
}

#[tokio::test]
async fn upsells_of_one_step_are_each_sent_once_reconciliation_first_then_s2s() {
    let h = s2s_shop().await;
    let order_id = 7102;
    let summary = reconcile(&h, vec![api_order(order_id, &LINES)]).await;
    assert_eq!((summary.sent, summary.already_sent), (5, 0), "{summary:?}");
    assert_eq!(s2s(&h, &s2s_query(order_id, None, true)).await, "duplicate");
    for line in &LINES {
        let outcome = s2s(&h, &s2s_query(order_id, Some(line), true)).await;
        assert_eq!(outcome, "duplicate", "{}", line.label);
    }
    assert_eq!(sent_counts(&h).await, expected(order_id));
}

/// The fingerprint any version records for `line` (click ID, type, sum, currency).
fn fingerprint(line: &Line) -> String {
    let query: HashMap<String, String> = s2s_query(1, Some(line), true)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let delivery = s2s::delivery(&query);
    let classified = classify::classify(&delivery, &Rules::default()).unwrap();
    match &classified.decision {
        Decision::Convert(c) => classify::fingerprint(classified.order.unwrap(), &c[0]),
        Decision::Skip(reason) => panic!("skipped: {reason:?}"),
    }
}

/// A `SENT` record of `line` as versions before issue 20 wrote it, under `key` (their key format,
/// literally).
async fn sent_before_upgrade(h: &Harness, key: &str, order_id: u64, line: &Line) {
    recorded_before_upgrade(h, key, order_id, line, "SENT").await;
}

async fn recorded_before_upgrade(h: &Harness, key: &str, order_id: u64, line: &Line, status: &str) {
    let now_ms = SystemClock.now_ms();
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: i64| AttributeValue::N(v.to_string());
    h.dynamo
        .put_item()
        .table_name(&h.table)
        .item("pk", s(key))
        .item("status", s(status))
        .item("fingerprint", s(&fingerprint(line)))
        .item("attempt", s("18c2f00d1e0-0123456789abcdef"))
        .item("order_id", s(&order_id.to_string()))
        .item("event", s("order.upsell"))
        .item("conversion_type", s("Upsell"))
        .item("claimed_at_ms", n(now_ms - 3_600_000))
        .item("sent_at_ms", n(now_ms - 3_599_000))
        .item("updated_at_ms", n(now_ms - 3_599_000))
        .item("expires_at", n(now_ms / 1000 + 30 * 86_400))
        .item("amount", s(line.price))
        .item("currency", s("BRL"))
        .send()
        .await
        .expect("put a record as today's code writes it");
}

/// What versions before issue 20 recorded for [`LINES`] of `order_id`: Upsell 1 and Downsell 1 by
/// S2S without `upsell_no` (`-s2s-p<product>`, `-s2s-dp<product>`), the first Upsell 2 by
/// reconciliation (`-s2s-<step>`), the second by S2S without `upsell_no`.
async fn upsells_sent_before_upgrade(h: &Harness, order_id: u64) {
    let keys = [
        format!("evt#{order_id}-upsell-s2s-p22264763"),
        format!("evt#{order_id}-upsell-s2s-dp22264764"),
        format!("evt#{order_id}-upsell-s2s-2"),
        format!("evt#{order_id}-upsell-s2s-p22264766"),
    ];
    for (key, line) in keys.iter().zip(&LINES) {
        sent_before_upgrade(h, key, order_id, line).await;
    }
}

/// Each S2S postback of [`LINES`] repeated as it came before the upgrade (with `upsell_no` only
/// for the first Upsell 2, which reconciliation sent): each a duplicate.
async fn repeated_postbacks_are_duplicates(h: &Harness, order_id: u64) {
    for (i, line) in LINES.iter().enumerate() {
        let outcome = s2s(h, &s2s_query(order_id, Some(line), i == 2)).await;
        assert_eq!(outcome, "duplicate", "{}", line.label);
    }
}

#[tokio::test]
async fn an_upgrade_re_sends_nothing_earlier_versions_sent() {
    let h = s2s_shop().await;
    let order_id = 7201;
    assert_eq!(s2s(&h, &s2s_query(order_id, None, true)).await, "sent");
    upsells_sent_before_upgrade(&h, order_id).await;
    // After the upgrade: each S2S postback repeated, then reconciliation over the same order.
    repeated_postbacks_are_duplicates(&h, order_id).await;
    let summary = reconcile(&h, vec![api_order(order_id, &LINES)]).await;
    assert_eq!((summary.sent, summary.already_sent), (0, 5), "{summary:?}");
    assert_eq!(
        sent_counts(&h).await,
        HashMap::from([(format!("{order_id}-purchase"), 1)]),
        "nothing an earlier version sent is sent again"
    );
}

#[tokio::test]
async fn after_an_upgrade_reconciliation_first_re_sends_nothing_either() {
    let h = s2s_shop().await;
    let order_id = 7202;
    upsells_sent_before_upgrade(&h, order_id).await;
    // A dry run first: the upsells recorded under their former IDs count as already sent.
    let dry = reconcile_with(&h, vec![api_order(order_id, &LINES)], true).await;
    assert_eq!((dry.would_send, dry.already_sent), (1, 4), "{dry:?}");
    let summary = reconcile(&h, vec![api_order(order_id, &LINES)]).await;
    assert_eq!((summary.sent, summary.already_sent), (1, 4), "{summary:?}");
    repeated_postbacks_are_duplicates(&h, order_id).await;
    assert_eq!(
        sent_counts(&h).await,
        HashMap::from([(format!("{order_id}-purchase"), 1)]),
        "only the sale no version had sent"
    );
}

#[tokio::test]
async fn an_upsell_queued_before_the_upgrade_is_sent_once_by_the_redrive_consumer() {
    let h = s2s_shop().await;
    let order_id = 7301;
    // RedTrack was down when an earlier version took Upsell 1's S2S postback (`upsell_no` = 1):
    // `QUEUED` under `-s2s-1`, and its message in the redrive queue.
    let key = format!("evt#{order_id}-upsell-s2s-1");
    recorded_before_upgrade(&h, &key, order_id, &LINES[0], "QUEUED").await;
    let message: RedriveMessage = serde_json::from_value(json!({
        "v": 1, "key": key, "event_id": format!("{order_id}-upsell-s2s-1"),
        "fingerprint": fingerprint(&LINES[0]), "order_id": order_id.to_string(),
        "event": "order.upsell", "conversion_type": "Upsell",
        "postback": format!("{}/postback?clickid={CID}&sum=97.00&rdtk_event_id={order_id}-upsell-s2s-1", h.redtrack.uri()),
        "first_failure_ms": SystemClock.now_ms() - 60_000, "amount": "97.00", "currency": "BRL"
    }))
    .unwrap();
    // After the upgrade, the S2S postback repeated and reconciliation leave it to the queue.
    let outcome = s2s(&h, &s2s_query(order_id, Some(&LINES[0]), true)).await;
    assert_eq!(outcome, "in_progress");
    let summary = reconcile(&h, vec![api_order(order_id, &LINES[..1])]).await;
    assert_eq!((summary.sent, summary.in_progress), (1, 1), "{summary:?}");
    let redriver = Redriver {
        ledger: Arc::new(DynamoLedger::new(h.dynamo.clone(), h.table.clone())),
        tracker: Arc::new(
            RedTrackClient::new(
                std::time::Duration::from_millis(1000),
                Options::default().retry,
            )
            .unwrap(),
        ),
        clock: Arc::new(SystemClock),
        ttl_days: 30,
        dlq: None,
    };
    let done = redriver
        .handle(&message, 1, SystemClock.now_ms() + 10_000)
        .await;
    assert_eq!(done, Disposition::Done);
    // Sent: the S2S postback and reconciliation now find it so.
    let outcome = s2s(&h, &s2s_query(order_id, Some(&LINES[0]), true)).await;
    assert_eq!(outcome, "duplicate");
    let summary = reconcile(&h, vec![api_order(order_id, &LINES[..1])]).await;
    assert_eq!((summary.sent, summary.already_sent), (0, 2), "{summary:?}");
    assert_eq!(
        sent_counts(&h).await,
        HashMap::from([
            (format!("{order_id}-purchase"), 1),
            (format!("{order_id}-upsell-s2s-1"), 1)
        ])
    );
}

/// The event IDs one path gives an upsell: the S2S postback's, or reconciliation's for the same
/// line in the listed order.
fn s2s_event_id(line: &Line) -> String {
    let query: HashMap<String, String> = s2s_query(5100, Some(line), true)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    event_ids(&s2s::delivery(&query)).remove(0)
}

fn reconciled_event_ids(lines: &[Line]) -> Vec<String> {
    let mut order: Order = serde_json::from_value(api_order(5100, lines)).unwrap();
    cartpanda_redtrack::reconcile::run::s2s_line_ids(&mut order);
    event_ids(&Delivery {
        event: EventField::Name("order.upsell".to_owned()),
        order: OrderField::Object(Box::new(order)),
    })
}

fn event_ids(delivery: &Delivery) -> Vec<String> {
    match classify::classify(delivery, &Rules::default())
        .unwrap()
        .decision
    {
        Decision::Convert(conversions) => conversions.into_iter().map(|c| c.event_id).collect(),
        Decision::Skip(reason) => panic!("skipped: {reason:?}"),
    }
}

#[test]
fn both_paths_name_each_upsell_alike_and_apart() {
    let without_product = [
        Line {
            label: "Upsell 1",
            product: None,
            name: "Kit 3 meses",
            price: "97.00",
        },
        Line {
            label: "Downsell 1",
            product: None,
            name: "Kit 1 mes",
            price: "47.00",
        },
        Line {
            label: "Upsell 2",
            product: None,
            name: "Kit 3 meses",
            price: "97.00",
        },
    ];
    for lines in [&LINES[..], &without_product[..]] {
        let reconciled = reconciled_event_ids(lines);
        let by_s2s: Vec<String> = lines.iter().map(s2s_event_id).collect();
        assert_eq!(by_s2s, reconciled, "the same IDs on both paths");
        let distinct: std::collections::HashSet<_> = reconciled.iter().collect();
        assert_eq!(
            distinct.len(),
            lines.len(),
            "no two upsells share one: {reconciled:?}"
        );
        for line in lines {
            assert_eq!(
                s2s_event_id(line),
                s2s_event_id(line),
                "a repeat keeps its ID"
            );
        }
    }
    assert_eq!(s2s_event_id(&LINES[0]), "5100-upsell-s2s-p22264763");
    assert_eq!(s2s_event_id(&LINES[1]), "5100-upsell-s2s-p22264764");
}
