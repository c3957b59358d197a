//! The program every function of the stack runs (`bootstrap`): the handler is chosen by the
//! function's `Handler`, which Lambda passes as `_HANDLER` (see `cartpanda_redtrack::entry`).
//! Locally, without `_HANDLER`, it is the bridge; with arguments, the operator commands.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), cartpanda_redtrack::entry::Error> {
    // `cartpanda-redtrack store put|list|delete …` from a workstation; no arguments under Lambda.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        std::process::exit(cartpanda_redtrack::admin::main(&args).await);
    }
    cartpanda_redtrack::entry::run().await
}
