//! Secrets kept as SSM SecureStrings (moto as SSM and DynamoDB): a shop's Cartpanda API token never
//! in the ledger's table, old records migrated, and the deployment's own secrets given by
//! parameter name, read once at cold start.

mod common;

use cartpanda_redtrack::bridge::Bridge;
use cartpanda_redtrack::inbound::auth::Secret;
use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::clock::SystemClock;
use cartpanda_redtrack::ops::config::{Config, Environment, resolve_secret_parameters};
use cartpanda_redtrack::ops::secrets::{self, SecretStore, SsmSecrets};
use cartpanda_redtrack::reconcile::config::ReconcileSettings;
use cartpanda_redtrack::reconcile::orders::OrderLister;
use cartpanda_redtrack::reconcile::run::Reconciler;
use cartpanda_redtrack::shops::api_token;
use cartpanda_redtrack::shops::directory::{ShopCache, ShopRecord};
use common::*;
use std::collections::HashMap;
use std::sync::Arc;

/// Environment variables set for one case.
type Overrides = Vec<(&'static str, String)>;

/// The SSM client's configuration for moto.
fn ssm_conf() -> aws_sdk_ssm::Config {
    aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new("us-east-1"))
        .endpoint_url(moto_endpoint())
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .build()
}

fn ssm() -> SsmSecrets {
    SsmSecrets::new(ssm_conf())
}

fn shop(name: &str, plain_token: Option<&str>) -> ShopRecord {
    ShopRecord {
        name: name.to_owned(),
        token_digests: vec![cartpanda_redtrack::inbound::auth::Tokens::hex_digest(
            "shop-secret-0123456789",
        )],
        postback_url: "https://trk.example.com/postback?clickid={cid}".to_owned(),
        conversion_types: String::new(),
        send_test_orders: false,
        cartx_test_orders: String::new(),
        sum_currency: None,
        normalize_pii: true,
        cartpanda_api_token: plain_token.map(str::to_owned),
        cartpanda_api_token_parameter: None,
        click_id_sources: String::new(),
        reconcile: false,
        shop_slug: None,
        s2s: false,
        verify_orders: true,
    }
}

/// Every attribute value of the table, as text: what reading the table reveals.
async fn table_text(client: &aws_sdk_dynamodb::Client, table: &str) -> String {
    let items = client.scan().table_name(table).send().await.unwrap();
    format!("{:?}", items.items())
}

#[tokio::test]
async fn a_shops_api_token_lives_in_ssm_and_the_shop_cache_reads_it_from_there() {
    let client = dynamo_client(&moto_endpoint());
    let table = create_table(&client).await;
    let ledger = Arc::new(DynamoLedger::new(client.clone(), table.clone()));
    let ssm = Arc::new(ssm());
    let token = Secret::new("cp-api-token-in-ssm-123");
    api_token::put_shop(
        &ledger,
        ssm.as_ref(),
        shop("loja-ssm", None),
        Some(&token),
        0,
    )
    .await
    .unwrap();

    assert!(
        !table_text(&client, &table)
            .await
            .contains("cp-api-token-in-ssm-123"),
        "the table does not reveal the token"
    );
    let parameter = secrets::shop_api_token(&table, "loja-ssm");
    assert_eq!(ssm.get(&parameter).await.unwrap().expose(), token.expose());

    let cache = ShopCache::new(ledger.clone()).with_secrets(ssm.clone());
    let profile = cache
        .profile("loja-ssm", &SystemClock)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        profile.cartpanda_api_token.as_ref().map(Secret::expose),
        Some(token.expose())
    );

    // The parameter deleted: the shop is refused, not served without verification.
    ssm_delete(&parameter).await;
    let fresh = ShopCache::new(ledger).with_secrets(ssm);
    assert!(
        fresh
            .profile("loja-ssm", &SystemClock)
            .await
            .unwrap()
            .is_none()
    );
}

async fn ssm_delete(name: &str) {
    aws_sdk_ssm::Client::from_conf(ssm_conf())
        .delete_parameter()
        .name(name)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn migration_moves_plain_tokens_out_of_the_table() {
    let client = dynamo_client(&moto_endpoint());
    let table = create_table(&client).await;
    let ledger = Arc::new(DynamoLedger::new(client.clone(), table.clone()));
    // Records as an older version wrote them: the token in the clear.
    ledger
        .put_shop(&shop("loja-velha", Some("plain-token-from-2025")), 0)
        .await
        .unwrap();
    ledger.put_shop(&shop("loja-sem", None), 0).await.unwrap();
    assert!(
        table_text(&client, &table)
            .await
            .contains("plain-token-from-2025")
    );

    let ssm = Arc::new(ssm());
    let moved = api_token::migrate_plain_tokens(&ledger, ssm.as_ref(), 1)
        .await
        .unwrap();
    assert_eq!(moved, vec!["loja-velha".to_owned()]);
    assert!(
        !table_text(&client, &table)
            .await
            .contains("plain-token-from-2025")
    );
    let cache = ShopCache::new(ledger.clone()).with_secrets(ssm.clone());
    let profile = cache
        .profile("loja-velha", &SystemClock)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        profile.cartpanda_api_token.as_ref().map(Secret::expose),
        Some("plain-token-from-2025")
    );
    // Run again: nothing left to move.
    assert!(
        api_token::migrate_plain_tokens(&ledger, ssm.as_ref(), 2)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_deployments_secrets_may_be_ssm_parameter_names() {
    let ssm = ssm();
    let table = unique("ledger");
    let webhook = format!("{}webhook-token", secrets::prefix(&table));
    let api = format!("{}cartpanda-api-token", secrets::prefix(&table));
    ssm.put(&webhook, &Secret::new("webhook-secret-from-ssm-0123"))
        .await
        .unwrap();
    ssm.put(&api, &Secret::new("cp-token-from-ssm"))
        .await
        .unwrap();
    let env: HashMap<&str, String> = HashMap::from([
        (
            "REDTRACK_POSTBACK_URL",
            "https://trk.example.com/postback?clickid={cid}".to_owned(),
        ),
        ("DEDUP_TABLE", table.clone()),
        ("WEBHOOK_TOKEN_PARAMETER", webhook.clone()),
        ("CARTPANDA_API_TOKEN_PARAMETER", api.clone()),
    ]);
    // The webhook function and reconciliation read the same environment.
    let read = Environment::read(|k: &str| env.get(k).cloned(), &ssm)
        .await
        .unwrap();
    let config = Config::from_lookup(|k| read.get(k)).unwrap();
    assert!(
        config
            .profile
            .tokens
            .verify(Some("webhook-secret-from-ssm-0123"), None)
            .is_ok()
    );
    assert_eq!(
        config
            .profile
            .cartpanda_api_token
            .as_ref()
            .map(Secret::expose),
        Some("cp-token-from-ssm")
    );
    let reconciling = Environment::read(
        |k: &str| match k {
            "RECONCILE" => Some("true".to_owned()),
            "CARTPANDA_SHOP_SLUG" => Some("loja-ssm".to_owned()),
            _ => env.get(k).cloned(),
        },
        &ssm,
    )
    .await
    .unwrap();
    let settings = ReconcileSettings::from_lookup(|k| reconciling.get(k)).unwrap();
    let default_shop = settings.default_shop.expect("RECONCILE=true");
    assert_eq!(default_shop.token.expose(), "cp-token-from-ssm");

    // Wrong ways to give them: each stops cold start naming the variable.
    let cases: Vec<(Overrides, &str, &str)> = vec![
        (
            vec![("WEBHOOK_TOKEN", "also-a-value-0123456789".to_owned())],
            "WEBHOOK_TOKEN_PARAMETER",
            "both set",
        ),
        (
            vec![(
                "WEBHOOK_TOKEN_PARAMETER",
                "/elsewhere/webhook-token".to_owned(),
            )],
            "WEBHOOK_TOKEN_PARAMETER",
            "under /cartpanda-redtrack/",
        ),
        (
            vec![(
                "CARTPANDA_API_TOKEN_PARAMETER",
                format!("{}missing", secrets::prefix(&table)),
            )],
            "CARTPANDA_API_TOKEN_PARAMETER",
            "does not exist",
        ),
    ];
    for (overrides, var, problem) in cases {
        let mut env = env.clone();
        for (k, v) in overrides {
            env.insert(k, v);
        }
        let lookup = |k: &str| env.get(k).cloned();
        let e = resolve_secret_parameters(&lookup, &ssm).await.unwrap_err();
        assert_eq!(e.var, var, "{e}");
        assert!(e.to_string().contains(problem), "{e}");
        assert!(
            !e.to_string().contains("secret-from-ssm"),
            "no secret in errors: {e}"
        );
    }
}

/// A shop with reconciliation on whose token `shop put` kept in SSM: its deliveries are served
/// (the record names a parameter, not a token in the clear), reconciliation reads the token
/// from the parameter, and a shop that does not verify orders is not made to.
#[tokio::test]
async fn a_reconciled_shop_with_its_api_token_in_ssm_is_served_and_reconciled() {
    let h = harness().await;
    let ledger = Arc::new(DynamoLedger::new(h.dynamo.clone(), h.table.clone()));
    let ssm = Arc::new(ssm());
    let token = Secret::new("cp-api-token-reconciled-456");
    let mut record = shop("loja-rec", None);
    record.reconcile = true;
    record.shop_slug = Some("loja-rec-slug".to_owned());
    record.verify_orders = false;
    api_token::put_shop(&ledger, ssm.as_ref(), record, Some(&token), 0)
        .await
        .unwrap();

    let cache = ShopCache::new(ledger.clone()).with_secrets(ssm.clone());
    let profile = cache
        .profile("loja-rec", &SystemClock)
        .await
        .unwrap()
        .expect("the shop is served");
    assert!(
        profile.cartpanda_api_token.is_none(),
        "orders of a shop with verification off are not re-read"
    );

    let bridge = Bridge {
        config: h.bridge.config.clone(),
        ledger: ledger.clone(),
        tracker: Arc::clone(&h.bridge.tracker),
        clock: Arc::new(SystemClock),
        queue: None,
        shops: Some(cache),
        orders: None,
    };
    let settings = ReconcileSettings::from_lookup(|_| None).unwrap();
    let reconciler = Reconciler {
        bridge: Arc::new(bridge),
        lister: Arc::new(OrderLister::new(settings.list.clone()).unwrap()),
        table: DynamoLedger::new(h.dynamo.clone(), h.table.clone()),
        settings,
    };
    let due = cartpanda_redtrack::reconcile::shops::due_shops(&reconciler)
        .await
        .unwrap();
    assert_eq!(due, [Some("loja-rec".to_owned())], "the shop is reconciled");
    let record =
        cartpanda_redtrack::shops::directory::ShopDirectory::get(&reconciler.table, "loja-rec")
            .await
            .unwrap()
            .unwrap();
    let target = cartpanda_redtrack::reconcile::shop_target(&reconciler, &record)
        .await
        .unwrap()
        .expect("a target");
    assert_eq!(target.shop.as_deref(), Some("loja-rec"));
    assert_eq!(target.slug, "loja-rec-slug");
    assert_eq!(target.token.expose(), token.expose());
}
