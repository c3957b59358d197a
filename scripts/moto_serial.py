#!/usr/bin/env python3
"""moto_server with requests served one at a time.

moto's server is threaded and its DynamoDB conditional writes are not atomic across threads: two
concurrent conditional PutItems can both succeed, which real DynamoDB never allows. Serving one
request at a time restores DynamoDB's per-item atomicity, so concurrency tests test our code, not
moto's races. Same arguments as moto_server.
"""
import moto.server
import werkzeug.serving

_run_simple = werkzeug.serving.run_simple


def _serial(*args, **kwargs):
    kwargs["threaded"] = False
    return _run_simple(*args, **kwargs)


moto.server.run_simple = _serial

if __name__ == "__main__":
    moto.server.main()
