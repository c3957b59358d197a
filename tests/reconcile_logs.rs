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
    let mut env = default_shop_env(&cartpanda);
    env.push(("RECONCILE_SETTLE_MIN", "0".to_owned()));
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

/// Runs the reconciliation program once as a local run does (no Lambda runtime), with `env` and
/// the test's AWS endpoints (moto); returns its exit status, every JSON value it printed on
/// stdout (log lines, EMF lines, then its answer), and stdout and stderr as text.
fn reconcile_once(env: &[(&str, String)]) -> (bool, Vec<serde_json::Value>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cartpanda-redtrack-reconcile"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
        cmd.env(k, v);
    }
    cmd.env("AWS_LAMBDA_LOG_FORMAT", "json");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the reconciliation program runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let values = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .collect();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), values, text)
}

/// A table in moto and the default shop's settings, its order list at `cartpanda`.
async fn program_env(
    cartpanda: &MockServer,
) -> (
    aws_sdk_dynamodb::Client,
    String,
    Vec<(&'static str, String)>,
) {
    let dynamo = dynamo_client(&moto_endpoint());
    let table = create_table(&dynamo).await;
    let mut env = default_shop_env(cartpanda);
    env.push(("DEDUP_TABLE", table.clone()));
    env.push((
        "REDTRACK_POSTBACK_URL",
        "http://127.0.0.1:9/postback?clickid={cid}&sum={total_price}".to_owned(),
    ));
    (dynamo, table, env)
}

/// The default shop reconciled against the order list at `cartpanda`.
fn default_shop_env(cartpanda: &MockServer) -> Vec<(&'static str, String)> {
    vec![
        ("RECONCILE", "true".to_owned()),
        ("CARTPANDA_API_TOKEN", API_TOKEN.to_owned()),
        ("CARTPANDA_SHOP_SLUG", "loja".to_owned()),
        (
            "CARTPANDA_ORDER_LIST_URL",
            format!("{}/api/v3/{{shop_slug}}/orders", cartpanda.uri()),
        ),
        ("CARTPANDA_API_MIN_INTERVAL_MS", "10".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_api_token_counts_the_shop_failed_and_stale_in_the_emf_line() {
    let cartpanda = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&cartpanda)
        .await;
    let (dynamo, table, mut env) = program_env(&cartpanda).await;
    env.push(("WEBHOOK_TOKEN", TOKEN.to_owned()));
    // The shop's last complete run was three hours ago.
    let three_hours_ago = SystemClock.now_ms() / 1000 - 3 * 3600;
    use aws_sdk_dynamodb::types::AttributeValue as V;
    dynamo
        .put_item()
        .table_name(&table)
        .item("pk", V::S("watermark#default".into()))
        .item("kind", V::S("watermark".into()))
        .item("watermark_s", V::N(three_hours_ago.to_string()))
        .send()
        .await
        .unwrap();

    let (ok, values, text) = reconcile_once(&env);
    assert!(ok, "the run itself ends normally:\n{text}");
    let emf = |name: &str| {
        values
            .iter()
            .filter(|v| v.get("_aws").is_some())
            .find_map(|v| v.get(name).cloned())
    };
    assert_eq!(emf("ReconcileShopsFailed"), Some(json!(1)), "{text}");
    assert_eq!(emf("ReconcileShopsStale"), Some(json!(1)), "{text}");
    let metrics_of =
        |v: &serde_json::Value| v["_aws"]["CloudWatchMetrics"][0]["Dimensions"].clone();
    for line in values.iter().filter(|v| v.get("_aws").is_some()) {
        assert_eq!(metrics_of(line), json!([[]]), "no shop dimension: {line}");
    }
    let answer = values.last().unwrap();
    assert_eq!(answer["failed"], json!(["(default)"]), "{text}");
    assert_eq!(answer["stale"], json!(["(default)"]), "{text}");
    assert!(
        text.contains("Cartpanda refused the API token (HTTP 401)"),
        "{text}"
    );
    assert!(!text.contains(API_TOKEN), "the token leaked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_starts_without_the_webhook_token_it_never_uses() {
    let cartpanda = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"orders": {
            "data": [], "current_page": 1, "last_page": 1
        }})))
        .mount(&cartpanda)
        .await;
    let (_, table, mut env) = program_env(&cartpanda).await;
    // No WEBHOOK_TOKEN, and a WEBHOOK_TOKEN_PARAMETER whose SSM read would fail.
    env.push((
        "WEBHOOK_TOKEN_PARAMETER",
        format!("/cartpanda-redtrack/{table}/no-such-parameter"),
    ));
    let (ok, values, text) = reconcile_once(&env);
    assert!(ok, "{text}");
    let answer = values.last().unwrap();
    assert_eq!(answer["shops"][0]["complete"], true, "{text}");
    assert_eq!(answer["failed"], json!([]), "{text}");
}
