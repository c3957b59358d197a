//! The shops a scheduled run reconciles, and one shop's reconciliation, whichever path asks for
//! it (the scheduled run itself, a queue consumer, a test): [`due_shops`] names them from the
//! registry of shops ([`crate::shops::registry`]: one read, whatever the traffic), and
//! [`reconcile_one`] reads that one shop's record and runs it under its lease.
//!
//! Shops never wait on each other: [`each_shop`] runs up to `RECONCILE_SHOP_CONCURRENCY` shops
//! at once, each within its own budget (`RECONCILE_SHOP_BUDGET_S`, and the invocation's
//! deadline), and each shop's Cartpanda API calls stay one at a time and paced on their own
//! ([`crate::reconcile::orders::OrderLister`]): a shop answering 5xx slowly, refusing its token
//! or timing out spends its own budget, not another shop's.

use crate::reconcile::error::ReconcileError;
use crate::reconcile::run::{Reconciler, RunOptions, Since, Summary, Target};
use crate::reconcile::{DEFAULT_SHOP, default_target, shop_target};
use crate::shops::directory::ShopDirectory;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// What one shop's reconciliation came to.
#[derive(Debug)]
pub struct ShopOutcome {
    /// `None` for the default shop.
    pub shop: Option<String>,
    pub state: ShopState,
}

#[derive(Debug)]
pub enum ShopState {
    /// The shop ran: complete, cut by its deadline, or failed (its summary says which).
    Ran(Box<Summary>),
    /// Another run of the shop holds its lease: nothing done (that run covers it).
    Busy,
    /// No such shop, or its reconciliation is off: nothing to do.
    Off,
    /// Its settings or Cartpanda API token could not be read; `stale` as for a run.
    Broken { error: ReconcileError, stale: bool },
}

impl ShopOutcome {
    /// The shop's name as answers and logs show it ([`DEFAULT_SHOP`] for the default shop).
    pub fn name(&self) -> String {
        self.shop.clone().unwrap_or_else(|| DEFAULT_SHOP.to_owned())
    }

    /// The shop failed: its setup, or its run (an error, not the deadline).
    pub fn failed(&self) -> bool {
        match &self.state {
            ShopState::Ran(summary) => summary.failed_run(),
            ShopState::Broken { .. } => true,
            ShopState::Busy | ShopState::Off => false,
        }
    }

    /// The shop has had no complete run for [`crate::reconcile::STALE_AFTER_MS`].
    pub fn stale(&self) -> bool {
        match &self.state {
            ShopState::Ran(summary) => summary.stale,
            ShopState::Broken { stale, .. } => *stale,
            ShopState::Busy | ShopState::Off => false,
        }
    }

    /// Whether trying the shop again soon may go better: busy, a run cut short by its deadline,
    /// or a failure that may pass (Cartpanda or DynamoDB unavailable). A refused token, a
    /// missing shop or a complete run: no.
    pub fn retryable(&self) -> bool {
        match &self.state {
            ShopState::Ran(summary) => match &summary.error {
                Some(error) => error.retryable(),
                None => !summary.complete,
            },
            ShopState::Busy => true,
            ShopState::Off => false,
            ShopState::Broken { error, .. } => error.retryable(),
        }
    }
}

/// The shops a scheduled run reconciles: the default shop (`None`) when `RECONCILE=true`, then
/// the named shops with reconciliation on, by name, from the registry (indexed once, the first
/// time, on a table written before it existed).
pub async fn due_shops(reconciler: &Reconciler) -> Result<Vec<Option<String>>, ReconcileError> {
    let now_ms = reconciler.bridge.clock.now_ms();
    let named = crate::shops::registry::reconciled_shops(&reconciler.table, now_ms)
        .await
        .map_err(|e| ReconcileError::Ledger(format!("could not read the shop registry: {e}")))?;
    let default = reconciler.settings.default_shop.is_some().then_some(None);
    Ok(default
        .into_iter()
        .chain(named.into_iter().map(Some))
        .collect())
}

/// One shop's reconciliation from its watermark, within `deadline_ms`: the default shop
/// (`None`) or a named shop, whose record is read (one `GetItem`); run under the shop's lease.
pub async fn reconcile_one(
    reconciler: &Reconciler,
    shop: Option<&str>,
    deadline_ms: i64,
) -> ShopOutcome {
    let outcome = |state| ShopOutcome {
        shop: shop.map(str::to_owned),
        state,
    };
    let target = match target(reconciler, shop).await {
        Ok(Some(target)) => target,
        Ok(None) => return outcome(ShopState::Off),
        Err(error) => {
            let name = shop.unwrap_or(DEFAULT_SHOP);
            tracing::error!(shop = name, problem = %error, retryable = error.retryable(), "shop not reconciled");
            let stale = match shop {
                Some(name) => crate::reconcile::broken_is_stale(reconciler, name).await,
                None => false,
            };
            return outcome(ShopState::Broken { error, stale });
        }
    };
    let options = RunOptions {
        since: Since::Watermark,
        dry_run: false,
        deadline_ms,
    };
    let summary = reconciler.run(&target, options).await;
    outcome(match summary.busy {
        true => ShopState::Busy,
        false => ShopState::Ran(Box::new(summary)),
    })
}

/// A shop's target: the default shop's from the environment, a named shop's from its record;
/// `None` when it is not reconciled (or, named, does not exist).
async fn target(
    reconciler: &Reconciler,
    shop: Option<&str>,
) -> Result<Option<Target>, ReconcileError> {
    let Some(name) = shop else {
        return Ok(default_target(reconciler));
    };
    let record = ShopDirectory::get(&reconciler.table, name)
        .await
        .map_err(|e| ReconcileError::Ledger(format!("could not read shop `{name}`: {e}")))?;
    match record {
        Some(record) => shop_target(reconciler, &record).await,
        None => {
            tracing::warn!(
                shop = name,
                "reconcile: the registry names a shop that no longer exists (shop reindex drops it)"
            );
            Ok(None)
        }
    }
}

/// Reconciles `shops`, up to `RECONCILE_SHOP_CONCURRENCY` at once, each within
/// `RECONCILE_SHOP_BUDGET_S` from its start and `deadline_ms`; the outcomes in `shops`' order.
/// They start from a shop chosen at random, in turn: when the invocation cannot fit them all,
/// the ones it does not reach (answered cut by the deadline) differ from run to run, and no shop
/// is always last.
pub async fn each_shop(
    reconciler: &Reconciler,
    shops: &[Option<String>],
    deadline_ms: i64,
) -> Vec<ShopOutcome> {
    let budget_ms = reconciler.settings.shop_budget.as_millis() as i64;
    let first = fastrand::usize(..shops.len().max(1));
    let order = (first..shops.len()).chain(0..first);
    let jobs = order.map(|i| {
        let shop = shops[i].as_deref();
        let job = async move {
            let start_ms = reconciler.bridge.clock.now_ms();
            let shop_deadline_ms = deadline_ms.min(start_ms.saturating_add(budget_ms));
            reconcile_one(reconciler, shop, shop_deadline_ms).await
        };
        (i, job)
    });
    bounded(jobs, reconciler.settings.shop_concurrency).await
}

/// Runs the futures `jobs` gives (each with its place in the answer), at most `limit` at a time,
/// on the caller's task (no spawn: they may borrow); the results by their place.
async fn bounded<T, F: Future<Output = T>>(
    jobs: impl Iterator<Item = (usize, F)>,
    limit: usize,
) -> Vec<T> {
    let mut jobs = jobs;
    let mut running: Vec<(usize, Pin<Box<F>>)> = Vec::new();
    let mut done: Vec<(usize, T)> = Vec::new();
    std::future::poll_fn(|cx| {
        loop {
            while running.len() < limit.max(1) {
                match jobs.next() {
                    Some((i, job)) => running.push((i, Box::pin(job))),
                    None => break,
                }
            }
            if running.is_empty() {
                return Poll::Ready(());
            }
            let before = running.len();
            let mut i = 0;
            while i < running.len() {
                match running[i].1.as_mut().poll(cx) {
                    Poll::Ready(value) => done.push((running.swap_remove(i).0, value)),
                    Poll::Pending => i += 1,
                }
            }
            if running.len() == before {
                return Poll::Pending;
            }
        }
    })
    .await;
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, value)| value).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn bounded_runs_at_most_limit_at_once_and_keeps_the_order() {
        let running = std::cell::Cell::new(0);
        let most = std::cell::Cell::new(0);
        let jobs = [30u64, 10, 20, 5, 1]
            .into_iter()
            .enumerate()
            .map(|(i, ms)| {
                let (running, most) = (&running, &most);
                let job = async move {
                    running.set(running.get() + 1);
                    most.set(most.get().max(running.get()));
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    running.set(running.get() - 1);
                    ms
                };
                (i, job)
            });
        let started = tokio::time::Instant::now();
        assert_eq!(bounded(jobs, 2).await, [30, 10, 20, 5, 1]);
        assert_eq!(most.get(), 2);
        // 30 ‖ (10, then 20) → 30; then 5 ‖ 1: 35 ms in all.
        assert_eq!(started.elapsed(), Duration::from_millis(35));
    }
}
