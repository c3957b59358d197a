//! The rules and vocabulary of classification: which events map to which RedTrack conversion
//! types, what counts as a test order, the kinds of conversion and their RedTrack status, the
//! [`Conversion`] itself, and why a delivery is skipped ([`Skip`]) or refused ([`Reject`]).
//! Pure: no I/O, no clock.

use crate::inbound::money::{AmountError, Evidence};
use crate::inbound::webhook::{LineItem, Order};
use crate::inbound::zone::Zone;
use rust_decimal::Decimal;

/// Line items accepted in one order; more is refused as not a real order.
pub const MAX_LINE_ITEMS: usize = 500;
/// Upsell or refund conversions produced by one delivery at most.
pub const MAX_CONVERSIONS: usize = 50;
/// Longest click ID accepted.
pub const MAX_CLICK_ID: usize = 128;

/// The default event → RedTrack conversion type map.
pub const DEFAULT_CONVERSION_TYPES: &str =
    "order.paid=Purchase,order.upsell=Upsell,order.refunded=Refund,order.chargeback=Chargeback";

/// Which Cartpanda events become which RedTrack conversion types (case-sensitive names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionTypes(Vec<(String, String)>);

impl ConversionTypes {
    /// Parses `event=Type,event=Type`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out: Vec<(String, String)> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (event, kind) = entry
                .split_once('=')
                .ok_or_else(|| format!("entry `{entry}` is not of the form event=Type"))?;
            let (event, kind) = (event.trim(), kind.trim());
            if event.is_empty() || kind.is_empty() {
                return Err(format!("entry `{entry}` has an empty event or type"));
            }
            if !kind
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' ' | '.'))
            {
                return Err(format!(
                    "type `{kind}` may only hold letters, digits, space, `_`, `-`, `.`"
                ));
            }
            if out.iter().any(|(e, _)| e == event) {
                return Err(format!("event `{event}` is listed twice"));
            }
            out.push((event.to_owned(), kind.to_owned()));
        }
        if out.is_empty() {
            return Err("no event is mapped".to_owned());
        }
        Ok(ConversionTypes(out))
    }

    pub fn get(&self, event: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(e, _)| e == event)
            .map(|(_, t)| t.as_str())
    }
}

impl Default for ConversionTypes {
    fn default() -> Self {
        ConversionTypes::parse(DEFAULT_CONVERSION_TYPES).expect("default conversion types parse")
    }
}

/// What kind of conversion, which decides the event ID, amount and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Purchase,
    Upsell,
    Refund,
    Chargeback,
    /// Another event the merchant mapped (e.g. `order.created=Pending`).
    Other,
}

/// One conversion to send to RedTrack.
#[derive(Debug)]
pub struct Conversion<'a> {
    pub kind: Kind,
    pub event_id: String,
    pub conversion_type: String,
    pub amount: Decimal,
    pub items: Vec<&'a LineItem>,
    pub upsell_no: Option<String>,
    pub downsell: bool,
    /// The currency of `amount` as sent (after any `SUM_CURRENCY` conversion).
    pub currency: Option<String>,
    /// The rate `amount` was converted with into `currency` (`SUM_CURRENCY`); `None` when sent
    /// as charged. `{amount_net}` and `{amount_affiliate}` are converted with the same rate.
    pub rate: Option<Decimal>,
    /// How the order writes its amounts, for the amounts read beside the sum
    /// (`{amount_net}`, `{amount_affiliate}`).
    pub evidence: Evidence,
    /// Sent as a test order (`{is_test}` = 1): the order is a test by [`Rules::is_test`] and
    /// `SEND_TEST_ORDERS` let it through.
    pub test: bool,
}

/// Why a well-formed delivery produces no conversion (answered 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    EventNotMapped,
    NotAChargeback,
    TestOrder,
    NoClickId,
    NoUpsellItems,
    NoExchangeRate,
    /// The order was created longer ago than the ledger remembers (`DEDUP_TTL_DAYS`): its
    /// records may be gone, so sending could repeat a conversion sent then ([`too_old`]).
    TooOld {
        age_days: u32,
        memory_days: u32,
    },
}

impl Skip {
    pub fn code(self) -> &'static str {
        match self {
            Skip::EventNotMapped => "event_not_mapped",
            Skip::NotAChargeback => "not_a_conversion",
            Skip::TestOrder => "test_order",
            Skip::NoClickId => "no_click_id",
            Skip::NoUpsellItems => "no_upsell_items",
            Skip::NoExchangeRate => "no_exchange_rate",
            Skip::TooOld { .. } => "too_old",
        }
    }

    pub fn message(self) -> String {
        let text = match self {
            Skip::EventNotMapped => {
                "this event is not mapped to a RedTrack conversion type (CONVERSION_TYPES)"
            }
            Skip::NotAChargeback => "order.updated carries no chargeback; nothing to convert",
            Skip::TestOrder => "test order; set SEND_TEST_ORDERS=true to send test orders",
            Skip::NoClickId => {
                "order has no RedTrack click ID in any of CLICKID_SOURCES; RedTrack cannot attribute it"
            }
            Skip::NoExchangeRate => {
                "the payload gives no exchange rate into SUM_CURRENCY (or no currency at all); an amount is never guessed"
            }
            Skip::NoUpsellItems => {
                "order.upsell carries no upsell line item (up_sell_id other than 0)"
            }
            Skip::TooOld {
                age_days,
                memory_days,
            } => {
                return format!(
                    "order created {age_days} days ago, longer ago than the ledger remembers conversions (DEDUP_TTL_DAYS = {memory_days}); never sent, so nothing sent then is sent again"
                );
            }
        };
        text.to_owned()
    }
}

/// Why a delivery is refused. Messages name fields, never their values (they may be PII).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("`order` is missing")]
    OrderMissing,
    #[error("`order` must be an object, got {0}")]
    OrderNotObject(&'static str),
    #[error("`order.id` is missing")]
    OrderIdMissing,
    #[error("`order.id` {0}")]
    OrderIdInvalid(&'static str),
    #[error("`{field}` {error}")]
    Amount { field: String, error: AmountError },
    #[error("`{field}` is missing")]
    AmountMissing { field: String },
    #[error("`{field}` {why}")]
    Quantity { field: String, why: &'static str },
    #[error("`checkout_params.cid` {0}")]
    ClickIdInvalid(&'static str),
    #[error("order has {0} line items; at most {MAX_LINE_ITEMS} are accepted")]
    TooManyLineItems(usize),
    #[error("delivery would produce {0} conversions; at most {MAX_CONVERSIONS} are accepted")]
    TooManyConversions(usize),
}

impl Reject {
    /// The field refused and what was wrong with it, in words that never quote a value (the
    /// refusal record); `None` for the refusals that are not 422 (no order object).
    pub fn field_and_reason(&self) -> Option<(String, String)> {
        let pair = |field: &str, reason: &str| Some((field.to_owned(), reason.to_owned()));
        match self {
            Reject::OrderMissing | Reject::OrderNotObject(_) => None,
            Reject::OrderIdMissing => pair("order.id", "is missing"),
            Reject::OrderIdInvalid(why) => pair("order.id", why),
            Reject::Amount { field, error } => pair(field, &error.to_string()),
            Reject::AmountMissing { field } => pair(field, "is missing"),
            Reject::Quantity { field, why } => pair(field, why),
            Reject::ClickIdInvalid(why) => pair("checkout_params.cid", why),
            Reject::TooManyLineItems(_) => pair("order.line_items", "has too many line items"),
            Reject::TooManyConversions(_) => pair("order", "would produce too many conversions"),
        }
    }
}

/// What to do with an order whose only test mark is `is_cartx_test` = 1 (`test` = 0):
/// `CARTX_TEST_ORDERS`. The flag has been seen on real sales, so by default they are sales.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CartxTestOrders {
    /// A sale like any other (the default).
    #[default]
    Send,
    /// A test order, skipped unless `SEND_TEST_ORDERS` is on.
    Skip,
}

impl CartxTestOrders {
    /// Parses `send` or `skip` (any case).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "send" => Ok(CartxTestOrders::Send),
            "skip" => Ok(CartxTestOrders::Skip),
            _ => Err(format!("must be `send` or `skip`, got `{}`", text.trim())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CartxTestOrders::Send => "send",
            CartxTestOrders::Skip => "skip",
        }
    }
}

/// The rules that decide what converts.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub conversion_types: ConversionTypes,
    pub send_test_orders: bool,
    /// Orders marked only by `is_cartx_test`: sales (default) or test orders.
    pub cartx_test_orders: CartxTestOrders,
    /// Convert every sum into this currency (`SUM_CURRENCY`); `None` sends amounts as charged.
    pub sum_currency: Option<String>,
}

impl Rules {
    /// Whether the order is a test order: `test` = 1 (or S2S `is_test` = 1) always; `is_cartx_test`
    /// = 1 alone only when `CARTX_TEST_ORDERS=skip`.
    pub fn is_test(&self, order: &Order) -> bool {
        order.test.0
            || order.is_test.0
            || (is_cartx_test(order) && self.cartx_test_orders == CartxTestOrders::Skip)
    }
}

/// Whether the order's only test mark is `is_cartx_test` = 1: a flag seen on sandbox orders and on
/// real sales alike, marked in logs and metrics (`cartx_test`) whatever the setting.
pub fn is_cartx_test(order: &Order) -> bool {
    order.is_cartx_test.0 && !order.test.0 && !order.is_test.0
}

/// What an order's `payment_status` says: `3` (or the text `paid`) paid, `1` (or `pending`) not
/// yet, `4` (or text starting `cancel`) cancelled. Absent, blank or any other code (`2`, `5`, …,
/// whose meaning no public source gives) proves nothing: [`Payment::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payment {
    Paid,
    Pending,
    Cancelled,
    Unknown,
}

/// The one reading of `payment_status`, for verification (a sale needs an order not pending nor
/// cancelled) and for reconciliation (an updated order makes sales only when paid).
pub fn payment(order: &Order) -> Payment {
    let Some(code) = order.payment_status.get() else {
        return Payment::Unknown;
    };
    let code = code.trim().to_ascii_lowercase();
    match Decimal::from_str_exact(&code).ok().map(|d| d.normalize()) {
        Some(n) if n == Decimal::from(3) => Payment::Paid,
        Some(n) if n == Decimal::ONE => Payment::Pending,
        Some(n) if n == Decimal::from(4) => Payment::Cancelled,
        Some(_) => Payment::Unknown,
        None if code == "paid" => Payment::Paid,
        None if code == "pending" => Payment::Pending,
        None if code.starts_with("cancel") => Payment::Cancelled,
        None => Payment::Unknown,
    }
}

/// Whether the order says it was refunded besides its refund records: a status text naming a
/// refund (`Refunded`, `Partially Refunded`), or a line flagged `is_refunded`. A numeric
/// `status_id` proves nothing.
pub fn marked_refunded(order: &Order) -> bool {
    let status = order.status_id.get().unwrap_or("").to_ascii_lowercase();
    status.contains("refund") || order.line_items.iter().any(|i| i.is_refunded.0)
}

/// The zone an order's naive times are in, when it says (`shop.timezone`, a zone of
/// [`crate::inbound::zone`]).
pub fn shop_zone(order: &Order) -> Option<&'static Zone> {
    Zone::find(order.shop.as_ref()?.timezone.get()?)
}

/// When the order was created (`created_at`, epoch seconds): an offset honoured, a naive time read
/// in the order's own zone ([`shop_zone`]), else in `fallback` (the shop's configured zone), else
/// as UTC. The one reading of `created_at`, for the age rule and for reconciliation.
pub fn created_s(order: &Order, fallback: Option<&Zone>) -> Option<i64> {
    let zone = shop_zone(order).or(fallback);
    crate::inbound::datetime::read_in(order.created_at.get()?, zone)
}

/// Whether the order is older than the ledger's memory: created ([`created_s`]) more than
/// `memory_days` before `now_ms`. Its conversions' records may have expired, so a refund or
/// chargeback delivered again could be sent twice: such an order is skipped. An absent or
/// unreadable `created_at` never blocks.
pub fn too_old(order: &Order, now_ms: i64, memory_days: u32) -> Option<Skip> {
    let created_s = created_s(order, None)?;
    let age_s = now_ms.div_euclid(1000) - created_s;
    (age_s > i64::from(memory_days) * 86_400).then(|| Skip::TooOld {
        age_days: u32::try_from(age_s / 86_400).unwrap_or(u32::MAX),
        memory_days,
    })
}

/// RedTrack's status for a conversion kind: sales are approved, refunds and chargebacks declined.
pub fn status(kind: Kind) -> &'static str {
    match kind {
        Kind::Purchase | Kind::Upsell | Kind::Other => "approved",
        Kind::Refund | Kind::Chargeback => "declined",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::lenient::Text;

    const NOW_MS: i64 = 1_795_000_000_000;

    fn created(text: Option<&str>) -> Order {
        Order {
            created_at: Text(text.map(str::to_owned)),
            ..Order::default()
        }
    }

    #[test]
    fn too_old_is_past_the_memory_by_created_at() {
        let day = 86_400;
        let at = |days_ago: i64| {
            crate::inbound::datetime::format_utc(NOW_MS / 1000 - days_ago * day - 1)
        };
        let skip = too_old(&created(Some(&at(450))), NOW_MS, 400).unwrap();
        assert_eq!(
            skip,
            Skip::TooOld {
                age_days: 450,
                memory_days: 400
            }
        );
        assert_eq!(skip.code(), "too_old");
        assert!(
            skip.message().contains("450 days ago"),
            "{}",
            skip.message()
        );
        assert_eq!(
            too_old(&created(Some(&at(400))), NOW_MS, 400).map(Skip::code),
            Some("too_old")
        );
        assert_eq!(too_old(&created(Some(&at(399))), NOW_MS, 400), None);
        assert_eq!(too_old(&created(Some(&at(100))), NOW_MS, 400), None);
        assert_eq!(
            too_old(&created(Some(&at(100))), NOW_MS, 30).map(Skip::code),
            Some("too_old")
        );
    }

    #[test]
    fn a_naive_created_at_is_read_in_the_orders_own_zone() {
        // Created 2 hours short of the 400 days' memory, written as São Paulo's wall clock
        // (UTC-3): read as UTC it would look an hour past it.
        let at_s = NOW_MS / 1000 - 400 * 86_400 + 2 * 3600;
        let local = crate::inbound::datetime::format_utc(at_s - 3 * 3600);
        let mut order = created(Some(&local));
        assert_eq!(
            too_old(&order, NOW_MS, 400).map(Skip::code),
            Some("too_old"),
            "read as UTC"
        );
        order.shop = Some(crate::inbound::webhook::Shop {
            timezone: Text(Some("America/Sao_Paulo".to_owned())),
            ..Default::default()
        });
        assert_eq!(created_s(&order, None), Some(at_s));
        assert_eq!(too_old(&order, NOW_MS, 400), None);
        let sao_paulo = Zone::find("America/Sao_Paulo");
        assert_eq!(created_s(&created(Some(&local)), sao_paulo), Some(at_s));
    }

    #[test]
    fn an_unreadable_or_absent_created_at_never_blocks() {
        for text in [
            None,
            Some(""),
            Some("yesterday"),
            Some("2023-02-31 10:00:00"),
        ] {
            assert_eq!(too_old(&created(text), NOW_MS, 1), None, "{text:?}");
        }
        // ISO 8601 with an offset is read too.
        let old = created(Some("2020-01-01T00:00:00-03:00"));
        assert!(too_old(&old, NOW_MS, 400).is_some());
    }
}
