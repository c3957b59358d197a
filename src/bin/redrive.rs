//! The redrive consumer alone, for local runs (the deployed stack runs the `cartpanda-redtrack`
//! program with `_HANDLER=redrive`; see `cartpanda_redtrack::entry`).

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), cartpanda_redtrack::entry::Error> {
    cartpanda_redtrack::entry::redrive().await
}
