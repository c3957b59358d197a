//! The bridge's decisions above its I/O, with in-memory fakes of our own traits (the store, the
//! queue and RedTrack): what happens when the store fails midway, and what a queued message holds.

use async_trait::async_trait;
use cartpanda_redtrack::bridge::{Bridge, Outcome, Report};
use cartpanda_redtrack::conversion::classify::{self, Decision};
use cartpanda_redtrack::inbound::webhook;
use cartpanda_redtrack::ledger::claim::{
    Claim, ClaimOutcome, Finish, Ledger, LedgerError, MemoryLedger,
};
use cartpanda_redtrack::ops::clock::FixedClock;
use cartpanda_redtrack::ops::config::Config;
use cartpanda_redtrack::postback::redtrack::{Accepted, SendError, Tracker};
use cartpanda_redtrack::redrive::queue::MemoryQueue;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::time::Instant;

/// RedTrack as a script: answers from the list, in order, counting calls.
struct ScriptedTracker {
    answers: Vec<Result<Accepted, SendError>>,
    calls: AtomicUsize,
}

#[async_trait]
impl Tracker for ScriptedTracker {
    async fn send(&self, _url: &url::Url, _deadline: Instant) -> Result<Accepted, SendError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.answers[n.min(self.answers.len() - 1)].clone()
    }
}

/// A store whose claims succeed `ok` times, then fail.
struct FailingStore {
    inner: MemoryLedger,
    ok: AtomicUsize,
}

#[async_trait]
impl Ledger for FailingStore {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
        if self.ok.fetch_sub(1, Ordering::SeqCst) == 0 {
            return Err(LedgerError::Throttled);
        }
        self.inner.claim(claim).await
    }
    async fn finish(
        &self,
        claim: &Claim,
        finish: Finish,
        now: i64,
        exp: i64,
    ) -> Result<bool, LedgerError> {
        self.inner.finish(claim, finish, now, exp).await
    }
    async fn release(&self, claim: &Claim) -> Result<(), LedgerError> {
        self.inner.release(claim).await
    }
    async fn note(
        &self,
        note: &cartpanda_redtrack::ledger::notes::Note,
    ) -> Result<(), LedgerError> {
        self.inner.note(note).await
    }
    async fn note_refusal(
        &self,
        refusal: &cartpanda_redtrack::ledger::refusal::Refusal,
    ) -> Result<(), LedgerError> {
        self.inner.note_refusal(refusal).await
    }
    async fn look_up(
        &self,
        key: &str,
    ) -> Result<Option<cartpanda_redtrack::ledger::claim::Record>, LedgerError> {
        self.inner.look_up(key).await
    }
}

fn config() -> Config {
    let env = [
        (
            "REDTRACK_POSTBACK_URL",
            "https://trk.example.com/postback?clickid={cid}&sum={total_price}&email={email}",
        ),
        ("WEBHOOK_TOKEN", "a-long-enough-secret"),
        ("DEDUP_TABLE", "dedup"),
        // The fixtures' 2025 orders stay within the ledger's memory.
        ("DEDUP_TTL_DAYS", "3650"),
    ];
    Config::from_lookup(|k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    })
    .unwrap()
}

fn upsell_body() -> String {
    json!({"event": "order.upsell", "order": {
    "id": 77, "total_price": "300,00", "checkout_params": {"cid": "abc123"},
    "customer": {"email": "ana@example.com"},
    "line_items": [
        {"id": 1, "price": "100,00", "up_sell_id": 0},
        {"id": 2, "price": "50,00", "up_sell_id": 11, "up_sell_type": "Upsell 1"},
        {"id": 3, "price": "150,00", "up_sell_id": 12, "up_sell_type": "Upsell 2"}
    ]}})
    .to_string()
}

fn bridge(
    store: Arc<dyn Ledger>,
    tracker: Arc<ScriptedTracker>,
    queue: Option<Arc<MemoryQueue>>,
) -> Bridge {
    Bridge {
        config: config(),
        ledger: store,
        tracker,
        clock: Arc::new(FixedClock::at(1_800_000_000_000)),
        queue: queue.map(|q| q as _),
        shops: None,
        orders: None,
    }
}

/// The upsell delivery (two lines) parsed, classified and processed by `b`.
async fn process_upsell(b: &Bridge) -> Report {
    let body = upsell_body();
    let delivery = webhook::parse(body.as_bytes()).unwrap();
    let classified = classify::classify(&delivery, &b.config.profile.rules).unwrap();
    let Decision::Convert(conversions) = &classified.decision else {
        panic!("an upsell converts")
    };
    let order = classified.order.unwrap();
    b.process(
        &b.config.profile,
        "order.upsell",
        "77",
        order,
        conversions,
        Default::default(),
    )
    .await
}

#[tokio::test]
async fn a_store_failure_midway_stops_before_the_next_claim_and_answers_503() {
    let store = Arc::new(FailingStore {
        inner: MemoryLedger::default(),
        ok: AtomicUsize::new(1),
    });
    let tracker = Arc::new(ScriptedTracker {
        answers: vec![Ok(Accepted {
            status: 200,
            attempts: 1,
        })],
        calls: AtomicUsize::new(0),
    });
    let b = bridge(store.clone(), tracker.clone(), None);
    let report = process_upsell(&b).await;
    let outcomes: Vec<Outcome> = report.conversions.iter().map(|c| c.outcome).collect();
    assert_eq!(outcomes, [Outcome::Sent, Outcome::LedgerUnavailable]);
    assert_eq!(report.status(), 503);
    assert_eq!(
        tracker.calls.load(Ordering::SeqCst),
        1,
        "nothing sent without a claim"
    );
    let records = store.inner.records.lock().unwrap();
    assert_eq!(records["evt#77-upsell-2"].status, "SENT");
    assert!(!records.contains_key("evt#77-upsell-3"));
}

#[tokio::test]
async fn a_queued_conversion_carries_what_the_resend_needs() {
    let store = Arc::new(MemoryLedger::default());
    let down = SendError::Unavailable {
        target: "https://trk.example.com".into(),
        reason: "HTTP 503".into(),
        last_status: Some(503),
        attempts: 3,
    };
    let tracker = Arc::new(ScriptedTracker {
        answers: vec![Err(down)],
        calls: AtomicUsize::new(0),
    });
    let queue = Arc::new(MemoryQueue::default());
    let b = bridge(store.clone(), tracker, Some(queue.clone()));
    let report = process_upsell(&b).await;
    assert_eq!(report.status(), 202);
    assert!(
        report
            .conversions
            .iter()
            .all(|c| c.outcome == Outcome::Queued && c.redtrack_status == Some(503))
    );
    let messages = queue.messages.lock().unwrap();
    assert_eq!(messages.len(), 2);
    let (first, delay) = &messages[0];
    assert_eq!(*delay, 60);
    assert_eq!(
        (
            first.key.as_str(),
            first.event_id.as_str(),
            first.order_id.as_str()
        ),
        ("evt#77-upsell-2", "77-upsell-2", "77")
    );
    assert!(
        first.postback.contains("sum=50.00") && first.postback.contains("email=ana%40example.com")
    );
    assert!(
        !format!("{first:?}").contains("ana"),
        "the message's Debug hides the postback"
    );
    let records = store.records.lock().unwrap();
    assert_eq!(records["evt#77-upsell-2"].status, "QUEUED");
    assert_eq!(records["evt#77-upsell-2"].fingerprint, first.fingerprint);
}
