//! A thousand shops (issue 22): the registry of shops the scheduled run reads instead of scanning
//! the table, one run per shop at a time (the lease) with a watermark that never goes back, and
//! shops that never wait on a failing one. Moto as DynamoDB (and SSM), wiremock as Cartpanda's
//! order list (one path per shop slug) and as RedTrack, through the reconcile handler's
//! function and the operator commands.

mod common;

use aws_sdk_dynamodb::types::AttributeValue as V;
use cartpanda_redtrack::ops::admin;
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
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
    let settings = reconcile_settings(&cartpanda.uri(), env);
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
    sent_event_ids(&s.h).await
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
    scheduled_run(&s.reconciler, budget_ms).await
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

/// The default shop's watermark record, as stored.
async fn default_mark(s: &Setup) -> HashMap<String, V> {
    item(&s.h, "watermark#default")
        .await
        .expect("a watermark record")
}

fn watermark_s(record: &HashMap<String, V>) -> i64 {
    record["watermark_s"].as_n().unwrap().parse().unwrap()
}

#[tokio::test]
async fn two_overlapping_runs_of_one_shop_one_runs_the_other_is_told_the_shop_is_busy() {
    let s = setup(&default_shop_env()).await;
    // A complete run lists only its own window (no daily coverage pass of yesterday).
    coverage_measured_yesterday(&s.h, None).await;
    let slow = orders(&[5101, 5102]).set_delay(Duration::from_millis(1500));
    serve(&s, "loja-padrao", DEFAULT_TOKEN, slow).await;
    let later = |ms| async move { tokio::time::sleep(Duration::from_millis(ms)).await };
    let second = async {
        later(300).await;
        scheduled(&s, 30_000).await
    };
    let backfill = async {
        later(600).await;
        let deadline_ms = SystemClock.now_ms() + 30_000;
        cartpanda_redtrack::reconcile::command(&s.reconciler, "2h", None, false, deadline_ms)
            .await
            .unwrap()
    };
    let (first, second, backfill) = tokio::join!(scheduled(&s, 30_000), second, backfill);
    assert_eq!(first["shops"][0]["complete"], true, "{first}");
    assert_eq!(second["busy"], json!(["(default)"]), "{second}");
    assert_eq!(second["shops"], json!([]), "{second}");
    assert_eq!(
        (second["failed"].clone(), second["stale"].clone()),
        (json!([]), json!([]))
    );
    assert!(
        backfill.busy,
        "a back-fill waits its turn too: {backfill:?}"
    );
    assert_eq!(
        requests_of(&s, "loja-padrao").await,
        1,
        "only one run listed"
    );
    assert_eq!(sent(&s).await, ["5101-purchase", "5102-purchase"]);

    // The run's last write gave the lease back: the next run runs, and sends nothing again.
    let record = default_mark(&s).await;
    assert!(!record.contains_key("lease_owner"), "{record:?}");
    let third = scheduled(&s, 30_000).await;
    assert_eq!(third["shops"][0]["already_sent"], 2, "{third}");
    assert_eq!(postbacks(&s.h).await.len(), 2);
}

#[tokio::test]
async fn a_run_whose_lease_expired_is_taken_over_and_its_late_write_never_moves_the_watermark_back()
{
    let s = setup(&default_shop_env()).await;
    // The first run's list answers late; every later request at once.
    Mock::given(method("GET"))
        .and(path("/api/v3/loja-padrao/orders"))
        .respond_with(orders(&[5201]).set_delay(Duration::from_millis(3000)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&s.cartpanda)
        .await;
    serve(&s, "loja-padrao", DEFAULT_TOKEN, orders(&[5201])).await;
    let takeover = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // The first run's lease runs out (an invocation frozen past its deadline, say).
        s.h.dynamo
            .update_item()
            .table_name(&s.h.table)
            .key("pk", V::S("watermark#default".into()))
            .update_expression("SET lease_until_ms = :past")
            .expression_attribute_values(":past", V::N((SystemClock.now_ms() - 1).to_string()))
            .send()
            .await
            .unwrap();
        let answer = scheduled(&s, 30_000).await;
        (answer, watermark_s(&default_mark(&s).await))
    };
    let (late, (second, taken_over_at)) = tokio::join!(scheduled(&s, 30_000), takeover);
    assert_eq!(second["shops"][0]["complete"], true, "{second}");
    assert_eq!(late["shops"][0]["stopped"], "superseded", "{late}");
    let late_to = late["shops"][0]["to"].as_str().unwrap();
    let second_to = cartpanda_redtrack::inbound::datetime::format_utc(taken_over_at);
    assert!(late_to < second_to.as_str(), "{late_to} vs {second_to}");
    assert_eq!(
        watermark_s(&default_mark(&s).await),
        taken_over_at,
        "the late run's earlier watermark was refused"
    );
    assert_eq!(sent(&s).await, ["5201-purchase"], "sent once");
}

#[tokio::test]
async fn the_watermark_write_never_moves_it_back_nor_past_another_runs_lease() {
    let s = setup(&[]).await;
    let (client, table) = (s.reconciler.table.client(), s.reconciler.table.table());
    let shop = Some("loja-x");
    let at = |w: Option<i64>| Mark {
        watermark_s: w,
        ..Mark::default()
    };
    let put = |mark: Mark, lease: Option<watermark::Lease>| async move {
        watermark::put(client, table, shop, &mark, 0, lease.as_ref())
            .await
            .unwrap()
    };
    let stored = || async {
        watermark::get(client, table, shop)
            .await
            .unwrap()
            .watermark_s
    };
    assert!(put(at(Some(2000)), None).await);
    assert!(put(at(Some(2000)), None).await, "the same again");
    assert!(!put(at(Some(1000)), None).await, "backwards");
    assert!(!put(at(None), None).await, "removed");
    assert_eq!(stored().await, Some(2000));
    assert!(put(at(Some(3000)), None).await);
    // A lease held by another run: neither a further watermark nor a lease-less write passes.
    let lease = || {
        let now_ms = SystemClock.now_ms();
        watermark::Lease::new(now_ms, now_ms + 60_000, watermark::LEASE_SPAN_MS)
    };
    let mut theirs = lease();
    let taken = watermark::acquire(client, table, shop, &theirs, SystemClock.now_ms()).await;
    assert!(matches!(taken, Ok(watermark::Taken::Held(ref m)) if m.watermark_s == Some(3000)));
    let mut mine = lease();
    let busy = watermark::acquire(client, table, shop, &mine, SystemClock.now_ms()).await;
    assert_eq!(busy.unwrap(), watermark::Taken::Busy);
    let now_ms = SystemClock.now_ms();
    let renewed = watermark::renew(client, table, shop, &mut mine, now_ms).await;
    assert!(!renewed.unwrap(), "not its lease to renew");
    let renewed = watermark::renew(client, table, shop, &mut theirs, now_ms).await;
    assert!(renewed.unwrap());
    assert!(!put(at(Some(4000)), Some(mine)).await);
    assert!(put(at(Some(4000)), Some(theirs)).await);
    assert_eq!(stored().await, Some(4000));
}

#[tokio::test]
async fn a_shop_answering_500_slowly_or_refusing_its_token_does_not_delay_a_healthy_one() {
    let s = setup(&[]).await;
    for shop in ["a-lenta", "b-recusada", "c-saudavel"] {
        old_shop_record(&s, shop).await;
    }
    // a-lenta answers 500, and takes longer than the whole invocation to do so; b-recusada
    // refuses its token; c-saudavel lists one order nobody sent.
    let slow_500 = ResponseTemplate::new(500).set_delay(Duration::from_secs(20));
    serve(&s, "a-lenta", &token_of("a-lenta"), slow_500).await;
    serve(
        &s,
        "b-recusada",
        &token_of("b-recusada"),
        ResponseTemplate::new(401),
    )
    .await;
    serve(&s, "c-saudavel", &token_of("c-saudavel"), orders(&[6301])).await;

    let started = std::time::Instant::now();
    let answer = scheduled(&s, 6_000).await;
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "within the deadline"
    );
    assert_eq!(sent(&s).await, ["6301-purchase"], "{answer}");
    assert!(item(&s.h, "evt#c-saudavel#6301-purchase").await.is_some());
    let summary = |shop: &str| {
        answer["shops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["shop"] == shop)
            .cloned()
            .unwrap_or_else(|| panic!("{shop} ran: {answer}"))
    };
    assert_eq!(summary("c-saudavel")["complete"], true, "{answer}");
    assert_eq!(summary("a-lenta")["complete"], false, "{answer}");
    assert_eq!(summary("a-lenta")["stopped"], "deadline", "{answer}");
    assert_eq!(answer["failed"], json!(["b-recusada"]), "{answer}");
    assert_eq!(
        requests_of(&s, "b-recusada").await,
        1,
        "a refused token is not retried"
    );
}

/// Page `n` of `last` holding one order, answered after `delay_ms`.
async fn serve_page(s: &Setup, n: u32, last: u32, order_id: u64, delay_ms: u64) {
    let data = json!([paid_order(order_id)["order"].clone()]);
    let body = json!({"orders": {"data": data, "current_page": n, "last_page": last}});
    Mock::given(method("GET"))
        .and(path("/api/v3/loja-padrao/orders"))
        .and(wiremock::matchers::query_param("page", n.to_string()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(body)
                .set_delay(Duration::from_millis(delay_ms)),
        )
        .mount(&s.cartpanda)
        .await;
}

/// The lease on the default shop's watermark record now: its owner and expiry, if one is held.
async fn lease_now(s: &Setup) -> Option<(String, i64)> {
    let record = item(&s.h, "watermark#default").await?;
    let owner = record.get("lease_owner")?.as_s().ok()?.clone();
    let until = record.get("lease_until_ms")?.as_n().ok()?.parse().ok()?;
    Some((owner, until))
}

/// Waits (up to 5 s) until the default shop's lease is held; its owner and expiry.
async fn wait_for_lease(s: &Setup) -> (String, i64) {
    for _ in 0..250 {
        if let Some(lease) = lease_now(s).await {
            return lease;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no run took the lease");
}

#[tokio::test]
async fn a_long_run_renews_its_lease_and_one_taken_over_stops_at_its_next_page() {
    let mut s = setup(&default_shop_env()).await;
    s.reconciler.settings.lease_span = Duration::from_millis(1000);
    for n in 1..=3 {
        serve_page(&s, n, 3, 7100 + u64::from(n), 600).await;
    }
    // Every expiry the lease has while the run goes (three pages, 600 ms each).
    let watch = async {
        let (owner, first) = wait_for_lease(&s).await;
        let mut seen = vec![first];
        while let Some((now_owner, until)) = lease_now(&s).await {
            assert_eq!(now_owner, owner);
            if seen.last() != Some(&until) {
                seen.push(until);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    };
    let (answer, seen) = tokio::join!(scheduled(&s, 30_000), watch);
    assert_eq!(answer["shops"][0]["complete"], true, "{answer}");
    assert!(seen.len() >= 2, "renewed between pages: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(lease_now(&s).await.is_none(), "released");

    // Another run takes the shop over (this one's lease ran out meanwhile): this run stops at its
    // next renewal, before listing another page, and writes nothing.
    s.h.dynamo
        .delete_item()
        .table_name(&s.h.table)
        .key("pk", V::S("watermark#default".into()))
        .send()
        .await
        .unwrap();
    let listed_before = requests_of(&s, "loja-padrao").await;
    let takeover = async {
        wait_for_lease(&s).await;
        s.h.dynamo
            .update_item()
            .table_name(&s.h.table)
            .key("pk", V::S("watermark#default".into()))
            .update_expression("SET lease_owner = :other, lease_until_ms = :later")
            .expression_attribute_values(":other", V::S("another-run".into()))
            .expression_attribute_values(
                ":later",
                V::N((SystemClock.now_ms() + 60_000).to_string()),
            )
            .send()
            .await
            .unwrap();
    };
    let (cut, ()) = tokio::join!(scheduled(&s, 30_000), takeover);
    assert_eq!(cut["shops"][0]["stopped"], "superseded", "{cut}");
    assert_eq!(cut["shops"][0]["pages"], 1, "{cut}");
    assert_eq!(requests_of(&s, "loja-padrao").await, listed_before + 1);
    let record = default_mark(&s).await;
    assert_eq!(record["lease_owner"].as_s().unwrap(), "another-run");
    assert!(
        !record.contains_key("watermark_s"),
        "nothing written over it"
    );
}
