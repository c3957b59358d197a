//! Reconciliation end to end: wiremock as Cartpanda's order list and as RedTrack, moto as the
//! ledger, the real bridge and handler for the webhooks that race it.

mod common;

use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::reconcile::orders::OrderLister;
use cartpanda_redtrack::reconcile::run::{Reconciler, RunOptions, Since, Summary};
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_TOKEN: &str = "cp-api-token-for-tests";
const SLUG: &str = "vitalidade-natural";
const LIST_PATH: &str = "/api/v3/vitalidade-natural/orders";

struct Setup {
    h: Harness,
    cartpanda: MockServer,
    reconciler: Reconciler,
}

async fn setup(env: &[(&'static str, &str)], list_env: &[(&str, &str)]) -> Setup {
    let cartpanda = MockServer::start().await;
    let mut env: Vec<(&'static str, String)> =
        env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    // The order API the retry set re-reads orders from.
    env.push((
        "CARTPANDA_ORDER_URL",
        format!(
            "{}/api/v3/{{shop_slug}}/orders/{{order_id}}",
            cartpanda.uri()
        ),
    ));
    let h = harness_with(Options {
        env,
        ..Options::default()
    })
    .await;
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    let defaults = [
        ("RECONCILE", "true"),
        ("CARTPANDA_API_TOKEN", API_TOKEN),
        ("CARTPANDA_SHOP_SLUG", SLUG),
        // Cartpanda speaks UTC here (tests/reconcile_shapes.rs: other zones, and none known).
        ("CARTPANDA_TIMEZONE", "UTC"),
    ];
    let env: Vec<(&str, &str)> = defaults
        .into_iter()
        .chain(list_env.iter().copied())
        .collect();
    let settings = reconcile_settings(&cartpanda.uri(), &env);
    let lister = OrderLister::new(settings.list.clone()).unwrap();
    let reconciler = Reconciler {
        bridge: Arc::clone(&h.bridge),
        lister: Arc::new(lister),
        table: DynamoLedger::new(h.dynamo.clone(), h.table.clone()),
        settings,
    };
    Setup {
        h,
        cartpanda,
        reconciler,
    }
}

/// The `order` of a sample delivery, as the order list carries it.
fn listed(delivery: Value) -> Value {
    delivery["order"].clone()
}

fn page(orders: Vec<Value>, current: u32, last: u32) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"orders": {
        "data": orders, "current_page": current, "last_page": last, "per_page": 2, "total": 4
    }}))
}

async fn serve_page(s: &Setup, n: u32, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(LIST_PATH))
        .and(query_param("page", n.to_string()))
        .and(header(
            "authorization",
            format!("Bearer {API_TOKEN}").as_str(),
        ))
        .respond_with(response)
        .mount(&s.cartpanda)
        .await;
}

async fn run(s: &Setup, budget_ms: i64) -> Summary {
    let options = RunOptions {
        since: Since::Watermark,
        dry_run: false,
        deadline_ms: SystemClock.now_ms() + budget_ms,
    };
    let target = cartpanda_redtrack::reconcile::default_target(&s.reconciler).unwrap();
    s.reconciler.run(&target, options).await
}

fn event_ids(sent: &[std::collections::BTreeMap<String, String>]) -> Vec<String> {
    let mut ids: Vec<String> = sent.iter().map(|p| p["rdtk_event_id"].clone()).collect();
    ids.sort();
    ids
}

async fn list_requests(s: &Setup) -> Vec<HashMap<String, String>> {
    s.cartpanda
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.url.query_pairs().into_owned().collect())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A Cartpanda that answers as its API would: the list filtered by the query (created_at window
// and payment_status, or updated_at_min), and single orders by ID.

/// The orders of a fake Cartpanda, filtered per request.
#[derive(Clone, Default)]
struct FakeCartpanda(Arc<std::sync::Mutex<Vec<Value>>>);

impl FakeCartpanda {
    fn add(&self, order: Value) {
        self.0.lock().unwrap().push(order);
    }

    fn listed(&self, query: &HashMap<String, String>) -> Vec<Value> {
        let time = |v: &Value| cartpanda_redtrack::inbound::datetime::parse_unix(v.as_str()?);
        let at = |k: &str| cartpanda_redtrack::inbound::datetime::parse_unix(query.get(k)?);
        let within = |t: Option<i64>, min: Option<i64>, max: Option<i64>| {
            t.is_some_and(|t| min.is_none_or(|m| t >= m) && max.is_none_or(|m| t <= m))
        };
        let orders = self.0.lock().unwrap().clone();
        orders
            .into_iter()
            .filter(|o| match at("updated_at_min") {
                Some(min) => within(time(&o["updated_at"]), Some(min), None),
                None => {
                    within(
                        time(&o["created_at"]),
                        at("created_at_min"),
                        at("created_at_max"),
                    ) && query
                        .get("payment_status")
                        .is_none_or(|s| o["payment_status"] == s.parse::<u64>().unwrap_or(0))
                }
            })
            .collect()
    }
}

impl wiremock::Respond for FakeCartpanda {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let single = request.url.path().strip_prefix(&format!("{LIST_PATH}/"));
        if let Some(id) = single {
            let orders = self.0.lock().unwrap().clone();
            return match orders
                .into_iter()
                .find(|o| o["id"] == id.parse::<u64>().unwrap_or(0))
            {
                Some(order) => ResponseTemplate::new(200).set_body_json(json!({ "order": order })),
                None => ResponseTemplate::new(404),
            };
        }
        let query: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
        page(self.listed(&query), 1, 1)
    }
}

async fn fake_cartpanda(s: &Setup) -> FakeCartpanda {
    let fake = FakeCartpanda::default();
    Mock::given(method("GET"))
        .and(header(
            "authorization",
            format!("Bearer {API_TOKEN}").as_str(),
        ))
        .respond_with(fake.clone())
        .mount(&s.cartpanda)
        .await;
    fake
}

fn now_s() -> i64 {
    SystemClock.now_ms() / 1000
}

fn utc(t: i64) -> String {
    cartpanda_redtrack::inbound::datetime::format_utc(t)
}

/// A listed order created `created_h_ago` hours ago, last updated `updated_h_ago` hours ago, with
/// this `payment_status`.
fn order_at(delivery: Value, created_h_ago: f64, updated_h_ago: f64, payment_status: u8) -> Value {
    let mut order = listed(delivery);
    order["created_at"] = json!(utc(now_s() - (created_h_ago * 3600.0) as i64));
    order["updated_at"] = json!(utc(now_s() - (updated_h_ago * 3600.0) as i64));
    order["payment_status"] = json!(payment_status);
    order
}

/// The default shop's watermark record, as a complete run `minutes_ago` leaves it (written as
/// the table holds it, so the test reads the same on every version).
async fn seed_watermark(s: &Setup, minutes_ago: i64, extra: &[(&str, i64)]) {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let mut put =
        s.h.dynamo
            .put_item()
            .table_name(&s.h.table)
            .item("pk", V::S("watermark#default".into()))
            .item("kind", V::S("watermark".into()))
            .item(
                "watermark_s",
                V::N((now_s() - minutes_ago * 60).to_string()),
            );
    for (name, value) in extra {
        put = put.item(*name, V::N(value.to_string()));
    }
    put.send().await.unwrap();
}

/// The scheduled run, through the reconcile handler's function, as JSON.
async fn scheduled(s: &Setup, budget_ms: i64) -> Value {
    scheduled_run(&s.reconciler, budget_ms).await
}

/// What RedTrack answers, by event ID (200 unless set). (Not wiremock's scoped mocks: with
/// priorities, dropping one deactivates another.)
#[derive(Clone, Default)]
struct RedTrackAnswers(Arc<std::sync::Mutex<HashMap<String, u16>>>);

impl RedTrackAnswers {
    fn set(&self, event_id: &str, status: u16) {
        self.0.lock().unwrap().insert(event_id.to_owned(), status);
    }

    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl wiremock::Respond for RedTrackAnswers {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let event_id = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "rdtk_event_id")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let status = self.0.lock().unwrap().get(&event_id).copied();
        ResponseTemplate::new(status.unwrap_or(200))
    }
}

async fn redtrack_answers(s: &Setup) -> RedTrackAnswers {
    let answers = RedTrackAnswers::default();
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(answers.clone())
        .with_priority(1)
        .mount(&s.h.redtrack)
        .await;
    answers
}

/// Postbacks RedTrack received from index `from` on, by event ID.
async fn postbacks_since(s: &Setup, from: usize) -> Vec<String> {
    postbacks(&s.h).await[from..]
        .iter()
        .map(|p| p["rdtk_event_id"].clone())
        .collect()
}

#[tokio::test]
async fn a_late_payment_whose_webhook_was_lost_is_found_with_and_without_the_updated_filter() {
    for filter in [None, Some("updated_at_min")] {
        let list_env: Vec<(&str, &str)> = filter
            .map(|f| ("CARTPANDA_ORDER_LIST_UPDATED_FILTER", f))
            .into_iter()
            .collect();
        let s = setup(&[], &list_env).await;
        let fake = fake_cartpanda(&s).await;
        // A boleto created 30 h before the run, paid 20 h later; its order.paid webhook was lost.
        // The last complete run was just before the payment.
        fake.add(order_at(upsell_order(901, false), 30.0, 10.0, 3));
        // Created as long ago and touched since, but still pending, or cancelled.
        fake.add(order_at(paid_order(902), 30.0, 1.0, 1));
        fake.add(order_at(paid_order(903), 30.0, 1.0, 4));
        seed_watermark(&s, 10 * 60 + 15, &[]).await;

        let summary = run(&s, 60_000).await;
        assert!(summary.complete, "{filter:?}: {summary:?}");
        assert_eq!(
            event_ids(&postbacks(&s.h).await),
            ["901-purchase", "901-upsell-90002"],
            "{filter:?}: the late payment's sale and upsell, nothing of the pending or cancelled"
        );
        let requests = list_requests(&s).await;
        match filter {
            Some(f) => assert!(requests.iter().any(|q| q.contains_key(f))),
            None => {
                // Widened by 14 h: the seeded record predates the zones a run keeps, so this
                // run cannot know which zone the last window was written in.
                let lookback_from = now_s() - 168 * 3600 - 14 * 3600;
                let lookback = requests.iter().find(|q| {
                    q.get("created_at_min")
                        .and_then(|t| cartpanda_redtrack::inbound::datetime::parse_unix(t))
                        .is_some_and(|t| (t - lookback_from).abs() < 120)
                });
                let lookback = lookback.expect("a lookback over RECONCILE_PAID_LOOKBACK_H");
                assert_eq!(lookback["payment_status"], "3");
            }
        }
        // The next run sends nothing again, and (without the filter) lists no second lookback
        // the same day.
        let listed_before = list_requests(&s).await.len();
        let again = run(&s, 60_000).await;
        assert!(again.complete, "{again:?}");
        assert_eq!(postbacks(&s.h).await.len(), 2, "{filter:?}: nothing twice");
        if filter.is_none() {
            assert_eq!(list_requests(&s).await.len(), listed_before + 1);
        }
    }
}

#[tokio::test]
async fn a_payment_near_the_end_of_its_week_is_found_by_the_lookback_after_it() {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let s = setup(&[], &[]).await;
    let fake = fake_cartpanda(&s).await;
    // Created 170 h ago, paid 5 h ago (within RECONCILE_PAID_LOOKBACK_H of its creation); its
    // webhook was lost. The last lookback ended a day ago, before the payment: this run's must
    // reach back to 168 h before that one, not only before itself.
    fake.add(order_at(paid_order(911), 170.0, 5.0, 3));
    seed_watermark(&s, 15, &[("lookback_s", now_s() - 24 * 3600)]).await;
    // Written in UTC last time too: the window is not widened.
    s.h.dynamo
        .update_item()
        .table_name(&s.h.table)
        .key("pk", V::S("watermark#default".into()))
        .update_expression("SET list_timezone = :utc, shop_timezone = :utc")
        .expression_attribute_values(":utc", V::S("UTC".into()))
        .send()
        .await
        .unwrap();
    let summary = run(&s, 60_000).await;
    assert!(summary.complete, "{summary:?}");
    assert!(!summary.widened, "{summary:?}");
    assert_eq!(event_ids(&postbacks(&s.h).await), ["911-purchase"]);
}

#[tokio::test]
async fn a_list_without_the_payment_filter_sends_no_pending_or_cancelled_order() {
    // A query without `payment_status=3` (or an API that ignores it) lists every order.
    let query = [(
        "CARTPANDA_ORDER_LIST_QUERY",
        "created_at_min={from}&created_at_max={to}&limit={limit}&page={page}",
    )];
    let s = setup(&[], &query).await;
    let fake = fake_cartpanda(&s).await;
    fake.add(order_at(paid_order(921), 0.7, 0.7, 3));
    fake.add(order_at(paid_order(922), 0.7, 0.7, 1));
    fake.add(order_at(paid_order(923), 0.7, 0.7, 4));
    seed_watermark(&s, 60, &[("lookback_s", now_s() - 3600)]).await;
    let summary = run(&s, 60_000).await;
    assert!(summary.complete, "{summary:?}");
    assert_eq!(
        event_ids(&postbacks(&s.h).await),
        ["921-purchase"],
        "the paid order only, not the pending boleto nor the cancelled one"
    );
}

#[tokio::test]
async fn a_conversion_redtrack_could_not_take_is_retried_by_the_next_run_and_a_4xx_is_not() {
    let s = setup(&[], &[]).await;
    let fake = fake_cartpanda(&s).await;
    fake.add(order_at(paid_order(701), 0.7, 0.7, 3));
    fake.add(order_at(paid_order(702), 0.7, 0.7, 3));
    // The last run ended an hour ago, and so did its lookback.
    let an_hour_ago = now_s() - 3600;
    seed_watermark(&s, 60, &[("lookback_s", an_hour_ago)]).await;
    // Run 1: RedTrack fails 701 with 5xx (no redrive queue) and refuses 702 for good.
    let redtrack = redtrack_answers(&s).await;
    redtrack.set("701-purchase", 503);
    redtrack.set("702-purchase", 400);
    let first = scheduled(&s, 60_000).await;
    redtrack.clear();
    let after_first = postbacks(&s.h).await.len();
    let failed = item(&s.h, "evt#702-purchase").await.expect("702's record");
    assert_eq!(failed["status"].as_s().unwrap(), "FAILED");

    // Run 2, RedTrack up: the window has moved past both orders.
    let second = scheduled(&s, 60_000).await;
    assert_eq!(
        postbacks_since(&s, after_first).await,
        ["701-purchase"],
        "701 sent once by the next run; 702 not retried: {second}"
    );
    let sent = item(&s.h, "evt#701-purchase").await.unwrap();
    assert_eq!(sent["status"].as_s().unwrap(), "SENT");
    let run1 = &first["shops"][0];
    assert_eq!(
        (run1["failed"].as_u64(), run1["refused"].as_u64()),
        (Some(2), Some(1)),
        "{first}"
    );
    assert_eq!(run1["retrying"], 1, "{first}");
    let run2 = &second["shops"][0];
    assert_eq!(
        (run2["retried"].as_u64(), run2["recovered"].as_u64()),
        (Some(1), Some(1)),
        "{second}"
    );
    assert_eq!(run2["retrying"], 0, "{second}");
    assert!(first["failed"].as_array().unwrap().is_empty(), "{first}");

    // Run 3 has nothing left to do.
    let before = postbacks(&s.h).await.len();
    let third = scheduled(&s, 60_000).await;
    assert_eq!(postbacks(&s.h).await.len(), before, "{third}");
}

#[tokio::test]
async fn an_order_still_failing_after_reconcile_retry_runs_is_given_up_and_counted() {
    let s = setup(&[], &[("RECONCILE_RETRY_RUNS", "2")]).await;
    let fake = fake_cartpanda(&s).await;
    fake.add(order_at(paid_order(703), 0.7, 0.7, 3));
    seed_watermark(&s, 60, &[("lookback_s", now_s() - 3600)]).await;
    let redtrack = redtrack_answers(&s).await;
    redtrack.set("703-purchase", 500);
    let mut answers = Vec::new();
    let mut attempts = Vec::new();
    for _ in 0..3 {
        answers.push(scheduled(&s, 60_000).await);
        attempts.push(postbacks(&s.h).await.len());
    }
    assert!(
        attempts[0] > 0 && attempts[1] > attempts[0] && attempts[2] > attempts[1],
        "runs 2 and 3 retry it: {attempts:?}"
    );
    let given_up: Vec<_> = answers
        .iter()
        .map(|a| a["shops"][0]["given_up"].clone())
        .collect();
    assert_eq!(given_up, [json!(0), json!(0), json!(1)], "{answers:?}");
    let retrying: Vec<_> = answers
        .iter()
        .map(|a| a["shops"][0]["retrying"].clone())
        .collect();
    assert_eq!(retrying, [json!(1), json!(1), json!(0)]);
    // Given up: RedTrack back up, the next run does not try it again.
    redtrack.clear();
    let before = postbacks(&s.h).await.len();
    scheduled(&s, 60_000).await;
    assert_eq!(postbacks(&s.h).await.len(), before);
}

#[tokio::test]
async fn no_conversion_is_claimed_once_the_runs_stop_time_has_passed() {
    let mut s = setup(&[("REDTRACK_TIMEOUT_MS", "5000")], &[]).await;
    s.reconciler.settings.margin = Duration::from_millis(2000);
    serve_page(&s, 1, page(vec![listed(upsell_order(801, false))], 1, 1)).await;
    // The sale's postback takes 2.5 s: the run's stop time (2 s in) passes meanwhile.
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(2500)))
        .with_priority(1)
        .up_to_n_times(1)
        .mount(&s.h.redtrack)
        .await;
    let cut = run(&s, 4_000).await;
    assert_eq!(
        event_ids(&postbacks(&s.h).await),
        ["801-purchase"],
        "the upsell is not claimed past the stop time: {cut:?}"
    );
    assert_eq!(cut.stopped.as_deref(), Some("deadline"));
    assert!(
        item(&s.h, "evt#801-upsell-90002").await.is_none(),
        "no claim left behind"
    );
    s.reconciler.settings.margin = Duration::from_millis(300);
    let resumed = run(&s, 60_000).await;
    assert_eq!((resumed.sent, resumed.already_sent), (1, 1), "{resumed:?}");
}

#[tokio::test]
async fn a_shop_without_a_complete_run_for_two_hours_is_stale() {
    let s = setup(&[], &[]).await;
    serve_page(&s, 1, page(Vec::new(), 1, 1)).await;
    let long_ago_ms = SystemClock.now_ms() - 2 * 3600 * 1000 - 5 * 60 * 1000;
    seed_watermark(&s, 125, &[("completed_at_ms", long_ago_ms)]).await;
    // Runs cut short (here: no time at all) for over two hours: stale, not failed.
    let cut = scheduled(&s, 100).await;
    assert_eq!(cut["stale"], json!(["(default)"]), "{cut}");
    assert_eq!(cut["failed"], json!([]), "{cut}");
    assert_eq!(cut["shops"][0]["stale"], true);
    let complete = scheduled(&s, 60_000).await;
    assert_eq!(complete["shops"][0]["complete"], true, "{complete}");
    assert_eq!(complete["stale"], json!([]), "{complete}");
}

#[tokio::test]
async fn a_shop_whose_setup_fails_is_counted_failed_by_name() {
    let s = setup(&[], &[]).await;
    serve_page(&s, 1, page(Vec::new(), 1, 1)).await;
    // A named shop with reconciliation on but no Cartpanda slug.
    let record = cartpanda_redtrack::shops::directory::ShopRecord {
        name: "loja-sem-slug".to_owned(),
        token_digests: vec![cartpanda_redtrack::inbound::auth::Tokens::hex_digest(
            "shop-secret-0123456789",
        )],
        postback_url: "https://trk.example.com/postback?clickid={cid}".to_owned(),
        conversion_types: String::new(),
        send_test_orders: false,
        cartx_test_orders: String::new(),
        sum_currency: None,
        normalize_pii: true,
        cartpanda_api_token: Some("cp-token".to_owned()),
        cartpanda_api_token_parameter: None,
        click_id_sources: String::new(),
        reconcile: true,
        shop_slug: None,
        s2s: false,
        verify_orders: false,
        timezone: None,
    };
    s.reconciler.table.put_shop(&record, 0).await.unwrap();
    let answer = scheduled(&s, 60_000).await;
    assert_eq!(answer["failed"], json!(["loja-sem-slug"]), "{answer}");
    assert_eq!(
        answer["shops"][0]["complete"], true,
        "the default shop still ran"
    );
}

#[tokio::test]
async fn missing_conversions_are_sent_once_and_the_watermark_advances() {
    let s = setup(
        &[(
            "CLICKID_SOURCES",
            "checkout_params.cid,checkout_params.rtkcid",
        )],
        &[],
    )
    .await;
    // 101: never delivered (paid + an upsell); 102: delivered by webhook first; 103: no click
    // ID; 104: its click ID only in `rtkcid`, which CLICKID_SOURCES names.
    let webhooked = paid_order(102);
    assert_eq!(deliver(&s.h, &webhooked).await.status, 200);
    let mut no_click = paid_order(103);
    no_click["order"]["checkout_params"] = json!({"utm_term": "summer-sale"});
    let mut rtkcid = paid_order(104);
    rtkcid["order"]["checkout_params"] = json!({"rtkcid": "67d42f3b9a1e5c0012ab9999"});
    // Page 1 is refused once with 429 and Retry-After.
    Mock::given(method("GET"))
        .and(path(LIST_PATH))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&s.cartpanda)
        .await;
    serve_page(
        &s,
        1,
        page(
            vec![listed(upsell_order(101, false)), listed(webhooked)],
            1,
            2,
        ),
    )
    .await;
    serve_page(&s, 2, page(vec![listed(no_click), listed(rtkcid)], 2, 2)).await;

    let started = std::time::Instant::now();
    let summary = run(&s, 60_000).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert!(summary.complete, "{summary:?}");
    assert_eq!(summary.orders_seen, 4);
    assert_eq!((summary.missing, summary.sent), (3, 3), "{summary:?}");
    assert_eq!(summary.already_sent, 1);
    assert_eq!(summary.skipped_no_click_id, 1);
    assert_eq!(summary.pages, 2);

    let sent = postbacks(&s.h).await;
    assert_eq!(
        event_ids(&sent),
        [
            "101-purchase",
            "101-upsell-90002",
            "102-purchase",
            "104-purchase"
        ]
    );
    let by_id = |id: &str| sent.iter().find(|p| p["rdtk_event_id"] == id).unwrap();
    assert_eq!(by_id("104-purchase")["clickid"], "67d42f3b9a1e5c0012ab9999");
    assert_eq!(by_id("101-purchase")["sum"], "1234.56");
    assert_eq!(by_id("101-upsell-90002")["sum"], "194.00");

    let requests = list_requests(&s).await;
    assert_eq!(requests.len(), 3, "429, page 1, page 2");
    let first = &requests[0];
    assert_eq!(first["payment_status"], "3");
    let format = |t: &str| t.len() == 19 && t.as_bytes()[10] == b' ' && t.as_bytes()[13] == b':';
    assert!(format(&first["created_at_min"]) && format(&first["created_at_max"]));

    let note = item(&s.h, "note#103#no_click_id")
        .await
        .expect("a note for the order without a click ID");
    assert_eq!(note["event"].as_s().unwrap(), "order.paid");
    assert!(note.contains_key("expires_at"));
    let mark = item(&s.h, "watermark#default").await.expect("watermark");
    let watermark: i64 = mark["watermark_s"].as_n().unwrap().parse().unwrap();
    assert!((watermark - SystemClock.now_ms() / 1000).abs() < 120);
    assert!(!mark.contains_key("cursor_page"));

    // The next run starts one overlap before the watermark and sends nothing again.
    let again = run(&s, 60_000).await;
    assert!(again.complete);
    assert_eq!((again.sent, again.already_sent), (0, 4), "{again:?}");
    assert_eq!(postbacks(&s.h).await.len(), 4, "nothing sent twice");
    let second_from = &list_requests(&s).await[3]["created_at_min"];
    let expected = cartpanda_redtrack::inbound::datetime::format_utc(watermark - 15 * 60);
    assert_eq!(second_from, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_delivered_by_webhook_during_the_run_is_sent_once() {
    let s = setup(&[], &[]).await;
    serve_page(&s, 1, page(vec![listed(paid_order(201))], 1, 2)).await;
    serve_page(
        &s,
        2,
        page(vec![listed(paid_order(202))], 2, 2).set_delay(Duration::from_millis(3000)),
    )
    .await;
    let webhook = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        deliver(&s.h, &paid_order(202)).await
    };
    let (summary, answer) = tokio::join!(run(&s, 60_000), webhook);
    assert_eq!(answer.body["conversions"][0]["outcome"], "sent");
    assert_eq!((summary.sent, summary.already_sent), (1, 1), "{summary:?}");
    assert_eq!(
        event_ids(&postbacks(&s.h).await),
        ["201-purchase", "202-purchase"]
    );
    // And the webhook of an order reconciliation sent first is a duplicate.
    let late = deliver(&s.h, &paid_order(201)).await;
    assert_eq!(late.body["conversions"][0]["outcome"], "duplicate");
    assert_eq!(postbacks(&s.h).await.len(), 2);
}

#[tokio::test]
async fn a_run_cut_by_its_deadline_resumes_from_where_it_stopped() {
    let s = setup(&[], &[("CARTPANDA_API_MIN_INTERVAL_MS", "4000")]).await;
    serve_page(&s, 1, page(vec![listed(paid_order(301))], 1, 2)).await;
    serve_page(&s, 2, page(vec![listed(paid_order(302))], 2, 2)).await;
    // Budget: the first page, then the rate limit's wait ends past the stop time.
    let cut = run(&s, 2_500).await;
    assert!(!cut.complete);
    assert_eq!(cut.stopped.as_deref(), Some("deadline"));
    assert_eq!(cut.sent, 1);
    let mark = item(&s.h, "watermark#default").await.expect("cursor kept");
    assert!(!mark.contains_key("watermark_s"), "no watermark yet");
    assert_eq!(mark["cursor_page"].as_n().unwrap(), "2");

    let resumed = run(&s, 60_000).await;
    assert!(resumed.complete, "{resumed:?}");
    assert_eq!(resumed.from, cut.from, "the same window");
    assert_eq!((resumed.sent, resumed.already_sent), (1, 1));
    assert_eq!(
        event_ids(&postbacks(&s.h).await),
        ["301-purchase", "302-purchase"]
    );
    let mark = item(&s.h, "watermark#default").await.unwrap();
    assert!(!mark.contains_key("cursor_page"));
    let watermark: i64 = mark["watermark_s"].as_n().unwrap().parse().unwrap();
    assert_eq!(
        cartpanda_redtrack::inbound::datetime::format_utc(watermark),
        cut.to
    );
}

#[tokio::test]
async fn an_s2s_shop_reconciles_with_the_s2s_event_ids() {
    let s = setup(&[], &[("RECONCILE_S2S", "true")]).await;
    // The upsell came by S2S; the sale's postback never did.
    let query = [
        ("token", TOKEN),
        ("order_id", "401"),
        ("cid", "67d42f3b9a1e5c0012ab34cd"),
        ("total_price", "194.00"),
        ("currency", "BRL"),
        ("order_type", "upsell"),
        ("upsell_no", "1"),
        ("product_id", "22264763"),
    ];
    let answer = deliver_event(
        &s.h.bridge,
        apigw_event_at("/cartpanda/s2s", "GET", None, &query, &[]),
    )
    .await;
    assert_eq!(
        answer.body["conversions"][0]["event_id"], "401-upsell-s2s-p22264763",
        "{}",
        answer.body
    );
    serve_page(&s, 1, page(vec![listed(upsell_order(401, false))], 1, 1)).await;
    let summary = run(&s, 60_000).await;
    assert_eq!((summary.sent, summary.already_sent), (1, 1), "{summary:?}");
    assert_eq!(summary.conflicts, 0);
    assert_eq!(
        event_ids(&postbacks(&s.h).await),
        ["401-purchase", "401-upsell-s2s-p22264763"]
    );
}

#[tokio::test]
async fn refunds_are_reconciled_only_with_the_updated_filter() {
    let s = setup(
        &[],
        &[("CARTPANDA_ORDER_LIST_UPDATED_FILTER", "updated_at_min")],
    )
    .await;
    assert_eq!(deliver(&s.h, &paid_order(501)).await.status, 200);
    serve_page(&s, 1, page(vec![listed(paid_order(501))], 1, 1)).await;
    Mock::given(method("GET"))
        .and(path(LIST_PATH))
        .and(wiremock::matchers::query_param_is_missing("payment_status"))
        .respond_with(page(vec![listed(refund_order(501))], 1, 1))
        .with_priority(1)
        .mount(&s.cartpanda)
        .await;
    let summary = run(&s, 60_000).await;
    assert!(summary.complete, "{summary:?}");
    assert_eq!((summary.sent, summary.already_sent), (1, 1), "{summary:?}");
    assert_eq!(
        event_ids(&postbacks(&s.h).await),
        ["501-purchase", "501-refund-777"]
    );
    let updated = list_requests(&s)
        .await
        .into_iter()
        .find(|q| q.contains_key("updated_at_min"))
        .expect("an updated-since request");
    assert!(!updated.contains_key("payment_status"));
}

#[tokio::test]
async fn a_dry_run_back_fill_counts_what_it_would_send_and_writes_nothing() {
    let s = setup(&[], &[]).await;
    assert_eq!(deliver(&s.h, &paid_order(601)).await.status, 200);
    serve_page(
        &s,
        1,
        page(vec![listed(paid_order(601)), listed(paid_order(602))], 1, 1),
    )
    .await;
    let deadline_ms = SystemClock.now_ms() + 60_000;
    let summary =
        cartpanda_redtrack::reconcile::command(&s.reconciler, "48h", None, true, deadline_ms)
            .await
            .unwrap();
    assert_eq!(
        (summary.would_send, summary.already_sent),
        (1, 1),
        "{summary:?}"
    );
    assert_eq!(summary.sent, 0);
    assert_eq!(postbacks(&s.h).await.len(), 1, "only the webhook's");
    assert_eq!(
        record_keys(&s.h).await,
        ["evt#601-purchase"],
        "no claim, no watermark"
    );
    let from = &list_requests(&s).await[0]["created_at_min"];
    let from_s = cartpanda_redtrack::inbound::datetime::parse_unix(from).unwrap();
    assert!(
        (from_s - (SystemClock.now_ms() / 1000 - 48 * 3600)).abs() < 60,
        "the window starts at --since: {from}"
    );
    // A named shop that does not exist, and a bad --since, are refused precisely.
    let unknown = cartpanda_redtrack::reconcile::command(
        &s.reconciler,
        "48h",
        Some("nope"),
        true,
        deadline_ms,
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.to_string(), "no shop `nope`");
    assert!(!unknown.retryable());
    let bad =
        cartpanda_redtrack::reconcile::command(&s.reconciler, "soon", None, true, deadline_ms)
            .await
            .unwrap_err()
            .to_string();
    assert!(bad.starts_with("--since `soon`"), "{bad}");
}

#[tokio::test]
async fn orders_of_the_v3_api_are_sent_with_the_click_id_of_their_conversion_summary() {
    let s = setup(&[], &[]).await;
    // As a v3 client reads an order: no checkout_params, the tracking parameters in
    // conversion_summary (issue 22).
    let mut order = listed(paid_order(501));
    let click_id = order["checkout_params"]["cid"]
        .as_str()
        .expect("the sample order has a click ID")
        .to_owned();
    order.as_object_mut().unwrap().remove("checkout_params");
    order["conversion_summary"] = json!([
        {"parameter_name": "utm_source", "parameter_value": "facebook"},
        {"parameter_name": "cid", "parameter_value": click_id},
    ]);
    serve_page(&s, 1, page(vec![order], 1, 1)).await;
    let summary = run(&s, 60_000).await;
    assert_eq!(
        (summary.sent, summary.skipped_no_click_id),
        (1, 0),
        "{summary:?}"
    );
    let sent = postbacks(&s.h).await;
    assert_eq!(event_ids(&sent), ["501-purchase"]);
    assert_eq!(sent[0]["clickid"], click_id);
}

#[tokio::test]
async fn a_listed_order_older_than_the_ledgers_memory_is_noted_never_sent() {
    let s = setup(
        &[("DEDUP_TTL_DAYS", "400")],
        &[("CARTPANDA_ORDER_LIST_UPDATED_FILTER", "updated_at_min")],
    )
    .await;
    let created = |days_ago: i64| {
        let at_s = SystemClock.now_ms() / 1000 - days_ago * 86_400;
        json!(cartpanda_redtrack::inbound::datetime::format_utc(at_s))
    };
    let mut old = paid_order(1101);
    old["order"]["chargeback_received"] = json!(1);
    old["order"]["created_at"] = created(450);
    let mut recent = refund_order(1102);
    recent["order"]["created_at"] = created(100);
    serve_page(&s, 1, page(vec![], 1, 1)).await;
    Mock::given(method("GET"))
        .and(path(LIST_PATH))
        .and(wiremock::matchers::query_param_is_missing("payment_status"))
        .respond_with(page(vec![listed(old), listed(recent)], 1, 1))
        .with_priority(1)
        .mount(&s.cartpanda)
        .await;
    let summary = run(&s, 60_000).await;
    assert!(summary.complete, "{summary:?}");
    assert_eq!(
        (summary.sent, summary.skipped_too_old),
        (1, 1),
        "{summary:?}"
    );
    assert_eq!(event_ids(&postbacks(&s.h).await), ["1102-refund-777"]);
    let keys = record_keys(&s.h).await;
    assert!(
        keys.contains(&"note#1101#too_old".to_owned())
            && !keys.iter().any(|k| k.starts_with("evt#1101")),
        "{keys:?}"
    );
}
