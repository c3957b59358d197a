//! The ledger on DynamoDB: table with string partition key `pk`, TTL attribute `expires_at`.
//! One conditional PutItem per claim (a lost race reads the old record from the failure itself,
//! `ReturnValuesOnConditionCheckFailure = ALL_OLD`), one UpdateItem when sent.

use crate::ledger::claim::{
    CLAIM_CONDITION, Claim, ClaimOutcome, Claimable, Finish, IN_PROGRESS_GRACE_S, Ledger,
    LedgerError, Record, STATUS_FAILED, STATUS_IN_PROGRESS, STATUS_QUEUED,
};
use crate::ledger::keys;
use crate::ledger::refusal::{KIND_REFUSED, Refusal};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct DynamoLedger {
    pub(crate) client: Client,
    pub(crate) table: String,
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

pub(crate) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

pub(crate) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn get_s(item: &HashMap<String, AttributeValue>, k: &str) -> String {
    item.get(k)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn get_n(item: &HashMap<String, AttributeValue>, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// The `sent_day` a conversion record sent at `now_ms` gets (the key of the `sent-day` index,
/// [`keys::sent_day`]): its shop and UTC day. `None` for a dry run's record.
pub fn sent_day_of(key: &str, now_ms: i64) -> Option<String> {
    match keys::parse(key)? {
        keys::Key::Conversion {
            shop,
            dry_run: false,
            ..
        } => Some(keys::sent_day(shop, &crate::ledger::notes::day_of(now_ms))),
        _ => None,
    }
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
        via: get_opt_s(item, "via"),
        attempts: get_n(item, "attempts").and_then(|v| u32::try_from(v).ok()),
        rt_status: get_n(item, "rt_status").and_then(|v| u16::try_from(v).ok()),
        click_id: get_opt_s(item, "click_id"),
    }
}

/// A string attribute, `None` when absent (a record written before it existed).
pub(crate) fn get_opt_s(item: &HashMap<String, AttributeValue>, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

/// Whether a conditional write failed on its condition (not on the service or the network).
pub(crate) fn failed_condition<E>(err: &SdkError<E>) -> bool
where
    E: ProvideErrorMetadata,
{
    err.as_service_error()
        .is_some_and(|e| e.code() == Some("ConditionalCheckFailedException"))
}

pub(crate) fn ledger_error<E: ProvideErrorMetadata + std::fmt::Debug>(
    err: SdkError<E>,
) -> LedgerError {
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

/// One clause of the claim condition as a DynamoDB condition expression, over `#status` and the
/// values a claim binds (`:now_s`, `:now_ms`, `:in_progress`, `:queued`, `:failed`,
/// `:fingerprint`).
fn clause(clause: Claimable) -> &'static str {
    match clause {
        Claimable::NoRecord => "attribute_not_exists(pk)",
        Claimable::Expired => "expires_at < :now_s",
        Claimable::LeaseOver => "(#status = :in_progress AND lease_until_ms < :now_ms)",
        Claimable::AwaitingResend => {
            "((#status = :queued AND fingerprint = :fingerprint) OR #status = :failed)"
        }
    }
}

/// The claim condition ([`CLAIM_CONDITION`]) as the PutItem's condition expression.
pub fn claim_condition() -> String {
    CLAIM_CONDITION
        .iter()
        .map(|c| clause(*c))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The `UpdateItem` expression that records how a claim ended: its status and expiry, `SENT`'s
/// time and `sent_day` (the `sent-day` index's key, [`sent_day_of`]), and what the send saw
/// (`attempts`, `rt_status`) when the claim carries it.
fn finish_update(claim: &Claim, finish: Finish, now_ms: i64) -> String {
    let mut set = "SET #status = :status, expires_at = :exp, updated_at_ms = :now_ms".to_owned();
    if finish == Finish::Sent {
        set.push_str(", sent_at_ms = :now_ms");
        if sent_day_of(&claim.key, now_ms).is_some() {
            set.push_str(", sent_day = :sent_day");
        }
    }
    if claim.attempts.is_some() {
        set.push_str(", attempts = :attempts");
    }
    if claim.rt_status.is_some() {
        set.push_str(", rt_status = :rt_status");
    }
    set + " REMOVE lease_until_ms"
}

/// The values [`finish_update`] names beyond the ones every finish binds.
fn finish_values(
    claim: &Claim,
    finish: Finish,
    now_ms: i64,
) -> Option<HashMap<String, AttributeValue>> {
    let mut values = HashMap::new();
    if let Some(day) = sent_day_of(&claim.key, now_ms).filter(|_| finish == Finish::Sent) {
        values.insert(":sent_day".to_owned(), s(&day));
    }
    if let Some(attempts) = claim.attempts {
        values.insert(":attempts".to_owned(), n(i64::from(attempts)));
    }
    if let Some(status) = claim.rt_status {
        values.insert(":rt_status".to_owned(), n(i64::from(status)));
    }
    Some(values)
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
        // The write fails on the record in the way, returned with the failure (or read back).
        // That record may be this very claim: DynamoDB applied the write, its answer was lost and
        // the SDK's retry met it (`Record::outcome_for_claim` then says `Claimed`). A record
        // deleted between the failed write and the read (its holder released it) means the key
        // is free again: the claim is written again, three tries in all.
        for _ in 0..3 {
            let err = match self.claim_put(claim).send().await {
                Ok(out) => {
                    if let Some(replaced) = out.attributes.filter(|a| !a.is_empty()) {
                        claim.replaced(&record_from_item(&replaced));
                    }
                    return Ok(ClaimOutcome::Claimed);
                }
                Err(err) => err,
            };
            if let Some(item) = self.holder(&claim.key, err).await? {
                return Ok(record_from_item(&item).outcome_for_claim(claim));
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
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&claim.key))
            .update_expression(finish_update(claim, finish, now_ms))
            .set_expression_attribute_values(finish_values(claim, finish, now_ms))
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
            Err(err) => Err(ledger_error(err)),
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
            Err(err) => Err(ledger_error(err)),
        }
    }

    async fn note(&self, note: &crate::ledger::notes::Note) -> Result<(), LedgerError> {
        crate::ledger::notes::put(&self.client, &self.table, note).await
    }

    async fn note_refusal(&self, refusal: &Refusal) -> Result<(), LedgerError> {
        self.put_refusal(refusal).await
    }

    async fn look_up(&self, key: &str) -> Result<Option<Record>, LedgerError> {
        Ok(self.read(key).await?.as_ref().map(record_from_item))
    }
}

impl DynamoLedger {
    /// Puts the record of an order refused with 422 (see [`crate::ledger::refusal`]).
    async fn put_refusal(&self, r: &Refusal) -> Result<(), LedgerError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&r.key()))
            .item("kind", s(KIND_REFUSED))
            .item("shop", s(r.shop.as_deref().unwrap_or("default")))
            .item("event", s(&r.event))
            .item("field", s(&r.field))
            .item("reason", s(&r.reason))
            .item("refused_at_ms", n(r.at_ms))
            .item("expires_at", n(r.expires_at_s()));
        if let Some(order_id) = &r.order_id {
            put = put.item("order_id", s(order_id));
        }
        if let Some(via) = r.via {
            put = put.item("via", s(via.as_str()));
        }
        put.send().await.map_err(ledger_error)?;
        Ok(())
    }

    /// The conditional PutItem of a claim: an `IN_PROGRESS` record, written only where
    /// [`claim_condition`] holds, that returns the record in the way when it does not.
    fn claim_put(&self, claim: &Claim) -> PutItemFluentBuilder {
        let put = self
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
            .condition_expression(claim_condition())
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":now_s", n(claim.now_ms / 1000))
            .expression_attribute_values(":now_ms", n(claim.now_ms))
            .expression_attribute_values(":in_progress", s(STATUS_IN_PROGRESS))
            .expression_attribute_values(":queued", s(STATUS_QUEUED))
            .expression_attribute_values(":failed", s(STATUS_FAILED))
            .expression_attribute_values(":fingerprint", s(&claim.fingerprint))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            // What the claim replaced, for the attempts made so far (`Claim::replaced`).
            .return_values(ReturnValue::AllOld);
        // Which input brought it and the click ID sent (the order's story, RedTrack's count).
        let put = match claim.via {
            Some(via) => put.item("via", s(via.as_str())),
            None => put,
        };
        let put = match &claim.click_id {
            Some(click_id) => put.item("click_id", s(click_id)),
            None => put,
        };
        // For the report (`crate::report`): the conversion's sum and currency, never PII.
        let put = match &claim.amount {
            Some(amount) => put.item("amount", s(amount)),
            None => put,
        };
        match &claim.currency {
            Some(currency) => put.item("currency", s(currency)),
            None => put,
        }
    }

    /// The record that kept a claim from being written: the one the failed condition returned,
    /// else read back; `None` when it was deleted in between. Any other failure is an error.
    async fn holder(
        &self,
        key: &str,
        err: SdkError<PutItemError>,
    ) -> Result<Option<HashMap<String, AttributeValue>>, LedgerError> {
        let returned = match err.as_service_error() {
            Some(PutItemError::ConditionalCheckFailedException(failed)) => failed.item().cloned(),
            _ => return Err(ledger_error(err)),
        };
        match returned {
            Some(item) => Ok(Some(item)),
            None => self.read(key).await,
        }
    }

    /// The item under `key`, read consistently.
    pub(crate) async fn read(
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
            .map_err(ledger_error)?;
        Ok(out.item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_condition_is_the_expression_deployed_so_far() {
        assert_eq!(
            claim_condition(),
            "attribute_not_exists(pk) OR expires_at < :now_s \
             OR (#status = :in_progress AND lease_until_ms < :now_ms) \
             OR ((#status = :queued AND fingerprint = :fingerprint) OR #status = :failed)"
        );
    }
}
