//! `shop rename <old> <new>`: moves a named shop to a new name (and so a new webhook URL,
//! `/cartpanda/<new>`), e.g. a shop saved as `default` by an older version, a name the ledger's
//! keys cannot tell from the deployment's own shop ([`super::directory::check_new_name`]).
//!
//! In order: the new shop record is written (its Cartpanda API token copied into the new name's
//! SSM parameter when the record names one, or moved there when an older record holds it in the
//! clear); the shop's reconciliation watermark (`watermark#shop#<old>`) and its conversion
//! records (`evt#<old>#…`, `dry#<old>#…`) are copied under the new name, so nothing the shop sent
//! is sent again from the new URL and reconciliation carries on where it was; then the old shop
//! record, the old watermark, the old conversion records and the old parameter are deleted.
//! Notes and refusal records stay under the old name until they expire (the report lists them
//! under it). Within a minute (the shop cache's life) the old URL is refused as any unknown shop (401):
//! point Cartpanda's webhook (or S2S postback) at the new one right away.

use crate::inbound::auth::Secret;
use crate::ledger::dynamo::{DynamoLedger, get_s, ledger_error, s};
use crate::ops::secrets::SecretStore;
use crate::shops::directory::{ShopDirectory, check_new_name};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

/// What a rename moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renamed {
    /// Conversion records moved (`evt#`, `dry#`).
    pub records: u64,
    /// Whether the shop had a reconciliation watermark (moved).
    pub watermark: bool,
    /// The old SSM parameter of its Cartpanda API token, now copied (and to be deleted).
    pub old_parameter: Option<String>,
    /// The old SSM parameter of its RedTrack API key, now copied (and to be deleted).
    pub old_redtrack_key: Option<String>,
}

/// Moves shop `old` to `new`; the old SSM parameter, when there was one, is left for the caller
/// to delete (the [`SecretStore`] only reads and writes).
pub async fn rename(
    ledger: &DynamoLedger,
    secrets: &dyn SecretStore,
    old: &str,
    new: &str,
    now_ms: i64,
) -> Result<Renamed, String> {
    check_new_name(new)?;
    let mut record = ShopDirectory::get(ledger, old)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no shop `{old}`"))?;
    if ShopDirectory::get(ledger, new)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Err(format!("shop `{new}` exists already"));
    }
    let old_parameter = record.cartpanda_api_token_parameter.take();
    let token = match (&old_parameter, record.cartpanda_api_token.take()) {
        (Some(parameter), _) => Some(secrets.get(parameter).await.map_err(|e| e.to_string())?),
        (None, plain) => plain.map(Secret::new),
    };
    record.name = new.to_owned();
    super::api_token::put_shop(ledger, secrets, record, token.as_ref(), now_ms).await?;
    let old_redtrack_key = copy_redtrack_key(ledger, secrets, old, new).await?;
    let watermark = move_item(
        ledger,
        &crate::reconcile::watermark::key(Some(old)),
        &crate::reconcile::watermark::key(Some(new)),
    )
    .await?;
    let records = move_records(ledger, old, new).await?;
    ledger.delete_shop(old).await.map_err(|e| e.to_string())?;
    Ok(Renamed {
        records,
        watermark,
        old_parameter,
        old_redtrack_key,
    })
}

/// Copies the shop's RedTrack API key (if it has one) to the new name's parameter; returns the
/// old parameter's name.
async fn copy_redtrack_key(
    ledger: &DynamoLedger,
    secrets: &dyn SecretStore,
    old: &str,
    new: &str,
) -> Result<Option<String>, String> {
    use crate::ops::secrets::{SecretError, shop_redtrack_api_key};
    let old_parameter = shop_redtrack_api_key(&ledger.table, old);
    let key = match secrets.get(&old_parameter).await {
        Ok(key) => key,
        Err(SecretError::NotFound(_)) => return Ok(None),
        Err(err) => return Err(err.to_string()),
    };
    let new_parameter = shop_redtrack_api_key(&ledger.table, new);
    secrets
        .put(&new_parameter, &key)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(old_parameter))
}

/// The key prefixes of a shop's conversion records (their keys with the event ID left out).
fn record_prefixes(shop: &str) -> [String; 2] {
    use crate::ledger::keys::conversion;
    [
        conversion(Some(shop), "", false),
        conversion(Some(shop), "", true),
    ]
}

/// Copies every conversion record of `old` under `new`, then deletes the old one.
async fn move_records(ledger: &DynamoLedger, old: &str, new: &str) -> Result<u64, String> {
    let [evt, dry] = record_prefixes(old);
    let [new_evt, new_dry] = record_prefixes(new);
    let mut moved = 0;
    let mut start: Option<HashMap<String, AttributeValue>> = None;
    loop {
        let page = ledger
            .client
            .scan()
            .table_name(&ledger.table)
            .filter_expression("begins_with(pk, :evt) OR begins_with(pk, :dry)")
            .expression_attribute_values(":evt", s(&evt))
            .expression_attribute_values(":dry", s(&dry))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| ledger_error(e).to_string())?;
        for item in page.items() {
            let key = get_s(item, "pk");
            let new_key = match key.strip_prefix(&evt) {
                Some(rest) => format!("{new_evt}{rest}"),
                None => format!("{new_dry}{}", key.strip_prefix(&dry).unwrap_or_default()),
            };
            copy_then_delete(ledger, item, &key, &new_key).await?;
            moved += 1;
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(moved),
        }
    }
}

/// Moves one item from `from` to `to`; whether there was one.
async fn move_item(ledger: &DynamoLedger, from: &str, to: &str) -> Result<bool, String> {
    let Some(item) = ledger.read(from).await.map_err(|e| e.to_string())? else {
        return Ok(false);
    };
    copy_then_delete(ledger, &item, from, to).await?;
    Ok(true)
}

/// Writes `item` under `to` (unless a record is there already), then deletes `from`.
async fn copy_then_delete(
    ledger: &DynamoLedger,
    item: &HashMap<String, AttributeValue>,
    from: &str,
    to: &str,
) -> Result<(), String> {
    let mut copy = item.clone();
    copy.insert("pk".to_owned(), s(to));
    let put = ledger
        .client
        .put_item()
        .table_name(&ledger.table)
        .set_item(Some(copy))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    if let Err(err) = put {
        let exists = err
            .as_service_error()
            .is_some_and(|e| e.is_conditional_check_failed_exception());
        if !exists {
            return Err(ledger_error(err).to_string());
        }
    }
    ledger
        .client
        .delete_item()
        .table_name(&ledger.table)
        .key("pk", s(from))
        .send()
        .await
        .map_err(|e| ledger_error(e).to_string())?;
    Ok(())
}
