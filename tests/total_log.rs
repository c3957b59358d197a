//! The total in cents decides, and a formatted total that disagrees is logged with the order ID
//! and both values, never PII (issue 14). Alone in its test binary: tracing caches a log
//! call site's interest on first use, so a test without a subscriber could turn these lines off.

mod common;

use common::*;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

#[tokio::test]
async fn a_formatted_total_that_disagrees_with_the_cents_is_logged_and_the_cents_are_sent() {
    let (capture, _guard) = capture_json_logs();
    let h = harness().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    let mut body = paid_order(990_001);
    body["order"]["unformatted_total_price"] = json!(123400);
    let answer = deliver(&h, &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(postbacks(&h).await[0]["sum"], "1234.00", "the cents win");

    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"] == "the formatted total disagrees with the total in cents; the cents win"
        })
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["order_id"], "990001");
    assert_eq!(lines[0]["total_price"], "1234.56");
    assert_eq!(lines[0]["unformatted_total_price"], "1234.00");
    assert_eq!(lines[0]["level"], "WARN");
    let line = lines[0].to_string().to_lowercase();
    for pii in ["joao", "conceição", "98765", "gmail", "123.456.789"] {
        assert!(!line.contains(pii), "no PII: {pii} in {line}");
    }
}
