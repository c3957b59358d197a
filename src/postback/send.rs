//! Sending a claimed conversion and recording how it ended: shared by the webhook path
//! ([`crate::bridge`]) and the redrive consumer ([`crate::redrive::consumer`]).

use crate::ledger::claim::{Claim, Finish, Ledger, LedgerError};
use crate::ops::budget;
use crate::ops::clock::Clock;
use crate::postback::redtrack::{Accepted, SendError, Tracker};
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// How long a permanently refused conversion stays on record for the operator.
pub const FAILED_KEEP_S: i64 = 7 * 86_400;
/// How long a queued conversion's record outlives the queue's message retention (14 days).
pub const QUEUED_KEEP_S: i64 = 15 * 86_400;

/// The outcome of one send of a claimed conversion.
#[derive(Debug)]
pub enum SendOutcome {
    /// RedTrack accepted. `recorded`: the claim is recorded `SENT`; when false, the `SENT` write
    /// kept failing within the invocation's time (or the lease was lost) and the caller hands the
    /// outcome to the redrive queue ([`crate::redrive::queue::RedriveKind::RecordSent`]).
    Accepted { accepted: Accepted, recorded: bool },
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
    /// Sends the postback of a conversion this attempt holds the claim of. What is recorded
    /// carries the attempts and RedTrack's last status ([`Claim::after_send`]); a caller that
    /// records a [`SendOutcome::Retryable`] (`QUEUED`) does the same.
    pub async fn send(&self, claim: &Claim, url: &Url, deadline: Instant) -> SendOutcome {
        match self.tracker.send(url, deadline).await {
            Ok(accepted) => {
                let done = claim.after_send(accepted.attempts, Some(accepted.status));
                let recorded = self.record_sent(&done, deadline).await;
                SendOutcome::Accepted { accepted, recorded }
            }
            Err(err @ SendError::Rejected { .. }) => {
                tracing::error!(
                    order_id = %claim.order_id,
                    event_id = %event_id(claim),
                    redtrack_status = err.status(),
                    error = %err,
                    "RedTrack refused the postback; not retried"
                );
                let done = claim.after_send(err.attempts(), err.status());
                self.record(&done, Finish::Failed, FAILED_KEEP_S).await;
                SendOutcome::Refused(err)
            }
            Err(err) => SendOutcome::Retryable(err),
        }
    }

    /// Records `SENT` after RedTrack accepted: one `UpdateItem` when DynamoDB answers; when it
    /// fails, tried again with a growing pause while the invocation's time allows another try
    /// and still leaves room for handing the outcome to the redrive queue
    /// ([`budget::SENT_RETRY_RESERVE`]). False when it was not recorded.
    pub async fn record_sent(&self, claim: &Claim, deadline: Instant) -> bool {
        let keep_s = i64::from(self.ttl_days) * 86_400;
        let mut pause = SENT_RETRY_FIRST_PAUSE;
        loop {
            match self.finish(claim, Finish::Sent, keep_s).await {
                Ok(recorded) => return recorded,
                Err(err) => {
                    let room = deadline.saturating_duration_since(Instant::now());
                    if room < pause + budget::SDK_OPERATION + budget::SENT_RETRY_RESERVE {
                        log_unrecorded(claim, Finish::Sent, &err);
                        return false;
                    }
                    tracing::warn!(order_id = %claim.order_id, event_id = %event_id(claim), error = %err, "could not record SENT; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(SENT_RETRY_MAX_PAUSE);
                }
            }
        }
    }

    /// Records how the claim ended, kept for `keep_s` seconds. A failure to record is logged:
    /// after a send, `rdtk_event_id` still guards against a repeat.
    pub async fn record(&self, claim: &Claim, finish: Finish, keep_s: i64) -> bool {
        match self.finish(claim, finish, keep_s).await {
            Ok(recorded) => recorded,
            Err(err) => {
                log_unrecorded(claim, finish, &err);
                false
            }
        }
    }

    /// One write of how the claim ended; `Ok(false)` (logged) when the lease ran out first.
    async fn finish(
        &self,
        claim: &Claim,
        finish: Finish,
        keep_s: i64,
    ) -> Result<bool, LedgerError> {
        let now_ms = self.clock.now_ms();
        match self
            .ledger
            .finish(claim, finish, now_ms, now_ms / 1000 + keep_s)
            .await
        {
            Ok(true) => Ok(true),
            Ok(false) => {
                tracing::warn!(
                    order_id = %claim.order_id,
                    event_id = %event_id(claim),
                    status = finish.status(),
                    "the lease ran out before the outcome was recorded; rdtk_event_id guards against a repeat"
                );
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// Gives the claim up so a redelivery can send.
    pub async fn release(&self, claim: &Claim) {
        if let Err(err) = self.ledger.release(claim).await {
            tracing::error!(order_id = %claim.order_id, event_id = %event_id(claim), error = %err, "could not release the claim");
        }
    }
}

/// The first pause before the `SENT` write is tried again; it doubles up to
/// [`SENT_RETRY_MAX_PAUSE`].
pub const SENT_RETRY_FIRST_PAUSE: Duration = Duration::from_millis(200);
pub const SENT_RETRY_MAX_PAUSE: Duration = Duration::from_millis(1000);

fn log_unrecorded(claim: &Claim, finish: Finish, err: &LedgerError) {
    tracing::error!(
        order_id = %claim.order_id,
        event_id = %event_id(claim),
        status = finish.status(),
        error = %err,
        "could not record the outcome; rdtk_event_id guards against a repeat"
    );
}

/// The event ID inside a record key (`evt#<id>` / `dry#<id>`).
pub fn event_id(claim: &Claim) -> &str {
    claim
        .key
        .split_once('#')
        .map_or(claim.key.as_str(), |(_, id)| id)
}
