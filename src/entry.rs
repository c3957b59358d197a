//! The Lambda entry points: one program serves every function of the stack. Lambda passes each
//! function's `Handler` (template.yaml) to the process as `_HANDLER`, and [`run`] starts the
//! matching handler, so `sam build` compiles and links the crate once for all functions
//! (docs/performance.md). Each handler also runs locally under a binary of its own name
//! (`cartpanda-redtrack`, `cartpanda-redtrack-redrive`, `cartpanda-redtrack-reconcile`).
//! Only wiring lives here: configuration, clients built once, then the runtime loop.

use crate::bridge::Bridge;
use crate::inbound::verify::CartpandaApi;
use crate::ledger::cache::CachedLedger;
use crate::ledger::dynamo::DynamoLedger;
use crate::ops::clock::{Clock, SystemClock};
use crate::ops::config::{Config, RedriveConfig};
use crate::ops::secrets::SsmSecrets;
use crate::postback::redtrack::{RedTrackClient, RetryPolicy};
use crate::redrive::consumer::{Consumer, Redriver};
use crate::redrive::queue::{RedriveQueue, SqsQueue};
use crate::shops::directory::ShopCache;
use std::sync::Arc;

/// The boxed error every runtime returns.
pub type Error = lambda_runtime::Error;

/// A function of the stack, by its `Handler` in template.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `bridge`: the webhook function behind the HTTP API.
    Bridge,
    /// `redrive`: the SQS consumer of the redrive queue.
    Redrive,
    /// `reconcile`: the scheduled reconciliation against Cartpanda's order list.
    Reconcile,
}

impl Handler {
    /// The handler a `_HANDLER` value names. Unset, empty or `bootstrap` (the value of
    /// deployments made before handlers were named, and of `cargo lambda deploy`) is the bridge.
    pub fn named(handler: Option<&str>) -> Result<Self, String> {
        match handler.map(str::trim).unwrap_or("") {
            "" | "bootstrap" | "bridge" => Ok(Handler::Bridge),
            "redrive" => Ok(Handler::Redrive),
            "reconcile" => Ok(Handler::Reconcile),
            other => Err(format!(
                "unknown handler `{other}` (_HANDLER): this program serves `bridge`, `redrive` and `reconcile`"
            )),
        }
    }
}

/// Runs the handler `_HANDLER` names until the process is stopped.
pub async fn run() -> Result<(), Error> {
    match Handler::named(std::env::var("_HANDLER").ok().as_deref()) {
        Ok(Handler::Bridge) => bridge().await,
        Ok(Handler::Redrive) => redrive().await,
        Ok(Handler::Reconcile) => reconcile().await,
        Err(problem) => {
            crate::ops::logging::init();
            tracing::error!("{problem}");
            Err(problem.into())
        }
    }
}

/// The webhook function: Cartpanda deliveries in, RedTrack postbacks out.
pub async fn bridge() -> Result<(), Error> {
    crate::ops::logging::init();
    let aws = crate::ops::aws::load().await;
    let secrets = Arc::new(SsmSecrets::from_sdk(&aws));
    let config = Config::from_env_with(secrets.as_ref())
        .await
        .inspect_err(|e| tracing::error!("{e}"))?;
    crate::ops::config::warn_if_short_memory(config.ttl_days);
    let ledger = Arc::new(DynamoLedger::new(
        aws_sdk_dynamodb::Client::new(&aws),
        config.table.clone(),
    ));
    let tracker = RedTrackClient::new(config.redtrack_timeout, RetryPolicy::default())?;
    let queue = config.redrive_queue_url.clone().map(|url| {
        Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&aws), url)) as Arc<dyn RedriveQueue>
    });
    let orders = CartpandaApi::new(config.redtrack_timeout)?;
    let bridge = Bridge {
        config,
        // Duplicates of conversions this instance knows are sent are answered without a
        // DynamoDB call (src/ledger/cache.rs); the shop directory reads the table itself.
        ledger: Arc::new(CachedLedger::new(ledger.clone())),
        tracker: Arc::new(tracker),
        clock: Arc::new(SystemClock),
        queue,
        shops: Some(ShopCache::new(ledger).with_secrets(secrets)),
        orders: Some(Arc::new(orders)),
    };
    crate::inbound::runtime::run(Arc::new(bridge)).await
}

/// The redrive consumer: SQS batches of queued conversions, re-sent through the claim protocol.
pub async fn redrive() -> Result<(), Error> {
    use aws_lambda_events::event::sqs::SqsEvent;
    use lambda_runtime::{LambdaEvent, service_fn};

    crate::ops::logging::init();
    let config = RedriveConfig::from_env().inspect_err(|e| tracing::error!("{e}"))?;
    crate::ops::config::warn_if_short_memory(config.ttl_days);
    let aws = crate::ops::aws::load().await;
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

/// The budget of a reconciliation run outside Lambda.
const LOCAL_RECONCILE_BUDGET_MS: i64 = 14 * 60 * 1000;

/// The reconciliation function. An EventBridge Scheduler event (its content is not read): with
/// `RECONCILE_QUEUE_URL`, one message per due shop queued on that queue; without it, each
/// reconciled shop run once from its watermark here. An SQS batch of that queue (its event source
/// mapping): one shop reconciled per message. See [`crate::reconcile::fanout::handle_event`] for
/// the answers. Outside Lambda (no `AWS_LAMBDA_RUNTIME_API`) it runs the schedule's work once and
/// prints the answer as JSON.
pub async fn reconcile() -> Result<(), Error> {
    use crate::reconcile::fanout::{self, ShopQueue};
    use lambda_runtime::{LambdaEvent, service_fn};

    crate::ops::logging::init();
    let aws = crate::ops::aws::load().await;
    let reconciler = Arc::new(
        crate::reconcile::from_env(&aws)
            .await
            .inspect_err(|e| tracing::error!("{e}"))?,
    );
    let queue: Option<Arc<dyn ShopQueue>> =
        fanout::queue_from_env(&aws).map(|q| Arc::new(q) as Arc<dyn ShopQueue>);
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        let deadline_ms = SystemClock.now_ms() + LOCAL_RECONCILE_BUDGET_MS;
        let answer = fanout::scheduled(&reconciler, queue.as_deref(), deadline_ms).await?;
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let (reconciler, queue) = (Arc::clone(&reconciler), queue.clone());
        async move {
            let deadline_ms = event.context.deadline as i64;
            let answer = fanout::handle_event(&reconciler, queue, event.payload, deadline_ms);
            Ok::<_, Error>(answer.await?)
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handler_names_of_the_template_choose_the_function() {
        assert_eq!(Handler::named(Some("bridge")), Ok(Handler::Bridge));
        assert_eq!(Handler::named(Some("redrive")), Ok(Handler::Redrive));
        assert_eq!(Handler::named(Some("reconcile")), Ok(Handler::Reconcile));
        // Earlier deployments (Handler: bootstrap) and local runs without _HANDLER.
        assert_eq!(Handler::named(Some("bootstrap")), Ok(Handler::Bridge));
        assert_eq!(Handler::named(None), Ok(Handler::Bridge));
        let err = Handler::named(Some("report")).unwrap_err();
        assert!(err.contains("`report`"), "{err}");
    }
}
