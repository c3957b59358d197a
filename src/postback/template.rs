//! The RedTrack postback URL template: the URL RedTrack shows for the Cartpanda offer source,
//! with Cartpanda `{macro}` tokens. Parsed once at cold start, rendered once per conversion.

use std::borrow::Cow;
use url::Url;

macro_rules! macros {
    ($($variant:ident => $name:literal,)*) => {
        /// Every macro a template may use: Cartpanda's S2S macros plus this bridge's own.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Macro { $($variant,)* }

        impl Macro {
            pub const ALL: &'static [Macro] = &[$(Macro::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Macro::$variant => $name,)* }
            }

            pub fn from_name(name: &str) -> Option<Macro> {
                match name { $($name => Some(Macro::$variant),)* _ => None }
            }
        }
    };
}

macros! {
    OrderId => "order_id",
    ProductId => "product_id",
    ProductName => "product_name",
    ShopSlug => "shop_slug",
    Cid => "cid",
    OrderType => "order_type",
    UpsellNo => "upsell_no",
    TotalPrice => "total_price",
    AmountNet => "amount_net",
    AmountAffiliate => "amount_affiliate",
    Currency => "currency",
    Afid => "afid",
    AffiliateSlug => "affiliate_slug",
    Email => "email",
    FirstName => "first_name",
    LastName => "last_name",
    PhoneNumber => "phone_number",
    Country => "country",
    DatetimeUnix => "datetime_unix",
    DatetimeUtc => "datetime_utc",
    DatetimeFull => "datetime_full",
    IsTest => "is_test",
    Campaignkey => "campaignkey",
    Src => "src",
    Sck => "sck",
    UtmSource => "utm_source",
    UtmMedium => "utm_medium",
    UtmCampaign => "utm_campaign",
    UtmTerm => "utm_term",
    UtmContent => "utm_content",
    Gclid => "gclid",
    Adclid => "adclid",
    Adclida => "adclida",
    Random => "random",
    ConversionType => "conversion_type",
    EventId => "event_id",
    ConversionStatus => "conversion_status",
}

/// RedTrack's Cartpanda offer-source template, used when the configured URL has no query.
pub const REDTRACK_CARTPANDA_QUERY: &str = "clickid={cid}&sum={total_price}&fname={first_name}\
&lname={last_name}&phone={phone_number}&email={email}&contentid={product_id}&product={product_name}";

/// Why a template was refused. Messages name the offending part, never a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("is not a valid URL ({0})")]
    NotAUrl(String),
    #[error("must use https (http is accepted only for loopback hosts or in dry runs), got `{0}`")]
    NotHttps(String),
    #[error("must not contain a fragment (`#...`)")]
    Fragment,
    #[error("uses the unknown macro `{{{0}}}`; known macros: {1}")]
    UnknownMacro(String, String),
    #[error("has an unclosed `{{` in parameter `{0}`")]
    Unclosed(String),
    #[error("has a `}}` without a matching `{{` in parameter `{0}`")]
    Unopened(String),
    #[error("has a parameter with an empty name")]
    EmptyName,
    #[error("has no `clickid` parameter: RedTrack cannot attribute a conversion without it")]
    NoClickId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Macro(Macro),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Param {
    name: String,
    value: Vec<Segment>,
}

/// A parsed postback template.
#[derive(Debug, Clone)]
pub struct PostbackTemplate {
    base: Url,
    params: Vec<Param>,
}

impl PostbackTemplate {
    /// Parses the URL RedTrack shows. `allow_http` permits plain http (dry runs); loopback hosts
    /// are always allowed plain http so local receivers work.
    pub fn parse(raw: &str, allow_http: bool) -> Result<Self, TemplateError> {
        let raw = raw.trim();
        if raw.contains('#') {
            return Err(TemplateError::Fragment);
        }
        let (base_text, query) = match raw.split_once('?') {
            Some((b, q)) => (b, q),
            None => (raw, ""),
        };
        let mut base = Url::parse(base_text).map_err(|e| TemplateError::NotAUrl(e.to_string()))?;
        match base.scheme() {
            "https" => {}
            "http" if allow_http || is_loopback(&base) => {}
            other => return Err(TemplateError::NotHttps(format!("{other}://"))),
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(TemplateError::NotAUrl("no host".to_owned()));
        }
        base.set_query(None);
        let query = if query.trim_matches('&').is_empty() {
            REDTRACK_CARTPANDA_QUERY
        } else {
            query
        };
        let mut params = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let name = name.trim().to_owned();
            if name.is_empty() {
                return Err(TemplateError::EmptyName);
            }
            let value = parse_value(&name, &value)?;
            params.push(Param { name, value });
        }
        if !params.iter().any(|p| p.name == "clickid") {
            return Err(TemplateError::NoClickId);
        }
        let mut template = PostbackTemplate { base, params };
        template.add_if_absent("type", Macro::ConversionType);
        template.add_if_absent("rdtk_event_id", Macro::EventId);
        Ok(template)
    }

    fn add_if_absent(&mut self, name: &str, value: Macro) {
        if !self.params.iter().any(|p| p.name == name) {
            self.params.push(Param {
                name: name.to_owned(),
                value: vec![Segment::Macro(value)],
            });
        }
    }

    /// The macros this template uses, in order of first use.
    pub fn macros(&self) -> Vec<Macro> {
        let mut out = Vec::new();
        for seg in self.params.iter().flat_map(|p| &p.value) {
            if let Segment::Macro(m) = seg {
                if !out.contains(m) {
                    out.push(*m);
                }
            }
        }
        out
    }

    /// Scheme and host only: safe to log and to show in errors.
    pub fn redacted_target(&self) -> String {
        redact(&self.base)
    }

    /// Renders the postback; every value is form-encoded by `url`.
    pub fn render<'a>(&self, value_of: impl Fn(Macro) -> Cow<'a, str>) -> Url {
        let mut url = self.base.clone();
        {
            let mut pairs = url.query_pairs_mut();
            let mut buf = String::new();
            for param in &self.params {
                buf.clear();
                for seg in &param.value {
                    match seg {
                        Segment::Literal(text) => buf.push_str(text),
                        Segment::Macro(m) => buf.push_str(&value_of(*m)),
                    }
                }
                pairs.append_pair(&param.name, &buf);
            }
        }
        url
    }
}

/// A URL reduced to scheme and host, for logs and error messages.
pub fn redact(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?"))
}

/// Whether the URL's host is a loopback address (`localhost`, 127.0.0.0/8, `::1`): the one
/// rule for where plain http is accepted (postback templates, Cartpanda's order URL).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn parse_value(name: &str, value: &str) -> Result<Vec<Segment>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        match (rest.find('{'), rest.find('}')) {
            (None, None) => {
                out.push(Segment::Literal(rest.to_owned()));
                break;
            }
            (None, Some(_)) => return Err(TemplateError::Unopened(name.to_owned())),
            (Some(open), close) => {
                if close.is_some_and(|c| c < open) {
                    return Err(TemplateError::Unopened(name.to_owned()));
                }
                if open > 0 {
                    out.push(Segment::Literal(rest[..open].to_owned()));
                }
                let after = &rest[open + 1..];
                let end = after
                    .find('}')
                    .ok_or_else(|| TemplateError::Unclosed(name.to_owned()))?;
                let macro_name = after[..end].trim();
                let m = Macro::from_name(macro_name).ok_or_else(|| {
                    let known: Vec<&str> = Macro::ALL.iter().map(|m| m.name()).collect();
                    TemplateError::UnknownMacro(
                        macro_name.chars().take(40).collect(),
                        known.join(", "),
                    )
                })?;
                out.push(Segment::Macro(m));
                rest = &after[end + 1..];
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn query(url: &Url) -> Vec<(String, String)> {
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn echo(m: Macro) -> Cow<'static, str> {
        Cow::Owned(format!("<{}>", m.name()))
    }

    #[test]
    fn every_macro_renders() {
        let q: Vec<String> = Macro::ALL
            .iter()
            .map(|m| format!("p_{0}={{{0}}}", m.name()))
            .collect();
        let t = PostbackTemplate::parse(
            &format!("https://t.example/postback?clickid={{cid}}&{}", q.join("&")),
            false,
        )
        .unwrap();
        let url = t.render(echo);
        let got: HashMap<String, String> = query(&url).into_iter().collect();
        for m in Macro::ALL {
            assert_eq!(got[&format!("p_{}", m.name())], format!("<{}>", m.name()));
        }
        assert_eq!(Macro::ALL.len(), 37);
    }

    #[test]
    fn keeps_fixed_params_and_adds_type_and_event_id() {
        let t = PostbackTemplate::parse(
            "https://trk.example.com/postback?status=approved&clickid={cid}&sum={total_price}&token=s3cr%26t&sub={afid}-{src}",
            false,
        )
        .unwrap();
        let url = t.render(echo);
        assert_eq!(url.path(), "/postback");
        assert_eq!(
            query(&url),
            [
                ("status", "approved"),
                ("clickid", "<cid>"),
                ("sum", "<total_price>"),
                ("token", "s3cr&t"),
                ("sub", "<afid>-<src>"),
                ("type", "<conversion_type>"),
                ("rdtk_event_id", "<event_id>"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }

    #[test]
    fn existing_type_and_event_id_are_not_doubled() {
        let t = PostbackTemplate::parse(
            "https://t.example/p?clickid={cid}&type=Lead&rdtk_event_id={order_id}",
            false,
        )
        .unwrap();
        let names: Vec<String> = query(&t.render(echo)).into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["clickid", "type", "rdtk_event_id"]);
    }

    #[test]
    fn no_query_uses_redtracks_cartpanda_template() {
        let t = PostbackTemplate::parse("https://trk.example.com/postback", false).unwrap();
        let names: Vec<String> = query(&t.render(echo)).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            [
                "clickid",
                "sum",
                "fname",
                "lname",
                "phone",
                "email",
                "contentid",
                "product",
                "type",
                "rdtk_event_id"
            ]
        );
    }

    #[test]
    fn refuses_bad_templates() {
        let cases = [
            (
                "https://t.example/p?clickid={cid}&x={nope}",
                "unknown macro `{nope}`",
            ),
            ("https://t.example/p?clickid={cid", "unclosed"),
            ("https://t.example/p?clickid=cid}", "without a matching"),
            ("http://t.example/p?clickid={cid}", "must use https"),
            ("ftp://t.example/p?clickid={cid}", "must use https"),
            ("not a url", "not a valid URL"),
            ("https://t.example/p?clickid={cid}#x", "fragment"),
            ("https://t.example/p?sum={total_price}", "no `clickid`"),
        ];
        for (raw, expected) in cases {
            let err = PostbackTemplate::parse(raw, false).unwrap_err().to_string();
            assert!(err.contains(expected), "{raw}: {err}");
        }
        assert!(PostbackTemplate::parse("http://127.0.0.1:9/p?clickid={cid}", false).is_ok());
        assert!(PostbackTemplate::parse("http://t.example/p?clickid={cid}", true).is_ok());
    }

    #[test]
    fn redacts_to_scheme_and_host() {
        let t = PostbackTemplate::parse(
            "https://trk.example.com/postback?clickid={cid}&token=secret",
            false,
        )
        .unwrap();
        assert_eq!(t.redacted_target(), "https://trk.example.com");
    }

    proptest::proptest! {
        #[test]
        fn any_value_arrives_intact(value in "\\PC{0,40}", name in "[a-z]{1,8}") {
            let t = PostbackTemplate::parse("https://t.example/p?clickid={cid}&v={first_name}&n={product_name}", false).unwrap();
            let v = value.clone();
            let n = name.clone();
            let url = t.render(move |m| match m {
                Macro::FirstName => Cow::Owned(v.clone()),
                Macro::ProductName => Cow::Owned(n.clone()),
                _ => Cow::Borrowed("x"),
            });
            let parsed = Url::parse(url.as_str()).unwrap();
            let got: HashMap<String, String> = query(&parsed).into_iter().collect();
            proptest::prop_assert_eq!(&got["v"], &value);
            proptest::prop_assert_eq!(&got["n"], &name);
        }
    }
}
