//! The reconciliation alone, for local runs and back-fills (the deployed stack runs the
//! `cartpanda-redtrack` program with `_HANDLER=reconcile`; see `cartpanda_redtrack::entry`).
//! Outside Lambda it runs once with a 14-minute budget and prints its answer as JSON (the shops'
//! summaries, the failed and the stale shops).

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), cartpanda_redtrack::entry::Error> {
    cartpanda_redtrack::entry::reconcile().await
}
