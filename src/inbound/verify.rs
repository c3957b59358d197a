//! Optional order verification. Cartpanda signs nothing, so a shop that sets a Cartpanda API
//! token (`CARTPANDA_API_TOKEN`, or per shop) has each order re-read from Cartpanda's API before
//! anything is sent, and a delivery whose order does not exist there, or whose total or status
//! disagrees, is refused (422).
//!
//! The API path is not documented publicly; the default (`https://accounts.cartpanda.com/api/v3/
//! {shop_slug}/orders/{order_id}`, answering `{"order": {...}}`) is what open-source clients use.
//! `CARTPANDA_ORDER_URL` overrides it.

use crate::conversion::rules::Kind;
use crate::inbound::auth::Secret;
use crate::inbound::money;
use crate::inbound::webhook::Order;
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

/// Why an order was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("order {0} does not exist in Cartpanda's API")]
    NotFound(String),
    #[error("order {order_id}: total {sent} disagrees with Cartpanda's API ({api})")]
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
            VerifyError::TotalMismatch { .. } => "has a total that disagrees with Cartpanda's API",
            VerifyError::StatusMismatch { what, .. } => what,
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

/// Compares the delivered order with the API's.
pub fn compare(
    order_id: &str,
    delivered: &Order,
    api: &Order,
    kind: Kind,
) -> Result<(), VerifyError> {
    // Each order's total read the one way classification reads it (the cents when present).
    let total = |order: &Order| -> Option<Decimal> {
        crate::conversion::fields::order_total(order, &money::Evidence::of(order))
            .ok()
            .map(|t| t.value)
    };
    if let (Some(sent), Some(real)) = (total(delivered), total(api)) {
        if money::format_sum(sent) != money::format_sum(real) {
            return Err(VerifyError::TotalMismatch {
                order_id: order_id.to_owned(),
                sent: money::format_sum(sent),
                api: money::format_sum(real),
            });
        }
    }
    let status = api.status_id.get().unwrap_or("").to_ascii_lowercase();
    let mismatch = |what| {
        Err(VerifyError::StatusMismatch {
            order_id: order_id.to_owned(),
            what,
        })
    };
    match kind {
        Kind::Purchase | Kind::Upsell if status.starts_with("cancel") => {
            mismatch("Cartpanda's API says the order is cancelled")
        }
        Kind::Refund
            if !(status.contains("refund")
                || !api.refunds.is_empty()
                || api.line_items.iter().any(|i| i.is_refunded.0)) =>
        {
            mismatch("Cartpanda's API shows no refund")
        }
        Kind::Chargeback if !(api.chargeback_received.0 || status.contains("chargeback")) => {
            mismatch("Cartpanda's API shows no chargeback")
        }
        _ => Ok(()),
    }
}

/// Cartpanda's API over HTTPS (reqwest, bearer token).
/// Largest answer of Cartpanda's API read for one order (real ones are a few KiB).
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

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
        let order = if let Some(inner) = value.get_mut("order") {
            if !inner.is_object() {
                return Ok(None);
            }
            inner.take()
        } else if value.get("id").is_some() {
            value
        } else {
            return Ok(None);
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
}
