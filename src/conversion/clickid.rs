//! Where a shop's orders carry RedTrack's click ID: `CLICKID_SOURCES` (and per shop), an ordered
//! list of places to look. The first usable value wins and is written into
//! `checkout_params.cid` before classification, so everything downstream (the `{cid}` macro, the
//! fingerprint, [`crate::conversion::fields::click_id`]) reads the one resolved click ID.
//!
//! Sources:
//!
//! - `checkout_params.<key>`: a query parameter the checkout was opened with (`cid`, `clickid`,
//!   `rtkcid`, `sck`, `src`, `utm_term`, …);
//! - `thank_you_page.<param>`: a query parameter of the order's `thank_you_page` URL;
//! - `conversion_summary.<name>`: the `parameter_value` of the entry named `<name>` in the
//!   order's `conversion_summary` (orders read from Cartpanda's v3 API carry their tracking
//!   parameters there, and no `checkout_params`).
//!
//! The default is what the bridge always read, `checkout_params.cid`, `checkout_params.clickid`,
//! `checkout_params.rtkcid`, then `conversion_summary.cid` (so reconciliation finds the click ID of
//! orders listed by the v3 API).
//!
//! What counts as a click ID. RedTrack's click IDs are 24 lowercase hexadecimal characters (a
//! MongoDB ObjectId: `67d42f3b9a1e5c0012ab34cd`; every sample in `events/` has that shape).
//!
//! - In a **dedicated** click-ID parameter (`checkout_params.cid`, `clickid`, `rtkcid`: RedTrack's
//!   offer URL fills them with `{clickid}` and nothing else) the value is taken as it is, as it
//!   always was: up to [`MAX_CLICK_ID`] URL-safe characters, and a value with other characters is
//!   refused (422), since it can only be a forged or broken delivery.
//! - In any **other** place (`sck`, `src`, `utm_term`, a thank-you-page parameter, any
//!   `conversion_summary` entry — whose values are not known to be checked), which carries
//!   words too (`utm_term=summer-sale`), only a value of RedTrack's shape counts; anything else is
//!   passed over and the next source is tried.
//! - Everywhere, an empty value or an unfilled Cartpanda macro (`{cid}`) counts as absent.

use crate::conversion::rules::{MAX_CLICK_ID, Reject};
use crate::inbound::lenient::Text;
use crate::inbound::webhook::{CheckoutParams, Delivery, Order, OrderField};

/// The default sources: the three dedicated checkout parameters, in the order always read, then
/// the v3 API's `conversion_summary` entry `cid`.
pub const DEFAULT_SOURCES: &str =
    "checkout_params.cid,checkout_params.clickid,checkout_params.rtkcid,conversion_summary.cid";

/// What a source list must look like (the template's `ClickIdSources` pattern says the same).
const SOURCE_FORM: &str =
    "checkout_params.<key>, thank_you_page.<param> or conversion_summary.<name>";

/// The checkout parameters that carry nothing but the click ID.
const DEDICATED: [&str; 3] = ["cid", "clickid", "rtkcid"];

/// One place to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `checkout_params.<key>`.
    CheckoutParam(String),
    /// `thank_you_page.<param>`: a query parameter of the thank-you page URL.
    ThankYouPage(String),
    /// `conversion_summary.<name>`: the value of the order's `conversion_summary` entry `<name>`.
    ConversionSummary(String),
}

impl Source {
    fn dedicated(&self) -> bool {
        matches!(self, Source::CheckoutParam(k) if DEDICATED.contains(&k.as_str()))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::CheckoutParam(k) => write!(f, "checkout_params.{k}"),
            Source::ThankYouPage(k) => write!(f, "thank_you_page.{k}"),
            Source::ConversionSummary(k) => write!(f, "conversion_summary.{k}"),
        }
    }
}

/// The ordered list of sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickIdSources(Vec<Source>);

impl Default for ClickIdSources {
    fn default() -> Self {
        ClickIdSources::parse(DEFAULT_SOURCES).expect("default click ID sources parse")
    }
}

impl ClickIdSources {
    /// Parses `checkout_params.cid,thank_you_page.rtkcid,conversion_summary.cid,…` (at most 16
    /// entries; keys of 1–64 `A-Z a-z 0-9 _ - .`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (place, key) = entry
                .split_once('.')
                .ok_or_else(|| format!("`{entry}` must be {SOURCE_FORM}"))?;
            let key_ok = !key.is_empty()
                && key.len() <= 64
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !key_ok {
                return Err(format!(
                    "`{entry}`: the key must be 1-64 of A-Z a-z 0-9 _ - ."
                ));
            }
            let source = match place {
                "checkout_params" => Source::CheckoutParam(key.to_owned()),
                "thank_you_page" => Source::ThankYouPage(key.to_owned()),
                "conversion_summary" => Source::ConversionSummary(key.to_owned()),
                _ => return Err(format!("`{entry}` must be {SOURCE_FORM}")),
            };
            if out.contains(&source) {
                return Err(format!("`{entry}` is listed twice"));
            }
            out.push(source);
        }
        if out.is_empty() {
            return Err("names no source".to_owned());
        }
        if out.len() > 16 {
            return Err(format!("names {} sources; at most 16", out.len()));
        }
        Ok(ClickIdSources(out))
    }

    pub fn sources(&self) -> &[Source] {
        &self.0
    }

    /// The text form, as parsed.
    pub fn to_text(&self) -> String {
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Whether `value` has the shape of a RedTrack click ID: 24 lowercase hexadecimal characters.
pub fn is_redtrack_shape(value: &str) -> bool {
    value.len() == 24
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// An unfilled Cartpanda macro such as `{cid}`.
fn unfilled_macro(value: &str) -> bool {
    value.starts_with('{') && value.ends_with('}')
}

/// Today's check of a dedicated click-ID parameter's value.
fn check_dedicated(value: &str) -> Result<(), Reject> {
    if value.len() > MAX_CLICK_ID {
        return Err(Reject::ClickIdInvalid(
            "is too long to be a RedTrack click ID",
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        return Err(Reject::ClickIdInvalid(
            "holds characters a RedTrack click ID never has",
        ));
    }
    Ok(())
}

fn checkout_value<'a>(params: &'a CheckoutParams, key: &str) -> Option<&'a str> {
    match key {
        "cid" => params.cid.get(),
        "clickid" => params.clickid.get(),
        "rtkcid" => params.rtkcid.get(),
        "src" => params.src.get(),
        "sck" => params.sck.get(),
        "utm_source" => params.utm_source.get(),
        "utm_medium" => params.utm_medium.get(),
        "utm_campaign" => params.utm_campaign.get(),
        "utm_term" => params.utm_term.get(),
        "utm_content" => params.utm_content.get(),
        "gclid" => params.gclid.get(),
        "ttclid" => params.ttclid.get(),
        "campaignkey" => params.campaignkey.get(),
        "adclid" => params.adclid.get(),
        "adclida" => params.adclida.get(),
        other => params.other.get(other).and_then(Text::get),
    }
}

fn thank_you_value(order: &Order, param: &str) -> Option<String> {
    let page = order.thank_you_page.get()?;
    let query = page.split_once('?').map(|(_, q)| q)?;
    let query = query.split('#').next().unwrap_or("");
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == param)
        .map(|(_, v)| v.trim().to_owned())
}

fn summary_value<'a>(order: &'a Order, name: &str) -> Option<&'a str> {
    order
        .conversion_summary
        .iter()
        .find(|p| p.parameter_name.get() == Some(name))
        .and_then(|p| p.parameter_value.get())
}

/// What the sources found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub click_id: String,
    pub source: Source,
}

/// Looks through the sources in order. `Ok(None)`: no usable click ID anywhere; `Err`: a
/// dedicated parameter holds a value no click ID has (the delivery is refused, as always).
pub fn find(order: &Order, sources: &ClickIdSources) -> Result<Option<Found>, Reject> {
    for source in sources.sources() {
        let value = match source {
            Source::CheckoutParam(key) => order
                .checkout_params
                .as_ref()
                .and_then(|p| checkout_value(p, key))
                .map(str::to_owned),
            Source::ThankYouPage(param) => thank_you_value(order, param),
            Source::ConversionSummary(name) => summary_value(order, name).map(str::to_owned),
        };
        let Some(value) = value.filter(|v| !v.is_empty() && !unfilled_macro(v)) else {
            continue;
        };
        if source.dedicated() {
            check_dedicated(&value)?;
        } else if !is_redtrack_shape(&value) {
            continue;
        }
        return Ok(Some(Found {
            click_id: value,
            source: source.clone(),
        }));
    }
    Ok(None)
}

/// Resolves the click ID and writes it into `checkout_params.cid` (clearing `clickid` and
/// `rtkcid`), so classification and rendering read the one the sources chose; with none, the
/// three are cleared and the order is skipped as `no_click_id`. A dedicated parameter with an
/// impossible value is left in `cid` for classification to refuse in its usual order of checks.
pub fn apply(order: &mut Order, sources: &ClickIdSources) {
    let resolved = match find(order, sources) {
        Ok(found) => found.map(|f| f.click_id),
        Err(_) => sources.sources().iter().find_map(|s| match s {
            Source::CheckoutParam(key) if s.dedicated() => order
                .checkout_params
                .as_ref()
                .and_then(|p| checkout_value(p, key))
                .filter(|v| !unfilled_macro(v) && check_dedicated(v).is_err())
                .map(str::to_owned),
            _ => None,
        }),
    };
    if resolved.is_none() && order.checkout_params.is_none() {
        return;
    }
    let params = order
        .checkout_params
        .get_or_insert_with(CheckoutParams::default);
    params.cid = Text(resolved);
    params.clickid = Text(None);
    params.rtkcid = Text(None);
}

/// [`apply`] to a delivery's order, when it has one.
pub fn apply_to_delivery(delivery: &mut Delivery, sources: &ClickIdSources) {
    if let OrderField::Object(order) = &mut delivery.order {
        apply(order, sources);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::webhook;

    fn order(json: &str) -> Order {
        match webhook::parse(format!(r#"{{"event":"order.paid","order":{json}}}"#).as_bytes())
            .unwrap()
            .order
        {
            OrderField::Object(o) => *o,
            _ => panic!("no order"),
        }
    }

    const ID: &str = "67d42f3b9a1e5c0012ab34cd";

    #[test]
    fn parses_and_refuses_with_the_reason() {
        assert_eq!(ClickIdSources::default().to_text(), DEFAULT_SOURCES);
        let s = ClickIdSources::parse(" checkout_params.sck , thank_you_page.rtkcid ").unwrap();
        assert_eq!(
            s.sources(),
            [
                Source::CheckoutParam("sck".into()),
                Source::ThankYouPage("rtkcid".into())
            ]
        );
        for (text, problem) in [
            ("", "names no source"),
            ("sck", "checkout_params.<key>"),
            ("query.cid", "checkout_params.<key>"),
            ("conversion_summary", "conversion_summary.<name>"),
            ("checkout_params.", "1-64"),
            ("checkout_params.a b", "1-64"),
            ("checkout_params.cid,checkout_params.cid", "twice"),
        ] {
            let e = ClickIdSources::parse(text).unwrap_err();
            assert!(e.contains(problem), "{text}: {e}");
        }
    }

    #[test]
    fn the_shape_is_redtracks() {
        assert!(is_redtrack_shape(ID));
        for bad in [
            "67D42F3B9A1E5C0012AB34CD",
            "67d42f3b9a1e5c0012ab34c",
            "67d42f3b9a1e5c0012ab34cdd",
            "summer-sale-2025-campaign",
            "67d42f3b9a1e5c0012ab34cg",
        ] {
            assert!(!is_redtrack_shape(bad), "{bad}");
        }
    }

    #[test]
    fn default_sources_behave_as_before() {
        let o = order(r#"{"id":1,"checkout_params":{"rtkcid":"abc-123"}}"#);
        let found = find(&o, &ClickIdSources::default()).unwrap().unwrap();
        assert_eq!(
            found.click_id, "abc-123",
            "dedicated keys keep today's check"
        );
        let o = order(r#"{"id":1,"checkout_params":{"cid":"a&b=1","rtkcid":"ok"}}"#);
        assert!(find(&o, &ClickIdSources::default()).is_err());
        let o = order(r#"{"id":1,"checkout_params":{"cid":"{cid}","utm_term":"x"}}"#);
        assert_eq!(find(&o, &ClickIdSources::default()).unwrap(), None);
    }

    #[test]
    fn other_places_need_redtracks_shape_and_the_order_decides() {
        let sources = ClickIdSources::parse(
            "checkout_params.utm_term,checkout_params.sck,thank_you_page.clickid,checkout_params.cid",
        )
        .unwrap();
        let o = order(&format!(
            r#"{{"id":1,"checkout_params":{{"utm_term":"summer-sale","sck":"{{cid}}","cid":"{ID}"}},
            "thank_you_page":"https://shop.example/thanks?x=1&clickid=67d42f3b9a1e5c0012ab0000"}}"#
        ));
        let found = find(&o, &sources).unwrap().unwrap();
        assert_eq!(found.click_id, "67d42f3b9a1e5c0012ab0000");
        assert_eq!(found.source, Source::ThankYouPage("clickid".into()));
        let o = order(&format!(
            r#"{{"id":1,"checkout_params":{{"xcid":"{ID}","utm_term":"{ID}"}}}}"#
        ));
        let any_key = ClickIdSources::parse("checkout_params.xcid").unwrap();
        assert_eq!(find(&o, &any_key).unwrap().unwrap().click_id, ID);
        let o = order(r#"{"id":1,"checkout_params":"?xcid=67d42f3b9a1e5c0012ab34cd&src=fb"}"#);
        assert_eq!(find(&o, &any_key).unwrap().unwrap().click_id, ID);
    }

    #[test]
    fn orders_of_the_v3_api_give_their_click_id_in_conversion_summary() {
        let summary = |value: &str| {
            order(&format!(
                r#"{{"id":1,"conversion_summary":[
                    {{"parameter_name":"utm_source","parameter_value":"fb"}},
                    {{"parameter_name":"cid","parameter_value":"{value}"}}]}}"#
            ))
        };
        let found = find(&summary(ID), &ClickIdSources::default())
            .unwrap()
            .unwrap();
        assert_eq!(found.click_id, ID);
        assert_eq!(found.source, Source::ConversionSummary("cid".into()));
        // Not of RedTrack's shape: passed over, as in every non-dedicated place.
        assert_eq!(
            find(&summary("summer-sale"), &ClickIdSources::default()).unwrap(),
            None
        );
        // The checkout parameters come first.
        let both = order(&format!(
            r#"{{"id":1,"checkout_params":{{"cid":"abc-1"}},
            "conversion_summary":[{{"parameter_name":"cid","parameter_value":"{ID}"}}]}}"#
        ));
        let found = find(&both, &ClickIdSources::default()).unwrap().unwrap();
        assert_eq!(found.click_id, "abc-1");
        let mut resolved = summary(ID);
        apply(&mut resolved, &ClickIdSources::default());
        assert_eq!(
            crate::conversion::fields::click_id(&resolved).unwrap(),
            Some(ID)
        );
    }

    #[test]
    fn apply_writes_the_choice_into_cid() {
        let sources = ClickIdSources::parse("checkout_params.rtkcid").unwrap();
        let mut o = order(&format!(
            r#"{{"id":1,"checkout_params":{{"cid":"not-this","rtkcid":"{ID}"}}}}"#
        ));
        apply(&mut o, &sources);
        let p = o.checkout_params.as_ref().unwrap();
        assert_eq!((p.cid.get(), p.rtkcid.get()), (Some(ID), None));
        let mut none = order(r#"{"id":1,"checkout_params":{"cid":"{cid}"}}"#);
        apply(&mut none, &ClickIdSources::default());
        assert_eq!(none.checkout_params.unwrap().cid.get(), None);
        let mut bad = order(r#"{"id":1,"checkout_params":{"clickid":"a&b"}}"#);
        apply(&mut bad, &ClickIdSources::default());
        assert!(crate::conversion::fields::click_id(&bad).is_err());
    }
}
