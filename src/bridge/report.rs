//! What the service answers: the outcome of each conversion, the report of a delivery, and the
//! one table that turns them into an HTTP status and an error message.

use crate::conversion::rules::Skip;
use serde::Serialize;

/// What happened to one conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Sent,
    Duplicate,
    DryRun,
    Queued,
    InProgress,
    Conflict,
    Failed,
    /// Frozen as `store_unavailable`: metrics, alarms and log queries use the value.
    #[serde(rename = "store_unavailable")]
    LedgerUnavailable,
    NotAttempted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Duplicate => "duplicate",
            Outcome::DryRun => "dry_run",
            Outcome::Queued => "queued",
            Outcome::InProgress => "in_progress",
            Outcome::Conflict => "conflict",
            Outcome::Failed => "failed",
            Outcome::LedgerUnavailable => "store_unavailable",
            Outcome::NotAttempted => "not_attempted",
        }
    }
}

/// One entry of the response body.
#[derive(Debug, Clone, Serialize)]
pub struct ConversionReport {
    pub event_id: String,
    pub conversion_type: String,
    pub outcome: Outcome,
    /// True when the answer replays an earlier delivery's result instead of doing the work.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redtrack_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How long RedTrack took (all attempts), for the latency metric.
    #[serde(skip)]
    pub redtrack_ms: Option<u64>,
    /// A duplicate answered from this instance's memory of sent conversions, without a DynamoDB
    /// call (`crate::ledger::cache`): said by the decision log line and the metric only.
    #[serde(skip)]
    pub from_memory: bool,
    /// A duplicate: the input that brought the record the claim met, as the record says
    /// (`None`: from memory, or an older record); reconciliation reads it for webhook silence.
    #[serde(skip)]
    pub met_via: Option<crate::ledger::claim::Via>,
}

impl ConversionReport {
    /// An entry with only its outcome.
    pub fn new(event_id: &str, conversion_type: &str, outcome: Outcome) -> Self {
        ConversionReport {
            event_id: event_id.to_owned(),
            conversion_type: conversion_type.to_owned(),
            outcome,
            replay: false,
            postback: None,
            redtrack_status: None,
            attempts: None,
            retry_after_s: None,
            message: None,
            redtrack_ms: None,
            from_memory: false,
            met_via: None,
        }
    }
}

/// Everything the delivery produced.
#[derive(Debug, Default)]
pub struct Report {
    pub conversions: Vec<ConversionReport>,
}

impl Report {
    fn any(&self, outcome: Outcome) -> bool {
        self.conversions.iter().any(|c| c.outcome == outcome)
    }

    /// The status table of a delivery that got as far as its conversions: the worst outcome
    /// decides the HTTP status, and a failure says what the sender should do. (Requests refused
    /// before that are [`crate::inbound::error::AppError::status`].)
    fn verdict(&self) -> (u16, Option<&'static str>) {
        if self.any(Outcome::LedgerUnavailable) {
            (
                503,
                Some(
                    "the ledger (DynamoDB) is unavailable; nothing was sent for the conversions not yet recorded; redeliver later",
                ),
            )
        } else if self.any(Outcome::NotAttempted) {
            (
                503,
                Some(
                    "the invocation's time ran out before every conversion was claimed; those not attempted were not sent; redeliver later",
                ),
            )
        } else if self.any(Outcome::Failed) {
            (
                502,
                Some(
                    "RedTrack did not accept every postback; the failed ones were released and will be sent on redelivery",
                ),
            )
        } else if self.any(Outcome::Conflict) || self.any(Outcome::InProgress) {
            (
                409,
                Some(
                    "a conversion is being processed by another delivery or conflicts with an earlier one",
                ),
            )
        } else if self.any(Outcome::Queued) {
            (202, None)
        } else {
            (200, None)
        }
    }

    /// The HTTP status for the whole delivery: the worst outcome decides.
    pub fn status(&self) -> u16 {
        self.verdict().0
    }

    /// What went wrong, for the `error` field of the answer; `None` when nothing did.
    pub fn error(&self) -> Option<&'static str> {
        self.verdict().1
    }

    /// Seconds to wait before redelivering, when a live lease blocked a conversion.
    pub fn retry_after_s(&self) -> Option<u64> {
        self.conversions
            .iter()
            .filter_map(|c| c.retry_after_s)
            .max()
    }
}

/// The service's answer to one delivery, for the adapter to turn into a response.
#[derive(Debug)]
pub struct Answer {
    pub order_id: Option<String>,
    pub event: String,
    pub result: Handled,
}

/// What the service did with a delivery it accepted.
#[derive(Debug)]
pub enum Handled {
    /// Nothing to convert (answered 200); a test order carries the postbacks it would have sent.
    Skipped {
        reason: Skip,
        preview: Vec<ConversionReport>,
    },
    /// Converted, previewed (`?dry_run=1`) or refused conversion by conversion.
    Converted(Report),
}

impl Answer {
    /// The HTTP status: a skip is 200, conversions follow [`Report::status`].
    pub fn status(&self) -> u16 {
        match &self.result {
            Handled::Skipped { .. } => 200,
            Handled::Converted(report) => report.status(),
        }
    }

    /// The `Retry-After` of a 409: how long the live lease that blocked a conversion lasts.
    pub fn retry_after_s(&self) -> Option<u64> {
        match &self.result {
            Handled::Converted(report) if report.status() == 409 => report.retry_after_s(),
            _ => None,
        }
    }
}
