//! The order's fields a conversion is made of, read and checked: the order ID, the RedTrack click
//! ID, amounts and quantities, and which line items belong to which conversion. Pure.

use crate::conversion::rules::{MAX_CLICK_ID, Reject};
use crate::inbound::lenient::{RawAmount, RawId, Text};
use crate::inbound::money::{self, Evidence};
use crate::inbound::webhook::{LineItem, Order};
use rust_decimal::Decimal;

/// The order ID as a canonical decimal string: a positive integer up to `u64::MAX`.
pub fn order_id(raw: &RawId) -> Result<String, Reject> {
    match raw {
        RawId::Absent => Err(Reject::OrderIdMissing),
        RawId::Unsigned(0) | RawId::Signed(0) => Err(Reject::OrderIdInvalid("must not be zero")),
        RawId::Unsigned(n) => Ok(n.to_string()),
        RawId::Signed(_) => Err(Reject::OrderIdInvalid("must not be negative")),
        RawId::Float(f) if *f < 0.0 => Err(Reject::OrderIdInvalid("must not be negative")),
        RawId::Float(f) if f.fract() == 0.0 => Err(Reject::OrderIdInvalid("is too large")),
        RawId::Float(_) => Err(Reject::OrderIdInvalid("must be a whole number")),
        RawId::Text(s) if s.is_empty() => Err(Reject::OrderIdMissing),
        RawId::Text(s) => {
            if s.starts_with('-') {
                return Err(Reject::OrderIdInvalid("must not be negative"));
            }
            if !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Reject::OrderIdInvalid("must be a whole number"));
            }
            match s.parse::<u64>() {
                Ok(0) => Err(Reject::OrderIdInvalid("must not be zero")),
                Ok(n) => Ok(n.to_string()),
                Err(_) => Err(Reject::OrderIdInvalid("is too large")),
            }
        }
        RawId::Other(_) => Err(Reject::OrderIdInvalid(
            "must be a number or a string of digits",
        )),
    }
}

/// The RedTrack click ID: `checkout_params.cid` (or `clickid` / `rtkcid` there).
pub fn click_id(order: &Order) -> Result<Option<&str>, Reject> {
    let Some(params) = &order.checkout_params else {
        return Ok(None);
    };
    let Some(cid) = params
        .cid
        .get()
        .or(params.clickid.get())
        .or(params.rtkcid.get())
    else {
        return Ok(None);
    };
    if cid.len() > MAX_CLICK_ID {
        return Err(Reject::ClickIdInvalid(
            "is too long to be a RedTrack click ID",
        ));
    }
    if !cid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        return Err(Reject::ClickIdInvalid(
            "holds characters a RedTrack click ID never has",
        ));
    }
    Ok(Some(cid))
}

/// A required amount of the order, read with the order's [`Evidence`] and the numeric `twins`
/// of the same amount (see [`Evidence::read`]).
pub(crate) fn amount(
    raw: &RawAmount,
    field: &str,
    evidence: &Evidence,
    twins: &[Decimal],
) -> Result<Decimal, Reject> {
    let parsed = evidence
        .read(raw, twins)
        .ok_or_else(|| Reject::AmountMissing {
            field: field.to_owned(),
        })?;
    parsed.map_err(|error| Reject::Amount {
        field: field.to_owned(),
        error,
    })
}

/// The numeric values among `raws` (JSON numbers): what an ambiguous text is checked against.
pub(crate) fn numeric_twins(raws: &[&RawAmount]) -> Vec<Decimal> {
    raws.iter()
        .filter(|raw| matches!(raw, RawAmount::Number(_)))
        .filter_map(|raw| money::parse_raw(raw)?.ok())
        .collect()
}

/// The order total, and the formatted total when it disagreed with the cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderTotal {
    pub value: Decimal,
    /// `(formatted, cents)` when `total_price` read as more than a cent away from
    /// `unformatted_total_price` (the cents won; logged by the bridge).
    pub disagreement: Option<(Decimal, Decimal)>,
}

/// The order total: `unformatted_total_price` (whole cents) when the payload carries it, the
/// authority; else `total_price`, an ambiguous text decided by `payment.amount` or the order's
/// [`Evidence`].
pub fn order_total(order: &Order, evidence: &Evidence) -> Result<OrderTotal, Reject> {
    let cents = money::parse_cents(&order.unformatted_total_price)
        .transpose()
        .map_err(|error| Reject::Amount {
            field: "order.unformatted_total_price".to_owned(),
            error,
        })?;
    let Some(cents) = cents else {
        let payment = order.payment.as_ref().map(|p| &p.amount);
        let twins = numeric_twins(&payment.into_iter().collect::<Vec<_>>());
        return Ok(OrderTotal {
            value: amount(&order.total_price, "order.total_price", evidence, &twins)?,
            disagreement: None,
        });
    };
    let formatted = evidence
        .read(&order.total_price, &[cents])
        .and_then(Result::ok);
    Ok(OrderTotal {
        value: cents,
        disagreement: formatted
            .filter(|f| (*f - cents).abs() > Decimal::new(1, 2))
            .map(|f| (f, cents)),
    })
}

/// Most units one line may carry; more is not a real order.
pub const MAX_QUANTITY: i64 = 10_000;

/// A line's quantity (`field` names it in a refusal): missing counts as 1, 0 as 0; fractional,
/// negative, unreadable or over [`MAX_QUANTITY`] is refused, never read as 1.
pub(crate) fn quantity(text: &Text, field: &str) -> Result<Decimal, Reject> {
    let Some(q) = text.get() else {
        return Ok(Decimal::ONE);
    };
    let refuse = |why: &'static str| {
        Err(Reject::Quantity {
            field: field.to_owned(),
            why,
        })
    };
    let Ok(value) = Decimal::from_str_exact(q) else {
        return refuse("is not a number");
    };
    if value.is_sign_negative() && !value.is_zero() {
        refuse("is negative")
    } else if !value.fract().is_zero() {
        refuse("is not a whole number")
    } else if value > Decimal::from(MAX_QUANTITY) {
        refuse("is over 10000")
    } else {
        Ok(value.abs().trunc())
    }
}

pub(crate) fn front_items(order: &Order) -> Vec<&LineItem> {
    let front: Vec<&LineItem> = order.line_items.iter().filter(|i| !i.is_upsell()).collect();
    if front.is_empty() {
        all_items(order)
    } else {
        front
    }
}

pub(crate) fn all_items(order: &Order) -> Vec<&LineItem> {
    order.line_items.iter().collect()
}

pub(crate) fn line_key(item: &LineItem, index: usize) -> String {
    let raw = item.id.get().map(str::to_owned).unwrap_or_else(|| {
        format!(
            "{}-{}",
            item.up_sell_id.get().unwrap_or("0"),
            item.product_id.get().unwrap_or(&index.to_string())
        )
    });
    raw.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect()
}
