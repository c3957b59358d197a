//! Functions that fit on a screen: no function in `src/` is longer than [`MAX_LINES`] lines,
//! test modules aside. A function may be exempt only when a comment directly above it says
//! `exempt from the 60-line limit` and why (a flat `match` table, one arm per case).
//!
//! The scan relies on rustfmt's layout (`cargo fmt` runs in CI): a body ends at the first line
//! that is the function's own indentation followed by `}`.

use std::path::Path;

const MAX_LINES: usize = 60;
const EXEMPT: &str = "exempt from the 60-line limit";

/// `(file:line name, lines)` of every function over the limit in `src/`.
fn long_functions() -> Vec<(String, usize)> {
    let mut files = Vec::new();
    collect(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut files,
    );
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        let lines: Vec<&str> = text.lines().collect();
        let name = file
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(&file)
            .display()
            .to_string();
        for (at, fn_name, len) in functions(&lines) {
            if len > MAX_LINES && !exempt(&lines, at) {
                out.push((format!("{name}:{} {fn_name}", at + 1), len));
            }
        }
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn indent(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

/// The name of the function a line starts, if it starts one.
fn fn_name(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace().peekable();
    while let Some(word) = words.next() {
        match word {
            "fn" => {
                let name = words.next()?;
                return Some(name.split(['(', '<']).next().unwrap_or(name));
            }
            w if w == "pub"
                || w.starts_with("pub(")
                || matches!(w, "async" | "const" | "unsafe" | "extern" | "\"C\"") => {}
            _ => return None,
        }
    }
    None
}

/// `(line index, name, length in lines)` of every function with a body, test modules skipped.
fn functions<'a>(lines: &[&'a str]) -> Vec<(usize, &'a str, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim() == "#[cfg(test)]" {
            // Skip the test module (or test-only item) that follows, to its closing brace.
            let close = format!("{}}}", indent(line));
            i += 1;
            while i < lines.len() && lines[i] != close {
                i += 1;
            }
            i += 1;
            continue;
        }
        if let Some(name) = fn_name(line) {
            let close = format!("{}}}", indent(line));
            // The signature ends with `{` (a body) or `;` (a declaration).
            let mut j = i;
            while j < lines.len() && !lines[j].ends_with('{') && !lines[j].ends_with(';') {
                j += 1;
            }
            if j < lines.len() && lines[j].ends_with('{') {
                let end = (j..lines.len())
                    .find(|&k| lines[k] == close || (k == i && line.trim_end().ends_with('}')))
                    .unwrap_or(lines.len() - 1);
                out.push((i, name, end - i + 1));
            }
        }
        i += 1;
    }
    out
}

/// Whether the comments and attributes directly above line `at` declare the exemption.
fn exempt(lines: &[&str], at: usize) -> bool {
    lines[..at]
        .iter()
        .rev()
        .take_while(|l| {
            let t = l.trim_start();
            t.starts_with("//") || t.starts_with("#[")
        })
        .any(|l| l.contains(EXEMPT))
}

#[test]
fn no_function_in_src_is_longer_than_a_screen() {
    let long = long_functions();
    for (at, len) in &long {
        println!("{len:4} lines  {at}");
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_LINES} lines (split them by named steps): {long:#?}"
    );
}

#[test]
fn the_scan_measures_functions() {
    let source = [
        "fn short() {",
        "    1",
        "}",
        "",
        "#[cfg(test)]",
        "mod tests {",
        "    fn skipped() {",
        "    }",
        "}",
        "impl X {",
        "    pub async fn method(",
        "        &self,",
        "    ) -> u8 {",
        "        0",
        "    }",
        "    fn declared(&self);",
        "}",
    ];
    let found = functions(&source);
    assert_eq!(found, vec![(0, "short", 3), (10, "method", 5)]);
}
