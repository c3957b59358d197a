//! The time budget (`ops::budget`) against a slow DynamoDB: RedTrack hangs for the whole call, so
//! the conversion must be queued, and the ledger answers its `QUEUED` write slower than any SDK
//! attempt may take. With the production SDK configuration and retry margin, the delivery still
//! answers before the invocation's deadline, with the conversion in the queue.
//!
//! DynamoDB is moto behind a stand-in (wiremock forwarding every call to moto) that holds back
//! `UpdateItem` answers; SQS is moto itself; RedTrack is wiremock answering after 30 s.

mod common;

use cartpanda_redtrack::bridge::Bridge;
use cartpanda_redtrack::inbound::{http, runtime};
use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::budget;
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::ops::config::Config;
use cartpanda_redtrack::postback::redtrack::{RedTrackClient, RetryPolicy};
use cartpanda_redtrack::redrive::queue::SqsQueue;
use common::*;
use lambda_http::RequestExt;
use lambda_http::request::LambdaRequest;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// How long the stand-in holds back an `UpdateItem` answer: longer than any SDK attempt.
const SLOW_UPDATE: Duration = Duration::from_secs(3);
/// The invocation's time, from the request to its deadline.
const INVOCATION: Duration = Duration::from_secs(6);

/// Forwards each DynamoDB call to moto; `UpdateItem` answers come [`SLOW_UPDATE`] late.
struct SlowUpdates {
    moto: String,
}

impl Respond for SlowUpdates {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let target = request
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let (status, headers, body) = forward(&self.moto, &target, &request.body);
        let mut answer =
            ResponseTemplate::new(status).set_body_raw(body, "application/x-amz-json-1.0");
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("x-amz-crc32")
                || name.eq_ignore_ascii_case("x-amzn-requestid")
            {
                answer = answer.insert_header(name.as_str(), value.as_str());
            }
        }
        if target.ends_with(".UpdateItem") {
            answer = answer.set_delay(SLOW_UPDATE);
        }
        answer
    }
}

/// One call to moto over a fresh connection (moto closes every connection after its answer).
fn forward(moto: &str, target: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let addr = moto.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("moto");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.0\r\n\
         X-Amz-Target: {target}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_ledger_after_redtrack_gave_up_still_answers_before_the_deadline() {
    let moto = moto_endpoint();
    let table = create_table(&dynamo_client(&moto)).await;
    let ddb_stand_in = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(SlowUpdates { moto: moto.clone() })
        .mount(&ddb_stand_in)
        .await;
    let redtrack = MockServer::start().await;
    Mock::given(wiremock::matchers::method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&redtrack)
        .await;

    // The production SDK configuration (timeouts of ops::budget), the ledger behind the stand-in.
    let sdk = cartpanda_redtrack::ops::aws::load().await;
    let ledger_client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url(ddb_stand_in.uri())
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = create_queue(&sqs, "budget").await;
    let env = [
        (
            "REDTRACK_POSTBACK_URL".to_owned(),
            format!(
                "{}/postback?clickid={{cid}}&sum={{total_price}}",
                redtrack.uri()
            ),
        ),
        ("WEBHOOK_TOKEN".to_owned(), TOKEN.to_owned()),
        ("DEDUP_TABLE".to_owned(), table.clone()),
        ("REDTRACK_TIMEOUT_MS".to_owned(), "30000".to_owned()),
        ("REDRIVE_DELAY_S".to_owned(), "0".to_owned()),
        // The fixtures' 2025 orders stay within the ledger's memory.
        ("DEDUP_TTL_DAYS".to_owned(), "3650".to_owned()),
    ];
    let config =
        Config::from_lookup(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap();
    let bridge = Bridge {
        tracker: Arc::new(
            RedTrackClient::new(config.redtrack_timeout, RetryPolicy::default()).unwrap(),
        ),
        ledger: Arc::new(DynamoLedger::new(ledger_client, table.clone())),
        clock: Arc::new(SystemClock),
        queue: Some(Arc::new(SqsQueue::new(sqs.clone(), queue_url.clone()))),
        shops: None,
        orders: None,
        config,
    };

    let payload: LambdaRequest = serde_json::from_value(post(&paid_order(91001))).unwrap();
    let mut ctx = lambda_http::Context::default();
    let started = Instant::now();
    ctx.deadline = (SystemClock.now_ms() + INVOCATION.as_millis() as i64) as u64;
    let response = http::handle(
        &bridge,
        runtime::into_request(payload).with_lambda_context(ctx),
    )
    .await;
    let took = started.elapsed();

    assert!(
        took < INVOCATION,
        "answered after {took:?}, past the invocation's {INVOCATION:?} (margin {:?})",
        budget::AFTER_SEND
    );
    assert_eq!(response.status().as_u16(), 202, "queued for redrive");
    let queued = peek(&sqs, &queue_url).await;
    assert_eq!(queued.len(), 1, "the conversion waits in the queue");
}
