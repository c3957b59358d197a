//! Reconciliation end to end: wiremock as Cartpanda's order list and as RedTrack, moto as the
//! ledger, the real bridge and handler for the webhooks that race it.

mod common;

use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::reconcile::config::ReconcileSettings;
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
    let h = harness_with(Options {
        env: env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        ..Options::default()
    })
    .await;
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    let cartpanda = MockServer::start().await;
    let mut vars: HashMap<String, String> = HashMap::from([
        ("RECONCILE".into(), "true".into()),
        ("CARTPANDA_API_TOKEN".into(), API_TOKEN.into()),
        ("CARTPANDA_SHOP_SLUG".into(), SLUG.into()),
        (
            "CARTPANDA_ORDER_LIST_URL".into(),
            format!("{}/api/v3/{{shop_slug}}/orders", cartpanda.uri()),
        ),
        ("CARTPANDA_API_MIN_INTERVAL_MS".into(), "20".into()),
        ("RECONCILE_SETTLE_MIN".into(), "0".into()),
    ]);
    for (k, v) in list_env {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let mut settings = ReconcileSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    settings.margin = Duration::from_millis(300);
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
    ];
    let answer = deliver_event(
        &s.h.bridge,
        apigw_event_at("/cartpanda/s2s", "GET", None, &query, &[]),
    )
    .await;
    assert_eq!(
        answer.body["conversions"][0]["event_id"], "401-upsell-s2s-1",
        "{}",
        answer.body
    );
    serve_page(&s, 1, page(vec![listed(upsell_order(401, false))], 1, 1)).await;
    let summary = run(&s, 60_000).await;
    assert_eq!((summary.sent, summary.already_sent), (1, 1), "{summary:?}");
    assert_eq!(summary.conflicts, 0);
    assert_eq!(
        event_ids(&postbacks(&s.h).await),
        ["401-purchase", "401-upsell-s2s-1"]
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
    assert_eq!(unknown, "no shop `nope`");
    let bad =
        cartpanda_redtrack::reconcile::command(&s.reconciler, "soon", None, true, deadline_ms)
            .await
            .unwrap_err();
    assert!(bad.starts_with("--since `soon`"), "{bad}");
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
