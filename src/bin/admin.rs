//! Operator commands, run from a workstation with AWS credentials.
//!
//! `cartpanda-redtrack-admin redrive --from <DLQ URL> --to <queue URL> [--max N]` moves
//! conversions parked in the dead-letter queue back to the redrive queue (after RedTrack or the
//! postback URL was fixed); the redrive consumer then sends them through the claim protocol.

use cartpanda_redtrack::redrive::move_messages;
use std::process::ExitCode;

const USAGE: &str =
    "usage: cartpanda-redtrack-admin redrive --from <DLQ URL> --to <queue URL> [--max N]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: &[String]) -> Result<String, String> {
    let (command, rest) = args.split_first().ok_or(USAGE)?;
    if command != "redrive" {
        return Err(format!("unknown command `{command}`\n{USAGE}"));
    }
    let value = |flag: &str| -> Option<&String> {
        rest.iter()
            .position(|a| a == flag)
            .and_then(|i| rest.get(i + 1))
    };
    let from = value("--from").ok_or(USAGE)?;
    let to = value("--to").ok_or(USAGE)?;
    let max = match value("--max") {
        None => 10_000,
        Some(v) => v
            .parse()
            .map_err(|_| format!("--max must be a number, got `{v}`"))?,
    };
    let aws = cartpanda_redtrack::aws::load().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let moved = move_messages(&sqs, from, to, max)
        .await
        .map_err(|e| format!("redrive stopped: {e}"))?;
    Ok(format!(
        "moved {moved} message(s) from the DLQ back to the redrive queue"
    ))
}
