//! The catalogue of bad requests: each class through the runtime adapter and the real handler,
//! with its exact status and error message, and for every one: no request to RedTrack, no claim
//! left in the table (only the 422s' refusal records and the no-click-ID notes), no panic.

mod common;

use base64::Engine;
use common::*;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

struct Case {
    name: &'static str,
    event: Value,
    status: u16,
    /// The exact `error` (or, for 200, the `skipped` reason).
    message: String,
}

fn case(name: &'static str, event: Value, status: u16, message: &str) -> Case {
    Case {
        name,
        event,
        status,
        message: message.to_owned(),
    }
}

fn with_order(
    name: &'static str,
    edit: impl FnOnce(&mut Value),
    status: u16,
    message: &str,
) -> Case {
    let mut body = paid_order(777_001);
    edit(&mut body);
    case(name, post(&body), status, message)
}

fn raw(body: &str) -> Value {
    apigw_event("POST", Some(body), &[("token", TOKEN)], &[])
}

fn base64_event(body: &str) -> Value {
    let mut e = raw("");
    e["body"] = json!(body);
    e["isBase64Encoded"] = json!(true);
    e
}

fn catalogue() -> Vec<Case> {
    let good = paid_order(777_001).to_string();
    let b64 = base64::engine::general_purpose::STANDARD;
    let amount = |name, value: Value, message: &str| {
        with_order(
            name,
            move |b| b["order"]["total_price"] = value,
            422,
            message,
        )
    };
    let id = |name, value: Value, message: &str| {
        with_order(name, move |b| b["order"]["id"] = value, 422, message)
    };
    let cid = |name, value: Value, status, message: &str| {
        with_order(
            name,
            move |b| b["order"]["checkout_params"]["cid"] = value,
            status,
            message,
        )
    };
    let missing_token =
        "missing token: pass ?token=... in the webhook URL or an X-Webhook-Token header";
    vec![
        // The gate.
        case(
            "no token",
            apigw_event("POST", Some(&good), &[], &[]),
            401,
            missing_token,
        ),
        case(
            "empty token",
            apigw_event("POST", Some(&good), &[("token", "")], &[]),
            401,
            "the token is empty",
        ),
        case(
            "wrong token",
            apigw_event("POST", Some(&good), &[("token", "nope")], &[]),
            401,
            "invalid token",
        ),
        case(
            "token too long",
            apigw_event("POST", Some(&good), &[("token", &"t".repeat(10_000))], &[]),
            401,
            "invalid token",
        ),
        case(
            "token in other case",
            apigw_event(
                "POST",
                Some(&good),
                &[("token", &TOKEN.to_uppercase())],
                &[],
            ),
            401,
            "invalid token",
        ),
        case(
            "token with trailing space",
            apigw_event("POST", Some(&good), &[("token", &format!("{TOKEN} "))], &[]),
            401,
            "invalid token",
        ),
        case(
            "wrong header token",
            apigw_event("POST", Some(&good), &[], &[("X-Webhook-Token", "nope")]),
            401,
            "invalid token",
        ),
        case(
            "query and header disagree",
            apigw_event(
                "POST",
                Some(&good),
                &[("token", TOKEN)],
                &[("X-Webhook-Token", "other")],
            ),
            401,
            "the token in the query and the X-Webhook-Token header disagree",
        ),
        case(
            "wrong token and bad body",
            apigw_event("POST", Some("[[["), &[("token", "nope")], &[]),
            401,
            "invalid token",
        ),
        // The method.
        case(
            "GET",
            apigw_event("GET", None, &[("token", TOKEN)], &[]),
            405,
            "method GET is not allowed; Cartpanda webhooks are POSTed",
        ),
        case(
            "PUT",
            apigw_event("PUT", Some(&good), &[("token", TOKEN)], &[]),
            405,
            "method PUT is not allowed; Cartpanda webhooks are POSTed",
        ),
        case(
            "DELETE",
            apigw_event("DELETE", None, &[("token", TOKEN)], &[]),
            405,
            "method DELETE is not allowed; Cartpanda webhooks are POSTed",
        ),
        // The body as bytes.
        case("empty body", raw(""), 400, "request body is empty"),
        case(
            "no body",
            apigw_event("POST", None, &[("token", TOKEN)], &[]),
            400,
            "request body is empty",
        ),
        case(
            "body over the limit",
            raw(&format!(
                "{{\"event\":\"order.paid\",\"pad\":\"{}\"}}",
                "x".repeat(300_000)
            )),
            413,
            "request body is 300031 bytes; the limit is 262144",
        ),
        case(
            "not UTF-8",
            base64_event(&b64.encode(b"{\"event\":\"order.paid\",\"x\":\"\xff\xfe\"}")),
            400,
            "request body is not valid UTF-8",
        ),
        case(
            "broken base64",
            base64_event("eyJldmVudCI6Im9y!!!"),
            400,
            "request body is marked base64-encoded but is not valid base64",
        ),
        case(
            "form-encoded",
            apigw_event(
                "POST",
                Some("event=order.paid&order_id=1"),
                &[("token", TOKEN)],
                &[("content-type", "application/x-www-form-urlencoded")],
            ),
            415,
            "content type `application/x-www-form-urlencoded` is not supported; send the webhook as application/json",
        ),
        case(
            "multipart",
            apigw_event(
                "POST",
                Some("--x\r\n"),
                &[("token", TOKEN)],
                &[("content-type", "multipart/form-data; boundary=x")],
            ),
            415,
            "content type `multipart/form-data` is not supported; send the webhook as application/json",
        ),
        case(
            "form-encoded without content type",
            raw("event=order.paid&order_id=1"),
            400,
            "request body is not valid JSON: expected a JSON object (is it form-encoded?)",
        ),
        // JSON shape.
        case(
            "JSON array",
            raw("[{\"event\":\"order.paid\"}]"),
            400,
            "request body must be a JSON object, got an array",
        ),
        case(
            "JSON string",
            raw("\"order.paid\""),
            400,
            "request body must be a JSON object, got a string",
        ),
        case(
            "JSON null",
            raw("null"),
            400,
            "request body must be a JSON object, got null",
        ),
        case(
            "JSON number",
            raw("12"),
            400,
            "request body must be a JSON object, got a number",
        ),
        case(
            "truncated JSON",
            raw("{\"event\":\"order.paid\",\"order\":{\"id\":1"),
            400,
            "request body is not valid JSON: unexpected end of input at line 1, column 37",
        ),
        case(
            "nested 10k deep",
            raw(&format!(
                "{{\"event\":\"order.paid\",\"order\":{}{}}}",
                "[".repeat(10_000),
                "]".repeat(10_000)
            )),
            400,
            "request body is nested too deeply",
        ),
        // serde_json's own recursion limit (128) does not apply to fields it skips (`ignore_value`
        // is iterative), so the depth check of `webhook::parse` stays: this body would pass
        // serde_json alone.
        case(
            "nested 10k deep in a field nobody reads",
            raw(&format!(
                "{{\"event\":\"order.paid\",\"order\":{{\"id\":1}},\"extra\":{}{}}}",
                "[".repeat(10_000),
                "]".repeat(10_000)
            )),
            400,
            "request body is nested too deeply",
        ),
        case(
            "duplicate keys",
            raw("{\"event\":\"order.paid\",\"order\":{\"id\":1,\"id\":2}}"),
            400,
            "request body has a duplicate key: `id`",
        ),
        case(
            "duplicate event key",
            raw("{\"event\":\"order.paid\",\"event\":\"order.refunded\",\"order\":{}}"),
            400,
            "request body has a duplicate key: `event`",
        ),
        case(
            "event missing",
            raw("{\"order\":{\"id\":1}}"),
            400,
            "`event` is missing",
        ),
        case(
            "event not a string",
            raw("{\"event\":[\"order.paid\"],\"order\":{\"id\":1}}"),
            400,
            "`event` must be a non-empty string",
        ),
        case(
            "order missing",
            raw("{\"event\":\"order.paid\"}"),
            400,
            "`order` is missing",
        ),
        case(
            "order not an object",
            raw("{\"event\":\"order.paid\",\"order\":\"48213577\"}"),
            400,
            "`order` must be an object, got a string",
        ),
        // The order ID.
        with_order(
            "order ID missing",
            |b| {
                b["order"].as_object_mut().unwrap().remove("id");
            },
            422,
            "`order.id` is missing",
        ),
        id("order ID zero", json!(0), "`order.id` must not be zero"),
        id(
            "order ID negative",
            json!(-48213577),
            "`order.id` must not be negative",
        ),
        id(
            "order ID float",
            json!(48213577.5),
            "`order.id` must be a whole number",
        ),
        id(
            "order ID huge",
            json!("184467440737095516160"),
            "`order.id` is too large",
        ),
        id(
            "order ID not a number",
            json!("48213577; DROP TABLE"),
            "`order.id` must be a whole number",
        ),
        // Amounts.
        amount(
            "amount abc",
            json!("abc"),
            "`order.total_price` is not a number",
        ),
        amount(
            "amount NaN",
            json!("NaN"),
            "`order.total_price` is not a number",
        ),
        amount(
            "amount 1e309",
            json!("1e309"),
            "`order.total_price` is not a number",
        ),
        amount(
            "amount negative",
            json!("-5,00"),
            "`order.total_price` is negative",
        ),
        amount(
            "amount bad grouping",
            json!("1.2.3,4"),
            "`order.total_price` has misplaced thousands separators",
        ),
        amount("amount empty", json!(""), "`order.total_price` is empty"),
        amount(
            "amount absurd",
            json!("99.999.999.999.999,00"),
            "`order.total_price` is out of range",
        ),
        with_order(
            "upsell price bad",
            |b| {
                b["event"] = json!("order.upsell");
                b["order"]["line_items"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"id": 5, "price": "R$ abc", "up_sell_id": 9}));
            },
            422,
            "`order.line_items[1].price` is not a number",
        ),
        // The click ID.
        cid("click ID empty", json!(""), 200, "no_click_id"),
        cid("click ID whitespace", json!(" \t "), 200, "no_click_id"),
        cid(
            "click ID 5 KB",
            json!("a".repeat(5000)),
            422,
            "`checkout_params.cid` is too long to be a RedTrack click ID",
        ),
        cid(
            "click ID with &",
            json!("abc&sum=999"),
            422,
            "`checkout_params.cid` holds characters a RedTrack click ID never has",
        ),
        cid(
            "click ID with newline",
            json!("abc\ndef"),
            422,
            "`checkout_params.cid` holds characters a RedTrack click ID never has",
        ),
        // Events and sizes.
        with_order(
            "unknown event",
            |b| b["event"] = json!("order.exploded"),
            200,
            "event_not_mapped",
        ),
        with_order(
            "10,000 line items",
            |b| {
                b["order"]["line_items"] = Value::Array((0..10_000).map(|_| json!({})).collect());
            },
            422,
            "order has 10000 line items; at most 500 are accepted",
        ),
    ]
}

#[tokio::test]
async fn every_class_of_bad_request_gets_its_precise_answer_and_leaves_nothing() {
    let h = harness().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    let cases = catalogue();
    assert!(
        cases.len() >= 30,
        "the catalogue covers at least 30 classes"
    );
    let mut failures = Vec::new();
    for c in cases {
        let answer = deliver_event(&h.bridge, c.event).await;
        let got = if answer.status == 200 {
            answer.body["skipped"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        } else {
            answer.body["error"].as_str().unwrap_or_default().to_owned()
        };
        if answer.status != c.status || got != c.message {
            failures.push(format!(
                "{}: expected {} {:?}, got {} {:?}",
                c.name, c.status, c.message, answer.status, got
            ));
        }
        if answer.status == 405
            && answer.headers.get("allow").map(|v| v.to_str().unwrap()) != Some("POST")
        {
            failures.push(format!("{}: 405 without `Allow: POST`", c.name));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_eq!(postbacks(&h).await.len(), 0, "no request reached RedTrack");
    // Nothing but the 422s' refusal records (`refused#…`) and the no-click-ID notes (an empty or
    // blank click ID is no click ID): no claim.
    let keys = record_keys(&h).await;
    assert!(
        keys.iter().all(|k| k.starts_with("refused#")
            || (k.starts_with("note#") && k.ends_with("#no_click_id"))),
        "no other record was left in the table: {keys:?}"
    );
    assert_eq!(claims(&h).await, 0, "no claim was left in the table");
    assert!(refusals(&h).await > 0, "the 422s were recorded");
}

#[tokio::test]
async fn a_base64_encoded_delivery_is_read_like_any_other() {
    let h = harness().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    let body = paid_order(777_002).to_string();
    let mut event = base64_event(&base64::engine::general_purpose::STANDARD.encode(body));
    event["headers"]["x-webhook-token"] = json!(TOKEN);
    let answer = deliver_event(&h.bridge, event).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["conversions"][0]["outcome"], "sent");
    assert_eq!(postbacks(&h).await.len(), 1);
}

#[tokio::test]
async fn a_client_cannot_forge_the_bad_base64_marker() {
    let h = harness().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    let event = apigw_event(
        "POST",
        Some(&paid_order(777_003).to_string()),
        &[("token", TOKEN)],
        &[(cartpanda_redtrack::inbound::http::BAD_BASE64_MARKER, "1")],
    );
    assert_eq!(deliver_event(&h.bridge, event).await.status, 200);
}
