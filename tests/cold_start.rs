//! A wrong configuration stops the function at cold start, before it takes any event, with a
//! message that names the variable and what is wrong.

use std::process::Command;

fn start(bin: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const GOOD: &[(&str, &str)] = &[
    (
        "REDTRACK_POSTBACK_URL",
        "https://trk.example.com/postback?clickid={cid}&sum={total_price}",
    ),
    ("WEBHOOK_TOKEN", "a-long-enough-secret"),
    ("DEDUP_TABLE", "cartpanda-dedup"),
];

fn with(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env: Vec<_> = GOOD
        .iter()
        .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
        .copied()
        .collect();
    env.extend(overrides.iter().filter(|(_, v)| !v.is_empty()).copied());
    env
}

#[test]
fn the_webhook_function_refuses_to_start_on_each_configuration_error() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("REDTRACK_POSTBACK_URL", "")],
            "REDTRACK_POSTBACK_URL is not set",
        ),
        (
            &[(
                "REDTRACK_POSTBACK_URL",
                "https://t.example/p?clickid={cid}&n={nmae}",
            )],
            "REDTRACK_POSTBACK_URL uses the unknown macro `{nmae}`",
        ),
        (
            &[("REDTRACK_POSTBACK_URL", "https://t.example/p?clickid={cid")],
            "REDTRACK_POSTBACK_URL has an unclosed `{` in parameter `clickid`",
        ),
        (
            &[("REDTRACK_POSTBACK_URL", "http://t.example/p?clickid={cid}")],
            "REDTRACK_POSTBACK_URL must use https",
        ),
        (&[("WEBHOOK_TOKEN", "")], "WEBHOOK_TOKEN is not set"),
        (
            &[("WEBHOOK_TOKEN", " , ")],
            "WEBHOOK_TOKEN is empty or has an empty entry",
        ),
        (&[("DEDUP_TABLE", "")], "DEDUP_TABLE is not set"),
        (
            &[("CONVERSION_TYPES", "order.paid:Purchase")],
            "CONVERSION_TYPES entry `order.paid:Purchase` is not of the form event=Type",
        ),
        (
            &[("DEDUP_TTL_DAYS", "forever")],
            "DEDUP_TTL_DAYS must be a whole number of days from 1 to 3650",
        ),
    ];
    for (overrides, message) in cases {
        let (ok, output) = start(env!("CARGO_BIN_EXE_cartpanda-redtrack"), &with(overrides));
        assert!(!ok, "{message}: the function started");
        assert!(
            output.contains(&format!("configuration error: {message}")),
            "expected {message:?} in:\n{output}"
        );
        assert!(
            !output.contains("a-long-enough-secret"),
            "the token leaked:\n{output}"
        );
    }
}

#[test]
fn the_redrive_function_refuses_to_start_without_its_queue() {
    let (ok, output) = start(
        env!("CARGO_BIN_EXE_cartpanda-redtrack-redrive"),
        &[("DEDUP_TABLE", "cartpanda-dedup")],
    );
    assert!(!ok);
    assert!(
        output.contains("configuration error: REDRIVE_QUEUE_URL is not set"),
        "{output}"
    );
}

fn run(bin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin)
        .args(args)
        .env_remove("DEDUP_TABLE")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("the binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Declared change of issue 13: the Lambda binary no longer carries the operator commands; given
/// one, it says in one line where they went and exits 2.
#[test]
fn the_lambda_binary_points_operator_commands_to_the_admin_binary() {
    for args in [
        &["store", "put", "loja-x", "--token", "0123456789abcdef"][..],
        &["shop", "list"],
        &["redrive", "--from", "a", "--to", "b"],
    ] {
        let (code, stdout, stderr) = run(env!("CARGO_BIN_EXE_cartpanda-redtrack"), args);
        assert_eq!(code, Some(2), "{args:?}: {stdout}{stderr}");
        assert_eq!(stdout, "", "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("`cartpanda-redtrack-admin shop …`"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn every_admin_command_has_help_and_store_is_still_the_shop_command() {
    let admin = env!("CARGO_BIN_EXE_cartpanda-redtrack-admin");
    for (args, shows) in [
        (&["--help"][..], "redrive"),
        (&["shop", "--help"], "delete"),
        (&["shop", "put", "--help"], "--cartpanda-api-token"),
        (&["store", "put", "--help"], "--cartx-test-orders"),
        (&["shop", "list", "--help"], "--table"),
        (&["shop", "delete", "--help"], "--table"),
        (&["redrive", "--help"], "--max"),
    ] {
        let (code, stdout, stderr) = run(admin, args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(stdout.contains(shows), "{args:?}: {stdout}");
    }
    let (code, _, stderr) = run(admin, &["shop", "dance"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("Usage:"), "{stderr}");
    let (code, _, stderr) = run(admin, &["store", "list"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--table or DEDUP_TABLE"), "{stderr}");
}

/// Issue 20 item 7: stacks deployed with the old default keep `DEDUP_TTL_DAYS=30`; the function
/// still starts (no configuration error) and warns, with the `LedgerMemoryShort` metric.
#[test]
fn a_short_ledger_memory_starts_with_a_warning_and_a_metric() {
    let mut env = with(&[("DEDUP_TTL_DAYS", "30")]);
    env.extend([
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    let (_, output) = start(env!("CARGO_BIN_EXE_cartpanda-redtrack"), &env);
    assert!(!output.contains("configuration error"), "{output}");
    assert!(
        output.contains("DEDUP_TTL_DAYS is under 200 days") && output.contains("LedgerMemoryShort"),
        "{output}"
    );
    let (_, long) = start(env!("CARGO_BIN_EXE_cartpanda-redtrack"), &with(&[]));
    assert!(!long.contains("LedgerMemoryShort"), "{long}");
}
