#!/usr/bin/env python3
"""make replay URL=https://<api>/cartpanda TOKEN=<secret> [LIVE=1]

Sends the sample deliveries in events/ to a deployed endpoint and prints each answer: a check of a
deployment end to end. By default every request carries ?dry_run=1, so the function renders the
postbacks and returns them without claiming or calling RedTrack; LIVE=1 sends for real (the
samples' click IDs are made up: RedTrack will not attribute them).
"""
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def created_now(text):
    """The delivery with its order created now: the samples are dated March 2025, older than the
    ledger's memory (DEDUP_TTL_DAYS, 400 days) lets an order convert. A body that is not an
    order's JSON (the malformed sample) is sent as it is."""
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, dict) and isinstance(body.get("order"), dict):
        body["order"]["created_at"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        return json.dumps(body)
    return text


def main():
    url, token = os.environ.get("URL", ""), os.environ.get("TOKEN", "")
    if not url or not token:
        sys.exit("usage: make replay URL=https://<api-id>.execute-api.<region>.amazonaws.com/cartpanda TOKEN=<secret> [LIVE=1]")
    live = os.environ.get("LIVE") == "1"
    base = urllib.parse.urlsplit(url)
    failures = 0
    for path in sorted((ROOT / "events").glob("*.json")):
        event = json.loads(path.read_text())
        sample_token = (event.get("queryStringParameters") or {}).get("token")
        query = {"token": token if sample_token == "demo-token" else (sample_token or "")}
        if not live:
            query["dry_run"] = "1"
        target = urllib.parse.urlunsplit((base.scheme, base.netloc, base.path, urllib.parse.urlencode(query), ""))
        req = urllib.request.Request(target, data=created_now(event.get("body") or "").encode(), method="POST",
                                     headers={"content-type": "application/json", "user-agent": "cartpanda-redtrack-replay"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, body = resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read().decode()
        except OSError as err:
            print(f"{path.name:<24} no answer: {err}")
            failures += 1
            continue
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {"error": body[:200]}
        what = answer.get("skipped") or answer.get("error") or ", ".join(
            f"{c['event_id']}={c['outcome']}" for c in answer.get("conversions", []))
        print(f"{path.name:<24} HTTP {status}  {what}")
    mode = "live" if live else "dry run (nothing claimed or sent)"
    print(f"replayed {len(list((ROOT / 'events').glob('*.json')))} sample deliveries, {mode}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
