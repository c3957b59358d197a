//! Every log line of a reconciliation run (our code at trace, dependencies at what the function
//! allows) while orders with distinctive PII are listed, retried after a 429, sent, skipped and
//! refused: none carries a name, email, phone, document, postback URL, click ID or API token, and
//! the run's own line is there.

mod common;

use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::reconcile::config::ReconcileSettings;
use cartpanda_redtrack::reconcile::run::{RunOptions, Since};
use common::*;
use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_TOKEN: &str = "cp-secret-api-token-7f3a";
const EMAIL: &str = "zephyr.quillon+pii@example.org";
const FIRST: &str = "Zephyrinaqx";
const PHONE: &str = "+55 (11) 97654-3210";
const CPF: &str = "987.654.321-00";
const CLICK: &str = "67d42f3b9a1e5c0012ab7777";

fn pii_order(id: u64) -> serde_json::Value {
    let mut body = paid_order(id);
    body["order"]["customer"] =
        json!({"first_name": FIRST, "email": EMAIL, "phone": PHONE, "cpf": CPF});
    body["order"]["email"] = json!(EMAIL);
    body["order"]["checkout_params"]["cid"] = json!(CLICK);
    body["order"].as_object_mut().unwrap().insert(
        "thank_you_page".into(),
        json!(format!("https://shop.example/obrigado?email={EMAIL}")),
    );
    body["order"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconciliation_run_logs_no_pii_and_says_what_it_did() {
    let capture = capture_everything_logged();

    let h = harness().await;
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    let cartpanda = MockServer::start().await;
    Mock::given(method("GET"))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&cartpanda)
        .await;
    let mut no_click = pii_order(8002);
    no_click["checkout_params"] = json!({"utm_term": EMAIL});
    let mut bad_click = pii_order(8003);
    bad_click["checkout_params"]["cid"] = json!(format!("x&email={EMAIL}"));
    Mock::given(method("GET"))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"orders": {
            "data": [pii_order(8001), no_click, bad_click], "current_page": 1, "last_page": 1
        }})))
        .mount(&cartpanda)
        .await;
    let env = [
        ("RECONCILE", "true".to_owned()),
        ("CARTPANDA_API_TOKEN", API_TOKEN.to_owned()),
        ("CARTPANDA_SHOP_SLUG", "loja".to_owned()),
        (
            "CARTPANDA_ORDER_LIST_URL",
            format!("{}/api/v3/{{shop_slug}}/orders", cartpanda.uri()),
        ),
        ("CARTPANDA_API_MIN_INTERVAL_MS", "10".to_owned()),
        ("RECONCILE_SETTLE_MIN", "0".to_owned()),
    ];
    let mut settings = ReconcileSettings::from_lookup(|k| {
        env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    settings.margin = Duration::from_millis(300);
    let reconciler = reconciler(&h, settings);
    let target = cartpanda_redtrack::reconcile::default_target(&reconciler).unwrap();
    let summary = reconciler
        .run(
            &target,
            RunOptions {
                since: Since::Watermark,
                dry_run: false,
                deadline_ms: SystemClock.now_ms() + 60_000,
            },
        )
        .await;
    assert_eq!(
        (summary.sent, summary.skipped_no_click_id, summary.unusable),
        (1, 1, 1),
        "{summary:?}"
    );

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("reconcile run"), "the run's own line");
    assert!(logs.contains("order list: retrying"), "the 429 is logged");
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    for secret in [
        API_TOKEN,
        EMAIL,
        &encode(EMAIL),
        "zephyr.quillon",
        FIRST,
        PHONE,
        "97654-3210",
        CPF,
        CLICK,
        "clickid=",
        "/postback?",
        "obrigado",
    ] {
        assert!(!logs.contains(secret), "`{secret}` appears in the logs");
    }
}
