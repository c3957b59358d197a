//! The program every function of the stack runs (`bootstrap`): the handler is chosen by the
//! function's `Handler`, which Lambda passes as `_HANDLER` (see `cartpanda_redtrack::entry`).
//! Locally, without `_HANDLER`, it is the bridge. It carries no operator commands: those are
//! `cartpanda-redtrack-admin`'s.

/// The answer to a command line: the operator commands are `cartpanda-redtrack-admin`'s.
const COMMANDS_MOVED: &str = "cartpanda-redtrack runs only as the Lambda function; the operator commands are `cartpanda-redtrack-admin shop …` and `cartpanda-redtrack-admin redrive …` (`--help`)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), cartpanda_redtrack::entry::Error> {
    // No arguments under Lambda; the operator commands are another binary, without clap in this one.
    if std::env::args_os().len() > 1 {
        eprintln!("{COMMANDS_MOVED}");
        std::process::exit(2);
    }
    cartpanda_redtrack::entry::run().await
}
