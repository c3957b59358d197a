//! The reconciliation Lambda: an EventBridge Scheduler event in (its content is not read), each
//! reconciled shop run once from its watermark, the summaries out. Outside Lambda (no
//! `AWS_LAMBDA_RUNTIME_API`) it runs once with a 14-minute budget and prints the summaries as
//! JSON; see `cartpanda_redtrack::reconcile`.
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::reconcile;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

/// The budget of a run outside Lambda.
const LOCAL_BUDGET_MS: i64 = 14 * 60 * 1000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    cartpanda_redtrack::ops::logging::init();
    let aws = cartpanda_redtrack::ops::aws::load().await;
    let reconciler = Arc::new(
        reconcile::from_env(&aws)
            .await
            .inspect_err(|e| tracing::error!("{e}"))?,
    );
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        let deadline_ms = SystemClock.now_ms() + LOCAL_BUDGET_MS;
        let summaries = reconcile::run_scheduled(&reconciler, deadline_ms).await?;
        println!("{}", serde_json::to_string_pretty(&summaries)?);
        return Ok(());
    }
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let reconciler = Arc::clone(&reconciler);
        async move {
            let deadline_ms = event.context.deadline as i64;
            let summaries = reconcile::run_scheduled(&reconciler, deadline_ms).await?;
            Ok::<_, Error>(serde_json::to_value(summaries)?)
        }
    }))
    .await
}
