//! The redrive consumer: re-sends conversions queued when RedTrack was down, through the same
//! claim protocol, with the message's visibility timeout growing per attempt so a conversion is
//! retried for more than 72 hours before SQS moves it to the dead-letter queue.

use crate::ledger::claim::{Claim, ClaimOutcome, Finish, Ledger, Via};
use crate::ops::clock::Clock;
use crate::postback::redtrack::Tracker;
use crate::postback::send::{Courier, QUEUED_KEEP_S, SendOutcome};
use crate::redrive::queue::{RedriveKind, RedriveMessage, RedriveQueue, SqsQueue};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Receives before SQS moves a message to the DLQ (the queue's `maxReceiveCount`).
pub const MAX_RECEIVES: u32 = 16;
/// Longest visibility timeout SQS allows (12 hours).
pub const MAX_VISIBILITY_S: u32 = 12 * 3600;

/// Visibility timeout after the `receive_count`-th failed receive: 1 min, doubling, capped at
/// 12 h. With [`MAX_RECEIVES`] receives the conversion is retried for about 77 hours.
pub fn visibility_after(receive_count: u32) -> u32 {
    doubling_from(60, receive_count)
}

/// Visibility timeout of a "record SENT" message after its `receive_count`-th failed receive:
/// 5 s, doubling, capped at 12 h (about 35 hours in all). Short at first: the record should say
/// `SENT` before the sending claim's lease ends and a redelivery may take it over.
pub fn record_sent_visibility_after(receive_count: u32) -> u32 {
    doubling_from(5, receive_count)
}

fn doubling_from(first_s: u64, receive_count: u32) -> u32 {
    let doubling = first_s << receive_count.saturating_sub(1).min(20);
    doubling.min(u64::from(MAX_VISIBILITY_S)) as u32
}

/// What to do with a message after handling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done (sent, already sent, recorded, or handed to the DLQ): delete it.
    Done,
    /// Try again after this many seconds.
    RetryAfter(u32),
    /// Done once this message (RedTrack accepted, `SENT` still to record) is queued in its
    /// place; never sent again.
    Requeue(Box<RedriveMessage>),
}

/// The consumer with its clients.
pub struct Redriver {
    pub ledger: Arc<dyn Ledger>,
    pub tracker: Arc<dyn Tracker>,
    pub clock: Arc<dyn Clock>,
    pub ttl_days: u32,
    /// Where permanently refused or unreadable conversions go at once.
    pub dlq: Option<Arc<dyn RedriveQueue>>,
}

impl Redriver {
    fn courier(&self) -> Courier<'_> {
        Courier {
            ledger: self.ledger.as_ref(),
            tracker: self.tracker.as_ref(),
            clock: self.clock.as_ref(),
            ttl_days: self.ttl_days,
        }
    }

    /// Handles one queued conversion; `receive_count` is SQS's `ApproximateReceiveCount`:
    /// claim → send → done, queued again, or handed to the DLQ; a "record SENT" message is
    /// recorded and never sent ([`Redriver::record_sent`]).
    pub async fn handle(
        &self,
        message: &RedriveMessage,
        receive_count: u32,
        deadline_ms: i64,
    ) -> Disposition {
        let now_ms = self.clock.now_ms();
        let deadline = Instant::now()
            + Duration::from_millis(deadline_ms.saturating_sub(now_ms).max(0) as u64);
        let claim = Claim::new(
            message.key.clone(),
            message.fingerprint.clone(),
            &message.order_id,
            &message.event,
            &message.conversion_type,
            now_ms,
            deadline_ms,
        )
        .with_sum(message.amount.clone(), message.currency.clone())
        .with_origin(
            message.via.unwrap_or(Via::Redrive),
            message.click_id.as_deref(),
        );
        if message.kind == RedriveKind::RecordSent {
            return self.record_sent(message, &claim, receive_count).await;
        }
        match self.claim(message, &claim, receive_count).await {
            Some(disposition) => disposition,
            None => self.send(message, &claim, receive_count, deadline).await,
        }
    }

    /// RedTrack accepted this conversion but its `SENT` write failed: records `SENT`, sends
    /// nothing. First as the attempt that sent (its record, whatever its lease, is still the
    /// claim); else, the record having changed hands (a redelivery took the expired lease, then
    /// queued, released or sent it), through a claim of its own: already `SENT` is done; a live
    /// lease is waited for; a record that can be claimed is claimed and recorded `SENT`.
    async fn record_sent(
        &self,
        message: &RedriveMessage,
        claim: &Claim,
        receive_count: u32,
    ) -> Disposition {
        let keep_s = i64::from(self.ttl_days) * 86_400;
        let retry = Disposition::RetryAfter(record_sent_visibility_after(receive_count));
        let claim = &as_sent(message, claim);
        if let Some(attempt) = &message.attempt {
            let sender = Claim {
                attempt: attempt.clone(),
                ..claim.clone()
            };
            let sent_at_ms = message.first_failure_ms;
            match self
                .ledger
                .finish(
                    &sender,
                    Finish::Sent,
                    sent_at_ms,
                    sent_at_ms / 1000 + keep_s,
                )
                .await
            {
                Ok(true) => {
                    log(message, "recorded_sent", receive_count, None, None);
                    return Disposition::Done;
                }
                Ok(false) => {}
                Err(err) => {
                    tracing::error!(order_id = %message.order_id, event_id = %message.event_id, error = %err, "the ledger failed; will retry");
                    return retry;
                }
            }
        }
        match self.claim(message, claim, receive_count).await {
            Some(Disposition::RetryAfter(_)) => retry,
            Some(disposition) => disposition,
            None if self.courier().record(claim, Finish::Sent, keep_s).await => {
                log(message, "recorded_sent", receive_count, None, None);
                Disposition::Done
            }
            None => {
                self.courier().release(claim).await;
                retry
            }
        }
    }

    /// Claims the queued conversion; `None` when this attempt holds the claim and must send,
    /// else what to do with the message.
    async fn claim(
        &self,
        message: &RedriveMessage,
        claim: &Claim,
        receive_count: u32,
    ) -> Option<Disposition> {
        let log = |outcome: &str| log(message, outcome, receive_count, None, None);
        match self.ledger.claim(claim).await {
            Ok(ClaimOutcome::Claimed) => None,
            Ok(ClaimOutcome::AlreadySent { .. }) => {
                log("duplicate");
                Some(Disposition::Done)
            }
            Ok(ClaimOutcome::InProgress { lease_until_ms }) => {
                log("in_progress");
                let wait = ((lease_until_ms - claim.now_ms).max(0) / 1000 + 1) as u32;
                Some(Disposition::RetryAfter(wait.clamp(1, MAX_VISIBILITY_S)))
            }
            Ok(ClaimOutcome::Conflict) => {
                log("dead_lettered");
                tracing::error!(order_id = %message.order_id, event_id = %message.event_id, "redrive conflict: the event ID was recorded for another conversion; handed to the DLQ");
                self.to_dlq(message).await;
                Some(Disposition::Done)
            }
            Err(err) => {
                tracing::error!(order_id = %message.order_id, event_id = %message.event_id, error = %err, "the ledger failed; will retry");
                Some(Disposition::RetryAfter(visibility_after(receive_count)))
            }
        }
    }

    /// Sends the claimed conversion's postback: done when RedTrack accepts, to the DLQ when it
    /// refuses (or the postback is unreadable), queued again when it is still down.
    async fn send(
        &self,
        message: &RedriveMessage,
        claim: &Claim,
        receive_count: u32,
        deadline: Instant,
    ) -> Disposition {
        let Ok(url) = url::Url::parse(&message.postback) else {
            tracing::error!(order_id = %message.order_id, event_id = %message.event_id, "queued postback is not a URL; handed to the DLQ");
            self.courier().release(claim).await;
            self.to_dlq(message).await;
            return Disposition::Done;
        };
        let log =
            |outcome, attempts, status| log(message, outcome, receive_count, attempts, status);
        match self.courier().send(claim, &url, deadline).await {
            SendOutcome::Accepted { accepted, recorded } => {
                log("sent", Some(accepted.attempts), Some(accepted.status));
                if recorded {
                    Disposition::Done
                } else {
                    let done = claim.after_send(accepted.attempts, Some(accepted.status));
                    Disposition::Requeue(Box::new(record_sent_message(message, &done)))
                }
            }
            SendOutcome::Refused(err) => {
                log("dead_lettered", Some(err.attempts()), err.status());
                self.to_dlq(message).await;
                Disposition::Done
            }
            SendOutcome::Retryable(err) => {
                log("queued", Some(err.attempts()), err.status());
                let done = claim.after_send(err.attempts(), err.status());
                self.courier()
                    .record(&done, Finish::Queued, QUEUED_KEEP_S)
                    .await;
                Disposition::RetryAfter(visibility_after(receive_count))
            }
        }
    }

    async fn to_dlq(&self, message: &RedriveMessage) {
        match &self.dlq {
            Some(dlq) => {
                if let Err(err) = dlq.enqueue(message, 0).await {
                    tracing::error!(order_id = %message.order_id, event_id = %message.event_id, error = %err, "could not hand the conversion to the DLQ");
                }
            }
            None => {
                tracing::error!(order_id = %message.order_id, event_id = %message.event_id, "no DLQ configured (REDRIVE_DLQ_URL); conversion dropped")
            }
        }
    }
}

/// The "record SENT, do not send" message that replaces a sent one whose `SENT` write failed.
fn record_sent_message(message: &RedriveMessage, claim: &Claim) -> RedriveMessage {
    RedriveMessage {
        kind: RedriveKind::RecordSent,
        attempt: Some(claim.attempt.clone()),
        postback: String::new(),
        first_failure_ms: claim.now_ms,
        attempts: claim.attempts,
        rt_status: claim.rt_status,
        ..message.clone()
    }
}

/// The claim of a "record SENT" message carrying what the sender's send saw (its attempts and
/// RedTrack's status), when the message says.
fn as_sent(message: &RedriveMessage, claim: &Claim) -> Claim {
    match message.attempts {
        Some(attempts) => claim.after_send(attempts, message.rt_status),
        None => claim.clone(),
    }
}

/// The `redrive` decision log line of one message, and its metric.
fn log(
    message: &RedriveMessage,
    outcome: &str,
    receive_count: u32,
    attempts: Option<u32>,
    status: Option<u16>,
) {
    tracing::info!(
        order_id = %message.order_id,
        event = %message.event,
        event_id = %message.event_id,
        conversion_type = %message.conversion_type,
        outcome,
        receive_count,
        attempts,
        redtrack_status = status,
        "redrive"
    );
    crate::ops::metrics::conversion(outcome, None);
}

/// The SQS-triggered Lambda around a [`Redriver`].
pub struct Consumer {
    pub redriver: Redriver,
    pub sqs: aws_sdk_sqs::Client,
    /// The queue the messages come from (for their visibility timeout).
    pub queue_url: String,
    pub dlq_url: Option<String>,
}

impl Consumer {
    /// Handles one batch; the messages to retry are reported as batch item failures, each made
    /// invisible for its own, growing, delay first. A message is only begun while the time left
    /// holds a claim and the calls after it ([`time_for_a_message`]); the rest of the batch is
    /// put off for the delay its receive earned, as a retry is, so an invocation never runs
    /// into its timeout (which would fail the whole batch, sent messages included, and bring the
    /// rest back after the queue's 180 s, spending their receives toward the DLQ far sooner than
    /// the ~77 hours [`visibility_after`] spreads them over).
    pub async fn handle_batch(&self, event: SqsEvent, deadline_ms: i64) -> SqsBatchResponse {
        let left_ms = deadline_ms
            .saturating_sub(self.redriver.clock.now_ms())
            .max(0);
        let deadline = Instant::now() + Duration::from_millis(left_ms as u64);
        let mut response = SqsBatchResponse::default();
        let mut put_off = 0usize;
        for record in event.records {
            let id = record.message_id.clone().unwrap_or_default();
            let receive_count = receive_count(&record);
            let body = record.body.as_deref().unwrap_or("");
            let parsed = serde_json::from_str::<RedriveMessage>(body);
            let disposition = if !time_for_a_message(deadline) {
                put_off += 1;
                Disposition::RetryAfter(match &parsed {
                    Ok(m) if m.kind == RedriveKind::RecordSent => {
                        record_sent_visibility_after(receive_count)
                    }
                    _ => visibility_after(receive_count),
                })
            } else {
                match parsed {
                    Ok(message) => {
                        let disposition = self
                            .redriver
                            .handle(&message, receive_count, deadline_ms)
                            .await;
                        self.requeue(disposition).await
                    }
                    Err(_) => {
                        tracing::error!(message_id = %id, "unreadable redrive message; handed to the DLQ");
                        self.raw_to_dlq(body).await
                    }
                }
            };
            if let Disposition::RetryAfter(seconds) = disposition {
                self.delay(&record, &id, seconds).await;
                response.batch_item_failures.push(item_failure(id));
            }
        }
        if put_off > 0 {
            tracing::warn!(
                put_off,
                "too little of the invocation left to begin these messages; put off to their next receive"
            );
        }
        response
    }

    /// Makes the message invisible for `seconds` (its retry's delay).
    async fn delay(&self, record: &SqsMessage, id: &str, seconds: u32) {
        let Some(receipt) = &record.receipt_handle else {
            return;
        };
        if let Err(err) = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds as i32)
            .send()
            .await
        {
            tracing::warn!(message_id = %id, error = %aws_sdk_sqs::Error::from(err), "could not delay the retry");
        }
    }

    /// Queues the "record SENT" message a [`Disposition::Requeue`] carries; the handled message is
    /// done either way (it must not be sent again). A failure is logged: only `rdtk_event_id`
    /// then guards against a repeat.
    async fn requeue(&self, disposition: Disposition) -> Disposition {
        let Disposition::Requeue(message) = disposition else {
            return disposition;
        };
        let queue = SqsQueue::new(self.sqs.clone(), self.queue_url.clone());
        if let Err(err) = queue.enqueue(&message, 0).await {
            tracing::error!(order_id = %message.order_id, event_id = %message.event_id, error = %err, "SENT not recorded and not queued; rdtk_event_id guards against a repeat");
        }
        Disposition::Done
    }

    async fn raw_to_dlq(&self, body: &str) -> Disposition {
        let Some(dlq) = &self.dlq_url else {
            return Disposition::RetryAfter(MAX_VISIBILITY_S);
        };
        match self
            .sqs
            .send_message()
            .queue_url(dlq)
            .message_body(body)
            .send()
            .await
        {
            Ok(_) => Disposition::Done,
            Err(_) => Disposition::RetryAfter(MAX_VISIBILITY_S),
        }
    }
}

/// A dead-lettered message's body as the operator moves it back: marked `via` = `operator`, so
/// the record its re-send leaves says so; a body that does not read as a message moves as it is.
fn by_operator(body: &str) -> String {
    match serde_json::from_str::<RedriveMessage>(body) {
        Ok(mut message) => {
            message.via = Some(Via::Operator);
            serde_json::to_string(&message).unwrap_or_else(|_| body.to_owned())
        }
        Err(_) => body.to_owned(),
    }
}

/// Moves up to `max` messages from one queue to another (the DLQ back to the redrive queue
/// after an outage), deleting each only after it was sent. Returns how many moved.
pub async fn move_messages(
    client: &aws_sdk_sqs::Client,
    from_url: &str,
    to_url: &str,
    max: usize,
) -> Result<usize, aws_sdk_sqs::Error> {
    let mut moved = 0;
    while moved < max {
        let batch = client
            .receive_message()
            .queue_url(from_url)
            .max_number_of_messages(10.min((max - moved) as i32))
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .send()
            .await?;
        let messages = batch.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let (Some(body), Some(receipt)) = (m.body(), m.receipt_handle()) else {
                continue;
            };
            client
                .send_message()
                .queue_url(to_url)
                .message_body(by_operator(body))
                .send()
                .await?;
            client
                .delete_message()
                .queue_url(from_url)
                .receipt_handle(receipt)
                .send()
                .await?;
            moved += 1;
        }
    }
    Ok(moved)
}

/// Whether a message may still be begun before `deadline`: the time left holds its claim
/// ([`crate::ops::budget::BEFORE_CLAIM`]) and one more SQS call (putting off the messages after
/// it). Checked before every message, the first too: the consumer's 30 s timeout always holds one.
pub fn time_for_a_message(deadline: Instant) -> bool {
    use crate::ops::budget::{BEFORE_CLAIM, SDK_OPERATION};
    deadline.saturating_duration_since(Instant::now()) >= BEFORE_CLAIM + SDK_OPERATION
}

/// SQS's `ApproximateReceiveCount` of a message Lambda's poller handed over (1 when absent).
pub fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

/// The batch item failure that has SQS deliver the message `id` again.
pub fn item_failure(id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = id;
    failure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_grows_to_more_than_72_hours_before_the_dlq() {
        assert_eq!(visibility_after(1), 60);
        assert_eq!(visibility_after(2), 120);
        assert_eq!(visibility_after(30), MAX_VISIBILITY_S);
        let total: u32 = (1..MAX_RECEIVES).map(visibility_after).sum();
        assert!(total >= 72 * 3600, "retried for {} h only", total / 3600);
        assert!(
            total <= 96 * 3600,
            "retried for {} h: more than the 4 days planned",
            total / 3600
        );
    }

    /// `maxReceiveCount` of the redrive queue in template.yaml is [`MAX_RECEIVES`]: they cannot
    /// be one line, so this proves they agree.
    #[test]
    fn the_template_redrives_after_max_receives() {
        let template = include_str!("../../template.yaml");
        assert_eq!(template_max_receive_counts(template), vec![MAX_RECEIVES]);
        let changed = template.replace("maxReceiveCount: 16", "maxReceiveCount: 5");
        assert_eq!(
            template_max_receive_counts(&changed),
            vec![5],
            "the scan reads the value"
        );
    }

    /// Every `maxReceiveCount` under the `RedriveQueue` resource's `RedrivePolicy`.
    fn template_max_receive_counts(template: &str) -> Vec<u32> {
        let indent = |l: &str| l.len() - l.trim_start().len();
        let mut lines = template
            .lines()
            .skip_while(|l| l.trim_end() != "  RedriveQueue:");
        lines
            .next()
            .expect("template.yaml has a RedriveQueue resource");
        lines
            .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || indent(l) > 2)
            .filter_map(|l| l.trim().strip_prefix("maxReceiveCount:"))
            .map(|v| {
                let v = v
                    .split('#')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches(['"', '\'']);
                v.parse().expect("maxReceiveCount is a number")
            })
            .collect()
    }
}
