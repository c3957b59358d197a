//! Webhook silence: a reconciled shop whose paid orders keep coming (Cartpanda's list goes on)
//! while none arrives by webhook or S2S any more — the URL or token changed in Cartpanda, the
//! integration was switched off — is counted in `ShopsSilent` (alarmed), its name in the log.
//!
//! Derived from the claims the scheduled runs meet, with no write per delivery: each listed
//! order's conversions go through the claim protocol, and a claim that meets a record gets the
//! record back (the conditional write's failure carries it), whose `via` says which input
//! brought it. An order **arrived** when one of its conversions' records came by webhook or S2S
//! (or a delivery was processing it); it **did not** when this run claimed its conversions (no
//! input had) or their records came by reconciliation, redrive or an operator; records older
//! than `via` (unknown) say neither.
//!
//! A shop is silent when the runs met at least [`SILENT_AFTER`] paid orders of it created in the
//! last `WEBHOOK_SILENCE_H` hours and none of those hours' orders arrived. Runs list windows of
//! minutes, so what they met is kept from run to run in a small record per shop,
//! `silence#<shop or default>` (attributes `kind` = `silence`, `hooked_s`: when the latest order
//! that arrived was created; `unhooked`: the orders that did not, by order ID → created, within
//! the hours and newer than `hooked_s`, at most [`KEPT`]), read and written once per shop and
//! scheduled run.

use crate::bridge::{ConversionReport, Outcome};
use crate::ledger::claim::{LedgerError, Via};
use crate::ledger::dynamo::{get_n, ledger_error};
use crate::ledger::keys;
use crate::reconcile::run::{Reconciler, Summary, Target};
use aws_sdk_dynamodb::types::AttributeValue as V;
use std::collections::{BTreeMap, HashMap};

/// How many orders of the hours, none arrived, make a shop silent.
pub const SILENT_AFTER: usize = 3;

/// Most orders the record keeps.
const KEPT: usize = 20;

/// What one run learnt of one listed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Met {
    pub order_id: String,
    /// When the order was created (epoch seconds; when it was met, if it says no time).
    pub created_s: i64,
    /// It arrived by webhook or S2S.
    pub arrived: bool,
}

/// What an order's conversions say so far: arrived (`Some(true)`), not arrived (`Some(false)`),
/// or nothing known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arrival(pub Option<bool>);

impl Arrival {
    /// Adds one conversion's outcome: a record that came by webhook or S2S (or a delivery
    /// holding it) says arrived, whatever the others say.
    pub fn add(&mut self, entry: &ConversionReport) {
        let says = match entry.outcome {
            Outcome::InProgress => Some(true),
            Outcome::Sent | Outcome::Queued | Outcome::Failed | Outcome::DryRun => Some(false),
            Outcome::Duplicate | Outcome::Conflict => entry
                .met_via
                .map(|via| matches!(via, Via::Webhook | Via::S2s)),
            Outcome::NotAttempted | Outcome::LedgerUnavailable => None,
        };
        self.0 = match (self.0, says) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (known, None) => known,
            (_, Some(false)) => Some(false),
        };
    }

    /// The order met, when its conversions said something.
    pub fn met(self, value: &serde_json::Value, now_s: i64) -> Option<Met> {
        let arrived = self.0?;
        let order_id = crate::reconcile::run::order_id_of(value)?;
        let created_s = value
            .get("created_at")
            .and_then(|v| v.as_str())
            .and_then(crate::inbound::datetime::parse_unix)
            .unwrap_or(now_s);
        Some(Met {
            order_id,
            created_s,
            arrived,
        })
    }
}

/// A shop's record: when its latest order that arrived was created, and the orders since that
/// did not arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quiet {
    pub hooked_s: Option<i64>,
    pub unhooked: BTreeMap<String, i64>,
}

impl Quiet {
    /// Adds what a run met, and forgets what is older than the hours (`since_s`) or than the
    /// latest order that arrived.
    pub fn meet(&mut self, met: &[Met], since_s: i64) {
        for m in met {
            if m.arrived {
                self.hooked_s = Some(self.hooked_s.map_or(m.created_s, |h| h.max(m.created_s)));
            } else {
                self.unhooked.insert(m.order_id.clone(), m.created_s);
            }
        }
        let hooked_s = self.hooked_s.unwrap_or(i64::MIN);
        self.unhooked.retain(|_, c| *c >= since_s && *c > hooked_s);
        while self.unhooked.len() > KEPT {
            let oldest = self
                .unhooked
                .iter()
                .min_by_key(|(id, c)| (**c, (*id).clone()))
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.unhooked.remove(&id),
                None => break,
            };
        }
    }

    /// Whether the shop is silent: at least [`SILENT_AFTER`] orders of the hours (created since
    /// `since_s`) did not arrive, and none of those hours arrived.
    pub fn silent(&self, since_s: i64) -> bool {
        self.hooked_s.is_none_or(|h| h < since_s)
            && self.unhooked.values().filter(|c| **c >= since_s).count() >= SILENT_AFTER
    }
}

/// Adds what a scheduled run of a shop met to its record and says whether the shop is silent
/// (logged with its name). A record that cannot be read or written is logged; the shop is then
/// not counted.
pub async fn check(reconciler: &Reconciler, target: &Target, summary: &Summary) -> bool {
    let (client, table) = (reconciler.table.client(), reconciler.table.table());
    let shop = target.shop.as_deref();
    let now_s = reconciler.bridge.clock.now_ms() / 1000;
    let since_s = now_s - reconciler.settings.webhook_silence.as_secs() as i64;
    let checked = async {
        let mut quiet = get(client, table, shop).await?;
        let before = quiet.clone();
        quiet.meet(&summary.met, since_s);
        if quiet != before {
            put(client, table, shop, &quiet).await?;
        }
        Ok::<_, LedgerError>(quiet.silent(since_s))
    };
    match checked.await {
        Ok(silent) => {
            if silent {
                tracing::warn!(
                    shop,
                    hours = reconciler.settings.webhook_silence.as_secs() / 3600,
                    "reconcile: paid orders go on and none arrived by webhook or S2S"
                );
            }
            silent
        }
        Err(err) => {
            tracing::warn!(shop, error = %err, "reconcile: could not check for webhook silence");
            false
        }
    }
}

/// Reads a shop's record (empty when there is none).
pub async fn get(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shop: Option<&str>,
) -> Result<Quiet, LedgerError> {
    let out = client
        .get_item()
        .table_name(table)
        .key("pk", V::S(keys::silence(shop)))
        .consistent_read(true)
        .send()
        .await
        .map_err(ledger_error)?;
    let Some(item) = out.item else {
        return Ok(Quiet::default());
    };
    let unhooked = item
        .get("unhooked")
        .and_then(|v| v.as_m().ok())
        .map(|m| {
            m.iter()
                .filter_map(|(id, c)| Some((id.clone(), c.as_n().ok()?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Quiet {
        hooked_s: get_n(&item, "hooked_s"),
        unhooked,
    })
}

/// Writes a shop's record.
pub async fn put(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shop: Option<&str>,
    quiet: &Quiet,
) -> Result<(), LedgerError> {
    let unhooked: HashMap<String, V> = quiet
        .unhooked
        .iter()
        .map(|(id, c)| (id.clone(), V::N(c.to_string())))
        .collect();
    let mut put = client
        .put_item()
        .table_name(table)
        .item("pk", V::S(keys::silence(shop)))
        .item("kind", V::S("silence".to_owned()))
        .item("unhooked", V::M(unhooked));
    if let Some(h) = quiet.hooked_s {
        put = put.item("hooked_s", V::N(h.to_string()));
    }
    put.send().await.map_err(ledger_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn met(id: &str, created_s: i64, arrived: bool) -> Met {
        Met {
            order_id: id.to_owned(),
            created_s,
            arrived,
        }
    }

    #[test]
    fn three_orders_of_the_hours_none_arrived_is_silence() {
        let hours = 6 * 3600;
        let now = 1_800_000_000;
        let mut q = Quiet::default();
        q.meet(
            &[met("1", now - 3000, false), met("2", now - 2000, false)],
            now - hours,
        );
        assert!(!q.silent(now - hours), "two orders are not enough");
        q.meet(&[met("2", now - 2000, false)], now - hours);
        assert!(
            !q.silent(now - hours),
            "the same order met again counts once"
        );
        q.meet(&[met("3", now - 1000, false)], now - hours);
        assert!(q.silent(now - hours));
        // An order of the hours that arrived by webhook ends it.
        q.meet(&[met("4", now - 500, true)], now - hours);
        assert!(!q.silent(now - hours));
        assert!(
            q.unhooked.is_empty(),
            "forgotten: older than the latest arrival"
        );
        // Hours later, with orders still not arriving, it is silent again.
        let later = now + hours;
        let orders: Vec<Met> = (5..8)
            .map(|n| met(&n.to_string(), later - n * 60, false))
            .collect();
        q.meet(&orders, later - hours);
        assert!(q.silent(later - hours));
        // The orders age out of the hours: not silent without new ones.
        assert!(!q.silent(later + hours - 60));
    }

    #[test]
    fn the_record_stays_small() {
        let mut q = Quiet::default();
        let orders: Vec<Met> = (0..100)
            .map(|n| met(&n.to_string(), 1000 + n, false))
            .collect();
        q.meet(&orders, 0);
        assert_eq!(q.unhooked.len(), KEPT);
        assert_eq!(
            q.unhooked.values().min(),
            Some(&(1000 + 100 - KEPT as i64)),
            "the newest kept"
        );
    }
}
