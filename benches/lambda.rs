//! The whole function under a Lambda Runtime API stand-in: cold start, CPU per warm invocation,
//! peak RSS and DynamoDB calls per conversion.
//!
//! Everything runs on this machine, no AWS account:
//!
//! - a Runtime API stand-in (`GET /2018-06-01/runtime/invocation/next` with the
//!   `Lambda-Runtime-Aws-Request-Id`, `-Deadline-Ms`, `-Invoked-Function-Arn` and `-Trace-Id`
//!   headers; `POST …/invocation/{id}/response`, `…/{id}/error` and `/init/error`);
//! - moto as DynamoDB (`scripts/moto_serial.py`, started and stopped here), behind a small
//!   counting proxy that keeps the function's connections alive (as DynamoDB does) and counts
//!   every call by operation (`X-Amz-Target`);
//! - a local HTTP receiver as RedTrack (answers `200 OK`, counts postbacks).
//!
//! The function is the release binary (`BENCH_BINARY`, default `target/release/cartpanda-redtrack`)
//! started with the environment Lambda gives a `provided.al2023` function (LogFormat JSON,
//! 128 MB). Figures:
//!
//! - init: process start → first `next` request; first response: process start → the first
//!   invocation's response (a new conversion: PutItem, RedTrack GET, UpdateItem); medians of
//!   `BENCH_STARTS` (25) starts;
//! - CPU per invocation from `/proc/<pid>/stat` (utime + stime, what the kernel charges the
//!   process, every thread) and from the threads' `schedstat` (nanoseconds) over `BENCH_N`
//!   (1,000) warm invocations each of new conversions (distinct order IDs), duplicates (the same
//!   orders again) and refused deliveries (wrong token: the runtime and handler with no I/O);
//! - peak RSS (`VmHWM`) after all of them;
//! - DynamoDB calls per invocation in each phase, by operation;
//! - the same warm phases for a second instance of the function (duplicates of what the first
//!   sent: answered by the table, not from memory) and for the Python peer
//!   (`../shared/peers/python/bootstrap`, run with `BENCH_PYTHON`) under the same stand-ins, in
//!   `BENCH_ROUNDS` (10) interleaved blocks, with the function's figures as ratios to the peer's;
//! - the phase breakdown of each invocation: every stand-in marks when it read a request (its head,
//!   then its body) and when its answer was ready to write, on one clock, so the time between marks splits an
//!   invocation into the function's own segments (`next` → handler and SDK → DynamoDB request,
//!   DynamoDB answer → RedTrack GET, …, → response POST) and the stand-ins' (moto, RedTrack).
//!
//! `cargo build --release --bin cartpanda-redtrack && cargo bench --bench lambda` (or `make bench`).
//! Environment: `BENCH_BINARY`, `BENCH_STARTS`, `BENCH_N`, `BENCH_PYTHON` (the Python with moto,
//! default `.tools/bin/python`), `BENCH_MOTO_URL` (use a running moto instead of starting one),
//! `BENCH_JSON` (also write the figures as JSON to this file), `BENCH_FUNCTION_ENV` (more
//! `NAME=value` pairs for the function, e.g. `NORMALIZE_PII=false`), `BENCH_PEER` (the peer's
//! script, `none` to leave it out), `BENCH_ROUNDS`, `BENCH_BASELINE` (the build before, e.g.
//! main's: its cold starts alternate with the function's and its warm phases join the blocks).

use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TOKEN: &str = "demo-token";
const FUNCTION: &str = "cartpanda-redtrack-bridge";
const TEMPLATE_QUERY: &str = "status=approved&clickid={cid}&sum={total_price}&fname={first_name}\
&lname={last_name}&phone={phone_number}&email={email}&contentid={product_id}&product={product_name}";
const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 server side: requests with Content-Length or chunked bodies, keep-alive.

type Headers = Vec<(String, String)>;

/// When each stand-in saw what, during one invocation: the phase breakdown. Every stand-in runs
/// in this process, so one clock orders them all.
static MARKS: Mutex<Vec<(Instant, String)>> = Mutex::new(Vec::new());

fn mark(what: impl Into<String>) {
    let at = Instant::now();
    MARKS.lock().unwrap().push((at, what.into()));
}

/// Requests that carried an `Expect` header (`100-continue` would wait for an interim answer).
static EXPECT_HEADERS: AtomicU64 = AtomicU64::new(0);

/// Connections each stand-in accepted.
static CONNECTIONS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn take_marks() -> Vec<(Instant, String)> {
    std::mem::take(&mut *MARKS.lock().unwrap())
}
/// Events waiting for a `next` request: (request ID, event document).
type EventQueue = Arc<(Mutex<VecDeque<(String, String)>>, Condvar)>;

struct HttpRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the head (start line and headers) of a message; `None` at a clean end of stream.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<(String, Headers)>> {
    let mut start = String::new();
    loop {
        start.clear();
        if reader.read_line(&mut start)? == 0 {
            return Ok(None);
        }
        if !start.trim().is_empty() {
            break;
        }
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok(Some((start.trim_end().to_owned(), headers)))
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a body framed by Content-Length or chunked transfer encoding (`until_eof` otherwise).
fn read_body(
    reader: &mut impl BufRead,
    headers: &[(String, String)],
    until_eof: bool,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if find(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                // Trailers are not used by any client here; the final CRLF was read above.
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = find(headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if until_eof {
        reader.read_to_end(&mut body)?;
    }
    Ok(body)
}

fn read_request(reader: &mut impl BufRead) -> io::Result<Option<HttpRequest>> {
    read_request_marked(reader, |_, _| None)
}

/// [`read_request`], marking `"{label} head in"` when the head is read (requests with a body)
/// and `"{label} in"` when the whole request is: a body that comes apart from its head (two
/// writes) shows as time between the two marks.
fn read_request_marked(
    reader: &mut impl BufRead,
    label: impl Fn(&str, &Headers) -> Option<String>,
) -> io::Result<Option<HttpRequest>> {
    let Some((start, headers)) = read_head(reader)? else {
        return Ok(None);
    };
    if find(&headers, "expect").is_some() {
        EXPECT_HEADERS.fetch_add(1, Ordering::SeqCst);
    }
    let label = label(&start, &headers);
    let has_body = find(&headers, "content-length").is_some_and(|l| l != "0")
        || find(&headers, "transfer-encoding").is_some();
    if let (Some(label), true) = (&label, has_body) {
        mark(format!("{label} head in"));
    }
    let mut parts = start.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let body = read_body(reader, &headers, false)?;
    if let Some(label) = label {
        mark(format!("{label} in"));
    }
    Ok(Some(HttpRequest {
        method,
        path,
        headers,
        body,
    }))
}

fn respond(
    stream: &mut impl Write,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out)?;
    stream.flush()
}

/// Accepts connections on a fresh loopback port, one thread per connection.
fn serve(
    name: &str,
    handle: impl Fn(TcpStream) -> io::Result<()> + Send + Sync + 'static,
) -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let handle = Arc::new(handle);
    let name = name.to_owned();
    thread::Builder::new().name(name.clone()).spawn(move || {
        for stream in listener.incoming().flatten() {
            // A new connection inside an invocation shows in its breakdown.
            mark(format!("{name} connection"));
            *CONNECTIONS.lock().unwrap().entry(name.clone()).or_default() += 1;
            let _ = stream.set_nodelay(true);
            let handle = Arc::clone(&handle);
            thread::spawn(move || {
                let _ = handle(stream);
            });
        }
    })?;
    Ok(port)
}

// ------------------------------------------------------------------------------------------------
// The Lambda Runtime API stand-in.

enum Note {
    /// A `next` request arrived.
    Next(Instant),
    Response {
        id: String,
        body: Vec<u8>,
    },
    Error {
        id: String,
        body: Vec<u8>,
    },
    InitError(Vec<u8>),
}

struct RuntimeApi {
    port: u16,
    queue: EventQueue,
    notes: Receiver<Note>,
    closed: Arc<AtomicBool>,
}

impl RuntimeApi {
    fn start() -> io::Result<Self> {
        let queue: EventQueue = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (tx, notes) = channel();
        let tx = Mutex::new(tx);
        let (q, c) = (Arc::clone(&queue), Arc::clone(&closed));
        let port = serve("runtime-api", move |stream| {
            let tx: Sender<Note> = tx.lock().unwrap().clone();
            runtime_connection(stream, &q, &c, &tx)
        })?;
        Ok(RuntimeApi {
            port,
            queue,
            notes,
            closed,
        })
    }

    fn push(&self, id: String, event: String) {
        let (lock, cvar) = &*self.queue;
        lock.lock().unwrap().push_back((id, event));
        cvar.notify_all();
    }

    /// Waits for the first `next` request: the end of init.
    fn wait_next(&self) -> Result<Instant, String> {
        loop {
            match self.notes.recv_timeout(INVOKE_TIMEOUT) {
                Ok(Note::Next(at)) => return Ok(at),
                Ok(Note::InitError(body)) => {
                    return Err(format!("init error: {}", String::from_utf8_lossy(&body)));
                }
                Ok(_) => {}
                Err(_) => return Err("no `next` request within 30 s".to_owned()),
            }
        }
    }

    /// Runs one invocation and waits until the function asks for the next event (so its work
    /// for this one is over): the response document, the wall time (event queued → response
    /// received) and the stand-ins' marks in between.
    fn invoke_traced(&self, id: &str, event: String) -> Result<Traced, String> {
        take_marks();
        let started = Instant::now();
        let answer = self.invoke(id, event)?;
        let wall = started.elapsed();
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match self
                .notes
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(Note::Next(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Ok(Traced {
            answer,
            wall,
            segments: segments(started, &take_marks()),
        })
    }

    /// Runs one invocation: returns the response document when the function answered.
    fn invoke(&self, id: &str, event: String) -> Result<Value, String> {
        self.push(id.to_owned(), event);
        let until = Instant::now() + INVOKE_TIMEOUT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.notes.recv_timeout(left) {
                Ok(Note::Response { id: got, body }) if got == id => {
                    return serde_json::from_slice(&body)
                        .map_err(|e| format!("response is not JSON: {e}"));
                }
                Ok(Note::Error { id: got, body }) if got == id => {
                    return Err(format!(
                        "invocation error: {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
                Ok(Note::InitError(body)) => {
                    return Err(format!("init error: {}", String::from_utf8_lossy(&body)));
                }
                Ok(_) => {}
                Err(_) => return Err(format!("no answer to {id} within 30 s")),
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        self.queue.1.notify_all();
    }
}

fn runtime_connection(
    stream: TcpStream,
    queue: &(Mutex<VecDeque<(String, String)>>, Condvar),
    closed: &AtomicBool,
    notes: &Sender<Note>,
) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    const PREFIX: &str = "/2018-06-01/runtime/";
    let label = |start: &str, _: &Headers| {
        Some(if start.contains("/invocation/next") {
            "next".to_owned()
        } else {
            "response".to_owned()
        })
    };
    while let Some(req) = read_request_marked(&mut reader, label)? {
        let route = req.path.strip_prefix(PREFIX).unwrap_or("");
        match (req.method.as_str(), route) {
            ("GET", "invocation/next") => {
                let _ = notes.send(Note::Next(Instant::now()));
                let (lock, cvar) = queue;
                let mut events = lock.lock().unwrap();
                let (id, event) = loop {
                    if let Some(next) = events.pop_front() {
                        break next;
                    }
                    if closed.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    events = cvar
                        .wait_timeout(events, Duration::from_millis(200))
                        .unwrap()
                        .0;
                };
                drop(events);
                let deadline = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_millis()
                    + 15_000;
                // Marked before the write: a mark after it could come after the function's
                // reaction on a loaded machine (this thread preempted), and misorder the segments.
                mark("event out");
                respond(
                    &mut writer,
                    "200 OK",
                    &[
                        ("content-type", "application/json".to_owned()),
                        ("lambda-runtime-aws-request-id", id.clone()),
                        ("lambda-runtime-deadline-ms", deadline.to_string()),
                        (
                            "lambda-runtime-invoked-function-arn",
                            format!("arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}"),
                        ),
                        (
                            "lambda-runtime-trace-id",
                            format!("Root=1-67d4309b-{id};Parent=53995c3f42cd8ad8;Sampled=0"),
                        ),
                    ],
                    event.as_bytes(),
                )?;
            }
            ("POST", "init/error") => {
                let _ = notes.send(Note::InitError(req.body));
                respond(&mut writer, "202 Accepted", &[], b"{}")?;
            }
            ("POST", route) if route.starts_with("invocation/") => {
                let rest = &route["invocation/".len()..];
                let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
                let note = match what {
                    "response" => Note::Response {
                        id: id.to_owned(),
                        body: req.body,
                    },
                    _ => Note::Error {
                        id: id.to_owned(),
                        body: req.body,
                    },
                };
                let _ = notes.send(note);
                respond(&mut writer, "202 Accepted", &[], b"{}")?;
            }
            _ => respond(&mut writer, "404 Not Found", &[], b"{}")?,
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// RedTrack and DynamoDB.

/// RedTrack: `200 OK` to every postback.
fn start_redtrack(count: Arc<AtomicU64>) -> io::Result<u16> {
    serve("redtrack", move |stream| {
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        while let Some(_req) = read_request_marked(&mut reader, |_, _| Some("RedTrack".into()))? {
            count.fetch_add(1, Ordering::SeqCst);
            mark("RedTrack out");
            respond(
                &mut writer,
                "200 OK",
                &[("content-type", "text/plain".to_owned())],
                b"OK",
            )?;
        }
        Ok(())
    })
}

type OpCounts = Arc<Mutex<BTreeMap<String, u64>>>;

/// A keep-alive HTTP proxy in front of moto that counts calls by operation.
fn start_dynamo_proxy(moto: String, counts: OpCounts) -> io::Result<u16> {
    serve("dynamo-proxy", move |stream| {
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let label = |_: &str, headers: &Headers| {
            let op = find(headers, "x-amz-target").and_then(|t| t.rsplit('.').next());
            Some(op.unwrap_or("other").to_owned())
        };
        while let Some(req) = read_request_marked(&mut reader, label)? {
            let op = req
                .header("x-amz-target")
                .and_then(|t| t.rsplit('.').next())
                .unwrap_or("other")
                .to_owned();
            *counts.lock().unwrap().entry(op.clone()).or_default() += 1;
            let (status, headers, body) = forward(&moto, &req)?;
            let keep: Vec<(&str, String)> = headers
                .iter()
                .filter(|(k, _)| {
                    ![
                        "connection",
                        "content-length",
                        "transfer-encoding",
                        "keep-alive",
                    ]
                    .iter()
                    .any(|h| k.eq_ignore_ascii_case(h))
                })
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            mark(format!("{op} out"));
            respond(&mut writer, &status, &keep, &body)?;
        }
        Ok(())
    })
}

/// Sends one request to `addr` on a new connection; returns status, headers and body.
fn forward(addr: &str, req: &HttpRequest) -> io::Result<(String, Headers, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    for (k, v) in &req.headers {
        if !["connection", "content-length", "transfer-encoding"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
        {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        req.body.len()
    ));
    let mut out = head.into_bytes();
    out.extend_from_slice(&req.body);
    stream.write_all(&out)?;
    let mut reader = BufReader::new(stream);
    let (start, headers) = read_head(&mut reader)?.ok_or(io::ErrorKind::UnexpectedEof)?;
    let body = read_body(&mut reader, &headers, true)?;
    let _ = reader.get_ref().shutdown(Shutdown::Both);
    let status = start.split_once(' ').map_or("502 Bad Gateway", |(_, s)| s);
    Ok((status.to_owned(), headers, body))
}

/// One DynamoDB JSON call, unsigned (moto does not check signatures).
fn dynamo_call(endpoint: &str, op: &str, body: &Value) -> io::Result<(String, Vec<u8>)> {
    let req = HttpRequest {
        method: "POST".to_owned(),
        path: "/".to_owned(),
        headers: vec![
            ("host".to_owned(), endpoint.to_owned()),
            (
                "content-type".to_owned(),
                "application/x-amz-json-1.0".to_owned(),
            ),
            ("x-amz-target".to_owned(), format!("DynamoDB_20120810.{op}")),
            (
                "authorization".to_owned(),
                "AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/dynamodb/aws4_request, \
                 SignedHeaders=host, Signature=0"
                    .to_owned(),
            ),
        ],
        body: body.to_string().into_bytes(),
    };
    let (status, _, body) = forward(endpoint, &req)?;
    Ok((status, body))
}

struct Moto {
    child: Option<Child>,
    endpoint: String,
}

impl Moto {
    fn start() -> Result<Self, String> {
        if let Ok(url) = std::env::var("BENCH_MOTO_URL") {
            let endpoint = url.trim_start_matches("http://").trim_end_matches('/');
            return Ok(Moto {
                child: None,
                endpoint: endpoint.to_owned(),
            });
        }
        let python =
            std::env::var("BENCH_PYTHON").unwrap_or_else(|_| format!("{ROOT}/.tools/bin/python"));
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new(&python)
            .arg(format!("{ROOT}/scripts/moto_serial.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start moto with {python} ({e}); run `make tools`"))?;
        let moto = Moto {
            child: Some(child),
            endpoint: format!("127.0.0.1:{port}"),
        };
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if TcpStream::connect(&moto.endpoint).is_ok() {
                return Ok(moto);
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err("moto did not start within 30 s".to_owned())
    }

    fn create_table(&self, name: &str) -> Result<(), String> {
        let (status, body) = dynamo_call(
            &self.endpoint,
            "CreateTable",
            &json!({
                "TableName": name,
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                "BillingMode": "PAY_PER_REQUEST"
            }),
        )
        .map_err(|e| format!("CreateTable: {e}"))?;
        if !status.starts_with("200") {
            return Err(format!(
                "CreateTable: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The function's process.

struct Setup {
    binary: String,
    /// Arguments (the Python peer: its script).
    args: Vec<String>,
    dynamo: String,
    redtrack: String,
    table: String,
}

#[derive(Clone, Copy)]
struct Cpu {
    user_us: f64,
    sys_us: f64,
    sched_us: f64,
}

struct Function {
    child: Child,
    pid: u32,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Function {
    /// Starts the binary with the environment Lambda gives it.
    fn spawn(setup: &Setup, api_port: u16) -> io::Result<Function> {
        let mut cmd = Command::new(&setup.binary);
        cmd.args(&setup.args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "en_US.UTF-8")
            .env("TZ", ":UTC")
            .env("LAMBDA_TASK_ROOT", "/var/task")
            .env("LAMBDA_RUNTIME_DIR", "/var/runtime")
            .env("_HANDLER", "bootstrap")
            .env("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023")
            .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{api_port}"))
            .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{FUNCTION}"),
            )
            .env(
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2025/03/14/[$LATEST]0123456789abcdef0123456789abcdef",
            )
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "ASIAEXAMPLEEXAMPLE00")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_SESSION_TOKEN", "test-session-token")
            .env(
                "AWS_ENDPOINT_URL_DYNAMODB",
                format!("http://{}", setup.dynamo),
            )
            .env(
                "REDTRACK_POSTBACK_URL",
                format!("http://{}/postback?{TEMPLATE_QUERY}", setup.redtrack),
            )
            .env("WEBHOOK_TOKEN", TOKEN)
            .env("DEDUP_TABLE", &setup.table)
            // The sample orders were created in 2025: within the ledger's memory.
            .env("DEDUP_TTL_DAYS", "3650")
            .envs(extra_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let log: Arc<Mutex<VecDeque<String>>> = Arc::default();
        // Drain stdout and stderr as Lambda's log agent does, keeping the last lines.
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        for pipe in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    if log.len() >= 40 {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        Ok(Function { child, pid, log })
    }

    fn last_log(&self) -> String {
        self.log
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// CPU time charged to the process so far, every thread: user and system time from
    /// `/proc/<pid>/stat` (clock ticks) and the live threads' run time from `schedstat` (ns).
    fn cpu(&self, tick_us: f64) -> Cpu {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command name (which is in parentheses and may hold spaces).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let mut sched_ns = 0u64;
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) {
            for task in tasks.flatten() {
                let text =
                    std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
                sched_ns += text
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Cpu {
            user_us: ticks(11) * tick_us,
            sys_us: ticks(12) * tick_us,
            sched_us: sched_ns as f64 / 1000.0,
        }
    }

    fn status(&self, field: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{field}:"))
                    .map(|v| v.trim().to_owned())
            })
            .unwrap_or_else(|| "?".to_owned())
    }
}

/// `BENCH_FUNCTION_ENV`: more `NAME=value` pairs for the function, space-separated (e.g.
/// `NORMALIZE_PII=false`), to measure a configuration.
fn extra_env() -> Vec<(String, String)> {
    std::env::var("BENCH_FUNCTION_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------------------------
// Events.

/// API Gateway events of `events/paid-brl.json` with the order ID replaced.
struct Events {
    template: Value,
    body: Value,
}

impl Events {
    fn load() -> Self {
        let path = format!("{ROOT}/events/paid-brl.json");
        let template: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect(&path))
            .expect("sample event is JSON");
        let body = serde_json::from_str(template["body"].as_str().expect("body")).expect("JSON");
        Events { template, body }
    }

    fn paid(&self, order_id: u64, token: &str) -> String {
        let mut body = self.body.clone();
        body["order"]["id"] = json!(order_id);
        let text = body.to_string();
        let mut event = self.template.clone();
        event["headers"]["content-length"] = json!(text.len().to_string());
        event["rawQueryString"] = json!(format!("token={token}"));
        event["queryStringParameters"] = json!({ "token": token });
        event["body"] = json!(text);
        event.to_string()
    }
}

fn outcome(answer: &Value) -> (u64, String) {
    let status = answer["statusCode"].as_u64().unwrap_or(0);
    let body: Value = answer["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    // The Python peer answers `{"outcome": …}`, the function `{"conversions": [{"outcome": …}]}`.
    let outcome = body["conversions"][0]["outcome"]
        .as_str()
        .or(body["outcome"].as_str())
        .or(body["error"].as_str().map(|_| "error"))
        .unwrap_or("?")
        .to_owned();
    (status, outcome)
}

// ------------------------------------------------------------------------------------------------
// Measurements.

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tick_us() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .map_or(10_000.0, |hz| 1_000_000.0 / hz)
}

impl Cold {
    fn extend(&mut self, other: Cold) {
        self.init_ms.extend(other.init_ms);
        self.first_ms.extend(other.first_ms);
        self.invoke_ms.extend(other.invoke_ms);
        self.cpu_init_ms.extend(other.cpu_init_ms);
        self.cpu_first_ms.extend(other.cpu_first_ms);
        self.rss_kb.extend(other.rss_kb);
    }
}

struct Cold {
    init_ms: Vec<f64>,
    first_ms: Vec<f64>,
    invoke_ms: Vec<f64>,
    cpu_init_ms: Vec<f64>,
    cpu_first_ms: Vec<f64>,
    rss_kb: Vec<f64>,
}

fn cold_starts(
    setup: &Setup,
    events: &Events,
    n: usize,
    next_id: &mut u64,
) -> Result<Cold, String> {
    let mut cold = Cold {
        init_ms: Vec::new(),
        first_ms: Vec::new(),
        invoke_ms: Vec::new(),
        cpu_init_ms: Vec::new(),
        cpu_first_ms: Vec::new(),
        rss_kb: Vec::new(),
    };
    let tick = tick_us();
    for i in 0..n {
        let api = RuntimeApi::start().map_err(|e| e.to_string())?;
        // Build the first event before the clock starts.
        *next_id += 1;
        let event = events.paid(*next_id, TOKEN);
        let started = Instant::now();
        let function = Function::spawn(setup, api.port).map_err(|e| e.to_string())?;
        let ready = api
            .wait_next()
            .map_err(|e| format!("start {i}: {e}\n{}", function.last_log()))?;
        let cpu_init = function.cpu(tick).sched_us;
        let answer = api
            .invoke(&format!("cold-{i}"), event)
            .map_err(|e| format!("start {i}: {e}\n{}", function.last_log()))?;
        let answered = Instant::now();
        let (status, what) = outcome(&answer);
        if status != 200 || what != "sent" {
            return Err(format!(
                "start {i}: the first invocation answered {status} {what}: {answer}\n{}",
                function.last_log()
            ));
        }
        // Let the function post its response and block in `next` again before sampling.
        let _ = api.wait_next();
        let cpu_first = function.cpu(tick).sched_us;
        cold.rss_kb.push(
            function
                .status("VmHWM")
                .trim_end_matches(" kB")
                .parse()
                .unwrap_or(f64::NAN),
        );
        cold.init_ms
            .push(ready.duration_since(started).as_secs_f64() * 1e3);
        cold.first_ms
            .push(answered.duration_since(started).as_secs_f64() * 1e3);
        cold.invoke_ms
            .push(answered.duration_since(ready).as_secs_f64() * 1e3);
        cold.cpu_init_ms.push(cpu_init / 1e3);
        cold.cpu_first_ms.push(cpu_first / 1e3);
        drop(function);
    }
    Ok(cold)
}

/// One invocation as the stand-ins saw it.
struct Traced {
    answer: Value,
    wall: Duration,
    segments: Vec<(String, f64)>,
}

/// The time between consecutive marks, in µs, named `"a → b"`, from `started` (the event
/// queued at the Runtime API stand-in) on. A segment that starts at a mark ending in `out` (a
/// stand-in answered) and ends at an `in` mark is the function's own time; one from an `in` to an
/// `out` is the stand-in's.
fn segments(started: Instant, marks: &[(Instant, String)]) -> Vec<(String, f64)> {
    // Threads push their marks after taking the time: order by time.
    let mut marks = marks.to_vec();
    marks.sort_by_key(|(t, _)| *t);
    let mut out = Vec::with_capacity(marks.len());
    let (mut at, mut name) = (started, "queued".to_owned());
    for (t, what) in marks {
        out.push((
            format!("{name} → {what}"),
            t.saturating_duration_since(at).as_secs_f64() * 1e6,
        ));
        (at, name) = (t, what);
    }
    out
}

/// Warm invocations of one kind for one process, added up over the blocks of an interleaved run.
struct Phase {
    name: &'static str,
    n: usize,
    cpu_user_us: f64,
    cpu_sys_us: f64,
    cpu_sched_us: f64,
    wall_ms: Vec<f64>,
    wall_p50_ms: f64,
    wall_p99_ms: f64,
    dynamo: BTreeMap<String, u64>,
    redtrack: u64,
    traces: Vec<Vec<(String, f64)>>,
}

impl Phase {
    fn new(name: &'static str) -> Self {
        Phase {
            name,
            n: 0,
            cpu_user_us: 0.0,
            cpu_sys_us: 0.0,
            cpu_sched_us: 0.0,
            wall_ms: Vec::new(),
            wall_p50_ms: f64::NAN,
            wall_p99_ms: f64::NAN,
            dynamo: BTreeMap::new(),
            redtrack: 0,
            traces: Vec::new(),
        }
    }

    /// Per invocation from here on (CPU in µs per invocation, wall percentiles).
    fn finish(mut self) -> Self {
        let n = self.n.max(1) as f64;
        self.cpu_user_us /= n;
        self.cpu_sys_us /= n;
        self.cpu_sched_us /= n;
        self.wall_p50_ms = percentile(&mut self.wall_ms, 50.0);
        self.wall_p99_ms = percentile(&mut self.wall_ms, 99.0);
        self
    }

    fn cpu_us(&self) -> f64 {
        self.cpu_user_us + self.cpu_sys_us
    }

    /// The median of each segment over the invocations that had it, in the order they happen,
    /// with how many invocations had it.
    fn breakdown(&self) -> Vec<(String, f64, usize)> {
        let mut values: BTreeMap<String, (Vec<f64>, f64)> = BTreeMap::new();
        for trace in &self.traces {
            for (i, (name, us)) in trace.iter().enumerate() {
                let entry = values.entry(name.clone()).or_default();
                entry.0.push(*us);
                entry.1 += i as f64;
            }
        }
        // In the order they usually happen: by mean position in their invocation.
        let mut rows: Vec<(f64, String, f64, usize)> = values
            .into_iter()
            .map(|(name, (mut v, positions))| {
                let count = v.len();
                (positions / count as f64, name, median(&mut v), count)
            })
            .collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        rows.into_iter()
            .map(|(_, name, us, count)| (name, us, count))
            .collect()
    }
}

/// A phase name as a request ID part (request IDs go into the runtime API's URL paths).
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Runs `events` through `function` and adds the figures to `phase`.
fn run_block(
    phase: &mut Phase,
    api: &RuntimeApi,
    function: &Function,
    events: Vec<String>,
    expect: (u64, &str),
    counters: (&OpCounts, &AtomicU64),
) -> Result<(), String> {
    let tick = tick_us();
    let name = phase.name;
    let dynamo_before = counters.0.lock().unwrap().clone();
    let redtrack_before = counters.1.load(Ordering::SeqCst);
    let before = function.cpu(tick);
    for event in events {
        let i = phase.n;
        let traced = api
            .invoke_traced(&format!("{}-{}-{i}", function.pid, slug(name)), event)
            .map_err(|e| format!("{name} {i}: {e}\n{}", function.last_log()))?;
        phase.wall_ms.push(traced.wall.as_secs_f64() * 1e3);
        phase.traces.push(traced.segments);
        phase.n += 1;
        let (status, what) = outcome(&traced.answer);
        if (status, what.as_str()) != expect {
            return Err(format!(
                "{name} {i}: expected {expect:?}, got {status} {what}: {}\n{}",
                traced.answer,
                function.last_log()
            ));
        }
    }
    // Each invocation waited for the function's next `next` request: its work is over.
    let after = function.cpu(tick);
    phase.cpu_user_us += after.user_us - before.user_us;
    phase.cpu_sys_us += after.sys_us - before.sys_us;
    phase.cpu_sched_us += after.sched_us - before.sched_us;
    let dynamo_after = counters.0.lock().unwrap().clone();
    for (op, c) in &dynamo_after {
        let grown = c - dynamo_before.get(op).copied().unwrap_or(0);
        if grown > 0 {
            *phase.dynamo.entry(op.clone()).or_default() += grown;
        }
    }
    phase.redtrack += counters.1.load(Ordering::SeqCst) - redtrack_before;
    Ok(())
}

fn run_phase(
    name: &'static str,
    api: &RuntimeApi,
    function: &Function,
    events: Vec<String>,
    expect: (u64, &str),
    counters: (&OpCounts, &AtomicU64),
) -> Result<Phase, String> {
    let mut phase = Phase::new(name);
    run_block(&mut phase, api, function, events, expect, counters)?;
    Ok(phase.finish())
}

/// CPU time of the calling thread so far, in µs (`/proc/thread-self/schedstat`).
fn thread_cpu_us() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1000.0)
}

/// CPU per DynamoDB PutItem through the AWS SDK configured as the function configures it (a local
/// endpoint that answers at once, so only the client's work is counted; a PutItem like the
/// claim's) and per RedTrack GET through reqwest with the tracker's TLS set-up.
fn clients_alone(n: usize, redtrack_port: u16) -> Result<(f64, f64), String> {
    let dynamo_port = serve("fake-dynamodb", |stream| {
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        while let Some(_req) = read_request(&mut reader)? {
            respond(
                &mut writer,
                "200 OK",
                &[
                    ("content-type", "application/x-amz-json-1.0".to_owned()),
                    ("x-amzn-requestid", "BENCH0REQUEST0ID".to_owned()),
                ],
                b"{}",
            )?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        use aws_sdk_dynamodb::types::AttributeValue;
        let sdk = cartpanda_redtrack::ops::aws::load().await;
        let conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url(format!("http://127.0.0.1:{dynamo_port}"))
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "ASIAEXAMPLEEXAMPLE00",
                "secret",
                Some("session-token".to_owned()),
                None,
                "bench",
            ))
            .build();
        let dynamo = aws_sdk_dynamodb::Client::from_conf(conf);
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let put = |i: usize| {
            dynamo
                .put_item()
                .table_name("bench-dedup")
                .item("pk", s(&format!("evt#{i}-purchase")))
                .item("status", s("IN_PROGRESS"))
                .item("fingerprint", s("0123456789abcdef0123456789abcdef"))
                .item("attempt", s("18f3a2b4c5d-0123456789abcdef"))
                .item("order_id", s(&i.to_string()))
                .item("event", s("order.paid"))
                .item("conversion_type", s("Purchase"))
                .item("lease_until_ms", AttributeValue::N("1741959949231".to_owned()))
                .item("expires_at", AttributeValue::N("1742046349".to_owned()))
                .condition_expression(
                    "attribute_not_exists(pk) OR expires_at < :now_s \
                     OR (#status = :in_progress AND lease_until_ms < :now_ms)",
                )
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":now_s", AttributeValue::N("1741959934".to_owned()))
                .expression_attribute_values(
                    ":now_ms",
                    AttributeValue::N("1741959934231".to_owned()),
                )
                .expression_attribute_values(":in_progress", s("IN_PROGRESS"))
                .send()
        };
        for i in 0..20 {
            put(i).await.map_err(|e| format!("PutItem: {e:?}"))?;
        }
        let started = thread_cpu_us();
        for i in 0..n {
            put(i).await.map_err(|e| format!("PutItem: {e:?}"))?;
        }
        let put_us = (thread_cpu_us() - started) / n as f64;

        let http = cartpanda_redtrack::postback::redtrack::http_builder()
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!(
            "http://127.0.0.1:{redtrack_port}/postback?status=approved&clickid=67d42f3b9a1e5c0012ab34cd\
             &sum=197.00&type=Purchase&rdtk_event_id=48213577-purchase"
        );
        let get = || async {
            let response = http.get(&url).send().await.map_err(|e| e.to_string())?;
            response.bytes().await.map_err(|e| e.to_string())
        };
        for _ in 0..20 {
            get().await?;
        }
        let started = thread_cpu_us();
        for _ in 0..n {
            get().await?;
        }
        let get_us = (thread_cpu_us() - started) / n as f64;
        Ok((put_us, get_us))
    })
}

/// The Python peer (`BENCH_PEER`, default `../shared/peers/python/bootstrap` beside the
/// repository; `none` to leave it out) under the same stand-ins, run with `BENCH_PYTHON`.
fn peer_setup(setup: &Setup) -> Option<Setup> {
    let script = std::env::var("BENCH_PEER")
        .unwrap_or_else(|_| format!("{ROOT}/../shared/peers/python/bootstrap"));
    if script == "none" || !std::path::Path::new(&script).exists() {
        println!("\n(no Python peer: {script} does not exist; set BENCH_PEER)");
        return None;
    }
    let python =
        std::env::var("BENCH_PYTHON").unwrap_or_else(|_| format!("{ROOT}/.tools/bin/python"));
    Some(Setup {
        binary: python,
        args: vec![script],
        dynamo: setup.dynamo.clone(),
        redtrack: setup.redtrack.clone(),
        table: setup.table.clone(),
    })
}

fn phase<'a>(phases: &'a [Phase], name: &str) -> Option<&'a Phase> {
    phases.iter().find(|p| p.name == name)
}

/// The function against the peer, as ratios (ours / peer), and a duplicate from memory against
/// one from the table.
fn versus_peer(phases: &[Phase]) -> Value {
    let get = |name: &str| phase(phases, name);
    let (Some(new), Some(dup), Some(table)) = (
        get("new conversion"),
        get("duplicate (from memory)"),
        get("duplicate (from the table)"),
    ) else {
        return Value::Null;
    };
    println!(
        "\nduplicates: from memory against from the table (a second instance), same binary:\n  \
         CPU {:.0} / {:.0} µs = {:.2}; wall p50 {:.2} / {:.2} ms = {:.2}",
        dup.cpu_us(),
        table.cpu_us(),
        dup.cpu_us() / table.cpu_us(),
        dup.wall_p50_ms,
        table.wall_p50_ms,
        dup.wall_p50_ms / table.wall_p50_ms,
    );
    let mut doc = json!({
        "duplicate_memory_over_table_cpu": dup.cpu_us() / table.cpu_us(),
        "duplicate_memory_over_table_wall_p50": dup.wall_p50_ms / table.wall_p50_ms,
    });
    let (Some(peer_new), Some(peer_dup)) = (get("peer: new conversion"), get("peer: duplicate"))
    else {
        return doc;
    };
    println!(
        "\nthe function against the Python peer, same run, interleaved (ratio = ours / peer):\n  \
         {:<44} {:>9} {:>9} {:>7}",
        "measure", "ours", "peer", "ratio"
    );
    let rows = [
        (
            "CPU per new conversion (µs)",
            new.cpu_us(),
            peer_new.cpu_us(),
        ),
        (
            "CPU per duplicate, from memory (µs)",
            dup.cpu_us(),
            peer_dup.cpu_us(),
        ),
        (
            "CPU per duplicate, from the table (µs)",
            table.cpu_us(),
            peer_dup.cpu_us(),
        ),
        (
            "wall p50 per new conversion (ms)",
            new.wall_p50_ms,
            peer_new.wall_p50_ms,
        ),
        (
            "wall p50 per duplicate, from memory (ms)",
            dup.wall_p50_ms,
            peer_dup.wall_p50_ms,
        ),
        (
            "wall p50 per duplicate, from the table (ms)",
            table.wall_p50_ms,
            peer_dup.wall_p50_ms,
        ),
        (
            "wall p99 per new conversion (ms)",
            new.wall_p99_ms,
            peer_new.wall_p99_ms,
        ),
    ];
    let mut ratios = serde_json::Map::new();
    for (label, ours, peer) in rows {
        let digits = if label.ends_with("(ms)") { 2 } else { 0 };
        println!(
            "  {label:<44} {ours:>9.digits$} {peer:>9.digits$} {:>7.2}",
            ours / peer
        );
        ratios.insert(
            label.to_owned(),
            json!({"ours": ours, "peer": peer, "ratio": ours / peer}),
        );
    }
    doc["ratios"] = Value::Object(ratios);
    doc
}

/// The function against the build before it (`BENCH_BASELINE`), warm, same run.
fn versus_before(phases: &[Phase], hwm: &str, base_hwm: &str) {
    let pairs = [
        ("new conversion", "before: new conversion"),
        ("duplicate (from memory)", "before: duplicate"),
        ("duplicate (from the table)", "before: duplicate"),
        ("refused (401, no I/O)", "before: refused (401)"),
    ];
    println!(
        "\nthe function against the build before (BENCH_BASELINE), same run, interleaved \
         (ratio = this build / before):"
    );
    for (ours, before) in pairs {
        let (Some(o), Some(b)) = (phase(phases, ours), phase(phases, before)) else {
            continue;
        };
        println!(
            "  {ours:<28} CPU {:>6.0} / {:>6.0} µs = {:.2}; wall p50 {:.2} / {:.2} ms = {:.2}",
            o.cpu_us(),
            b.cpu_us(),
            o.cpu_us() / b.cpu_us(),
            o.wall_p50_ms,
            b.wall_p50_ms,
            o.wall_p50_ms / b.wall_p50_ms
        );
    }
    println!("  peak RSS (VmHWM) {hwm} / {base_hwm}");
}

/// Who works during a segment `from → to` of the marks.
fn who(segment: &str) -> &'static str {
    let (from, to) = segment.split_once(" → ").unwrap_or(("", segment));
    if to.ends_with(" connection") {
        "connect"
    } else if to == "event out" {
        "Runtime API"
    } else if to == "RedTrack out" {
        "RedTrack"
    } else if to.ends_with(" out") {
        "moto"
    } else if from.ends_with("head in") {
        "body"
    } else {
        "function"
    }
}

/// The phase breakdown: median time per segment for each phase of the function next to the
/// same phase of the peer.
fn print_breakdowns(phases: &[Phase]) {
    println!(
        "\nphase breakdown: median µs per segment between what the stand-ins saw (`in`: a request \
         fully read; `head in`: its head, when it has a body; `out`: the answer ready to write). \
         `function` is the process's own time (runtime, decoding, handler, SDK, reqwest), `body` \
         a request body arriving after its head:"
    );
    let pairs = [
        ("new conversion", "peer: new conversion"),
        ("duplicate (from memory)", "peer: duplicate"),
        ("duplicate (from the table)", "peer: duplicate"),
        ("refused (401, no I/O)", "peer: refused (401)"),
        ("before: new conversion", "peer: new conversion"),
        ("before: duplicate", "peer: duplicate"),
    ];
    for (ours, peer) in pairs {
        let Some(ours) = phase(phases, ours) else {
            continue;
        };
        let peer = phase(phases, peer);
        let ours_rows = ours.breakdown();
        let peer_rows = peer.map(Phase::breakdown).unwrap_or_default();
        println!(
            "  {}{}",
            ours.name,
            peer.map_or(String::new(), |p| format!("  |  {}", p.name))
        );
        let n = ours.n.max(1);
        let mut ours_function = 0.0;
        for (name, us, count) in &ours_rows {
            if *count * 2 < n {
                continue;
            }
            let peer_us = peer_rows.iter().find(|(p, _, _)| p == name).map(|r| r.1);
            if who(name) == "function" {
                ours_function += us;
            }
            println!(
                "    {name:<40} {:<11} {us:>7.0} {}",
                who(name),
                peer_us.map_or("      —".to_owned(), |p| format!("{p:>7.0}"))
            );
        }
        let mut peer_function = 0.0;
        for (name, us, count) in &peer_rows {
            if who(name) == "function" && *count * 2 >= peer.map_or(1, |p| p.n) {
                peer_function += us;
            }
            if !ours_rows.iter().any(|(o, _, _)| o == name) && *count * 2 >= peer.map_or(1, |p| p.n)
            {
                println!("    {name:<40} {:<11} {:>7} {us:>7.0}", who(name), "—");
            }
        }
        println!(
            "    {:<40} {:<11} {:>7.0} {}",
            "function segments, summed",
            "",
            ours_function,
            if peer.is_some() {
                format!("{peer_function:>7.0}")
            } else {
                String::new()
            }
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` / tooling asking for a list: nothing to list.
        return;
    }
    if let Err(e) = run() {
        eprintln!("lambda bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let binary = std::env::var("BENCH_BINARY")
        .unwrap_or_else(|_| format!("{ROOT}/target/release/cartpanda-redtrack"));
    if !std::path::Path::new(&binary).exists() {
        return Err(format!(
            "{binary} does not exist: `cargo build --release --bin cartpanda-redtrack` first"
        ));
    }
    let starts = env_usize("BENCH_STARTS", 25);
    let n = env_usize("BENCH_N", 1000);

    let moto = Moto::start()?;
    let table = format!("bench-dedup-{}", std::process::id());
    moto.create_table(&table)?;
    let dynamo_counts: OpCounts = Arc::default();
    let dynamo_port = start_dynamo_proxy(moto.endpoint.clone(), Arc::clone(&dynamo_counts))
        .map_err(|e| e.to_string())?;
    let redtrack_count = Arc::new(AtomicU64::new(0));
    let redtrack_port = start_redtrack(Arc::clone(&redtrack_count)).map_err(|e| e.to_string())?;
    let setup = Setup {
        binary: binary.clone(),
        args: Vec::new(),
        dynamo: format!("127.0.0.1:{dynamo_port}"),
        redtrack: format!("127.0.0.1:{redtrack_port}"),
        table,
    };
    let events = Events::load();
    let mut next_id: u64 = 50_000_000;

    println!("function: {binary}");
    println!(
        "binary size: {} bytes",
        std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0)
    );

    // Cold starts.
    // With a baseline (`BENCH_BASELINE`: the build before, e.g. main's), its starts alternate
    // with the function's.
    let baseline = std::env::var("BENCH_BASELINE").ok().map(|b| Setup {
        binary: b,
        args: Vec::new(),
        dynamo: setup.dynamo.clone(),
        redtrack: setup.redtrack.clone(),
        table: setup.table.clone(),
    });
    let mut cold = cold_starts(&setup, &events, 0, &mut next_id)?;
    let mut cold_base = cold_starts(&setup, &events, 0, &mut next_id)?;
    for _ in 0..starts {
        cold.extend(cold_starts(&setup, &events, 1, &mut next_id)?);
        if let Some(base) = &baseline {
            cold_base.extend(cold_starts(base, &events, 1, &mut next_id)?);
        }
    }
    println!("\ncold start, {starts} starts (median / p90 / min):");
    let line = |label: &str, v: &mut Vec<f64>, unit: &str| {
        let (m, p, lo) = (
            median(v),
            percentile(v, 90.0),
            v.iter().copied().fold(f64::INFINITY, f64::min),
        );
        println!("  {label:<44} {m:>8.2} / {p:>8.2} / {lo:>8.2} {unit}");
        m
    };
    let init = line(
        "init (process start → first `next`)",
        &mut cold.init_ms,
        "ms",
    );
    let first = line(
        "first response (process start → response)",
        &mut cold.first_ms,
        "ms",
    );
    let first_invoke = line(
        "first invocation (`next` → response)",
        &mut cold.invoke_ms,
        "ms",
    );
    let cpu_init = line("CPU of init", &mut cold.cpu_init_ms, "ms");
    let cpu_first = line(
        "CPU of init + first invocation",
        &mut cold.cpu_first_ms,
        "ms",
    );
    let rss_cold = line(
        "peak RSS after the first invocation",
        &mut cold.rss_kb,
        "kB",
    );
    let mut before = BTreeMap::new();
    if let Some(base) = &baseline {
        println!("  before ({}):", base.binary);
        for (label, v, unit) in [
            (
                "init (process start → first `next`)",
                &mut cold_base.init_ms,
                "ms",
            ),
            (
                "first invocation (`next` → response)",
                &mut cold_base.invoke_ms,
                "ms",
            ),
            ("CPU of init", &mut cold_base.cpu_init_ms, "ms"),
            (
                "CPU of init + first invocation",
                &mut cold_base.cpu_first_ms,
                "ms",
            ),
            (
                "peak RSS after the first invocation",
                &mut cold_base.rss_kb,
                "kB",
            ),
        ] {
            before.insert(label, line(label, v, unit));
        }
        println!(
            "  ratios (this build / before): init {:.2}, CPU of init {:.2}, CPU of init + first \
             invocation {:.2}, peak RSS {:.2}",
            init / before["init (process start → first `next`)"],
            cpu_init / before["CPU of init"],
            cpu_first / before["CPU of init + first invocation"],
            rss_cold / before["peak RSS after the first invocation"],
        );
    }

    // Warm invocations: the function (A), a second instance of it (B: duplicates of what A
    // sent, which B has not seen: the table's answer, as for every duplicate before issue 16) and
    // the Python peer (P), in interleaved blocks so that the machine's load hits them alike.
    let counters = (&dynamo_counts, redtrack_count.as_ref());
    let start = |setup: &Setup| -> Result<(RuntimeApi, Function), String> {
        let api = RuntimeApi::start().map_err(|e| e.to_string())?;
        let function = Function::spawn(setup, api.port).map_err(|e| e.to_string())?;
        api.wait_next()?;
        Ok((api, function))
    };
    let (api, function) = start(&setup)?;
    let (api_b, function_b) = start(&setup)?;
    let peer = peer_setup(&setup);
    let peer = match &peer {
        Some(peer_setup) => Some(start(peer_setup)?),
        None => None,
    };
    let base = match &baseline {
        Some(base_setup) => Some(start(base_setup)?),
        None => None,
    };
    let mut warm = |api: &RuntimeApi, function: &Function| -> Result<(), String> {
        let warmup: Vec<String> = (0..20)
            .map(|_| {
                next_id += 1;
                events.paid(next_id, TOKEN)
            })
            .collect();
        run_phase("warm-up", api, function, warmup, (200, "sent"), counters).map(|_| ())
    };
    warm(&api, &function)?;
    warm(&api_b, &function_b)?;
    if let Some((api_p, function_p)) = &peer {
        warm(api_p, function_p)?;
    }
    if let Some((api_c, function_c)) = &base {
        warm(api_c, function_c)?;
    }
    let rounds = env_usize("BENCH_ROUNDS", 10).clamp(1, n.max(1));
    let mut new_a = Phase::new("new conversion");
    let mut dup_a = Phase::new("duplicate (from memory)");
    let mut refused_a = Phase::new("refused (401, no I/O)");
    let mut dup_b = Phase::new("duplicate (from the table)");
    let mut new_p = Phase::new("peer: new conversion");
    let mut dup_p = Phase::new("peer: duplicate");
    let mut refused_p = Phase::new("peer: refused (401)");
    let mut new_c = Phase::new("before: new conversion");
    let mut dup_c = Phase::new("before: duplicate");
    let mut refused_c = Phase::new("before: refused (401)");
    // The baseline's orders are others (the same keys would be duplicates of the function's).
    const BASE_OFFSET: u64 = 10_000_000;
    let first_new = next_id + 1;
    for round in 0..rounds {
        let ids: Vec<u64> = (n * round / rounds..n * (round + 1) / rounds)
            .map(|i| first_new + i as u64)
            .collect();
        let paid =
            |token: &str| -> Vec<String> { ids.iter().map(|&id| events.paid(id, token)).collect() };
        let paid_base = |token: &str| -> Vec<String> {
            ids.iter()
                .map(|&id| events.paid(id + BASE_OFFSET, token))
                .collect()
        };
        if let Some((api_c, function_c)) = &base {
            run_block(
                &mut new_c,
                api_c,
                function_c,
                paid_base(TOKEN),
                (200, "sent"),
                counters,
            )?;
            run_block(
                &mut dup_c,
                api_c,
                function_c,
                paid_base(TOKEN),
                (200, "duplicate"),
                counters,
            )?;
            run_block(
                &mut refused_c,
                api_c,
                function_c,
                paid_base("wrong-token"),
                (401, "error"),
                counters,
            )?;
        }
        // Who goes first alternates between rounds.
        let peer_first = round % 2 == 1;
        for step in 0..2 {
            let ours = (step == 0) != peer_first;
            match (&peer, ours) {
                (_, true) => run_block(
                    &mut new_a,
                    &api,
                    &function,
                    paid(TOKEN),
                    (200, "sent"),
                    counters,
                )?,
                (Some((api_p, function_p)), false) => run_block(
                    &mut new_p,
                    api_p,
                    function_p,
                    paid(TOKEN),
                    (200, "sent"),
                    counters,
                )?,
                (None, false) => {}
            }
        }
        for step in 0..2 {
            let ours = (step == 0) != peer_first;
            match (&peer, ours) {
                (_, true) => run_block(
                    &mut dup_a,
                    &api,
                    &function,
                    paid(TOKEN),
                    (200, "duplicate"),
                    counters,
                )?,
                (Some((api_p, function_p)), false) => run_block(
                    &mut dup_p,
                    api_p,
                    function_p,
                    paid(TOKEN),
                    (200, "duplicate"),
                    counters,
                )?,
                (None, false) => {}
            }
        }
        run_block(
            &mut dup_b,
            &api_b,
            &function_b,
            paid(TOKEN),
            (200, "duplicate"),
            counters,
        )?;
        run_block(
            &mut refused_a,
            &api,
            &function,
            paid("wrong-token"),
            (401, "error"),
            counters,
        )?;
        if let Some((api_p, function_p)) = &peer {
            run_block(
                &mut refused_p,
                api_p,
                function_p,
                paid("wrong-token"),
                (401, "error"),
                counters,
            )?;
        }
    }
    let mut phases = vec![
        new_a.finish(),
        dup_a.finish(),
        refused_a.finish(),
        dup_b.finish(),
    ];
    if peer.is_some() {
        phases.extend([new_p.finish(), dup_p.finish(), refused_p.finish()]);
    }
    if base.is_some() {
        phases.extend([new_c.finish(), dup_c.finish(), refused_c.finish()]);
    }
    let hwm = function.status("VmHWM");
    let rss = function.status("VmRSS");
    let threads = function.status("Threads");
    let (rss_anon, rss_file) = (function.status("RssAnon"), function.status("RssFile"));
    let peer_hwm = peer.as_ref().map(|(_, f)| f.status("VmHWM"));
    let base_hwm = base.as_ref().map(|(_, f)| f.status("VmHWM"));
    drop(base);
    drop(function);
    drop(function_b);
    drop(peer);

    println!(
        "\nwarm invocations, {n} of each in {rounds} interleaved blocks; CPU per invocation in µs \
         (/proc/<pid>/stat user + sys = total; schedstat of the threads as a check):"
    );
    println!(
        "  {:<28} {:>6} {:>6} {:>6} {:>6}  {:>9} {:>9}  {:<34} RedTrack",
        "phase",
        "user",
        "sys",
        "total",
        "sched",
        "wall p50",
        "wall p99",
        "DynamoDB calls per invocation"
    );
    for p in &phases {
        let calls: u64 = p.dynamo.values().sum();
        let ops: Vec<String> = p
            .dynamo
            .iter()
            .map(|(op, c)| format!("{op} {:.2}", *c as f64 / p.n as f64))
            .collect();
        let dynamo = format!(
            "{:.2} ({})",
            calls as f64 / p.n as f64,
            if ops.is_empty() {
                "none".to_owned()
            } else {
                ops.join(", ")
            }
        );
        println!(
            "  {:<28} {:>6.0} {:>6.0} {:>6.0} {:>6.0}  {:>6.2} ms {:>6.2} ms  {dynamo:<34} {:.2}",
            p.name,
            p.cpu_user_us,
            p.cpu_sys_us,
            p.cpu_user_us + p.cpu_sys_us,
            p.cpu_sched_us,
            p.wall_p50_ms,
            p.wall_p99_ms,
            p.redtrack as f64 / p.n as f64
        );
    }
    println!(
        "  peak RSS (VmHWM) {hwm}; at the end {rss} (heap and stacks {rss_anon}, binary and \
         libraries {rss_file}); threads {threads}"
    );
    if let Some(peer_hwm) = &peer_hwm {
        println!("  the peer's peak RSS (VmHWM) {peer_hwm}");
    }
    println!(
        "  connections the stand-ins accepted over the whole run (every process): {:?}; requests \
         with an `Expect` header: {}",
        CONNECTIONS.lock().unwrap(),
        EXPECT_HEADERS.load(Ordering::SeqCst)
    );
    let versus = versus_peer(&phases);
    if let Some(base_hwm) = &base_hwm {
        versus_before(&phases, &hwm, base_hwm);
    }
    print_breakdowns(&phases);

    // The same clients in this process, without the runtime, the handler or moto: what one call
    // costs the calling thread.
    let (put_us, get_us) = clients_alone(n, redtrack_port)?;
    println!(
        "\nclients alone, {n} calls each on one thread (CPU per call; bench profile, no LTO):\n  \
         DynamoDB PutItem (AWS SDK, aws::load config, instant local answer) {put_us:>6.0} µs\n  \
         RedTrack GET (reqwest, kept-alive connection)                       {get_us:>6.0} µs"
    );

    if let Ok(path) = std::env::var("BENCH_JSON") {
        let doc = json!({
            "binary": binary,
            "starts": starts,
            "init_ms_median": init,
            "first_response_ms_median": first,
            "first_invocation_ms_median": first_invoke,
            "cpu_init_ms_median": cpu_init,
            "cpu_init_and_first_ms_median": cpu_first,
            "cold_peak_rss_kb_median": rss_cold,
            "rounds": rounds,
            "warm": phases.iter().map(|p| json!({
                "phase": p.name,
                "n": p.n,
                "cpu_us_stat": p.cpu_user_us + p.cpu_sys_us,
                "cpu_us_user": p.cpu_user_us,
                "cpu_us_sys": p.cpu_sys_us,
                "cpu_us_schedstat": p.cpu_sched_us,
                "wall_ms_p50": p.wall_p50_ms,
                "wall_ms_p99": p.wall_p99_ms,
                "dynamodb_calls": p.dynamo,
                "redtrack_calls": p.redtrack,
            })).collect::<Vec<_>>(),
            "clients_alone_cpu_us": {"dynamodb_put_item": put_us, "redtrack_get": get_us},
            "peak_rss": hwm,
            "peer_peak_rss": peer_hwm,
            "versus_peer": versus,
            "breakdown": phases.iter().map(|p| json!({
                "phase": p.name,
                "segments_us_median": p.breakdown().into_iter()
                    .map(|(name, us, count)| json!({"segment": name, "us": us, "count": count}))
                    .collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "threads": threads,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap())
            .map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}
