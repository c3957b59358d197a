//! The currency of the amounts, and their conversion into the currency RedTrack expects
//! (`SUM_CURRENCY`, as Cartpanda's S2S form offers: USD, EUR, BRL, or as charged).
//!
//! The trap: a shop whose base currency is BRL but sells in USD reports `order.currency = "USD"`
//! while every amount in the payload is in BRL. The amounts' currency is the shop's base currency,
//! then the payment's, then the order's. The payload carries only a rate into USD
//! (`exchange_rate_USD`, else `payment.actual_exchange_rate` when the payment was made in USD:
//! amount × rate); a conversion it gives no rate for is skipped, never guessed.

use crate::conversion::rules::Conversion;
use crate::inbound::lenient::RawAmount;
use crate::inbound::money;
use crate::inbound::webhook::Order;
use rust_decimal::Decimal;

/// The currencies a sum may be sent in (`SUM_CURRENCY`, a shop's sum currency), as Cartpanda's
/// S2S form offers; without one, amounts are sent as charged.
pub const SUM_CURRENCIES: [&str; 3] = ["USD", "EUR", "BRL"];

/// Whether `code` (upper case) is one of the [`SUM_CURRENCIES`].
pub fn is_sum_currency(code: &str) -> bool {
    SUM_CURRENCIES.contains(&code)
}

/// The currency the order's amounts are in: the shop's base currency first (a BRL shop selling
/// in USD reports `order.currency = "USD"` with every amount in BRL), then the payment's, then the
/// order's.
pub fn currency(order: &Order) -> Option<&str> {
    order
        .shop_info
        .as_ref()
        .and_then(|s| s.settings_general.as_ref())
        .and_then(|g| g.base_currency.get().or(g.currency.get()))
        .or_else(|| order.payment.as_ref().and_then(|p| p.currency.get()))
        .or(order.currency.get())
}

/// The payload's rate from the amounts' currency into USD, when it gives a usable one.
pub fn usd_rate(order: &Order) -> Option<Decimal> {
    [&order.exchange_rate_usd_upper, &order.exchange_rate_usd]
        .into_iter()
        .find_map(usable_rate)
        .or_else(|| order.payment.as_ref().and_then(payment_usd_rate))
}

/// A rate the payload gives that can be used: readable and above zero.
fn usable_rate(raw: &RawAmount) -> Option<Decimal> {
    let rate = money::parse_rate(raw)?.ok()?;
    (rate > Decimal::ZERO).then_some(rate)
}

/// The payment's `actual_exchange_rate` when it converts into USD: its
/// `actual_price_paid_currency` says USD, or (older payloads without it) the rate is not 1. A BRL
/// payment carries `BRL` and 1, a EUR one a rate into EUR: neither is a rate into USD.
fn payment_usd_rate(payment: &crate::inbound::webhook::Payment) -> Option<Decimal> {
    let rate = usable_rate(&payment.actual_exchange_rate)?;
    let into_usd = match payment.actual_price_paid_currency.get() {
        Some(code) => code.trim().eq_ignore_ascii_case("USD"),
        None => rate != Decimal::ONE,
    };
    into_usd.then_some(rate)
}

/// No rate into the requested currency (or no currency at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRate;

/// Sets each conversion's currency and, when `target` differs from the amounts' currency,
/// converts its amount.
pub fn convert(
    conversions: &mut [Conversion<'_>],
    order: &Order,
    target: Option<&str>,
) -> Result<(), NoRate> {
    let source = currency(order).map(str::to_ascii_uppercase);
    let rate = match (target, source.as_deref()) {
        (None, _) => None,
        (Some(t), Some(s)) if t.eq_ignore_ascii_case(s) => None,
        (Some(t), Some(_)) if t.eq_ignore_ascii_case("USD") => Some(usd_rate(order).ok_or(NoRate)?),
        _ => return Err(NoRate),
    };
    let sent_currency = target.map(str::to_ascii_uppercase).or(source);
    for conversion in conversions {
        if let Some(rate) = rate {
            conversion.amount *= rate;
        }
        conversion.rate = rate;
        conversion.currency = sent_currency.clone();
    }
    Ok(())
}
