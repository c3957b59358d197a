//! The redrive queue: a conversion whose postback could not be delivered within the invocation
//! waits in SQS (encrypted; the message holds the rendered postback, which contains PII) and is
//! re-sent by the redrive consumer through the same claim protocol.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What the consumer does with a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedriveKind {
    /// Send the postback (what every message meant before `kind` existed).
    #[default]
    Send,
    /// RedTrack accepted the postback but the `SENT` write failed: record `SENT`, never send.
    /// Carries the claim's `attempt` and no postback.
    RecordSent,
}

/// Everything a re-send needs. Never logged: `postback` holds PII.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveMessage {
    /// Format version.
    pub v: u32,
    /// What to do; absent in messages queued before it existed (they mean [`RedriveKind::Send`]).
    #[serde(default, skip_serializing_if = "is_send")]
    pub kind: RedriveKind,
    /// The attempt ID of the claim that sent ([`RedriveKind::RecordSent`]): the consumer records
    /// `SENT` as that attempt while its record is still in the way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    pub key: String,
    pub event_id: String,
    pub fingerprint: String,
    pub order_id: String,
    pub event: String,
    pub conversion_type: String,
    /// The rendered postback; empty for [`RedriveKind::RecordSent`] (nothing to send, so a
    /// consumer that predates `kind` hands such a message to the DLQ rather than sending it).
    pub postback: String,
    /// When the first attempt failed, epoch milliseconds; for [`RedriveKind::RecordSent`], when
    /// RedTrack accepted (the `sent_at_ms` recorded).
    pub first_failure_ms: i64,
    /// The sum and currency, kept on the record when the consumer claims again (the report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The click ID sent, kept on the record when the consumer claims again; absent in messages
    /// queued before it existed (the record then says "unknown").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_id: Option<String>,
    /// The input the consumer's claim records: absent = the redrive consumer itself
    /// ([`crate::ledger::claim::Via::Redrive`]); `operator` once `redrive --from <DLQ>` moved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<crate::ledger::claim::Via>,
    /// [`RedriveKind::RecordSent`]: the postback attempts the sender made and RedTrack's answer,
    /// recorded with `SENT` (absent in older messages: "unknown").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rt_status: Option<u16>,
}

fn is_send(kind: &RedriveKind) -> bool {
    *kind == RedriveKind::Send
}

impl std::fmt::Debug for RedriveMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedriveMessage")
            .field("event_id", &self.event_id)
            .field("order_id", &self.order_id)
            .field("conversion_type", &self.conversion_type)
            .field("kind", &self.kind)
            .field("postback", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the redrive queue is unavailable: {0}")]
pub struct QueueError(pub String);

#[async_trait]
pub trait RedriveQueue: Send + Sync {
    /// Queues a message, invisible for `delay_s` seconds (at most 900).
    async fn enqueue(&self, message: &RedriveMessage, delay_s: u32) -> Result<(), QueueError>;
}

/// Amazon SQS (or moto's SQS locally, through `AWS_ENDPOINT_URL_SQS`).
#[cfg(feature = "runtime")]
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

#[cfg(feature = "runtime")]
impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            url: url.into(),
        }
    }
}

#[cfg(feature = "runtime")]
#[async_trait]
impl RedriveQueue for SqsQueue {
    async fn enqueue(&self, message: &RedriveMessage, delay_s: u32) -> Result<(), QueueError> {
        let body = serde_json::to_string(message).map_err(|e| QueueError(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay_s.min(900) as i32)
            .send()
            .await
            .map_err(|e| {
                let code = aws_sdk_sqs::error::ProvideErrorMetadata::code(&e).map(str::to_owned);
                QueueError(code.unwrap_or_else(|| "send failed".to_owned()))
            })?;
        Ok(())
    }
}

/// An in-memory queue, for unit tests of the logic above it.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    pub messages: std::sync::Mutex<Vec<(RedriveMessage, u32)>>,
}

#[async_trait]
impl RedriveQueue for MemoryQueue {
    async fn enqueue(&self, message: &RedriveMessage, delay_s: u32) -> Result<(), QueueError> {
        self.messages
            .lock()
            .expect("memory queue lock")
            .push((message.clone(), delay_s));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_queued_before_kinds_existed_still_reads_as_a_send() {
        let old = r#"{"v":1,"key":"evt#1-purchase","event_id":"1-purchase","fingerprint":"fp","order_id":"1","event":"order.paid","conversion_type":"Purchase","postback":"https://t.example/postback?x=1","first_failure_ms":5}"#;
        let message: RedriveMessage = serde_json::from_str(old).unwrap();
        assert_eq!(message.kind, RedriveKind::Send);
        assert_eq!(message.attempt, None);
        // And a send is written as before: no `kind` field.
        let again = serde_json::to_string(&message).unwrap();
        assert!(!again.contains("kind"), "{again}");
        let record_sent = RedriveMessage {
            kind: RedriveKind::RecordSent,
            attempt: Some("a-1".to_owned()),
            ..message
        };
        let text = serde_json::to_string(&record_sent).unwrap();
        assert!(text.contains(r#""kind":"record_sent""#), "{text}");
        assert_eq!(
            serde_json::from_str::<RedriveMessage>(&text).unwrap(),
            record_sent
        );
    }
}
