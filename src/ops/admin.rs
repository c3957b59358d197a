//! Operator commands, run from a workstation with AWS credentials (`cartpanda-redtrack <command>`
//! or `cartpanda-redtrack-admin <command>`):
//!
//! - `store put <name> --token <secret> [--token <next secret>] --postback-url <url>
//!   [--conversion-types <event=Type,…>] [--send-test-orders true|false]
//!   [--cartx-test-orders send|skip] [--sum-currency USD|EUR|BRL]
//!   [--normalize-pii true|false] [--cartpanda-api-token <token>]`
//! - `store list` · `store delete <name>`
//! - `redrive --from <DLQ URL> --to <queue URL> [--max N]`
//! - `reconcile --since <RFC 3339 time | 48h> [--shop <name>] [--dry-run]` ([`crate::reconcile`])
//! - `report [--since 7d] [--shop <name>] [--format table|csv|json]` ([`crate::report`])
//!
//! The table is `--table <name>` or `DEDUP_TABLE`. Tokens are stored as SHA-256 digests only.

use crate::conversion::classify::CartxTestOrders;
use crate::inbound::auth::Tokens;
use crate::ledger::dynamo::DynamoLedger;
use crate::redrive::consumer::move_messages;
use crate::shops::directory::{ShopRecord, check_name};

pub const USAGE: &str = "usage:
  cartpanda-redtrack store put <name> --token <secret> [--token <next secret>] --postback-url <url>
      [--conversion-types <event=Type,...>] [--send-test-orders true|false]
      [--cartx-test-orders send|skip]
      [--sum-currency USD|EUR|BRL] [--normalize-pii true|false] [--cartpanda-api-token <token>]
      [--clickid-sources <source,...>] [--reconcile true|false] [--shop-slug <slug>]
      [--s2s true|false] [--verify-orders true|false] [--table <table>]
  cartpanda-redtrack store list [--table <table>]
  cartpanda-redtrack store delete <name> [--table <table>]
  cartpanda-redtrack redrive --from <DLQ URL> --to <queue URL> [--max N]
  cartpanda-redtrack reconcile --since <RFC 3339 time | 48h> [--shop <name>] [--dry-run]
  cartpanda-redtrack report [--since 7d] [--shop <name>] [--format table|csv|json] [--table <table>]
The table defaults to $DEDUP_TABLE.";

/// Runs a command and returns the process exit code (0 ok, 2 usage or failure).
pub async fn main(args: &[String]) -> i32 {
    let aws = crate::ops::aws::load().await;
    match run(args, &aws).await {
        Ok(message) => {
            println!("{message}");
            0
        }
        Err(message) => {
            eprintln!("{message}");
            2
        }
    }
}

/// The values of a repeated flag.
fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    values(args, flag).into_iter().last()
}

fn boolean(args: &[String], flag: &str, default: bool) -> Result<bool, String> {
    match value(args, flag) {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(format!("{flag} must be true or false, got `{other}`")),
    }
}

/// Builds and checks the record `store put` writes.
pub fn shop_record(name: &str, args: &[String]) -> Result<ShopRecord, String> {
    check_name(name)?;
    let tokens = values(args, "--token");
    if tokens.is_empty() || tokens.len() > 2 {
        return Err("give one --token (two while rotating)".to_owned());
    }
    if let Some(t) = tokens
        .iter()
        .find(|t| t.len() < 16 || t.chars().any(char::is_whitespace))
    {
        return Err(format!(
            "a token must be at least 16 characters without spaces ({} given)",
            t.len()
        ));
    }
    let record = ShopRecord {
        name: name.to_owned(),
        token_digests: tokens.iter().map(|t| Tokens::hex_digest(t)).collect(),
        postback_url: value(args, "--postback-url")
            .ok_or("--postback-url is required")?
            .to_owned(),
        conversion_types: value(args, "--conversion-types").unwrap_or("").to_owned(),
        send_test_orders: boolean(args, "--send-test-orders", false)?,
        cartx_test_orders: match value(args, "--cartx-test-orders") {
            None => CartxTestOrders::default().as_str().to_owned(),
            Some(v) => CartxTestOrders::parse(v)
                .map_err(|e| format!("--cartx-test-orders {e}"))?
                .as_str()
                .to_owned(),
        },
        sum_currency: value(args, "--sum-currency").map(str::to_ascii_uppercase),
        normalize_pii: boolean(args, "--normalize-pii", true)?,
        cartpanda_api_token: value(args, "--cartpanda-api-token").map(str::to_owned),
        cartpanda_api_token_parameter: None,
        click_id_sources: value(args, "--clickid-sources").unwrap_or("").to_owned(),
        reconcile: boolean(args, "--reconcile", false)?,
        shop_slug: value(args, "--shop-slug").map(str::to_owned),
        s2s: boolean(args, "--s2s", false)?,
        verify_orders: boolean(args, "--verify-orders", true)?,
    };
    record
        .profile()
        .map_err(|problem| format!("store `{name}`: {problem}"))?;
    Ok(record)
}

/// Runs one command.
pub async fn run(args: &[String], aws: &aws_config::SdkConfig) -> Result<String, String> {
    let table = || -> Result<DynamoLedger, String> {
        let name = value(args, "--table")
            .map(str::to_owned)
            .or_else(|| std::env::var("DEDUP_TABLE").ok())
            .ok_or("name the table with --table or DEDUP_TABLE")?;
        Ok(DynamoLedger::new(aws_sdk_dynamodb::Client::new(aws), name))
    };
    let now_ms = crate::ops::clock::Clock::now_ms(&crate::ops::clock::SystemClock);
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["store", "put", name, ..] => {
            let record = shop_record(name, args)?;
            table()?
                .put_shop(&record, now_ms)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "store `{name}` saved; its webhook URL is https://<api>/cartpanda/{name}?token=<secret>"
            ))
        }
        ["store", "list", ..] => {
            let stores = table()?.list_shops().await.map_err(|e| e.to_string())?;
            let mut out = format!("{} store(s)", stores.len());
            for s in stores {
                let host = url::Url::parse(s.postback_url.split('?').next().unwrap_or(""))
                    .map(|u| crate::postback::template::redact(&u))
                    .unwrap_or_else(|_| "?".to_owned());
                out.push_str(&format!(
                    "\n{}\tpostback {host}\ttokens {}\ttest orders {}\tcartx test orders {}\tsum {}\tverify {}",
                    s.name,
                    s.token_digests.len(),
                    s.send_test_orders,
                    if s.cartx_test_orders.is_empty() { "send" } else { &s.cartx_test_orders },
                    s.sum_currency.as_deref().unwrap_or("as charged"),
                    s.cartpanda_api_token.is_some(),
                ));
            }
            Ok(out)
        }
        ["store", "delete", name, ..] => match table()?
            .delete_shop(name)
            .await
            .map_err(|e| e.to_string())?
        {
            true => Ok(format!("store `{name}` deleted")),
            false => Err(format!("no store `{name}`")),
        },
        ["redrive", ..] => {
            let from = value(args, "--from").ok_or(USAGE)?;
            let to = value(args, "--to").ok_or(USAGE)?;
            let max = match value(args, "--max") {
                None => 10_000,
                Some(v) => v
                    .parse()
                    .map_err(|_| format!("--max must be a number, got `{v}`"))?,
            };
            let sqs = aws_sdk_sqs::Client::new(aws);
            let moved = move_messages(&sqs, from, to, max)
                .await
                .map_err(|e| format!("redrive stopped: {e}"))?;
            Ok(format!(
                "moved {moved} message(s) from the DLQ back to the redrive queue"
            ))
        }
        // Thin wiring until the CLI moves to clap: the commands are library functions.
        ["reconcile", ..] => {
            let since = value(args, "--since").ok_or(USAGE)?;
            let reconciler = crate::reconcile::from_env(aws).await?;
            let summary = crate::reconcile::command(
                &reconciler,
                since,
                value(args, "--shop"),
                args.iter().any(|a| a == "--dry-run"),
                now_ms + crate::reconcile::run::CLI_BUDGET_MS,
            )
            .await?;
            serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())
        }
        ["report", ..] => {
            let ledger = table()?;
            crate::report::command(
                ledger.client(),
                ledger.table(),
                value(args, "--since").unwrap_or("7d"),
                value(args, "--shop"),
                value(args, "--format").unwrap_or("table"),
                now_ms,
            )
            .await
        }
        _ => Err(USAGE.to_owned()),
    }
}
