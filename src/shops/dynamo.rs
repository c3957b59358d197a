//! Shop records in the ledger's DynamoDB table: read for the [`ShopDirectory`], and written,
//! listed and deleted by the operator commands. Kept here, not in [`crate::ledger`], so the ledger
//! knows nothing of shops.

use crate::ledger::claim::LedgerError;
use crate::ledger::dynamo::{DynamoLedger, get_s, ledger_error, n, s};
use crate::ledger::keys;
use crate::shops::directory::{ShopDirectory, ShopRecord};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

fn record_of(item: &HashMap<String, AttributeValue>) -> Option<ShopRecord> {
    let name = get_s(item, "pk").strip_prefix(keys::SHOP)?.to_owned();
    let opt = |k: &str| Some(get_s(item, k)).filter(|v| !v.is_empty());
    let flag = |k: &str, default: bool| {
        item.get(k)
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(default)
    };
    Some(ShopRecord {
        name,
        token_digests: item
            .get("token_digests")
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default(),
        postback_url: get_s(item, "postback_url"),
        conversion_types: get_s(item, "conversion_types"),
        send_test_orders: flag("send_test_orders", false),
        cartx_test_orders: get_s(item, "cartx_test_orders"),
        sum_currency: opt("sum_currency"),
        normalize_pii: flag("normalize_pii", true),
        cartpanda_api_token: opt("cartpanda_api_token"),
        cartpanda_api_token_parameter: opt("cartpanda_api_token_parameter"),
        click_id_sources: get_s(item, "click_id_sources"),
        reconcile: flag("reconcile", false),
        shop_slug: opt("shop_slug"),
        s2s: flag("s2s", false),
        verify_orders: flag("verify_orders", true),
    })
}

#[async_trait]
impl ShopDirectory for DynamoLedger {
    async fn get(&self, name: &str) -> Result<Option<ShopRecord>, LedgerError> {
        Ok(self
            .read(&keys::shop(name))
            .await?
            .as_ref()
            .and_then(record_of))
    }
}

impl DynamoLedger {
    /// Creates or replaces a shop's record (the admin command `shop put`), then notes it in the
    /// registry of shops ([`crate::shops::registry`]).
    pub async fn put_shop(&self, record: &ShopRecord, now_ms: i64) -> Result<(), LedgerError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&keys::shop(&record.name)))
            // Frozen attribute value of shop records.
            .item("kind", s("store"))
            .item(
                "token_digests",
                AttributeValue::Ss(record.token_digests.clone()),
            )
            .item("postback_url", s(&record.postback_url))
            .item("conversion_types", s(&record.conversion_types))
            .item(
                "send_test_orders",
                AttributeValue::Bool(record.send_test_orders),
            )
            .item("cartx_test_orders", s(record.cartx_test_orders.as_str()))
            .item("normalize_pii", AttributeValue::Bool(record.normalize_pii))
            .item("click_id_sources", s(&record.click_id_sources))
            .item("reconcile", AttributeValue::Bool(record.reconcile))
            .item("s2s", AttributeValue::Bool(record.s2s))
            .item("verify_orders", AttributeValue::Bool(record.verify_orders))
            .item("updated_at_ms", n(now_ms));
        if let Some(slug) = &record.shop_slug {
            put = put.item("shop_slug", s(slug));
        }
        if let Some(c) = &record.sum_currency {
            put = put.item("sum_currency", s(c));
        }
        if let Some(t) = &record.cartpanda_api_token {
            put = put.item("cartpanda_api_token", s(t));
        }
        if let Some(p) = &record.cartpanda_api_token_parameter {
            put = put.item("cartpanda_api_token_parameter", s(p));
        }
        put.send().await.map_err(ledger_error)?;
        crate::shops::registry::note_shop(self, &record.name, record.reconcile).await
    }

    /// Every shop's record, by name: a `Scan` of the whole table, for the operator commands and
    /// the registry's one-time index; reconciliation reads the registry instead.
    pub async fn list_shops(&self) -> Result<Vec<ShopRecord>, LedgerError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :prefix)")
                .expression_attribute_values(":prefix", s(keys::SHOP))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(ledger_error)?;
            out.extend(page.items().iter().filter_map(record_of));
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes a shop's record and its name in the registry; returns whether the record existed.
    pub async fn delete_shop(&self, name: &str) -> Result<bool, LedgerError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&keys::shop(name)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(ledger_error)?;
        crate::shops::registry::forget_shop(self, name).await?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }
}
