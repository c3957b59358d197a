//! Classification of each Cartpanda event into RedTrack conversions, and the macro values each
//! conversion renders. Pure: no store, no network.

mod common;

use cartpanda_redtrack::conversion::classify::{self, Decision};
use cartpanda_redtrack::conversion::rules;
use cartpanda_redtrack::conversion::rules::{CartxTestOrders, Kind, Reject, Rules, Skip};
use cartpanda_redtrack::inbound::webhook;
use cartpanda_redtrack::postback::template::Macro;
use cartpanda_redtrack::postback::values::MacroContext;
use common::{paid_order, refund_order, upsell_order};
use serde_json::{Value, json};

/// (event_id, type, sum, products) of one conversion.
type Row = (String, String, String, String);

fn rules() -> Rules {
    Rules::default()
}

/// (event_id, type, sum, products) of each conversion, or the skip reason.
fn classify(body: &Value, rules: &Rules) -> Result<Result<Vec<Row>, Skip>, Reject> {
    let text = body.to_string();
    let delivery = webhook::parse(text.as_bytes()).expect("parses");
    let classified = classify::classify(&delivery, rules)?;
    Ok(match classified.decision {
        Decision::Skip(reason) => Err(reason),
        Decision::Convert(conversions) => Ok(conversions
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
                    c.conversion_type.clone(),
                    ctx.value(Macro::TotalPrice).into_owned(),
                    ctx.value(Macro::ProductId).into_owned(),
                )
            })
            .collect()),
    })
}

fn one(event_id: &str, kind: &str, sum: &str, products: &str) -> Vec<Row> {
    vec![(event_id.into(), kind.into(), sum.into(), products.into())]
}

#[test]
fn paid_is_one_purchase_of_the_order_total_with_front_items_only() {
    assert_eq!(
        classify(&paid_order(10), &rules()),
        Ok(Ok(one("10-purchase", "Purchase", "1234.56", "22264700")))
    );
    // Delivered late, after an upsell was added: the front sale only, so it matches the first.
    let mut body = upsell_order(10, false);
    body["event"] = json!("order.paid");
    assert_eq!(
        classify(&body, &rules()),
        Ok(Ok(one("10-purchase", "Purchase", "1234.56", "22264700")))
    );
}

#[test]
fn upsell_is_one_conversion_per_upsell_line_with_its_own_sum() {
    let got = classify(&upsell_order(11, true), &rules())
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        vec![
            (
                "11-upsell-90002".into(),
                "Upsell".into(),
                "194.00".into(),
                "22264763".into()
            ),
            (
                "11-upsell-90003".into(),
                "Upsell".into(),
                "19.90".into(),
                "22264763".into()
            ),
        ]
    );
    let mut no_upsell = paid_order(11);
    no_upsell["event"] = json!("order.upsell");
    assert_eq!(classify(&no_upsell, &rules()), Ok(Err(Skip::NoUpsellItems)));
}

#[test]
fn refunds_take_each_refund_record_else_refunded_items_else_the_total() {
    assert_eq!(
        classify(&refund_order(12), &rules()),
        Ok(Ok(one("12-refund-777", "Refund", "1234.56", "22264700")))
    );

    let mut two = refund_order(12);
    two["order"]["refunds"] = json!([{"total_amount": 10.5}, {"total_amount": "2,25"}]);
    let got = classify(&two, &rules()).unwrap().unwrap();
    assert_eq!(
        got.iter()
            .map(|c| (c.0.as_str(), c.2.as_str()))
            .collect::<Vec<_>>(),
        [("12-refund-1", "10.50"), ("12-refund-2", "2.25")]
    );

    let mut items = upsell_order(12, true);
    items["event"] = json!("order.refunded");
    items["order"]["line_items"][1]["is_refunded"] = json!(1);
    items["order"]["line_items"][1]["refunded_quantity"] = json!(1);
    assert_eq!(
        classify(&items, &rules()),
        Ok(Ok(one("12-refund-1", "Refund", "97.00", "22264763")))
    );

    let mut full = paid_order(12);
    full["event"] = json!("order.refunded");
    assert_eq!(
        classify(&full, &rules()),
        Ok(Ok(one("12-refund-1", "Refund", "1234.56", "22264700")))
    );
}

#[test]
fn chargeback_by_event_or_by_flag_in_order_updated() {
    let mut by_event = paid_order(13);
    by_event["event"] = json!("order.chargeback");
    assert_eq!(
        classify(&by_event, &rules()),
        Ok(Ok(one(
            "13-chargeback",
            "Chargeback",
            "1234.56",
            "22264700"
        )))
    );
    let mut by_flag = paid_order(13);
    by_flag["event"] = json!("order.updated");
    by_flag["order"]["chargeback_received"] = json!("1");
    assert_eq!(
        classify(&by_flag, &rules()),
        Ok(Ok(one(
            "13-chargeback",
            "Chargeback",
            "1234.56",
            "22264700"
        )))
    );
    by_flag["order"]["chargeback_received"] = json!(0);
    assert_eq!(classify(&by_flag, &rules()), Ok(Err(Skip::NotAChargeback)));
}

#[test]
fn conversion_types_are_configurable_and_unlisted_events_skip() {
    let custom = Rules {
        conversion_types: rules::ConversionTypes::parse("order.paid=Sale,order.created=Pending")
            .unwrap(),
        ..Rules::default()
    };
    assert_eq!(
        classify(&paid_order(14), &custom),
        Ok(Ok(one("14-purchase", "Sale", "1234.56", "22264700")))
    );
    let mut created = paid_order(14);
    created["event"] = json!("order.created");
    assert_eq!(
        classify(&created, &custom),
        Ok(Ok(one("14-created", "Pending", "1234.56", "22264700")))
    );
    assert_eq!(
        classify(&refund_order(14), &custom),
        Ok(Err(Skip::EventNotMapped))
    );
}

#[test]
fn test_orders_skip_unless_enabled() {
    let mut body = paid_order(15);
    body["order"]["test"] = json!(true);
    assert_eq!(classify(&body, &rules()), Ok(Err(Skip::TestOrder)));
    let send = Rules {
        send_test_orders: true,
        ..Rules::default()
    };
    assert_eq!(
        classify(&body, &send),
        Ok(Ok(one("15-purchase", "Purchase", "1234.56", "22264700")))
    );
}

/// The `{is_test}` value of each conversion a delivery makes under `rules`, or the skip.
fn is_test_macro(body: &Value, rules: &Rules) -> Result<Vec<String>, Skip> {
    let text = body.to_string();
    let delivery = webhook::parse(text.as_bytes()).unwrap();
    let classified = classify::classify(&delivery, rules).unwrap();
    let conversions = match &classified.decision {
        Decision::Convert(conversions) => conversions,
        Decision::Skip(reason) => return Err(*reason),
    };
    Ok(conversions
        .iter()
        .map(|conversion| {
            MacroContext {
                order: classified.order.unwrap(),
                order_id: "16",
                conversion,
                random: 1,
                normalize: true,
            }
            .value(Macro::IsTest)
            .into_owned()
        })
        .collect())
}

#[test]
fn cartx_test_alone_is_a_sale_by_default_and_a_test_under_skip() {
    let mut body = paid_order(16);
    body["order"]["is_cartx_test"] = json!(1);
    body["order"]["test"] = json!(0);
    // Default (`CARTX_TEST_ORDERS=send`): a sale, and `{is_test}` agrees.
    assert_eq!(is_test_macro(&body, &rules()), Ok(vec!["0".to_owned()]));
    let skip = Rules {
        cartx_test_orders: CartxTestOrders::Skip,
        ..Rules::default()
    };
    assert_eq!(is_test_macro(&body, &skip), Err(Skip::TestOrder));
    let skip_but_send_tests = Rules {
        send_test_orders: true,
        ..skip.clone()
    };
    assert_eq!(
        is_test_macro(&body, &skip_but_send_tests),
        Ok(vec!["1".to_owned()])
    );
    // `test` = 1 stays a test order, whatever the cartx setting.
    body["order"]["test"] = json!(1);
    assert_eq!(is_test_macro(&body, &rules()), Err(Skip::TestOrder));
    assert_eq!(is_test_macro(&body, &skip), Err(Skip::TestOrder));
    assert_eq!(
        CartxTestOrders::parse(" SKIP "),
        Ok(CartxTestOrders::Skip),
        "any case, trimmed"
    );
    assert!(CartxTestOrders::parse("maybe").is_err());
}

#[test]
fn order_ids_and_amounts_are_checked() {
    let cases: Vec<(Value, &str)> = vec![
        (json!(0), "`order.id` must not be zero"),
        (json!(-5), "`order.id` must not be negative"),
        (json!(12.5), "`order.id` must be a whole number"),
        (json!(1e30), "`order.id` is too large"),
        (json!("99999999999999999999999"), "`order.id` is too large"),
        (json!("abc"), "`order.id` must be a whole number"),
        (json!(null), "`order.id` is missing"),
        (json!({"a": 1}), "`order.id` must be a number"),
    ];
    for (id, message) in cases {
        let mut body = paid_order(1);
        body["order"]["id"] = id.clone();
        let err = classify(&body, &rules()).unwrap_err();
        assert!(err.to_string().starts_with(message), "{id}: {err}");
    }
    let mut string_id = paid_order(1);
    string_id["order"]["id"] = json!("0048213577");
    assert_eq!(
        classify(&string_id, &rules()).unwrap().unwrap()[0].0,
        "48213577-purchase"
    );

    for (amount, message) in [
        (json!("abc"), "is not a number"),
        (json!("NaN"), "is not a number"),
        (json!("1e309"), "is not a number"),
        (json!("-5,00"), "is negative"),
        (json!(-5), "is negative"),
        (json!("1.2.3,4"), "misplaced thousands"),
        (json!(""), "is empty"),
        (json!(null), "is missing"),
        (json!("9999999999999,00"), "out of range"),
    ] {
        let mut body = paid_order(1);
        body["order"]["total_price"] = amount.clone();
        let err = classify(&body, &rules()).unwrap_err().to_string();
        assert!(
            err.starts_with("`order.total_price` ") && err.contains(message),
            "{amount}: {err}"
        );
    }
}

#[test]
fn click_ids_are_checked() {
    for (cid, expected) in [
        (json!("abc&def=1"), Some("characters")),
        (json!("abc\ndef"), Some("characters")),
        (json!("x".repeat(5000)), Some("too long")),
        (json!("67d42f3b9a1e5c0012ab34cd"), None),
    ] {
        let mut body = paid_order(1);
        body["order"]["checkout_params"]["cid"] = cid;
        match (classify(&body, &rules()), expected) {
            (Err(Reject::ClickIdInvalid(msg)), Some(part)) => assert!(msg.contains(part)),
            (Ok(Ok(_)), None) => {}
            (other, _) => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn macros_take_the_conversions_own_values_with_fallbacks() {
    let mut body = upsell_order(20, false);
    body["order"]["customer"] =
        json!({"full_name": "  Maria   das Dores ", "email": null, "phone": ""});
    body["order"]["email"] = json!("maria@example.com");
    body["order"]["phone"] = json!("11 91234-5678");
    body["order"]["shop_info"] = json!({"settings_general": {"base_currency": "BRL"}});
    body["order"]["currency"] = json!("USD");
    body["order"]["affiliate_amount"] = json!("2.20");
    body["order"]["line_items"][1]["up_sell_type"] = json!("Downsell 1");
    let text = body.to_string();
    let delivery = webhook::parse(text.as_bytes()).unwrap();
    let classified = classify::classify(&delivery, &rules()).unwrap();
    let Decision::Convert(conversions) = &classified.decision else {
        panic!()
    };
    assert_eq!(conversions[0].kind, Kind::Upsell);
    let ctx = MacroContext {
        order: classified.order.unwrap(),
        order_id: "20",
        conversion: &conversions[0],
        random: 7,
        normalize: true,
    };
    let v = |m| ctx.value(m).into_owned();
    assert_eq!(v(Macro::OrderId), "20");
    assert_eq!(v(Macro::FirstName), "Maria");
    assert_eq!(v(Macro::LastName), "das Dores");
    assert_eq!(v(Macro::Email), "maria@example.com");
    assert_eq!(v(Macro::PhoneNumber), "+5511912345678");
    assert_eq!(v(Macro::Currency), "BRL");
    assert_eq!(v(Macro::AmountAffiliate), "2.20");
    assert_eq!(v(Macro::ProductName), "Kit 3 meses");
    assert_eq!(v(Macro::OrderType), "downsell");
    assert_eq!(v(Macro::UpsellNo), "1");
    assert_eq!(v(Macro::ConversionStatus), "approved");
    assert_eq!(v(Macro::DatetimeUnix), "1741959835");
    assert_eq!(v(Macro::DatetimeUtc), "2025-03-14 13:43:55");
    assert_eq!(v(Macro::IsTest), "0");
    assert_eq!(v(Macro::Country), "BR");
    assert_eq!(v(Macro::ShopSlug), "vitalidade-natural");
    assert_eq!(v(Macro::UtmSource), "facebook");
    assert_eq!(v(Macro::Src), "fb-ads");
    assert_eq!(v(Macro::Gclid), "");
    assert_eq!(v(Macro::Random), "7");
    assert_eq!(v(Macro::EventId), "20-upsell-90002");
}

/// Declared change of issue 13: a day that does not exist (31 February) counts as no date, so the
/// `{datetime_*}` macros are empty, as for a missing date.
#[test]
fn an_impossible_date_leaves_the_datetime_macros_empty_like_a_missing_one() {
    let values = |date: Value| {
        let mut body = paid_order(21);
        for field in ["processed_at", "created_at", "updated_at"] {
            body["order"][field] = date.clone();
        }
        let text = body.to_string();
        let delivery = webhook::parse(text.as_bytes()).unwrap();
        let classified = classify::classify(&delivery, &rules()).unwrap();
        let Decision::Convert(conversions) = &classified.decision else {
            panic!()
        };
        let ctx = MacroContext {
            order: classified.order.unwrap(),
            order_id: "21",
            conversion: &conversions[0],
            random: 0,
            normalize: true,
        };
        [Macro::DatetimeUnix, Macro::DatetimeUtc, Macro::DatetimeFull]
            .map(|m| ctx.value(m).into_owned())
    };
    assert_eq!(values(json!(null)), ["", "", ""]);
    assert_eq!(values(json!("2025-02-31 13:43:55")), ["", "", ""]);
    assert_eq!(values(json!("2025-02-31T13:43:55.000000Z")), ["", "", ""]);
    assert_eq!(
        values(json!("2025-02-28 13:43:55")),
        [
            "1740750235",
            "2025-02-28 13:43:55",
            "2025-02-28T13:43:55+00:00"
        ]
    );
}

/// The multi-currency trap: a BRL store selling in USD says `currency: "USD"` while every amount
/// is in BRL; the payload carries the BRL→USD rate.
fn brl_store_selling_in_usd(id: u64) -> Value {
    let mut body = paid_order(id);
    body["order"]["currency"] = json!("USD");
    body["order"]["total_price"] = json!("500,00");
    body["order"]["line_items"][0]["price"] = json!("500,00");
    body["order"]["exchange_rate_USD"] = json!("0.19863300");
    body["order"]["payment"] =
        json!({"amount": 500.0, "currency": "BRL", "actual_exchange_rate": 0.198633});
    body["order"]["shop_info"] =
        json!({"settings_general": {"base_currency": "BRL", "currency": "USD"}});
    body
}

fn sum_and_currency(body: &Value, rules: &Rules) -> Result<(String, String), Skip> {
    let text = body.to_string();
    let delivery = webhook::parse(text.as_bytes()).unwrap();
    let classified = classify::classify(&delivery, rules).unwrap();
    match &classified.decision {
        Decision::Skip(reason) => Err(*reason),
        Decision::Convert(conversions) => {
            let ctx = MacroContext {
                order: classified.order.unwrap(),
                order_id: "x",
                conversion: &conversions[0],
                random: 0,
                normalize: true,
            };
            Ok((
                ctx.value(Macro::TotalPrice).into_owned(),
                ctx.value(Macro::Currency).into_owned(),
            ))
        }
    }
}

fn in_currency(target: &str) -> Rules {
    Rules {
        sum_currency: Some(target.to_owned()),
        ..Rules::default()
    }
}

#[test]
fn amounts_are_in_the_stores_base_currency_not_the_order_currency() {
    let body = brl_store_selling_in_usd(30);
    assert_eq!(
        sum_and_currency(&body, &rules()),
        Ok(("500.00".into(), "BRL".into()))
    );
    assert_eq!(
        sum_and_currency(&body, &in_currency("BRL")),
        Ok(("500.00".into(), "BRL".into()))
    );
    // 500 BRL × 0.198633 = 99.3165 USD
    assert_eq!(
        sum_and_currency(&body, &in_currency("USD")),
        Ok(("99.32".into(), "USD".into()))
    );
    // No EUR rate in the payload: skipped, never guessed.
    assert_eq!(
        sum_and_currency(&body, &in_currency("EUR")),
        Err(Skip::NoExchangeRate)
    );

    let mut payment_rate_only = brl_store_selling_in_usd(31);
    payment_rate_only["order"]
        .as_object_mut()
        .unwrap()
        .remove("exchange_rate_USD");
    assert_eq!(
        sum_and_currency(&payment_rate_only, &in_currency("USD")),
        Ok(("99.32".into(), "USD".into()))
    );
    let mut paid_in_usd = payment_rate_only.clone();
    paid_in_usd["order"]["payment"]["actual_price_paid_currency"] = json!("USD");
    assert_eq!(
        sum_and_currency(&paid_in_usd, &in_currency("USD")),
        Ok(("99.32".into(), "USD".into()))
    );
    // The payment's rate into another currency is no rate into USD: a BRL payment (the sample
    // events' shape: BRL at 1) sent 500 BRL as 500 USD, a EUR one the EUR amount as USD.
    for (paid_in, rate) in [("BRL", json!(1)), ("EUR", json!(0.182))] {
        let mut other = payment_rate_only.clone();
        other["order"]["payment"]["actual_price_paid_currency"] = json!(paid_in);
        other["order"]["payment"]["actual_exchange_rate"] = rate;
        assert_eq!(
            sum_and_currency(&other, &in_currency("USD")),
            Err(Skip::NoExchangeRate),
            "paid in {paid_in}"
        );
    }

    let mut no_rate = payment_rate_only.clone();
    no_rate["order"]["payment"]
        .as_object_mut()
        .unwrap()
        .remove("actual_exchange_rate");
    assert_eq!(
        sum_and_currency(&no_rate, &in_currency("USD")),
        Err(Skip::NoExchangeRate)
    );

    let mut no_base = paid_order(32);
    no_base["order"]["payment"] = json!({"currency": "EUR"});
    no_base["order"]["currency"] = json!("USD");
    assert_eq!(
        sum_and_currency(&no_base, &rules()),
        Ok(("1234.56".into(), "EUR".into()))
    );
    let mut nothing = paid_order(33);
    nothing["order"].as_object_mut().unwrap().remove("currency");
    nothing["order"].as_object_mut().unwrap().remove("payment");
    assert_eq!(
        sum_and_currency(&nothing, &rules()),
        Ok(("1234.56".into(), "".into()))
    );
    assert_eq!(
        sum_and_currency(&nothing, &in_currency("USD")),
        Err(Skip::NoExchangeRate)
    );
}

#[test]
fn pii_is_normalised_with_order_fallbacks() {
    let mut body = paid_order(40);
    body["order"]["customer"] = json!({"first_name": "  João   Pedro ", "last_name": " da  Silva", "email": "", "phone": ""});
    body["order"]["email"] = json!("  Joao.Pedro@GMAIL.com ");
    body["order"]["phone"] = json!("(55) 99612-3048");
    let text = body.to_string();
    let delivery = webhook::parse(text.as_bytes()).unwrap();
    let classified = classify::classify(&delivery, &rules()).unwrap();
    let Decision::Convert(conversions) = &classified.decision else {
        panic!()
    };
    for (normalize, expected) in [
        (
            true,
            [
                "João Pedro",
                "da Silva",
                "joao.pedro@gmail.com",
                "+5555996123048",
            ],
        ),
        (
            false,
            [
                "João   Pedro",
                "da  Silva",
                "Joao.Pedro@GMAIL.com",
                "(55) 99612-3048",
            ],
        ),
    ] {
        let ctx = MacroContext {
            order: classified.order.unwrap(),
            order_id: "40",
            conversion: &conversions[0],
            random: 0,
            normalize,
        };
        let got = [
            Macro::FirstName,
            Macro::LastName,
            Macro::Email,
            Macro::PhoneNumber,
        ]
        .map(|m| ctx.value(m).into_owned());
        assert_eq!(got, expected, "normalize = {normalize}");
    }
    // A phone from another country follows the address; an unreadable one is sent as given.
    let mut portugal = paid_order(41);
    portugal["order"]["customer"]["phone"] = json!("912 345 678");
    portugal["order"]["address"]["country_code"] = json!("PT");
    let mut junk = paid_order(42);
    junk["order"]["customer"]["phone"] = json!("call me");
    for (body, expected) in [(portugal, "+351912345678"), (junk, "call me")] {
        let text = body.to_string();
        let delivery = webhook::parse(text.as_bytes()).unwrap();
        let classified = classify::classify(&delivery, &rules()).unwrap();
        let Decision::Convert(conversions) = &classified.decision else {
            panic!()
        };
        let ctx = MacroContext {
            order: classified.order.unwrap(),
            order_id: "x",
            conversion: &conversions[0],
            random: 0,
            normalize: true,
        };
        assert_eq!(ctx.value(Macro::PhoneNumber), expected);
    }
}
