use cartpanda_redtrack::inbound::verify::CartpandaApi;
use cartpanda_redtrack::ledger::cache::CachedLedger;
use cartpanda_redtrack::ops::secrets::SsmSecrets;
use cartpanda_redtrack::postback::redtrack::{RedTrackClient, RetryPolicy};
use cartpanda_redtrack::redrive::queue::{RedriveQueue, SqsQueue};
use cartpanda_redtrack::shops::directory::ShopCache;
use cartpanda_redtrack::{
    bridge::Bridge, inbound::runtime, ledger::dynamo::DynamoLedger, ops::clock::SystemClock,
    ops::config::Config,
};
use std::sync::Arc;

/// The answer to a command line: the operator commands are `cartpanda-redtrack-admin`'s.
const COMMANDS_MOVED: &str = "cartpanda-redtrack runs only as the Lambda function; the operator commands are `cartpanda-redtrack-admin shop …` and `cartpanda-redtrack-admin redrive …` (`--help`)";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    // No arguments under Lambda; the operator commands are another binary, without clap in this one.
    if std::env::args_os().len() > 1 {
        eprintln!("{COMMANDS_MOVED}");
        std::process::exit(2);
    }
    cartpanda_redtrack::ops::logging::init();
    let aws = cartpanda_redtrack::ops::aws::load().await;
    let secrets = Arc::new(SsmSecrets::new(aws_sdk_ssm::Client::new(&aws)));
    let config = Config::from_env_with(secrets.as_ref())
        .await
        .inspect_err(|e| tracing::error!("{e}"))?;
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
        shops: Some(ShopCache::new(ledger).with_secrets(secrets)),
        orders: Some(Arc::new(orders)),
    };
    runtime::run(Arc::new(bridge)).await
}
