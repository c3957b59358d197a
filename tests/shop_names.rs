//! Shop names the ledger's keys cannot tell apart (issue 20): `shop put` refuses them, a shop saved
//! as `default` by an older version keeps working, and `shop rename` moves it with its API token
//! parameter, watermark and conversion records (moto as DynamoDB and SSM, through the operator
//! command line and the real handler).

mod common;

use cartpanda_redtrack::inbound::auth::{Secret, Tokens};
use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::admin;
use cartpanda_redtrack::ops::clock::{Clock, FixedClock, SystemClock};
use cartpanda_redtrack::ops::secrets::{self, SecretStore, SsmSecrets};
use cartpanda_redtrack::shops::directory::ShopRecord;
use common::*;
use std::sync::Arc;

const SHOP_TOKEN: &str = "shop-secret-0123456789";

async fn run(table: &str, args: &[&str]) -> Result<String, String> {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.extend(["--table".to_owned(), table.to_owned()]);
    admin::run(&all, &operator_aws()).await
}

fn put_args(name: &str) -> Vec<&str> {
    vec![
        "shop",
        "put",
        name,
        "--token",
        SHOP_TOKEN,
        "--postback-url",
        "https://trk.example.com/postback?clickid={cid}",
    ]
}

#[tokio::test]
async fn shop_put_refuses_names_the_keys_cannot_tell_apart() {
    let h = harness().await;
    let err = run(&h.table, &put_args("default")).await.unwrap_err();
    assert!(err.contains("deployment's own shop"), "{err}");
    assert!(keys(&h).await.is_empty(), "nothing written");
    assert!(run(&h.table, &put_args("default-2")).await.is_ok());
    assert!(run(&h.table, &put_args("12345")).await.is_ok());
}

/// A shop record as an older version saved it under `default`, its API token in SSM.
async fn legacy_default_shop(h: &Harness, ssm: &SsmSecrets) -> String {
    let parameter = secrets::shop_api_token(&h.table, "default");
    ssm.put(&parameter, &Secret::new("cp-api-token-of-default"))
        .await
        .unwrap();
    let record = ShopRecord {
        name: "default".to_owned(),
        token_digests: vec![Tokens::hex_digest(SHOP_TOKEN)],
        postback_url: format!("{}/postback?clickid={{cid}}", h.redtrack.uri()),
        conversion_types: String::new(),
        send_test_orders: false,
        cartx_test_orders: String::new(),
        sum_currency: None,
        normalize_pii: true,
        cartpanda_api_token: None,
        cartpanda_api_token_parameter: Some(parameter.clone()),
        click_id_sources: String::new(),
        reconcile: false,
        shop_slug: None,
        s2s: false,
        // The token serves reconciliation only: deliveries are not verified here.
        verify_orders: false,
    };
    DynamoLedger::new(h.dynamo.clone(), h.table.clone())
        .put_shop(&record, SystemClock.now_ms())
        .await
        .unwrap();
    parameter
}

async fn deliver_to(h: &Harness, shop: &str, order_id: u64) -> Answer {
    let body = paid_order(order_id).to_string();
    let event = apigw_event_at(
        &format!("/cartpanda/{shop}"),
        "POST",
        Some(&body),
        &[("token", SHOP_TOKEN)],
        &[],
    );
    deliver_event(&h.bridge, event).await
}

#[tokio::test]
async fn a_shop_named_default_keeps_working_and_shop_rename_moves_it() {
    let clock = Arc::new(FixedClock::at(SystemClock.now_ms()));
    let h = harness_with(Options {
        clock: clock.clone(),
        ..Options::default()
    })
    .await;
    redtrack_accepts(&h).await;
    let ssm = SsmSecrets::from_sdk(&operator_aws());
    let old_parameter = legacy_default_shop(&h, &ssm).await;
    let sent = deliver_to(&h, "default", 8201).await;
    assert_eq!(
        sent.body["conversions"][0]["outcome"], "sent",
        "{}",
        sent.body
    );
    h.dynamo
        .put_item()
        .table_name(&h.table)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("watermark#shop#default".into()),
        )
        .item(
            "watermark_s",
            aws_sdk_dynamodb::types::AttributeValue::N("1796000000".into()),
        )
        .send()
        .await
        .unwrap();

    let out = run(&h.table, &["shop", "rename", "default", "loja-nova"])
        .await
        .unwrap();
    assert!(
        out.contains("/cartpanda/loja-nova") && out.contains("1 conversion record(s)"),
        "{out}"
    );
    assert!(out.contains("watermark"), "{out}");
    let keys = keys(&h).await;
    assert_eq!(
        keys,
        [
            "evt#loja-nova#8201-purchase",
            "registry#shops",
            "store#loja-nova",
            "watermark#shop#loja-nova"
        ],
        "everything moved, nothing left under the old name"
    );
    let registry = cartpanda_redtrack::shops::registry::read(&DynamoLedger::new(
        h.dynamo.clone(),
        h.table.clone(),
    ))
    .await
    .unwrap();
    assert_eq!(
        Vec::from_iter(registry.shops),
        ["loja-nova"],
        "the registry names the new name only"
    );
    let moved = item(&h, "evt#loja-nova#8201-purchase").await.unwrap();
    assert_eq!(moved["status"].as_s().unwrap(), "SENT");
    let watermark = item(&h, "watermark#shop#loja-nova").await.unwrap();
    assert_eq!(watermark["watermark_s"].as_n().unwrap(), "1796000000");
    let store = item(&h, "store#loja-nova").await.unwrap();
    let new_parameter = secrets::shop_api_token(&h.table, "loja-nova");
    assert_eq!(
        store["cartpanda_api_token_parameter"].as_s().unwrap(),
        &new_parameter
    );
    assert_eq!(
        ssm.get(&new_parameter).await.unwrap().expose(),
        "cp-api-token-of-default"
    );
    assert!(
        ssm.get(&old_parameter).await.is_err(),
        "the old parameter is deleted"
    );

    // Once the shop cache has read again: the new URL knows what was sent, the old one is gone.
    clock.advance(61_000);
    let again = deliver_to(&h, "loja-nova", 8201).await;
    assert_eq!(
        again.body["conversions"][0]["outcome"], "duplicate",
        "{}",
        again.body
    );
    assert_eq!(postbacks(&h).await.len(), 1, "sent once, before the rename");
    let old_url = deliver_to(&h, "default", 8202).await;
    assert_eq!(
        old_url.status, 401,
        "the old URL is an unknown shop: {}",
        old_url.body
    );
    assert_eq!(postbacks(&h).await.len(), 1);

    for (args, problem) in [
        (
            ["shop", "rename", "loja-nova", "default"],
            "deployment's own shop",
        ),
        (
            ["shop", "rename", "nao-existe", "outra"],
            "no shop `nao-existe`",
        ),
        (
            ["shop", "rename", "loja-nova", "loja-nova"],
            "exists already",
        ),
    ] {
        let err = run(&h.table, &args).await.unwrap_err();
        assert!(err.contains(problem), "{args:?}: {err}");
    }
}
