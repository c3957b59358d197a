//! The redrive consumer Lambda: SQS → re-send through the claim protocol.
use aws_lambda_events::event::sqs::SqsEvent;
use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::clock::SystemClock;
use cartpanda_redtrack::ops::config::RedriveConfig;
use cartpanda_redtrack::postback::redtrack::{RedTrackClient, RetryPolicy};
use cartpanda_redtrack::redrive::consumer::{Consumer, Redriver};
use cartpanda_redtrack::redrive::queue::{RedriveQueue, SqsQueue};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    cartpanda_redtrack::ops::logging::init();
    let config = RedriveConfig::from_env().inspect_err(|e| tracing::error!("{e}"))?;
    let aws = cartpanda_redtrack::ops::aws::load().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let dlq = config
        .dlq_url
        .clone()
        .map(|url| Arc::new(SqsQueue::new(sqs.clone(), url)) as Arc<dyn RedriveQueue>);
    let redriver = Redriver {
        ledger: Arc::new(DynamoLedger::new(
            aws_sdk_dynamodb::Client::new(&aws),
            config.table.clone(),
        )),
        tracker: Arc::new(RedTrackClient::new(
            config.redtrack_timeout,
            RetryPolicy::default(),
        )?),
        clock: Arc::new(SystemClock),
        ttl_days: config.ttl_days,
        dlq,
    };
    let consumer = Arc::new(Consumer {
        redriver,
        sqs,
        queue_url: config.queue_url,
        dlq_url: config.dlq_url,
    });
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let consumer = Arc::clone(&consumer);
        async move {
            let deadline_ms = event.context.deadline as i64;
            Ok::<_, Error>(consumer.handle_batch(event.payload, deadline_ms).await)
        }
    }))
    .await
}
