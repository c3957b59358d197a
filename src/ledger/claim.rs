//! The ledger: one record per conversion event ID, claimed before anything is sent.
//!
//! A port of AWS Lambda Powertools' idempotency design. A claim is a conditional write of an
//! `IN_PROGRESS` record whose lease ends with the invocation's deadline; it succeeds when no
//! record exists, when the record has expired, when an earlier attempt's lease is over (that
//! attempt crashed or timed out), or when the record is a `QUEUED` or `FAILED` one of the same
//! conversion ([`CLAIM_CONDITION`]). After RedTrack accepts, the record becomes `SENT` with an
//! expiry; when RedTrack refuses it for good, `FAILED`; when RedTrack stays down, `QUEUED` (or it
//! is released when there is no queue) so a redelivery or the redrive consumer can send it.

use crate::ledger::refusal::Refusal;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Which input brought a conversion (the record's `via` attribute): the webhook route, the S2S
/// route, reconciliation, the redrive consumer, or an operator's command (`resend`, or a
/// dead-lettered postback moved back by `redrive`). Records written before it existed have none
/// ("unknown").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    #[default]
    Webhook,
    S2s,
    Reconcile,
    Redrive,
    Operator,
}

impl Via {
    /// The attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Webhook => "webhook",
            Via::S2s => "s2s",
            Via::Reconcile => "reconcile",
            Via::Redrive => "redrive",
            Via::Operator => "operator",
        }
    }

    /// Reads the attribute's value back; `None` for any other text.
    pub fn parse(text: &str) -> Option<Via> {
        [
            Via::Webhook,
            Via::S2s,
            Via::Reconcile,
            Via::Redrive,
            Via::Operator,
        ]
        .into_iter()
        .find(|v| v.as_str() == text)
    }
}

/// A request to claim one conversion event.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The record key ([`crate::ledger::keys::conversion`]: `evt#[<shop>#]<event id>`, `dry#…` in
    /// dry runs).
    pub key: String,
    /// Digest of what defines the conversion; another digest under the same key is a conflict.
    pub fingerprint: String,
    /// Unique per attempt: only the attempt that holds the claim may complete or release it.
    pub attempt: String,
    pub order_id: String,
    pub event: String,
    pub conversion_type: String,
    /// The sum sent (`1234.56`) and its currency, recorded for the report; never PII.
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub now_ms: i64,
    /// When this attempt's lease ends (the invocation's deadline), in epoch milliseconds.
    pub lease_until_ms: i64,
    /// The input that brought the conversion, written with the claim (`via`).
    pub via: Option<Via>,
    /// The click ID sent (not PII), written with the claim (`click_id`), for comparing with what
    /// RedTrack recorded.
    pub click_id: Option<String>,
    /// Postback attempts made so far, written with how the claim ended (`attempts`): those of
    /// the record this claim replaced ([`Claim::earlier_attempts`]) plus this attempt's
    /// ([`Claim::after_send`]). `None`: nothing sent by this claim (not written).
    pub attempts: Option<u32>,
    /// RedTrack's last HTTP status, written with how the claim ended (`rt_status`).
    pub rt_status: Option<u16>,
    /// The attempts recorded on a `QUEUED` or `FAILED` record of the same conversion that this
    /// claim replaced, learnt from the claim's own write (DynamoDB returns the replaced item):
    /// set by the ledger's [`Ledger::claim`], so the count goes on across claims without a read.
    pub replaced_attempts: OnceLock<u32>,
}

impl Claim {
    /// A new attempt at claiming `key`: a unique attempt ID, and a lease until the invocation's
    /// `deadline_ms` (at least a second). The webhook path and the redrive consumer both claim
    /// through it.
    pub fn new(
        key: String,
        fingerprint: String,
        order_id: &str,
        event: &str,
        conversion_type: &str,
        now_ms: i64,
        deadline_ms: i64,
    ) -> Claim {
        Claim {
            key,
            fingerprint,
            attempt: format!("{now_ms:x}-{:016x}", crate::ops::clock::random_u64()),
            order_id: order_id.to_owned(),
            event: event.to_owned(),
            conversion_type: conversion_type.to_owned(),
            amount: None,
            currency: None,
            now_ms,
            lease_until_ms: deadline_ms.max(now_ms + 1000),
            via: None,
            click_id: None,
            attempts: None,
            rt_status: None,
            replaced_attempts: OnceLock::new(),
        }
    }

    /// The same claim recording the input that brought it and the click ID sent.
    pub fn with_origin(self, via: Via, click_id: Option<&str>) -> Claim {
        Claim {
            via: Some(via),
            click_id: click_id.map(str::to_owned),
            ..self
        }
    }

    /// The attempts of the replaced record of this conversion (0 when none was replaced).
    pub fn earlier_attempts(&self) -> u32 {
        self.replaced_attempts.get().copied().unwrap_or(0)
    }

    /// The claim as it ends after a send of `attempts` postback attempts that RedTrack last
    /// answered with `rt_status` (`None`: no answer, a timeout): what [`Ledger::finish`] records.
    pub fn after_send(&self, attempts: u32, rt_status: Option<u16>) -> Claim {
        Claim {
            attempts: Some(self.earlier_attempts() + attempts),
            rt_status,
            ..self.clone()
        }
    }

    /// Learns what the claim's write replaced: `record`, when it was this conversion's (same
    /// fingerprint) and not sent, carries the attempts made for it so far.
    pub fn replaced(&self, record: &Record) {
        if record.fingerprint == self.fingerprint && record.status != STATUS_SENT {
            if let Some(attempts) = record.attempts {
                let _ = self.replaced_attempts.set(attempts);
            }
        }
    }

    /// The same claim recording the sum sent and its currency (for the report).
    pub fn with_sum(self, amount: Option<String>, currency: Option<String>) -> Claim {
        Claim {
            amount,
            currency,
            ..self
        }
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This attempt holds the claim and must send.
    Claimed,
    /// Already sent (at `sent_at_ms`); nothing to do. `expires_at_s`: when the record expires,
    /// when known (a memory of it must not outlive it). `from_memory`: answered by this
    /// instance's memory of sent conversions ([`crate::ledger::cache`]) without asking the table.
    /// `via`: the input that brought the record, as the record says (`None`: from memory, or a
    /// record older than `via`); reconciliation reads it for webhook silence
    /// ([`crate::reconcile::silence`]).
    AlreadySent {
        sent_at_ms: Option<i64>,
        expires_at_s: Option<i64>,
        from_memory: bool,
        via: Option<Via>,
    },
    /// Another attempt holds a live lease until `lease_until_ms`.
    InProgress { lease_until_ms: i64 },
    /// The same event ID was claimed for a conversion with another fingerprint.
    Conflict,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("DynamoDB is throttling requests")]
    Throttled,
    #[error("DynamoDB is unavailable: {0}")]
    Unavailable(String),
}

/// How a claimed conversion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// RedTrack accepted it: duplicates are dropped until the record expires.
    Sent,
    /// Waiting in the redrive queue: a redelivery or the redrive consumer may claim it again.
    Queued,
    /// RedTrack refused it for good (4xx): kept for the operator; a redelivery may try again.
    Failed,
}

impl Finish {
    pub fn status(self) -> &'static str {
        match self {
            Finish::Sent => STATUS_SENT,
            Finish::Queued => STATUS_QUEUED,
            Finish::Failed => STATUS_FAILED,
        }
    }
}

#[async_trait]
pub trait Ledger: Send + Sync {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, LedgerError>;
    /// Records how the claim ended, to be kept until `expires_at_s`. Returns false when the
    /// attempt no longer held the claim (its lease ran out and another attempt took over).
    async fn finish(
        &self,
        claim: &Claim,
        finish: Finish,
        now_ms: i64,
        expires_at_s: i64,
    ) -> Result<bool, LedgerError>;
    /// Gives the claim up so a redelivery can send. Only the holding attempt can release it.
    async fn release(&self, claim: &Claim) -> Result<(), LedgerError>;
    /// Leaves a "needs a look" note ([`crate::ledger::notes`]); the first note of an order and
    /// reason is kept. Required (no default), so no wrapper can drop notes by forgetting it.
    async fn note(&self, note: &crate::ledger::notes::Note) -> Result<(), LedgerError>;
    /// Keeps the record of an order refused with 422 ([`Refusal`]: its own key space, a TTL).
    /// Required (no default), so no wrapper can drop it by forgetting it.
    async fn note_refusal(&self, refusal: &Refusal) -> Result<(), LedgerError>;
    /// The record under `key`, read consistently; `None` when there is none. Called only by a
    /// claim of an S2S shop's upsell, for the event IDs earlier versions gave it
    /// (`crate::bridge::former`). Required (no default), so no wrapper can drop it by forgetting it.
    async fn look_up(&self, key: &str) -> Result<Option<Record>, LedgerError>;
}

pub const STATUS_IN_PROGRESS: &str = "IN_PROGRESS";
pub const STATUS_SENT: &str = "SENT";
pub const STATUS_QUEUED: &str = "QUEUED";
pub const STATUS_FAILED: &str = "FAILED";

/// A record as stored, shared by both implementations. The last four are absent from records
/// written before they existed (`None`: unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub status: String,
    pub fingerprint: String,
    pub attempt: String,
    pub lease_until_ms: i64,
    pub expires_at_s: i64,
    pub sent_at_ms: Option<i64>,
    /// The input that brought it ([`Via::as_str`]).
    pub via: Option<String>,
    /// Postback attempts made so far.
    pub attempts: Option<u32>,
    /// RedTrack's last HTTP status.
    pub rt_status: Option<u16>,
    /// The click ID sent.
    pub click_id: Option<String>,
}

impl Record {
    /// Whether a new claim for a conversion with `fingerprint` may replace this record at
    /// `now_ms`: one of the [`CLAIM_CONDITION`]'s clauses holds.
    pub fn claimable(&self, now_ms: i64, fingerprint: &str) -> bool {
        CLAIM_CONDITION
            .iter()
            .any(|clause| clause.holds(Some(self), now_ms, fingerprint))
    }

    /// What a claim whose write failed on this record reports. A record that carries the
    /// claim's own attempt ID is the claim itself: DynamoDB applied the write, its answer was
    /// lost, and the SDK's retry met it. Then the claim holds and must send.
    pub fn outcome_for_claim(&self, claim: &Claim) -> ClaimOutcome {
        if self.attempt == claim.attempt && self.status == STATUS_IN_PROGRESS {
            ClaimOutcome::Claimed
        } else {
            self.outcome_for(&claim.fingerprint)
        }
    }

    /// What a claim that lost to this record reports.
    pub fn outcome_for(&self, fingerprint: &str) -> ClaimOutcome {
        if self.fingerprint != fingerprint {
            ClaimOutcome::Conflict
        } else if self.status == STATUS_SENT {
            ClaimOutcome::AlreadySent {
                sent_at_ms: self.sent_at_ms,
                expires_at_s: Some(self.expires_at_s),
                from_memory: false,
                via: self.via.as_deref().and_then(Via::parse),
            }
        } else {
            ClaimOutcome::InProgress {
                lease_until_ms: self.lease_until_ms,
            }
        }
    }
}

/// One clause of the claim condition: a case in which a new claim may take a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimable {
    /// No record under the key.
    NoRecord,
    /// The record expired: `expires_at` (seconds) is before the claim's second.
    Expired,
    /// An `IN_PROGRESS` record whose attempt's lease is over (it crashed or timed out).
    LeaseOver,
    /// A `QUEUED` record of the same conversion (fingerprint), waiting for a re-send, or a
    /// `FAILED` one whatever its fingerprint: RedTrack refused it, so a conversion rebuilt after
    /// the cause was fixed (a corrected `CONVERSION_TYPES`, click ID or sum) takes its place.
    AwaitingResend,
}

/// The claim condition, the one description both ledgers follow: a claim takes the key when any
/// clause holds. [`MemoryLedger`] evaluates it with [`Claimable::holds`]; the DynamoDB ledger
/// writes each clause as a condition expression (`crate::ledger::dynamo::claim_condition`), and
/// `tests/ledger_agreement.rs` runs both on the same records.
pub const CLAIM_CONDITION: [Claimable; 4] = [
    Claimable::NoRecord,
    Claimable::Expired,
    Claimable::LeaseOver,
    Claimable::AwaitingResend,
];

impl Claimable {
    /// Whether the clause holds for `record` (`None`: no record) and a claim at `now_ms` of a
    /// conversion with `fingerprint`. Times compare as DynamoDB compares them: expiry in whole
    /// seconds, leases in milliseconds.
    pub fn holds(self, record: Option<&Record>, now_ms: i64, fingerprint: &str) -> bool {
        let Some(r) = record else {
            return self == Claimable::NoRecord;
        };
        match self {
            Claimable::NoRecord => false,
            Claimable::Expired => r.expires_at_s < now_ms / 1000,
            Claimable::LeaseOver => r.status == STATUS_IN_PROGRESS && r.lease_until_ms < now_ms,
            Claimable::AwaitingResend => {
                (r.status == STATUS_QUEUED && r.fingerprint == fingerprint)
                    || r.status == STATUS_FAILED
            }
        }
    }
}

/// How long an `IN_PROGRESS` record outlives its lease before DynamoDB's TTL may remove it.
pub const IN_PROGRESS_GRACE_S: i64 = 24 * 3600;

/// An in-memory ledger, for unit tests of the logic above the ledger.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    pub records: Mutex<HashMap<String, Record>>,
    /// Refusal records by key.
    pub refusals: Mutex<HashMap<String, Refusal>>,
}

#[async_trait]
impl Ledger for MemoryLedger {
    /// The in-memory ledger keeps no notes (they only feed the report, read from DynamoDB).
    async fn note(&self, _note: &crate::ledger::notes::Note) -> Result<(), LedgerError> {
        Ok(())
    }

    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
        let mut records = self.records.lock().expect("memory ledger lock");
        if let Some(old) = records.get(&claim.key) {
            if !old.claimable(claim.now_ms, &claim.fingerprint) {
                return Ok(old.outcome_for_claim(claim));
            }
            claim.replaced(old);
        }
        records.insert(
            claim.key.clone(),
            Record {
                status: STATUS_IN_PROGRESS.to_owned(),
                fingerprint: claim.fingerprint.clone(),
                attempt: claim.attempt.clone(),
                lease_until_ms: claim.lease_until_ms,
                expires_at_s: claim.lease_until_ms / 1000 + IN_PROGRESS_GRACE_S,
                sent_at_ms: None,
                via: claim.via.map(|v| v.as_str().to_owned()),
                attempts: None,
                rt_status: None,
                click_id: claim.click_id.clone(),
            },
        );
        Ok(ClaimOutcome::Claimed)
    }

    async fn finish(
        &self,
        claim: &Claim,
        finish: Finish,
        now_ms: i64,
        expires_at_s: i64,
    ) -> Result<bool, LedgerError> {
        let mut records = self.records.lock().expect("memory ledger lock");
        match records.get_mut(&claim.key) {
            Some(r) if r.attempt == claim.attempt => {
                r.status = finish.status().to_owned();
                r.expires_at_s = expires_at_s;
                r.lease_until_ms = 0;
                if finish == Finish::Sent {
                    r.sent_at_ms = Some(now_ms);
                }
                r.attempts = claim.attempts.or(r.attempts);
                r.rt_status = claim.rt_status.or(r.rt_status);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, claim: &Claim) -> Result<(), LedgerError> {
        let mut records = self.records.lock().expect("memory ledger lock");
        if records
            .get(&claim.key)
            .is_some_and(|r| r.attempt == claim.attempt && r.status == STATUS_IN_PROGRESS)
        {
            records.remove(&claim.key);
        }
        Ok(())
    }

    async fn note_refusal(&self, refusal: &Refusal) -> Result<(), LedgerError> {
        let mut refusals = self.refusals.lock().expect("memory ledger lock");
        refusals.insert(refusal.key(), refusal.clone());
        Ok(())
    }

    async fn look_up(&self, key: &str) -> Result<Option<Record>, LedgerError> {
        let records = self.records.lock().expect("memory ledger lock");
        Ok(records.get(key).cloned())
    }
}
