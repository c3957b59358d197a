#!/usr/bin/env python3
"""make demo: the bridge on the sample events, locally, in dry-run mode.

Starts moto as DynamoDB, creates the dedup table, runs the function under `cargo lambda watch`,
sends every sample event in events/ (the paid order twice, to show deduplication), prints each
outcome and rendered postback, writes the report of what it recorded as a picture
(`report --format html --dry-runs`), then stops what it started.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools" / "bin"
TOKEN = "demo-token"
TABLE = "cartpanda-redtrack-demo"
POSTBACK = ("https://trk.example.com/postback?status=approved&clickid={cid}&sum={total_price}"
            "&fname={first_name}&lname={last_name}&phone={phone_number}&email={email}"
            "&contentid={product_id}&product={product_name}")
SEQUENCE = [
    ("paid-brl.json", "a paid order (BRL, Brazilian money strings)"),
    ("paid-brl.json", "the same delivery again"),
    ("upsell.json", "its first upsell"),
    ("upsell-second.json", "a second upsell; the first one again inside it"),
    ("refund-full.json", "full refund"),
    ("refund-partial.json", "partial refund of another order"),
    ("chargeback.json", "chargeback by event"),
    ("chargeback-flag.json", "chargeback only as a flag in order.updated"),
    ("paid-discounted.json", "a discounted front offer: line price 15, order total \"7,50\""),
    ("upsell-two-lines.json", "order.upsell with two upsell lines, ISO time with microseconds"),
    ("refund-affiliate.json", "refund with a numeric refunds[].total_amount, affiliate sale"),
    ("paid-cartx-usd.json", "BRL shop, order.currency USD, is_cartx_test=1 test=0: a sale"),
    ("no-click-id.json", "no RedTrack click ID"),
    ("test-order.json", "Cartpanda test order"),
    ("ignored-event.json", "an event that is not a conversion"),
    ("wrong-token.json", "wrong token"),
    ("malformed-body.json", "truncated JSON"),
]


def wait_http(url, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except Exception:
            time.sleep(0.2)
    sys.exit(f"{what} did not start within {seconds}s")


def wait_port(port, seconds, what):
    import socket
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    sys.exit(f"{what} did not start within {seconds}s")


def stop(proc):
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def created_now(event):
    """The sample event with its order created now: the samples are dated March 2025, older than
    the ledger's memory (DEDUP_TTL_DAYS, 400 days) lets an order convert."""
    try:
        body = json.loads(event.get("body") or "")
    except ValueError:
        return event  # the malformed-body sample stays malformed
    if isinstance(body, dict) and isinstance(body.get("order"), dict):
        body["order"]["created_at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        event = dict(event, body=json.dumps(body))
    return event


def invoke(port, event, timeout):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/2015-03-31/functions/cartpanda-redtrack/invocations",
        data=json.dumps(event).encode(), method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def show(name, what, answer):
    status = answer.get("statusCode")
    try:
        body = json.loads(answer.get("body") or "{}")
    except ValueError:
        body = {"raw": answer.get("body")}
    print(f"\n== {name} — {what}\n   HTTP {status}", end="")
    if "skipped" in body:
        print(f"  skipped: {body['skipped']} ({body.get('message')})")
    elif "error" in body and not body.get("conversions"):
        print(f"  error: {body['error']}")
    else:
        print(f"  order {body.get('order_id')}, event {body.get('event')}")
    for conv in body.get("conversions", []):
        print(f"   - {conv['event_id']:<28} {conv['conversion_type']:<11} {conv['outcome']}")
        if conv.get("postback"):
            url = urllib.parse.urlsplit(conv["postback"])
            print(f"     {url.scheme}://{url.netloc}{url.path}")
            for key, value in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
                print(f"       {key:<14} {value}")
    return status


def write_report(path, aws_env):
    """The report of the demo's records as one self-contained HTML page."""
    print("\nwriting the report (cartpanda-redtrack-admin report --format html --dry-runs)")
    out = subprocess.run(
        ["cargo", "run", "--quiet", "--bin", "cartpanda-redtrack-admin", "--", "report",
         "--since", "1d", "--format", "html", "--dry-runs", "--table", TABLE],
        cwd=ROOT, env=dict(os.environ, **aws_env), capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"demo failed: the report could not be written: {out.stderr.strip()[-500:]}")
    path.write_text(out.stdout)
    print(f"report: {path} (open it in a browser)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moto-port", type=int, default=5055)
    ap.add_argument("--lambda-port", type=int, default=9000)
    args = ap.parse_args()
    state = ROOT / ".tools" / "demo"
    state.mkdir(parents=True, exist_ok=True)
    moto = watch = None
    try:
        print(f"starting moto (DynamoDB) on 127.0.0.1:{args.moto_port}")
        moto = subprocess.Popen([str(TOOLS / "python"), str(ROOT / "scripts" / "moto_serial.py"), "-H", "127.0.0.1", "-p", str(args.moto_port)],
                                stdout=open(state / "moto.log", "w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        endpoint = f"http://127.0.0.1:{args.moto_port}"
        wait_http(f"{endpoint}/moto-api/", 30, "moto")
        aws_env = {"AWS_ENDPOINT_URL_DYNAMODB": endpoint, "AWS_REGION": "us-east-1",
                   "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
        import boto3  # ships with moto
        ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        # The table as template.yaml makes it: key `pk`, and the `sent-day` index (RedTrack's count).
        ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                               {"AttributeName": "sent_day", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         GlobalSecondaryIndexes=[{
                             "IndexName": "sent-day",
                             "KeySchema": [{"AttributeName": "sent_day", "KeyType": "HASH"}],
                             "Projection": {"ProjectionType": "INCLUDE",
                                            "NonKeyAttributes": ["click_id", "conversion_type", "status"]}}])
        ddb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
        print(f"created table {TABLE}")

        env_file = state / "demo.env"
        env = dict(aws_env, REDTRACK_POSTBACK_URL=POSTBACK, WEBHOOK_TOKEN=TOKEN, DEDUP_TABLE=TABLE,
                   DRY_RUN="true", RUST_LOG="info")
        env_file.write_text("".join(f"{k}='{v}'\n" for k, v in env.items()))
        print(f"starting the function under cargo lambda watch on 127.0.0.1:{args.lambda_port} (DRY_RUN=true)")
        watch = subprocess.Popen(
            [str(TOOLS / "cargo-lambda"), "lambda", "watch", "-A", "127.0.0.1", "-P", str(args.lambda_port),
             "--env-file", str(env_file)],
            cwd=ROOT, stdout=open(state / "watch.log", "w"), stderr=subprocess.STDOUT,
            env=dict(os.environ, **aws_env), start_new_session=True)
        wait_port(args.lambda_port, 60, "cargo lambda watch")
        print("(the first invocation compiles the function; this can take a few minutes)")
        statuses = []
        for i, (name, what) in enumerate(SEQUENCE):
            event = created_now(json.loads((ROOT / "events" / name).read_text()))
            answer = invoke(args.lambda_port, event, 900 if i == 0 else 60)
            statuses.append(show(name, what, answer))
        records = ddb.scan(TableName=TABLE)["Items"]
        print(f"\n{len(SEQUENCE)} deliveries, {len(records)} dedup records in {TABLE}; "
              f"function log: {state / 'watch.log'}")
        if statuses[0] != 200 or statuses[1] != 200:
            sys.exit("demo failed: the paid order was not processed")
        write_report(state / "report.html", aws_env)
    finally:
        stop(watch)
        stop(moto)
        print("stopped cargo lambda watch and moto")


if __name__ == "__main__":
    main()
