//! Reconciliation against Cartpanda as its public clients see it (issue 22): a stand-in of the
//! order list that answers in each list shape (a Laravel paginator, `orders` + `meta`, a bare
//! array) and speaks each time convention (UTC times with offsets; naive America/Sao_Paulo times
//! with its filters read in that zone; the same with the zone nowhere said). Driven through the
//! scheduled run the reconcile handler calls, with moto as the ledger and wiremock as RedTrack.

mod common;

use cartpanda_redtrack::inbound::datetime::{format_utc, parse_unix};
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::reconcile::config::ReconcileSettings;
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wiremock::{Mock, MockServer, ResponseTemplate};

const SAO_PAULO_S: i64 = -3 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `{"orders": {"data": [...], current_page, last_page, per_page}}`, honouring `limit`.
    Paginator,
    /// `{"orders": [...], "meta": {current_page, last_page, per_page, total}}`, 2 a page
    /// whatever `limit` asks.
    Meta,
    /// A bare array, 2 a page whatever `limit` asks, nothing said of the pages.
    Bare,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Times {
    /// `created_at` in UTC with an offset (`…000000Z`, `+00:00`); filters read as UTC; orders
    /// say `shop.timezone` America/Sao_Paulo.
    Utc,
    /// The same times, but filters read as São Paulo times (Laravel writes UTC whatever zone it
    /// compares filters in).
    UtcShownLocalFilters,
    /// Naive São Paulo times, filters read as São Paulo times, `shop.timezone` said.
    SaoPaulo,
    /// As `SaoPaulo`, but no order says its zone and none is configured.
    Unknown,
}

/// The stand-in: orders (each with its creation instant), filtered and paged per request.
#[derive(Clone)]
struct Cartpanda {
    shape: Shape,
    times: Times,
    orders: Arc<Mutex<Vec<(i64, Value)>>>,
}

impl Cartpanda {
    fn add(&self, id: u64, created_s: i64) {
        let mut order = paid_order(id)["order"].clone();
        order["payment_status"] = json!(3);
        order["created_at"] = json!(match self.times {
            Times::Utc | Times::UtcShownLocalFilters if id % 2 == 0 => {
                format_utc(created_s).replace(' ', "T") + ".000000Z"
            }
            Times::Utc | Times::UtcShownLocalFilters => {
                format_utc(created_s).replace(' ', "T") + "+00:00"
            }
            Times::SaoPaulo | Times::Unknown => format_utc(created_s + SAO_PAULO_S),
        });
        if self.times != Times::Unknown {
            order["shop"]["timezone"] = json!("America/Sao_Paulo");
        }
        self.orders.lock().unwrap().push((created_s, order));
    }

    /// A filter's instant, read in the stand-in's convention.
    fn filter(&self, query: &HashMap<String, String>, name: &str) -> Option<i64> {
        let fields = parse_unix(query.get(name)?)?;
        Some(match self.times {
            Times::Utc => fields,
            Times::SaoPaulo | Times::Unknown | Times::UtcShownLocalFilters => fields - SAO_PAULO_S,
        })
    }

    fn listed(&self, query: &HashMap<String, String>) -> Vec<Value> {
        let (min, max) = (
            self.filter(query, "created_at_min"),
            self.filter(query, "created_at_max"),
        );
        let mut orders: Vec<(i64, Value)> = self.orders.lock().unwrap().clone();
        orders.sort_by_key(|(_, o)| o["id"].as_u64());
        orders
            .into_iter()
            .filter(|(t, _)| min.is_none_or(|m| *t >= m) && max.is_none_or(|m| *t <= m))
            .map(|(_, o)| o)
            .collect()
    }
}

impl wiremock::Respond for Cartpanda {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let query: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
        let number = |k: &str| query.get(k).and_then(|v| v.parse::<usize>().ok());
        let listed = self.listed(&query);
        let per_page = match self.shape {
            Shape::Paginator => number("limit").unwrap_or(15),
            Shape::Meta | Shape::Bare => 2,
        };
        let page = number("page").unwrap_or(1).max(1);
        let data: Vec<Value> = listed
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .cloned()
            .collect();
        let last_page = listed.len().div_ceil(per_page).max(1);
        let about = json!({"current_page": page, "last_page": last_page,
                           "per_page": per_page, "total": listed.len()});
        let body = match self.shape {
            Shape::Paginator => {
                let mut paginator = about;
                paginator["data"] = json!(data);
                json!({ "orders": paginator })
            }
            Shape::Meta => json!({"orders": data, "meta": about}),
            Shape::Bare => json!(data),
        };
        ResponseTemplate::new(200).set_body_json(body)
    }
}

struct Setup {
    h: Harness,
    cartpanda: MockServer,
    reconciler: cartpanda_redtrack::reconcile::run::Reconciler,
}

async fn setup(shape: Shape, times: Times) -> (Setup, Cartpanda) {
    let h = harness().await;
    redtrack_accepts(&h).await;
    let cartpanda = MockServer::start().await;
    let list_url = format!("{}/api/v3/{{shop_slug}}/orders", cartpanda.uri());
    let vars: HashMap<&str, &str> = HashMap::from([
        ("RECONCILE", "true"),
        ("CARTPANDA_API_TOKEN", "cp-api-token-for-tests"),
        ("CARTPANDA_SHOP_SLUG", "vitalidade-natural"),
        ("CARTPANDA_ORDER_LIST_URL", list_url.as_str()),
        ("CARTPANDA_ORDER_LIST_LIMIT", "3"),
        ("CARTPANDA_API_MIN_INTERVAL_MS", "0"),
        ("RECONCILE_SETTLE_MIN", "0"),
    ]);
    let mut settings =
        ReconcileSettings::from_lookup(|k| vars.get(k).map(|v| v.to_string())).expect("settings");
    settings.margin = Duration::from_millis(300);
    let fake = Cartpanda {
        shape,
        times,
        orders: Arc::default(),
    };
    Mock::given(wiremock::matchers::method("GET"))
        .respond_with(fake.clone())
        .mount(&cartpanda)
        .await;
    let reconciler = reconciler(&h, settings);
    let setup = Setup {
        h,
        cartpanda,
        reconciler,
    };
    (setup, fake)
}

fn now_s() -> i64 {
    SystemClock.now_ms() / 1000
}

/// One scheduled run (the reconcile handler's), the default shop's summary as JSON.
async fn scheduled(s: &Setup) -> Value {
    let deadline_ms = SystemClock.now_ms() + 60_000;
    let answer = cartpanda_redtrack::reconcile::run_scheduled(&s.reconciler, deadline_ms)
        .await
        .expect("scheduled run");
    serde_json::to_value(&answer.shops[0]).unwrap()
}

async fn sent_since(s: &Setup, from: usize) -> Vec<String> {
    let mut ids: Vec<String> = postbacks(&s.h).await[from..]
        .iter()
        .map(|p| p["rdtk_event_id"].clone())
        .collect();
    ids.sort();
    ids
}

/// The last list request's `created_at_max`, read as written (its fields as if UTC).
async fn last_max(s: &Setup) -> i64 {
    let requests = s.cartpanda.received_requests().await.unwrap_or_default();
    let query: HashMap<String, String> = requests
        .last()
        .expect("a list request")
        .url
        .query_pairs()
        .into_owned()
        .collect();
    parse_unix(&query["created_at_max"]).expect("created_at_max")
}

/// The first run sends each missing order once, the second nothing; an order created after
/// them is found by a run whose filters are written exactly in the zone learned (none: widened),
/// and the run after it sends nothing.
async fn missing_orders_are_sent_once(shape: Shape, times: Times) {
    let label = format!("{shape:?} × {times:?}");
    let (s, fake) = setup(shape, times).await;
    let now = now_s();
    // Five orders whose webhooks never came, one that came; created over the first window
    // (the last 24 h).
    for (id, hours_ago) in [(2101, 1), (2102, 2), (2103, 5), (2104, 11), (2105, 23)] {
        fake.add(id, now - hours_ago * 3600);
    }
    fake.add(2106, now - 3 * 3600);
    assert_eq!(
        deliver(&s.h, &paid_order(2106)).await.status,
        200,
        "{label}"
    );

    let first = scheduled(&s).await;
    assert_eq!(first["complete"], true, "{label}: {first}");
    assert_eq!(
        sent_since(&s, 1).await,
        [
            "2101-purchase",
            "2102-purchase",
            "2103-purchase",
            "2104-purchase",
            "2105-purchase"
        ],
        "{label}: {first}"
    );
    assert_eq!(first["already_sent"], 1, "{label}: {first}");
    let second = scheduled(&s).await;
    assert_eq!(postbacks(&s.h).await.len(), 6, "{label}: {second}");

    let before = postbacks(&s.h).await.len();
    // Filters read as UTC, written in the shop's zone (`Z` shows nothing of it): the window lags
    // three hours behind what it means, and finds an order three hours late — never runs ahead.
    let lag = match times {
        Times::Utc => 3 * 3600 + 60,
        _ => 1,
    };
    fake.add(2107, now_s() - lag);
    let third = scheduled(&s).await;
    assert_eq!(
        sent_since(&s, before).await,
        ["2107-purchase"],
        "{label}: {third}"
    );
    let written_max = last_max(&s).await;
    let expected_max = match times {
        Times::Utc | Times::SaoPaulo | Times::UtcShownLocalFilters => now_s() + SAO_PAULO_S,
        Times::Unknown => now_s() + 14 * 3600,
    };
    assert!(
        (written_max - expected_max).abs() < 120,
        "{label}: created_at_max {} {third}",
        format_utc(written_max)
    );
    let zone = match times {
        Times::Utc | Times::SaoPaulo | Times::UtcShownLocalFilters => json!("America/Sao_Paulo"),
        Times::Unknown => Value::Null,
    };
    assert_eq!(third["timezone"], zone, "{label}: {third}");
    assert_eq!(
        third["widened"],
        times == Times::Unknown,
        "{label}: {third}"
    );
    let fourth = scheduled(&s).await;
    assert_eq!(postbacks(&s.h).await.len(), 7, "{label}: {fourth}");
    assert_eq!(fourth["complete"], true, "{label}: {fourth}");
}

#[tokio::test]
async fn the_laravel_paginator_in_each_time_convention() {
    for times in [
        Times::Utc,
        Times::UtcShownLocalFilters,
        Times::SaoPaulo,
        Times::Unknown,
    ] {
        missing_orders_are_sent_once(Shape::Paginator, times).await;
    }
}

#[tokio::test]
async fn orders_with_meta_in_each_time_convention() {
    for times in [
        Times::Utc,
        Times::UtcShownLocalFilters,
        Times::SaoPaulo,
        Times::Unknown,
    ] {
        missing_orders_are_sent_once(Shape::Meta, times).await;
    }
}

#[tokio::test]
async fn a_bare_array_in_each_time_convention() {
    for times in [
        Times::Utc,
        Times::UtcShownLocalFilters,
        Times::SaoPaulo,
        Times::Unknown,
    ] {
        missing_orders_are_sent_once(Shape::Bare, times).await;
    }
}

#[tokio::test]
async fn a_named_shops_configured_zone_writes_its_first_window_in_that_zone() {
    // São Paulo's naive times, nothing in the orders says so: `shop put … --timezone`.
    let (mut s, fake) = setup(Shape::Meta, Times::Unknown).await;
    s.reconciler.settings.default_shop = None;
    let postback_url = format!("{}{TEMPLATE_PATH}", s.h.redtrack.uri());
    let args: Vec<String> = [
        "shop",
        "put",
        "loja-sp",
        "--token",
        "shop-secret-0123456789",
        "--postback-url",
        postback_url.as_str(),
        "--cartpanda-api-token",
        "cp-api-token-for-tests",
        "--reconcile",
        "true",
        "--shop-slug",
        "vitalidade-natural",
        "--timezone",
        "America/Sao_Paulo",
    ]
    .map(str::to_owned)
    .to_vec();
    let record = cartpanda_redtrack::ops::admin::shop_record(&args).expect("shop put");
    s.reconciler.table.put_shop(&record, 0).await.unwrap();
    let now = now_s();
    for (id, hours_ago) in [(2201, 1), (2202, 23)] {
        fake.add(id, now - hours_ago * 3600);
    }
    let first = scheduled(&s).await;
    assert_eq!(first["shop"], "loja-sp", "{first}");
    assert_eq!(
        (first["timezone"].as_str(), first["widened"].as_bool()),
        (Some("America/Sao_Paulo"), Some(false)),
        "{first}"
    );
    assert_eq!(
        sent_since(&s, 0).await,
        ["2201-purchase", "2202-purchase"],
        "{first}"
    );
    // The first run measured the day before's coverage after its own listing (a list request of
    // that day): the next run's request is the run's own.
    let second = scheduled(&s).await;
    assert_eq!(second["widened"], false, "{second}");
    assert!((last_max(&s).await - (now_s() + SAO_PAULO_S)).abs() < 120);

    // A zone this version does not know is refused with its name.
    let mut bad = args.clone();
    *bad.last_mut().unwrap() = "Mars/Olympus".to_owned();
    let refused = cartpanda_redtrack::ops::admin::shop_record(&bad).unwrap_err();
    assert!(
        refused.contains("`Mars/Olympus` is not a time zone"),
        "{refused}"
    );
}
