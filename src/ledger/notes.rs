//! "Needs a look": small records of orders that were not sent and that someone should look at,
//! kept in the ledger's table next to the conversions so the report can list them.
//!
//! Key `note#<order id>#<reason>` for the default shop, `note#<shop>#<order id>#<reason>` for a
//! named shop (the same layout as the conversions' `evt#` keys). Attributes: `kind` = `note`,
//! `shop` (named shops), `order_id`, `event`, `reason`, `created_at_ms`, `day` (`YYYY-MM-DD`,
//! UTC), `via` (the input that brought the order, [`Via`]; absent in older notes) and
//! `expires_at` (TTL). Never PII: no name, email, phone, document, click ID or URL.
//!
//! Reasons: `no_click_id` (the order carried no usable click ID: never sent) and `too_old`
//! (created longer ago than the ledger remembers: never sent). Orders refused with 422 leave
//! `refused#…` records instead ([`crate::ledger::refusal`]); notes named `refused*` by older
//! versions still count as refused in the report. The first note of an order and reason is kept
//! (a redelivery does not move it to another day).

use crate::ledger::claim::Via;

/// The reason of an order without a usable click ID.
pub const NO_CLICK_ID: &str = "no_click_id";
/// The reason of an order older than the ledger's memory (`DEDUP_TTL_DAYS`): never sent.
pub const TOO_OLD: &str = "too_old";

/// One note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `None` for the default shop.
    pub shop: Option<String>,
    pub order_id: String,
    pub event: String,
    /// A short code (`[a-z0-9_]`): `no_click_id`, `too_old`.
    pub reason: String,
    pub created_at_ms: i64,
    /// How long the note is kept, in days.
    pub keep_days: u32,
    /// The input that brought the order (`via`); `None` in notes written before it existed.
    pub via: Option<Via>,
}

impl Note {
    /// The record key.
    pub fn key(&self) -> String {
        crate::ledger::keys::note(self.shop.as_deref(), &self.order_id, &self.reason)
    }

    /// When DynamoDB's TTL may remove it (epoch seconds).
    pub fn expires_at_s(&self) -> i64 {
        self.created_at_ms / 1000 + i64::from(self.keep_days) * 86_400
    }
}

impl Note {
    /// The note of an order without a usable click ID (never sent).
    pub fn no_click_id(
        shop: Option<&str>,
        order_id: &str,
        event: &str,
        now_ms: i64,
        keep_days: u32,
    ) -> Self {
        Note::new(shop, order_id, event, NO_CLICK_ID, now_ms, keep_days)
    }

    /// A note of `reason` about an order, left now.
    pub fn new(
        shop: Option<&str>,
        order_id: &str,
        event: &str,
        reason: &str,
        now_ms: i64,
        keep_days: u32,
    ) -> Self {
        Note {
            shop: shop.map(str::to_owned),
            order_id: order_id.to_owned(),
            event: event.to_owned(),
            reason: reason.to_owned(),
            created_at_ms: now_ms,
            keep_days,
            via: None,
        }
    }

    /// The same note saying which input brought the order.
    pub fn with_via(self, via: Via) -> Self {
        Note {
            via: Some(via),
            ..self
        }
    }
}

/// Leaves a note; a failure is logged (with the order ID and reason only), never fatal.
pub async fn leave(ledger: &dyn crate::ledger::claim::Ledger, note: &Note) {
    if let Err(err) = ledger.note(note).await {
        tracing::warn!(
            shop = note.shop.as_deref(),
            order_id = %note.order_id,
            event = %note.event,
            reason = %note.reason,
            error = %err,
            "could not leave the note"
        );
    }
}

/// The UTC day (`YYYY-MM-DD`) of an epoch-milliseconds instant.
pub fn day_of(ms: i64) -> String {
    crate::inbound::datetime::format_utc(ms.div_euclid(1000))[..10].to_owned()
}

/// Writes a note unless one exists already for the order and reason.
#[cfg(feature = "runtime")]
pub async fn put(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    note: &Note,
) -> Result<(), crate::ledger::claim::LedgerError> {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let mut put = client
        .put_item()
        .table_name(table)
        .item("pk", V::S(note.key()))
        .item("kind", V::S("note".to_owned()))
        .item("order_id", V::S(note.order_id.clone()))
        .item("event", V::S(note.event.clone()))
        .item("reason", V::S(note.reason.clone()))
        .item("created_at_ms", V::N(note.created_at_ms.to_string()))
        .item("day", V::S(day_of(note.created_at_ms)))
        .item("expires_at", V::N(note.expires_at_s().to_string()))
        .condition_expression("attribute_not_exists(pk)");
    if let Some(shop) = &note.shop {
        put = put.item("shop", V::S(shop.clone()));
    }
    if let Some(via) = note.via {
        put = put.item("via", V::S(via.as_str().to_owned()));
    }
    match put.send().await {
        Ok(_) => Ok(()),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(())
        }
        Err(err) => Err(crate::ledger::claim::LedgerError::Unavailable(
            aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&err)
                .unwrap_or("request failed")
                .to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_conversions_layout() {
        let mut note = Note {
            shop: None,
            order_id: "42".into(),
            event: "order.paid".into(),
            reason: NO_CLICK_ID.into(),
            created_at_ms: 1_795_000_000_000,
            keep_days: 30,
            via: None,
        };
        assert_eq!(note.key(), "note#42#no_click_id");
        note.shop = Some("loja-sp".into());
        assert_eq!(note.key(), "note#loja-sp#42#no_click_id");
        assert_eq!(note.expires_at_s(), 1_795_000_000 + 30 * 86_400);
        assert_eq!(day_of(1_795_000_000_000), "2026-11-18");
    }
}
