//! Operator commands (`shop put|list|delete`, `redrive`); see `cartpanda_redtrack::ops::admin`.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(cartpanda_redtrack::ops::admin::main(&args).await);
}
