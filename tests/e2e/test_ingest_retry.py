"""``dpdau ingest`` on 503: retries are bounded (count and time), honour Retry-After, say what happened.

The real server cannot be made to answer 503 on demand (its queue drains in milliseconds), so a
small HTTP proxy in front of it answers 503 to chosen requests and forwards the rest; what the
real server ends up holding is then checked: every event exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support import ROOT, ServerProcess, free_port

pytestmark = pytest.mark.e2e


class FaultyProxy:
    """Answers 503 (+ Retry-After) to POST /event while ``refuse(n)`` says so; forwards otherwise."""

    def __init__(self, upstream: str | None, refuse, retry_after: str | None) -> None:
        self.seen: list[tuple[float, str]] = []  # (monotonic time, Idempotency-Key) of every POST /event
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.seen.append((time.monotonic(), self.headers.get("Idempotency-Key", "")))
                if refuse(len(proxy.seen)) or upstream is None:
                    payload = json.dumps({"error": "overloaded", "detail": "injected by the test"}).encode()
                    self.send_response(503)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                req = urllib.request.Request(
                    upstream + self.path,
                    data=body,
                    method="POST",
                    headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                )
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        status, data = resp.status, resp.read()
                except urllib.error.HTTPError as exc:
                    status, data = exc.code, exc.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def ingest(tmp_path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(json.dumps({"user_id": f"u{i}", "op": "+", "day": "2025-07-01"}) + "\n" for i in range(2500))
    )
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "ingest", str(events), "--url", url, "--batch", "1000", *extra],
        cwd=ROOT,
        env={**os.environ, "DATA_DIR": str(tmp_path / "unused")},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_503s_are_retried_with_the_same_key_after_retry_after_and_counted_once(tmp_path):
    with ServerProcess(tmp_path / "data") as server:
        # requests 2 and 3 (the second batch, twice) are refused
        with FaultyProxy(f"http://127.0.0.1:{server.port}", lambda n: n in (2, 3), retry_after="1") as proxy:
            proc = ingest(tmp_path, proxy.url)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["ingested"] == 2500
        assert server.http.get("/readyz")[1]["journal_seq"] == 2500  # each event exactly once
    retries = [line for line in proc.stderr.splitlines() if "retrying" in line]
    assert len(retries) == 2 and "event 1,000" in retries[0] and "503 overloaded" in retries[0], proc.stderr
    times, keys = zip(*proxy.seen)
    assert len(keys) == 5 and keys[1] == keys[2] == keys[3] and len(set(keys)) == 3
    assert times[2] - times[1] >= 1.0 and times[3] - times[2] >= 1.0  # Retry-After: 1 was honoured


def test_gives_up_after_the_retry_count_and_says_what_was_ingested(tmp_path):
    with FaultyProxy(None, lambda n: True, retry_after="0") as proxy:
        proc = ingest(tmp_path, proxy.url, "--retries", "3")
    assert proc.returncode == 1
    assert len(proxy.seen) == 4  # the first attempt and 3 retries, then nothing more
    last = proc.stderr.strip().splitlines()[-1]
    assert "gave up on the batch starting at event 0 after 4 attempt(s)" in last, proc.stderr
    assert "0 events before it were ingested" in last and "Traceback" not in proc.stderr


def test_gives_up_at_once_when_retry_after_exceeds_the_time_bound(tmp_path):
    with FaultyProxy(None, lambda n: True, retry_after="30") as proxy:
        proc = ingest(tmp_path, proxy.url, "--retry-for", "5")
    assert proc.returncode == 1 and len(proxy.seen) == 1
    assert "after 1 attempt(s)" in proc.stderr and "--retry-for 5" in proc.stderr


def test_time_bound_stops_retries_the_count_would_allow(tmp_path):
    with FaultyProxy(None, lambda n: True, retry_after="1") as proxy:
        proc = ingest(tmp_path, proxy.url, "--retries", "100", "--retry-for", "2.5")
    assert proc.returncode == 1 and "gave up" in proc.stderr
    # waits of 1 s each within 2.5 s: at most 3 attempts, whatever the machine's load
    assert 1 <= len(proxy.seen) <= 3
