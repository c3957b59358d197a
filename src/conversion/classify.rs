//! From a parsed delivery to the conversions it produces: which event, which RedTrack type, which
//! amount, which event ID. Pure: no I/O, no clock.

use crate::conversion::currency;
use crate::inbound::lenient::{RawAmount, RawId, Text};
use crate::inbound::money::{self, AmountError};
use crate::inbound::webhook::{Delivery, EventField, LineItem, Order, OrderField};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

/// Line items accepted in one order; more is refused as not a real order.
pub const MAX_LINE_ITEMS: usize = 500;
/// Upsell or refund conversions produced by one delivery at most.
pub const MAX_CONVERSIONS: usize = 50;
/// Longest click ID accepted.
pub const MAX_CLICK_ID: usize = 128;

/// The default event → RedTrack conversion type map.
pub const DEFAULT_CONVERSION_TYPES: &str =
    "order.paid=Purchase,order.upsell=Upsell,order.refunded=Refund,order.chargeback=Chargeback";

/// Which Cartpanda events become which RedTrack conversion types (case-sensitive names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionTypes(Vec<(String, String)>);

impl ConversionTypes {
    /// Parses `event=Type,event=Type`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (event, kind) = entry
                .split_once('=')
                .ok_or_else(|| format!("entry `{entry}` is not of the form event=Type"))?;
            let (event, kind) = (event.trim(), kind.trim());
            if event.is_empty() || kind.is_empty() {
                return Err(format!("entry `{entry}` has an empty event or type"));
            }
            if !kind
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' ' | '.'))
            {
                return Err(format!(
                    "type `{kind}` may only hold letters, digits, space, `_`, `-`, `.`"
                ));
            }
            if out.iter().any(|(e, _)| e == event) {
                return Err(format!("event `{event}` is listed twice"));
            }
            out.push((event.to_owned(), kind.to_owned()));
        }
        if out.is_empty() {
            return Err("no event is mapped".to_owned());
        }
        Ok(ConversionTypes(out))
    }

    pub fn get(&self, event: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(e, _)| e == event)
            .map(|(_, t)| t.as_str())
    }
}

impl Default for ConversionTypes {
    fn default() -> Self {
        ConversionTypes::parse(DEFAULT_CONVERSION_TYPES).expect("default conversion types parse")
    }
}

/// What kind of conversion, which decides the event ID, amount and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Purchase,
    Upsell,
    Refund,
    Chargeback,
    /// Another event the merchant mapped (e.g. `order.created=Pending`).
    Other,
}

/// One conversion to send to RedTrack.
#[derive(Debug)]
pub struct Conversion<'a> {
    pub kind: Kind,
    pub event_id: String,
    pub conversion_type: String,
    pub amount: Decimal,
    pub items: Vec<&'a LineItem>,
    pub upsell_no: Option<String>,
    pub downsell: bool,
    /// The currency of `amount` as sent (after any `SUM_CURRENCY` conversion).
    pub currency: Option<String>,
    /// Sent as a test order (`{is_test}` = 1): the order is a test by [`Rules::is_test`] and
    /// `SEND_TEST_ORDERS` let it through.
    pub test: bool,
}

/// Why a well-formed delivery produces no conversion (answered 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    EventNotMapped,
    NotAChargeback,
    TestOrder,
    NoClickId,
    NoUpsellItems,
    NoExchangeRate,
}

impl Skip {
    pub fn code(self) -> &'static str {
        match self {
            Skip::EventNotMapped => "event_not_mapped",
            Skip::NotAChargeback => "not_a_conversion",
            Skip::TestOrder => "test_order",
            Skip::NoClickId => "no_click_id",
            Skip::NoUpsellItems => "no_upsell_items",
            Skip::NoExchangeRate => "no_exchange_rate",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Skip::EventNotMapped => {
                "this event is not mapped to a RedTrack conversion type (CONVERSION_TYPES)"
            }
            Skip::NotAChargeback => "order.updated carries no chargeback; nothing to convert",
            Skip::TestOrder => "test order; set SEND_TEST_ORDERS=true to send test orders",
            Skip::NoClickId => {
                "order has no RedTrack click ID (checkout_params.cid); RedTrack cannot attribute it"
            }
            Skip::NoExchangeRate => {
                "the payload gives no exchange rate into SUM_CURRENCY (or no currency at all); an amount is never guessed"
            }
            Skip::NoUpsellItems => {
                "order.upsell carries no upsell line item (up_sell_id other than 0)"
            }
        }
    }
}

/// Why a delivery is refused. Messages name fields, never their values (they may be PII).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("`order` is missing")]
    OrderMissing,
    #[error("`order` must be an object, got {0}")]
    OrderNotObject(&'static str),
    #[error("`order.id` is missing")]
    OrderIdMissing,
    #[error("`order.id` {0}")]
    OrderIdInvalid(&'static str),
    #[error("`{field}` {error}")]
    Amount { field: String, error: AmountError },
    #[error("`{field}` is missing")]
    AmountMissing { field: String },
    #[error("`checkout_params.cid` {0}")]
    ClickIdInvalid(&'static str),
    #[error("order has {0} line items; at most {MAX_LINE_ITEMS} are accepted")]
    TooManyLineItems(usize),
    #[error("delivery would produce {0} conversions; at most {MAX_CONVERSIONS} are accepted")]
    TooManyConversions(usize),
}

/// What to do with an order whose only test mark is `is_cartx_test` = 1 (`test` = 0):
/// `CARTX_TEST_ORDERS`. The flag has been seen on real sales, so by default they are sales.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CartxTestOrders {
    /// A sale like any other (the default).
    #[default]
    Send,
    /// A test order, skipped unless `SEND_TEST_ORDERS` is on.
    Skip,
}

impl CartxTestOrders {
    /// Parses `send` or `skip` (any case).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "send" => Ok(CartxTestOrders::Send),
            "skip" => Ok(CartxTestOrders::Skip),
            _ => Err(format!("must be `send` or `skip`, got `{}`", text.trim())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CartxTestOrders::Send => "send",
            CartxTestOrders::Skip => "skip",
        }
    }
}

/// The rules that decide what converts.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub conversion_types: ConversionTypes,
    pub send_test_orders: bool,
    /// Orders marked only by `is_cartx_test`: sales (default) or test orders.
    pub cartx_test_orders: CartxTestOrders,
    /// Convert every sum into this currency (`SUM_CURRENCY`); `None` sends amounts as charged.
    pub sum_currency: Option<String>,
}

/// A classified delivery: the order it is about and what to do with it.
#[derive(Debug)]
pub struct Classified<'a> {
    pub event: &'a str,
    pub order_id: Option<String>,
    pub order: Option<&'a Order>,
    pub decision: Decision<'a>,
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
    let known_id = order.and_then(|o| order_id(&o.id).ok());
    let skip = |reason| {
        Ok(Classified {
            event,
            order_id: known_id.clone(),
            order,
            decision: Decision::Skip(reason),
        })
    };

    let chargeback_flag = order.is_some_and(|o| o.chargeback_received.0);
    let effective = if event == "order.updated" && chargeback_flag {
        "order.chargeback"
    } else {
        event
    };
    let Some(conversion_type) = rules.conversion_types.get(effective) else {
        return if event == "order.updated" {
            skip(Skip::NotAChargeback)
        } else {
            skip(Skip::EventNotMapped)
        };
    };
    let order = match &delivery.order {
        OrderField::Object(order) => order.as_ref(),
        OrderField::Missing => return Err(Reject::OrderMissing),
        OrderField::NotObject(kind) => return Err(Reject::OrderNotObject(kind)),
    };
    let id = order_id(&order.id)?;
    if order.line_items.len() > MAX_LINE_ITEMS {
        return Err(Reject::TooManyLineItems(order.line_items.len()));
    }
    let test = rules.is_test(order);
    if test && !rules.send_test_orders {
        return skip(Skip::TestOrder);
    }
    match click_id(order) {
        Ok(None) => return skip(Skip::NoClickId),
        Ok(Some(_)) => {}
        Err(e) => return Err(e),
    }
    let kind = match effective {
        "order.paid" => Kind::Purchase,
        "order.upsell" => Kind::Upsell,
        "order.refunded" => Kind::Refund,
        "order.chargeback" => Kind::Chargeback,
        _ => Kind::Other,
    };
    let conversions = match kind {
        Kind::Purchase => vec![purchase(order, &id, conversion_type)?],
        Kind::Chargeback => vec![whole_order(
            order,
            &id,
            kind,
            conversion_type,
            "chargeback",
            all_items(order),
        )?],
        Kind::Other => {
            let suffix = effective.strip_prefix("order.").unwrap_or(effective);
            vec![whole_order(
                order,
                &id,
                kind,
                conversion_type,
                suffix,
                all_items(order),
            )?]
        }
        Kind::Upsell => upsells(order, &id, conversion_type)?,
        Kind::Refund => refunds(order, &id, conversion_type)?,
    };
    if conversions.is_empty() {
        return skip(Skip::NoUpsellItems);
    }
    if conversions.len() > MAX_CONVERSIONS {
        return Err(Reject::TooManyConversions(conversions.len()));
    }
    let mut conversions = conversions;
    for conversion in &mut conversions {
        conversion.test = test;
    }
    if currency::convert(&mut conversions, order, rules.sum_currency.as_deref()).is_err() {
        return skip(Skip::NoExchangeRate);
    }
    Ok(Classified {
        event,
        order_id: Some(id),
        order: Some(order),
        decision: Decision::Convert(conversions),
    })
}

impl Rules {
    /// Whether the order is a test order: `test` = 1 (or S2S `is_test` = 1) always; `is_cartx_test`
    /// = 1 alone only when `CARTX_TEST_ORDERS=skip`.
    pub fn is_test(&self, order: &Order) -> bool {
        order.test.0
            || order.is_test.0
            || (is_cartx_test(order) && self.cartx_test_orders == CartxTestOrders::Skip)
    }
}

/// Whether the order's only test mark is `is_cartx_test` = 1: a flag seen on sandbox orders and on
/// real sales alike, marked in logs and metrics (`cartx_test`) whatever the setting.
pub fn is_cartx_test(order: &Order) -> bool {
    order.is_cartx_test.0 && !order.test.0 && !order.is_test.0
}

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

fn amount(raw: &RawAmount, field: &str) -> Result<Decimal, Reject> {
    let parsed = match raw {
        RawAmount::Absent => {
            return Err(Reject::AmountMissing {
                field: field.to_owned(),
            });
        }
        RawAmount::Number(text) => money::parse_amount_number(text),
        RawAmount::Text(text) => money::parse_amount_text(text),
    };
    parsed.map_err(|error| Reject::Amount {
        field: field.to_owned(),
        error,
    })
}

fn quantity(text: &Text) -> Decimal {
    text.get()
        .and_then(|q| money::parse_amount_text(q).ok())
        .filter(|q| !q.is_zero() && q.fract().is_zero() && *q <= Decimal::from(10_000))
        .unwrap_or(Decimal::ONE)
}

fn front_items(order: &Order) -> Vec<&LineItem> {
    let front: Vec<&LineItem> = order.line_items.iter().filter(|i| !i.is_upsell()).collect();
    if front.is_empty() {
        all_items(order)
    } else {
        front
    }
}

fn all_items(order: &Order) -> Vec<&LineItem> {
    order.line_items.iter().collect()
}

fn whole_order<'a>(
    order: &'a Order,
    id: &str,
    kind: Kind,
    conversion_type: &str,
    suffix: &str,
    items: Vec<&'a LineItem>,
) -> Result<Conversion<'a>, Reject> {
    Ok(Conversion {
        kind,
        event_id: format!("{id}-{suffix}"),
        conversion_type: conversion_type.to_owned(),
        amount: amount(&order.total_price, "order.total_price")?,
        items,
        upsell_no: None,
        downsell: false,
        currency: None,
        test: false,
    })
}

/// The front-offer sale: the order total less any upsell lines already on the order, so that a
/// late redelivery of `order.paid` (after upsells were added) is a duplicate, not a conflict, and
/// upsells are never counted twice.
fn purchase<'a>(
    order: &'a Order,
    id: &str,
    conversion_type: &str,
) -> Result<Conversion<'a>, Reject> {
    let mut conversion = whole_order(
        order,
        id,
        Kind::Purchase,
        conversion_type,
        "purchase",
        front_items(order),
    )?;
    for (index, item) in order
        .line_items
        .iter()
        .enumerate()
        .filter(|(_, i)| i.is_upsell())
    {
        let price = amount(&item.price, &format!("order.line_items[{index}].price"))?;
        conversion.amount -= price * quantity(&item.quantity);
    }
    conversion.amount = conversion.amount.max(Decimal::ZERO);
    Ok(conversion)
}

fn line_key(item: &LineItem, index: usize) -> String {
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

fn upsells<'a>(
    order: &'a Order,
    id: &str,
    conversion_type: &str,
) -> Result<Vec<Conversion<'a>>, Reject> {
    let mut out = Vec::new();
    for (index, item) in order
        .line_items
        .iter()
        .enumerate()
        .filter(|(_, i)| i.is_upsell())
    {
        let field = format!("order.line_items[{index}].price");
        let price = amount(&item.price, &field)?;
        let label = item.up_sell_type.get().unwrap_or("");
        let number: String = label.chars().filter(char::is_ascii_digit).collect();
        out.push(Conversion {
            kind: Kind::Upsell,
            event_id: format!("{id}-upsell-{}", line_key(item, index)),
            conversion_type: conversion_type.to_owned(),
            amount: price * quantity(&item.quantity),
            items: vec![item],
            upsell_no: Some(if number.is_empty() {
                (out.len() + 1).to_string()
            } else {
                number
            }),
            downsell: label.to_ascii_lowercase().starts_with("downsell"),
            currency: None,
            test: false,
        });
    }
    Ok(out)
}

fn refunds<'a>(
    order: &'a Order,
    id: &str,
    conversion_type: &str,
) -> Result<Vec<Conversion<'a>>, Reject> {
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
        event_id: format!("{id}-refund-{n}"),
        conversion_type: conversion_type.to_owned(),
        amount,
        items: items.clone(),
        upsell_no: None,
        downsell: false,
        currency: None,
        test: false,
    };
    let mut out = Vec::new();
    for (index, refund) in order.refunds.iter().enumerate() {
        let raw = if refund.total_amount == RawAmount::Absent {
            &refund.amount
        } else {
            &refund.total_amount
        };
        let value = amount(raw, &format!("order.refunds[{index}].total_amount"))?;
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
        out.push(conversion(key, value));
    }
    if out.is_empty() {
        // No refund records: the refunded line items, or the whole order when none is flagged.
        let value = if flagged.is_empty() {
            amount(&order.total_price, "order.total_price")?
        } else {
            let mut sum = Decimal::ZERO;
            for (index, item) in order
                .line_items
                .iter()
                .enumerate()
                .filter(|(_, i)| i.is_refunded.0)
            {
                let price = amount(&item.price, &format!("order.line_items[{index}].price"))?;
                let qty = match item.refunded_quantity.get() {
                    Some(_) => quantity(&item.refunded_quantity),
                    None => quantity(&item.quantity),
                };
                sum += price * qty;
            }
            sum
        };
        out.push(conversion("1".to_owned(), value));
    }
    Ok(out)
}

/// RedTrack's status for a conversion kind: sales are approved, refunds and chargebacks declined.
pub fn status(kind: Kind) -> &'static str {
    match kind {
        Kind::Purchase | Kind::Upsell | Kind::Other => "approved",
        Kind::Refund | Kind::Chargeback => "declined",
    }
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
