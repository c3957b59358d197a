//! Upsells of shops fed by S2S that earlier versions recorded under other event IDs
//! (`<order>-upsell-s2s-<n>`, `<order>-upsell-s2s-dp<product>`; issue 20 named every S2S upsell
//! `<order>-upsell-s2s-p<product>`, [`crate::inbound::s2s::Upsell::key`]). A claim under the new
//! ID looks them up, and a live record there is this conversion's: an upgrade re-sends nothing an
//! earlier version sent, or queued, or is sending.
//!
//! Only upsells whose line carries former IDs ([`crate::inbound::webhook::LineItem::former_ids`],
//! set by the S2S route and by reconciliation of an S2S shop) pay for it: one consistent
//! `GetItem` per former ID after a claim that succeeded (at most two: the step's, and a
//! downsell's `-s2s-dp<product>`). Purchases, webhook upsells and duplicates (answered by the
//! claim itself) cost what they did.

use super::Bridge;
use crate::conversion::rules::{Conversion, Kind};
use crate::ledger::claim::{
    Claim, ClaimOutcome, LedgerError, Record, STATUS_IN_PROGRESS, STATUS_QUEUED, STATUS_SENT,
};
use crate::ops::config::Profile;

impl Bridge {
    /// After `claim` (of `conversion`, an upsell of order `order_id`) was taken: the records of
    /// its former event IDs, in order. The first live one ([`former_outcome`]) is this
    /// conversion's: the claim is released and that outcome returned. `Claimed` when there is
    /// none; the ledger failing releases the claim too.
    pub(super) async fn former_records(
        &self,
        profile: &Profile,
        order_id: &str,
        conversion: &Conversion<'_>,
        claim: &Claim,
    ) -> Result<ClaimOutcome, LedgerError> {
        for former_id in former_event_ids(order_id, conversion) {
            let record_key = profile.record_key(&former_id, self.config.dry_run);
            let found = match self.ledger.look_up(&record_key).await {
                Ok(found) => found,
                Err(err) => {
                    self.courier().release(claim).await;
                    return Err(err);
                }
            };
            let delay_s = self.config.redrive_delay_s;
            if let Some(outcome) = found.and_then(|r| former_outcome(&r, claim.now_ms, delay_s)) {
                tracing::info!(order_id, event_id = %conversion.event_id, former_event_id = %former_id, "recorded under the event ID of an earlier version");
                self.courier().release(claim).await;
                return Ok(outcome);
            }
        }
        Ok(ClaimOutcome::Claimed)
    }
}

/// The event IDs earlier versions gave `conversion` (an S2S shop's upsell of order `order_id`),
/// in the order they are looked up; none for any other conversion.
pub fn former_event_ids(order_id: &str, conversion: &Conversion<'_>) -> Vec<String> {
    match conversion.items.as_slice() {
        [item] if conversion.kind == Kind::Upsell => item
            .former_ids
            .iter()
            .map(|key| format!("{order_id}-upsell-{key}"))
            .collect(),
        _ => Vec::new(),
    }
}

/// What a record under a former event ID, read at `now_ms`, means for the conversion: `SENT` →
/// already sent; `QUEUED` → in progress (the redrive consumer sends it; asked to retry after the
/// redrive delay); `IN_PROGRESS` with a live lease → in progress. An expired record, a `FAILED`
/// one (RedTrack refused it: a redelivery may try again, as under its old ID) or a lease that is
/// over (its attempt died) count as none.
pub fn former_outcome(record: &Record, now_ms: i64, redrive_delay_s: u32) -> Option<ClaimOutcome> {
    if record.expires_at_s < now_ms / 1000 {
        return None;
    }
    match record.status.as_str() {
        STATUS_SENT => Some(ClaimOutcome::AlreadySent {
            sent_at_ms: record.sent_at_ms,
            from_memory: false,
            expires_at_s: Some(record.expires_at_s),
        }),
        STATUS_QUEUED => Some(ClaimOutcome::InProgress {
            lease_until_ms: now_ms + i64::from(redrive_delay_s) * 1000,
        }),
        STATUS_IN_PROGRESS if record.lease_until_ms >= now_ms => Some(ClaimOutcome::InProgress {
            lease_until_ms: record.lease_until_ms,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000;

    fn record(status: &str, lease_until_ms: i64, expires_at_s: i64) -> Record {
        Record {
            status: status.to_owned(),
            fingerprint: "f".to_owned(),
            attempt: "a".to_owned(),
            lease_until_ms,
            expires_at_s,
            sent_at_ms: (status == STATUS_SENT).then_some(NOW - 1000),
            ..Record::default()
        }
    }

    #[test]
    fn live_former_records_are_this_conversions_and_the_rest_are_none() {
        let live = NOW / 1000 + 60;
        assert_eq!(
            former_outcome(&record(STATUS_SENT, 0, live), NOW, 60),
            Some(ClaimOutcome::AlreadySent {
                sent_at_ms: Some(NOW - 1000),
                from_memory: false,
                expires_at_s: Some(live),
            })
        );
        assert_eq!(
            former_outcome(&record(STATUS_QUEUED, 0, live), NOW, 60),
            Some(ClaimOutcome::InProgress {
                lease_until_ms: NOW + 60_000
            })
        );
        assert_eq!(
            former_outcome(&record(STATUS_IN_PROGRESS, NOW + 5, live), NOW, 60),
            Some(ClaimOutcome::InProgress {
                lease_until_ms: NOW + 5
            })
        );
        for gone in [
            record(STATUS_IN_PROGRESS, NOW - 1, live),
            record("FAILED", 0, live),
            record(STATUS_SENT, 0, NOW / 1000 - 1),
        ] {
            assert_eq!(former_outcome(&gone, NOW, 60), None, "{gone:?}");
        }
    }
}
