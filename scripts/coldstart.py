#!/usr/bin/env python3
"""Cold-start time of the three Lambda binaries, over the Lambda Runtime API protocol.

A runtime-API endpoint on loopback (the protocol of
https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html) serves one event; each binary is started as Lambda
starts it, and the script measures, from the process start:
  init    until its first `GET …/invocation/next` (tracing, typed config, clients built once);
  first   until it answers that event (an event each handler refuses at once, so no source or warehouse is needed).
The median of --runs starts is printed per binary. These are this machine's times for host-architecture release
binaries, not Graviton's: a ratio between the functions and a bound on what the code itself adds to a cold start
(Lambda adds its own download and sandbox start on top).

usage: scripts/coldstart.py [--target-dir DIR] [--runs N]
"""
import argparse
import http.server
import json
import os
import statistics
import subprocess
import threading
import time

EVENTS = {
    # The loader's handler refuses an unknown action; the planner and the extractor refuse a request missing its
    # required fields: each answers with an error, after init, without touching the network.
    "planner": {"tables": 42},
    "extractor": {"not": "a task"},
    "loader": {"action": "no-such-action"},
}
ENV = {
    "planner": {"PGSHIFT_SOURCE": "postgres://u@127.0.0.1:9/db?sslmode=disable", "PGSHIFT_STAGE": "file:///tmp/pgshift-coldstart"},
    "extractor": {"PGSHIFT_SOURCE": "postgres://u@127.0.0.1:9/db?sslmode=disable"},
    "loader": {"PGSHIFT_WAREHOUSE": "redshift://example-cluster/dev?db_user=loader&iam_role=arn:aws:iam::123456789012:role/copy"},
}


class Api(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        s = self.server
        if s.first_next is None:
            s.first_next = time.monotonic()
        if s.served:
            # The one event is answered; the binary waits here for the next until it is killed.
            time.sleep(30)
            return
        s.served = True
        body = json.dumps(s.event).encode()
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", "cold-1")
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:f")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        s = self.server
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        if "/init/error" in self.path:
            s.init_error = True
        s.answered = time.monotonic()
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


def once(binary, name):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    server.event, server.first_next, server.answered, server.served, server.init_error = EVENTS[name], None, None, False, False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:%d" % server.server_address[1],
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "example",
        "RUST_LOG": "error",
        **ENV[name],
    }
    start = time.monotonic()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while server.answered is None and time.monotonic() - start < 30:
            time.sleep(0.001)
    finally:
        proc.kill()
        proc.wait()
        server.shutdown()
    if server.answered is None or server.init_error:
        raise SystemExit(f"coldstart: {name} did not answer (init error: {server.init_error})")
    return (server.first_next - start) * 1000, (server.answered - start) * 1000


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", "target"))
    p.add_argument("--runs", type=int, default=7)
    a = p.parse_args()
    print(f"cold start over the Runtime API, median of {a.runs} (ms, this machine, {os.uname().machine} release):")
    for name in ("planner", "extractor", "loader"):
        binary = os.path.join(a.target_dir, "release", name)
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"coldstart: {binary} missing: cargo build --release -p pgshift-functions")
        runs = [once(binary, name) for _ in range(a.runs)]
        init = statistics.median(r[0] for r in runs)
        first = statistics.median(r[1] for r in runs)
        size = os.path.getsize(binary) / 1e6
        print(f"  {name:<10} init {init:7.1f}   first answer {first:7.1f}   binary {size:5.1f} MB")


if __name__ == "__main__":
    main()
