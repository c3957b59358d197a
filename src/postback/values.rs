//! The value of every template macro for one conversion, the way Cartpanda's S2S fills them
//! per postback: the conversion's own amount and products, the order's customer (normalised for
//! matching unless turned off), checkout parameters and dates.

use crate::conversion::fields::click_id;
use crate::conversion::normalize;
use crate::conversion::rules::{Conversion, Kind, status};
use crate::inbound::datetime;
use crate::inbound::lenient::{RawAmount, Text};
use crate::inbound::money;
use crate::inbound::webhook::Order;
use crate::postback::template::Macro;
use std::borrow::Cow;

/// Everything a template macro can take its value from, for one conversion.
pub struct MacroContext<'a> {
    pub order: &'a Order,
    pub order_id: &'a str,
    pub conversion: &'a Conversion<'a>,
    pub random: u64,
    /// Normalise email, phone and names for ad platforms' matching (`NORMALIZE_PII`).
    pub normalize: bool,
}

impl<'a> MacroContext<'a> {
    /// The value of one macro for this conversion; empty when the order does not carry it.
    // A flat match table, one arm per macro: exempt from the 60-line limit
    // (tests/function_length.rs); splitting it would only scatter the table.
    pub fn value(&self, m: Macro) -> Cow<'a, str> {
        let o = self.order;
        let c = self.conversion;
        let cp = o.checkout_params.as_ref();
        let customer = o.customer.as_ref();
        let param = |f: fn(&crate::inbound::webhook::CheckoutParams) -> &Text| -> Cow<'a, str> {
            text(cp.and_then(|p| f(p).get()))
        };
        match m {
            Macro::OrderId => Cow::Borrowed(self.order_id),
            Macro::ProductId => join(c.items.iter().filter_map(|i| i.product_id.get())),
            Macro::ProductName => join(c.items.iter().filter_map(|i| i.display_name())),
            Macro::ShopSlug => text(
                o.shop
                    .as_ref()
                    .and_then(|s| s.slug.get())
                    .or(o.shop_info.as_ref().and_then(|s| s.slug.get())),
            ),
            Macro::Cid => text(click_id(o).ok().flatten()),
            Macro::OrderType => Cow::Borrowed(match c.kind {
                Kind::Purchase | Kind::Other => "main",
                Kind::Upsell if c.downsell => "downsell",
                Kind::Upsell => "upsell",
                Kind::Refund => "refund",
                Kind::Chargeback => "chargeback",
            }),
            Macro::UpsellNo => Cow::Owned(c.upsell_no.clone().unwrap_or_else(|| "0".to_owned())),
            Macro::TotalPrice => Cow::Owned(money::format_sum(c.amount)),
            Macro::AmountNet => self
                .optional_amount(&o.amount_net)
                .or_else(|| {
                    o.payment
                        .as_ref()
                        .and_then(|p| self.optional_amount(&p.seller_split_amount))
                })
                .map_or(Cow::Borrowed(""), Cow::Owned),
            Macro::AmountAffiliate => self
                .optional_amount(&o.affiliate_amount)
                .map_or(Cow::Borrowed(""), Cow::Owned),
            Macro::Currency => text(c.currency.as_deref()),
            Macro::Afid => text(o.afid.get()),
            Macro::AffiliateSlug => text(o.affiliate_slug.get()),
            Macro::Email => self.pii(
                customer.and_then(|c| c.email.get()).or(o.email.get()),
                normalize::email,
            ),
            Macro::FirstName => self.pii(
                customer
                    .and_then(|c| c.first_name.get())
                    .or_else(|| split_name(o).0),
                normalize::name,
            ),
            Macro::LastName => self.pii(
                customer
                    .and_then(|c| c.last_name.get())
                    .or_else(|| split_name(o).1),
                normalize::name,
            ),
            Macro::PhoneNumber => {
                let phone = customer.and_then(|c| c.phone.get()).or(o.phone.get());
                let country = o.address.as_ref().and_then(|a| a.country_code.get());
                self.pii(phone, |p| normalize::phone(p, country))
            }
            Macro::Country => text(
                o.address
                    .as_ref()
                    .and_then(|a| a.country_code.get().or(a.country.get())),
            ),
            Macro::DatetimeUnix => {
                datetime(o).map_or(Cow::Borrowed(""), |t| Cow::Owned(t.to_string()))
            }
            Macro::DatetimeUtc => {
                datetime(o).map_or(Cow::Borrowed(""), |t| Cow::Owned(datetime::format_utc(t)))
            }
            Macro::DatetimeFull => {
                datetime(o).map_or(Cow::Borrowed(""), |t| Cow::Owned(datetime::format_full(t)))
            }
            Macro::IsTest => Cow::Borrowed(if c.test { "1" } else { "0" }),
            Macro::Campaignkey => param(|p| &p.campaignkey),
            Macro::Src => param(|p| &p.src),
            Macro::Sck => param(|p| &p.sck),
            Macro::UtmSource => param(|p| &p.utm_source),
            Macro::UtmMedium => param(|p| &p.utm_medium),
            Macro::UtmCampaign => param(|p| &p.utm_campaign),
            Macro::UtmTerm => param(|p| &p.utm_term),
            Macro::UtmContent => param(|p| &p.utm_content),
            Macro::Gclid => param(|p| &p.gclid),
            Macro::Adclid => param(|p| &p.adclid),
            Macro::Adclida => param(|p| &p.adclida),
            Macro::Random => Cow::Owned(self.random.to_string()),
            Macro::ConversionType => Cow::Borrowed(c.conversion_type.as_str()),
            Macro::EventId => Cow::Borrowed(c.event_id.as_str()),
            Macro::ConversionStatus => Cow::Borrowed(status(c.kind)),
        }
    }
}

impl<'a> MacroContext<'a> {
    /// An amount of the order beside the sum (`{amount_net}`, `{amount_affiliate}`), in the
    /// currency `{currency}` names: converted with the sum's rate under `SUM_CURRENCY`. Read
    /// with the order's evidence; empty when absent, unreadable or ambiguous (never guessed).
    fn optional_amount(&self, raw: &RawAmount) -> Option<String> {
        let value = self.conversion.evidence.read(raw, &[])?.ok()?;
        Some(money::format_sum(match self.conversion.rate {
            Some(rate) => value * rate,
            None => value,
        }))
    }

    /// A PII value, normalised when asked to; absent values stay empty.
    fn pii(&self, value: Option<&'a str>, normalise: impl Fn(&str) -> String) -> Cow<'a, str> {
        match value {
            Some(v) if self.normalize => Cow::Owned(normalise(v)),
            other => text(other),
        }
    }
}

fn text<'a>(value: Option<&'a str>) -> Cow<'a, str> {
    Cow::Borrowed(value.unwrap_or(""))
}

fn join<'a>(values: impl Iterator<Item = &'a str>) -> Cow<'a, str> {
    let parts: Vec<&str> = values.collect();
    match parts.as_slice() {
        [] => Cow::Borrowed(""),
        [one] => Cow::Borrowed(one),
        many => Cow::Owned(many.join(",")),
    }
}

fn split_name(order: &Order) -> (Option<&str>, Option<&str>) {
    let full = order.customer.as_ref().and_then(|c| c.full_name.get());
    match full
        .map(str::trim)
        .and_then(|f| f.split_once(char::is_whitespace))
    {
        Some((first, last)) => (Some(first), Some(last.trim())),
        None => (full, None),
    }
}

fn datetime(order: &Order) -> Option<i64> {
    [&order.processed_at, &order.created_at, &order.updated_at]
        .into_iter()
        .find_map(|t| t.get().and_then(datetime::parse_unix))
}
