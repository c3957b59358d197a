//! The Lambda entry points: one program serves every function of the stack. Lambda passes each
//! function's `Handler` (template.yaml) to the process as `_HANDLER`, and [`run`] starts the
//! matching handler, so `sam build` compiles and links the crate once for all functions
//! (docs/performance.md). Each handler also runs locally under a binary of its own name
//! (`cartpanda-redtrack`, `cartpanda-redtrack-redrive`).

use crate::queue::{RedriveQueue, SqsQueue};
use crate::stores::StoreCache;
use crate::tracker::{RedTrackClient, RetryPolicy};
use crate::verify::CartpandaApi;
use crate::{bridge::Bridge, clock::SystemClock, config::Config, dynamo::DynamoStore};
use std::sync::Arc;

/// The boxed error both runtimes return.
pub type Error = lambda_runtime::Error;

/// A function of the stack, by its `Handler` in template.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `bridge`: the webhook function behind the HTTP API.
    Bridge,
    /// `redrive`: the SQS consumer of the redrive queue.
    Redrive,
}

impl Handler {
    /// The handler a `_HANDLER` value names. Unset, empty or `bootstrap` (the value of
    /// deployments made before handlers were named, and of `cargo lambda deploy`) is the bridge.
    pub fn named(handler: Option<&str>) -> Result<Self, String> {
        match handler.map(str::trim).unwrap_or("") {
            "" | "bootstrap" | "bridge" => Ok(Handler::Bridge),
            "redrive" => Ok(Handler::Redrive),
            other => Err(format!(
                "unknown handler `{other}` (_HANDLER): this program serves `bridge` and `redrive`"
            )),
        }
    }
}

/// Runs the handler `_HANDLER` names until the process is stopped.
pub async fn run() -> Result<(), Error> {
    match Handler::named(std::env::var("_HANDLER").ok().as_deref()) {
        Ok(Handler::Bridge) => bridge().await,
        Ok(Handler::Redrive) => redrive().await,
        Err(problem) => {
            crate::logging::init();
            tracing::error!("{problem}");
            Err(problem.into())
        }
    }
}

/// The webhook function: Cartpanda deliveries in, RedTrack postbacks out.
pub async fn bridge() -> Result<(), Error> {
    crate::logging::init();
    let config = Config::from_env().inspect_err(|e| tracing::error!("{e}"))?;
    let aws = crate::aws::load().await;
    let store = Arc::new(DynamoStore::new(
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
        store: store.clone(),
        tracker: Arc::new(tracker),
        clock: Arc::new(SystemClock),
        queue,
        stores: Some(StoreCache::new(store)),
        orders: Some(Arc::new(orders)),
    };
    crate::runtime::run(Arc::new(bridge)).await
}

/// The redrive consumer: SQS batches of queued conversions, re-sent through the claim protocol.
pub async fn redrive() -> Result<(), Error> {
    use crate::config::RedriveConfig;
    use crate::redrive::{Consumer, Redriver};
    use aws_lambda_events::event::sqs::SqsEvent;
    use lambda_runtime::{LambdaEvent, service_fn};

    crate::logging::init();
    let config = RedriveConfig::from_env().inspect_err(|e| tracing::error!("{e}"))?;
    let aws = crate::aws::load().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let dlq = config
        .dlq_url
        .clone()
        .map(|url| Arc::new(SqsQueue::new(sqs.clone(), url)) as Arc<dyn RedriveQueue>);
    let redriver = Redriver {
        store: Arc::new(DynamoStore::new(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handler_names_of_the_template_choose_the_function() {
        assert_eq!(Handler::named(Some("bridge")), Ok(Handler::Bridge));
        assert_eq!(Handler::named(Some("redrive")), Ok(Handler::Redrive));
        // Earlier deployments (Handler: bootstrap) and local runs without _HANDLER.
        assert_eq!(Handler::named(Some("bootstrap")), Ok(Handler::Bridge));
        assert_eq!(Handler::named(None), Ok(Handler::Bridge));
        let err = Handler::named(Some("reconcile")).unwrap_err();
        assert!(err.contains("`reconcile`"), "{err}");
    }
}
