"""Stand-ins shared by `make arm64-check` and `make stack-test`: moto, the Lambda Runtime API, a
RedTrack receiver, a recording proxy in front of moto, and a function process started the way
Lambda starts a provided.al2023 function (natively, or under qemu-user for an arm64 build).

Only the standard library and what .tools/ holds; no PII is printed (postback URLs and log lines
stay in memory; failures print the function's last log lines, which never hold PII).
"""

import collections
import http.client
import http.server
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGION = "us-east-1"
ACCOUNT = "123456789012"


class Failure(Exception):
    """A check failed: the message says what was expected and what happened."""


def check(condition, message):
    if not condition:
        raise Failure(message)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client that went away (a function stopped at the end) is not an error of the test.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def stop_process(proc):
    """Terminates a child process still running; kills it if it has not exited within 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def serve(handler_cls, **attrs):
    """Starts a keep-alive HTTP/1.1 server on a free loopback port; returns the server."""
    cls = type(handler_cls.__name__, (handler_cls,), attrs)
    server = Server(("127.0.0.1", 0), cls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                chunk = self.rfile.read(size + 2)
                if size == 0:
                    return out
                out += chunk[:size]
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# -------------------------------------------------------------------------------------------------
# moto


class Moto:
    """scripts/moto_serial.py on its own port (atomic conditional writes), stopped by stop()."""

    def __init__(self, port, python=None, env=None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = os.path.join(ROOT, ".tools", f"moto-{port}.log")
        with socket.socket() as s:
            check(s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is taken: choose another")
        self.proc = subprocess.Popen(
            [python or sys.executable, os.path.join(ROOT, "scripts", "moto_serial.py"),
             "-H", "127.0.0.1", "-p", str(port)],
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        until = time.time() + 30
        while time.time() < until:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise Failure(f"moto did not start on {self.url}; see {self.log_path}")

    def enforce_iam(self):
        """moto's IAM enforcement from now on: INITIAL_NO_AUTH_ACTION_COUNT set to 0 (moto's
        /moto-api/reset-auth sets the same setting and restarts its count)."""
        req = urllib.request.Request(self.url + "/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"content-type": "text/plain"})
        return json.loads(urllib.request.urlopen(req, timeout=10).read())

    def stop(self):
        stop_process(self.proc)


# -------------------------------------------------------------------------------------------------
# The Lambda Runtime API


class RuntimeApi:
    """GET /2018-06-01/runtime/invocation/next hands out queued events with Lambda's headers;
    POST …/{id}/response, …/{id}/error and /init/error are collected."""

    def __init__(self, function_arn, timeout_s):
        self.events = queue.Queue()
        self.results = {}
        self.cond = threading.Condition()
        self.init_error = None
        self.nexts = 0
        api = self

        class H(Handler):
            def do_GET(self):
                if self.path != "/2018-06-01/runtime/invocation/next":
                    return self.answer(404, b"{}")
                with api.cond:
                    api.nexts += 1
                    api.cond.notify_all()
                request_id, event = api.events.get()
                if request_id is None:
                    return self.answer(410, b"{}")
                deadline = int(time.time() * 1000) + timeout_s * 1000
                self.answer(200, event, [
                    ("content-type", "application/json"),
                    ("lambda-runtime-aws-request-id", request_id),
                    ("lambda-runtime-deadline-ms", str(deadline)),
                    ("lambda-runtime-invoked-function-arn", function_arn),
                    ("lambda-runtime-trace-id",
                     f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"),
                ])

            def do_POST(self):
                body = self.body()
                route = self.path.removeprefix("/2018-06-01/runtime/")
                with api.cond:
                    if route == "init/error":
                        api.init_error = body.decode(errors="replace")
                    elif route.startswith("invocation/"):
                        request_id, _, kind = route.removeprefix("invocation/").partition("/")
                        api.results[request_id] = (kind, body)
                    api.cond.notify_all()
                self.answer(202, b"{}")

        self.server = serve(H)
        self.address = f"127.0.0.1:{self.server.server_port}"

    def wait_ready(self, function, timeout=60):
        """Waits for the first `next`: the function's init succeeded."""
        until = time.time() + timeout
        with self.cond:
            while self.nexts == 0 and self.init_error is None and time.time() < until:
                if function.proc.poll() is not None:
                    break
                self.cond.wait(0.2)
        check(self.nexts > 0, f"{function.name}: init failed ({self.init_error or 'no `next` request'})"
              f"\n{function.last_log()}")

    def invoke(self, event, function, timeout=60):
        """One invocation: returns the response document (JSON)."""
        request_id = str(uuid.uuid4())
        self.events.put((request_id, json.dumps(event).encode()))
        until = time.time() + timeout
        with self.cond:
            while request_id not in self.results and time.time() < until:
                check(function.proc.poll() is None,
                      f"{function.name} exited ({function.proc.returncode})\n{function.last_log()}")
                self.cond.wait(0.2)
            result = self.results.pop(request_id, None)
        check(result is not None, f"{function.name}: no answer within {timeout} s\n{function.last_log()}")
        kind, body = result
        check(kind == "response", f"{function.name}: invocation {kind}: {body[:500]!r}\n{function.last_log()}")
        return json.loads(body)

    def stop(self):
        self.events.put((None, None))
        self.server.shutdown()


# -------------------------------------------------------------------------------------------------
# A function process


def lambda_environment(config, runtime_api, credentials):
    """The environment Lambda gives a provided.al2023 function, from its configuration
    (GetFunctionConfiguration's shape): the function's own Variables, plus the runtime's."""
    name = config["FunctionName"]
    logging = config.get("LoggingConfig") or {}
    env = {
        "PATH": "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_HANDLER": config["Handler"],
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{config['Runtime']}",
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config["MemorySize"]),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": logging.get("LogGroup") or f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }
    if logging.get("LogFormat") == "JSON":
        env["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
        if logging.get("ApplicationLogLevel"):
            env["AWS_LAMBDA_LOG_LEVEL"] = logging["ApplicationLogLevel"]
    # Lambda's variables are strings (moto's CloudFormation keeps a Number parameter's Ref as a
    # JSON number).
    env.update((k, str(v)) for k, v in ((config.get("Environment") or {}).get("Variables") or {}).items())
    return env


def is_arm64(path):
    with open(path, "rb") as f:
        head = f.read(20)
    check(head[:4] == b"\x7fELF", f"{path} is not an ELF executable")
    return int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64


def command_for(binary):
    """The command that runs `binary` here: itself, or qemu-aarch64 for an arm64 build on
    another machine."""
    if is_arm64(binary) and os.uname().machine not in ("aarch64", "arm64"):
        qemu = subprocess.run(["sh", "-c", "command -v qemu-aarch64"], capture_output=True, text=True)
        check(qemu.returncode == 0, "qemu-aarch64 is missing: `make qemu` installs it")
        return [qemu.stdout.strip(), binary]
    return [binary]


def qemu_env(binary):
    if is_arm64(binary) and os.uname().machine not in ("aarch64", "arm64"):
        return {"QEMU_LD_PREFIX": "/usr/aarch64-linux-gnu"}
    return {}


class Function:
    """A function process with `env` and nothing else (plus QEMU_LD_PREFIX under qemu)."""

    def __init__(self, name, binary, env, args=()):
        self.name = name
        self.log = collections.deque(maxlen=4000)
        self.proc = subprocess.Popen(
            command_for(binary) + list(args), env={**env, **qemu_env(binary)},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.log.append(line.decode(errors="replace").rstrip("\n"))

    def last_log(self, n=30):
        return "\n".join(f"    | {line}" for line in list(self.log)[-n:])

    def environ(self):
        """The environment the process runs with, from /proc (qemu-user passes it through)."""
        with open(f"/proc/{self.proc.pid}/environ", "rb") as f:
            pairs = [p.decode(errors="replace") for p in f.read().split(b"\0") if p]
        return dict(p.split("=", 1) for p in pairs if "=" in p)

    def stop(self):
        stop_process(self.proc)


# -------------------------------------------------------------------------------------------------
# RedTrack


class RedTrack:
    """Answers postbacks: `decide(path, query) -> HTTP status` (200 by default); keeps every
    request as (path, query dict, status) in memory."""

    def __init__(self):
        self.requests = []
        self.decide = lambda path, query: 200
        self.lock = threading.Lock()
        rt = self

        class H(Handler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
                status = rt.decide(url.path, query)
                with rt.lock:
                    rt.requests.append((url.path, query, status))
                self.answer(status, b"OK" if status == 200 else b"no", [("content-type", "text/plain")])

        self.server = serve(H)
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def accepted(self, event_id, path="/postback"):
        with self.lock:
            return sum(1 for p, q, s in self.requests
                       if p == path and q.get("rdtk_event_id") == event_id and s == 200)

    def attempts(self, event_id):
        with self.lock:
            return sum(1 for _, q, _ in self.requests if q.get("rdtk_event_id") == event_id)

    def stop(self):
        self.server.shutdown()


class OrderList:
    """Cartpanda's order list (`GET /api/v3/<slug>/orders`, today's shape, one page) for the orders
    added per shop slug, created an hour ago and paid; answers 401 without the shop's API token.
    Keeps the slugs asked for in `asked`. Also a bench's stand-in: `add` many shops and orders."""

    def __init__(self, api_token):
        self.orders, self.asked, self.lock = {}, [], threading.Lock()
        ol = self

        class H(Handler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                if len(parts) != 4 or parts[:2] != ["api", "v3"] or parts[3] != "orders":
                    return self.answer(404)
                if self.headers.get("authorization") != f"Bearer {api_token}":
                    return self.answer(401)
                with ol.lock:
                    ol.asked.append(parts[2])
                    data = list(ol.orders.get(parts[2], []))
                body = json.dumps({"orders": {"data": data, "current_page": 1, "last_page": 1}}).encode()
                self.answer(200, body, [("content-type", "application/json")])

        self.server = serve(H)
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def add(self, slug, order_id):
        with open(os.path.join(ROOT, "events", "paid-brl.json")) as f:
            order = json.loads(json.load(f)["body"])["order"]
        order["id"] = order_id
        order["created_at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 3600))
        order["payment_status"] = 3
        with self.lock:
            self.orders.setdefault(slug, []).append(order)

    def stop(self):
        self.server.shutdown()


# -------------------------------------------------------------------------------------------------
# The recording proxy


def queue_arn(url):
    parts = urllib.parse.urlsplit(url).path.strip("/").split("/")
    check(len(parts) == 2, f"unexpected queue URL {url}")
    return f"arn:aws:sqs:{REGION}:{parts[0]}:{parts[1]}"


def call_of(headers, body):
    """(action, [resource ARNs]) of one AWS JSON-protocol request (DynamoDB, SQS, SSM, CloudWatch
    Logs), from X-Amz-Target and the body."""
    target = headers.get("x-amz-target", "")
    prefix, _, operation = target.partition(".")
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        doc = {}
    if prefix.startswith("DynamoDB_"):
        tables = [doc["TableName"]] if "TableName" in doc else list(doc.get("RequestItems", {}))
        for item in doc.get("TransactItems", []):
            tables += [v["TableName"] for v in item.values() if "TableName" in v]
        return f"dynamodb:{operation}", [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{t}" for t in tables]
    if prefix == "AmazonSQS":
        return f"sqs:{operation}", [queue_arn(doc["QueueUrl"])] if "QueueUrl" in doc else ["*"]
    if prefix == "AmazonSSM":
        name = doc.get("Name", "")
        return f"ssm:{operation}", [f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name if name.startswith('/') else '/' + name}"]
    if prefix.startswith("Logs_"):
        group = doc.get("logGroupName", "")
        arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}"
        if "logStreamName" in doc:
            arn += f":log-stream:{doc['logStreamName']}"
        return f"logs:{operation}", [arn]
    return f"unknown:{target or 'no X-Amz-Target'}", ["*"]


class RecordingProxy:
    """Forwards every request unchanged (the SigV4 signature covers the Host header, kept as
    sent) to moto and records (label, action, resource, HTTP status). `fail` holds actions to
    answer with HTTP 500 instead (an outage of that API), still recorded."""

    def __init__(self, upstream_port, label, calls):
        self.label = label
        self.fail = set()
        proxy = self

        class H(Handler):
            def do_POST(self):
                body = self.body()
                headers = {k.lower(): v for k, v in self.headers.items()}
                action, resources = call_of(headers, body)
                if action in proxy.fail:
                    status, out, out_headers = 500, json.dumps(
                        {"__type": "InternalFailure", "message": "injected outage"}).encode(), [
                        ("content-type", "application/x-amz-json-1.0")]
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                    conn.putrequest("POST", self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in ("connection", "content-length", "transfer-encoding"):
                            conn.putheader(k, v)
                    conn.putheader("content-length", str(len(body)))
                    conn.endheaders(body)
                    resp = conn.getresponse()
                    status, out = resp.status, resp.read()
                    out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in (
                        "connection", "content-length", "transfer-encoding", "keep-alive", "server", "date")]
                    conn.close()
                for resource in resources:
                    calls.append((proxy.label, action, resource, status, out[:300]))
                self.answer(status, out, out_headers)

        self.server = serve(H)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def stop(self):
        self.server.shutdown()


# -------------------------------------------------------------------------------------------------
# Events


def webhook_event(order_id, token, path="/cartpanda", route="POST /cartpanda", path_parameters=None):
    """An API Gateway HTTP API (payload 2.0) event of events/paid-brl.json for another order,
    created now (the sample's own date is older than the ledger's memory allows a sale to be)."""
    with open(os.path.join(ROOT, "events", "paid-brl.json")) as f:
        event = json.load(f)
    body = json.loads(event["body"])
    body["order"]["id"] = order_id
    body["order"]["created_at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    text = json.dumps(body)
    event["headers"]["content-length"] = str(len(text))
    event["rawPath"] = path
    event["routeKey"] = route
    event["requestContext"]["http"]["path"] = path
    event["requestContext"]["routeKey"] = route
    event["rawQueryString"] = urllib.parse.urlencode({"token": token})
    event["queryStringParameters"] = {"token": token}
    if path_parameters:
        event["pathParameters"] = path_parameters
    event["body"] = text
    return event


def outcome(answer):
    """(HTTP status, outcome of the first conversion or `error`) of a bridge response."""
    try:
        body = json.loads(answer.get("body") or "{}")
    except ValueError:
        body = {}
    conversions = body.get("conversions") or [{}]
    return answer.get("statusCode"), conversions[0].get("outcome") or ("error" if "error" in body else "?")
