//! Any text as an amount: never panics; what parses is non-negative and survives formatting.
#![no_main]

use cartpanda_redtrack::inbound::money::{format_sum, parse_amount_number, parse_amount_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for parsed in [parse_amount_text(text), parse_amount_number(text)] {
        if let Ok(value) = parsed {
            assert!(value >= rust_decimal::Decimal::ZERO, "negative amount from {text:?}");
            let sum = format_sum(value);
            let (int, frac) = sum.split_once('.').expect("a dot");
            assert_eq!(frac.len(), 2, "two places in {sum}");
            assert!(int.bytes().all(|b| b.is_ascii_digit()), "plain digits in {sum}");
            assert_eq!(parse_amount_text(&sum).map(format_sum), Ok(sum.clone()), "{sum} reads back");
        }
    }
});
