//! The dedup store on DynamoDB: table with string partition key `pk`, TTL attribute `expires_at`.
//! One conditional PutItem per claim (a lost race reads the old record from the failure itself,
//! `ReturnValuesOnConditionCheckFailure = ALL_OLD`), one UpdateItem when sent.

use crate::ledger::claim::{
    Claim, ClaimOutcome, Finish, IN_PROGRESS_GRACE_S, Ledger, LedgerError, Record, STATUS_FAILED,
    STATUS_IN_PROGRESS, STATUS_QUEUED,
};
use crate::shops::directory::{ShopDirectory, ShopRecord};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoLedger {
            client,
            table: table.into(),
        }
    }

    /// The DynamoDB client, for the other record kinds kept in the table (notes, watermarks).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s(item: &HashMap<String, AttributeValue>, k: &str) -> String {
    item.get(k)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

fn get_n(item: &HashMap<String, AttributeValue>, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads a stored record back.
pub fn record_from_item(item: &HashMap<String, AttributeValue>) -> Record {
    Record {
        status: get_s(item, "status"),
        fingerprint: get_s(item, "fingerprint"),
        attempt: get_s(item, "attempt"),
        lease_until_ms: get_n(item, "lease_until_ms").unwrap_or(0),
        expires_at_s: get_n(item, "expires_at").unwrap_or(0),
        sent_at_ms: get_n(item, "sent_at_ms"),
    }
}

fn store_error<E: ProvideErrorMetadata + std::fmt::Debug>(err: SdkError<E>) -> LedgerError {
    let code = err
        .as_service_error()
        .and_then(|e| e.code())
        .map(str::to_owned);
    match code.as_deref() {
        Some(
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded",
        ) => LedgerError::Throttled,
        Some(code) => LedgerError::Unavailable(code.to_owned()),
        None => LedgerError::Unavailable(match &err {
            SdkError::TimeoutError(_) => "timeout".to_owned(),
            SdkError::DispatchFailure(_) => "connection failed".to_owned(),
            SdkError::ResponseError(_) => "unreadable response".to_owned(),
            SdkError::ConstructionFailure(_) => "request construction failed".to_owned(),
            _ => "service error".to_owned(),
        }),
    }
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
        // A record whose every retry vanished between our write and our read is retried once.
        for _ in 0..3 {
            let mut put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(&claim.key))
                .item("status", s(STATUS_IN_PROGRESS))
                .item("fingerprint", s(&claim.fingerprint))
                .item("attempt", s(&claim.attempt))
                .item("order_id", s(&claim.order_id))
                .item("event", s(&claim.event))
                .item("conversion_type", s(&claim.conversion_type))
                .item("claimed_at_ms", n(claim.now_ms))
                .item("lease_until_ms", n(claim.lease_until_ms))
                .item(
                    "expires_at",
                    n(claim.lease_until_ms / 1000 + IN_PROGRESS_GRACE_S),
                )
                .condition_expression(
                    "attribute_not_exists(pk) OR expires_at < :now_s \
                     OR (#status = :in_progress AND lease_until_ms < :now_ms) \
                     OR (#status IN (:queued, :failed) AND fingerprint = :fingerprint)",
                )
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":now_s", n(claim.now_ms / 1000))
                .expression_attribute_values(":now_ms", n(claim.now_ms))
                .expression_attribute_values(":in_progress", s(STATUS_IN_PROGRESS))
                .expression_attribute_values(":queued", s(STATUS_QUEUED))
                .expression_attribute_values(":failed", s(STATUS_FAILED))
                .expression_attribute_values(":fingerprint", s(&claim.fingerprint))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            // For the report (`crate::report`): the conversion's sum and currency, never PII.
            if let Some(amount) = &claim.amount {
                put = put.item("amount", s(amount));
            }
            if let Some(currency) = &claim.currency {
                put = put.item("currency", s(currency));
            }
            let result = put.send().await;
            let err = match result {
                Ok(_) => return Ok(ClaimOutcome::Claimed),
                Err(err) => err,
            };
            let old = match err.as_service_error() {
                Some(e) if e.is_conditional_check_failed_exception() => {
                    if let aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) = e {
                        c.item().cloned()
                    } else {
                        None
                    }
                }
                _ => return Err(store_error(err)),
            };
            let old = match old {
                Some(item) => Some(item),
                None => self.read(&claim.key).await?,
            };
            match old {
                Some(item) => return Ok(record_from_item(&item).outcome_for(&claim.fingerprint)),
                None => continue,
            }
        }
        Err(LedgerError::Unavailable(
            "claim kept racing with deletes".to_owned(),
        ))
    }

    async fn finish(
        &self,
        claim: &Claim,
        finish: Finish,
        now_ms: i64,
        expires_at_s: i64,
    ) -> Result<bool, LedgerError> {
        let update = if finish == Finish::Sent {
            "SET #status = :status, expires_at = :exp, updated_at_ms = :now_ms, sent_at_ms = :now_ms REMOVE lease_until_ms"
        } else {
            "SET #status = :status, expires_at = :exp, updated_at_ms = :now_ms REMOVE lease_until_ms"
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&claim.key))
            .update_expression(update)
            .condition_expression("attempt = :attempt")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(finish.status()))
            .expression_attribute_values(":exp", n(expires_at_s))
            .expression_attribute_values(":now_ms", n(now_ms))
            .expression_attribute_values(":attempt", s(&claim.attempt))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(store_error(err)),
        }
    }

    async fn release(&self, claim: &Claim) -> Result<(), LedgerError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&claim.key))
            .condition_expression("attempt = :attempt AND #status = :in_progress")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":attempt", s(&claim.attempt))
            .expression_attribute_values(":in_progress", s(STATUS_IN_PROGRESS))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(store_error(err)),
        }
    }

    async fn note(&self, note: &crate::ledger::notes::Note) -> Result<(), LedgerError> {
        crate::ledger::notes::put(&self.client, &self.table, note).await
    }
}

impl DynamoLedger {
    async fn read(
        &self,
        key: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        Ok(out.item)
    }
}

const SHOP_PREFIX: &str = "store#";

fn record_of(item: &HashMap<String, AttributeValue>) -> Option<ShopRecord> {
    let name = get_s(item, "pk").strip_prefix(SHOP_PREFIX)?.to_owned();
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
            .read(&format!("{SHOP_PREFIX}{name}"))
            .await?
            .as_ref()
            .and_then(record_of))
    }
}

impl DynamoLedger {
    /// Creates or replaces a store (`cartpanda-redtrack store put`).
    pub async fn put_shop(&self, record: &ShopRecord, now_ms: i64) -> Result<(), LedgerError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&format!("{SHOP_PREFIX}{}", record.name)))
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
        put.send().await.map_err(store_error)?;
        Ok(())
    }

    /// Every store, by name.
    pub async fn list_shops(&self) -> Result<Vec<ShopRecord>, LedgerError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :prefix)")
                .expression_attribute_values(":prefix", s(SHOP_PREFIX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(store_error)?;
            out.extend(page.items().iter().filter_map(record_of));
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes a store; returns whether it existed.
    pub async fn delete_shop(&self, name: &str) -> Result<bool, LedgerError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&format!("{SHOP_PREFIX}{name}")))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(store_error)?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }
}
