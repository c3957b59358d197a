//! A thousand shops (issue 22): the registry of shops the scheduled run reads instead of scanning
//! the table, one run per shop at a time (the lease) with a watermark that never goes back, and
//! shops that never wait on a failing one. Moto as DynamoDB (and SSM), wiremock as Cartpanda's
//! order list (one path per shop slug) and as RedTrack, through the reconcile handler's
//! function and the operator commands.

mod common;

use aws_sdk_dynamodb::types::AttributeValue as V;
use cartpanda_redtrack::ops::admin;
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::reconcile::config::ReconcileSettings;
use cartpanda_redtrack::reconcile::run::Reconciler;
use cartpanda_redtrack::reconcile::watermark::{self, Mark};
use cartpanda_redtrack::shops::registry;
use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const DEFAULT_TOKEN: &str = "cp-api-token-of-the-default-shop";

struct Setup {
    h: Harness,
    cartpanda: MockServer,
    reconciler: Reconciler,
}

/// A deployment whose reconciliation lists orders from a wiremock Cartpanda; `env` on top of
/// the reconciliation's own (the default shop is reconciled with `RECONCILE=true`).
async fn setup(env: &[(&str, &str)]) -> Setup {
    let cartpanda = MockServer::start().await;
    let h = harness().await;
    redtrack_accepts(&h).await;
    let mut vars: HashMap<String, String> = HashMap::from([
        (
            "CARTPANDA_ORDER_LIST_URL".into(),
            format!("{}/api/v3/{{shop_slug}}/orders", cartpanda.uri()),
        ),
        ("CARTPANDA_API_MIN_INTERVAL_MS".into(), "20".into()),
        ("RECONCILE_SETTLE_MIN".into(), "0".into()),
    ]);
    for (k, v) in env {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let mut settings = ReconcileSettings::from_lookup(|k| vars.get(k).cloned()).unwrap();
    settings.margin = Duration::from_millis(300);
    let reconciler = reconciler(&h, settings);
    Setup {
        h,
        cartpanda,
        reconciler,
    }
}

fn default_shop_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RECONCILE", "true"),
        ("CARTPANDA_API_TOKEN", DEFAULT_TOKEN),
        ("CARTPANDA_SHOP_SLUG", "loja-padrao"),
    ]
}

/// Cartpanda's order list of shop `slug` answers `response` (with the shop's token).
async fn serve(s: &Setup, slug: &str, token: &str, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(format!("/api/v3/{slug}/orders")))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(response)
        .mount(&s.cartpanda)
        .await;
}

/// One page holding these orders (each listed as the webhook's `order`).
fn orders(ids: &[u64]) -> ResponseTemplate {
    let data: Vec<Value> = ids
        .iter()
        .map(|id| paid_order(*id)["order"].clone())
        .collect();
    ResponseTemplate::new(200).set_body_json(json!({"orders": {
        "data": data, "current_page": 1, "last_page": 1, "per_page": 100, "total": ids.len()
    }}))
}

/// The list requests Cartpanda received for shop `slug`.
async fn requests_of(s: &Setup, slug: &str) -> usize {
    let prefix = format!("/api/v3/{slug}/");
    s.cartpanda
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path().starts_with(&prefix))
        .count()
}

/// The event IDs RedTrack received, sorted.
async fn sent(s: &Setup) -> Vec<String> {
    let mut ids: Vec<String> = postbacks(&s.h)
        .await
        .iter()
        .map(|p| p["rdtk_event_id"].clone())
        .collect();
    ids.sort();
    ids
}

/// A named shop's record as versions before the registry wrote it: straight into the table,
/// reconciliation on, its slug and (as older versions kept it) its API token in the clear.
async fn old_shop_record(s: &Setup, name: &str) {
    s.h.dynamo
        .put_item()
        .table_name(&s.h.table)
        .item("pk", V::S(format!("store#{name}")))
        .item("kind", V::S("store".into()))
        .item("token_digests", V::Ss(vec![hex_digest(name)]))
        .item(
            "postback_url",
            V::S(format!("{}/postback?clickid={{cid}}", s.h.redtrack.uri())),
        )
        .item("reconcile", V::Bool(true))
        .item("shop_slug", V::S(name.into()))
        .item("cartpanda_api_token", V::S(token_of(name)))
        .send()
        .await
        .unwrap();
}

fn token_of(shop: &str) -> String {
    format!("cp-api-token-of-{shop}")
}

fn hex_digest(shop: &str) -> String {
    cartpanda_redtrack::inbound::auth::Tokens::hex_digest(&format!("webhook-token-of-{shop}"))
}

/// The scheduled run, through the reconcile handler's function, as JSON.
async fn scheduled(s: &Setup, budget_ms: i64) -> Value {
    let deadline_ms = SystemClock.now_ms() + budget_ms;
    let answer = cartpanda_redtrack::reconcile::run_scheduled(&s.reconciler, deadline_ms)
        .await
        .unwrap();
    serde_json::to_value(answer).unwrap()
}

/// The shops the scheduled run reconciles.
async fn due_shops(s: &Setup) -> Vec<Option<String>> {
    cartpanda_redtrack::reconcile::shops::due_shops(&s.reconciler)
        .await
        .unwrap()
}

async fn admin_run(table: &str, args: &[&str]) -> Result<String, String> {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.extend(["--table".to_owned(), table.to_owned()]);
    admin::run(&all, &operator_aws()).await
}

#[tokio::test]
async fn shops_saved_before_the_registry_are_indexed_once_and_then_the_table_is_not_scanned() {
    let s = setup(&[]).await;
    old_shop_record(&s, "loja-antiga").await;
    serve(&s, "loja-antiga", &token_of("loja-antiga"), orders(&[4101])).await;
    assert!(
        item(&s.h, "registry#shops").await.is_none(),
        "no registry yet"
    );

    // The first run after the upgrade indexes the shop records once and reconciles the shop.
    let first = scheduled(&s, 30_000).await;
    assert_eq!(first["shops"][0]["shop"], "loja-antiga", "{first}");
    assert_eq!(sent(&s).await, ["4101-purchase"]);
    let indexed = registry::read(&s.reconciler.table).await.unwrap();
    assert!(indexed.indexed_at_ms.is_some());
    assert_eq!(Vec::from_iter(indexed.reconciled), ["loja-antiga"]);

    // A shop written behind the registry's back (an older admin command) is not found by a
    // scan any more: the scheduled run reads the registry only.
    old_shop_record(&s, "loja-tardia").await;
    serve(&s, "loja-tardia", &token_of("loja-tardia"), orders(&[4201])).await;
    let second = scheduled(&s, 30_000).await;
    assert_eq!(requests_of(&s, "loja-tardia").await, 0, "{second}");
    // ... but `reconcile --shop` reads that one shop by name,
    let backfill = cartpanda_redtrack::reconcile::command(
        &s.reconciler,
        "1h",
        Some("loja-tardia"),
        true,
        SystemClock.now_ms() + 30_000,
    )
    .await
    .unwrap();
    assert_eq!(backfill.shop.as_deref(), Some("loja-tardia"));
    assert_eq!(backfill.orders_seen, 1, "{backfill:?}");
    // ... and `shop reindex` puts it in the registry for the next scheduled run.
    let reindexed = admin_run(&s.h.table, &["shop", "reindex"]).await.unwrap();
    assert_eq!(
        reindexed,
        "shop registry rebuilt: 2 shop(s), 2 with reconciliation on"
    );
    scheduled(&s, 30_000).await;
    assert_eq!(sent(&s).await, ["4101-purchase", "4201-purchase"]);
    assert_eq!(postbacks(&s.h).await.len(), 2, "each sent once");
}

#[tokio::test]
async fn shop_put_rename_and_delete_keep_the_registry() {
    let s = setup(&default_shop_env()).await;
    let put = |name: &'static str, reconcile: &'static str| {
        let table = s.h.table.clone();
        async move {
            let token = token_of(name);
            let mut args = vec![
                "shop",
                "put",
                name,
                "--token",
                "webhook-token-0123456789",
                "--postback-url",
                "https://trk.example.com/postback?clickid={cid}",
                "--reconcile",
                reconcile,
                "--shop-slug",
                name,
            ];
            args.extend(["--cartpanda-api-token", token.as_str()]);
            admin_run(&table, &args).await.unwrap();
        }
    };
    put("loja-a", "true").await;
    put("loja-b", "false").await;
    put("loja-z", "true").await;
    let name = |n: &str| Some(n.to_owned());
    assert_eq!(due_shops(&s).await, [None, name("loja-a"), name("loja-z")]);
    // Reconciliation turned off for one, the other renamed, then deleted.
    put("loja-z", "false").await;
    admin_run(&s.h.table, &["shop", "rename", "loja-a", "loja-c"])
        .await
        .unwrap();
    assert_eq!(due_shops(&s).await, [None, name("loja-c")]);
    let registry = registry::read(&s.reconciler.table).await.unwrap();
    assert_eq!(
        Vec::from_iter(registry.shops),
        ["loja-b", "loja-c", "loja-z"]
    );
    admin_run(&s.h.table, &["shop", "delete", "loja-c"])
        .await
        .unwrap();
    assert_eq!(due_shops(&s).await, [None]);
    let registry = registry::read(&s.reconciler.table).await.unwrap();
    assert_eq!(Vec::from_iter(registry.shops), ["loja-b", "loja-z"]);
    assert!(registry.reconciled.is_empty());
}
