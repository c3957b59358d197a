//! Every record key of the ledger's table, in one place: how each kind of record is named and
//! how a key is read back. The layouts are the ones deployed so far, byte for byte (tables in
//! use hold them):
//!
//! | kind | key |
//! |---|---|
//! | conversion | `evt#<event id>`, `evt#<shop>#<event id>` |
//! | dry-run conversion | `dry#<event id>`, `dry#<shop>#<event id>` |
//! | note ("needs a look") | `note#<order id>#<reason>`, `note#<shop>#<order id>#<reason>` |
//! | refusal (422) | `refused#<shop or default>#<order id or no-id-<ms>>#<event>` |
//! | shop settings | `store#<shop>` |
//! | reconciliation watermark | `watermark#default`, `watermark#shop#<shop>` |
//! | registry of named shops | `registry#shops` (one item) |
//!
//! No kind's prefix starts another's, and within a kind the parts never hold `#` (event IDs,
//! order IDs, reasons and shop names are made of `[A-Za-z0-9._-]`), so a key names one record of
//! one kind. The one ambiguity left is old: a shop *named* `default` would share the default
//! shop's refusal keys, which is why `shop put` refuses that name
//! ([`crate::shops::directory::check_new_name`]; `shop rename` moves an existing one).

/// Key prefix of conversions.
pub const CONVERSION: &str = "evt#";
/// Key prefix of dry-run conversions (`DRY_RUN=true`), kept apart from real ones.
pub const DRY_RUN: &str = "dry#";
/// Key prefix of notes ([`crate::ledger::notes`]).
pub const NOTE: &str = "note#";
/// Key prefix of refusal records ([`crate::ledger::refusal`]).
pub const REFUSED: &str = "refused#";
/// Key prefix of named shops' settings ([`crate::shops`]).
pub const SHOP: &str = "store#";
/// Key prefix of reconciliation watermarks.
pub const WATERMARK: &str = "watermark#";
/// Key prefix of registries ([`crate::shops::registry`]).
pub const REGISTRY: &str = "registry#";

/// The name the default shop goes by where a key must name a shop (refusals, watermarks).
pub const DEFAULT_SHOP: &str = "default";

/// The record key of a conversion (`dry_run`: of a dry run's).
pub fn conversion(shop: Option<&str>, event_id: &str, dry_run: bool) -> String {
    let prefix = if dry_run { DRY_RUN } else { CONVERSION };
    match shop {
        None => format!("{prefix}{event_id}"),
        Some(shop) => format!("{prefix}{shop}#{event_id}"),
    }
}

/// The record key of a note on an order.
pub fn note(shop: Option<&str>, order_id: &str, reason: &str) -> String {
    match shop {
        None => format!("{NOTE}{order_id}#{reason}"),
        Some(shop) => format!("{NOTE}{shop}#{order_id}#{reason}"),
    }
}

/// The record key of a refusal: each part reduced to `[A-Za-z0-9._-]` (at most 64 characters);
/// `order` is the order ID, or `no-id-<ms>` when the delivery had none.
pub fn refusal(shop: Option<&str>, order: &str, event: &str) -> String {
    format!(
        "{REFUSED}{}#{}#{}",
        part(shop.unwrap_or(DEFAULT_SHOP)),
        part(order),
        part(event)
    )
}

/// The record key of a named shop's settings.
pub fn shop(name: &str) -> String {
    format!("{SHOP}{name}")
}

/// The record key of a shop's reconciliation watermark.
pub fn watermark(shop: Option<&str>) -> String {
    match shop {
        None => format!("{WATERMARK}{DEFAULT_SHOP}"),
        Some(name) => format!("{WATERMARK}shop#{name}"),
    }
}

/// The record key of the registry of named shops.
pub fn registry() -> String {
    format!("{REGISTRY}shops")
}

/// A key's text reduced to the characters keys are made of.
fn part(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect()
}

/// A record key read back: its kind and parts (`shop` is `None` for the default shop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key<'a> {
    Conversion {
        shop: Option<&'a str>,
        event_id: &'a str,
        dry_run: bool,
    },
    Note {
        shop: Option<&'a str>,
        order_id: &'a str,
        reason: &'a str,
    },
    Refusal {
        shop: Option<&'a str>,
        order: &'a str,
        event: &'a str,
    },
    Shop(&'a str),
    Watermark(Option<&'a str>),
    /// The registry of named shops.
    Registry,
}

/// Reads a record key; `None` for a key of no known layout.
pub fn parse(key: &str) -> Option<Key<'_>> {
    if let Some(rest) = key.strip_prefix(CONVERSION) {
        return conversion_parts(rest, false);
    }
    if let Some(rest) = key.strip_prefix(DRY_RUN) {
        return conversion_parts(rest, true);
    }
    if let Some(rest) = key.strip_prefix(NOTE) {
        let parts: Vec<&str> = rest.split('#').collect();
        return match parts[..] {
            [order_id, reason] => Some(Key::Note {
                shop: None,
                order_id,
                reason,
            }),
            [shop, order_id, reason] => Some(Key::Note {
                shop: Some(shop),
                order_id,
                reason,
            }),
            _ => None,
        };
    }
    if let Some(rest) = key.strip_prefix(REFUSED) {
        let [shop, order, event] = rest.split('#').collect::<Vec<_>>()[..] else {
            return None;
        };
        let shop = (shop != DEFAULT_SHOP).then_some(shop);
        return Some(Key::Refusal { shop, order, event });
    }
    if let Some(name) = key.strip_prefix(SHOP) {
        return Some(Key::Shop(name));
    }
    if key == registry() {
        return Some(Key::Registry);
    }
    match key.strip_prefix(WATERMARK)? {
        DEFAULT_SHOP => Some(Key::Watermark(None)),
        rest => rest
            .strip_prefix("shop#")
            .map(|name| Key::Watermark(Some(name))),
    }
}

fn conversion_parts(rest: &str, dry_run: bool) -> Option<Key<'_>> {
    let (shop, event_id) = match rest.split_once('#') {
        Some((shop, event_id)) => (Some(shop), event_id),
        None => (None, rest),
    };
    Some(Key::Conversion {
        shop,
        event_id,
        dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_layouts_deployed_so_far() {
        assert_eq!(conversion(None, "1-purchase", false), "evt#1-purchase");
        assert_eq!(conversion(None, "1-purchase", true), "dry#1-purchase");
        assert_eq!(
            conversion(Some("loja"), "4-upsell-9", false),
            "evt#loja#4-upsell-9"
        );
        assert_eq!(note(None, "42", "no_click_id"), "note#42#no_click_id");
        assert_eq!(
            note(Some("loja-sp"), "42", "no_click_id"),
            "note#loja-sp#42#no_click_id"
        );
        assert_eq!(
            refusal(None, "48213577", "order.paid"),
            "refused#default#48213577#order.paid"
        );
        assert_eq!(
            refusal(Some("loja-sp"), "no-id-1795000000123", "order paid!x"),
            "refused#loja-sp#no-id-1795000000123#orderpaidx"
        );
        assert_eq!(shop("loja"), "store#loja");
        assert_eq!(watermark(None), "watermark#default");
        assert_eq!(watermark(Some("default")), "watermark#shop#default");
        assert_eq!(registry(), "registry#shops");
        assert_eq!(parse("registry#shops"), Some(Key::Registry));
        assert_eq!(parse("registry#other"), None);
    }

    /// One record of any kind, from the values its key is made of.
    fn any_key() -> impl Strategy<Value = (u8, Option<String>, String, String, bool)> {
        let shop = proptest::option::of(
            "[a-z0-9_-]{1,12}".prop_filter("a reserved name", |s| s != DEFAULT_SHOP && s != "s2s"),
        );
        let id = "[0-9]{1,6}(-(purchase|chargeback|refund-[0-9]|upsell-[A-Za-z0-9._-]{1,8}))?";
        let word = "[a-z0-9_.-]{1,12}";
        (0u8..6, shop, id, word, any::<bool>())
    }

    fn key_of(kind: u8, shop: Option<&str>, id: &str, word: &str, flag: bool) -> String {
        match kind {
            0 => conversion(shop, id, flag),
            1 => note(shop, id, word),
            2 => refusal(shop, id, word),
            3 => self::shop(shop.unwrap_or(word)),
            4 => watermark(shop),
            _ => conversion(shop, word, flag),
        }
    }

    proptest! {
        /// No two records, of the same kind or of two kinds, share a key: every key reads back
        /// as the kind and parts it was made from.
        #[test]
        fn a_key_names_one_record(k in any_key()) {
            let (kind, shop, id, word, flag) = &k;
            let a = key_of(*kind, shop.as_deref(), id, word, *flag);
            let parsed = parse(&a).expect("every key reads back");
            let expected = match kind {
                0 => Key::Conversion { shop: shop.as_deref(), event_id: id, dry_run: *flag },
                1 => Key::Note { shop: shop.as_deref(), order_id: id, reason: word },
                2 => Key::Refusal { shop: shop.as_deref(), order: id, event: word },
                3 => Key::Shop(shop.as_deref().unwrap_or(word)),
                4 => Key::Watermark(shop.as_deref()),
                _ => Key::Conversion { shop: shop.as_deref(), event_id: word, dry_run: *flag },
            };
            prop_assert_eq!(parsed, expected);
        }
    }
}
