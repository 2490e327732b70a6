"""Storage faults against the real server: a full disk, a locked database, corrupt snapshots, a
journal from a newer version, a PostgreSQL connection cut. Each one gets a clear answer (507 or
503 with Retry-After, or one line and exit code 2), a log line and a metric; nothing is
acknowledged that is not stored; the service recovers by itself once the cause is gone.

The disk-full test mounts a real tmpfs as DATA_DIR when it runs as root (CI does); elsewhere
the same failure is injected at the journal boundary (``DPDAU_FAULTS``), and the test says so.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from actors.state import periods
from actors.system import restore_world
from gateway import config as config_mod
from journal import events as ev
from journal import location
from tests.support import ROOT, ServerProcess, free_port

pytestmark = pytest.mark.e2e

DAY = "2025-05-05"


def batch_body(n: int, tag: str) -> dict:
    return {"events": [{"user_id": f"{tag}-{i}", "op": "+", "day": DAY} for i in range(n)]}


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def metrics(server: ServerProcess) -> str:
    status, body, _ = server.http.get("/metrics")
    assert status == 200
    return str(body.get("_text", ""))


async def _journal_keys(data: Path, url: str | None = None) -> tuple[dict[str, int], int, dict[int, int]]:
    """Idempotency keys in the journal (-> how many records carry each), events, replayed counts."""
    spec = location.parse(url, data)
    journal = await spec.open()
    try:
        keys: dict[str, int] = {}
        events = 0
        async for records in journal.read(0):
            for rec in records:
                if isinstance(rec.event, ev.ActivityBatchRecorded):
                    events += rec.event.size
                    if rec.event.idempotency_key:  # stored as "<calling key>:<Idempotency-Key>"
                        key = rec.event.idempotency_key.split(":", 1)[1]
                        keys[key] = keys.get(key, 0) + 1
        world, _ = await restore_world(
            journal, None, config_mod.load(environ={}, dotenv=None).engine, use_snapshot=False
        )
        return keys, events, world.counts()
    finally:
        await journal.close()


def journal_keys(data: Path, url: str | None = None) -> tuple[dict[str, int], int, dict[int, int]]:
    return anyio.run(_journal_keys, data, url)


# -- a full disk --------------------------------------------------------------------------------


def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


def test_disk_full_answers_507_acknowledges_nothing_and_recovers_when_space_returns(tmp_path, capsys):
    data = tmp_path / "mnt"  # the server's log goes to tmp_path, outside the small file system
    real = _mount_tmpfs(data, "3m")
    env = {} if real else {"DPDAU_FAULTS": "journal.append=raise:full*6"}
    try:
        with ServerProcess(data, env) as server:
            acked, refused = [], []
            for n in range(400):
                key = f"fill-{n}"
                status, body, headers = server.http.post(
                    "/event", batch_body(2000, key), headers={"Idempotency-Key": key}
                )
                if status == 200:
                    acked.append(key)
                    continue
                assert status == 507, (status, body)
                assert body["error"] == "storage_full" and int(headers["Retry-After"]) > 0
                refused.append(key)
                if len(refused) == 3:
                    break
            assert acked and len(refused) == 3, "the disk never filled up"
            # Still serving while full: liveness, reads, metrics.
            assert server.http.get("/healthz")[0] == 200
            assert server.http.get("/releases")[0] == 200
            text = metrics(server)
            assert metric(text, 'dpdau_journal_write_failures_total{kind="full"}') >= 3
            assert "journal_write_failed" in server.log() and "full" in server.log()
            # Space comes back: no restart, no operator action.
            if real:
                subprocess.run(["mount", "-o", "remount,size=256m", str(data)], check=True)
            deadline = time.monotonic() + 60
            while True:
                key = refused[0]
                status, body, headers = server.http.post(
                    "/event", batch_body(2000, key), headers={"Idempotency-Key": key}
                )
                if status == 200:
                    break
                assert status == 507 and time.monotonic() < deadline, (status, body)
                time.sleep(0.2)
            assert headers.get("Idempotent-Replayed") is None  # it had never been stored
            for key in refused[1:]:
                status, _, headers = server.http.post("/event", batch_body(2000, key), headers={"Idempotency-Key": key})
                assert status == 200 and headers.get("Idempotent-Replayed") is None
            assert server.http.get("/readyz")[0] == 200
            server.kill(signal.SIGTERM)
        keys, events, counts = journal_keys(data)
        assert set(keys) == set(acked) | set(refused) and set(keys.values()) == {1}
        assert events == 2000 * len(keys) and counts == {periods.parse_day(DAY): events}
        with capsys.disabled():
            how = "tmpfs of 3 MiB" if real else "injected SQLITE_FULL (not root: no tmpfs)"
            print(
                f"\ndisk full ({how}): {len(acked)} batches acknowledged before it filled, 507 x3, "
                f"then {len(refused)} retried and stored once space returned; journal == acknowledged"
            )
    finally:
        if real:
            subprocess.run(["umount", "-l", str(data)], capture_output=True)


# -- a locked database ----------------------------------------------------------------------------


def test_a_locked_database_answers_503_then_recovers(tmp_path):
    data = tmp_path / "data"
    with ServerProcess(data) as server:
        assert server.http.post("/event", batch_body(10, "before"), headers={"Idempotency-Key": "before"})[0] == 200
        other = sqlite3.connect(data / "journal.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock (a backup tool, a shell)
        try:
            status, body, headers = server.http.post(
                "/event", batch_body(10, "during"), headers={"Idempotency-Key": "during"}
            )
            assert status == 503 and body["error"] == "storage_unavailable" and int(headers["Retry-After"]) > 0
            assert server.http.get("/healthz")[0] == 200
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert metric(metrics(server), 'dpdau_journal_write_failures_total{kind="busy"}') >= 1
        assert "journal_write_failed" in server.log()
        status, _, headers = server.http.post("/event", batch_body(10, "during"), headers={"Idempotency-Key": "during"})
        assert status == 200 and headers.get("Idempotent-Replayed") is None  # the 503 had stored nothing
        server.kill(signal.SIGTERM)
    keys, events, _ = journal_keys(data)
    assert keys == {"before": 1, "during": 1} and events == 20


# -- corrupt snapshots ------------------------------------------------------------------------------


def test_truncated_and_bit_flipped_snapshots_are_skipped_counted_and_logged(tmp_path):
    data = tmp_path / "data"
    with ServerProcess(data, {"SNAPSHOT_EVERY_SECONDS": "1"}) as server:
        server.http.post("/event", batch_body(300, "a"))
        release = server.http.get(f"/dau/{DAY}")[1]
        erasure = server.http.post("/erasure", {"user_id": "a-7"})[1]
        deadline = time.monotonic() + 30
        while len(list((data / "snapshots").glob("*.snap"))) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        server.http.post("/event", batch_body(5, "b"))
        seq = server.http.get("/readyz")[1]["journal_seq"]
        server.kill(signal.SIGTERM)  # the final snapshot: now there are two
    files = sorted((data / "snapshots").glob("*.snap"))
    assert len(files) == 2
    newest, older = files[-1], files[0]
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated (a torn copy, a full disk)
    blob = bytearray(older.read_bytes())
    blob[len(blob) // 2] ^= 0x10  # one bit flipped
    older.write_bytes(bytes(blob))
    with ServerProcess(data) as server:
        assert server.http.get("/readyz")[1]["journal_seq"] == seq
        assert metric(metrics(server), "dpdau_snapshots_rejected_total") == 2
        log = server.log()
        assert "snapshot_skipped" in log and "truncated" in log and "checksum mismatch" in log
        assert server.http.get(f"/dau/{DAY}")[1] == release  # the same record, not a new draw
        assert server.http.get(f"/erasure/{erasure['erasure_id']}")[1]["erasure_id"] == erasure["erasure_id"]


# -- a journal from a newer version ---------------------------------------------------------------


def _serve_once(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(free_port())],
        cwd=ROOT,
        env={**os.environ, "DATA_DIR": str(data), "API_KEY": "k" * 32},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("what", ["journal format", "record version"])
def test_a_journal_from_a_newer_version_is_refused_with_one_line_and_exit_2(tmp_path, what):
    data = tmp_path / "data"
    with ServerProcess(data) as server:
        server.http.post("/event", batch_body(20, "a"))
        server.kill(signal.SIGTERM)
    for snap in (data / "snapshots").glob("*"):
        snap.unlink()  # the journal itself must be read
    db = sqlite3.connect(data / "journal.sqlite3")
    with db:
        if what == "journal format":
            db.execute("UPDATE meta SET value = '99' WHERE name = 'format'")
        else:
            db.execute("UPDATE journal SET version = version + 1 WHERE seq = 1")
    before = db.execute("SELECT seq, version, payload FROM journal ORDER BY seq").fetchall()
    db.close()
    done = _serve_once(data)
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("20")]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "newer dpdau" in lines[0], done.stderr
    db = sqlite3.connect(data / "journal.sqlite3")
    assert db.execute("SELECT seq, version, payload FROM journal ORDER BY seq").fetchall() == before
    db.close()


# -- PostgreSQL: the connection cut under load -------------------------------------------------------


def test_postgresql_connection_cut_answers_503_then_reconnects(tmp_path, pg_url):
    import asyncpg

    async def terminate_all() -> int:
        conn = await asyncpg.connect(pg_url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        finally:
            await conn.close()

    data = tmp_path / "data"
    acked: list[str] = []
    statuses: list[int] = []
    with ServerProcess(data, {"JOURNAL_URL": pg_url}) as server:
        stop = threading.Event()

        def client() -> None:  # keeps writing while the connections are cut under it
            n = 0
            while not stop.is_set():
                key = f"pg-{n}"
                status, body, headers = server.http.post(
                    "/event", batch_body(50, key), headers={"Idempotency-Key": key}
                )
                statuses.append(status)
                if status == 200:
                    acked.append(key)
                    n += 1
                else:  # retried with the same key: stored at most once, whatever happened
                    assert status == 503 and int(headers["Retry-After"]) > 0, (status, body)
                    time.sleep(0.05)

        worker = threading.Thread(target=client)
        worker.start()
        try:
            for _ in range(5):
                time.sleep(0.3)
                assert anyio.run(terminate_all) >= 1  # every connection of the server, at once
            time.sleep(0.5)
        finally:
            stop.set()
            worker.join(60)
        assert set(statuses) <= {200, 503} and acked
        deadline = time.monotonic() + 30
        while server.http.get("/readyz")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert server.http.post("/event", batch_body(5, "last"), headers={"Idempotency-Key": "last"})[0] == 200
        acked.append("last")
        text, log = metrics(server), server.log()
        server.kill(signal.SIGTERM)
    # Each refusal is counted and logged: every 503 in the HTTP metric, and each cut as a storage
    # fault -- a failed write (journal_write_failed) or a journal that could not be read back
    # (journal_unsettled, e.g. catching up when the cut came) -- in its own metric.
    refused = statuses.count(503)
    counted = 'dpdau_http_requests_total{method="POST",route="/event",status="503"}'
    assert (metric(text, counted) if refused else 0) == refused
    faults = [line for line in log.splitlines() if "journal_write_failed" in line or "journal_unsettled" in line]
    storage = sum(metric(text, f'dpdau_journal_write_failures_total{{kind="{k}"}}') for k in ("full", "busy", "failed"))
    storage += metric(text, "dpdau_journal_unsettled_total")
    assert storage == len(faults) and (storage >= 1 or refused == 0), (storage, faults, refused)
    assert "journal_reconnected" in log  # the writer reconnected by itself
    keys, events, _ = journal_keys(data, pg_url)
    assert keys == dict.fromkeys(acked, 1) and events == 50 * (len(acked) - 1) + 5
    print(
        json.dumps(
            {"pg_connection_cut": {"requests": len(statuses), "answered_503": refused, "storage_faults": storage}}
        )
    )
