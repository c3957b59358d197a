//! Cartpanda's S2S postback as a second input: `GET /cartpanda/s2s?token=…&order_id={order_id}&…`
//! carrying every S2S macro. The query becomes an order and goes through the same classify →
//! claim → render → send path as a webhook: a sale is a Purchase (`<order>-purchase`, the same
//! event ID as the webhook's, so both inputs deduplicate together), an upsell (`upsell_no` > 0 or
//! `order_type` naming an upsell/downsell) an Upsell (`<order>-upsell-s2s-<n>`), and `is_test=1`
//! a test order.

use crate::inbound::lenient::{Flag, RawAmount, RawId, Text};
use crate::inbound::webhook::{
    Address, CheckoutParams, Customer, Delivery, EventField, LineItem, Order, OrderField, Shop,
};
use std::collections::HashMap;

/// Every S2S macro, as the query parameter this input reads it from.
pub const PARAMETERS: &[&str] = &[
    "order_id",
    "product_id",
    "product_name",
    "shop_slug",
    "cid",
    "order_type",
    "upsell_no",
    "total_price",
    "amount_net",
    "amount_affiliate",
    "currency",
    "afid",
    "affiliate_slug",
    "email",
    "first_name",
    "last_name",
    "phone_number",
    "country",
    "datetime_unix",
    "datetime_utc",
    "datetime_full",
    "is_test",
    "campaignkey",
    "src",
    "sck",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "gclid",
    "adclid",
    "adclida",
    "random",
];

/// The query string to paste into Cartpanda's S2S form after `https://<api>/cartpanda/s2s?token=<secret>`.
pub fn paste_query() -> String {
    PARAMETERS.iter().map(|p| format!("&{p}={{{p}}}")).collect()
}

/// Reads the S2S query into a delivery. A macro Cartpanda left unfilled (`{cid}`) reads as absent.
pub fn delivery(query: &HashMap<String, String>) -> Delivery {
    let get = |k: &str| -> Option<String> {
        query
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !(v.is_empty() || (v.starts_with('{') && v.ends_with('}'))))
            .map(|v| v.chars().take(512).collect())
    };
    let text = |k: &str| Text(get(k));
    let amount = |k: &str| get(k).map_or(RawAmount::Absent, RawAmount::Text);
    let order_type = get("order_type").unwrap_or_default().to_ascii_lowercase();
    let upsell_no: u32 = get("upsell_no").and_then(|n| n.parse().ok()).unwrap_or(0);
    let upsell = upsell_no > 0 || order_type.contains("upsell") || order_type.contains("downsell");
    let number = upsell_no.max(1);
    let label = if order_type.contains("downsell") {
        format!("Downsell {number}")
    } else {
        format!("Upsell {number}")
    };
    let line = LineItem {
        id: Text(Some(if upsell {
            format!("s2s-{number}")
        } else {
            "s2s-main".to_owned()
        })),
        product_id: text("product_id"),
        name: text("product_name"),
        price: amount("total_price"),
        quantity: Text(Some("1".to_owned())),
        up_sell_id: Text(Some(if upsell {
            number.to_string()
        } else {
            "0".to_owned()
        })),
        up_sell_type: Text(upsell.then_some(label)),
        ..LineItem::default()
    };
    let country = get("country");
    let created = get("datetime_full")
        .or_else(|| get("datetime_utc"))
        .or_else(|| {
            get("datetime_unix")
                .and_then(|u| u.parse::<i64>().ok())
                .map(crate::inbound::datetime::format_full)
        });
    let order = Order {
        id: get("order_id").map_or(RawId::Absent, RawId::Text),
        is_test: Flag(matches!(get("is_test").as_deref(), Some("1" | "true"))),
        email: text("email"),
        phone: text("phone_number"),
        currency: text("currency"),
        total_price: amount("total_price"),
        amount_net: amount("amount_net"),
        affiliate_amount: amount("amount_affiliate"),
        afid: text("afid"),
        affiliate_slug: text("affiliate_slug"),
        created_at: Text(created),
        checkout_params: Some(CheckoutParams {
            cid: text("cid"),
            src: text("src"),
            sck: text("sck"),
            utm_source: text("utm_source"),
            utm_medium: text("utm_medium"),
            utm_campaign: text("utm_campaign"),
            utm_term: text("utm_term"),
            utm_content: text("utm_content"),
            gclid: text("gclid"),
            campaignkey: text("campaignkey"),
            adclid: text("adclid"),
            adclida: text("adclida"),
            ..CheckoutParams::default()
        }),
        shop: Some(Shop {
            slug: text("shop_slug"),
            ..Shop::default()
        }),
        customer: Some(Customer {
            email: text("email"),
            first_name: text("first_name"),
            last_name: text("last_name"),
            phone: text("phone_number"),
            ..Customer::default()
        }),
        address: Some(Address {
            country_code: Text(country.clone().filter(|c| c.len() == 2)),
            country: Text(country),
        }),
        line_items: vec![line],
        ..Order::default()
    };
    let event = if upsell { "order.upsell" } else { "order.paid" };
    Delivery {
        event: EventField::Name(event.to_owned()),
        order: OrderField::Object(Box::new(order)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paste_query_carries_every_macro() {
        // Read as a query string, the paste is each parameter once, in order, asking for its
        // own macro: `&order_id={order_id}&…`.
        let q = paste_query();
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(q.strip_prefix('&').expect("starts with &").as_bytes())
                .into_owned()
                .collect();
        let expected: Vec<(String, String)> = PARAMETERS
            .iter()
            .map(|p| ((*p).to_owned(), format!("{{{p}}}")))
            .collect();
        assert_eq!(pairs, expected);
        let names: std::collections::HashSet<_> = PARAMETERS.iter().collect();
        assert_eq!(names.len(), PARAMETERS.len(), "no parameter twice");
        for p in PARAMETERS {
            assert!(
                crate::postback::template::Macro::from_name(p).is_some(),
                "{p} is a template macro too"
            );
        }
    }
}
