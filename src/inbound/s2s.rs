//! Cartpanda's S2S postback as a second input: `GET /cartpanda/s2s?token=…&order_id={order_id}&…`
//! carrying every S2S macro. The query becomes an order and goes through the same classify →
//! claim → render → send path as a webhook: a sale is a Purchase (`<order>-purchase`, the same
//! event ID as the webhook's, so both inputs deduplicate together), an upsell (`upsell_no` > 0 or
//! `order_type` naming an upsell/downsell) an Upsell (event ID: `<order>-upsell-` and its
//! [`Upsell::key`], which reconciliation of an S2S shop calls too:
//! `crate::reconcile::run::s2s_line_ids`), and `is_test=1` a test order.

use crate::inbound::lenient::{Flag, RawAmount, RawId, Text};
use crate::inbound::webhook::{
    Address, CheckoutParams, Customer, Delivery, EventField, LineItem, Order, OrderField, Shop,
};
use sha2::{Digest, Sha256};
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
    let q = Query(query);
    let sale = Sale::of(&q);
    let order = Order {
        line_items: vec![sale.line_item(&q)],
        ..order(&q)
    };
    let event = if sale.upsell {
        "order.upsell"
    } else {
        "order.paid"
    };
    Delivery {
        event: EventField::Name(event.to_owned()),
        order: OrderField::Object(Box::new(order)),
    }
}

/// The S2S query, read leniently.
struct Query<'a>(&'a HashMap<String, String>);

impl Query<'_> {
    /// A parameter's value, trimmed and capped; an empty or unfilled macro (`{cid}`) is absent.
    fn get(&self, k: &str) -> Option<String> {
        self.0
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !(v.is_empty() || (v.starts_with('{') && v.ends_with('}'))))
            .map(|v| v.chars().take(512).collect())
    }

    fn text(&self, k: &str) -> Text {
        Text(self.get(k))
    }

    fn amount(&self, k: &str) -> RawAmount {
        self.get(k).map_or(RawAmount::Absent, RawAmount::Text)
    }
}

/// What tells one upsell of a shop fed by S2S from another, as both paths read it: the S2S
/// postback (`product_id`, `order_type`, `upsell_no`, `product_name`) and reconciliation (the
/// listed order's line: `product_id`, `up_sell_type`, `name`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upsell<'a> {
    pub product_id: Option<&'a str>,
    /// A downsell (`order_type` / `up_sell_type` naming one).
    pub downsell: bool,
    /// Its step (`upsell_no`, or the number in `Upsell 2`), when known.
    pub step: Option<u32>,
    pub name: Option<&'a str>,
}

/// The step an `up_sell_type` or `order_type` names (`Upsell 2` → 2); none without a number > 0.
pub fn step_of(label: &str) -> Option<u32> {
    let digits: String = label.chars().filter(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|n| *n > 0)
}

/// A product ID as event IDs carry it: its letters and digits only, at most 48.
fn product_key(product_id: Option<&str>) -> String {
    product_id
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(48)
        .collect()
}

impl Upsell<'_> {
    /// The key of its event ID, the part after `<order>-upsell-` (the line ID the S2S route gives
    /// its one line, and reconciliation of an S2S shop each upsell line): the one scheme of both
    /// paths (both call it).
    ///
    /// - with a product ID: `s2s-p<product_id>` (upsell or downsell alike);
    /// - without one: `s2s-n<16 hex digits>`, a digest of whether it is a downsell, its step and
    ///   its product name (trimmed, lower-cased): two upsells that differ in any of them never
    ///   share an ID, and the same one repeated keeps its ID. An upsell of a postback without
    ///   `upsell_no` has no step, so its ID differs from reconciliation's (which reads the step in
    ///   `up_sell_type`): keep `{product_id}` in the S2S URL, as the paste query has it.
    pub fn key(&self) -> String {
        let product = product_key(self.product_id);
        if !product.is_empty() {
            return format!("s2s-p{product}");
        }
        let name = self.name.unwrap_or("").trim().to_lowercase();
        let step = self.step.map(|n| n.to_string()).unwrap_or_default();
        let mut h = Sha256::new();
        for part in [
            if self.downsell { "downsell" } else { "upsell" },
            &step,
            &name,
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        format!("s2s-n{}", hex::encode(&h.finalize()[..8]))
    }

    /// The keys versions before issue 20 gave the same upsell, which a claim under [`key`]
    /// looks up first (`crate::bridge::former`): `s2s-<n>` for each step in `steps` (the S2S
    /// route's `upsell_no`, reconciliation's step or position) and, for a downsell with a product
    /// ID, `s2s-dp<product_id>`. Never the key itself (`s2s-p<product_id>` is unchanged).
    ///
    /// [`key`]: Upsell::key
    pub fn former_keys(&self, steps: &[u32]) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for n in steps.iter().filter(|n| **n > 0) {
            let key = format!("s2s-{n}");
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let product = product_key(self.product_id);
        if self.downsell && !product.is_empty() {
            keys.push(format!("s2s-dp{product}"));
        }
        keys
    }
}

/// Which sale the postback reports: the main sale, or upsell/downsell number `number`.
struct Sale {
    upsell: bool,
    number: u32,
    downsell: bool,
    /// The upsell's key in its event ID ([`Upsell::key`]).
    key: String,
    /// The keys earlier versions gave it ([`Upsell::former_keys`]).
    former: Vec<String>,
}

impl Sale {
    fn of(q: &Query<'_>) -> Sale {
        let order_type = q.get("order_type").unwrap_or_default().to_ascii_lowercase();
        let upsell_no: Option<u32> = q
            .get("upsell_no")
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0);
        let (product_id, name) = (q.get("product_id"), q.get("product_name"));
        let downsell = order_type.contains("downsell");
        let upsell = Upsell {
            product_id: product_id.as_deref(),
            downsell,
            step: upsell_no.or_else(|| step_of(&order_type)),
            name: name.as_deref(),
        };
        // Earlier versions: `s2s-<upsell_no>`; without it `s2s-p`/`s2s-dp<product>`, else
        // `s2s-1`; reconciliation `s2s-<step>`.
        let mut steps: Vec<u32> = upsell.step.into_iter().collect();
        if upsell_no.is_none() && product_key(upsell.product_id).is_empty() {
            steps.push(1);
        }
        Sale {
            upsell: upsell_no.is_some() || order_type.contains("upsell") || downsell,
            number: upsell_no.unwrap_or(1),
            downsell,
            key: upsell.key(),
            former: upsell.former_keys(&steps),
        }
    }

    /// The one line item the postback describes.
    fn line_item(&self, q: &Query<'_>) -> LineItem {
        let number = self.number;
        let label = if self.downsell {
            format!("Downsell {number}")
        } else {
            format!("Upsell {number}")
        };
        LineItem {
            id: Text(Some(if self.upsell {
                self.key.clone()
            } else {
                "s2s-main".to_owned()
            })),
            product_id: q.text("product_id"),
            name: q.text("product_name"),
            price: q.amount("total_price"),
            quantity: Text(Some("1".to_owned())),
            up_sell_id: Text(Some(if self.upsell {
                number.to_string()
            } else {
                "0".to_owned()
            })),
            up_sell_type: Text(self.upsell.then_some(label)),
            former_ids: if self.upsell {
                self.former.clone()
            } else {
                Vec::new()
            },
            ..LineItem::default()
        }
    }
}

/// The order the query describes, line items aside.
fn order(q: &Query<'_>) -> Order {
    let country = q.get("country");
    Order {
        id: q.get("order_id").map_or(RawId::Absent, RawId::Text),
        is_test: Flag(matches!(q.get("is_test").as_deref(), Some("1" | "true"))),
        email: q.text("email"),
        phone: q.text("phone_number"),
        currency: q.text("currency"),
        total_price: q.amount("total_price"),
        amount_net: q.amount("amount_net"),
        affiliate_amount: q.amount("amount_affiliate"),
        afid: q.text("afid"),
        affiliate_slug: q.text("affiliate_slug"),
        created_at: Text(created(q)),
        checkout_params: Some(checkout_params(q)),
        shop: Some(Shop {
            slug: q.text("shop_slug"),
            ..Shop::default()
        }),
        customer: Some(Customer {
            email: q.text("email"),
            first_name: q.text("first_name"),
            last_name: q.text("last_name"),
            phone: q.text("phone_number"),
            ..Customer::default()
        }),
        address: Some(Address {
            country_code: Text(country.clone().filter(|c| c.len() == 2)),
            country: Text(country),
        }),
        ..Order::default()
    }
}

/// When the sale happened: the full date, else the UTC one, else the Unix time.
fn created(q: &Query<'_>) -> Option<String> {
    q.get("datetime_full")
        .or_else(|| q.get("datetime_utc"))
        .or_else(|| {
            q.get("datetime_unix")
                .and_then(|u| u.parse::<i64>().ok())
                .map(crate::inbound::datetime::format_full)
        })
}

fn checkout_params(q: &Query<'_>) -> CheckoutParams {
    CheckoutParams {
        cid: q.text("cid"),
        src: q.text("src"),
        sck: q.text("sck"),
        utm_source: q.text("utm_source"),
        utm_medium: q.text("utm_medium"),
        utm_campaign: q.text("utm_campaign"),
        utm_term: q.text("utm_term"),
        utm_content: q.text("utm_content"),
        gclid: q.text("gclid"),
        campaignkey: q.text("campaignkey"),
        adclid: q.text("adclid"),
        adclida: q.text("adclida"),
        ..CheckoutParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line a postback with these parameters (besides an order ID) becomes.
    fn line(pairs: &[(&str, &str)]) -> LineItem {
        let mut query: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        query.insert("order_id".to_owned(), "5100".to_owned());
        match delivery(&query).order {
            OrderField::Object(mut order) => order.line_items.remove(0),
            _ => unreachable!("the S2S input always makes an order"),
        }
    }

    #[test]
    fn an_upsell_keeps_the_ids_earlier_versions_gave_it() {
        // The postback's parameters, the start of the key, the former keys.
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a [&'a str]);
        let cases: [Case<'_>; 5] = [
            (
                &[("upsell_no", "2"), ("product_id", "77")],
                "s2s-p77",
                &["s2s-2"],
            ),
            (
                &[
                    ("order_type", "downsell"),
                    ("upsell_no", "1"),
                    ("product_id", "78"),
                ],
                "s2s-p78",
                &["s2s-1", "s2s-dp78"],
            ),
            (
                &[("order_type", "downsell"), ("product_id", "78")],
                "s2s-p78",
                &["s2s-dp78"],
            ),
            (
                &[("order_type", "upsell"), ("product_id", "77")],
                "s2s-p77",
                &[],
            ),
            (
                &[("order_type", "upsell"), ("upsell_no", "{upsell_no}")],
                "",
                &["s2s-1"],
            ),
        ];
        for (pairs, key, former) in cases {
            let item = line(pairs);
            let id = item.id.get().unwrap();
            assert!(
                id.starts_with(if key.is_empty() { "s2s-n" } else { key }),
                "{id}"
            );
            assert_eq!(item.former_ids, former, "{pairs:?}");
        }
        assert!(
            line(&[("upsell_no", "0")]).former_ids.is_empty(),
            "a sale has none"
        );
    }

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
