//! A named shop's Cartpanda API token, kept as an SSM SecureString the shop's record names, never
//! in the ledger's table: written by the operator commands, read by [`super::directory::ShopCache`].
//! Records written by older versions, with the token in the clear, are moved by
//! [`migrate_plain_tokens`] (`shop migrate-secrets`).

use crate::inbound::auth::Secret;
use crate::ledger::dynamo::DynamoLedger;
use crate::ops::secrets::{self, SecretStore};
use crate::shops::directory::ShopRecord;

/// Saves `record`, its Cartpanda API token (if any) first into the shop's parameter.
pub async fn put_shop(
    ledger: &DynamoLedger,
    secrets: &dyn SecretStore,
    mut record: ShopRecord,
    api_token: Option<&Secret>,
    now_ms: i64,
) -> Result<(), String> {
    if let Some(token) = api_token {
        let parameter = secrets::shop_api_token(&ledger.table, &record.name);
        secrets
            .put(&parameter, token)
            .await
            .map_err(|e| e.to_string())?;
        record.cartpanda_api_token = None;
        record.cartpanda_api_token_parameter = Some(parameter);
    }
    ledger
        .put_shop(&record, now_ms)
        .await
        .map_err(|e| e.to_string())
}

/// Moves every token kept in the clear in a shop record into the shop's parameter; returns the
/// names of the shops moved.
pub async fn migrate_plain_tokens(
    ledger: &DynamoLedger,
    secrets: &dyn SecretStore,
    now_ms: i64,
) -> Result<Vec<String>, String> {
    let mut moved = Vec::new();
    for record in ledger.list_shops().await.map_err(|e| e.to_string())? {
        let Some(token) = record.cartpanda_api_token.clone() else {
            continue;
        };
        let name = record.name.clone();
        put_shop(ledger, secrets, record, Some(&Secret::new(token)), now_ms).await?;
        moved.push(name);
    }
    Ok(moved)
}
