//! The Cartpanda order webhook as it arrives: `{"event": "...", "order": {...}, "webhook": {...}}`.
//! Parsing is tolerant of types (see [`crate::inbound::lenient`]) and strict about structure; it does no
//! I/O and never panics on any input.

use crate::inbound::lenient::{self, Flag, RawAmount, RawId, Text};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

/// Largest request body accepted, in bytes (decided before parsing).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Why a body is not a Cartpanda webhook. Messages never quote the body (it holds PII).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("request body is empty")]
    Empty,
    #[error("request body is {0} bytes; the limit is {MAX_BODY_BYTES}")]
    TooLarge(usize),
    #[error("request body is not valid UTF-8")]
    NotUtf8,
    #[error("request body must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("request body is not valid JSON: {0}")]
    Syntax(String),
    #[error("request body is nested too deeply")]
    TooDeep,
    #[error("request body has a duplicate key: {0}")]
    DuplicateKey(String),
    #[error("request body does not have the shape of a Cartpanda webhook ({0})")]
    Shape(String),
    #[error("`event` is missing")]
    EventMissing,
    #[error("`event` must be a non-empty string")]
    EventNotString,
}

/// One webhook delivery.
#[derive(Debug, Default)]
pub struct Delivery {
    pub event: EventField,
    pub order: OrderField,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub enum EventField {
    #[default]
    Missing,
    Name(String),
    NotString,
}

#[derive(Debug, Default)]
pub enum OrderField {
    #[default]
    Missing,
    Object(Box<Order>),
    NotObject(&'static str),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Order {
    pub id: RawId,
    pub number: Text,
    pub order_number: Text,
    pub test: Flag,
    pub is_cartx_test: Flag,
    pub is_test: Flag,
    pub email: Text,
    pub phone: Text,
    pub currency: Text,
    pub total_price: RawAmount,
    /// The total in whole cents (`750` for `"7,50"`), when the payload carries it: the authority
    /// for the total.
    pub unformatted_total_price: RawAmount,
    pub subtotal_price: RawAmount,
    pub total_tax: RawAmount,
    pub total_discounts: RawAmount,
    pub amount_net: RawAmount,
    pub affiliate_amount: RawAmount,
    pub exchange_rate_usd: RawAmount,
    #[serde(rename = "exchange_rate_USD")]
    pub exchange_rate_usd_upper: RawAmount,
    pub status_id: Text,
    /// 1 pending, 3 paid, 4 cancelled (as Cartpanda's API reports an order).
    pub payment_status: Text,
    pub chargeback_received: Flag,
    pub afid: Text,
    pub affiliate_slug: Text,
    pub created_at: Text,
    pub processed_at: Text,
    pub updated_at: Text,
    /// The buyer's thank-you page URL; a click ID source (see [`crate::conversion::clickid`]).
    pub thank_you_page: Text,
    #[serde(deserialize_with = "checkout_params")]
    pub checkout_params: Option<CheckoutParams>,
    #[serde(deserialize_with = "lenient::object")]
    pub shop: Option<Shop>,
    #[serde(deserialize_with = "lenient::object")]
    pub shop_info: Option<ShopInfo>,
    #[serde(deserialize_with = "lenient::object")]
    pub customer: Option<Customer>,
    #[serde(deserialize_with = "lenient::object")]
    pub address: Option<Address>,
    #[serde(deserialize_with = "lenient::object")]
    pub payment: Option<Payment>,
    #[serde(deserialize_with = "lenient::object_list")]
    pub line_items: Vec<LineItem>,
    #[serde(deserialize_with = "lenient::object_list")]
    pub refunds: Vec<Refund>,
    /// The tracking parameters of orders read from Cartpanda's v3 API (`[{parameter_name,
    /// parameter_value}]`), where those orders carry no `checkout_params`.
    #[serde(deserialize_with = "lenient::object_list")]
    pub conversion_summary: Vec<SummaryParameter>,
}

/// One entry of an order's `conversion_summary`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SummaryParameter {
    pub parameter_name: Text,
    pub parameter_value: Text,
}

/// The query parameters the checkout was opened with; `cid` is RedTrack's click ID.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CheckoutParams {
    pub cid: Text,
    pub clickid: Text,
    pub rtkcid: Text,
    pub src: Text,
    pub sck: Text,
    pub utm_source: Text,
    pub utm_medium: Text,
    pub utm_campaign: Text,
    pub utm_term: Text,
    pub utm_content: Text,
    pub gclid: Text,
    pub ttclid: Text,
    pub campaignkey: Text,
    pub adclid: Text,
    pub adclida: Text,
    /// Any other parameter, for `CLICKID_SOURCES` (see [`crate::conversion::clickid`]).
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, Text>,
}

/// Most other checkout parameters kept from a query-string `checkout_params`.
const MAX_OTHER_PARAMS: usize = 64;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Shop {
    pub id: Text,
    pub slug: Text,
    pub name: Text,
    /// The shop's time zone (e.g. `America/Sao_Paulo`), as orders read from the API carry it.
    pub timezone: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ShopInfo {
    pub slug: Text,
    #[serde(deserialize_with = "lenient::object")]
    pub settings_general: Option<SettingsGeneral>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SettingsGeneral {
    pub currency: Text,
    pub base_currency: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Customer {
    pub email: Text,
    pub first_name: Text,
    pub last_name: Text,
    pub full_name: Text,
    pub phone: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Address {
    pub country: Text,
    pub country_code: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Payment {
    pub amount: RawAmount,
    pub currency: Text,
    pub seller_split_amount: RawAmount,
    pub actual_exchange_rate: RawAmount,
    /// The currency `actual_exchange_rate` converts into (the one the buyer paid in).
    pub actual_price_paid_currency: Text,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LineItem {
    pub id: Text,
    pub product_id: Text,
    pub variant_id: Text,
    pub sku: Text,
    pub name: Text,
    pub title: Text,
    pub price: RawAmount,
    /// The line in the currency paid (the same number as `price` when nothing was converted).
    pub actual_price_paid: RawAmount,
    pub quantity: Text,
    pub up_sell_id: Text,
    pub up_sell_type: Text,
    pub is_refunded: Flag,
    pub refunded_quantity: Text,
    /// Not read from the wire: for an upsell of a shop fed by S2S, the keys earlier versions gave
    /// it in its event ID (after `<order>-upsell-`; [`crate::inbound::s2s::Upsell::former_keys`]),
    /// which a claim under its new ID looks up first.
    #[serde(skip)]
    pub former_ids: Vec<String>,
}

impl LineItem {
    /// Whether this line is an upsell or downsell (`up_sell_id` present and not 0).
    pub fn is_upsell(&self) -> bool {
        self.up_sell_id.get().is_some_and(|v| {
            !v.bytes().all(|b| b == b'0' || b == b'.') && !matches!(v, "false" | "null")
        })
    }

    /// The product's display name.
    pub fn display_name(&self) -> Option<&str> {
        self.name.get().or(self.title.get())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Refund {
    pub id: Text,
    pub total_amount: RawAmount,
    pub amount: RawAmount,
    pub created_at: Text,
}

/// Parses a request body into a [`Delivery`].
pub fn parse(body: &[u8]) -> Result<Delivery, ParseError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ParseError::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|_| ParseError::NotUtf8)?;
    let first = text.trim_start_matches([' ', '\t', '\n', '\r', '\u{feff}']);
    match first.as_bytes().first() {
        None => return Err(ParseError::Empty),
        Some(b'{') => {}
        Some(b'[') => return Err(ParseError::NotAnObject("an array")),
        Some(b'"') => return Err(ParseError::NotAnObject("a string")),
        Some(b'n') if first.trim_end() == "null" => return Err(ParseError::NotAnObject("null")),
        Some(b't' | b'f') if matches!(first.trim_end(), "true" | "false") => {
            return Err(ParseError::NotAnObject("a boolean"));
        }
        Some(b'-' | b'0'..=b'9') if serde_json::from_str::<IgnoredAny>(first).is_ok() => {
            return Err(ParseError::NotAnObject("a number"));
        }
        Some(_) => {
            return Err(ParseError::Syntax(
                "expected a JSON object (is it form-encoded?)".to_owned(),
            ));
        }
    }
    if nesting_depth(first.as_bytes()) > MAX_DEPTH {
        return Err(ParseError::TooDeep);
    }
    let delivery: Delivery = serde_json::from_str(first).map_err(map_json_error)?;
    match &delivery.event {
        EventField::Missing => Err(ParseError::EventMissing),
        EventField::NotString => Err(ParseError::EventNotString),
        EventField::Name(_) => Ok(delivery),
    }
}

/// Deepest nesting of objects and arrays accepted (real webhooks nest about 4 deep).
pub const MAX_DEPTH: usize = 32;

/// The deepest nesting of `{`/`[` outside strings, counted on the raw bytes in one pass.
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn map_json_error(err: serde_json::Error) -> ParseError {
    let msg = err.to_string();
    if msg.starts_with("recursion limit exceeded") {
        return ParseError::TooDeep;
    }
    if let Some(rest) = msg.strip_prefix("duplicate field ") {
        let field = rest.split(" at line").next().unwrap_or(rest);
        return ParseError::DuplicateKey(field.to_owned());
    }
    let at = format!("line {}, column {}", err.line(), err.column());
    match err.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            let what = if err.is_eof() {
                "unexpected end of input"
            } else {
                "syntax error"
            };
            ParseError::Syntax(format!("{what} at {at}"))
        }
        // Data errors can quote values; report the position only.
        _ => ParseError::Shape(format!("unexpected value at {at}")),
    }
}

impl<'de> Deserialize<'de> for Delivery {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Delivery;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Cartpanda webhook object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Delivery, A::Error> {
                let mut out = Delivery::default();
                let (mut seen_event, mut seen_order) = (false, false);
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "event" => {
                            if std::mem::replace(&mut seen_event, true) {
                                return Err(de::Error::duplicate_field("event"));
                            }
                            let text: Text = map.next_value()?;
                            out.event = match text.0 {
                                Some(name) if !name.is_empty() && !text_was_number(&name) => {
                                    EventField::Name(name)
                                }
                                _ => EventField::NotString,
                            };
                        }
                        "order" => {
                            if std::mem::replace(&mut seen_order, true) {
                                return Err(de::Error::duplicate_field("order"));
                            }
                            out.order = map.next_value::<OrderSlot>()?.0;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

fn text_was_number(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
}

struct OrderSlot(OrderField);

impl<'de> Deserialize<'de> for OrderSlot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderSlot;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an order object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OrderSlot, A::Error> {
                let order = Order::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(OrderSlot(OrderField::Object(Box::new(order))))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OrderSlot, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(OrderSlot(OrderField::NotObject("an array")))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<OrderSlot, E> {
                Ok(OrderSlot(OrderField::NotObject("a string")))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<OrderSlot, E> {
                Ok(OrderSlot(OrderField::NotObject("a number")))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<OrderSlot, E> {
                Ok(OrderSlot(OrderField::NotObject("a number")))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<OrderSlot, E> {
                Ok(OrderSlot(OrderField::NotObject("a number")))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<OrderSlot, E> {
                Ok(OrderSlot(OrderField::NotObject("a boolean")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<OrderSlot, E> {
                Ok(OrderSlot(OrderField::NotObject("null")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `checkout_params` as an object, or as the query string the checkout was opened with.
fn checkout_params<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CheckoutParams>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<CheckoutParams>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("checkout parameters")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            CheckoutParams::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(CheckoutParams::from_query(v)))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

impl CheckoutParams {
    fn from_query(query: &str) -> Self {
        let query = query.trim();
        let query = query.split_once('?').map_or(query, |(_, q)| q);
        let mut out = CheckoutParams::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "cid" => &mut out.cid,
                "clickid" => &mut out.clickid,
                "rtkcid" => &mut out.rtkcid,
                "src" => &mut out.src,
                "sck" => &mut out.sck,
                "utm_source" => &mut out.utm_source,
                "utm_medium" => &mut out.utm_medium,
                "utm_campaign" => &mut out.utm_campaign,
                "utm_term" => &mut out.utm_term,
                "utm_content" => &mut out.utm_content,
                "gclid" => &mut out.gclid,
                "ttclid" => &mut out.ttclid,
                "campaignkey" => &mut out.campaignkey,
                "adclid" => &mut out.adclid,
                "adclida" => &mut out.adclida,
                other => {
                    if out.other.len() < MAX_OTHER_PARAMS {
                        out.other
                            .entry(other.to_owned())
                            .or_insert_with(|| Text(Some(value.trim().to_owned())));
                    }
                    continue;
                }
            };
            if slot.0.is_none() {
                *slot = Text(Some(value.trim().to_owned()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(body: &str) -> Order {
        match parse(body.as_bytes()).unwrap().order {
            OrderField::Object(o) => *o,
            other => panic!("no order: {other:?}"),
        }
    }

    #[test]
    fn reads_types_as_they_vary() {
        let o = order(
            r#"{"event":"order.paid","order":{"id":"123","test":"1","total_price":"1.234,56",
            "checkout_params":{"cid":" abc ","utm_source":5},"customer":[],"address":null,
            "line_items":[{"id":1,"price":7.5,"up_sell_id":0},"junk",{"id":"2","up_sell_id":"77"}],
            "refunds":{}}}"#,
        );
        assert_eq!(o.id, RawId::Text("123".into()));
        assert!(o.test.0);
        assert_eq!(o.total_price, RawAmount::Text("1.234,56".into()));
        let cp = o.checkout_params.unwrap();
        assert_eq!(cp.cid.get(), Some("abc"));
        assert_eq!(cp.utm_source.get(), Some("5"));
        assert!(o.customer.is_none() && o.address.is_none());
        assert_eq!(o.line_items.len(), 2);
        assert_eq!(o.line_items[0].price, RawAmount::Number("7.5".into()));
        assert!(!o.line_items[0].is_upsell());
        assert!(o.line_items[1].is_upsell());
        assert!(o.refunds.is_empty());
    }

    #[test]
    fn checkout_params_may_be_a_query_string() {
        let o = order(
            r#"{"event":"order.paid","order":{"id":1,"checkout_params":"?cid=x%201&src=fb"}}"#,
        );
        let cp = o.checkout_params.unwrap();
        assert_eq!(cp.cid.get(), Some("x 1"));
        assert_eq!(cp.src.get(), Some("fb"));
    }

    #[test]
    fn rejects_bodies_with_precise_errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::Empty),
            (b"  \n", ParseError::Empty),
            (b"[1]", ParseError::NotAnObject("an array")),
            (b"\"x\"", ParseError::NotAnObject("a string")),
            (b"null", ParseError::NotAnObject("null")),
            (b"42", ParseError::NotAnObject("a number")),
            (b"\xff\xfe", ParseError::NotUtf8),
            (b"{\"order\":{}}", ParseError::EventMissing),
            (b"{\"event\":5,\"order\":{}}", ParseError::EventNotString),
            (b"{\"event\":\"\",\"order\":{}}", ParseError::EventNotString),
            (
                b"{\"event\":\"a\",\"event\":\"b\"}",
                ParseError::DuplicateKey("`event`".into()),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                parse(body).unwrap_err(),
                *expected,
                "body {:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(matches!(
            parse(b"event=order.paid&x=1"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse(b"{\"event\":\"order.paid\""),
            Err(ParseError::Syntax(_))
        ));
        let deep = format!(
            "{{\"event\":\"x\",\"order\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(parse(deep.as_bytes()).unwrap_err(), ParseError::TooDeep);
        let in_string = format!("{{\"event\":\"x\",\"note\":\"{}\"}}", "[".repeat(100));
        assert!(parse(in_string.as_bytes()).is_ok());
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            parse(&big).unwrap_err(),
            ParseError::TooLarge(MAX_BODY_BYTES + 1)
        );
        let dup = br#"{"event":"order.paid","order":{"id":1,"id":2}}"#;
        assert_eq!(
            parse(dup).unwrap_err(),
            ParseError::DuplicateKey("`id`".into())
        );
    }

    #[test]
    fn order_must_be_an_object() {
        for (body, kind) in [
            (r#"{"event":"order.paid","order":"1"}"#, "a string"),
            (r#"{"event":"order.paid","order":[]}"#, "an array"),
            (r#"{"event":"order.paid","order":null}"#, "null"),
        ] {
            match parse(body.as_bytes()).unwrap().order {
                OrderField::NotObject(k) => assert_eq!(k, kind),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(matches!(
            parse(br#"{"event":"order.paid"}"#).unwrap().order,
            OrderField::Missing
        ));
    }
}
