//! Reconciliation fanned out over a queue, for deployments with many shops. With
//! `RECONCILE_QUEUE_URL` set (the SAM stack sets it), the scheduled invocation only enqueues one
//! message per due shop ([`scheduled`]) and the same function, as the queue's consumer (its SQS
//! event source mapping), reconciles one shop per message within its own invocation's deadline
//! ([`ShopConsumer`]; [`handle_event`] tells the two events apart): shops run side by side, a
//! slow or failing shop holds up no other, and a shop that fails for a reason that may pass
//! (Cartpanda or DynamoDB unavailable) is retried by SQS, then lands in the queue's DLQ. Without
//! the variable the scheduled invocation reconciles every due shop itself
//! ([`crate::reconcile::run_scheduled`]), as small deployments and local runs do.
//!
//! A message carries the shop's name only (never its API token: the consumer reads the shop's
//! settings and token itself, as a run without the queue does).

use crate::reconcile::error::ReconcileError;
use crate::reconcile::run::Reconciler;
use crate::reconcile::shops::{self, ShopState};
use crate::reconcile::{DEFAULT_SHOP, Scheduled};
use crate::redrive::consumer::{item_failure, receive_count};
use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use serde::{Deserialize, Serialize};

/// The variable that turns the fan-out on: the URL of the queue of shops to reconcile.
pub const QUEUE_VAR: &str = "RECONCILE_QUEUE_URL";

/// The format version of [`ShopMessage`].
pub const MESSAGE_VERSION: u32 = 1;

/// One shop to reconcile, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopMessage {
    pub v: u32,
    /// The shop's name; `None` for the default shop.
    pub shop: Option<String>,
    /// When it was queued (epoch milliseconds): the log says how long it waited.
    pub queued_at_ms: i64,
}

impl ShopMessage {
    fn name(&self) -> &str {
        self.shop.as_deref().unwrap_or(DEFAULT_SHOP)
    }
}

/// The queue of shops to reconcile.
#[async_trait]
pub trait ShopQueue: Send + Sync {
    /// Queues the messages; answers those it could not queue, each with why.
    async fn enqueue(&self, messages: &[ShopMessage]) -> Vec<(ShopMessage, String)>;
}

/// Amazon SQS (or moto's, through `AWS_ENDPOINT_URL_SQS`): one `SendMessage` per shop, ten in
/// flight at a time. (Not `SendMessageBatch`: IAM authorises it as `sqs:SendMessage`, which the
/// stack test's evaluator and moto's enforcement cannot tell; ten in flight is about as fast.)
#[derive(Debug, Clone)]
pub struct SqsShopQueue {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
}

impl SqsShopQueue {
    async fn send(&self, message: ShopMessage) -> Result<(), (ShopMessage, String)> {
        let body = serde_json::to_string(&message).map_err(|e| (message.clone(), e.to_string()))?;
        let sent = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await;
        sent.map(|_| ()).map_err(|e| {
            let code = aws_sdk_sqs::error::ProvideErrorMetadata::code(&e).map(str::to_owned);
            (message, code.unwrap_or_else(|| "send failed".to_owned()))
        })
    }
}

#[async_trait]
impl ShopQueue for SqsShopQueue {
    async fn enqueue(&self, messages: &[ShopMessage]) -> Vec<(ShopMessage, String)> {
        let mut failed = Vec::new();
        for chunk in messages.chunks(10) {
            let mut sends = tokio::task::JoinSet::new();
            for message in chunk {
                let (queue, message) = (self.clone(), message.clone());
                sends.spawn(async move { queue.send(message).await });
            }
            while let Some(sent) = sends.join_next().await {
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(failure)) => failed.push(failure),
                    Err(e) => {
                        tracing::error!(error = %e, "reconcile: a send to the queue of shops panicked")
                    }
                }
            }
        }
        failed
    }
}

/// The queue `RECONCILE_QUEUE_URL` names, when it is set (and not empty).
pub fn queue_from_env(aws: &aws_config::SdkConfig) -> Option<SqsShopQueue> {
    let url = std::env::var(QUEUE_VAR).ok()?.trim().to_owned();
    (!url.is_empty()).then(|| SqsShopQueue {
        client: aws_sdk_sqs::Client::new(aws),
        url,
    })
}

/// What a fanned-out scheduled run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Fanned {
    /// Shops queued for the consumer.
    pub queued: usize,
    /// Shops that could not be queued (they are reconciled by the next run).
    pub failed: Vec<String>,
}

/// A scheduled run's answer: each shop's summary (no queue), or what was queued.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Ran(Scheduled),
    Queued(Fanned),
}

/// The scheduled invocation: with a queue, one message per due shop; without, every due shop
/// reconciled here ([`crate::reconcile::run_scheduled`]).
pub async fn scheduled(
    reconciler: &Reconciler,
    queue: Option<&dyn ShopQueue>,
    deadline_ms: i64,
) -> Result<Answer, ReconcileError> {
    let Some(queue) = queue else {
        return crate::reconcile::run_scheduled(reconciler, deadline_ms)
            .await
            .map(Answer::Ran);
    };
    let now_ms = reconciler.bridge.clock.now_ms();
    let messages: Vec<ShopMessage> = shops::due_shops(reconciler)
        .await?
        .into_iter()
        .map(|shop| ShopMessage {
            v: MESSAGE_VERSION,
            shop,
            queued_at_ms: now_ms,
        })
        .collect();
    let failed = queue.enqueue(&messages).await;
    for (message, why) in &failed {
        tracing::error!(shop = message.name(), error = %why, "reconcile: shop not queued; the next run queues it again");
    }
    let mut out = Fanned {
        queued: messages.len() - failed.len(),
        failed: failed.iter().map(|(m, _)| m.name().to_owned()).collect(),
    };
    out.failed.sort();
    if messages.is_empty() {
        tracing::warn!("no shop has reconciliation on (RECONCILE=true, or a shop's --reconcile)");
    }
    tracing::info!(
        queued = out.queued,
        failed = out.failed.len(),
        "reconcile: shops queued"
    );
    emit(&[("ReconcileShopsFailed", out.failed.len() as u64)]);
    Ok(Answer::Queued(out))
}

/// The reconcile function's invocation: an SQS batch of the queue of shops is consumed
/// (answered with its batch item failures); any other event is the schedule's ([`scheduled`]:
/// what was queued, or the shops' summaries). A batch without a queue to go on with is refused
/// (the invocation fails, SQS delivers the batch again).
pub async fn handle_event(
    reconciler: &std::sync::Arc<Reconciler>,
    queue: Option<std::sync::Arc<dyn ShopQueue>>,
    event: serde_json::Value,
    deadline_ms: i64,
) -> Result<serde_json::Value, String> {
    let to_json = |v: Result<serde_json::Value, serde_json::Error>| v.map_err(|e| e.to_string());
    if !is_sqs_batch(&event) {
        let answer = scheduled(reconciler, queue.as_deref(), deadline_ms).await?;
        return to_json(serde_json::to_value(answer));
    }
    let Some(queue) = queue else {
        let problem = format!("an SQS batch arrived but {QUEUE_VAR} is not set");
        tracing::error!("{problem}");
        return Err(problem);
    };
    let batch: SqsEvent = serde_json::from_value(event).map_err(|e| e.to_string())?;
    let consumer = ShopConsumer {
        reconciler: std::sync::Arc::clone(reconciler),
        queue,
    };
    let response = consumer.handle_batch(batch, deadline_ms).await;
    to_json(serde_json::to_value(response))
}

/// Whether an event is an SQS batch (`Records` of `eventSource` `aws:sqs`).
fn is_sqs_batch(event: &serde_json::Value) -> bool {
    event["Records"]
        .as_array()
        .and_then(|r| r.first())
        .is_some_and(|r| r["eventSource"] == "aws:sqs")
}

/// What the consumer does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done: delete it.
    Done,
    /// Report it failed: SQS delivers it again after the queue's visibility timeout, and moves
    /// it to the DLQ after its `maxReceiveCount`.
    Retry,
}

/// The consumer of the queue of shops.
pub struct ShopConsumer {
    pub reconciler: std::sync::Arc<Reconciler>,
    /// Where a shop cut short by its deadline is queued again, to go on at once.
    pub queue: std::sync::Arc<dyn ShopQueue>,
}

impl ShopConsumer {
    /// Handles a batch (the stack's mapping hands over one message at a time), one shop after
    /// the other within the invocation's deadline; those to retry are reported as batch item
    /// failures.
    pub async fn handle_batch(&self, event: SqsEvent, deadline_ms: i64) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for record in event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let receive_count = receive_count(&record);
            let body = record.body.as_deref().unwrap_or("");
            let disposition = match serde_json::from_str::<ShopMessage>(body) {
                Ok(message) => self.handle(&message, receive_count, deadline_ms).await,
                Err(_) => {
                    tracing::error!(message_id = %id, "unreadable reconcile message; retried, then the DLQ");
                    Disposition::Retry
                }
            };
            if disposition == Disposition::Retry {
                response.batch_item_failures.push(item_failure(id));
            }
        }
        response
    }

    /// Reconciles the message's shop ([`shops::reconcile_one`]): done when it ran to the end,
    /// failed for good (the operator's: counted in `ReconcileShopsFailed`), is no longer
    /// reconciled, or another run holds its lease (that run covers it); queued again when its
    /// deadline cut it short (it goes on from its cursor); retried when it failed for a reason
    /// that may pass.
    pub async fn handle(
        &self,
        message: &ShopMessage,
        receive_count: u32,
        deadline_ms: i64,
    ) -> Disposition {
        let shop = message.shop.as_deref();
        let outcome = shops::reconcile_one(&self.reconciler, shop, deadline_ms).await;
        let (disposition, what) = match &outcome.state {
            ShopState::Off => (Disposition::Done, "not_reconciled"),
            ShopState::Busy => (Disposition::Done, "busy"),
            ShopState::Broken { error, .. } => (retry_if(error.retryable()), "setup_failed"),
            ShopState::Ran(summary) => match &summary.error {
                Some(error) => (retry_if(error.retryable()), "failed"),
                None if summary.complete => (Disposition::Done, "complete"),
                None => (self.go_on(message).await, "cut_short"),
            },
        };
        let waited_ms = self.reconciler.bridge.clock.now_ms() - message.queued_at_ms;
        tracing::info!(
            shop = message.name(),
            outcome = what,
            retry = disposition == Disposition::Retry,
            receive_count,
            waited_ms,
            silent = outcome.daily.silent,
            "reconcile: shop message"
        );
        if outcome.daily.silent {
            let silent = [message.name()];
            tracing::error!(silent = ?silent, "reconcile: shops need a look");
        }
        emit(&[
            ("ReconcileShopsFailed", u64::from(outcome.failed())),
            ("ReconcileShopsStale", u64::from(outcome.stale())),
            ("ShopsSilent", u64::from(outcome.daily.silent)),
        ]);
        disposition
    }

    /// Queues the shop again (from now), the message being done; retried if that fails.
    async fn go_on(&self, message: &ShopMessage) -> Disposition {
        let next = ShopMessage {
            queued_at_ms: self.reconciler.bridge.clock.now_ms(),
            ..message.clone()
        };
        let failed = self.queue.enqueue(std::slice::from_ref(&next)).await;
        retry_if(!failed.is_empty())
    }
}

fn retry_if(retry: bool) -> Disposition {
    if retry {
        Disposition::Retry
    } else {
        Disposition::Done
    }
}

/// Writes one EMF line of counts to stdout.
fn emit(metrics: &[(&str, u64)]) {
    let line = crate::reconcile::run::emf(metrics);
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut stdout, format!("{line}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_shop_and_the_default_shop_by_null() {
        let named = ShopMessage {
            v: MESSAGE_VERSION,
            shop: Some("loja-um".to_owned()),
            queued_at_ms: 5,
        };
        let text = serde_json::to_string(&named).unwrap();
        assert_eq!(text, r#"{"v":1,"shop":"loja-um","queued_at_ms":5}"#);
        assert_eq!(serde_json::from_str::<ShopMessage>(&text).unwrap(), named);
        let default: ShopMessage =
            serde_json::from_str(r#"{"v":1,"shop":null,"queued_at_ms":5}"#).unwrap();
        assert_eq!(default.name(), DEFAULT_SHOP);
        assert!(serde_json::from_str::<ShopMessage>(r#"{"shop":"x"}"#).is_err());
    }

    #[test]
    fn an_sqs_batch_is_told_from_the_schedules_event() {
        let batch = serde_json::json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]});
        assert!(is_sqs_batch(&batch));
        let schedule = serde_json::json!({"source": "aws.scheduler", "detail": {}});
        assert!(!is_sqs_batch(&schedule));
        assert!(!is_sqs_batch(&serde_json::json!({"Records": []})));
        assert!(!is_sqs_batch(&serde_json::json!({})));
    }

    #[test]
    fn a_fanned_run_answers_counts_and_names() {
        let answer = Answer::Queued(Fanned {
            queued: 2,
            failed: vec!["loja-dois".to_owned()],
        });
        assert_eq!(
            serde_json::to_value(answer).unwrap(),
            serde_json::json!({"queued": 2, "failed": ["loja-dois"]})
        );
    }
}
