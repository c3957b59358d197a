//! Money and quantities, never a silent guess (issue 14): the total in cents decides, an
//! ambiguous amount is decided by the order's own evidence or refused, quantities are read or
//! refused, and `{amount_net}` / `{amount_affiliate}` follow the sum's currency. Pure: no table, no network.

mod common;

use cartpanda_redtrack::conversion::classify::{self, Decision};
use cartpanda_redtrack::conversion::rules::{Reject, Rules};
use cartpanda_redtrack::inbound::webhook;
use cartpanda_redtrack::postback::template::Macro;
use cartpanda_redtrack::postback::values::MacroContext;
use common::{paid_order, upsell_order};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;

/// (event ID, sum) of each conversion, or the refusal's message; panics on a skip.
fn sums(body: &Value, rules: &Rules) -> Result<Vec<(String, String)>, String> {
    let text = body.to_string();
    let delivery = webhook::parse(text.as_bytes()).expect("parses");
    converted(&delivery, rules)
}

fn converted(delivery: &webhook::Delivery, rules: &Rules) -> Result<Vec<(String, String)>, String> {
    let classified = classify::classify(delivery, rules).map_err(|e| e.to_string())?;
    let Decision::Convert(conversions) = &classified.decision else {
        return Ok(Vec::new());
    };
    Ok(conversions
        .iter()
        .map(|c| {
            let ctx = MacroContext {
                order: classified.order.unwrap(),
                order_id: "x",
                conversion: c,
                random: 0,
                normalize: true,
            };
            (
                c.event_id.clone(),
                ctx.value(Macro::TotalPrice).into_owned(),
            )
        })
        .collect())
}

fn sum(body: &Value) -> Result<String, String> {
    sums(body, &Rules::default()).map(|v| v[0].1.clone())
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[test]
fn the_total_in_cents_decides_and_a_disagreeing_formatted_total_is_reported() {
    let mut body = paid_order(60);
    body["order"]["unformatted_total_price"] = json!(123400);
    assert_eq!(
        sum(&body),
        Ok("1234.00".into()),
        "the cents win over \"1.234,56\""
    );
    let text = body.to_string();
    let delivery = webhook::parse(text.as_bytes()).unwrap();
    let classified = classify::classify(&delivery, &Rules::default()).unwrap();
    assert_eq!(
        classified.total_disagreement,
        Some((d("1234.56"), d("1234.00"))),
        "the bridge logs both values"
    );
    // Within a cent: no disagreement.
    body["order"]["unformatted_total_price"] = json!(123456);
    let text = body.to_string();
    let delivery = webhook::parse(text.as_bytes()).unwrap();
    assert_eq!(
        classify::classify(&delivery, &Rules::default())
            .unwrap()
            .total_disagreement,
        None
    );
    // The cents decide an ambiguous formatted total, and stand alone when it is missing.
    body["order"]["total_price"] = json!("1.500");
    body["order"]["unformatted_total_price"] = json!(150000);
    assert_eq!(sum(&body), Ok("1500.00".into()));
    body["order"].as_object_mut().unwrap().remove("total_price");
    body["order"]["unformatted_total_price"] = json!("750");
    assert_eq!(sum(&body), Ok("7.50".into()));
    // Cents that are not whole cents are refused, naming the field.
    body["order"]["unformatted_total_price"] = json!(7.5);
    assert_eq!(
        sum(&body),
        Err("`order.unformatted_total_price` is not a whole number of cents".into())
    );
}

/// A paid order whose only amount texts are the ones given (line price and payment numeric or
/// absent), and no cents.
fn bare_order(id: u64, total: Value) -> Value {
    let mut body = paid_order(id);
    body["order"]["total_price"] = total;
    body["order"]["line_items"][0]["price"] = json!(15);
    body["order"]["payment"] = json!({"currency": "BRL"});
    body
}

#[test]
fn an_ambiguous_amount_is_decided_by_the_orders_own_evidence_or_refused() {
    // (a) A numeric twin: payment.amount.
    let mut twin = bare_order(61, json!("1.500"));
    twin["order"]["payment"]["amount"] = json!(1500);
    assert_eq!(sum(&twin), Ok("1500.00".into()), "not 1.50");
    twin["order"]["total_price"] = json!("1,500");
    assert_eq!(sum(&twin), Ok("1500.00".into()));
    // (b) The way the order's other amounts are written.
    let mut brazilian = bare_order(62, json!("1.500"));
    brazilian["order"]["subtotal_price"] = json!("1.500,00");
    assert_eq!(sum(&brazilian), Ok("1500.00".into()));
    brazilian["order"]["total_price"] = json!("1,500");
    assert_eq!(
        sum(&brazilian),
        Ok("1.50".into()),
        "`,` is this order's decimal"
    );
    let mut international = bare_order(63, json!("1,500"));
    international["order"]["total_discounts"] = json!("7.50");
    assert_eq!(sum(&international), Ok("1500.00".into()));
    // A line's numeric price decides the line, not the total (lines need not add up: a
    // discounted front offer of 15 under a total of 7,50).
    let mut upsell = upsell_order(64, false);
    upsell["order"]["line_items"][1]["price"] = json!("1.097");
    upsell["order"]["line_items"][1]["actual_price_paid"] = json!(1097);
    upsell["order"]["line_items"][1]["quantity"] = json!(1);
    assert_eq!(
        sums(&upsell, &Rules::default()).unwrap()[0].1,
        "1097.00",
        "the line's own numeric twin"
    );
    // Nothing decides: 422 naming the field.
    let refused = "`order.total_price` is ambiguous: one separator followed by three digits reads as thousands or as decimals, and the order's other amounts do not decide which";
    assert_eq!(sum(&bare_order(65, json!("1.500"))), Err(refused.into()));
    let mut mixed = bare_order(66, json!("1.500"));
    mixed["order"]["affiliate_amount"] = json!("58.80");
    mixed["order"]["total_discounts"] = json!("0,00");
    assert_eq!(
        sum(&mixed),
        Err(refused.into()),
        "the writing disagrees with itself"
    );
    // Exchange rates are not money: a rate of "1.085" is a rate.
    let mut rate = bare_order(67, json!("100,00"));
    rate["order"]["exchange_rate_USD"] = json!("1.085");
    let usd = Rules {
        sum_currency: Some("USD".into()),
        ..Rules::default()
    };
    assert_eq!(sums(&rate, &usd).unwrap()[0].1, "108.50");
}

#[test]
fn quantities_are_read_or_refused_never_silently_one() {
    let with_quantity = |q: Value| {
        let mut body = upsell_order(70, false);
        match q {
            Value::Null => {
                body["order"]["line_items"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("quantity");
            }
            q => body["order"]["line_items"][1]["quantity"] = q,
        }
        sums(&body, &Rules::default())
    };
    assert_eq!(
        with_quantity(Value::Null),
        Ok(vec![("70-upsell-90002".into(), "97.00".into())]),
        "missing counts as 1"
    );
    assert_eq!(
        with_quantity(json!("3")),
        Ok(vec![("70-upsell-90002".into(), "291.00".into())])
    );
    assert_eq!(
        with_quantity(json!(0)),
        Ok(vec![]),
        "an upsell line of quantity 0 converts nothing"
    );
    for (q, why) in [
        (json!(2.5), "is not a whole number"),
        (json!("1,5"), "is not a number"),
        (json!(-1), "is negative"),
        (json!("two"), "is not a number"),
        (json!(10_001), "is over 10000"),
    ] {
        assert_eq!(
            with_quantity(q.clone()),
            Err(format!("`order.line_items[1].quantity` {why}")),
            "{q}"
        );
    }
    // The purchase subtracts upsell lines by their quantity, refusing the same way.
    let mut paid = upsell_order(71, false);
    paid["event"] = json!("order.paid");
    paid["order"]["line_items"][1]["quantity"] = json!(0);
    assert_eq!(sum(&paid), Ok("1428.56".into()), "0 × 97 subtracted");
    paid["order"]["line_items"][1]["quantity"] = json!(1e6);
    assert!(matches!(
        classify::classify(
            &webhook::parse(paid.to_string().as_bytes()).unwrap(),
            &Rules::default()
        ),
        Err(Reject::Quantity { .. })
    ));
}

#[test]
fn amount_net_and_affiliate_follow_the_sums_currency() {
    let mut body = paid_order(80);
    body["order"]["currency"] = json!("USD");
    body["order"]["total_price"] = json!("500,00");
    body["order"]["line_items"][0]["price"] = json!("500,00");
    body["order"]["exchange_rate_USD"] = json!("0.19863300");
    body["order"]["payment"] = json!({"amount": 500.0, "currency": "BRL"});
    body["order"]["shop_info"] = json!({"settings_general": {"base_currency": "BRL"}});
    body["order"]["amount_net"] = json!("400,00");
    body["order"]["affiliate_amount"] = json!(100);
    let macros = |body: &Value, rules: &Rules| {
        let text = body.to_string();
        let delivery = webhook::parse(text.as_bytes()).unwrap();
        let classified = classify::classify(&delivery, rules).unwrap();
        let Decision::Convert(conversions) = &classified.decision else {
            panic!("converts")
        };
        let ctx = MacroContext {
            order: classified.order.unwrap(),
            order_id: "80",
            conversion: &conversions[0],
            random: 0,
            normalize: true,
        };
        [
            Macro::TotalPrice,
            Macro::AmountNet,
            Macro::AmountAffiliate,
            Macro::Currency,
        ]
        .map(|m| ctx.value(m).into_owned())
    };
    assert_eq!(
        macros(&body, &Rules::default()),
        ["500.00", "400.00", "100.00", "BRL"]
    );
    let usd = Rules {
        sum_currency: Some("USD".into()),
        ..Rules::default()
    };
    // 400 × 0.198633 = 79.4532; 100 × 0.198633 = 19.8633.
    assert_eq!(macros(&body, &usd), ["99.32", "79.45", "19.86", "USD"]);
    // Read with the order's evidence: this order writes "500,00", so "1.500" is 1500.
    body["order"]["amount_net"] = json!("1.500");
    assert_eq!(macros(&body, &Rules::default())[1], "1500.00");
    body["order"]["total_price"] = json!(500);
    body["order"]["line_items"][0]["price"] = json!(500);
    assert_eq!(
        macros(&body, &Rules::default())[1],
        "",
        "nothing decides: empty, never guessed"
    );
}
