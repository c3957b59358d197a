#!/usr/bin/env python3
"""`make arm64-check`: the arm64 `bootstrap` `sam build` made (the template's default
architecture) runs, under qemu-user here, against the Lambda Runtime API stand-in and moto: a new
conversion is sent to the RedTrack stand-in, its duplicate answered `duplicate`.

Usage: arm64_check.py BOOTSTRAP [--moto-port N]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import boto3  # noqa: E402
from standin import (  # noqa: E402
    REGION, Failure, Function, Moto, RedTrack, RuntimeApi, check, is_arm64, lambda_environment,
    outcome, webhook_event,
)

TOKEN = "arm64-check-token-0123"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("--moto-port", type=int, default=5057)
    args = parser.parse_args()
    check(os.path.exists(args.bootstrap), f"{args.bootstrap} does not exist: `make sam-build` first")
    check(is_arm64(args.bootstrap), f"{args.bootstrap} is not an arm64 (aarch64) executable")
    started = time.time()
    moto = Moto(args.moto_port)
    redtrack = RedTrack()
    api = function = None
    try:
        creds = {"AccessKeyId": "test", "SecretAccessKey": "test", "SessionToken": "test"}
        ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto.url,
                           aws_access_key_id="test", aws_secret_access_key="test")
        ddb.create_table(TableName="arm64-check", BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
        name = "cartpanda-redtrack-bridge"
        api = RuntimeApi(f"arn:aws:lambda:{REGION}:123456789012:function:{name}", 15)
        config = {
            "FunctionName": name, "Handler": "bridge", "Runtime": "provided.al2023",
            "MemorySize": 128, "LoggingConfig": {"LogFormat": "JSON", "ApplicationLogLevel": "INFO"},
            "Environment": {"Variables": {
                "WEBHOOK_TOKEN": TOKEN, "DEDUP_TABLE": "arm64-check",
                "REDTRACK_POSTBACK_URL": redtrack.base + "/postback?clickid={cid}&sum={total_price}",
            }},
        }
        env = lambda_environment(config, api.address, creds)
        env["AWS_ENDPOINT_URL_DYNAMODB"] = moto.url
        function = Function("bridge (arm64)", args.bootstrap, env)
        api.wait_ready(function)
        ready = time.time()
        before = len(function.log)
        first = outcome(api.invoke(webhook_event(77000001, TOKEN), function))
        check(first == (200, "sent"), f"new conversion: expected (200, 'sent'), got {first}\n{function.last_log()}")
        time.sleep(0.2)
        lines = list(function.log)[before:]
        logged = sum(len(line) + 1 for line in lines)
        again = outcome(api.invoke(webhook_event(77000001, TOKEN), function))
        check(again == (200, "duplicate"), f"duplicate: expected (200, 'duplicate'), got {again}")
        sent = redtrack.accepted("77000001-purchase")
        check(sent == 1, f"RedTrack received {sent} postbacks of the conversion, expected 1")
        print(f"arm64 check: {args.bootstrap} ({os.path.getsize(args.bootstrap)} bytes, aarch64) under "
              f"qemu-user: init {ready - started:.1f} s, new conversion sent, its duplicate answered "
              f"duplicate, RedTrack received it once (emulated timings); the new conversion's output: "
              f"{logged} bytes in {len(lines)} lines")
    finally:
        for thing in (function, api, redtrack, moto):
            if thing:
                thing.stop()


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"arm64 check FAILED: {e}", file=sys.stderr)
        sys.exit(1)
