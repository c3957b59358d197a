//! Coverage per shop and day, end to end: a day of webhooks through the real handler (moto as
//! the ledger, wiremock as RedTrack), then the scheduled reconcile run the next morning against a
//! stand-in of Cartpanda's order list that holds the day's truth; the measured day, the stored
//! figures and the report, a shop without reconciliation "not measured".

mod common;

use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::admin;
use cartpanda_redtrack::ops::clock::{Clock, FixedClock};
use cartpanda_redtrack::reconcile::config::ReconcileSettings;
use cartpanda_redtrack::report::{self, Format};
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_TOKEN: &str = "cp-api-token-for-coverage";
const SLUG: &str = "vitalidade-natural";
const LIST_PATH: &str = "/api/v3/vitalidade-natural/orders";
/// 2026-11-19 00:00:00 UTC, the day measured.
const DAY_MS: i64 = 1_795_046_400_000;
const HOUR_MS: i64 = 3_600_000;

fn utc(ms: i64) -> String {
    cartpanda_redtrack::inbound::datetime::format_utc(ms / 1000)
}

/// Cartpanda's order list as its API answers it: created in the query's window, paid; the
/// orders of `twice` on a second page as well (a list that shifted while it was read).
#[derive(Clone, Default)]
struct OrderList {
    orders: Arc<std::sync::Mutex<Vec<Value>>>,
    twice: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl OrderList {
    fn add(&self, order: Value) {
        self.orders.lock().unwrap().push(order);
    }
}

impl wiremock::Respond for OrderList {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let q: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
        let at = |k: &str| cartpanda_redtrack::inbound::datetime::parse_unix(q.get(k)?);
        let (min, max) = (at("created_at_min"), at("created_at_max"));
        let listed: Vec<Value> = self
            .orders
            .lock()
            .unwrap()
            .iter()
            .filter(|o| {
                let t = cartpanda_redtrack::inbound::datetime::parse_unix(
                    o["created_at"].as_str().unwrap(),
                )
                .unwrap();
                min.is_none_or(|m| t >= m)
                    && max.is_none_or(|m| t <= m)
                    && o["payment_status"] == json!(3)
            })
            .cloned()
            .collect();
        let twice = self.twice.lock().unwrap().clone();
        let page = match q.get("page").map(String::as_str) {
            Some("2") => listed
                .into_iter()
                .filter(|o| twice.iter().any(|id| o["id"] == json!(id)))
                .collect(),
            _ => listed,
        };
        ResponseTemplate::new(200).set_body_json(json!({"orders": {
            "data": page, "current_page": 1, "last_page": 2, "per_page": 100
        }}))
    }
}

/// What RedTrack answers, by event ID (200 unless set).
#[derive(Clone, Default)]
struct RedTrack(Arc<std::sync::Mutex<HashMap<String, u16>>>);

impl wiremock::Respond for RedTrack {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let id = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "rdtk_event_id")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        ResponseTemplate::new(self.0.lock().unwrap().get(&id).copied().unwrap_or(200))
    }
}

struct Setup {
    h: Harness,
    clock: Arc<FixedClock>,
    list: OrderList,
    redtrack: RedTrack,
    reconciler: cartpanda_redtrack::reconcile::run::Reconciler,
    /// Cartpanda's API, serving until the test ends.
    _cartpanda: MockServer,
}

async fn setup() -> Setup {
    let clock = Arc::new(FixedClock::at(DAY_MS + 9 * HOUR_MS));
    let h = harness_with(Options {
        clock: clock.clone(),
        with_queue: true,
        ..Options::default()
    })
    .await;
    let redtrack = RedTrack::default();
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(redtrack.clone())
        .mount(&h.redtrack)
        .await;
    let cartpanda = MockServer::start().await;
    let list = OrderList::default();
    Mock::given(method("GET"))
        .and(path(LIST_PATH))
        .and(header(
            "authorization",
            format!("Bearer {API_TOKEN}").as_str(),
        ))
        .respond_with(list.clone())
        .mount(&cartpanda)
        .await;
    let vars: HashMap<&str, String> = HashMap::from([
        ("RECONCILE", "true".to_owned()),
        ("CARTPANDA_API_TOKEN", API_TOKEN.to_owned()),
        ("CARTPANDA_SHOP_SLUG", SLUG.to_owned()),
        (
            "CARTPANDA_ORDER_LIST_URL",
            format!("{}/api/v3/{{shop_slug}}/orders", cartpanda.uri()),
        ),
        ("CARTPANDA_API_MIN_INTERVAL_MS", "10".to_owned()),
        ("RECONCILE_SETTLE_MIN", "0".to_owned()),
    ]);
    let mut settings = ReconcileSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    settings.margin = Duration::from_millis(300);
    let reconciler = reconciler(&h, settings);
    Setup {
        h,
        clock,
        list,
        redtrack,
        reconciler,
        _cartpanda: cartpanda,
    }
}

/// An order of the default shop created at `at_ms`, paid, as webhook and list carry it.
fn order(id: u64, at_ms: i64) -> Value {
    let mut body = paid_order(id);
    body["order"]["created_at"] = json!(utc(at_ms));
    body["order"]["payment_status"] = json!(3);
    body
}

/// A shop without reconciliation, with its own token and RedTrack.
async fn put_unreconciled_shop(h: &Harness, name: &str, token: &str) {
    let postback = format!(
        "{}/postback?clickid={{cid}}&sum={{total_price}}",
        h.redtrack.uri()
    );
    let args: Vec<String> = [
        "store",
        "put",
        name,
        "--token",
        token,
        "--postback-url",
        &postback,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let record = admin::shop_record(&args).expect("valid store");
    DynamoLedger::new(dynamo_client(&moto_endpoint()), h.table.clone())
        .put_shop(&record, 0)
        .await
        .unwrap();
}

/// The scheduled run as the reconcile function makes it, as JSON.
async fn scheduled(s: &Setup) -> Value {
    let deadline_ms = s.clock.now_ms() + 60_000;
    let answer = cartpanda_redtrack::reconcile::run_scheduled(&s.reconciler, deadline_ms)
        .await
        .unwrap();
    serde_json::to_value(answer).unwrap()
}

/// The default shop's watermark as a complete run 15 minutes ago leaves it (its lookback pass
/// done an hour ago), so the morning run lists only its last minutes.
async fn seed_watermark(s: &Setup) {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let now_s = s.clock.now_ms() / 1000;
    s.h.dynamo
        .put_item()
        .table_name(&s.h.table)
        .item("pk", V::S("watermark#default".into()))
        .item("kind", V::S("watermark".into()))
        .item("watermark_s", V::N((now_s - 900).to_string()))
        .item("lookback_s", V::N((now_s - 3600).to_string()))
        // The shop's listed times showed UTC on earlier runs: the run's window is not widened
        // (a widened one would list, and send, the day's last order before coverage counts it).
        .item("list_timezone", V::S("UTC".into()))
        .item("shop_timezone", V::S("UTC".into()))
        .send()
        .await
        .unwrap();
}

/// A day of the default shop: each kind of order the coverage pass tells apart, its webhook (if
/// any) delivered during the day; the shop without reconciliation sells once. Returns the
/// truth: (covered, of which noted, uncovered order IDs).
async fn a_mixed_day(s: &Setup) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let t = |h: i64| DAY_MS + h * HOUR_MS;
    let rt = |id: &str, status: u16| s.redtrack.0.lock().unwrap().insert(id.into(), status);
    rt("1002-purchase", 503);
    rt("1006-purchase", 400);
    let mut test = order(1003, t(11));
    test["order"]["test"] = json!(1);
    let mut no_click_id = order(1004, t(12));
    no_click_id["order"]["checkout_params"] = json!({"utm_source": "facebook"});
    let mut refused = order(1005, t(13));
    refused["order"]["total_price"] = json!("1.500");
    refused["order"]["line_items"][0]["price"] = json!(15);
    refused["order"]["payment"] = json!({"currency": "BRL"});
    let delivered = [
        (order(1001, t(9)), 200),   // sent
        (order(1002, t(10)), 202),  // RedTrack down: queued
        (test.clone(), 200),        // a test order: noted
        (no_click_id.clone(), 200), // no click ID: noted
        (refused.clone(), 422),     // refused with 422: noted
        (order(1006, t(14)), 502),  // RedTrack refused it (400): failed, not covered
    ];
    for (body, status) in &delivered {
        let at = cartpanda_redtrack::inbound::datetime::parse_unix(
            body["order"]["created_at"].as_str().unwrap(),
        )
        .unwrap();
        s.clock
            .0
            .store(at * 1000 + 60_000, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            deliver(&s.h, body).await.status,
            *status,
            "{}",
            body["order"]["id"]
        );
    }
    // The list holds the day's paid orders as they are now (the refused one readable, the test
    // and the one without a click ID as they were), 1007 whose webhook never came, and orders
    // of the days around it.
    for (body, status) in &delivered {
        if *status != 422 {
            s.list.add(body["order"].clone());
        }
    }
    s.list.add(order(1005, t(13))["order"].clone());
    s.list
        .add(order(1007, t(23) + 59 * 60_000)["order"].clone());
    s.list.add(order(1008, t(-1))["order"].clone());
    s.list.add(order(1009, t(25))["order"].clone());
    s.list.twice.lock().unwrap().push(1001);
    put_unreconciled_shop(&s.h, "loja-b", "loja-b-token-0123456789").await;
    let to_b = apigw_event_at(
        "/cartpanda/loja-b",
        "POST",
        Some(&order(2001, t(15)).to_string()),
        &[("token", "loja-b-token-0123456789")],
        &[],
    );
    assert_eq!(deliver_event(&s.h.bridge, to_b).await.status, 200);
    (
        vec![1001, 1002, 1003, 1004, 1005],
        vec![1003, 1004, 1005],
        vec![1006, 1007],
    )
}

#[tokio::test]
async fn coverage_of_a_mixed_day_equals_the_list_s_truth() {
    let s = setup().await;
    let (covered, noted, uncovered) = a_mixed_day(&s).await;
    // The next morning, 02:30 in the shop's day (UTC): the first run after the day's end plus
    // two hours measures it.
    s.clock.0.store(
        DAY_MS + 26 * HOUR_MS + 30 * 60_000,
        std::sync::atomic::Ordering::SeqCst,
    );
    seed_watermark(&s).await;
    let (logs, guard) = capture_json_logs();
    let answer = scheduled(&s).await;
    drop(guard);
    let day = &answer["coverage"][0];
    assert_eq!(
        answer["coverage"].as_array().map(Vec::len),
        Some(1),
        "{answer:#}"
    );
    assert_eq!(day["day"], "2026-11-19");
    assert_eq!(day["shop"], Value::Null, "the default shop");
    assert_eq!(
        day["paid"],
        covered.len() + uncovered.len(),
        "distinct orders of the day"
    );
    assert_eq!(day["covered"], covered.len());
    assert_eq!(day["noted"], noted.len());
    assert_eq!(day["uncovered"], uncovered.len());
    let ids: Vec<String> = uncovered.iter().map(u64::to_string).collect();
    assert_eq!(day["uncovered_orders"], json!(ids));

    // The uncovered orders by ID in the log, and no PII.
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for id in &ids {
        assert!(
            logged
                .lines()
                .any(|l| l.contains("coverage") && l.contains(&format!("\"{id}\""))),
            "order {id} named in the log:\n{logged}"
        );
    }
    for pii in ["joao.conceicao", "João", "98765", "123.456.789"] {
        assert!(!logged.contains(pii), "no PII in the log: {pii}");
    }

    // Measured once a day: the next run leaves it.
    s.clock.advance(15 * 60_000);
    let again = scheduled(&s).await;
    assert!(again.get("coverage").is_none(), "{again:#}");

    // The report: the measured day, and the shop without reconciliation not measured.
    let now_ms = s.clock.now_ms();
    let built = report::build(&s.h.dynamo, &s.h.table, DAY_MS, None, now_ms, false)
        .await
        .unwrap();
    let rows: Vec<_> = built
        .coverage
        .iter()
        .map(|c| {
            let m = c.measured.as_ref();
            let figures = m.map(|m| [m.paid, m.covered, m.noted, m.uncovered]);
            (c.shop.as_str(), c.day.as_str(), figures)
        })
        .collect();
    let measured = Some([7, 5, 3, 2]);
    assert!(
        rows.contains(&("(default)", "2026-11-19", measured)),
        "{rows:?}"
    );
    assert!(rows.contains(&("loja-b", "2026-11-19", None)), "{rows:?}");
    let csv = report::render(&built, Format::Csv);
    assert!(
        csv.contains("2026-11-19,(default),7,5,3,2,71.4%\n"),
        "{csv}"
    );
    assert!(
        csv.contains("2026-11-19,loja-b,,,,,not measured\n"),
        "{csv}"
    );
    let table = report::render(&built, Format::Table);
    assert!(table.contains("not measured"), "{table}");
}

/// An order of the default shop created `minutes_ago` before the stand-in's clock, in the list.
fn listed_order(s: &Setup, id: u64, minutes_ago: i64) -> Value {
    let body = order(id, s.clock.now_ms() - minutes_ago * 60_000);
    s.list.add(body["order"].clone());
    body
}

/// The shops a scheduled run counts as silent.
async fn silent(s: &Setup) -> Value {
    let answer = scheduled(s).await;
    assert_eq!(answer["failed"], json!([]), "{answer:#}");
    answer["silent"].clone()
}

#[tokio::test]
async fn shops_silent_when_webhooks_stop_and_the_list_goes_on() {
    let s = setup().await;
    seed_watermark(&s).await;
    let minute = 60_000;
    // Webhooks arrive: the run meets their claims (`via` webhook).
    for id in [3001, 3002] {
        let body = listed_order(&s, id, 10);
        assert_eq!(deliver(&s.h, &body).await.status, 200);
    }
    assert_eq!(silent(&s).await, json!([]));
    // Webhooks stop; the list goes on. An hour later three orders came by the list only: the
    // run sends them, but an order of the last 6 hours arrived by webhook: not silent yet.
    s.clock.advance(60 * minute);
    for id in [3003, 3004, 3005] {
        listed_order(&s, id, 20);
    }
    assert_eq!(silent(&s).await, json!([]));
    assert_eq!(postbacks(&s.h).await.len(), 5, "the run sent the three");
    // Six hours on, three more, none by webhook, and none of the last 6 hours arrived: silent.
    s.clock.advance(6 * 60 * minute);
    listed_order(&s, 3006, 40);
    listed_order(&s, 3007, 30);
    assert_eq!(silent(&s).await, json!([]), "two orders are not enough");
    s.clock.advance(15 * minute);
    listed_order(&s, 3008, 10);
    let (logs, guard) = capture_json_logs();
    assert_eq!(silent(&s).await, json!(["(default)"]));
    drop(guard);
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("shops need a look") && l.contains("(default)")),
        "the shop named in the log:\n{logged}"
    );
    // The webhooks are back: the next order arrives by webhook before the run meets it.
    s.clock.advance(15 * minute);
    let body = listed_order(&s, 3009, 10);
    assert_eq!(deliver(&s.h, &body).await.status, 200);
    assert_eq!(silent(&s).await, json!([]));
}

#[tokio::test]
async fn two_runs_of_a_shop_overlapping_measure_its_day_once() {
    let s = setup().await;
    a_mixed_day(&s).await;
    s.clock.0.store(
        DAY_MS + 26 * HOUR_MS + 30 * 60_000,
        std::sync::atomic::Ordering::SeqCst,
    );
    // Two of the shop's queue messages, their runs over, both reach the daily pass before
    // either stored the day: one counts it (its metrics, its record), the other nothing.
    let target = cartpanda_redtrack::reconcile::default_target(&s.reconciler).unwrap();
    let deadline_ms = s.clock.now_ms() + 60_000;
    let (a, b) = tokio::join!(
        s.reconciler.coverage(&target, None, deadline_ms),
        s.reconciler.coverage(&target, None, deadline_ms)
    );
    assert_eq!(
        [a.is_some(), b.is_some()].iter().filter(|x| **x).count(),
        1,
        "{a:?} {b:?}"
    );
}
