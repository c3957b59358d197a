use cartpanda_redtrack::inbound::verify::CartpandaApi;
use cartpanda_redtrack::ledger::cache::CachedLedger;
use cartpanda_redtrack::postback::redtrack::{RedTrackClient, RetryPolicy};
use cartpanda_redtrack::redrive::queue::{RedriveQueue, SqsQueue};
use cartpanda_redtrack::shops::directory::ShopCache;
use cartpanda_redtrack::{
    bridge::Bridge, inbound::runtime, ledger::dynamo::DynamoLedger, ops::clock::SystemClock,
    ops::config::Config,
};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    // `cartpanda-redtrack store put|list|delete …` from a workstation; no arguments under Lambda.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        std::process::exit(cartpanda_redtrack::ops::admin::main(&args).await);
    }
    cartpanda_redtrack::ops::logging::init();
    let config = Config::from_env().inspect_err(|e| tracing::error!("{e}"))?;
    let aws = cartpanda_redtrack::ops::aws::load().await;
    let ledger = Arc::new(DynamoLedger::new(
        aws_sdk_dynamodb::Client::new(&aws),
        config.table.clone(),
    ));
    let tracker = RedTrackClient::new(config.redtrack_timeout, RetryPolicy::default())?;
    let queue = config.redrive_queue_url.clone().map(|url| {
        Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&aws), url)) as Arc<dyn RedriveQueue>
    });
    let orders = CartpandaApi::new(config.redtrack_timeout)?;
    // Duplicates of conversions this instance knows are sent are answered without a DynamoDB
    // call (src/ledger/cache.rs); the shop directory reads the table itself.
    let claims = Arc::new(CachedLedger::new(ledger.clone()));
    let bridge = Bridge {
        config,
        ledger: claims,
        tracker: Arc::new(tracker),
        clock: Arc::new(SystemClock),
        queue,
        shops: Some(ShopCache::new(ledger)),
        orders: Some(Arc::new(orders)),
    };
    runtime::run(Arc::new(bridge)).await
}
