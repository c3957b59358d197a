//! `CLICKID_SOURCES` through the real handler: the click ID RedTrack receives comes from the
//! first source that has one of RedTrack's shape.

mod common;

use common::*;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const IN_SCK: &str = "67d42f3b9a1e5c0012ab0001";
const ON_THANK_YOU_PAGE: &str = "67d42f3b9a1e5c0012ab0002";

#[tokio::test]
async fn the_first_source_with_a_redtrack_click_id_wins() {
    let h = harness_with(Options {
        env: vec![(
            "CLICKID_SOURCES",
            "checkout_params.sck,thank_you_page.rtkcid,checkout_params.cid".into(),
        )],
        ..Options::default()
    })
    .await;
    Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
    // `sck` holds a word, so the thank-you page's `rtkcid` wins over `cid`.
    let mut word_in_sck = paid_order(9001);
    word_in_sck["order"]["checkout_params"] =
        json!({"sck": "summer-sale", "cid": "67d42f3b9a1e5c0012ab34cd"});
    word_in_sck["order"]["thank_you_page"] = json!(format!(
        "https://shop.example/obrigado?order=9001&rtkcid={ON_THANK_YOU_PAGE}"
    ));
    // `sck` holds a click ID: it wins.
    let mut id_in_sck = paid_order(9002);
    id_in_sck["order"]["checkout_params"] =
        json!({"sck": IN_SCK, "cid": "67d42f3b9a1e5c0012ab34cd"});
    // Nothing anywhere but an unfilled macro: no click ID, a note, nothing sent.
    let mut unfilled = paid_order(9003);
    unfilled["order"]["checkout_params"] = json!({"sck": "{sck}", "cid": "{cid}"});
    for body in [&word_in_sck, &id_in_sck] {
        let answer = deliver(&h, body).await;
        assert_eq!(
            answer.body["conversions"][0]["outcome"], "sent",
            "{}",
            answer.body
        );
    }
    assert_eq!(deliver(&h, &unfilled).await.body["skipped"], "no_click_id");
    let sent = postbacks(&h).await;
    let clicks: Vec<&str> = sent.iter().map(|p| p["clickid"].as_str()).collect();
    assert_eq!(clicks, [ON_THANK_YOU_PAGE, IN_SCK]);
    assert!(item(&h, "note#9003#no_click_id").await.is_some());
}
