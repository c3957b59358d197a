//! Requests for named shops carry no proof before their shop's record is read, so that read must
//! be bounded: whatever names are asked, a warm instance holds at most `CACHE_CAPACITY` of them,
//! reads each at most once per TTL, and keeps serving real deliveries. The shop directory is a
//! counting fake of our own trait; the handler, cache and service are the real ones.

mod common;

use async_trait::async_trait;
use cartpanda_redtrack::bridge::Bridge;
use cartpanda_redtrack::inbound::auth::Tokens;
use cartpanda_redtrack::ledger::claim::{LedgerError, MemoryLedger};
use cartpanda_redtrack::ops::clock::FixedClock;
use cartpanda_redtrack::ops::config::Config;
use cartpanda_redtrack::postback::redtrack::{Accepted, SendError, Tracker};
use cartpanda_redtrack::shops::directory::{
    CACHE_CAPACITY, CACHE_TTL_MS, ShopCache, ShopDirectory, ShopRecord,
};
use common::{apigw_event_at, deliver_event, paid_order};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

const SHOP_TOKEN: &str = "loja-real-secret-0123456789";

/// The shop directory, counting the reads of every name.
#[derive(Default)]
struct CountingDirectory {
    reads: Mutex<HashMap<String, usize>>,
    /// How long a read takes (a DynamoDB round trip).
    delay_ms: u64,
}

impl CountingDirectory {
    fn reads_of(&self, name: &str) -> usize {
        self.reads.lock().unwrap().get(name).copied().unwrap_or(0)
    }
    fn most_reads_of_one_name(&self) -> usize {
        self.reads
            .lock()
            .unwrap()
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }
    fn total(&self) -> usize {
        self.reads.lock().unwrap().values().sum()
    }
}

#[async_trait]
impl ShopDirectory for CountingDirectory {
    async fn get(&self, name: &str) -> Result<Option<ShopRecord>, LedgerError> {
        *self
            .reads
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default() += 1;
        if self.delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(self.delay_ms)).await;
        }
        Ok((name == "loja-real").then(|| ShopRecord {
            name: name.to_owned(),
            token_digests: vec![Tokens::hex_digest(SHOP_TOKEN)],
            postback_url: "https://trk.example.com/postback?clickid={cid}&sum={total_price}"
                .to_owned(),
            conversion_types: String::new(),
            send_test_orders: false,
            cartx_test_orders: String::new(),
            sum_currency: None,
            normalize_pii: true,
            cartpanda_api_token: None,
            cartpanda_api_token_parameter: None,
            click_id_sources: String::new(),
            reconcile: false,
            shop_slug: None,
            s2s: false,
            verify_orders: true,
            timezone: None,
        }))
    }
}

/// RedTrack accepting everything, counting postbacks.
#[derive(Default)]
struct Accepting(AtomicUsize);

#[async_trait]
impl Tracker for Accepting {
    async fn send(&self, _url: &url::Url, _deadline: Instant) -> Result<Accepted, SendError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Accepted {
            status: 200,
            attempts: 1,
        })
    }
}

fn bridge(
    directory: Arc<CountingDirectory>,
    tracker: Arc<Accepting>,
    clock: Arc<FixedClock>,
) -> Bridge {
    let env = [
        (
            "REDTRACK_POSTBACK_URL",
            "https://trk.example.com/postback?clickid={cid}",
        ),
        ("WEBHOOK_TOKEN", "default-shop-secret-0123456789"),
        ("DEDUP_TABLE", "ledger"),
        // The fixtures' 2025 orders stay within the ledger's memory.
        ("DEDUP_TTL_DAYS", "3650"),
    ];
    let config = Config::from_lookup(|k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    })
    .unwrap();
    Bridge {
        config,
        ledger: Arc::new(MemoryLedger::default()),
        tracker,
        clock,
        queue: None,
        shops: Some(ShopCache::new(directory)),
        orders: None,
    }
}

fn post_to(shop: &str, token: &str, order_id: u64) -> serde_json::Value {
    apigw_event_at(
        &format!("/cartpanda/{shop}"),
        "POST",
        Some(&paid_order(order_id).to_string()),
        &[("token", token)],
        &[],
    )
}

#[tokio::test]
async fn twenty_thousand_unknown_shop_names_stay_bounded_and_real_deliveries_still_go_through() {
    let directory = Arc::new(CountingDirectory::default());
    let tracker = Arc::new(Accepting::default());
    let b = bridge(
        directory.clone(),
        tracker.clone(),
        Arc::new(FixedClock::at(1_800_000_000_000)),
    );
    let names = 20_000;
    for n in 0..names {
        let answer = deliver_event(
            &b,
            post_to(&format!("probe-{n}"), "made-up-token-000000", 1),
        )
        .await;
        assert_eq!(
            answer.status, 401,
            "an unknown shop is refused like a wrong token"
        );
    }
    let cache = b.shops.as_ref().unwrap();
    assert_eq!(
        cache.len(),
        CACHE_CAPACITY,
        "the cache is at its cap, not at {names}"
    );
    assert_eq!(directory.total(), names, "each name was read once");
    assert_eq!(directory.most_reads_of_one_name(), 1);

    // The instance keeps answering real deliveries of a real shop.
    let sent = deliver_event(&b, post_to("loja-real", SHOP_TOKEN, 48213577)).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(sent.body["conversions"][0]["outcome"], "sent");
    assert_eq!(tracker.0.load(Ordering::SeqCst), 1);
    assert!(cache.len() <= CACHE_CAPACITY);
}

#[tokio::test]
async fn an_unknown_name_costs_one_read_per_ttl() {
    let directory = Arc::new(CountingDirectory::default());
    let clock = Arc::new(FixedClock::at(1_800_000_000_000));
    let b = bridge(
        directory.clone(),
        Arc::new(Accepting::default()),
        clock.clone(),
    );
    for _ in 0..50 {
        assert_eq!(
            deliver_event(&b, post_to("probe", "made-up-token-000000", 1))
                .await
                .status,
            401
        );
    }
    assert_eq!(directory.reads_of("probe"), 1);
    clock.advance(CACHE_TTL_MS - 1);
    assert_eq!(
        deliver_event(&b, post_to("probe", "made-up-token-000000", 1))
            .await
            .status,
        401
    );
    assert_eq!(directory.reads_of("probe"), 1, "still within the TTL");
    clock.advance(1);
    assert_eq!(
        deliver_event(&b, post_to("probe", "made-up-token-000000", 1))
            .await
            .status,
        401
    );
    assert_eq!(
        directory.reads_of("probe"),
        2,
        "read again once the TTL is over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_uncached_name_share_one_read() {
    let directory = Arc::new(CountingDirectory {
        delay_ms: 50,
        ..CountingDirectory::default()
    });
    let b = Arc::new(bridge(
        directory.clone(),
        Arc::new(Accepting::default()),
        Arc::new(FixedClock::at(1_800_000_000_000)),
    ));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                deliver_event(&b, post_to("probe-together", "made-up-token-000000", 1))
                    .await
                    .status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 401);
    }
    assert_eq!(directory.reads_of("probe-together"), 1);
}
