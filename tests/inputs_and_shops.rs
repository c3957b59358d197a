//! Beyond one webhook: Cartpanda's S2S GET as a second input and several stores on one
//! deployment (order verification against Cartpanda's API: tests/verification.rs).

mod common;

use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::admin;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use wiremock::MockServer;

async fn sent_to(server: &MockServer) -> Vec<BTreeMap<String, String>> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/postback")
        .map(|r| r.url.query_pairs().into_owned().collect())
        .collect()
}

fn s2s_query(
    order_id: &str,
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, String)> {
    let mut q: Vec<(&'static str, String)> = vec![
        ("token", TOKEN.to_owned()),
        ("order_id", order_id.to_owned()),
        ("cid", "67d42f3b9a1e5c0012ab34cd".to_owned()),
        ("total_price", "197.00".to_owned()),
        ("currency", "BRL".to_owned()),
        ("product_id", "29662470".to_owned()),
        ("product_name", "Colágeno Verisol".to_owned()),
        ("first_name", "João".to_owned()),
        ("last_name", "Silva".to_owned()),
        ("email", "Joao@Example.com".to_owned()),
        ("phone_number", "(11) 98765-4321".to_owned()),
        ("country", "BR".to_owned()),
        ("order_type", "main".to_owned()),
        ("upsell_no", "0".to_owned()),
        ("is_test", "0".to_owned()),
        ("utm_source", "{utm_source}".to_owned()),
    ];
    for (k, v) in extra {
        q.retain(|(key, _)| key != k);
        q.push((k, (*v).to_owned()));
    }
    q
}

fn s2s_event(query: &[(&'static str, String)]) -> Value {
    let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    apigw_event_at("/cartpanda/s2s", "GET", None, &pairs, &[])
}

#[tokio::test]
async fn s2s_postbacks_go_through_the_same_path() {
    let h = harness().await;
    accept_all(&h.redtrack).await;
    let sale = deliver_event(&h.bridge, s2s_event(&s2s_query("5001", &[]))).await;
    assert_eq!(sale.status, 200, "{}", sale.body);
    assert_eq!(sale.body["event"], "order.paid");
    assert_eq!(sale.body["conversions"][0]["event_id"], "5001-purchase");
    assert_eq!(sale.body["conversions"][0]["outcome"], "sent");

    let upsell = deliver_event(
        &h.bridge,
        s2s_event(&s2s_query(
            "5001",
            &[
                ("order_type", "upsell"),
                ("upsell_no", "1"),
                ("total_price", "97.00"),
                ("product_id", "29662471"),
            ],
        )),
    )
    .await;
    assert_eq!(
        upsell.body["conversions"][0]["event_id"],
        "5001-upsell-s2s-p29662471"
    );
    let second = deliver_event(
        &h.bridge,
        s2s_event(&s2s_query(
            "5001",
            &[
                ("upsell_no", "2"),
                ("total_price", "67.00"),
                ("product_id", "29662472"),
            ],
        )),
    )
    .await;
    assert_eq!(
        second.body["conversions"][0]["event_id"],
        "5001-upsell-s2s-p29662472"
    );
    // Cartpanda repeating the sale's S2S, and the same sale arriving as a webhook: duplicates.
    let again = deliver_event(&h.bridge, s2s_event(&s2s_query("5001", &[]))).await;
    assert_eq!(again.body["conversions"][0]["outcome"], "duplicate");
    let mut webhook = paid_order(5001);
    webhook["order"]["total_price"] = json!("197,00");
    webhook["order"]["currency"] = json!("BRL");
    webhook["order"]["line_items"][0]["price"] = json!("197,00");
    webhook["order"]["payment"]["currency"] = json!("BRL");
    assert_eq!(
        deliver(&h, &webhook).await.body["conversions"][0]["outcome"],
        "duplicate"
    );

    let sent = sent_to(&h.redtrack).await;
    assert_eq!(sent.len(), 3);
    assert_eq!(
        sent.iter()
            .map(|q| (q["type"].as_str(), q["sum"].as_str()))
            .collect::<Vec<_>>(),
        [
            ("Purchase", "197.00"),
            ("Upsell", "97.00"),
            ("Upsell", "67.00")
        ]
    );
    assert_eq!(sent[0]["email"], "joao@example.com");
    assert_eq!(sent[0]["phone"], "+5511987654321");
    assert_eq!(sent[0]["product"], "Colágeno Verisol");
}

#[tokio::test]
async fn s2s_test_orders_bad_methods_and_tokens() {
    let h = harness().await;
    accept_all(&h.redtrack).await;
    let test = deliver_event(
        &h.bridge,
        s2s_event(&s2s_query("5002", &[("is_test", "1")])),
    )
    .await;
    assert_eq!(test.status, 200);
    assert_eq!(test.body["skipped"], "test_order");
    assert!(
        test.body["conversions"][0]["postback"]
            .as_str()
            .unwrap()
            .contains("clickid=67d42f3b9a1e5c0012ab34cd")
    );

    let unfilled = deliver_event(
        &h.bridge,
        s2s_event(&s2s_query("5003", &[("cid", "{cid}")])),
    )
    .await;
    assert_eq!(unfilled.body["skipped"], "no_click_id");

    let mut wrong = s2s_query("5004", &[]);
    wrong[0].1 = "nope".to_owned();
    assert_eq!(
        deliver_event(&h.bridge, s2s_event(&wrong)).await.status,
        401
    );

    let post = apigw_event_at(
        "/cartpanda/s2s",
        "POST",
        Some("{}"),
        &[("token", TOKEN)],
        &[],
    );
    let answer = deliver_event(&h.bridge, post).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.headers["allow"], "GET");
    let missing_id = deliver_event(&h.bridge, s2s_event(&s2s_query("", &[]))).await;
    assert_eq!(missing_id.status, 422);
    assert_eq!(missing_id.body["error"], "`order.id` is missing");
    let nowhere = apigw_event_at(
        "/cartpanda/a/b/c",
        "POST",
        Some("{}"),
        &[("token", TOKEN)],
        &[],
    );
    assert_eq!(deliver_event(&h.bridge, nowhere).await.status, 404);

    assert_eq!(sent_to(&h.redtrack).await.len(), 0);
    // The 422 (no order ID) leaves its refusal record, and the S2S sale whose `{cid}` Cartpanda
    // left unfilled its no-click-ID note; no claim.
    let keys = record_keys(&h).await;
    assert!(
        keys.contains(&"note#5003#no_click_id".to_owned()),
        "{keys:?}"
    );
    assert_eq!(claims(&h).await, 0);
    assert_eq!(refusals(&h).await, 1);
    assert_eq!(keys.len(), 2, "{keys:?}");
}

const TOKEN_A: &str = "store-a-secret-0123456789";
const TOKEN_B: &str = "store-b-secret-9876543210";

async fn put_shop(h: &Harness, name: &str, token: &str, receiver: &MockServer, types: &str) {
    put_shop_with(h, name, token, receiver, types, &[]).await;
}

async fn put_shop_with(
    h: &Harness,
    name: &str,
    token: &str,
    receiver: &MockServer,
    types: &str,
    extra: &[&str],
) {
    let postback = format!(
        "{}/postback?clickid={{cid}}&sum={{total_price}}&store={name}&is_test={{is_test}}",
        receiver.uri()
    );
    let args: Vec<String> = [
        "store",
        "put",
        name,
        "--token",
        token,
        "--postback-url",
        &postback,
        "--conversion-types",
        types,
    ]
    .iter()
    .chain(extra)
    .map(|s| (*s).to_owned())
    .collect();
    let record = admin::shop_record(&args).expect("valid store");
    assert!(
        !format!("{record:?}").contains(token),
        "Debug hides the token"
    );
    assert!(
        !record.token_digests.iter().any(|d| d.contains(token)),
        "tokens are stored hashed"
    );
    DynamoLedger::new(dynamo_client(&moto_endpoint()), h.table.clone())
        .put_shop(&record, 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn two_stores_two_receivers_no_cross_talk() {
    let h = harness().await;
    accept_all(&h.redtrack).await;
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    accept_all(&a).await;
    accept_all(&b).await;
    put_shop(&h, "loja-a", TOKEN_A, &a, "order.paid=Sale").await;
    put_shop(&h, "loja-b", TOKEN_B, &b, "order.paid=Purchase").await;
    let to = |store: &str, token: &str, body: &Value| {
        apigw_event_at(
            &format!("/cartpanda/{store}"),
            "POST",
            Some(&body.to_string()),
            &[("token", token)],
            &[],
        )
    };
    // The same order ID in both stores: two conversions, one per receiver.
    let in_a = deliver_event(&h.bridge, to("loja-a", TOKEN_A, &paid_order(7001))).await;
    assert_eq!(in_a.status, 200, "{}", in_a.body);
    let in_b = deliver_event(&h.bridge, to("loja-b", TOKEN_B, &paid_order(7001))).await;
    assert_eq!(in_b.body["conversions"][0]["outcome"], "sent");
    // Each store's token opens its own door only; unknown stores look like a wrong token.
    assert_eq!(
        deliver_event(&h.bridge, to("loja-b", TOKEN_A, &paid_order(7002)))
            .await
            .status,
        401
    );
    assert_eq!(
        deliver_event(&h.bridge, to("loja-a", TOKEN, &paid_order(7002)))
            .await
            .status,
        401
    );
    assert_eq!(
        deliver_event(&h.bridge, to("loja-z", TOKEN_A, &paid_order(7002)))
            .await
            .status,
        401
    );
    // The default store, from the environment, still works beside them.
    assert_eq!(
        deliver(&h, &paid_order(7001)).await.body["conversions"][0]["outcome"],
        "sent"
    );
    assert_eq!(
        deliver_event(&h.bridge, to("loja-a", TOKEN_A, &paid_order(7001)))
            .await
            .body["conversions"][0]["outcome"],
        "duplicate"
    );

    let (sa, sb, sd) = (
        sent_to(&a).await,
        sent_to(&b).await,
        sent_to(&h.redtrack).await,
    );
    assert_eq!((sa.len(), sb.len(), sd.len()), (1, 1, 1));
    assert_eq!(
        (sa[0]["store"].as_str(), sa[0]["type"].as_str()),
        ("loja-a", "Sale")
    );
    assert_eq!(
        (sb[0]["store"].as_str(), sb[0]["type"].as_str()),
        ("loja-b", "Purchase")
    );
    assert!(item(&h, "evt#loja-a#7001-purchase").await.is_some());
    assert!(item(&h, "evt#loja-b#7001-purchase").await.is_some());
    assert!(item(&h, "evt#7001-purchase").await.is_some());
}

#[tokio::test]
async fn each_shop_chooses_what_is_cartx_test_alone_means() {
    let h = harness().await;
    let (real, sandbox) = (MockServer::start().await, MockServer::start().await);
    accept_all(&real).await;
    accept_all(&sandbox).await;
    put_shop(&h, "loja-real", TOKEN_A, &real, "order.paid=Purchase").await;
    let skip = ["--cartx-test-orders", "skip"];
    put_shop_with(
        &h,
        "loja-sandbox",
        TOKEN_B,
        &sandbox,
        "order.paid=Purchase",
        &skip,
    )
    .await;
    let mut body = paid_order(7301);
    body["order"]["is_cartx_test"] = json!(1);
    body["order"]["test"] = json!(0);
    let to = |store: &str, token: &str| {
        apigw_event_at(
            &format!("/cartpanda/{store}"),
            "POST",
            Some(&body.to_string()),
            &[("token", token)],
            &[],
        )
    };
    let sent = deliver_event(&h.bridge, to("loja-real", TOKEN_A)).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(sent.body["conversions"][0]["outcome"], "sent");
    let postbacks = sent_to(&real).await;
    assert_eq!(postbacks.len(), 1);
    assert_eq!(postbacks[0]["is_test"], "0");
    let skipped = deliver_event(&h.bridge, to("loja-sandbox", TOKEN_B)).await;
    assert_eq!(skipped.status, 200, "{}", skipped.body);
    assert_eq!(skipped.body["skipped"], "test_order");
    assert!(sent_to(&sandbox).await.is_empty());

    let bad: Vec<String> = [
        "store",
        "put",
        "loja-x",
        "--token",
        TOKEN_A,
        "--postback-url",
        "https://trk.example.com/postback?clickid={cid}",
        "--cartx-test-orders",
        "maybe",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let err = admin::shop_record(&bad).unwrap_err();
    assert!(err.contains("--cartx-test-orders"), "{err}");
}

#[tokio::test]
async fn the_store_cli_puts_lists_and_deletes() {
    let h = harness().await;
    let endpoint = moto_endpoint();
    let aws = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "tests"),
        ))
        .build();
    let run = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend(["--table".to_owned(), h.table.clone()]);
        let aws = aws.clone();
        async move { admin::run(&all, &aws).await }
    };
    let put = run(&[
        "store",
        "put",
        "loja-x",
        "--token",
        TOKEN_A,
        "--postback-url",
        "https://trk.example.com/postback?clickid={cid}&secret=s3cr3t",
        "--sum-currency",
        "usd",
    ])
    .await;
    assert!(put.unwrap().contains("/cartpanda/loja-x"));
    let list = run(&["shop", "list"]).await.unwrap();
    assert!(
        list.starts_with("1 shop(s)") && list.contains("loja-x\tpostback https://trk.example.com"),
        "{list}"
    );
    assert!(list.contains("sum USD"));
    assert!(
        !list.contains("s3cr3t") && !list.contains(TOKEN_A),
        "no secrets listed"
    );
    for (args, problem) in [
        (
            vec![
                "store",
                "put",
                "Loja X",
                "--token",
                TOKEN_A,
                "--postback-url",
                "https://t.example/p?clickid={cid}",
            ],
            "shop name",
        ),
        (
            vec![
                "store",
                "put",
                "loja-y",
                "--token",
                "short",
                "--postback-url",
                "https://t.example/p?clickid={cid}",
            ],
            "at least 16",
        ),
        (
            vec![
                "store",
                "put",
                "loja-y",
                "--token",
                TOKEN_A,
                "--postback-url",
                "https://t.example/p?clickid={nope}",
            ],
            "unknown macro",
        ),
        (
            vec![
                "store",
                "put",
                "s2s",
                "--token",
                TOKEN_A,
                "--postback-url",
                "https://t.example/p?clickid={cid}",
            ],
            "route",
        ),
        (vec!["store", "dance"], "Usage:"),
    ] {
        let err = run(&args).await.unwrap_err();
        assert!(err.contains(problem), "{args:?}: {err}");
    }
    assert_eq!(
        run(&["store", "delete", "loja-x"]).await.unwrap(),
        "shop `loja-x` deleted"
    );
    assert!(
        run(&["store", "delete", "loja-x"])
            .await
            .unwrap_err()
            .contains("no shop")
    );
    assert!(
        run(&["store", "list"])
            .await
            .unwrap()
            .starts_with("0 shop(s)")
    );
}
