//! What this instance knows is sent: a duplicate of a conversion recorded `SENT` is answered from
//! memory, without a DynamoDB call.
//!
//! `SENT` never goes back in the claim protocol ([`crate::ledger::claim`]): a record stays sent
//! until it expires. So once a warm instance has seen a conversion sent — it recorded the `SENT`
//! itself ([`Ledger::finish`] with [`Finish::Sent`]), or a claim found the record `SENT` — the
//! next delivery of the same conversion (same record key, same fingerprint) can be answered
//! [`ClaimOutcome::AlreadySent`] without the conditional write, which costs a write unit even
//! when it fails, and three quarters of the CPU of a duplicate (docs/performance.md).
//!
//! - The map is bounded: at most [`DEFAULT_CAPACITY`] entries (quick_cache's S3-FIFO eviction),
//!   each kept [`DEFAULT_TTL_MS`] at most, and never past the record's own expiry when known.
//! - Keys are record keys, so `dry#` (dry run) and `evt#` conversions never answer for each other.
//! - Only `SENT` fills it. Any other claim, a fingerprint that differs from the remembered one
//!   (maybe a conflict: 409 stays right) and an expired entry go to the table as before.
//! - A record an operator deletes by hand in the table is seen by warm instances only once
//!   their entry's TTL is over (README).

use crate::ledger::claim::{Claim, ClaimOutcome, Finish, Ledger, LedgerError};
use async_trait::async_trait;
use std::sync::{Arc, Mutex};

/// Most conversions remembered per instance (about 100 bytes each).
pub const DEFAULT_CAPACITY: usize = 4096;
/// How long an instance remembers a sent conversion.
pub const DEFAULT_TTL_MS: i64 = 5 * 60_000;

#[derive(Debug, Clone)]
struct Sent {
    fingerprint: Box<str>,
    sent_at_ms: Option<i64>,
    /// The record's expiry, when known.
    expires_at_s: Option<i64>,
    /// Epoch milliseconds after which the entry is not used.
    until_ms: i64,
}

/// A [`Ledger`] that answers duplicates of conversions it knows are sent from memory and
/// passes everything else to the ledger it wraps.
pub struct CachedLedger {
    inner: Arc<dyn Ledger>,
    /// `None` when the capacity is 0 (remembering nothing).
    sent: Option<Mutex<quick_cache::unsync::Cache<String, Sent>>>,
    ttl_ms: i64,
}

impl CachedLedger {
    /// [`DEFAULT_CAPACITY`] entries kept [`DEFAULT_TTL_MS`].
    pub fn new(inner: Arc<dyn Ledger>) -> Self {
        Self::with_limits(inner, DEFAULT_CAPACITY, DEFAULT_TTL_MS)
    }

    /// At most `capacity` entries (0: remember nothing), each kept `ttl_ms`.
    pub fn with_limits(inner: Arc<dyn Ledger>, capacity: usize, ttl_ms: i64) -> Self {
        CachedLedger {
            inner,
            sent: (capacity > 0).then(|| Mutex::new(quick_cache::unsync::Cache::new(capacity))),
            ttl_ms,
        }
    }

    /// How many conversions are remembered now.
    pub fn len(&self) -> usize {
        self.sent
            .as_ref()
            .map_or(0, |m| m.lock().expect("sent cache lock").len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer from memory to `claim`, when this instance knows its conversion is sent.
    fn recall(&self, claim: &Claim) -> Option<ClaimOutcome> {
        let mut sent = self.sent.as_ref()?.lock().expect("sent cache lock");
        let entry = sent.get(claim.key.as_str())?;
        let (fresh, same, sent_at_ms, expires_at_s) = (
            entry.until_ms >= claim.now_ms,
            *entry.fingerprint == *claim.fingerprint,
            entry.sent_at_ms,
            entry.expires_at_s,
        );
        if !fresh {
            sent.remove(claim.key.as_str());
            return None;
        }
        same.then_some(ClaimOutcome::AlreadySent {
            sent_at_ms,
            expires_at_s,
            from_memory: true,
        })
    }

    /// Remembers that the conversion of `claim` is recorded `SENT` (as of `now_ms`), for the TTL
    /// and never past `expires_at_s` when the record's expiry is known.
    fn remember(
        &self,
        claim: &Claim,
        sent_at_ms: Option<i64>,
        now_ms: i64,
        expires_at_s: Option<i64>,
    ) {
        let Some(sent) = &self.sent else { return };
        let mut until_ms = now_ms.saturating_add(self.ttl_ms);
        if let Some(expires_at_s) = expires_at_s {
            until_ms = until_ms.min(expires_at_s.saturating_mul(1000));
        }
        let entry = Sent {
            fingerprint: claim.fingerprint.as_str().into(),
            sent_at_ms,
            expires_at_s,
            until_ms,
        };
        sent.lock()
            .expect("sent cache lock")
            .insert(claim.key.clone(), entry);
    }
}

#[async_trait]
impl Ledger for CachedLedger {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
        if let Some(known) = self.recall(claim) {
            return Ok(known);
        }
        let outcome = self.inner.claim(claim).await?;
        if let ClaimOutcome::AlreadySent {
            sent_at_ms,
            expires_at_s,
            ..
        } = outcome
        {
            // The table says this very conversion (same fingerprint) is sent, until the record
            // expires: the memory of it ends there too.
            self.remember(claim, sent_at_ms, claim.now_ms, expires_at_s);
        }
        Ok(outcome)
    }

    async fn finish(
        &self,
        claim: &Claim,
        finish: Finish,
        now_ms: i64,
        expires_at_s: i64,
    ) -> Result<bool, LedgerError> {
        let recorded = self
            .inner
            .finish(claim, finish, now_ms, expires_at_s)
            .await?;
        if recorded && finish == Finish::Sent {
            self.remember(claim, Some(now_ms), now_ms, Some(expires_at_s));
        }
        Ok(recorded)
    }

    async fn release(&self, claim: &Claim) -> Result<(), LedgerError> {
        self.inner.release(claim).await
    }

    async fn note(&self, note: &crate::ledger::notes::Note) -> Result<(), LedgerError> {
        self.inner.note(note).await
    }

    async fn note_refusal(
        &self,
        refusal: &crate::ledger::refusal::Refusal,
    ) -> Result<(), LedgerError> {
        self.inner.note_refusal(refusal).await
    }

    async fn look_up(
        &self,
        key: &str,
    ) -> Result<Option<crate::ledger::claim::Record>, LedgerError> {
        self.inner.look_up(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::claim::MemoryLedger;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const NOW: i64 = 1_741_959_934_231;

    /// A ledger that counts the calls it gets, in front of the in-memory ledger.
    #[derive(Default)]
    struct Counting {
        ledger: MemoryLedger,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Ledger for Counting {
        async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.ledger.claim(claim).await
        }
        async fn finish(
            &self,
            claim: &Claim,
            finish: Finish,
            now_ms: i64,
            expires_at_s: i64,
        ) -> Result<bool, LedgerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.ledger
                .finish(claim, finish, now_ms, expires_at_s)
                .await
        }
        async fn release(&self, claim: &Claim) -> Result<(), LedgerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.ledger.release(claim).await
        }
        async fn note(&self, note: &crate::ledger::notes::Note) -> Result<(), LedgerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.ledger.note(note).await
        }
        async fn note_refusal(
            &self,
            refusal: &crate::ledger::refusal::Refusal,
        ) -> Result<(), LedgerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.ledger.note_refusal(refusal).await
        }
        async fn look_up(
            &self,
            key: &str,
        ) -> Result<Option<crate::ledger::claim::Record>, LedgerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.ledger.look_up(key).await
        }
    }

    fn claim(key: &str, fingerprint: &str, now_ms: i64) -> Claim {
        Claim {
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            attempt: format!("{now_ms:x}-{:016x}", crate::ops::clock::random_u64()),
            order_id: "48213577".to_owned(),
            event: "order.paid".to_owned(),
            amount: None,
            currency: None,
            conversion_type: "Purchase".to_owned(),
            now_ms,
            lease_until_ms: now_ms + 15_000,
            via: None,
            click_id: None,
            attempts: None,
            rt_status: None,
            replaced_attempts: Default::default(),
        }
    }

    fn cached(capacity: usize) -> (Arc<Counting>, CachedLedger) {
        let counting = Arc::new(Counting::default());
        let ledger = CachedLedger::with_limits(counting.clone(), capacity, DEFAULT_TTL_MS);
        (counting, ledger)
    }

    fn calls(c: &Counting) -> usize {
        c.calls.load(Ordering::SeqCst)
    }

    /// Claims and records `SENT` like a delivery that RedTrack accepted.
    async fn send(ledger: &CachedLedger, key: &str, fingerprint: &str, now_ms: i64) {
        let c = claim(key, fingerprint, now_ms);
        assert_eq!(ledger.claim(&c).await.unwrap(), ClaimOutcome::Claimed);
        assert!(
            ledger
                .finish(&c, Finish::Sent, now_ms + 5, now_ms / 1000 + 86_400)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_conversion_this_instance_sent_is_a_duplicate_without_a_ledger_call() {
        let (counting, ledger) = cached(16);
        send(&ledger, "evt#1-purchase", "fp-a", NOW).await;
        assert_eq!(calls(&counting), 2);
        let again = ledger
            .claim(&claim("evt#1-purchase", "fp-a", NOW + 1000))
            .await
            .unwrap();
        assert_eq!(
            again,
            ClaimOutcome::AlreadySent {
                sent_at_ms: Some(NOW + 5),
                expires_at_s: Some(NOW / 1000 + 86_400),
                from_memory: true
            }
        );
        assert_eq!(calls(&counting), 2, "no call for the duplicate");
    }

    #[tokio::test]
    async fn a_sent_record_found_by_a_claim_is_remembered() {
        // Another instance sent it: this one learns it from its first claim.
        let (counting, ledger) = cached(16);
        let other = CachedLedger::with_limits(counting.clone(), 16, DEFAULT_TTL_MS);
        send(&other, "evt#2-purchase", "fp-a", NOW).await;
        let first = ledger
            .claim(&claim("evt#2-purchase", "fp-a", NOW + 10))
            .await
            .unwrap();
        assert_eq!(
            first,
            ClaimOutcome::AlreadySent {
                sent_at_ms: Some(NOW + 5),
                expires_at_s: Some(NOW / 1000 + 86_400),
                from_memory: false
            }
        );
        let before = calls(&counting);
        let second = ledger
            .claim(&claim("evt#2-purchase", "fp-a", NOW + 20))
            .await
            .unwrap();
        assert!(matches!(
            second,
            ClaimOutcome::AlreadySent {
                from_memory: true,
                ..
            }
        ));
        assert_eq!(calls(&counting), before);
    }

    #[tokio::test]
    async fn another_fingerprint_goes_to_the_ledger_and_conflicts() {
        let (counting, ledger) = cached(16);
        send(&ledger, "evt#3-purchase", "fp-a", NOW).await;
        let before = calls(&counting);
        let changed = ledger
            .claim(&claim("evt#3-purchase", "fp-b", NOW + 10))
            .await
            .unwrap();
        assert_eq!(changed, ClaimOutcome::Conflict);
        assert_eq!(calls(&counting), before + 1);
        // The remembered conversion still answers from memory.
        let same = ledger
            .claim(&claim("evt#3-purchase", "fp-a", NOW + 20))
            .await
            .unwrap();
        assert!(matches!(
            same,
            ClaimOutcome::AlreadySent {
                from_memory: true,
                ..
            }
        ));
        assert_eq!(calls(&counting), before + 1);
    }

    #[tokio::test]
    async fn dry_run_keys_never_answer_for_live_ones() {
        let (counting, ledger) = cached(16);
        send(&ledger, "dry#4-purchase", "fp-a", NOW).await;
        let before = calls(&counting);
        let live = ledger
            .claim(&claim("evt#4-purchase", "fp-a", NOW + 10))
            .await
            .unwrap();
        assert_eq!(live, ClaimOutcome::Claimed);
        assert_eq!(calls(&counting), before + 1);
    }

    #[tokio::test]
    async fn only_sent_fills_the_map() {
        let (counting, ledger) = cached(16);
        // Queued and failed conversions may be sent again: never remembered.
        for (i, finish) in [Finish::Queued, Finish::Failed].into_iter().enumerate() {
            let c = claim(&format!("evt#5{i}-purchase"), "fp-a", NOW);
            assert_eq!(ledger.claim(&c).await.unwrap(), ClaimOutcome::Claimed);
            assert!(
                ledger
                    .finish(&c, finish, NOW, NOW / 1000 + 60)
                    .await
                    .unwrap()
            );
        }
        // A claim that is in progress elsewhere, and one released.
        let held = claim("evt#6-purchase", "fp-a", NOW);
        ledger.claim(&held).await.unwrap();
        let busy = ledger
            .claim(&claim("evt#6-purchase", "fp-a", NOW + 1))
            .await
            .unwrap();
        assert!(matches!(busy, ClaimOutcome::InProgress { .. }));
        let released = claim("evt#7-purchase", "fp-a", NOW);
        ledger.claim(&released).await.unwrap();
        ledger.release(&released).await.unwrap();
        assert!(ledger.is_empty());
        // A `SENT` that lost its lease (another attempt took over) is not remembered either.
        let late = claim("evt#8-purchase", "fp-a", NOW);
        ledger.claim(&late).await.unwrap();
        let taker = claim("evt#8-purchase", "fp-a", NOW + 20_000);
        assert_eq!(ledger.claim(&taker).await.unwrap(), ClaimOutcome::Claimed);
        assert!(
            !ledger
                .finish(&late, Finish::Sent, NOW + 20_001, NOW / 1000 + 86_400)
                .await
                .unwrap()
        );
        assert!(ledger.is_empty());
        // Every one of those went to the ledger: 2 claims and 2 finishes, 2 claims, a claim and
        // a release, 2 claims and a finish. Memory answered none of them.
        assert_eq!(calls(&counting), 11);
    }

    #[tokio::test]
    async fn an_entry_is_used_for_its_ttl_only() {
        let (counting, ledger) = cached(16);
        send(&ledger, "evt#9-purchase", "fp-a", NOW).await;
        let before = calls(&counting);
        let late = NOW + 5 + DEFAULT_TTL_MS + 1;
        let answer = ledger
            .claim(&claim("evt#9-purchase", "fp-a", late))
            .await
            .unwrap();
        // The table still says sent, and the entry is filled again from that answer.
        assert!(matches!(
            answer,
            ClaimOutcome::AlreadySent {
                from_memory: false,
                ..
            }
        ));
        assert_eq!(calls(&counting), before + 1);
    }

    #[tokio::test]
    async fn an_entry_never_outlives_its_record() {
        let (counting, ledger) = cached(16);
        let c = claim("evt#10-purchase", "fp-a", NOW);
        ledger.claim(&c).await.unwrap();
        // Kept 10 s only (a short TTL_DAYS would do the same at a larger scale).
        let expires_at_s = NOW / 1000 + 10;
        assert!(
            ledger
                .finish(&c, Finish::Sent, NOW, expires_at_s)
                .await
                .unwrap()
        );
        let before = calls(&counting);
        let answer = ledger
            .claim(&claim("evt#10-purchase", "fp-a", NOW + 11_000))
            .await
            .unwrap();
        assert_eq!(answer, ClaimOutcome::Claimed, "the record expired");
        assert_eq!(calls(&counting), before + 1);
    }

    #[tokio::test]
    async fn an_entry_learned_from_a_claim_never_outlives_its_record() {
        // Another instance sent it, with a record kept 10 s only; this one learns it from a claim.
        let (counting, ledger) = cached(16);
        let other = CachedLedger::with_limits(counting.clone(), 16, DEFAULT_TTL_MS);
        let c = claim("evt#12-purchase", "fp-a", NOW);
        other.claim(&c).await.unwrap();
        let expires_at_s = NOW / 1000 + 10;
        assert!(
            other
                .finish(&c, Finish::Sent, NOW, expires_at_s)
                .await
                .unwrap()
        );
        let learned = ledger
            .claim(&claim("evt#12-purchase", "fp-a", NOW + 10))
            .await
            .unwrap();
        assert!(matches!(
            learned,
            ClaimOutcome::AlreadySent {
                from_memory: false,
                ..
            }
        ));
        let before = calls(&counting);
        let answer = ledger
            .claim(&claim("evt#12-purchase", "fp-a", NOW + 11_000))
            .await
            .unwrap();
        assert_eq!(answer, ClaimOutcome::Claimed, "the record expired");
        assert_eq!(calls(&counting), before + 1);
    }

    #[tokio::test]
    async fn the_map_never_grows_past_its_cap() {
        let cap = 64;
        let (_, ledger) = cached(cap);
        for i in 0..cap * 5 {
            send(
                &ledger,
                &format!("evt#{i}-purchase"),
                "fp-a",
                NOW + i as i64,
            )
            .await;
            assert!(ledger.len() <= cap, "{} entries after {i}", ledger.len());
        }
        assert!(ledger.len() > cap / 2, "{} entries", ledger.len());
        // The newest is remembered.
        let newest = claim(
            &format!("evt#{}-purchase", cap * 5 - 1),
            "fp-a",
            NOW + 10_000,
        );
        assert!(matches!(
            ledger.claim(&newest).await.unwrap(),
            ClaimOutcome::AlreadySent {
                from_memory: true,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn capacity_zero_remembers_nothing() {
        let (counting, ledger) = cached(0);
        send(&ledger, "evt#11-purchase", "fp-a", NOW).await;
        let answer = ledger
            .claim(&claim("evt#11-purchase", "fp-a", NOW + 10))
            .await
            .unwrap();
        assert!(matches!(
            answer,
            ClaimOutcome::AlreadySent {
                from_memory: false,
                ..
            }
        ));
        assert_eq!(calls(&counting), 3);
        assert!(ledger.is_empty());
    }
}
