//! RedTrack's own count (src/reconcile/rtcount.rs) through the reconcile handler's scheduled run:
//! moto as the ledger, wiremock as RedTrack (its postback endpoint and its API's conversions
//! log) and as Cartpanda's order list, the real bridge for the webhooks sent the day before.

mod common;

use cartpanda_redtrack::ops::clock::{Clock, FixedClock};
use cartpanda_redtrack::reconcile::config::ReconcileSettings;
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_KEY: &str = "rt-api-key-for-tests";
/// The click IDs of the day's three orders, and one the bridge never sent.
const CLICK_A: &str = "aaaaaaaaaaaaaaaaaaaaaa01";
const CLICK_B: &str = "bbbbbbbbbbbbbbbbbbbbbb02";
const CLICK_C: &str = "cccccccccccccccccccccc03";
const CLICK_OTHER: &str = "dddddddddddddddddddddd04";

struct Setup {
    h: Harness,
    clock: Arc<FixedClock>,
    cartpanda: MockServer,
    redtrack_api: MockServer,
}

/// A harness whose clock is pinned to now, a RedTrack accepting every postback, an empty order
/// list and a RedTrack API stand-in with nothing mounted yet.
async fn setup() -> Setup {
    let clock = Arc::new(FixedClock::at(
        cartpanda_redtrack::ops::clock::SystemClock.now_ms(),
    ));
    let h = harness_with(Options {
        clock: clock.clone(),
        ..Options::default()
    })
    .await;
    accept_all(&h.redtrack).await;
    let cartpanda = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"orders": {
            "data": [], "current_page": 1, "last_page": 1}})))
        .mount(&cartpanda)
        .await;
    let redtrack_api = MockServer::start().await;
    Setup {
        h,
        clock,
        cartpanda,
        redtrack_api,
    }
}

/// The reconciler of the default shop, with RedTrack's API key when `key`.
fn reconciler(s: &Setup, key: bool) -> cartpanda_redtrack::reconcile::run::Reconciler {
    let mut vars: HashMap<&str, String> = HashMap::from([
        ("RECONCILE", "true".to_owned()),
        ("CARTPANDA_API_TOKEN", "cp-api-token".to_owned()),
        ("CARTPANDA_SHOP_SLUG", "vitalidade-natural".to_owned()),
        (
            "CARTPANDA_ORDER_LIST_URL",
            format!("{}/api/v3/{{shop_slug}}/orders", s.cartpanda.uri()),
        ),
        ("CARTPANDA_API_MIN_INTERVAL_MS", "0".to_owned()),
        ("REDTRACK_API_URL", s.redtrack_api.uri()),
    ]);
    if key {
        vars.insert("REDTRACK_API_KEY", API_KEY.to_owned());
    }
    let mut settings = ReconcileSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    settings.margin = Duration::from_millis(300);
    settings.redtrack.min_interval = Duration::from_millis(10);
    common::reconciler(&s.h, settings)
}

/// A paid order with its own click ID, delivered by webhook and sent.
async fn sell(s: &Setup, order_id: u64, click_id: &str) {
    let mut order = paid_order(order_id);
    order["order"]["checkout_params"]["cid"] = json!(click_id);
    let answer = deliver(&s.h, &order).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// The scheduled run of the reconcile handler, as JSON.
async fn scheduled(s: &Setup, key: bool) -> Value {
    let reconciler = reconciler(s, key);
    let deadline_ms = s.clock.now_ms() + 60_000;
    let answer = cartpanda_redtrack::reconcile::run_scheduled(&reconciler, deadline_ms)
        .await
        .unwrap();
    serde_json::to_value(answer).unwrap()
}

/// The UTC day of `ms`, and the days before and after it.
fn days(ms: i64) -> [String; 3] {
    [ms - 86_400_000, ms, ms + 86_400_000].map(cartpanda_redtrack::ledger::notes::day_of)
}

async fn api_requests(s: &Setup) -> Vec<HashMap<String, String>> {
    let requests = s.redtrack_api.received_requests().await.unwrap_or_default();
    requests
        .iter()
        .map(|r| r.url.query_pairs().into_owned().collect())
        .collect()
}

/// The tests of this file run one at a time: the first captures its log lines, and a log line of
/// the check went missing now and then (one run in three) while another test of the file ran its
/// reconciliation on another thread beside it (tracing's per-callsite interest and global level,
/// shared by the threads).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn the_daily_count_finds_a_conversion_missing_and_one_doubled() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let s = setup().await;
    let sold_ms = s.clock.now_ms();
    sell(&s, 9_100_001, CLICK_A).await;
    sell(&s, 9_100_002, CLICK_B).await;
    sell(&s, 9_100_003, CLICK_C).await;
    // RedTrack recorded A once, B never (an unknown click ID), C twice (Cartpanda's own postback
    // still pointing at RedTrack), and a click ID of another offer source.
    let row = |click: &str| json!({"clickid": click, "type": "Purchase", "duplicate_status": 0});
    let log =
        json!({"items": [row(CLICK_A), row(CLICK_C), row(CLICK_C), row(CLICK_OTHER)], "total": 4});
    Mock::given(method("GET"))
        .and(path("/conversions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(log))
        .mount(&s.redtrack_api)
        .await;
    // The next day, after the check's delay.
    s.clock.advance(27 * 3_600_000);
    let (logs, guard) = capture_json_logs();
    let answer = scheduled(&s, true).await;
    drop(guard);
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = |message: &str| {
        logs.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no line `{message}` in {logs}"))
    };
    let counted = line("redtrack count");
    assert_eq!(
        (&counted["missing"], &counted["doubled"]),
        (&json!(1), &json!(1))
    );
    let which =
        line("redtrack count: conversions RedTrack recorded differently than sent (event IDs)");
    assert!(
        which["missing"]
            .as_str()
            .unwrap()
            .contains("9100002-purchase"),
        "{which}"
    );
    assert!(
        which["doubled"]
            .as_str()
            .unwrap()
            .contains("9100003-purchase"),
        "{which}"
    );
    for secret_or_click in [API_KEY, CLICK_A, CLICK_B, CLICK_C] {
        assert!(!logs.contains(secret_or_click), "logged: {secret_or_click}");
    }
    let [before, day, after] = days(sold_ms);
    let count = &answer["redtrack"][0];
    assert_eq!(count["day"], day.as_str(), "{answer:#}");
    assert_eq!(count["measured"], true, "{count:#}");
    assert_eq!(
        [
            &count["sent"],
            &count["recorded"],
            &count["missing"],
            &count["doubled"]
        ],
        [3, 3, 1, 1],
        "{count:#}"
    );
    let requests = api_requests(&s).await;
    assert_eq!(requests.len(), 1, "one page");
    assert_eq!(requests[0]["api_key"], API_KEY);
    assert_eq!(
        (&requests[0]["date_from"], &requests[0]["date_to"]),
        (&before, &after)
    );

    // The day is closed: the next run neither reads RedTrack's log nor counts again.
    let again = scheduled(&s, true).await;
    assert!(again.get("redtrack").is_none(), "{again:#}");
    assert_eq!(api_requests(&s).await.len(), 1);

    // The report carries the day's figures.
    let now_ms = s.clock.now_ms();
    let report = cartpanda_redtrack::report::build(
        &s.h.dynamo,
        &s.h.table,
        sold_ms - 3_600_000,
        None,
        now_ms,
        false,
    )
    .await
    .unwrap();
    let purchases = report
        .rows
        .iter()
        .find(|r| r.day == day && r.conversion_type == "Purchase")
        .unwrap_or_else(|| panic!("{:#?}", report.rows));
    assert_eq!(purchases.sent, 3);
    assert_eq!(
        (
            purchases.rt_recorded,
            purchases.rt_missing,
            purchases.rt_doubled
        ),
        (Some(3), Some(1), Some(1))
    );
}

#[tokio::test]
async fn without_an_api_key_the_count_is_skipped_and_says_it_was_not_measured() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let s = setup().await;
    let sold_ms = s.clock.now_ms();
    sell(&s, 9_200_001, CLICK_A).await;
    s.clock.advance(27 * 3_600_000);
    let answer = scheduled(&s, false).await;
    let count = &answer["redtrack"][0];
    assert_eq!(count["measured"], false, "{answer:#}");
    assert_eq!(count["reason"], "no RedTrack API key");
    assert_eq!(count["missing"], 0);
    assert!(
        api_requests(&s).await.is_empty(),
        "RedTrack's API is not asked"
    );
    let [_, day, _] = days(sold_ms);
    let report = cartpanda_redtrack::report::build(
        &s.h.dynamo,
        &s.h.table,
        sold_ms - 3_600_000,
        None,
        s.clock.now_ms(),
        false,
    )
    .await
    .unwrap();
    let row = report.rows.iter().find(|r| r.day == day).unwrap();
    assert_eq!((row.sent, row.rt_recorded), (1, None));
    let csv = cartpanda_redtrack::report::render(&report, cartpanda_redtrack::report::Format::Csv);
    assert!(csv.contains("not measured"), "{csv}");
}

/// A named shop's key, saved by `shop put --redtrack-api-key` in SSM (moto): its day is counted
/// with its own key.
#[tokio::test]
async fn a_named_shop_is_counted_with_the_key_shop_put_kept_in_ssm() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let s = setup().await;
    let shop_token = "loja-rt-webhook-secret-0123";
    let postback_url = format!("{}/postback?clickid={{cid}}", s.h.redtrack.uri());
    let args: Vec<String> = [
        "shop",
        "put",
        "loja-rt",
        "--token",
        shop_token,
        "--postback-url",
        &postback_url,
        "--reconcile",
        "true",
        "--shop-slug",
        "loja-rt-slug",
        "--cartpanda-api-token",
        "cp-api-token-loja",
        "--verify-orders",
        "false",
        "--redtrack-api-key",
        "rt-key-of-loja",
        "--table",
        &s.h.table,
    ]
    .map(str::to_owned)
    .to_vec();
    cartpanda_redtrack::ops::admin::run(&args, &operator_aws())
        .await
        .unwrap();
    let sold_ms = s.clock.now_ms();
    let mut order = paid_order(9_300_001);
    order["order"]["checkout_params"]["cid"] = json!(CLICK_A);
    let event = apigw_event_at(
        "/cartpanda/loja-rt",
        "POST",
        Some(&order.to_string()),
        &[("token", shop_token)],
        &[],
    );
    assert_eq!(deliver_event(&s.h.bridge, event).await.status, 200);
    let log = json!({"items": [{"clickid": CLICK_A, "type": "Purchase"}], "total": 1});
    Mock::given(method("GET"))
        .and(path("/conversions"))
        .and(query_param("api_key", "rt-key-of-loja"))
        .respond_with(ResponseTemplate::new(200).set_body_json(log))
        .mount(&s.redtrack_api)
        .await;
    s.clock.advance(27 * 3_600_000);

    // The reconcile function's bridge reads shops' secrets from SSM.
    let mut reconciler = reconciler(&s, false);
    let ssm = cartpanda_redtrack::ops::secrets::SsmSecrets::from_sdk(&operator_aws());
    let bridge = cartpanda_redtrack::bridge::Bridge {
        config: s.h.bridge.config.clone(),
        ledger: Arc::clone(&s.h.bridge.ledger),
        tracker: Arc::clone(&s.h.bridge.tracker),
        clock: s.clock.clone(),
        queue: None,
        shops: Some(
            cartpanda_redtrack::shops::directory::ShopCache::new(Arc::new(
                reconciler.table.clone(),
            ))
            .with_secrets(Arc::new(ssm)),
        ),
        orders: None,
    };
    reconciler.bridge = Arc::new(bridge);
    let deadline_ms = s.clock.now_ms() + 60_000;
    let answer = cartpanda_redtrack::reconcile::run_scheduled(&reconciler, deadline_ms)
        .await
        .unwrap();
    let answer = serde_json::to_value(answer).unwrap();
    let counts = answer["redtrack"].as_array().unwrap();
    let loja = counts
        .iter()
        .find(|c| c["shop"] == "loja-rt")
        .unwrap_or_else(|| panic!("{answer:#}"));
    assert_eq!(loja["day"], days(sold_ms)[1].as_str());
    assert_eq!(loja["measured"], true, "{loja:#}");
    assert_eq!(
        [
            &loja["sent"],
            &loja["recorded"],
            &loja["missing"],
            &loja["doubled"]
        ],
        [1, 1, 0, 0]
    );
    assert_eq!(api_requests(&s).await.len(), 1);
}

/// RedTrack's API down (503 on every try): the day stays open and nothing is stored; the next run
/// reads the log page by page and closes it.
#[tokio::test]
async fn redtrack_down_leaves_the_day_open_and_the_next_run_reads_every_page() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let s = setup().await;
    let sold_ms = s.clock.now_ms();
    sell(&s, 9_400_001, CLICK_A).await;
    sell(&s, 9_400_002, CLICK_C).await;
    Mock::given(method("GET"))
        .and(path("/conversions"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "0"))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&s.redtrack_api)
        .await;
    s.clock.advance(27 * 3_600_000);
    let down = scheduled(&s, true).await;
    assert!(down.get("redtrack").is_none(), "{down:#}");
    assert_eq!(api_requests(&s).await.len(), 3, "three tries");
    let day = &days(sold_ms)[1];
    let stored = item(&s.h, &format!("rtcount#default#{day}")).await;
    assert!(stored.is_none(), "the day stays open");

    // A full first page (another source's conversions and A's), then C's on the second.
    let mut first: Vec<Value> = (0..999)
        .map(|n| json!({"clickid": format!("{CLICK_OTHER}{n}"), "type": "Purchase"}))
        .collect();
    first.push(json!({"clickid": CLICK_A, "type": "Purchase"}));
    for (page, items) in [
        ("1", first),
        ("2", vec![json!({"clickid": CLICK_C, "type": "Purchase"})]),
    ] {
        Mock::given(method("GET"))
            .and(path("/conversions"))
            .and(query_param("page", page))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"items": items, "total": 1001})),
            )
            .mount(&s.redtrack_api)
            .await;
    }
    let answer = scheduled(&s, true).await;
    let count = &answer["redtrack"][0];
    assert_eq!(
        [
            &count["sent"],
            &count["recorded"],
            &count["missing"],
            &count["doubled"]
        ],
        [2, 2, 0, 0],
        "{count:#}"
    );
    let pages: Vec<String> = api_requests(&s).await[3..]
        .iter()
        .map(|q| q["page"].clone())
        .collect();
    assert_eq!(pages, ["1", "2"]);
    let stored = item(&s.h, &format!("rtcount#default#{day}")).await.unwrap();
    assert_eq!(stored["measured"].as_bool().ok(), Some(&true));
}

#[tokio::test]
async fn two_runs_of_a_shop_overlapping_count_its_day_once() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let s = setup().await;
    sell(&s, 9_400_001, CLICK_A).await;
    // RedTrack's log answers slowly: both runs read the day as not counted, both measure it.
    let log = json!({"items": [{"clickid": CLICK_A, "type": "Purchase"}], "total": 1});
    Mock::given(method("GET"))
        .and(path("/conversions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(log)
                .set_delay(Duration::from_millis(400)),
        )
        .mount(&s.redtrack_api)
        .await;
    s.clock.advance(27 * 3_600_000);
    let (first, second) = (reconciler(&s, true), reconciler(&s, true));
    let deadline_ms = s.clock.now_ms() + 60_000;
    use cartpanda_redtrack::reconcile::rtcount::check;
    let (a, b) = tokio::join!(
        check(&first, None, deadline_ms),
        check(&second, None, deadline_ms)
    );
    assert_eq!(api_requests(&s).await.len(), 2, "both measured");
    // One stored the day and counted it (its metrics, its log line); the other found it
    // stored and counted nothing: the alarms' sums see the day once.
    assert_eq!(
        [a.is_some(), b.is_some()].iter().filter(|x| **x).count(),
        1,
        "{a:?} {b:?}"
    );
}
