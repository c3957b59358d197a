//! The retry set: the orders whose conversions a run found but could not settle for a reason
//! that may pass (RedTrack 5xx, 429 or a timeout with no redrive queue to take them, the queue
//! refusing, a concurrent delivery holding the claim). The watermark moves on past them, so no
//! later window lists them again; instead each later run re-reads each such order from
//! Cartpanda's order API (the table holds no PII or click ID) and hands it to the same claim →
//! send path, for at most `RECONCILE_RETRY_RUNS` runs. Then the order is given up: logged with
//! its order ID and counted (`ReconcileRetryGivenUp`, alarmed). A conversion RedTrack refused
//! for good (4xx) is recorded `FAILED` by the send path and reported, never kept here.
//!
//! Stored in the shop's watermark record ([`crate::reconcile::watermark`], attribute `retry`):
//! one read and one write per run, the same as the watermark's.

use crate::reconcile::orders::Pass;
use std::collections::{BTreeMap, BTreeSet};

/// Most orders one shop's retry set holds (the record stays far below DynamoDB's 400 KB).
pub const MAX_ENTRIES: usize = 1000;

/// One order waiting for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryEntry {
    /// How many later runs retried it so far.
    pub runs: u32,
    /// The pass that found it: which conversions it stands for.
    pub pass: Pass,
}

/// What a run did with an order, as far as the retry set goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noted {
    /// Nothing to keep, and it was not in the set.
    Nothing,
    /// It was in the set and is settled now.
    Recovered,
    /// Newly kept for the next runs.
    Added,
    /// In the set, tried again and still not settled.
    Tried,
    /// Not settled, and the set is full: given up at once.
    Full,
}

/// The retry set during one run.
#[derive(Debug)]
pub struct RetrySet {
    entries: BTreeMap<String, RetryEntry>,
    /// Added by this run: not yet retried.
    fresh: BTreeSet<String>,
    /// In the set before this run, tried by it, still not settled.
    tried: BTreeSet<String>,
    max_runs: u32,
}

impl RetrySet {
    pub fn new(entries: BTreeMap<String, RetryEntry>, max_runs: u32) -> Self {
        RetrySet {
            entries,
            fresh: BTreeSet::new(),
            tried: BTreeSet::new(),
            max_runs,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An order this run processed: settled, it leaves the set; not settled, it joins it (or
    /// counts as tried when it was in it already).
    pub fn note(&mut self, order_id: &str, pass: Pass, settled: bool) -> Noted {
        let known = self.entries.contains_key(order_id);
        match (settled, known) {
            (true, true) => {
                self.entries.remove(order_id);
                self.fresh.remove(order_id);
                self.tried.remove(order_id);
                Noted::Recovered
            }
            (true, false) => Noted::Nothing,
            (false, true) => {
                if !self.fresh.contains(order_id) {
                    self.tried.insert(order_id.to_owned());
                }
                Noted::Tried
            }
            (false, false) if self.entries.len() >= MAX_ENTRIES => Noted::Full,
            (false, false) => {
                self.entries
                    .insert(order_id.to_owned(), RetryEntry { runs: 0, pass });
                self.fresh.insert(order_id.to_owned());
                Noted::Added
            }
        }
    }

    /// The orders this run still has to retry: in the set before it, not processed by it yet.
    pub fn due(&self) -> Vec<(String, Pass)> {
        self.entries
            .iter()
            .filter(|(id, _)| !self.fresh.contains(*id) && !self.tried.contains(*id))
            .map(|(id, e)| (id.clone(), e.pass))
            .collect()
    }

    /// Leaves an order out for good (its order no longer exists).
    pub fn drop_order(&mut self, order_id: &str) {
        self.entries.remove(order_id);
    }

    /// The end of the run: every order it retried without settling has one more run; those
    /// that reached `max_runs` are given up. Returns the set to store and the given-up orders.
    pub fn finish(mut self) -> (BTreeMap<String, RetryEntry>, Vec<String>) {
        let mut given_up = Vec::new();
        for order_id in &self.tried {
            let Some(entry) = self.entries.get_mut(order_id) else {
                continue;
            };
            entry.runs += 1;
            if entry.runs >= self.max_runs {
                self.entries.remove(order_id);
                given_up.push(order_id.clone());
            }
        }
        (self.entries, given_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_retried_by_later_runs_then_given_up() {
        let mut set = RetrySet::new(BTreeMap::new(), 2);
        assert_eq!(set.note("7", Pass::Created, false), Noted::Added);
        assert!(set.due().is_empty(), "not retried by the run that found it");
        let (stored, given_up) = set.finish();
        assert_eq!(stored["7"].runs, 0);
        assert!(given_up.is_empty());
        // Run 2: listed again (overlap) and retried: one run, not two.
        let mut set = RetrySet::new(stored, 2);
        assert_eq!(set.due(), [("7".to_owned(), Pass::Created)]);
        assert_eq!(set.note("7", Pass::Created, false), Noted::Tried);
        assert!(set.due().is_empty());
        assert_eq!(set.note("7", Pass::Created, false), Noted::Tried);
        let (stored, _) = set.finish();
        assert_eq!(stored["7"].runs, 1);
        // Run 3: still failing: given up.
        let mut set = RetrySet::new(stored, 2);
        set.note("7", Pass::Created, false);
        let (stored, given_up) = set.finish();
        assert!(stored.is_empty());
        assert_eq!(given_up, ["7"]);
    }

    #[test]
    fn a_settled_order_leaves_the_set_and_an_untried_one_keeps_its_count() {
        let entries = BTreeMap::from([
            (
                "1".to_owned(),
                RetryEntry {
                    runs: 5,
                    pass: Pass::Updated,
                },
            ),
            (
                "2".to_owned(),
                RetryEntry {
                    runs: 1,
                    pass: Pass::Created,
                },
            ),
        ]);
        let mut set = RetrySet::new(entries, 96);
        assert_eq!(set.note("1", Pass::Updated, true), Noted::Recovered);
        assert_eq!(set.note("3", Pass::Created, true), Noted::Nothing);
        let (stored, given_up) = set.finish();
        assert_eq!(stored.keys().collect::<Vec<_>>(), ["2"]);
        assert_eq!(
            stored["2"].runs, 1,
            "a run that did not reach it does not count"
        );
        assert!(given_up.is_empty());
    }

    #[test]
    fn a_full_set_gives_up_new_orders_at_once() {
        let entries = (0..MAX_ENTRIES)
            .map(|i| {
                let entry = RetryEntry {
                    runs: 0,
                    pass: Pass::Created,
                };
                (i.to_string(), entry)
            })
            .collect();
        let mut set = RetrySet::new(entries, 96);
        assert_eq!(set.note("new", Pass::Created, false), Noted::Full);
        assert_eq!(set.len(), MAX_ENTRIES);
    }
}
