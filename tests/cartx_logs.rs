//! The decision log lines mark orders whose only test mark is `is_cartx_test` (`cartx_test`),
//! whatever `CARTX_TEST_ORDERS` says. Alone in its test binary: tracing caches a log call
//! site's interest on first use, so a test without a subscriber could turn these lines off here.

mod common;

use common::*;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

async fn sample_harness(setting: &str) -> Harness {
    let redtrack = wiremock::MockServer::start().await;
    let mut h = harness_with(Options {
        env: vec![
            ("WEBHOOK_TOKEN", "demo-token".to_owned()),
            (
                "REDTRACK_POSTBACK_URL",
                format!(
                    "{}/postback?clickid={{cid}}&sum={{total_price}}",
                    redtrack.uri()
                ),
            ),
            ("CARTX_TEST_ORDERS", setting.to_owned()),
        ],
        ..Options::default()
    })
    .await;
    h.redtrack = redtrack;
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    h
}

/// The JSON log lines with `message` = `wanted`, captured while `deliver` runs.
async fn log_lines(wanted: &str, setting: &str) -> Vec<Value> {
    let (capture, _guard) = capture_json_logs();
    let h = sample_harness(setting).await;
    deliver_event(&h.bridge, sample("paid-cartx-usd.json")).await;
    deliver_event(&h.bridge, sample("paid-discounted.json")).await;
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == wanted)
        .collect()
}

#[tokio::test]
async fn the_decision_log_line_marks_cartx_test_orders_whatever_the_setting() {
    let sent = log_lines("conversion", "send").await;
    let marks: Vec<(&str, &Value)> = sent
        .iter()
        .map(|l| (l["order_id"].as_str().unwrap(), &l["cartx_test"]))
        .collect();
    assert_eq!(
        marks,
        vec![
            ("49805512", &Value::from(true)),
            ("51877302", &Value::from(false))
        ]
    );
    let skipped = log_lines("delivery skipped", "skip").await;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["order_id"], "49805512");
    assert_eq!(skipped[0]["reason"], "test_order");
    assert_eq!(skipped[0]["cartx_test"], true);
}
