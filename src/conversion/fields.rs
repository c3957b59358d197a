//! The order's fields a conversion is made of, read and checked: the order ID, the RedTrack click
//! ID, amounts and quantities, and which line items belong to which conversion. Pure.

use crate::conversion::rules::{MAX_CLICK_ID, Reject};
use crate::inbound::lenient::{RawAmount, RawId, Text};
use crate::inbound::money;
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

pub(crate) fn amount(raw: &RawAmount, field: &str) -> Result<Decimal, Reject> {
    let parsed = money::parse_raw(raw).ok_or_else(|| Reject::AmountMissing {
        field: field.to_owned(),
    })?;
    parsed.map_err(|error| Reject::Amount {
        field: field.to_owned(),
        error,
    })
}

pub(crate) fn quantity(text: &Text) -> Decimal {
    text.get()
        .and_then(|q| money::parse_amount_text(q).ok())
        .filter(|q| !q.is_zero() && q.fract().is_zero() && *q <= Decimal::from(10_000))
        .unwrap_or(Decimal::ONE)
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
