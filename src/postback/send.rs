//! Sending a claimed conversion and recording how it ended: shared by the webhook path
//! ([`crate::bridge`]) and the redrive consumer ([`crate::redrive::consumer`]).

use crate::ledger::claim::{Claim, Finish, Ledger};
use crate::ops::clock::Clock;
use crate::postback::redtrack::{Accepted, SendError, Tracker};
use std::time::Instant;
use url::Url;

/// How long a permanently refused conversion stays on record for the operator.
pub const FAILED_KEEP_S: i64 = 7 * 86_400;
/// How long a queued conversion's record outlives the queue's message retention (14 days).
pub const QUEUED_KEEP_S: i64 = 15 * 86_400;

/// The outcome of one send of a claimed conversion.
#[derive(Debug)]
pub enum SendOutcome {
    /// RedTrack accepted; the claim is recorded `SENT`.
    Accepted(Accepted),
    /// RedTrack refused for good (4xx other than 429); the claim is recorded `FAILED`.
    Refused(SendError),
    /// RedTrack was unreachable or failing; nothing recorded yet: the caller queues or releases.
    Retryable(SendError),
}

/// The ledger, tracker and clock a send needs.
pub struct Courier<'a> {
    pub ledger: &'a dyn Ledger,
    pub tracker: &'a dyn Tracker,
    pub clock: &'a dyn Clock,
    pub ttl_days: u32,
}

impl Courier<'_> {
    /// Sends the postback of a conversion this attempt holds the claim of.
    pub async fn send(&self, claim: &Claim, url: &Url, deadline: Instant) -> SendOutcome {
        match self.tracker.send(url, deadline).await {
            Ok(accepted) => {
                let keep = i64::from(self.ttl_days) * 86_400;
                self.record(claim, Finish::Sent, keep).await;
                SendOutcome::Accepted(accepted)
            }
            Err(err @ SendError::Rejected { .. }) => {
                tracing::error!(
                    order_id = %claim.order_id,
                    event_id = %event_id(claim),
                    redtrack_status = err.status(),
                    error = %err,
                    "RedTrack refused the postback; not retried"
                );
                self.record(claim, Finish::Failed, FAILED_KEEP_S).await;
                SendOutcome::Refused(err)
            }
            Err(err) => SendOutcome::Retryable(err),
        }
    }

    /// Records how the claim ended, kept for `keep_s` seconds. A failure to record is logged:
    /// after a send, `rdtk_event_id` still guards against a repeat.
    pub async fn record(&self, claim: &Claim, finish: Finish, keep_s: i64) -> bool {
        let now_ms = self.clock.now_ms();
        match self
            .ledger
            .finish(claim, finish, now_ms, now_ms / 1000 + keep_s)
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(
                    order_id = %claim.order_id,
                    event_id = %event_id(claim),
                    status = finish.status(),
                    "the lease ran out before the outcome was recorded; rdtk_event_id guards against a repeat"
                );
                false
            }
            Err(err) => {
                tracing::error!(
                    order_id = %claim.order_id,
                    event_id = %event_id(claim),
                    status = finish.status(),
                    error = %err,
                    "could not record the outcome; rdtk_event_id guards against a repeat"
                );
                false
            }
        }
    }

    /// Gives the claim up so a redelivery can send.
    pub async fn release(&self, claim: &Claim) {
        if let Err(err) = self.ledger.release(claim).await {
            tracing::error!(order_id = %claim.order_id, event_id = %event_id(claim), error = %err, "could not release the claim");
        }
    }
}

/// The event ID inside a record key (`evt#<id>` / `dry#<id>`).
pub fn event_id(claim: &Claim) -> &str {
    claim
        .key
        .split_once('#')
        .map_or(claim.key.as_str(), |(_, id)| id)
}
