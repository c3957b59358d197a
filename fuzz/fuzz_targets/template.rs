//! Any configured postback URL: parsing never panics; a template that parses renders to a valid
//! URL that keeps every parameter and its value.
#![no_main]

use cartpanda_redtrack::postback::template::{Macro, PostbackTemplate};
use libfuzzer_sys::fuzz_target;
use std::borrow::Cow;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for allow_http in [false, true] {
        let Ok(template) = PostbackTemplate::parse(text, allow_http) else { continue };
        let url = template.render(|m: Macro| Cow::Owned(format!("v&={}#+ é", m.name())));
        let reparsed = url::Url::parse(url.as_str()).expect("a rendered template is a URL");
        let names: Vec<String> = reparsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
        assert!(names.iter().any(|n| n == "clickid"), "clickid kept");
        assert!(names.iter().any(|n| n == "type"), "type present");
        assert!(names.iter().any(|n| n == "rdtk_event_id"), "rdtk_event_id present");
        for m in template.macros() {
            let expected = format!("v&={}#+ é", m.name());
            assert!(reparsed.query_pairs().any(|(_, v)| v.contains(&expected)), "{} value intact", m.name());
        }
    }
});
