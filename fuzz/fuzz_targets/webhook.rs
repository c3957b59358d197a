//! Any request body: parsing, classification and rendering never panic; every rendered postback
//! is a valid URL whose click ID and event ID read back exactly.
#![no_main]

use cartpanda_redtrack::conversion::fields;
use cartpanda_redtrack::postback::values::MacroContext;
use cartpanda_redtrack::conversion::classify::{self, Decision};
use cartpanda_redtrack::conversion::rules::Rules;
use cartpanda_redtrack::postback::template::PostbackTemplate;
use cartpanda_redtrack::inbound::webhook;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(delivery) = webhook::parse(data) else { return };
    let template = PostbackTemplate::parse(
        "https://trk.example.com/postback?clickid={cid}&sum={total_price}&fname={first_name}&lname={last_name}\
         &phone={phone_number}&email={email}&contentid={product_id}&product={product_name}&d={datetime_full}\
         &u={upsell_no}&c={currency}&n={amount_net}&a={amount_affiliate}&s={conversion_status}",
        false,
    )
    .expect("the fixed template parses");
    for rules in [Rules::default(), Rules { send_test_orders: true, ..Rules::default() }] {
        let Ok(classified) = classify::classify(&delivery, &rules) else { continue };
        let Decision::Convert(conversions) = &classified.decision else { continue };
        let order = classified.order.expect("conversions come with their order");
        let order_id = classified.order_id.as_deref().expect("conversions come with an order ID");
        for conversion in conversions {
            assert!(conversion.amount >= rust_decimal_zero(), "negative amount");
            let ctx = MacroContext { order, order_id, conversion, random: 1, normalize: true };
            let url = template.render(|m| ctx.value(m));
            let reparsed = url::Url::parse(url.as_str()).expect("a rendered postback is a URL");
            let clickid = reparsed.query_pairs().find(|(k, _)| k == "clickid").map(|(_, v)| v.into_owned());
            assert_eq!(clickid.as_deref(), fields::click_id(order).ok().flatten());
            let event_id = reparsed.query_pairs().find(|(k, _)| k == "rdtk_event_id").map(|(_, v)| v.into_owned());
            assert_eq!(event_id.as_deref(), Some(conversion.event_id.as_str()));
            let _ = classify::fingerprint(order, conversion);
        }
    }
});

fn rust_decimal_zero() -> rust_decimal::Decimal {
    rust_decimal::Decimal::ZERO
}
