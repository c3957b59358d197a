//! Processing the conversions of one order, each through the named steps of the path: claim it
//! in the ledger, render its postback, send it (or record a dry run), and when RedTrack stays
//! down queue it for redrive or release it.

use super::preview::{entry, render};
use super::{Bridge, ConversionReport, DEFAULT_BUDGET, Outcome, Report};
use crate::conversion::classify;
use crate::conversion::fields;
use crate::conversion::rules;
use crate::conversion::rules::Conversion;
use crate::inbound::webhook::Order;
use crate::ledger::claim::{Claim, ClaimOutcome, Finish, Via};
use crate::ops::budget;
use crate::ops::config::Profile;
use crate::postback::redtrack::SendError;
use crate::postback::send::{QUEUED_KEEP_S, SendOutcome};
use crate::redrive::queue::{RedriveKind, RedriveMessage};
use std::time::Duration;
use tokio::time::Instant;

/// How a [`Bridge::process`] call came: the input that brought the order (recorded on each
/// claim as `via`) and the invocation's deadline (epoch milliseconds; `None` gives
/// [`DEFAULT_BUDGET`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Intake {
    pub via: Via,
    pub deadline_ms: Option<i64>,
}

/// The order being processed and the time it may take.
struct Job<'a> {
    profile: &'a Profile,
    via: Via,
    event: &'a str,
    order_id: &'a str,
    order: &'a Order,
    /// The invocation's deadline, epoch milliseconds (the lease of each claim).
    deadline_ms: i64,
    /// The same deadline on the monotonic clock (the budget of each send).
    deadline: Instant,
    /// Whether the deadline bounds the claims: the job began with at least
    /// [`budget::BEFORE_CLAIM`] left. A deadline already (nearly) past when the job begins is a
    /// local emulator's (`cargo lambda watch`; some give the invoke time itself), not Lambda's,
    /// whose timeout never lets an invocation start without its time: every conversion is then
    /// claimed, as before the check existed.
    bounded: bool,
}

impl Job<'_> {
    /// Whether a conversion claimed now can still be sent and its outcome recorded before the
    /// deadline ([`budget::BEFORE_CLAIM`]). Checked before each claim after the first (the
    /// first is the caller's decision: the webhook path starts with the invocation, and
    /// reconciliation stops taking orders its own margin before its deadline).
    fn time_for_a_claim(&self) -> bool {
        !self.bounded
            || self.deadline.saturating_duration_since(Instant::now()) >= budget::BEFORE_CLAIM
    }
}

/// A conversion left unclaimed because the invocation's time ran out: 503, for a redelivery.
fn out_of_time(job: &Job<'_>, conversion: &Conversion<'_>) -> ConversionReport {
    tracing::warn!(
        order_id = job.order_id,
        event_id = %conversion.event_id,
        "too little time left to claim and send; left for a redelivery"
    );
    let mut entry = entry(conversion, Outcome::NotAttempted);
    entry.message = Some(
        "the invocation's time ran out before this conversion was claimed; not sent; redeliver"
            .to_owned(),
    );
    entry
}

impl Bridge {
    /// Processes the conversions of one order, in order, until the ledger fails or the
    /// invocation's time runs out.
    pub async fn process(
        &self,
        profile: &Profile,
        event: &str,
        order_id: &str,
        order: &Order,
        conversions: &[Conversion<'_>],
        intake: Intake,
    ) -> Report {
        let now_ms = self.clock.now_ms();
        let deadline_ms = intake
            .deadline_ms
            .unwrap_or(now_ms + DEFAULT_BUDGET.as_millis() as i64);
        let deadline = Instant::now()
            + Duration::from_millis(deadline_ms.saturating_sub(now_ms).max(0) as u64);
        let job = Job {
            profile,
            via: intake.via,
            event,
            order_id,
            order,
            deadline_ms,
            deadline,
            bounded: deadline_ms - now_ms >= budget::BEFORE_CLAIM.as_millis() as i64,
        };
        let mut report = Report::default();
        let mut ledger_down = false;
        let cartx_test = rules::is_cartx_test(order);
        for (n, conversion) in conversions.iter().enumerate() {
            let entry = if ledger_down {
                entry(conversion, Outcome::NotAttempted)
            } else if n > 0 && !job.time_for_a_claim() {
                out_of_time(&job, conversion)
            } else {
                let started = Instant::now();
                let entry = self.process_conversion(&job, conversion).await;
                log_conversion(&job, conversion, &entry, started, cartx_test);
                entry
            };
            ledger_down |= entry.outcome == Outcome::LedgerUnavailable;
            report.conversions.push(entry);
        }
        report
    }

    /// One conversion: claim → render → send (or record the dry run).
    async fn process_conversion(
        &self,
        job: &Job<'_>,
        conversion: &Conversion<'_>,
    ) -> ConversionReport {
        let claim = match self.claim(job, conversion).await {
            Ok(claim) => claim,
            Err(entry) => return entry,
        };
        let url = render(job.profile, job.order_id, job.order, conversion);
        if self.config.dry_run {
            self.record_dry_run(conversion, &claim, url).await
        } else {
            self.send(job, conversion, &claim, url).await
        }
    }

    /// Claims the conversion in the ledger; the report entry when this attempt may not send.
    async fn claim(
        &self,
        job: &Job<'_>,
        conversion: &Conversion<'_>,
    ) -> Result<Claim, ConversionReport> {
        let claim = self.claim_of(job, conversion);
        let order_id = job.order_id;
        let mut entry = entry(conversion, Outcome::NotAttempted);
        let outcome = match self.ledger.claim(&claim).await {
            // An S2S shop's upsell may be recorded under an earlier version's event ID.
            Ok(ClaimOutcome::Claimed) => {
                self.former_records(job.profile, order_id, conversion, &claim)
                    .await
            }
            other => other,
        };
        match outcome {
            Ok(ClaimOutcome::Claimed) => return Ok(claim),
            Ok(ClaimOutcome::AlreadySent {
                from_memory, via, ..
            }) => {
                entry.outcome = Outcome::Duplicate;
                entry.replay = true;
                entry.from_memory = from_memory;
                entry.met_via = via;
            }
            Ok(ClaimOutcome::InProgress { lease_until_ms }) => {
                entry.outcome = Outcome::InProgress;
                entry.retry_after_s = Some(
                    ((lease_until_ms - claim.now_ms).max(0) as u64)
                        .div_ceil(1000)
                        .max(1),
                );
                entry.message = Some(
                    "another delivery of this conversion is being processed; retry later"
                        .to_owned(),
                );
            }
            Ok(ClaimOutcome::Conflict) => {
                tracing::warn!(order_id, event_id = %conversion.event_id, "conflict: same event ID, different conversion");
                entry.outcome = Outcome::Conflict;
                entry.message = Some(
                    "this event ID was already recorded with a different click ID, type, sum or currency; not sent"
                        .to_owned(),
                );
            }
            Err(err) => {
                tracing::error!(order_id, event_id = %conversion.event_id, error = %err, "the ledger failed");
                entry.outcome = Outcome::LedgerUnavailable;
            }
        }
        Err(entry)
    }

    /// The claim of one conversion: its record key, fingerprint, attempt and lease.
    fn claim_of(&self, job: &Job<'_>, conversion: &Conversion<'_>) -> Claim {
        Claim::new(
            job.profile
                .record_key(&conversion.event_id, self.config.dry_run),
            classify::fingerprint(job.order, conversion),
            job.order_id,
            job.event,
            &conversion.conversion_type,
            self.clock.now_ms(),
            job.deadline_ms,
        )
        .with_sum(
            Some(crate::inbound::money::format_sum(conversion.amount)),
            conversion.currency.clone(),
        )
        .with_origin(job.via, fields::click_id(job.order).ok().flatten())
    }

    /// A dry run: recorded as sent (in the `dry#` key space), the postback returned.
    async fn record_dry_run(
        &self,
        conversion: &Conversion<'_>,
        claim: &Claim,
        url: url::Url,
    ) -> ConversionReport {
        let keep_s = i64::from(self.config.ttl_days) * 86_400;
        self.courier().record(claim, Finish::Sent, keep_s).await;
        let mut entry = entry(conversion, Outcome::DryRun);
        entry.postback = Some(url.into());
        entry
    }

    /// Sends the postback to RedTrack and reports what it answered.
    async fn send(
        &self,
        job: &Job<'_>,
        conversion: &Conversion<'_>,
        claim: &Claim,
        url: url::Url,
    ) -> ConversionReport {
        let mut entry = entry(conversion, Outcome::NotAttempted);
        let sending = Instant::now();
        let sent = self.courier().send(claim, &url, job.deadline).await;
        entry.redtrack_ms = Some(sending.elapsed().as_millis() as u64);
        match sent {
            SendOutcome::Accepted { accepted, recorded } => {
                entry.outcome = Outcome::Sent;
                entry.redtrack_status = Some(accepted.status);
                entry.attempts = Some(accepted.attempts);
                if !recorded {
                    let done = claim.after_send(accepted.attempts, Some(accepted.status));
                    self.queue_record_sent(job, conversion, &done).await;
                }
            }
            SendOutcome::Refused(err) => {
                entry.outcome = Outcome::Failed;
                entry.redtrack_status = err.status();
                entry.attempts = Some(err.attempts());
                entry.message = Some(format!(
                    "{err}; not retried: check the postback URL and conversion type in RedTrack"
                ));
            }
            SendOutcome::Retryable(err) => {
                entry.redtrack_status = err.status();
                entry.attempts = Some(err.attempts());
                self.queue_or_release(job, conversion, claim, url, &err, &mut entry)
                    .await;
            }
        }
        entry
    }

    /// RedTrack stayed down: queue the conversion for redrive (202), or release its claim so a
    /// redelivery can send it (502).
    async fn queue_or_release(
        &self,
        job: &Job<'_>,
        conversion: &Conversion<'_>,
        claim: &Claim,
        url: url::Url,
        err: &SendError,
        entry: &mut ConversionReport,
    ) {
        let courier = self.courier();
        if self.queue(job, conversion, claim, url).await {
            let done = claim.after_send(err.attempts(), err.status());
            courier.record(&done, Finish::Queued, QUEUED_KEEP_S).await;
            entry.outcome = Outcome::Queued;
            entry.message = Some(format!("{err}; queued for redrive"));
        } else {
            courier.release(claim).await;
            entry.outcome = Outcome::Failed;
            entry.message = Some(format!("{err}; released for redelivery"));
        }
    }

    /// RedTrack accepted but `SENT` could not be written: hands "record SENT, do not send" to the
    /// redrive queue, at once (the consumer writes it, ideally before the claim's lease ends and
    /// a redelivery could take it over). Without a queue, or when it fails too, only
    /// `rdtk_event_id` guards against a repeat (docs/reliability.md).
    async fn queue_record_sent(&self, job: &Job<'_>, conversion: &Conversion<'_>, claim: &Claim) {
        let mut message = self.message(job, conversion, claim, String::new());
        message.kind = RedriveKind::RecordSent;
        message.attempt = Some(claim.attempt.clone());
        let queued = match &self.queue {
            Some(queue) => queue.enqueue(&message, 0).await.map_err(|e| e.to_string()),
            None => Err("no redrive queue configured".to_owned()),
        };
        match queued {
            Ok(()) => {
                tracing::warn!(order_id = job.order_id, event_id = %conversion.event_id, "SENT not recorded; handed to the redrive queue to record")
            }
            Err(error) => {
                tracing::error!(order_id = job.order_id, event_id = %conversion.event_id, error, "SENT not recorded and not queued; rdtk_event_id guards against a repeat")
            }
        }
    }

    /// The redrive message of a conversion (a send, unless changed).
    fn message(
        &self,
        job: &Job<'_>,
        conversion: &Conversion<'_>,
        claim: &Claim,
        postback: String,
    ) -> RedriveMessage {
        RedriveMessage {
            v: 1,
            kind: RedriveKind::Send,
            attempt: None,
            key: claim.key.clone(),
            event_id: conversion.event_id.clone(),
            fingerprint: claim.fingerprint.clone(),
            order_id: job.order_id.to_owned(),
            event: job.event.to_owned(),
            conversion_type: conversion.conversion_type.clone(),
            postback,
            first_failure_ms: self.clock.now_ms(),
            amount: claim.amount.clone(),
            currency: claim.currency.clone(),
            click_id: claim.click_id.clone(),
            via: None,
            attempts: claim.attempts,
            rt_status: claim.rt_status,
        }
    }

    /// Hands the rendered postback to the redrive queue; false when there is none or it failed.
    async fn queue(
        &self,
        job: &Job<'_>,
        conversion: &Conversion<'_>,
        claim: &Claim,
        url: url::Url,
    ) -> bool {
        let message = self.message(job, conversion, claim, url.into());
        let Some(queue) = &self.queue else {
            return false;
        };
        match queue.enqueue(&message, self.config.redrive_delay_s).await {
            Ok(()) => true,
            Err(queue_err) => {
                tracing::error!(order_id = job.order_id, event_id = %conversion.event_id, error = %queue_err, "could not queue for redrive");
                false
            }
        }
    }
}

/// The decision log line of one conversion, and its metrics.
fn log_conversion(
    job: &Job<'_>,
    conversion: &Conversion<'_>,
    entry: &ConversionReport,
    started: Instant,
    cartx_test: bool,
) {
    tracing::info!(
        shop = job.profile.shop.as_deref(),
        order_id = job.order_id,
        event = job.event,
        event_id = %conversion.event_id,
        conversion_type = %conversion.conversion_type,
        outcome = entry.outcome.as_str(),
        redtrack_status = entry.redtrack_status,
        attempts = entry.attempts,
        latency_ms = started.elapsed().as_millis() as u64,
        cartx_test,
        from_memory = entry.from_memory.then_some(true),
        "conversion"
    );
    if entry.from_memory {
        crate::ops::metrics::duplicate_from_memory();
    } else {
        crate::ops::metrics::conversion(entry.outcome.as_str(), entry.redtrack_ms);
    }
}
