"""The real ``dpdau serve`` process on a real PostgreSQL journal (``JOURNAL_URL``): ingest, release,
erase, purge with no byte of the user left in any file of PostgreSQL's data directory or of
DATA_DIR, then ``kill -9`` and restart with nothing acknowledged lost; and a bad URL stops the
start with one line and exit code 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.identity import Pseudonymizer
from tests import pg
from tests.support import ROOT, ServerProcess, free_port

pytestmark = pytest.mark.e2e


def key_encodings(key: int) -> list[bytes]:
    return [key.to_bytes(8, "little", signed=True), key.to_bytes(8, "big", signed=True), str(key).encode()]


def files_holding(root: Path, pattern: bytes) -> list[str]:
    out = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and pattern in path.read_bytes():
                out.append(str(path))
        except (FileNotFoundError, PermissionError):
            continue
    return out


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://db/x", "unknown scheme"),
        ("postgresql:///nodb", "names no host"),
        ("postgresql://u@h:99999/x", "invalid port"),
        ("sqlite://relative.db", "sqlite:///PATH"),
        ("postgresql://u@127.0.0.1:1/x?partitions=0", "partitions"),
    ],
)
def test_a_bad_journal_url_is_one_line_and_exit_2(tmp_path, url, says):
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", "1"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path), "JOURNAL_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "JOURNAL_URL" in lines[0] and says in lines[0], out.stderr


def test_an_unreachable_postgres_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "replay"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path), "JOURNAL_URL": "postgresql://u@127.0.0.1:1/x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "cannot connect" in out.stderr


def test_postgres_journal_end_to_end_purge_and_kill9(tmp_path, pg_url, pg_server):
    data = tmp_path / "data"
    env = {"JOURNAL_URL": pg_url, "PURGE_DELAY_SECONDS": "1", "SNAPSHOT_EVERY_SECONDS": "1"}
    server = ServerProcess(data, env).start()
    try:
        http = server.http
        days = [f"2025-05-{d:02d}" for d in range(1, 11)]
        events = [{"user_id": u, "op": "+", "day": d} for d in days for u in ("erase-me", "keep-me", "other")]
        status, first, _ = http.post("/event", {"events": events}, headers={"Idempotency-Key": "k-1"})
        assert status == 200 and first["ingested"] == 30
        for i in range(20):  # single events: the one-statement path
            assert http.post("/event", {"user_id": f"solo-{i}", "op": "+", "day": "2025-05-10"})[0] == 200
        releases = {p: http.get(p)[1] for p in ("/dau/2025-05-10", "/mau?end=2025-05-10")}
        assert all("estimate" in r for r in releases.values())
        time.sleep(1.5)  # a snapshot holding the user exists now
        status, receipt, _ = http.post("/erasure", {"user_id": "erase-me"})
        assert status == 202
        deadline = time.monotonic() + 60
        while receipt["status"] != "purged" and time.monotonic() < deadline:
            time.sleep(0.2)
            receipt = http.get(f"/erasure/{receipt['erasure_id']}")[1]
        assert receipt["status"] == "purged" and "events_removed" not in receipt  # the same for anyone
        audit = {e["erasure_id"]: e for e in http.get("/audit/erasures")[1]["erasures"]}
        assert audit[receipt["erasure_id"]]["events_removed"] == len(days)
        head = http.get("/readyz")[1]["journal_seq"]

        secret = (data / "secret").read_text().strip().encode()
        pseudo = Pseudonymizer(secret)
        gone, kept = pseudo.key("erase-me"), pseudo.key("keep-me")
        if pg.required():  # .ci/run exports the data directory: the scan of it never drops out there
            assert pg_server.data_dir is not None, f"{pg.ENV_REQUIRED}=1 needs {pg.ENV_DATA} for the byte scan"
        roots = [data] + ([pg_server.data_dir] if pg_server.data_dir is not None else [])
        for root in roots:
            for enc in key_encodings(gone):
                assert files_holding(root, enc) == [], (root, enc)
        if pg_server.data_dir is not None:
            assert files_holding(pg_server.data_dir, key_encodings(kept)[0])  # not vacuous

        assert server.kill(signal.SIGKILL) == -signal.SIGKILL
        server.start()
        assert http.get("/readyz")[1]["journal_seq"] == head
        for path, before in releases.items():
            assert http.get(path)[1] == before  # never re-drawn
        status, again, headers = http.post("/event", {"events": events}, headers={"Idempotency-Key": "k-1"})
        assert status == 200 and again == first and headers.get("Idempotent-Replayed") == "true"
        assert http.get("/readyz")[1]["journal_seq"] == head
        assert "erase-me" not in server.log()
    finally:
        server.__exit__()


def test_workers_on_a_journal_from_a_newer_version_stop_with_one_line_and_exit_2(tmp_path, pg_url):
    """``--workers 2``: each worker's boot reads the record it cannot interpret; the worker stops
    with the refusal (never a traceback, never `listening`), and the supervisor stops with 2."""
    import anyio
    import asyncpg

    data = tmp_path / "data"
    env = {"JOURNAL_URL": pg_url, "API_KEY": "k" * 32}
    with ServerProcess(data, env) as server:
        status, body, _ = server.http.post(
            "/event", {"events": [{"user_id": f"u{i}", "op": "+", "day": "2025-03-03"} for i in range(20)]}
        )
        assert status == 200, body
        server.kill(signal.SIGTERM)

    async def bump() -> list[tuple[int, int]]:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute("UPDATE batches SET version = version + 1 WHERE seq = (SELECT min(seq) FROM batches)")
            return [tuple(r) for r in await conn.fetch("SELECT seq, version FROM batches ORDER BY seq")]
        finally:
            await conn.close()

    before = anyio.run(bump)
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(free_port()), "--workers", "2"],
        cwd=ROOT,
        env={**os.environ, "DATA_DIR": str(data), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "listening" not in out.stderr, out.stderr
    said = {line for line in out.stderr.splitlines() if line.strip() and not line.startswith("20")}
    assert len(said) == 1 and "newer dpdau" in said.pop(), out.stderr  # each worker says the same line

    async def versions() -> list[tuple[int, int]]:
        conn = await asyncpg.connect(pg_url)
        try:
            return [tuple(r) for r in await conn.fetch("SELECT seq, version FROM batches ORDER BY seq")]
        finally:
            await conn.close()

    assert anyio.run(versions) == before  # the refused start wrote nothing
