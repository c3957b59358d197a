//! A TCP proxy between the SDK and moto that loses DynamoDB's answers the way a network does.
//!
//! It reads each HTTP request whole, forwards it to moto on a fresh connection, reads moto's
//! answer whole, and then, depending on its plan, hands the answer back or not:
//!
//! - [`FaultProxy::lose_answers`]: the next `n` requests of one operation (`PutItem`,
//!   `UpdateItem`) reach moto and are applied, but the client's connection is cut before the
//!   answer: the SDK sees a broken connection and retries, exactly as when DynamoDB applied a
//!   write whose answer was lost.
//! - [`FaultProxy::storm`]: outages at given moments (each up to a few seconds). A request that
//!   arrives during one is, a third each, black-holed (never forwarded, its connection held open
//!   until the outage ends), applied with its answer held back until the outage ends and then
//!   cut, or let through (a flapping network lets some calls through); any answer that comes back
//!   during an outage has its connection cut. Choices come from a seeded generator.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy did, for the test's report.
#[derive(Debug, Default)]
pub struct Counts {
    pub forwarded: AtomicUsize,
    pub answers_lost: AtomicUsize,
    pub black_holed: AtomicUsize,
}

struct Plan {
    /// Operation (`X-Amz-Target` suffix, e.g. `.PutItem`) and how many answers to lose.
    lose: Vec<(String, usize)>,
    /// Operation and how many requests to cut before they reach moto.
    refuse: Vec<(String, usize)>,
    /// Outages, from..until.
    outages: Vec<(Instant, Instant)>,
}

pub struct FaultProxy {
    /// The endpoint to give the SDK.
    pub url: String,
    pub counts: Arc<Counts>,
    plan: Arc<Mutex<Plan>>,
    rng: Arc<AtomicU64>,
}

impl FaultProxy {
    /// A proxy in front of moto (`http://host:port`).
    pub async fn start(moto: &str, seed: u64) -> FaultProxy {
        let upstream = moto.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let plan = Arc::new(Mutex::new(Plan {
            lose: Vec::new(),
            refuse: Vec::new(),
            outages: Vec::new(),
        }));
        let counts = Arc::new(Counts::default());
        let rng = Arc::new(AtomicU64::new(seed));
        let proxy = FaultProxy {
            url,
            counts: counts.clone(),
            plan: plan.clone(),
            rng: rng.clone(),
        };
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let conn = Conn {
                    upstream: upstream.clone(),
                    plan: plan.clone(),
                    counts: counts.clone(),
                    rng: rng.clone(),
                };
                tokio::spawn(conn.serve(client));
            }
        });
        proxy
    }

    /// Loses the answers of the next `n` requests of `operation` (`PutItem`, `UpdateItem`).
    pub fn lose_answers(&self, operation: &str, n: usize) {
        let mut plan = self.plan.lock().unwrap();
        plan.lose.push((format!(".{operation}"), n));
    }

    /// Cuts the connections of the next `n` requests of `operation` before they reach moto: the
    /// call fails (the SDK retries it, and fails again while requests are refused).
    pub fn refuse(&self, operation: &str, n: usize) {
        let mut plan = self.plan.lock().unwrap();
        plan.refuse.push((format!(".{operation}"), n));
    }

    /// Back to passing everything.
    pub fn clear(&self) {
        let mut plan = self.plan.lock().unwrap();
        plan.lose.clear();
        plan.refuse.clear();
        plan.outages.clear();
    }

    /// Outages starting `at` after now, each lasting its duration.
    pub fn storm(&self, outages: &[(Duration, Duration)]) {
        let now = Instant::now();
        let mut plan = self.plan.lock().unwrap();
        plan.outages = outages
            .iter()
            .map(|(at, len)| (now + *at, now + *at + *len))
            .collect();
    }

    /// The next number of the proxy's seeded generator (splitmix64), for the test's own choices.
    pub fn random(&self) -> u64 {
        next(&self.rng)
    }
}

fn next(state: &AtomicU64) -> u64 {
    let mut z = state
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::SeqCst)
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Conn {
    upstream: String,
    plan: Arc<Mutex<Plan>>,
    counts: Arc<Counts>,
    rng: Arc<AtomicU64>,
}

/// What to do with one request.
enum Fate {
    Pass,
    /// Forward, then cut the connection without the answer (after waiting until `Instant`).
    LoseAnswer(Instant),
    /// Never forward; hold the connection until `Instant`, then cut it.
    BlackHole(Instant),
}

impl Conn {
    async fn serve(self, mut client: TcpStream) {
        loop {
            let Some(request) = read_message(&mut client).await else {
                return;
            };
            match self.fate(&request) {
                Fate::BlackHole(until) => {
                    self.counts.black_holed.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep_until(until.into()).await;
                    return;
                }
                Fate::LoseAnswer(until) => {
                    let _ = self.forward(&request).await;
                    self.counts.answers_lost.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep_until(until.into()).await;
                    return;
                }
                Fate::Pass => {
                    let Some(answer) = self.forward(&request).await else {
                        return;
                    };
                    if self.outage_at(Instant::now()).is_some() && next(&self.rng) % 3 != 0 {
                        // During an outage (maybe begun while moto answered): the answer is cut.
                        self.counts.answers_lost.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if client.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn fate(&self, request: &[u8]) -> Fate {
        let head = String::from_utf8_lossy(&request[..request.len().min(4096)]).to_lowercase();
        let target = head
            .lines()
            .find_map(|l| l.strip_prefix("x-amz-target:"))
            .unwrap_or("")
            .trim()
            .to_owned();
        let mut plan = self.plan.lock().unwrap();
        if let Some((_, n)) = plan
            .refuse
            .iter_mut()
            .find(|(op, n)| *n > 0 && target.ends_with(&op.to_lowercase()))
        {
            *n -= 1;
            return Fate::BlackHole(Instant::now());
        }
        if let Some((_, n)) = plan
            .lose
            .iter_mut()
            .find(|(op, n)| *n > 0 && target.ends_with(&op.to_lowercase()))
        {
            *n -= 1;
            return Fate::LoseAnswer(Instant::now());
        }
        drop(plan);
        match (self.outage_at(Instant::now()), next(&self.rng) % 3) {
            (None, _) | (Some(_), 0) => Fate::Pass,
            (Some(until), 1) => Fate::BlackHole(until),
            (Some(until), _) => Fate::LoseAnswer(until),
        }
    }

    /// The end of the outage under way at `t`, if any.
    fn outage_at(&self, t: Instant) -> Option<Instant> {
        let plan = self.plan.lock().unwrap();
        plan.outages
            .iter()
            .find(|(from, until)| *from <= t && t < *until)
            .map(|(_, until)| *until)
    }

    /// One request to moto on a fresh connection; its whole answer.
    async fn forward(&self, request: &[u8]) -> Option<Vec<u8>> {
        self.counts.forwarded.fetch_add(1, Ordering::SeqCst);
        let mut moto = TcpStream::connect(&self.upstream).await.ok()?;
        moto.write_all(request).await.ok()?;
        read_message(&mut moto).await
    }
}

/// One HTTP/1.1 message (head and a `Content-Length` body) read whole; `None` at EOF or error.
async fn read_message(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.truncate(head_end + length);
    Some(buf)
}
