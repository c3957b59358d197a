//! The list of emitted metrics (`ops::metrics::EMITTED`), which the stack test checks the
//! dashboard's widgets and the alarms against, is the code's: every metric in the EMF lines the
//! functions build is on it, and every name on it is emitted somewhere in `src/`.

use cartpanda_redtrack::ops::metrics::{self, EMITTED};
use cartpanda_redtrack::reconcile::{self, coverage, run};
use std::collections::BTreeSet;

/// The metric names an EMF line declares.
fn declared(line: &str) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_str(line).expect("an EMF line is JSON");
    v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .expect("the metrics of the line")
        .iter()
        .map(|m| m["Name"].as_str().unwrap().to_owned())
        .collect()
}

/// Every `.rs` file under `src/`, as text.
fn sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.display().to_string(), text));
            }
        }
    }
    out
}

#[test]
fn the_reconcile_function_s_lines_name_listed_metrics_only() {
    let listed: BTreeSet<String> = EMITTED.iter().map(|s| (*s).to_owned()).collect();
    let lines = [
        run::metrics_line(&run::Summary::default()),
        reconcile::shops_line(&reconcile::Scheduled::default()),
        coverage::metrics_line(&coverage::Coverage::default()),
        metrics::line(
            "Conversions",
            "Count",
            "Outcome",
            "sent",
            1.0,
            Some(("RedTrackLatency", "Milliseconds", 1.0)),
        ),
    ];
    for line in &lines {
        let names = declared(line);
        assert!(
            names.is_subset(&listed),
            "not in EMITTED: {:?}",
            names.difference(&listed).collect::<Vec<_>>()
        );
    }
    for name in [
        "ShopsSilent",
        "OrdersPaid",
        "OrdersCovered",
        "OrdersUncovered",
    ] {
        assert!(
            lines.iter().any(|l| declared(l).contains(name)),
            "{name} is emitted"
        );
    }
}

#[test]
fn every_metric_line_of_the_ops_module_is_listed() {
    // The bridge's and the redrive consumer's lines are built in src/ops/metrics.rs from the
    // names its functions pass to `line(` and `plain_line(` (and the extra metric of a line).
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/ops/metrics.rs"))
        .unwrap();
    let code = &text[..text.find("#[cfg(test)]").unwrap()];
    let mut found = BTreeSet::new();
    for opener in ["line(\n        \"", "line(\"", "Some((\""] {
        for (at, _) in code.match_indices(opener) {
            let rest = &code[at + opener.len()..];
            found.insert(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    assert!(found.len() >= 8, "{found:?}");
    for name in &found {
        assert!(
            EMITTED.contains(&name.as_str()),
            "{name} is emitted but not in EMITTED"
        );
    }
}

#[test]
fn every_listed_metric_is_emitted_somewhere() {
    let sources = sources();
    for name in EMITTED {
        let quoted = format!("\"{name}\"");
        let uses = sources
            .iter()
            .filter(|(path, text)| {
                let text = match path.ends_with("ops/metrics.rs") {
                    // Not the list itself.
                    true => {
                        &text[text
                            .find("pub const EMITTED")
                            .map_or(0, |at| at + text[at..].find("];").unwrap())..]
                    }
                    false => text.as_str(),
                };
                text.contains(&quoted)
            })
            .count();
        assert!(
            uses > 0,
            "{name} is listed in EMITTED but no code in src/ names it"
        );
    }
}

/// Every metric an EMF line of `src/` names (the `emf(&[("Name", …), …])` and
/// `emit(&[("Name", …), …])` calls, whatever function builds them) is on the list the stack test
/// checks the alarms and the dashboard against: an alarm on a metric off the list fails there.
#[test]
fn every_metric_an_emf_call_names_is_listed() {
    let mut unlisted = BTreeSet::new();
    for (path, text) in sources() {
        for call in ["emf(&[", "emit(&["] {
            for (at, _) in text.match_indices(call) {
                let rest = &text[at + call.len()..];
                let body = &rest[..rest.find("])").unwrap_or(rest.len())];
                for part in body.split("(\"").skip(1) {
                    let name = &part[..part.find('"').unwrap_or(0)];
                    let camel = name.starts_with(|c: char| c.is_ascii_uppercase())
                        && name.chars().any(|c| c.is_ascii_lowercase())
                        && name.chars().all(|c| c.is_ascii_alphanumeric());
                    if camel && !EMITTED.contains(&name) {
                        unlisted.insert(format!("{name} ({path})"));
                    }
                }
            }
        }
    }
    assert!(
        unlisted.is_empty(),
        "emitted but not in EMITTED: {unlisted:?}"
    );
}
