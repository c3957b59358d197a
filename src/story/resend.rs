//! `cartpanda-redtrack-admin resend <event-id> [--shop NAME]`: one conversion sent again, by an
//! operator, through the claim protocol with the same `rdtk_event_id`.
//!
//! For a conversion recorded `FAILED`, released (no record), refused (422, no conversion record),
//! queued for longer than an hour, or left in progress by a lease that is over. The table holds no
//! click ID source or PII by design, so the order is re-read through Cartpanda's API, that one
//! conversion rebuilt as reconciliation rebuilds it, and handed to the bridge's own claim → send
//! → record path with `via` = `operator` — the record it leaves is in the order's story. A
//! conversion recorded `SENT` is never sent again; without the shop's API token and slug the
//! command says why it cannot.

use super::{Shop, check_id, read_order, shop};
use crate::bridge::{Intake, Outcome};
use crate::conversion::classify::{self, Decision};
use crate::ledger::claim::{
    Record, STATUS_FAILED, STATUS_IN_PROGRESS, STATUS_QUEUED, STATUS_SENT, Via,
};
use crate::ledger::dynamo::record_from_item;
use crate::reconcile::run::{Reconciler, Target, deliveries_of};
use crate::report::QUEUED_TOO_LONG_MS;

/// How long the re-send may take (the claim's lease).
const RESEND_BUDGET_MS: i64 = 30_000;

/// `resend`: what was done, or why nothing was (an error: the command exits non-zero).
pub async fn command(
    rec: &Reconciler,
    event_id: &str,
    shop_name: Option<&str>,
) -> Result<String, String> {
    check_id("an event ID", event_id)?;
    let Shop { profile, api } = shop(rec, shop_name).await?;
    let key = profile.record_key(event_id, false);
    let item = rec.table.read(&key).await.map_err(|e| e.to_string())?;
    let now_ms = rec.bridge.clock.now_ms();
    if let Some(item) = &item {
        let written_ms = crate::ledger::dynamo::get_n(item, "updated_at_ms");
        resendable(event_id, &record_from_item(item), written_ms, now_ms)?;
    }
    let target = api.map_err(|why| {
        format!(
            "cannot re-send {event_id}: the ledger keeps no click ID source or buyer data to rebuild a postback from (by design), so the order must be re-read from Cartpanda's API, and {why}"
        )
    })?;
    let order_id = item
        .as_ref()
        .and_then(|i| crate::ledger::dynamo::get_opt_s(i, "order_id"))
        .or_else(|| order_of(event_id))
        .ok_or_else(|| format!("cannot tell the order of `{event_id}`"))?;
    let value = read_order(rec, &target, &order_id)
        .await?
        .ok_or_else(|| format!("Cartpanda's API has no order {order_id}; nothing sent"))?;
    send(rec, &target, &value, event_id, &order_id, now_ms).await
}

/// Whether the conversion's record (last written at `written_ms`) lets an operator re-send it;
/// why not, when it does not.
fn resendable(
    event_id: &str,
    r: &Record,
    written_ms: Option<i64>,
    now_ms: i64,
) -> Result<(), String> {
    let since = |ms: Option<i64>| {
        ms.map(|ms| {
            format!(
                " at {} UTC",
                crate::inbound::datetime::format_utc(ms / 1000)
            )
        })
        .unwrap_or_default()
    };
    match r.status.as_str() {
        STATUS_SENT => Err(format!(
            "{event_id} was sent{}: a conversion recorded SENT is never sent again",
            since(r.sent_at_ms)
        )),
        STATUS_IN_PROGRESS if r.lease_until_ms >= now_ms => Err(format!(
            "{event_id} is being sent right now (its claim's lease runs{}); try again later",
            since(Some(r.lease_until_ms))
        )),
        STATUS_QUEUED if queued_since(r, written_ms) > now_ms - QUEUED_TOO_LONG_MS => Err(format!(
            "{event_id} waits in the redrive queue, which is still retrying it; re-send it once it has waited an hour"
        )),
        STATUS_FAILED | STATUS_QUEUED | STATUS_IN_PROGRESS => Ok(()),
        other => Err(format!("{event_id} is recorded `{other}`; not re-sent")),
    }
}

/// When a record was queued: when it was last written, else its expiry less the time queued
/// records are kept.
fn queued_since(r: &Record, written_ms: Option<i64>) -> i64 {
    written_ms.unwrap_or((r.expires_at_s - crate::postback::send::QUEUED_KEEP_S) * 1000)
}

/// The order ID an event ID starts with (`<order>-purchase`, `<order>-upsell-…`,
/// `<order>-refund-…`, `<order>-chargeback`).
pub fn order_of(event_id: &str) -> Option<String> {
    ["-purchase", "-upsell-", "-refund", "-chargeback"]
        .iter()
        .filter_map(|marker| event_id.find(marker))
        .min()
        .filter(|at| *at > 0)
        .map(|at| event_id[..at].to_owned())
}

/// Rebuilds the conversion from the order and sends it through the bridge (`via` = `operator`).
async fn send(
    rec: &Reconciler,
    target: &Target,
    value: &serde_json::Value,
    event_id: &str,
    order_id: &str,
    now_ms: i64,
) -> Result<String, String> {
    let profile = target.profile.as_ref();
    for (event, delivery) in deliveries_of(value, target) {
        let Ok(classified) = classify::classify(&delivery, &profile.rules) else {
            continue;
        };
        let classified = rec.bridge.age_rule(classified);
        let (Decision::Convert(conversions), Some(order)) =
            (&classified.decision, classified.order)
        else {
            continue;
        };
        let Some(one) = conversions.iter().find(|c| c.event_id == event_id) else {
            continue;
        };
        let intake = Intake {
            via: Via::Operator,
            deadline_ms: Some(now_ms + RESEND_BUDGET_MS),
        };
        let one = std::slice::from_ref(one);
        let report = rec
            .bridge
            .process(profile, event, order_id, order, one, intake)
            .await;
        return answer(event_id, &report.conversions[0]);
    }
    Err(format!(
        "order {order_id}, as Cartpanda's API gives it now, makes no conversion {event_id} (not paid, without a click ID, a test order, older than the ledger's memory, or no longer that line or refund); nothing sent"
    ))
}

/// The command's answer for what the bridge did with the conversion.
fn answer(event_id: &str, c: &crate::bridge::ConversionReport) -> Result<String, String> {
    let seen = match (c.attempts, c.redtrack_status) {
        (Some(a), Some(s)) => format!(" (RedTrack answered {s} after {a} attempt(s))"),
        (Some(a), None) => format!(" ({a} attempt(s), no answer from RedTrack)"),
        _ => String::new(),
    };
    let message = c
        .message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    match c.outcome {
        Outcome::Sent => Ok(format!(
            "{event_id} re-sent{seen}; recorded SENT (via operator)"
        )),
        Outcome::Duplicate => Err(format!(
            "{event_id} was sent meanwhile: a conversion recorded SENT is never sent again"
        )),
        other => Err(format!(
            "{event_id} not re-sent: {}{seen}{message}",
            other.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000;

    fn record(status: &str) -> Record {
        Record {
            status: status.to_owned(),
            lease_until_ms: NOW - 1,
            sent_at_ms: (status == STATUS_SENT).then_some(NOW - 60_000),
            ..Record::default()
        }
    }

    #[test]
    fn the_order_an_event_id_names() {
        assert_eq!(order_of("48213577-purchase").as_deref(), Some("48213577"));
        assert_eq!(
            order_of("48213577-upsell-s2s-p22264763").as_deref(),
            Some("48213577")
        );
        assert_eq!(order_of("48213577-refund-777").as_deref(), Some("48213577"));
        assert_eq!(order_of("48213577-chargeback").as_deref(), Some("48213577"));
        assert_eq!(order_of("purchase"), None);
        assert_eq!(order_of("-purchase"), None);
    }

    #[test]
    fn only_what_is_not_sent_or_being_sent_is_resent() {
        let ok = |r: &Record, written: Option<i64>| resendable("1-purchase", r, written, NOW);
        assert!(
            ok(&record(STATUS_SENT), None)
                .unwrap_err()
                .contains("never sent again")
        );
        assert!(ok(&record(STATUS_FAILED), None).is_ok());
        let queued = record(STATUS_QUEUED);
        assert!(
            ok(&queued, Some(NOW - 10 * 60_000)).is_err(),
            "queued 10 minutes"
        );
        assert!(
            ok(&queued, Some(NOW - 2 * 3_600_000)).is_ok(),
            "queued 2 hours"
        );
        let live = Record {
            lease_until_ms: NOW + 5000,
            ..record(STATUS_IN_PROGRESS)
        };
        assert!(
            ok(&live, None)
                .unwrap_err()
                .contains("being sent right now")
        );
        assert!(ok(&record(STATUS_IN_PROGRESS), None).is_ok(), "lease over");
    }
}
