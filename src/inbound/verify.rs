//! Optional order verification. Cartpanda signs nothing, so a shop that sets a Cartpanda API
//! token (`CARTPANDA_API_TOKEN`, or per shop) has each order re-read from Cartpanda's API before
//! anything is claimed or sent. Each conversion the delivery makes must be confirmed by the API's
//! order, by its own rule; one that is not refuses the whole delivery (422, nothing claimed or
//! sent):
//!
//! - every conversion: the order exists in the API;
//! - a purchase or upsell: the order is not cancelled (`payment_status` 4, or a textual
//!   `status_id` saying so; a numeric `status_id` proves nothing) nor pending (`payment_status`
//!   1); any other `payment_status` code proves nothing ([`crate::conversion::rules::payment`],
//!   the rule reconciliation reads too);
//! - a purchase: the delivered total is not above the API's (a buyer who took an upsell since
//!   made the API's total larger), and every line the delivery carries is in the API's order, by
//!   line ID, or by product ID where the delivery has no line ID (an S2S postback's lines have
//!   made-up IDs `s2s-…`);
//! - an upsell: its line is an upsell line of the API's order (found the same way) with the same
//!   amount (price × quantity; an S2S line's amount may also equal the API line's unit price);
//! - a refund: the API lists a refund of the same amount; a chargeback: the API says
//!   `chargeback_received = 1`; another mapped event (`CONVERSION_TYPES`): the order exists.
//!
//! An S2S postback whose currency is not the API order's (the S2S form converts amounts) has its
//! amounts (total, upsell price) not compared: its lines and the order's status still are.
//! Refunds and chargebacks are not refused for a cancelled order: a paid order cancelled later is
//! exactly the one whose reversal must reach RedTrack.
//!
//! The API path is not documented publicly; the default (`https://accounts.cartpanda.com/api/v3/
//! {shop_slug}/orders/{order_id}`, answering `{"order": {...}}`) is what open-source clients use.
//! `CARTPANDA_ORDER_URL` overrides it.

use crate::conversion::currency;
use crate::conversion::fields;
use crate::conversion::rules::{Conversion, Kind, Payment, payment};
use crate::inbound::auth::Secret;
use crate::inbound::lenient::RawAmount;
use crate::inbound::money::{self, Evidence};
use crate::inbound::webhook::{LineItem, Order};
use async_trait::async_trait;
use rust_decimal::Decimal;

pub const DEFAULT_ORDER_URL: &str =
    "https://accounts.cartpanda.com/api/v3/{shop_slug}/orders/{order_id}";

/// Checks an order URL template: `{order_id}` required, `{shop_slug}` allowed, nothing else.
pub fn check_order_url(template: &str) -> Result<(), String> {
    if !template.contains("{order_id}") {
        return Err("must contain {order_id}".to_owned());
    }
    let probe = template
        .replace("{order_id}", "1")
        .replace("{shop_slug}", "shop");
    if probe.contains(['{', '}']) {
        return Err("may only use the placeholders {shop_slug} and {order_id}".to_owned());
    }
    let url = url::Url::parse(&probe).map_err(|e| format!("is not a valid URL ({e})"))?;
    let loopback = crate::postback::template::is_loopback(&url);
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err("must use https".to_owned());
    }
    Ok(())
}

/// The order's URL, with the values percent-encoded as path segments.
pub fn order_url(template: &str, shop_slug: &str, order_id: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    // Everything but RFC 3986's unreserved characters.
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let enc = |s: &str| utf8_percent_encode(s, SEGMENT).to_string();
    template
        .replace("{shop_slug}", &enc(shop_slug))
        .replace("{order_id}", &enc(order_id))
}

/// Why an order was not confirmed. The messages name order, line and product IDs and amounts,
/// never a buyer's data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("order {0} does not exist in Cartpanda's API")]
    NotFound(String),
    #[error("order {order_id}: total {sent} is above Cartpanda's API's ({api})")]
    TotalMismatch {
        order_id: String,
        sent: String,
        api: String,
    },
    #[error("order {order_id}: {what}")]
    StatusMismatch {
        order_id: String,
        what: &'static str,
    },
    #[error("order {order_id}: {line} is not in Cartpanda's API's order")]
    LineNotFound { order_id: String, line: String },
    #[error("order {order_id}: {line} is not an upsell of Cartpanda's API's order")]
    UpsellNotFound { order_id: String, line: String },
    #[error("order {order_id}: {line} is {sent}, Cartpanda's API says {api}")]
    PriceMismatch {
        order_id: String,
        line: String,
        sent: String,
        api: String,
    },
    #[error("order {order_id}: Cartpanda's API shows no refund of {amount}")]
    RefundNotFound { order_id: String, amount: String },
    #[error("order {0} has no shop slug to look it up with")]
    NoShop(String),
    #[error("Cartpanda's API could not confirm the order: {0}")]
    Unavailable(String),
}

impl VerifyError {
    /// What Cartpanda's API did not confirm, without the values (the refusal record).
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::NotFound(_) => "does not exist in Cartpanda's API",
            VerifyError::TotalMismatch { .. } => "has a total above Cartpanda's API's",
            VerifyError::StatusMismatch { what, .. } => what,
            VerifyError::LineNotFound { .. } => "carries a line Cartpanda's API's order lacks",
            VerifyError::UpsellNotFound { .. } => "has an upsell Cartpanda's API's order lacks",
            VerifyError::PriceMismatch { .. } => {
                "has an upsell whose price disagrees with Cartpanda's API"
            }
            VerifyError::RefundNotFound { .. } => "has a refund Cartpanda's API does not show",
            VerifyError::NoShop(_) => "has no shop slug to look it up with",
            VerifyError::Unavailable(_) => "could not be confirmed by Cartpanda's API",
        }
    }

    /// Refusals are the sender's problem (422); an unreachable API is ours (503, redeliver).
    pub fn status(&self) -> u16 {
        match self {
            VerifyError::Unavailable(_) => 503,
            _ => 422,
        }
    }
}

#[async_trait]
pub trait OrderSource: Send + Sync {
    /// The order as Cartpanda's API has it, `None` when it does not exist.
    async fn fetch(&self, url: &str, token: &Secret) -> Result<Option<Order>, VerifyError>;
}

/// Whether a line ID is one the S2S input made up (`s2s-main`, `s2s-2`, `s2s-p123`, …): the
/// delivery then has no line ID, and its line is matched by product ID.
fn synthetic(id: &str) -> bool {
    id.starts_with("s2s-")
}

/// How a delivered line is found in the API's order: by its line ID, else (S2S, or no ID) by its
/// product ID.
#[derive(Clone, Copy)]
enum LineRef<'a> {
    Id(&'a str),
    Product(&'a str),
    Nothing,
}

impl<'a> LineRef<'a> {
    fn of(line: &'a LineItem) -> LineRef<'a> {
        match (
            line.id.get().filter(|id| !synthetic(id)),
            line.product_id.get(),
        ) {
            (Some(id), _) => LineRef::Id(id),
            (None, Some(product)) => LineRef::Product(product),
            (None, None) => LineRef::Nothing,
        }
    }

    /// Whether `line` of the API's order is this one.
    fn finds(self, line: &LineItem) -> bool {
        match self {
            LineRef::Id(id) => line.id.get() == Some(id),
            LineRef::Product(product) => line.product_id.get() == Some(product),
            LineRef::Nothing => false,
        }
    }

    /// The line as an error message names it (IDs only, never names).
    fn describe(self, upsell: bool) -> String {
        let what = if upsell { "upsell " } else { "" };
        match self {
            LineRef::Id(id) => format!("{what}line {id}"),
            LineRef::Product(product) => format!("{what}product {product}"),
            LineRef::Nothing => format!(
                "a{} line without a line or product ID",
                if upsell { "n upsell" } else { "" }
            ),
        }
    }
}

/// An amount to the cent, as it is sent.
fn cents(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
}

/// A line's price and its amount (price × quantity), read with its order's evidence; `None` when
/// unreadable.
fn line_amounts(line: &LineItem, evidence: &Evidence) -> Option<(Decimal, Decimal)> {
    let twins = fields::numeric_twins(&[&line.actual_price_paid]);
    let price = fields::amount(&line.price, "price", evidence, &twins).ok()?;
    let quantity = fields::quantity(&line.quantity, "quantity").ok()?;
    Some((price, price * quantity))
}

/// Each refund the API lists, its amount read as classification reads a delivered one.
fn api_refunds(api: &Order, evidence: &Evidence) -> Vec<Decimal> {
    let total = fields::order_total(api, evidence).ok().map(|t| t.value);
    api.refunds
        .iter()
        .filter_map(|refund| {
            let raw = if refund.total_amount == RawAmount::Absent {
                &refund.amount
            } else {
                &refund.total_amount
            };
            let mut twins = fields::numeric_twins(&[&refund.total_amount, &refund.amount]);
            twins.extend(total);
            fields::amount(raw, "refund", evidence, &twins).ok()
        })
        .collect()
}

/// One delivery compared with the API's order, conversion by conversion.
struct Check<'a> {
    order_id: &'a str,
    delivered: &'a Order,
    api: &'a Order,
    delivered_evidence: Evidence,
    api_evidence: Evidence,
    /// An S2S delivery whose amounts are in another currency than the API's order (the S2S
    /// form converts): its amounts are not compared.
    foreign: bool,
}

/// Compares the delivered order with the API's, each conversion by its own rule (see the
/// module's documentation); the first conversion not confirmed refuses the whole delivery.
pub fn compare(
    order_id: &str,
    delivered: &Order,
    api: &Order,
    conversions: &[Conversion<'_>],
) -> Result<(), VerifyError> {
    let s2s = !delivered.line_items.is_empty()
        && delivered
            .line_items
            .iter()
            .all(|line| line.id.get().is_some_and(synthetic));
    let foreign = s2s
        && match (currency::currency(delivered), currency::currency(api)) {
            (Some(sent), Some(real)) => !sent.eq_ignore_ascii_case(real),
            _ => false,
        };
    let check = Check {
        order_id,
        delivered,
        api,
        delivered_evidence: Evidence::of(delivered),
        api_evidence: Evidence::of(api),
        foreign,
    };
    conversions.iter().try_for_each(|c| check.conversion(c))
}

impl Check<'_> {
    fn conversion(&self, conversion: &Conversion<'_>) -> Result<(), VerifyError> {
        match conversion.kind {
            Kind::Purchase => {
                self.sale()?;
                self.total()?;
                self.delivered
                    .line_items
                    .iter()
                    .try_for_each(|l| self.line(l))
            }
            Kind::Upsell => {
                self.sale()?;
                conversion.items.iter().try_for_each(|l| self.upsell(l))
            }
            Kind::Refund => self.refund(conversion),
            Kind::Chargeback if !self.api.chargeback_received.0 => {
                self.status("Cartpanda's API shows no chargeback")
            }
            Kind::Chargeback | Kind::Other => Ok(()),
        }
    }

    fn status(&self, what: &'static str) -> Result<(), VerifyError> {
        Err(VerifyError::StatusMismatch {
            order_id: self.order_id.to_owned(),
            what,
        })
    }

    /// A sale needs an order that is not cancelled (`payment_status` 4, or a textual
    /// `status_id` saying so: a numeric one proves nothing) nor pending (`payment_status` 1);
    /// another code proves nothing ([`payment`]).
    fn sale(&self) -> Result<(), VerifyError> {
        let status = self.api.status_id.get().unwrap_or("").to_ascii_lowercase();
        match payment(self.api) {
            Payment::Cancelled => self.status("Cartpanda's API says the order is cancelled"),
            _ if status.starts_with("cancel") => {
                self.status("Cartpanda's API says the order is cancelled")
            }
            Payment::Pending => self.status("Cartpanda's API says the order is not paid"),
            Payment::Paid | Payment::Unknown => Ok(()),
        }
    }

    /// A purchase's delivered total is not above the API's (the order may have grown since).
    fn total(&self) -> Result<(), VerifyError> {
        if self.foreign {
            return Ok(());
        }
        let total = |order: &Order, evidence: &Evidence| {
            fields::order_total(order, evidence).ok().map(|t| t.value)
        };
        match (
            total(self.delivered, &self.delivered_evidence),
            total(self.api, &self.api_evidence),
        ) {
            (Some(sent), Some(real)) if cents(sent) > cents(real) => {
                Err(VerifyError::TotalMismatch {
                    order_id: self.order_id.to_owned(),
                    sent: money::format_sum(sent),
                    api: money::format_sum(real),
                })
            }
            _ => Ok(()),
        }
    }

    /// A delivered line is in the API's order.
    fn line(&self, line: &LineItem) -> Result<(), VerifyError> {
        let wanted = LineRef::of(line);
        if self.api.line_items.iter().any(|l| wanted.finds(l)) {
            return Ok(());
        }
        Err(VerifyError::LineNotFound {
            order_id: self.order_id.to_owned(),
            line: wanted.describe(false),
        })
    }

    /// An upsell's line is an upsell of the API's order with the same price (its amount, price ×
    /// quantity; an S2S line may carry the unit price), unless its amount is in another currency.
    fn upsell(&self, line: &LineItem) -> Result<(), VerifyError> {
        let wanted = LineRef::of(line);
        let candidates: Vec<&LineItem> = self
            .api
            .line_items
            .iter()
            .filter(|l| l.is_upsell() && wanted.finds(l))
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::UpsellNotFound {
                order_id: self.order_id.to_owned(),
                line: wanted.describe(true),
            });
        }
        if self.foreign {
            return Ok(());
        }
        let sent = line_amounts(line, &self.delivered_evidence).map(|(_, amount)| amount);
        let s2s = line.id.get().is_some_and(synthetic);
        let same = |(price, amount): (Decimal, Decimal)| {
            sent.is_some_and(|sent| {
                cents(sent) == cents(amount) || (s2s && cents(sent) == cents(price))
            })
        };
        let reals: Vec<(Decimal, Decimal)> = candidates
            .iter()
            .filter_map(|l| line_amounts(l, &self.api_evidence))
            .collect();
        if reals.iter().any(|real| same(*real)) {
            return Ok(());
        }
        Err(VerifyError::PriceMismatch {
            order_id: self.order_id.to_owned(),
            line: wanted.describe(true),
            sent: sent.map_or_else(|| "unreadable".to_owned(), money::format_sum),
            api: reals
                .first()
                .map_or_else(|| "unreadable".to_owned(), |r| money::format_sum(r.1)),
        })
    }

    /// A refund is among the API's refunds with the same amount.
    fn refund(&self, conversion: &Conversion<'_>) -> Result<(), VerifyError> {
        // An API order that lists no refund record but says it was refunded (its status text,
        // or a line flagged `is_refunded`) confirms the refund without an amount to compare:
        // the webhook's refund was then made the same way, from the flags.
        if self.api.refunds.is_empty() && crate::conversion::rules::marked_refunded(self.api) {
            return Ok(());
        }
        // The conversion's amount may have been converted (`SUM_CURRENCY`): the API's amounts
        // are converted with the same rate before they are compared.
        let rate = conversion.rate.unwrap_or(Decimal::ONE);
        if api_refunds(self.api, &self.api_evidence)
            .into_iter()
            .any(|real| cents(real * rate) == cents(conversion.amount))
        {
            return Ok(());
        }
        Err(VerifyError::RefundNotFound {
            order_id: self.order_id.to_owned(),
            amount: money::format_sum(conversion.amount),
        })
    }
}

/// Largest answer of Cartpanda's API read for one order (real ones are a few KiB).
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Cartpanda's API over HTTPS (reqwest, bearer token).
#[cfg(feature = "runtime")]
pub struct CartpandaApi {
    pub http: reqwest::Client,
}

#[cfg(feature = "runtime")]
impl CartpandaApi {
    pub fn new(timeout: std::time::Duration) -> Result<Self, reqwest::Error> {
        let http = crate::postback::redtrack::http_builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(std::time::Duration::from_secs(3)))
            .user_agent(concat!("cartpanda-redtrack/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(CartpandaApi { http })
    }
}

#[cfg(feature = "runtime")]
#[async_trait]
impl OrderSource for CartpandaApi {
    async fn fetch(&self, url: &str, token: &Secret) -> Result<Option<Order>, VerifyError> {
        use serde::Deserialize;
        let response = self
            .http
            .get(url)
            .bearer_auth(token.expose())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| {
                VerifyError::Unavailable(
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "request failed"
                    }
                    .to_owned(),
                )
            })?;
        let status = response.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(VerifyError::Unavailable(format!("HTTP {status}")));
        }
        let bytes = crate::postback::redtrack::read_capped(response, MAX_ANSWER_BYTES)
            .await
            .map_err(VerifyError::Unavailable)?;
        let mut value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| VerifyError::Unavailable("answer is not JSON".to_owned()))?;
        // `{"order": {…}}` as seen; `{"data": {…}}` and a bare order tolerated. An empty
        // `order`/`data` says the order is not there; any other answer (an error object, a
        // page of another endpoint) confirms nothing either way: retryable, never a refusal.
        let wrapped = ["order", "data"]
            .into_iter()
            .find(|k| value.get(*k).is_some());
        let order = match wrapped {
            Some(key) => match value[key].take() {
                inner if inner.is_object() => inner,
                serde_json::Value::Null => return Ok(None),
                serde_json::Value::Array(a) if a.is_empty() => return Ok(None),
                _ => {
                    return Err(VerifyError::Unavailable(
                        "answer is not an order".to_owned(),
                    ));
                }
            },
            None if value.get("id").is_some() => value,
            None => {
                return Err(VerifyError::Unavailable(
                    "answer is not an order".to_owned(),
                ));
            }
        };
        Order::deserialize(order)
            .map(Some)
            .map_err(|_| VerifyError::Unavailable("answer is not an order".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_urls() {
        assert_eq!(check_order_url(DEFAULT_ORDER_URL), Ok(()));
        assert!(
            check_order_url("https://x.example/orders")
                .unwrap_err()
                .contains("{order_id}")
        );
        assert!(
            check_order_url("https://x.example/{store}/{order_id}")
                .unwrap_err()
                .contains("placeholders")
        );
        assert!(
            check_order_url("http://x.example/{order_id}")
                .unwrap_err()
                .contains("https")
        );
        assert_eq!(
            check_order_url("http://127.0.0.1:9/{shop_slug}/{order_id}"),
            Ok(())
        );
        assert_eq!(
            order_url(DEFAULT_ORDER_URL, "my shop/x", "42"),
            "https://accounts.cartpanda.com/api/v3/my%20shop%2Fx/orders/42"
        );
    }

    #[test]
    fn payment_status_codes() {
        let of = |json: &str| payment(&serde_json::from_str(json).unwrap());
        assert_eq!(of(r#"{"payment_status": 3}"#), Payment::Paid);
        assert_eq!(of(r#"{"payment_status": "3"}"#), Payment::Paid);
        assert_eq!(of(r#"{"payment_status": 3.0}"#), Payment::Paid);
        assert_eq!(of(r#"{"payment_status": "Paid"}"#), Payment::Paid);
        assert_eq!(of(r#"{"payment_status": 4}"#), Payment::Cancelled);
        assert_eq!(of(r#"{"payment_status": "canceled"}"#), Payment::Cancelled);
        assert_eq!(of(r#"{"payment_status": 1}"#), Payment::Pending);
        assert_eq!(of(r#"{"payment_status": "pending"}"#), Payment::Pending);
        // Codes no public source explains prove nothing.
        assert_eq!(of(r#"{"payment_status": 2}"#), Payment::Unknown);
        assert_eq!(of(r#"{"payment_status": 5}"#), Payment::Unknown);
        assert_eq!(of(r#"{"payment_status": "authorized"}"#), Payment::Unknown);
        assert_eq!(of(r#"{"payment_status": null}"#), Payment::Unknown);
        assert_eq!(of(r#"{"payment_status": ""}"#), Payment::Unknown);
        assert_eq!(of("{}"), Payment::Unknown);
    }

    #[test]
    fn lines_are_found_by_id_else_by_product() {
        let line = |json: &str| -> LineItem { serde_json::from_str(json).unwrap() };
        let api = line(r#"{"id": 90002, "product_id": 22264763}"#);
        let by_id = line(r#"{"id": "90002", "product_id": 1}"#);
        assert!(LineRef::of(&by_id).finds(&api), "the line ID decides");
        let other_id = line(r#"{"id": 90003, "product_id": 22264763}"#);
        assert!(!LineRef::of(&other_id).finds(&api), "not the product");
        for id in ["s2s-main", "s2s-2", "s2s-p22264763", "s2s-dp22264763"] {
            let s2s = line(&format!(r#"{{"id": "{id}", "product_id": "22264763"}}"#));
            assert!(LineRef::of(&s2s).finds(&api), "{id}: by product");
        }
        let nothing = line(r#"{"id": "s2s-main"}"#);
        assert!(!LineRef::of(&nothing).finds(&api));
        assert_eq!(
            LineRef::of(&nothing).describe(true),
            "an upsell line without a line or product ID"
        );
        assert_eq!(
            LineRef::of(&nothing).describe(false),
            "a line without a line or product ID"
        );
    }
}
