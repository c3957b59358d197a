//! Orders refused with 422: Cartpanda may never redeliver them, so each leaves a small record in
//! the ledger's table for an operator to find and fix, in its own key space:
//! `refused#<shop or default>#<order id>#<event>` (an order without a usable ID:
//! `no-id-<ms>` in its place). Attributes: `kind` = `refused`, `shop`, `order_id`, `event`,
//! `field` (the field refused, e.g. `order.total_price`), `reason` (what was wrong with it, never
//! its value), `refused_at_ms`, `via` (the route: `webhook` or `s2s`; absent in older records),
//! `expires_at` (TTL, [`REFUSAL_KEEP_S`]). A later refusal of the same
//! order and event replaces the record. No PII, no values.

/// How long a refusal record is kept: 30 days.
pub const REFUSAL_KEEP_S: i64 = 30 * 86_400;

/// The `kind` attribute of a refusal record.
pub const KIND_REFUSED: &str = "refused";

/// One order refused with 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The named shop, `None` for the default one.
    pub shop: Option<String>,
    /// The order's canonical ID, `None` when it had no usable one.
    pub order_id: Option<String>,
    pub event: String,
    /// The field refused (`order.line_items[1].quantity`).
    pub field: String,
    /// What was wrong with it, in words that never quote the value (`is ambiguous: …`).
    pub reason: String,
    pub at_ms: i64,
    /// The route the refused delivery came by (`webhook`, `s2s`); `None` in older records.
    pub via: Option<crate::ledger::claim::Via>,
}

impl Refusal {
    /// The record's key: `refused#<shop or default>#<order id or no-id-<ms>>#<event>`.
    pub fn key(&self) -> String {
        let order = self
            .order_id
            .clone()
            .unwrap_or_else(|| format!("no-id-{}", self.at_ms));
        crate::ledger::keys::refusal(self.shop.as_deref(), &order, &self.event)
    }

    /// When the record expires (epoch seconds).
    pub fn expires_at_s(&self) -> i64 {
        self.at_ms / 1000 + REFUSAL_KEEP_S
    }

    /// The field with its list positions dropped (`order.line_items[].price`): the metric
    /// dimension, bounded whatever the order holds.
    pub fn field_class(&self) -> String {
        let mut out = String::with_capacity(self.field.len());
        let mut in_index = false;
        for c in self.field.chars() {
            match c {
                '[' => {
                    in_index = true;
                    out.push(c);
                }
                ']' => {
                    in_index = false;
                    out.push(c);
                }
                _ if in_index => {}
                _ => out.push(c),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_field_classes() {
        let mut r = Refusal {
            shop: None,
            order_id: Some("48213577".into()),
            event: "order.paid".into(),
            field: "order.line_items[12].quantity".into(),
            reason: "is not a whole number".into(),
            at_ms: 1_795_000_000_123,
            via: None,
        };
        assert_eq!(r.key(), "refused#default#48213577#order.paid");
        assert_eq!(r.field_class(), "order.line_items[].quantity");
        assert_eq!(r.expires_at_s(), 1_795_000_000 + 30 * 86_400);
        r.shop = Some("loja-sp".into());
        r.order_id = None;
        r.event = "order#paid x".into();
        assert_eq!(r.key(), "refused#loja-sp#no-id-1795000000123#orderpaidx");
    }
}
