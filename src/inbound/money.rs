//! Money as Cartpanda sends it: a JSON number (`7.5`) or a string in Brazilian (`"1.234,56"`)
//! or international (`"1,234.56"`) format. Parsed into an exact [`Decimal`]; never a float.
//!
//! One shape is never guessed: a lone separator followed by exactly three digits (`"1.500"`,
//! `"1,500"`) is 1500 with a thousands separator or 1.5 with a decimal one. [`parse_amount_text`]
//! refuses it as [`AmountError::Ambiguous`]; [`Evidence`] (computed once per order) decides it
//! from the order itself, or leaves it refused. Exchange rates are not money: [`parse_rate`]
//! reads a lone separator as a decimal one.

use crate::inbound::lenient::RawAmount;
use crate::inbound::webhook::Order;
use rust_decimal::{Decimal, RoundingStrategy};
use std::str::FromStr;

/// Longest amount text accepted, in bytes: far above any real price, far below anything costly.
const MAX_LEN: usize = 40;

/// Largest amount accepted (a sanity bound in any currency): every accepted amount formats into
/// a `sum` that reads back to itself.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

fn bounded(value: Decimal) -> Result<Decimal, AmountError> {
    if value > Decimal::from(MAX_AMOUNT) {
        Err(AmountError::OutOfRange)
    } else {
        Ok(value)
    }
}

/// Why an amount could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("is empty")]
    Empty,
    #[error("is negative")]
    Negative,
    #[error("is not a number")]
    NotANumber,
    #[error("is too long")]
    TooLong,
    #[error("has misplaced thousands separators")]
    BadGrouping,
    #[error("is out of range")]
    OutOfRange,
    #[error(
        "is ambiguous: one separator followed by three digits reads as thousands or as decimals, and the order's other amounts do not decide which"
    )]
    Ambiguous,
    #[error("is not a whole number of cents")]
    NotWholeCents,
}

/// Parses an amount written as text, in any of the formats Cartpanda is seen to use.
///
/// Accepted: `7`, `7.5`, `7,50`, `1.234,56`, `1,234.56`, `1.234.567`, `R$ 7,50`, ` 97.00 `.
/// Where both separators appear, the last one is the decimal separator and the other must group
/// digits by three. A lone comma is a decimal comma (Brazilian shops); a lone dot is a decimal
/// point; repeated identical separators are thousands separators. A lone separator followed by
/// exactly three digits after a non-zero integer part (`1.500`, `12,500`) is
/// [`AmountError::Ambiguous`]: see [`Evidence`].
pub fn parse_amount_text(raw: &str) -> Result<Decimal, AmountError> {
    let digits = amount_digits(raw)?;
    if ambiguous_separator(digits.1).is_some() {
        return Err(AmountError::Ambiguous);
    }
    finish_text(digits)
}

/// Reads an exchange rate written as text (`"0.17412300"`, `"1,085"`): like an amount, but a
/// lone separator is always the decimal one (a rate is not money and has no thousands).
pub fn parse_rate_text(raw: &str) -> Result<Decimal, AmountError> {
    finish_text(amount_digits(raw)?)
}

/// Reads a raw exchange rate (see [`parse_rate_text`]): `None` when absent.
pub fn parse_rate(raw: &RawAmount) -> Option<Result<Decimal, AmountError>> {
    match raw {
        RawAmount::Absent => None,
        RawAmount::Number(text) => Some(parse_amount_number(text)),
        RawAmount::Text(text) => Some(parse_rate_text(text)),
    }
}

/// The sign and the digits-and-separators of an amount text, its prefix stripped and its
/// characters checked.
fn amount_digits(raw: &str) -> Result<(bool, &str), AmountError> {
    let text = raw.trim();
    if text.len() > MAX_LEN {
        return Err(AmountError::TooLong);
    }
    let text = strip_currency_prefix(text);
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty()
        || !digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b',')
    {
        return Err(AmountError::NotANumber);
    }
    if !digits.bytes().any(|b| b.is_ascii_digit()) {
        return Err(AmountError::NotANumber);
    }
    Ok((negative, digits))
}

/// The amount of checked digits, a lone separator read as the decimal one.
fn finish_text((negative, digits): (bool, &str)) -> Result<Decimal, AmountError> {
    let normalised = normalise_separators(digits)?;
    let value = Decimal::from_str_exact(&normalised).map_err(|_| AmountError::OutOfRange)?;
    if negative && !value.is_zero() {
        return Err(AmountError::Negative);
    }
    bounded(value)
}

/// Parses an amount that arrived as a JSON number, given as the text serde_json printed for it
/// (the shortest text that reads back to the same number, i.e. what the sender wrote).
pub fn parse_amount_number(text: &str) -> Result<Decimal, AmountError> {
    if text.starts_with('-') && text != "-0" && text != "-0.0" {
        return Err(AmountError::Negative);
    }
    if text.len() > MAX_LEN {
        return Err(AmountError::OutOfRange);
    }
    let value = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).map_err(|_| AmountError::OutOfRange)?
    } else {
        Decimal::from_str(text).map_err(|_| AmountError::OutOfRange)?
    };
    bounded(value.abs())
}

/// Reads a raw amount, however the payload wrote it: `None` when absent, else the amount or why
/// it could not be read. The one reading of a payload amount (classification, macro values,
/// currency rates, order verification).
pub fn parse_raw(raw: &RawAmount) -> Option<Result<Decimal, AmountError>> {
    match raw {
        RawAmount::Absent => None,
        RawAmount::Number(text) => Some(parse_amount_number(text)),
        RawAmount::Text(text) => Some(parse_amount_text(text)),
    }
}

/// Renders an amount as RedTrack's `sum`: a plain decimal with a dot and two places.
pub fn format_sum(value: Decimal) -> String {
    let rounded = value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    let mut out = rounded.to_string();
    match out.find('.') {
        None => out.push_str(".00"),
        Some(dot) if out.len() - dot == 2 => out.push('0'),
        Some(_) => {}
    }
    out
}

fn strip_currency_prefix(text: &str) -> &str {
    // "R$ 7,50", "US$ 10.00", "$10", "BRL 7,50": a leading run of letters and symbols.
    let start = text
        .char_indices()
        .find(|(_, c)| c.is_ascii_digit() || *c == '-' || *c == '+' || *c == '.' || *c == ',')
        .map_or(text.len(), |(i, _)| i);
    let prefix = &text[..start];
    if prefix.is_empty()
        || prefix
            .trim()
            .chars()
            .all(|c| c == '$' || c == '€' || c == '£')
        || matches!(prefix.trim(), "R$" | "US$" | "BRL" | "USD" | "EUR")
    {
        text[start..].trim_start()
    } else {
        // Letters we do not know ("abc", "NaN"): keep them so the caller rejects the text.
        text
    }
}

/// The separator of an ambiguous amount: exactly one separator, a non-zero integer part of one to
/// three digits before it (so it could group thousands) and exactly three digits after it.
fn ambiguous_separator(digits: &str) -> Option<char> {
    let mut seps = digits
        .char_indices()
        .filter(|(_, c)| matches!(c, '.' | ','));
    let (at, sep) = seps.next()?;
    if seps.next().is_some() {
        return None;
    }
    let (int, frac) = (&digits[..at], &digits[at + 1..]);
    let could_group = (1..=3).contains(&int.len()) && !int.starts_with('0');
    (could_group && frac.len() == 3 && frac.bytes().all(|b| b.is_ascii_digit())).then_some(sep)
}

/// The decimal separator an amount text shows, when it shows one: the last of two different
/// separators (`1.234,56`), a lone separator that is not ambiguous (`7,50`, `7.5`), or the other
/// one when a separator repeats (`1.234.567` groups with `.`, so `,` is decimal).
fn decimal_shown(text: &str) -> Option<char> {
    let (_, digits) = amount_digits(text).ok()?;
    if ambiguous_separator(digits).is_some() || finish_text((false, digits)).is_err() {
        return None;
    }
    match separators(digits)? {
        (Some(decimal), _) => Some(decimal),
        (None, Some('.')) => Some(','),
        (None, Some(_)) => Some('.'),
        (None, None) => None,
    }
}

/// What one order's own amounts say about how it writes money: the evidence an ambiguous amount
/// (`"1.500"`) is decided by. Computed once per order ([`Evidence::of`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The decimal separator the order's unambiguous amount texts show; `None` when none shows
    /// one or they disagree (a `"58.80"` next to a `"0,00"`).
    pub decimal: Option<char>,
}

impl Evidence {
    /// The evidence of these amount texts.
    pub fn from_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Evidence {
        let (mut dot, mut comma) = (false, false);
        for text in texts {
            match decimal_shown(text) {
                Some('.') => dot = true,
                Some(',') => comma = true,
                _ => {}
            }
        }
        Evidence {
            decimal: match (dot, comma) {
                (true, false) => Some('.'),
                (false, true) => Some(','),
                _ => None,
            },
        }
    }

    /// The evidence of every amount the order writes as text (totals, lines, payment, refunds,
    /// affiliate and net amounts; exchange rates are not money and are left out).
    pub fn of(order: &Order) -> Evidence {
        let mut raws: Vec<&RawAmount> = vec![
            &order.total_price,
            &order.subtotal_price,
            &order.total_tax,
            &order.total_discounts,
            &order.amount_net,
            &order.affiliate_amount,
        ];
        if let Some(payment) = &order.payment {
            raws.extend([&payment.amount, &payment.seller_split_amount]);
        }
        for item in &order.line_items {
            raws.extend([&item.price, &item.actual_price_paid]);
        }
        for refund in &order.refunds {
            raws.extend([&refund.total_amount, &refund.amount]);
        }
        Evidence::from_texts(raws.into_iter().filter_map(|raw| match raw {
            RawAmount::Text(text) => Some(text.as_str()),
            _ => None,
        }))
    }

    /// Reads a raw amount of this order (`None` when absent). An ambiguous text is decided by a
    /// numeric twin of the same amount in the payload (`twins`) that matches exactly one of its
    /// two readings, else by the decimal separator the order's other texts show (the ambiguous
    /// separator is decimal when it is that one, thousands otherwise), else refused.
    pub fn read(&self, raw: &RawAmount, twins: &[Decimal]) -> Option<Result<Decimal, AmountError>> {
        match raw {
            RawAmount::Text(text) => Some(self.read_text(text, twins)),
            other => parse_raw(other),
        }
    }

    fn read_text(&self, text: &str, twins: &[Decimal]) -> Result<Decimal, AmountError> {
        let (negative, digits) = amount_digits(text)?;
        let Some(sep) = ambiguous_separator(digits) else {
            return finish_text((negative, digits));
        };
        let as_decimal = finish_text((negative, &digits.replace(sep, ".")))?;
        let as_thousands = finish_text((negative, &digits.replace(sep, "")))?;
        let twin = |value: Decimal| twins.contains(&value);
        match (twin(as_decimal), twin(as_thousands)) {
            (true, false) => return Ok(as_decimal),
            (false, true) => return Ok(as_thousands),
            _ => {}
        }
        match self.decimal {
            Some(decimal) if decimal == sep => Ok(as_decimal),
            Some(_) => Ok(as_thousands),
            None => Err(AmountError::Ambiguous),
        }
    }
}

/// Reads `unformatted_total_price`, the total as a whole number of cents (`750` is 7.50).
pub fn parse_cents(raw: &RawAmount) -> Option<Result<Decimal, AmountError>> {
    let cents = match raw {
        RawAmount::Absent => return None,
        RawAmount::Number(text) => parse_amount_number(text),
        RawAmount::Text(text) if text.trim().bytes().all(|b| b.is_ascii_digit()) => {
            parse_amount_text(text)
        }
        RawAmount::Text(text) => parse_rate_text(text),
    };
    Some(cents.and_then(|c| {
        if c.fract().is_zero() {
            bounded(c / Decimal::ONE_HUNDRED)
        } else {
            Err(AmountError::NotWholeCents)
        }
    }))
}

/// The digits with `.` as the only separator, its decimal point: which separator is decimal,
/// the decimal part checked, the thousands groups checked and removed.
fn normalise_separators(digits: &str) -> Result<String, AmountError> {
    let (decimal_sep, group_sep) = match separators(digits) {
        None => return Ok(digits.to_owned()),
        Some(seps) => seps,
    };
    let (int_part, frac_part) = match decimal_sep {
        Some(sep) => {
            let at = digits.rfind(sep).unwrap_or(digits.len());
            (&digits[..at], Some(&digits[at + 1..]))
        }
        None => (digits, None),
    };
    if let Some(frac) = frac_part {
        if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AmountError::BadGrouping);
        }
    }
    let int_digits = ungroup(int_part, group_sep)?;
    let int_digits = if int_digits.is_empty() {
        "0".to_owned()
    } else {
        int_digits
    };
    Ok(match frac_part {
        Some(frac) => format!("{int_digits}.{frac}"),
        None => int_digits,
    })
}

/// The decimal and thousands separators the text uses; `None` when it has neither. Where both
/// appear the last is decimal; a lone one is decimal, a repeated one groups thousands.
fn separators(digits: &str) -> Option<(Option<char>, Option<char>)> {
    let alone = |sep: char| {
        if digits.matches(sep).count() == 1 {
            (Some(sep), None)
        } else {
            (None, Some(sep))
        }
    };
    match (digits.rfind('.'), digits.rfind(',')) {
        (None, None) => None,
        (Some(d), Some(c)) if d > c => Some((Some('.'), Some(','))),
        (Some(_), Some(_)) => Some((Some(','), Some('.'))),
        (Some(_), None) => Some(alone('.')),
        (None, Some(_)) => Some(alone(',')),
    }
}

/// The integer part's digits, its thousands groups (1-3 digits, then 3 each) checked.
fn ungroup(int_part: &str, group_sep: Option<char>) -> Result<String, AmountError> {
    match group_sep {
        Some(sep) if int_part.contains(sep) => {
            let groups: Vec<&str> = int_part.split(sep).collect();
            let first_ok = (1..=3).contains(&groups[0].len());
            let rest_ok = groups[1..].iter().all(|g| g.len() == 3);
            let all_digits = groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit()));
            if !(first_ok && rest_ok && all_digits) {
                return Err(AmountError::BadGrouping);
            }
            Ok(groups.concat())
        }
        _ => {
            if !int_part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AmountError::BadGrouping);
            }
            Ok(int_part.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn reads_the_shapes_cartpanda_sends() {
        let table = [
            ("7,50", "7.50"),
            ("7.5", "7.5"),
            ("197,00", "197.00"),
            ("1.234,56", "1234.56"),
            ("1,234.56", "1234.56"),
            ("1.234.567,89", "1234567.89"),
            ("1,234,567.89", "1234567.89"),
            ("1.234.567", "1234567"),
            ("1,234,567", "1234567"),
            ("97", "97"),
            ("  97.00 ", "97.00"),
            ("R$ 1.234,56", "1234.56"),
            ("R$7,50", "7.50"),
            ("US$ 10.00", "10.00"),
            ("0,99", "0.99"),
            (",50", "0.50"),
            ("0", "0"),
            ("-0,00", "0.00"),
            ("+5", "5"),
        ];
        for (input, expected) in table {
            assert_eq!(parse_amount_text(input), Ok(d(expected)), "input {input:?}");
        }
    }

    #[test]
    fn rejects_what_is_not_an_amount() {
        let table = [
            ("", AmountError::Empty),
            ("   ", AmountError::Empty),
            ("abc", AmountError::NotANumber),
            ("NaN", AmountError::NotANumber),
            ("Infinity", AmountError::NotANumber),
            ("1e309", AmountError::NotANumber),
            ("1e3", AmountError::NotANumber),
            ("-5,00", AmountError::Negative),
            ("- 5", AmountError::Negative),
            ("1.2.3,4", AmountError::BadGrouping),
            ("12,34,5.6", AmountError::BadGrouping),
            ("1.234,5.6", AmountError::BadGrouping),
            ("7,", AmountError::BadGrouping),
            ("..", AmountError::NotANumber),
            ("R$", AmountError::Empty),
            ("0x10", AmountError::NotANumber),
            ("99999999999999999999999999999999", AmountError::OutOfRange),
        ];
        for (input, expected) in table {
            assert_eq!(parse_amount_text(input), Err(expected), "input {input:?}");
        }
        assert_eq!(
            parse_amount_text(&"9".repeat(41)),
            Err(AmountError::TooLong)
        );
    }

    #[test]
    fn a_lone_separator_before_three_digits_is_ambiguous_never_guessed() {
        for text in ["1.500", "1,500", "R$ 1.500", "12,345", "999.999"] {
            assert_eq!(
                parse_amount_text(text),
                Err(AmountError::Ambiguous),
                "{text}"
            );
        }
        // Not ambiguous: no integer part that could group thousands, or other separators.
        for (text, value) in [
            ("0.500", "0.5"),
            ("0,174", "0.174"),
            ("1234.567", "1234.567"),
            ("1.500,00", "1500"),
            ("1,500.00", "1500"),
            ("1.500.000", "1500000"),
            ("1.50", "1.5"),
        ] {
            assert_eq!(parse_amount_text(text), Ok(d(value)), "{text}");
        }
        // Rates are not money: a lone separator is decimal.
        assert_eq!(parse_rate_text("1.085"), Ok(d("1.085")));
        assert_eq!(parse_rate_text("0.17412300"), Ok(d("0.174123")));
    }

    #[test]
    fn the_orders_evidence_decides_an_ambiguous_amount() {
        let text = |t: &str| RawAmount::Text(t.to_owned());
        let comma = Evidence::from_texts(["7,50", "0,00"]);
        let dot = Evidence::from_texts(["7.50", "1,234.56"]);
        let none = Evidence::from_texts(["1.500", "97"]);
        let mixed = Evidence::from_texts(["58.80", "0,00"]);
        assert_eq!(comma.decimal, Some(','));
        assert_eq!(dot.decimal, Some('.'));
        assert_eq!(Evidence::from_texts(["1.234.567"]).decimal, Some(','));
        assert_eq!(none.decimal, None);
        assert_eq!(mixed.decimal, None);
        let read = |e: &Evidence, t: &str, twins: &[Decimal]| e.read(&text(t), twins).unwrap();
        // The writing: the ambiguous separator is thousands when the other one is decimal.
        assert_eq!(read(&comma, "1.500", &[]), Ok(d("1500")));
        assert_eq!(read(&comma, "1,500", &[]), Ok(d("1.5")));
        assert_eq!(read(&dot, "1,500", &[]), Ok(d("1500")));
        assert_eq!(read(&dot, "1.500", &[]), Ok(d("1.5")));
        // A numeric twin matching one reading decides first.
        assert_eq!(read(&none, "1.500", &[d("1500")]), Ok(d("1500")));
        assert_eq!(read(&comma, "1.500", &[d("1.5")]), Ok(d("1.5")));
        // Nothing decides: refused.
        assert_eq!(
            read(&none, "1.500", &[d("15")]),
            Err(AmountError::Ambiguous)
        );
        assert_eq!(read(&mixed, "1,500", &[]), Err(AmountError::Ambiguous));
        assert_eq!(read(&none, "-1.500", &[]), Err(AmountError::Negative));
        assert_eq!(
            none.read(&RawAmount::Number("1.5".into()), &[]),
            Some(Ok(d("1.5")))
        );
        // Cents.
        assert_eq!(
            parse_cents(&RawAmount::Number("750".into())),
            Some(Ok(d("7.50")))
        );
        assert_eq!(parse_cents(&text("123456")), Some(Ok(d("1234.56"))));
        assert_eq!(
            parse_cents(&RawAmount::Number("7.5".into())),
            Some(Err(AmountError::NotWholeCents))
        );
        assert_eq!(parse_cents(&RawAmount::Absent), None);
    }

    #[test]
    fn reads_json_numbers_exactly() {
        assert_eq!(parse_amount_number("7.5"), Ok(d("7.5")));
        assert_eq!(parse_amount_number("1234.56"), Ok(d("1234.56")));
        assert_eq!(parse_amount_number("0.1"), Ok(d("0.1")));
        assert_eq!(parse_amount_number("97"), Ok(d("97")));
        assert_eq!(parse_amount_number("1e2"), Ok(d("100")));
        assert_eq!(parse_amount_number("-5"), Err(AmountError::Negative));
        assert_eq!(parse_amount_number("1e300"), Err(AmountError::OutOfRange));
        // Found by `make fuzz` (money target): a JSON number whose two-place sum has more digits
        // than a Decimal holds, so the sum did not read back.
        assert_eq!(parse_amount_number("1.13e28"), Err(AmountError::OutOfRange));
        assert_eq!(
            parse_amount_text("1000000000001"),
            Err(AmountError::OutOfRange)
        );
        assert_eq!(parse_amount_number("1e12"), Ok(d("1000000000000")));
    }

    #[test]
    fn formats_sum_with_two_places() {
        let table = [
            ("1234.56", "1234.56"),
            ("7.5", "7.50"),
            ("97", "97.00"),
            ("0", "0.00"),
            ("0.005", "0.01"),
            ("10.994", "10.99"),
            ("10.995", "11.00"),
            ("1234567.891", "1234567.89"),
        ];
        for (input, expected) in table {
            assert_eq!(format_sum(d(input)), expected, "input {input}");
        }
    }

    proptest::proptest! {
        #[test]
        fn brazilian_and_plain_formats_agree(cents in 0u64..10_000_000_000) {
            let value = Decimal::new(cents as i64, 2);
            let plain = format_sum(value);
            let (int, frac) = plain.split_once('.').unwrap();
            let mut grouped = String::new();
            for (i, ch) in int.chars().enumerate() {
                if i > 0 && (int.len() - i) % 3 == 0 {
                    grouped.push('.');
                }
                grouped.push(ch);
            }
            let brazilian = format!("{grouped},{frac}");
            proptest::prop_assert_eq!(parse_amount_text(&brazilian), Ok(value));
            proptest::prop_assert_eq!(parse_amount_text(&plain), Ok(value));
            proptest::prop_assert_eq!(format_sum(parse_amount_text(&brazilian).unwrap()), plain);
        }

        #[test]
        fn never_panics_on_any_text(s in "\\PC{0,48}") {
            let _ = parse_amount_text(&s);
        }
    }
}
