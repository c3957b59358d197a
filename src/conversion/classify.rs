//! From a parsed delivery to the conversions it produces: which event, which RedTrack type, which
//! amount, which event ID, and the fingerprint that tells a duplicate from a conflict. Pure: no
//! I/O, no clock. The rules and types it follows are in [`crate::conversion::rules`], the order's
//! fields in [`crate::conversion::fields`].

use crate::conversion::fields::{click_id, order_id};
use crate::conversion::rules::{
    Conversion, Kind, MAX_CONVERSIONS, MAX_LINE_ITEMS, Reject, Rules, Skip,
};

use crate::conversion::currency;
use crate::conversion::fields::{
    OrderTotal, all_items, amount, front_items, line_key, numeric_twins, order_total, quantity,
};
use crate::inbound::lenient::RawAmount;
use crate::inbound::money::{self, Evidence};
use crate::inbound::webhook::{Delivery, EventField, LineItem, Order, OrderField};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

/// A classified delivery: the order it is about and what to do with it.
#[derive(Debug)]
pub struct Classified<'a> {
    pub event: &'a str,
    pub order_id: Option<String>,
    pub order: Option<&'a Order>,
    pub decision: Decision<'a>,
    /// `(formatted, cents)` when the formatted `total_price` disagreed with
    /// `unformatted_total_price` by more than a cent: the cents won; the bridge logs it.
    pub total_disagreement: Option<(Decimal, Decimal)>,
}

#[derive(Debug)]
pub enum Decision<'a> {
    Convert(Vec<Conversion<'a>>),
    Skip(Skip),
}

/// Decides what a delivery converts into.
pub fn classify<'a>(delivery: &'a Delivery, rules: &Rules) -> Result<Classified<'a>, Reject> {
    let event = match &delivery.event {
        EventField::Name(name) => name.as_str(),
        // `webhook::parse` refuses these; treat defensively as unmapped.
        _ => "",
    };
    let order = match &delivery.order {
        OrderField::Object(order) => Some(order.as_ref()),
        _ => None,
    };
    let evidence = order.map(Evidence::of).unwrap_or_default();
    let decision = decide(delivery, event, rules, &evidence)?;
    let total_disagreement = match &decision {
        Decision::Convert(_) => order
            .and_then(|o| order_total(o, &evidence).ok())
            .and_then(|t| t.disagreement),
        Decision::Skip(_) => None,
    };
    Ok(Classified {
        event,
        order_id: order.and_then(|o| order_id(&o.id).ok()),
        order,
        decision,
        total_disagreement,
    })
}

/// The steps of classification: the event's conversion type, the order checked, test orders
/// and orders without a click ID skipped, then the conversions of its kind.
fn decide<'a>(
    delivery: &'a Delivery,
    event: &str,
    rules: &Rules,
    evidence: &Evidence,
) -> Result<Decision<'a>, Reject> {
    let chargeback_flag =
        matches!(&delivery.order, OrderField::Object(o) if o.chargeback_received.0);
    let effective = if event == "order.updated" && chargeback_flag {
        "order.chargeback"
    } else {
        event
    };
    let Some(conversion_type) = rules.conversion_types.get(effective) else {
        return Ok(Decision::Skip(if event == "order.updated" {
            Skip::NotAChargeback
        } else {
            Skip::EventNotMapped
        }));
    };
    let (order, id) = checked_order(delivery)?;
    let test = rules.is_test(order);
    if test && !rules.send_test_orders {
        return Ok(Decision::Skip(Skip::TestOrder));
    }
    if click_id(order)?.is_none() {
        return Ok(Decision::Skip(Skip::NoClickId));
    }
    let order_of = OrderOf {
        order,
        id: &id,
        evidence,
    };
    let conversions = conversions_of(&order_of, effective, conversion_type)?;
    finish(conversions, order, test, rules)
}

/// The order of a delivery that converts, and its ID: present, an object, not absurdly long.
fn checked_order(delivery: &Delivery) -> Result<(&Order, String), Reject> {
    let order = match &delivery.order {
        OrderField::Object(order) => order.as_ref(),
        OrderField::Missing => return Err(Reject::OrderMissing),
        OrderField::NotObject(kind) => return Err(Reject::OrderNotObject(kind)),
    };
    let id = order_id(&order.id)?;
    if order.line_items.len() > MAX_LINE_ITEMS {
        return Err(Reject::TooManyLineItems(order.line_items.len()));
    }
    Ok((order, id))
}

/// The order being classified, its ID and the evidence its amounts are read with.
struct OrderOf<'a, 'e> {
    order: &'a Order,
    id: &'e str,
    evidence: &'e Evidence,
}

impl OrderOf<'_, '_> {
    /// The order total ([`order_total`]: the cents when present).
    fn total(&self) -> Result<Decimal, Reject> {
        order_total(self.order, self.evidence).map(|OrderTotal { value, .. }| value)
    }

    /// A line's price, an ambiguous text decided by the line's own numeric `actual_price_paid`
    /// or the order's evidence.
    fn line_price(&self, index: usize, item: &LineItem) -> Result<Decimal, Reject> {
        let field = format!("order.line_items[{index}].price");
        let twins = numeric_twins(&[&item.actual_price_paid]);
        amount(&item.price, &field, self.evidence, &twins)
    }
}

/// The conversions of the (effective) event's kind.
fn conversions_of<'a>(
    o: &OrderOf<'a, '_>,
    effective: &str,
    conversion_type: &str,
) -> Result<Vec<Conversion<'a>>, Reject> {
    let kind = match effective {
        "order.paid" => Kind::Purchase,
        "order.upsell" => Kind::Upsell,
        "order.refunded" => Kind::Refund,
        "order.chargeback" => Kind::Chargeback,
        _ => Kind::Other,
    };
    Ok(match kind {
        Kind::Purchase => vec![purchase(o, conversion_type)?],
        Kind::Chargeback => vec![whole_order(
            o,
            kind,
            conversion_type,
            "chargeback",
            all_items(o.order),
        )?],
        Kind::Other => {
            let suffix = effective.strip_prefix("order.").unwrap_or(effective);
            vec![whole_order(
                o,
                kind,
                conversion_type,
                suffix,
                all_items(o.order),
            )?]
        }
        Kind::Upsell => upsells(o, conversion_type)?,
        Kind::Refund => refunds(o, conversion_type)?,
    })
}

/// The conversions checked against the limits, marked as test or not, and in the currency to
/// send.
fn finish<'a>(
    mut conversions: Vec<Conversion<'a>>,
    order: &Order,
    test: bool,
    rules: &Rules,
) -> Result<Decision<'a>, Reject> {
    if conversions.is_empty() {
        return Ok(Decision::Skip(Skip::NoUpsellItems));
    }
    if conversions.len() > MAX_CONVERSIONS {
        return Err(Reject::TooManyConversions(conversions.len()));
    }
    for conversion in &mut conversions {
        conversion.test = test;
    }
    if currency::convert(&mut conversions, order, rules.sum_currency.as_deref()).is_err() {
        return Ok(Decision::Skip(Skip::NoExchangeRate));
    }
    Ok(Decision::Convert(conversions))
}

fn whole_order<'a>(
    o: &OrderOf<'a, '_>,
    kind: Kind,
    conversion_type: &str,
    suffix: &str,
    items: Vec<&'a LineItem>,
) -> Result<Conversion<'a>, Reject> {
    Ok(Conversion {
        kind,
        event_id: format!("{}-{suffix}", o.id),
        conversion_type: conversion_type.to_owned(),
        amount: o.total()?,
        items,
        upsell_no: None,
        downsell: false,
        currency: None,
        rate: None,
        evidence: *o.evidence,
        test: false,
    })
}

/// The front-offer sale: the order total less any upsell lines already on the order, so that a
/// late redelivery of `order.paid` (after upsells were added) is a duplicate, not a conflict, and
/// upsells are never counted twice.
fn purchase<'a>(o: &OrderOf<'a, '_>, conversion_type: &str) -> Result<Conversion<'a>, Reject> {
    let mut conversion = whole_order(
        o,
        Kind::Purchase,
        conversion_type,
        "purchase",
        front_items(o.order),
    )?;
    for (index, item) in o
        .order
        .line_items
        .iter()
        .enumerate()
        .filter(|(_, i)| i.is_upsell())
    {
        let price = o.line_price(index, item)?;
        let qty = quantity(&item.quantity, &quantity_field(index))?;
        conversion.amount -= price * qty;
    }
    conversion.amount = conversion.amount.max(Decimal::ZERO);
    Ok(conversion)
}

fn quantity_field(index: usize) -> String {
    format!("order.line_items[{index}].quantity")
}

/// One Upsell per upsell line; a line of quantity 0 converts nothing.
fn upsells<'a>(o: &OrderOf<'a, '_>, conversion_type: &str) -> Result<Vec<Conversion<'a>>, Reject> {
    let mut out = Vec::new();
    for (index, item) in o
        .order
        .line_items
        .iter()
        .enumerate()
        .filter(|(_, i)| i.is_upsell())
    {
        let price = o.line_price(index, item)?;
        let qty = quantity(&item.quantity, &quantity_field(index))?;
        if qty.is_zero() {
            continue;
        }
        let label = item.up_sell_type.get().unwrap_or("");
        let number: String = label.chars().filter(char::is_ascii_digit).collect();
        out.push(Conversion {
            kind: Kind::Upsell,
            event_id: format!("{}-upsell-{}", o.id, line_key(item, index)),
            conversion_type: conversion_type.to_owned(),
            amount: price * qty,
            items: vec![item],
            upsell_no: Some(if number.is_empty() {
                (out.len() + 1).to_string()
            } else {
                number
            }),
            downsell: label.to_ascii_lowercase().starts_with("downsell"),
            currency: None,
            rate: None,
            evidence: *o.evidence,
            test: false,
        });
    }
    Ok(out)
}

fn refunds<'a>(o: &OrderOf<'a, '_>, conversion_type: &str) -> Result<Vec<Conversion<'a>>, Reject> {
    let order = o.order;
    let flagged: Vec<&LineItem> = order
        .line_items
        .iter()
        .filter(|i| i.is_refunded.0)
        .collect();
    let items = if flagged.is_empty() {
        all_items(order)
    } else {
        flagged.clone()
    };
    let conversion = |n: String, amount: Decimal| Conversion {
        kind: Kind::Refund,
        event_id: format!("{}-refund-{n}", o.id),
        conversion_type: conversion_type.to_owned(),
        amount,
        items: items.clone(),
        upsell_no: None,
        downsell: false,
        currency: None,
        rate: None,
        evidence: *o.evidence,
        test: false,
    };
    let mut out: Vec<Conversion<'a>> = refund_records(o)?
        .into_iter()
        .map(|(key, value)| conversion(key, value))
        .collect();
    if out.is_empty() {
        // No refund records: the refunded line items, or the whole order when none is flagged.
        let value = if flagged.is_empty() {
            o.total()?
        } else {
            refunded_items_total(o)?
        };
        out.push(conversion("1".to_owned(), value));
    }
    Ok(out)
}

/// Each `refunds[]` entry: its key in the event ID (its ID, else its position) and its amount (an
/// ambiguous text decided by the entry's other amount or the order total, a full refund's twin).
fn refund_records(o: &OrderOf<'_, '_>) -> Result<Vec<(String, Decimal)>, Reject> {
    let mut out = Vec::new();
    let total = o.total().ok();
    for (index, refund) in o.order.refunds.iter().enumerate() {
        let raw = if refund.total_amount == RawAmount::Absent {
            &refund.amount
        } else {
            &refund.total_amount
        };
        let mut twins = numeric_twins(&[&refund.total_amount, &refund.amount]);
        twins.extend(total);
        let field = format!("order.refunds[{index}].total_amount");
        let value = amount(raw, &field, o.evidence, &twins)?;
        let key: String = refund
            .id
            .get()
            .map(|s| {
                s.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                    .take(64)
                    .collect()
            })
            .filter(|s: &String| !s.is_empty())
            .unwrap_or_else(|| (index + 1).to_string());
        out.push((key, value));
    }
    Ok(out)
}

/// The refunded line items: price × refunded quantity (else quantity), summed.
fn refunded_items_total(o: &OrderOf<'_, '_>) -> Result<Decimal, Reject> {
    let mut sum = Decimal::ZERO;
    for (index, item) in o
        .order
        .line_items
        .iter()
        .enumerate()
        .filter(|(_, i)| i.is_refunded.0)
    {
        let price = o.line_price(index, item)?;
        let qty = match item.refunded_quantity.get() {
            Some(_) => quantity(
                &item.refunded_quantity,
                &format!("order.line_items[{index}].refunded_quantity"),
            )?,
            None => quantity(&item.quantity, &quantity_field(index))?,
        };
        sum += price * qty;
    }
    Ok(sum)
}

/// A digest of what defines a conversion (click ID, type, sum, currency): the same event ID with
/// another digest is a conflict, not a duplicate.
pub fn fingerprint(order: &Order, conversion: &Conversion<'_>) -> String {
    let mut h = Sha256::new();
    for part in [
        click_id(order).ok().flatten().unwrap_or(""),
        conversion.conversion_type.as_str(),
        &money::format_sum(conversion.amount),
        conversion.currency.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}
