//! Shared test harness: a fresh DynamoDB table in moto, a wiremock RedTrack, and deliveries driven
//! through the real handler from API Gateway v2 events (the same path the runtime takes).
#![allow(dead_code)]

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use cartpanda_redtrack::bridge::Bridge;
use cartpanda_redtrack::inbound::verify::CartpandaApi;
use cartpanda_redtrack::ledger::dynamo::DynamoLedger;
use cartpanda_redtrack::ops::clock::{Clock, SystemClock};
use cartpanda_redtrack::ops::config::Config;
use cartpanda_redtrack::postback::redtrack::{RedTrackClient, RetryPolicy};
use cartpanda_redtrack::redrive::queue::{RedriveQueue, SqsQueue};
use cartpanda_redtrack::shops::directory::ShopCache;
use cartpanda_redtrack::{inbound::http, inbound::runtime};
use lambda_http::RequestExt;
use lambda_http::request::LambdaRequest;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use wiremock::MockServer;

pub const TOKEN: &str = "test-token-0123456789";

/// The moto endpoint; DynamoDB tests need it (`make test` starts moto and sets it).
pub fn moto_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap_or_else(|_| {
        panic!("DynamoDB tests need moto: run `make test`, or start `moto_server -p 5055` and set AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:5055")
    })
}

pub fn dynamo_client(endpoint: &str) -> Client {
    let creds = aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "tests");
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .build();
    Client::from_conf(conf)
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{:016x}",
        cartpanda_redtrack::ops::clock::random_u64()
    )
}

/// A key attribute (string) of the table or of an index.
fn string_key(name: &str) -> (AttributeDefinition, KeySchemaElement) {
    let definition = AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .unwrap();
    let schema = KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(KeyType::Hash)
        .build()
        .unwrap();
    (definition, schema)
}

/// A table as the template makes it: key `pk`, and the `sent-day` index (RedTrack's count).
pub async fn create_table(client: &Client) -> String {
    use aws_sdk_dynamodb::types::{GlobalSecondaryIndex, Projection, ProjectionType};
    let name = unique("dedup");
    let (pk, pk_schema) = string_key("pk");
    let (sent_day, sent_day_schema) = string_key("sent_day");
    let index = GlobalSecondaryIndex::builder()
        .index_name("sent-day")
        .key_schema(sent_day_schema)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .set_non_key_attributes(Some(
                    ["click_id", "conversion_type", "status"]
                        .map(String::from)
                        .to_vec(),
                ))
                .build(),
        )
        .build()
        .unwrap();
    client
        .create_table()
        .table_name(&name)
        .attribute_definitions(pk)
        .attribute_definitions(sent_day)
        .key_schema(pk_schema)
        .global_secondary_indexes(index)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table in moto");
    name
}

pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let creds = aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests");
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

pub async fn create_queue(client: &aws_sdk_sqs::Client, prefix: &str) -> String {
    client
        .create_queue()
        .queue_name(unique(prefix))
        .send()
        .await
        .expect("create queue in moto")
        .queue_url
        .expect("queue url")
}

/// Every message waiting in a queue (received with a visibility timeout of 0, so they stay).
pub async fn peek(client: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default()
}

/// The messages waiting in `queue_url`, received with `visibility` seconds of visibility timeout
/// (the queue's default when `None`), and the SQS event Lambda's poller would hand over for them
/// (each with its `ApproximateReceiveCount`).
pub async fn receive_as_sqs_event(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    visibility: Option<i32>,
) -> (
    Vec<aws_sdk_sqs::types::Message>,
    aws_lambda_events::event::sqs::SqsEvent,
) {
    use aws_sdk_sqs::types::MessageSystemAttributeName as Attribute;
    let messages = sqs
        .receive_message()
        .queue_url(queue_url)
        .set_visibility_timeout(visibility)
        .max_number_of_messages(10)
        .message_system_attribute_names(Attribute::All)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    let records: Vec<_> = messages
        .iter()
        .map(|m| {
            let count = m
                .attributes()
                .and_then(|a| a.get(&Attribute::ApproximateReceiveCount))
                .cloned()
                .unwrap_or_else(|| "1".into());
            json!({"messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                   "attributes": {"ApproximateReceiveCount": count}, "eventSource": "aws:sqs"})
        })
        .collect();
    let event = serde_json::from_value(json!({ "Records": records })).unwrap();
    (messages, event)
}

pub struct Harness {
    pub bridge: Arc<Bridge>,
    pub dynamo: Client,
    pub table: String,
    pub redtrack: MockServer,
    pub sqs: aws_sdk_sqs::Client,
    /// The redrive queue, when the harness was built with one.
    pub queue_url: Option<String>,
}

pub struct Options {
    pub env: Vec<(&'static str, String)>,
    pub dynamo_endpoint: Option<String>,
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
    pub with_queue: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            env: Vec::new(),
            dynamo_endpoint: None,
            clock: Arc::new(SystemClock),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(40),
                margin: Duration::from_millis(200),
            },
            with_queue: false,
        }
    }
}

pub const TEMPLATE_PATH: &str = "/postback?clickid={cid}&sum={total_price}&status=approved&fname={first_name}&lname={last_name}&phone={phone_number}&email={email}&contentid={product_id}&product={product_name}&protect=fixed%20token";

/// `DEDUP_TTL_DAYS` of the test harness: long enough that the fixtures' 2025 orders are not older
/// than the ledger's memory (tests of the age rule set their own, with a pinned clock).
pub const FIXTURE_MEMORY_DAYS: &str = "3650";

pub async fn harness() -> Harness {
    harness_with(Options::default()).await
}

pub async fn harness_with(options: Options) -> Harness {
    let redtrack = MockServer::start().await;
    let endpoint = moto_endpoint();
    let dynamo = dynamo_client(&endpoint);
    let table = create_table(&dynamo).await;
    let mut env: HashMap<String, String> = HashMap::from([
        (
            "REDTRACK_POSTBACK_URL".to_owned(),
            format!("{}{TEMPLATE_PATH}", redtrack.uri()),
        ),
        ("WEBHOOK_TOKEN".to_owned(), TOKEN.to_owned()),
        ("DEDUP_TABLE".to_owned(), table.clone()),
        ("REDTRACK_TIMEOUT_MS".to_owned(), "1000".to_owned()),
        // The fixtures' orders were created in 2025: a memory that covers them, so the age rule
        // (older than the memory: skipped) stays out of tests that are not about it.
        ("DEDUP_TTL_DAYS".to_owned(), FIXTURE_MEMORY_DAYS.to_owned()),
    ]);
    for (k, v) in options.env {
        env.insert(k.to_owned(), v);
    }
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("test config");
    let store_client = dynamo_client(options.dynamo_endpoint.as_deref().unwrap_or(&endpoint));
    let store = Arc::new(DynamoLedger::new(store_client, table.clone()));
    let tracker = RedTrackClient::new(config.redtrack_timeout, options.retry).unwrap();
    let sqs = sqs_client(&endpoint);
    let queue_url = match options.with_queue {
        true => Some(create_queue(&sqs, "redrive").await),
        false => None,
    };
    let queue = queue_url
        .as_ref()
        .map(|url| Arc::new(SqsQueue::new(sqs.clone(), url.clone())) as Arc<dyn RedriveQueue>);
    let bridge = Bridge {
        config,
        ledger: store.clone(),
        tracker: Arc::new(tracker),
        clock: options.clock,
        queue,
        shops: Some(ShopCache::new(store)),
        orders: Some(Arc::new(
            CartpandaApi::new(Duration::from_millis(1000)).unwrap(),
        )),
    };
    Harness {
        bridge: Arc::new(bridge),
        dynamo,
        table,
        redtrack,
        sqs,
        queue_url,
    }
}

/// An API Gateway v2 (HTTP API) event carrying `body`, as Cartpanda's POST arrives.
pub fn apigw_event(
    method: &str,
    body: Option<&str>,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Value {
    apigw_event_at("/cartpanda", method, body, query, headers)
}

/// The same, on another path (`/cartpanda/s2s`, `/cartpanda/<store>`).
pub fn apigw_event_at(
    path: &str,
    method: &str,
    body: Option<&str>,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Value {
    let raw_query: Vec<String> = query
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                k,
                url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            )
        })
        .collect();
    let mut qsp = serde_json::Map::new();
    for (k, v) in query {
        qsp.insert((*k).to_owned(), Value::from(*v));
    }
    let mut hdrs = serde_json::Map::new();
    hdrs.insert("content-type".into(), "application/json".into());
    hdrs.insert("user-agent".into(), "GuzzleHttp/7".into());
    for (k, v) in headers {
        hdrs.insert(k.to_ascii_lowercase(), Value::from(*v));
    }
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": raw_query.join("&"),
        "queryStringParameters": if qsp.is_empty() { Value::Null } else { Value::Object(qsp) },
        "headers": hdrs,
        "requestContext": {
            "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com", "domainPrefix": "api",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "GuzzleHttp/7"},
            "requestId": "req", "routeKey": format!("{method} {path}"), "stage": "$default",
            "time": "25/Nov/2026:12:00:00 +0000", "timeEpoch": 1_795_000_000_000u64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// A POST of `body` with the right token in the query.
pub fn post(body: &Value) -> Value {
    apigw_event("POST", Some(&body.to_string()), &[("token", TOKEN)], &[])
}

pub struct Answer {
    pub status: u16,
    pub headers: lambda_http::http::HeaderMap,
    pub body: Value,
}

/// Delivers one API Gateway event through the runtime adapter and the real handler.
pub async fn deliver_event(bridge: &Bridge, event: Value) -> Answer {
    let payload: LambdaRequest = serde_json::from_value(event).expect("a valid API Gateway event");
    let mut ctx = lambda_http::Context::default();
    ctx.deadline = (SystemClock.now_ms() + 10_000) as u64;
    let req = runtime::into_request(payload).with_lambda_context(ctx);
    let response = http::handle(bridge, req).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = match response.body() {
        lambda_http::Body::Text(t) => t.clone(),
        lambda_http::Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        lambda_http::Body::Empty => String::new(),
        _ => String::new(),
    };
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("response is JSON: {text}"));
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn deliver(h: &Harness, body: &Value) -> Answer {
    deliver_event(&h.bridge, post(body)).await
}

/// Makes `server` (a RedTrack stand-in) accept every postback.
pub async fn accept_all(server: &MockServer) {
    use wiremock::matchers::{method, path};
    wiremock::Mock::given(method("GET"))
        .and(path("/postback"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(server)
        .await;
}

/// Every postback RedTrack received, as decoded query maps, in arrival order.
pub async fn postbacks(h: &Harness) -> Vec<BTreeMap<String, String>> {
    h.redtrack
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            r.url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .collect()
}

/// Number of records in the dedup table.
pub async fn items(h: &Harness) -> usize {
    h.dynamo
        .scan()
        .table_name(&h.table)
        .send()
        .await
        .expect("scan")
        .items()
        .len()
}

/// The keys of every record in the table, sorted.
pub async fn record_keys(h: &Harness) -> Vec<String> {
    let mut keys: Vec<String> = h
        .dynamo
        .scan()
        .table_name(&h.table)
        .send()
        .await
        .expect("scan")
        .items()
        .iter()
        .filter_map(|i| i.get("pk").and_then(|v| v.as_s().ok()).cloned())
        .collect();
    keys.sort();
    keys
}

/// The keys of every record in the ledger table.
pub async fn keys(h: &Harness) -> Vec<String> {
    record_keys(h).await
}

/// Number of claim records: neither refusal records (`refused#…`, left by every 422) nor notes
/// (`note#…`, left by orders without a click ID).
pub async fn claims(h: &Harness) -> usize {
    keys(h)
        .await
        .iter()
        .filter(|k| !k.starts_with("refused#") && !k.starts_with("note#"))
        .count()
}

/// Number of refusal records (`refused#…`).
pub async fn refusals(h: &Harness) -> usize {
    keys(h)
        .await
        .iter()
        .filter(|k| k.starts_with("refused#"))
        .count()
}

pub async fn item(
    h: &Harness,
    key: &str,
) -> Option<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    h.dynamo
        .get_item()
        .table_name(&h.table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(key.to_owned()),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
}

/// Reconciliation's settings for tests: the order list at `cartpanda_uri` (`/api/v3/<slug>/orders`),
/// 20 ms between requests, no settling time, a 300 ms margin; `env` on top.
pub fn reconcile_settings(
    cartpanda_uri: &str,
    env: &[(&str, &str)],
) -> cartpanda_redtrack::reconcile::config::ReconcileSettings {
    let mut vars: HashMap<String, String> = HashMap::from([
        (
            "CARTPANDA_ORDER_LIST_URL".into(),
            format!("{cartpanda_uri}/api/v3/{{shop_slug}}/orders"),
        ),
        ("CARTPANDA_API_MIN_INTERVAL_MS".into(), "20".into()),
        ("RECONCILE_SETTLE_MIN".into(), "0".into()),
    ]);
    for (k, v) in env {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let mut settings = cartpanda_redtrack::reconcile::config::ReconcileSettings::from_lookup(|k| {
        vars.get(k).cloned()
    })
    .unwrap();
    settings.margin = Duration::from_millis(300);
    settings
}

/// A scheduled reconciliation run with `budget_ms` to go, through the reconcile handler's
/// function, its answer as JSON.
pub async fn scheduled_run(
    reconciler: &cartpanda_redtrack::reconcile::run::Reconciler,
    budget_ms: i64,
) -> Value {
    let deadline_ms = SystemClock.now_ms() + budget_ms;
    let answer = cartpanda_redtrack::reconcile::run_scheduled(reconciler, deadline_ms)
        .await
        .unwrap();
    serde_json::to_value(answer).unwrap()
}

/// A reconciler over the harness's bridge and table, listing orders as `settings` say.
pub fn reconciler(
    h: &Harness,
    settings: cartpanda_redtrack::reconcile::config::ReconcileSettings,
) -> cartpanda_redtrack::reconcile::run::Reconciler {
    use cartpanda_redtrack::reconcile::{orders::OrderLister, run::Reconciler};
    Reconciler {
        bridge: Arc::clone(&h.bridge),
        lister: Arc::new(OrderLister::new(settings.list.clone()).unwrap()),
        table: DynamoLedger::new(h.dynamo.clone(), h.table.clone()),
        settings,
    }
}

/// A realistic paid Cartpanda order (Brazilian store, money as Brazilian strings).
pub fn paid_order(order_id: u64) -> Value {
    json!({
        "event": "order.paid",
        "order": {
            "id": order_id,
            "number": 3187,
            "order_number": "3187",
            "email": "order-level@example.com",
            "phone": "(11) 98765-4321",
            "test": 0,
            "is_cartx_test": 0,
            "currency": "BRL",
            "total_price": "1.234,56",
            "status_id": "New",
            "chargeback_received": 0,
            "afid": null,
            "created_at": "2025-03-14 13:42:07",
            "processed_at": "2025-03-14T13:43:55.000000Z",
            "checkout_params": {"cid": "67d42f3b9a1e5c0012ab34cd", "utm_source": "facebook", "src": "fb-ads"},
            "shop": {"id": 612834, "slug": "vitalidade-natural", "name": "Vitalidade Natural"},
            "customer": {
                "id": 31904422, "email": "joao.conceicao@gmail.com", "first_name": "João",
                "last_name": "Conceição & Filhos", "phone": "+55 (11) 98765-4321", "cpf": "123.456.789-09"
            },
            "address": {"country_code": "BR", "city": "São Paulo"},
            "payment": {"type": "cc", "amount": 1234.56, "currency": "BRL"},
            "line_items": [
                {"id": 90001, "product_id": 22264700, "variant_id": 1, "name": "Colágeno Verisol + Ácido Hialurônico #1",
                 "price": "1.234,56", "quantity": 1, "up_sell_id": 0, "up_sell_type": null, "is_refunded": 0}
            ],
            "refunds": []
        },
        "webhook": {"id": 1}
    })
}

/// The same order after an upsell (and, with `second`, a second upsell).
pub fn upsell_order(order_id: u64, second: bool) -> Value {
    let mut v = paid_order(order_id);
    v["event"] = json!("order.upsell");
    let items = v["order"]["line_items"].as_array_mut().unwrap();
    items.push(json!({"id": 90002, "product_id": 22264763, "name": "Kit 3 meses", "price": 97, "quantity": 2,
                      "up_sell_id": 42186, "up_sell_type": "Upsell 1", "is_refunded": 0}));
    if second {
        items.push(json!({"id": 90003, "product_id": 22264763, "name": "Garantia estendida", "price": "19,90",
                          "quantity": 1, "up_sell_id": 42187, "up_sell_type": "Upsell 2", "is_refunded": 0}));
    }
    v["order"]["total_price"] = json!(if second { "1.448,36" } else { "1.428,56" });
    v
}

pub fn refund_order(order_id: u64) -> Value {
    let mut v = paid_order(order_id);
    v["event"] = json!("order.refunded");
    v["order"]["status_id"] = json!("Refunded");
    v["order"]["refunds"] =
        json!([{"id": 777, "total_amount": "1.234,56", "created_at": "2025-03-20 10:00:00"}]);
    v
}

/// A log writer that keeps every line in memory, for tests that read what was logged.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs for the whole test binary the function's own log filter at its most verbose setting
/// (everything our code logs at every level, every dependency up to the level the function allows
/// it), writing into the returned [`Capture`]. Once per test binary.
pub fn capture_everything_logged() -> Capture {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish()
        .with(cartpanda_redtrack::ops::logging::filter("trace"))
        .try_init()
        .expect("the only subscriber in this test binary");
    capture
}

/// Captures this thread's log lines as the function writes them on Lambda (JSON, fields at the
/// top level, INFO) until the guard is dropped. A test binary whose tests all capture this way
/// may run them in parallel: each subscriber sees its own thread only.
pub fn capture_json_logs() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    (capture, tracing::subscriber::set_default(subscriber))
}

/// A sample API Gateway event of `events/`.
pub fn sample(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("events/{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("events/{name}: {e}"))
}

/// RedTrack (wiremock) answers 200 to every postback.
pub async fn redtrack_accepts(h: &Harness) {
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path("/postback"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&h.redtrack)
        .await;
}

/// The AWS configuration an operator command uses, pointed at moto.
pub fn operator_aws() -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto_endpoint())
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "tests"),
        ))
        .build()
}

/// Harness options with a redrive queue and no redrive delay.
pub fn queued_options() -> Options {
    Options {
        with_queue: true,
        env: vec![("REDRIVE_DELAY_S", "0".to_owned())],
        ..Options::default()
    }
}

/// The redrive consumer over the harness's table and queue (its RedTrack client trying twice,
/// quickly), handing what it gives up to `dlq_url` when given.
pub fn redrive_consumer(
    h: &Harness,
    dlq_url: Option<String>,
) -> cartpanda_redtrack::redrive::consumer::Consumer {
    use cartpanda_redtrack::redrive::consumer::{Consumer, Redriver};
    let dlq = dlq_url
        .clone()
        .map(|u| Arc::new(SqsQueue::new(h.sqs.clone(), u)) as Arc<dyn RedriveQueue>);
    let fast = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
        margin: Duration::from_millis(100),
    };
    Consumer {
        redriver: Redriver {
            ledger: Arc::new(DynamoLedger::new(
                dynamo_client(&moto_endpoint()),
                h.table.clone(),
            )),
            tracker: Arc::new(RedTrackClient::new(Duration::from_millis(1000), fast).unwrap()),
            clock: Arc::new(SystemClock),
            ttl_days: 30,
            dlq,
        },
        sqs: h.sqs.clone(),
        queue_url: h.queue_url.clone().unwrap(),
        dlq_url,
    }
}

/// The event IDs RedTrack received, sorted.
pub async fn sent_event_ids(h: &Harness) -> Vec<String> {
    let mut ids: Vec<String> = postbacks(h)
        .await
        .iter()
        .map(|p| p["rdtk_event_id"].clone())
        .collect();
    ids.sort();
    ids
}

/// A named shop's record with reconciliation on or off, its Cartpanda slug its name, its API
/// token `cp-token-<name>` in the record, posting back to `postback_url`.
pub fn reconciled_shop(
    name: &str,
    reconcile: bool,
    postback_url: String,
) -> cartpanda_redtrack::shops::directory::ShopRecord {
    cartpanda_redtrack::shops::directory::ShopRecord {
        name: name.to_owned(),
        token_digests: vec![cartpanda_redtrack::inbound::auth::Tokens::hex_digest(
            "shop-secret-0123456789",
        )],
        postback_url,
        conversion_types: String::new(),
        send_test_orders: false,
        cartx_test_orders: String::new(),
        sum_currency: None,
        normalize_pii: true,
        cartpanda_api_token: Some(format!("cp-token-{name}")),
        cartpanda_api_token_parameter: None,
        click_id_sources: String::new(),
        reconcile,
        shop_slug: Some(name.to_owned()),
        s2s: false,
        verify_orders: false,
        timezone: None,
    }
}

/// A shop's coverage of yesterday (UTC) stored as measured: its runs make no daily coverage pass
/// (which would list the shop's orders a second time) until tomorrow.
pub async fn coverage_measured_yesterday(h: &Harness, shop: Option<&str>) {
    let now_s = SystemClock.now_ms() / 1000;
    let day = cartpanda_redtrack::inbound::datetime::format_utc(now_s - 86_400);
    let key = cartpanda_redtrack::ledger::keys::coverage(shop, &day[..10]);
    h.dynamo
        .put_item()
        .table_name(&h.table)
        .item("pk", aws_sdk_dynamodb::types::AttributeValue::S(key))
        .send()
        .await
        .unwrap();
}
