"""The sharded deployment for real: PostgreSQL, ``dpdau serve --workers 2 --shards 2`` (two gateway
processes on one port) and two ``dpdau serve --shard I/2`` processes. Clients ingest concurrently
(batches with Idempotency-Keys, retried until acknowledged), erase users and ask for releases,
while a gateway worker and a shard are ``kill -9``ed at random moments and come back (the
supervisor restarts the worker; the test restarts the shard). Afterwards:
- every acknowledged batch is in the journal exactly once, as sent (pseudonymised);
- the shards' exact counts at a fresh cut (their internal route) equal a brute-force count of the
  journal at the cut -- every acknowledged event counted once, every erasure honoured;
- every release answered during the chaos is answered unchanged afterwards, and each was
  published and charged once;
- the SQLite journal refuses --workers/--shard with one line and exit code 2, and so do the shard
  layouts the README says are refused (a shard with workers, inexact sketches, more shards than
  the journal's partitions -- that one once the journal is open, still before anything listens).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from gateway.identity import Pseudonymizer
from gateway.internal import HEADER, INTERNAL_LABEL
from journal import events as ev
from journal.postgres import PostgresJournal
from tests.support import ROOT, Http, Model, ServerProcess, day, free_port

pytestmark = pytest.mark.e2e

SECRET = "e2e-sharded-deployment-secret-0123"
DAYS = ["2025-03-03", "2025-03-04", "2025-03-05", "2025-03-06"]  # long closed
RELEASES = [f"/dau/{d}" for d in DAYS] + ["/mau?end=2025-03-06", "/mau?end=2025-03-05&window=7"]


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def retry(
    http: Http, method: str, path: str, body: object | None = None, headers: dict | None = None, until: float = 120
):
    """The client's side of backpressure and crashes: same request (same Idempotency-Key) until it
    is answered with something other than 503 or a broken connection."""
    deadline = time.monotonic() + until
    while True:
        try:
            status, payload, _ = http.request(method, path, body, headers=headers, timeout=30)
            if status != 503:
                return status, payload
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{method} {path} never answered")
        time.sleep(0.05)


def test_two_gateway_workers_two_shards_kill9_and_restart(tmp_path, pg_url):
    data = tmp_path / "data"
    env = {"JOURNAL_URL": pg_url, "HASH_SALT_SECRET": SECRET, "SNAPSHOT_EVERY_SECONDS": "1"}
    shards = [ServerProcess(data, env, args=["--shard", f"{i}/2"]) for i in range(2)]
    gateway = ServerProcess(data, env, args=["--workers", "2", "--shards", "2"])
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    acked: dict[str, list[dict]] = {}
    attempted: set[str] = set()
    first_answers: dict[str, dict] = {}
    changed: list[str] = []
    kills = {"worker": 0, "shard": 0}
    stop = threading.Event()
    errors: list[BaseException] = []
    try:
        for s in shards:
            s.start()
        gateway.start()

        chaos_done = threading.Event()

        def client(n: int) -> None:
            local = random.Random(n)
            i = 0
            while not chaos_done.is_set() or i < 20:  # ingest goes on through every kill
                i += 1
                events = [
                    {"user_id": f"u{local.randint(1, 400)}", "op": local.choice("++-"), "day": local.choice(DAYS)}
                    for _ in range(local.randint(1, 25))
                ]
                key = f"c{n}-{i}"
                attempted.add(key)
                status, body = retry(gateway.http, "POST", "/event", {"events": events}, {"Idempotency-Key": key})
                assert status == 200, body
                acked[key] = events
                if local.random() < 0.08:
                    status, body = retry(gateway.http, "POST", "/erasure", {"user_id": f"u{local.randint(1, 400)}"})
                    assert status == 202, body

        def reader() -> None:
            while not stop.is_set():
                path = rng.choice(RELEASES)
                status, body = retry(gateway.http, "GET", path)
                assert status == 200, body
                if path in first_answers and first_answers[path] != body:
                    changed.append(path)
                first_answers.setdefault(path, body)
                time.sleep(0.05)

        def chaos() -> None:
            try:
                kill_and_restart()
            finally:
                chaos_done.set()

        def kill_and_restart() -> None:
            for _ in range(2):
                time.sleep(rng.uniform(0.5, 3.0))
                workers = children_of(gateway.proc.pid)
                os.kill(rng.choice(workers), signal.SIGKILL)
                kills["worker"] += 1
                time.sleep(rng.uniform(0.2, 2.0))
                victim = rng.choice(shards)
                victim.kill()
                kills["shard"] += 1
                time.sleep(rng.uniform(0.0, 2.0))
                victim.start()

        def guard(fn, *args) -> None:
            try:
                fn(*args)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=guard, args=(client, n)) for n in range(5)]
        threads += [threading.Thread(target=guard, args=(reader,)), threading.Thread(target=guard, args=(chaos,))]
        for t in threads:
            t.start()
        threads[-1].join(600)
        for t in threads[:5]:
            t.join(600)
        stop.set()
        threads[-2].join(600)
        assert not errors, errors
        assert kills == {"worker": 2, "shard": 2}
        assert "worker_died_restarting" in gateway.log()

        # -- every release answered during the chaos is unchanged, published and charged once --
        assert not changed
        for path, body in first_answers.items():
            assert retry(gateway.http, "GET", path) == (200, body)
        records = anyio.run(read_journal, pg_url)
        released = [r.event for r in records if isinstance(r.event, ev.Released)]
        assert len(released) == len({r.release_id for r in released}) == len(first_answers)
        charges = [r.event for r in records if isinstance(r.event, ev.BudgetCharged)]
        assert {c.charge_id for c in charges} == {r.charge_id for r in released}

        # -- every acknowledged batch exactly once, as sent --
        pseudonyms = Pseudonymizer(SECRET.encode())
        batches: dict[str, ev.ActivityBatchRecorded] = {}
        for rec in records:
            if isinstance(rec.event, ev.ActivityBatchRecorded):
                assert rec.event.idempotency_key is not None
                key = rec.event.idempotency_key.split(":", 1)[1]  # scoped by the client (gateway/auth.py)
                assert key in attempted and key not in batches, key
                batches[key] = rec.event
        assert set(acked) <= set(batches)
        for key, events in acked.items():
            batch = batches[key]
            assert batch.key_array().tolist() == pseudonyms.keys([e["user_id"] for e in events]).tolist()
            assert batch.day_array().tolist() == [day(e["day"]) for e in events]
            assert batch.op_array().tolist() == [1 if e["op"] == "+" else 0 for e in events]

        # -- the shards' exact counts at a fresh cut == a brute-force count of the journal --
        cut_seq, exact = anyio.run(count_at_a_cut, pg_url, shards)
        model = Model()
        for rec in records:
            if rec.seq > cut_seq:
                break
            if isinstance(rec.event, ev.ActivityBatchRecorded):
                for k, d, o in zip(rec.event.key_array(), rec.event.day_array(), rec.event.op_array()):
                    model.apply(int(k), int(d), int(o))
            elif isinstance(rec.event, ev.UserErased) and rec.event.key is not None:
                model.erase(rec.event.key)
        assert exact["days"] == [model.dau(day(d)) for d in DAYS]
        assert exact["window"] == model.mau(day(DAYS[-1]), 30)
        assert sum(exact["days"]) > 0
        events = sum(len(e) for e in acked.values())
        print(
            f"\nsharded deployment: {len(acked)} batches ({events} events) acknowledged, "
            f"{kills['worker']} workers and {kills['shard']} shards killed -9, {len(first_answers)} releases unchanged, "
            f"exact DAU at the final cut {exact['days']}, MAU {exact['window']}"
        )
    finally:
        for s in [gateway, *shards]:
            s.stop()
        for s in [gateway, *shards]:
            if s.proc is not None and s.proc.poll() is None:
                s.proc.kill()


async def read_journal(url: str) -> list[ev.StoredRecord]:
    journal = await PostgresJournal.open(url, exclusive=False)
    try:
        out = []
        async for records in journal.read(0):
            out.extend(records)
        return out
    finally:
        await journal.close()


async def count_at_a_cut(url: str, shards: list[ServerProcess]) -> tuple[int, dict]:
    """Journal a cut (as a coordinator would) and ask each shard for its exact share, on the route
    only the deployment's own processes can open."""
    import hashlib
    import hmac

    key = hmac.digest(SECRET.encode(), INTERNAL_LABEL, hashlib.sha256).hex()
    journal = await PostgresJournal.open(url, exclusive=False, shared=True)
    try:
        cuts = [
            ev.CutMarked(cut_id=os.urandom(8).hex(), first_day=day(d), last_day=day(d), marked_at=0.0) for d in DAYS
        ]
        window = ev.CutMarked(
            cut_id=os.urandom(8).hex(), first_day=day(DAYS[-1]) - 29, last_day=day(DAYS[-1]), marked_at=0.0
        )
        stored = await journal.append([*cuts, window])
    finally:
        await journal.close()
    last = stored[-1].seq

    def share(cut: ev.StoredRecord) -> int:
        assert isinstance(cut.event, ev.CutMarked)
        total = 0
        for s in shards:
            status, body, _ = s.http.request(
                "POST", "/internal/cut", {"cut_id": cut.event.cut_id, "seq": cut.seq}, headers={HEADER: key}, timeout=60
            )
            assert status == 200, body
            total += body["count"]
        return total

    days = [share(rec) for rec in stored[:-1]]
    # The cuts are consecutive records with nothing between them: one position for all of them.
    assert [r.seq for r in stored] == list(range(stored[0].seq, last + 1))
    no_key = shards[0].http.request("POST", "/internal/cut", {"cut_id": "x", "seq": last}, timeout=10)
    assert no_key[0] == 404  # not without the deployment's key, API key or not
    unknown = shards[0].http.request(
        "POST", "/internal/cut", {"cut_id": "never-marked", "seq": last}, headers={HEADER: key}, timeout=60
    )
    assert unknown[0] == 409 and unknown[1]["error"] == "cut_unavailable"  # refused, never guessed
    return stored[0].seq - 1, {"days": days, "window": share(stored[-1])}


def test_an_unreachable_shard_is_named_by_its_index_never_by_its_address(tmp_path, pg_url):
    """cuts rule 6: shard 1 is up and registered, but advertises an address where nothing listens
    (so every release attempt meets a refused connection, however long the test takes). A reader
    gets 503 shards_unavailable with Retry-After naming shard 1 of 2, and nothing of the
    deployment's internal addresses; the gateway's log names the address."""
    data = tmp_path / "data"
    env = {"JOURNAL_URL": pg_url, "HASH_SALT_SECRET": SECRET}
    dead = free_port()  # nothing listens here
    healthy = ServerProcess(data, env, args=["--shard", "0/2"])
    unreachable = ServerProcess(data, env, args=["--shard", "1/2", "--advertise", f"http://127.0.0.1:{dead}"])
    gateway = ServerProcess(data, env, args=["--shards", "2"])
    try:
        for process in (healthy, unreachable, gateway):
            process.start()
        events = [{"user_id": f"u{i}", "op": "+", "day": DAYS[0]} for i in range(30)]
        assert gateway.http.post("/event", {"events": events})[0] == 200
        status, body, headers = gateway.http.get(f"/dau/{DAYS[0]}", timeout=90)
        assert status == 503 and body["error"] == "shards_unavailable", body
        assert int(headers["Retry-After"]) > 0
        assert "shard 1 of 2 unreachable" in body["detail"], body
        text = json.dumps(body) + json.dumps(headers)
        assert "127.0.0.1" not in text and "http" not in body["detail"], text
        for port in (dead, healthy.port, unreachable.port, gateway.port):
            assert str(port) not in text, (port, text)
        logged = [line for line in gateway.log().splitlines() if "shard_unreachable" in line]
        assert logged and f"127.0.0.1:{dead}" in logged[0] and "shard=1" in logged[0], gateway.log()
    finally:
        for process in (gateway, unreachable, healthy):
            process.stop()


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--workers", "2"], "--workers 2 needs a journal several processes can share"),
        (["--shard", "0/2"], "--shard needs a journal several processes can share"),
    ],
)
def test_sqlite_refuses_several_processes_with_one_line_and_exit_2(tmp_path, flags, says):
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", "1", *flags],
        cwd=ROOT,
        env={**os.environ, "DATA_DIR": str(tmp_path / "data"), "JOURNAL_URL": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "JOURNAL_URL=postgresql://" in lines[0]


def test_counters_with_shards_are_refused_with_one_line_and_exit_2(tmp_path, pg_url):
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", "1", "--shards", "2"],
        cwd=ROOT,
        env={**os.environ, "DATA_DIR": str(tmp_path / "data"), "JOURNAL_URL": pg_url, "MAU_MECHANISM": "sqrt"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "MAU_MECHANISM=sqrt with shards" in lines[0]


@pytest.mark.parametrize(
    "flags, env, says",
    [
        (["--shard", "0/2", "--workers", "2"], {}, "--shard with --workers: a shard is one process"),
        (["--shards", "2"], {"SKETCH_IMPL": "theta"}, "SKETCH_IMPL=theta with shards"),
        (["--shard", "2/2"], {}, "expected I/N with 0 <= I < N"),
    ],
)
def test_impossible_shard_layouts_are_refused_with_one_line_and_exit_2(tmp_path, pg_url, flags, env, says):
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", "1", *flags],
        cwd=ROOT,
        env={**os.environ, "DATA_DIR": str(tmp_path / "data"), "JOURNAL_URL": pg_url, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr


def test_more_shards_than_the_journal_has_partitions_is_refused_with_one_line_and_exit_2(tmp_path, pg_url):
    """Known only once the journal is open (its partition count is fixed when the schema is created,
    ``?partitions=``) -- and still refused before anything is served: one line, exit 2, and never a
    ``listening`` (nor a ``boot_failed``) that would tell an operator the shard was up. The key is
    set so that the open-access banner, printed on every keyless start, is not in the way."""
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--shard", "0/4"],
        cwd=ROOT,
        env={
            **os.environ,
            "DATA_DIR": str(tmp_path / "data"),
            "JOURNAL_URL": pg_url + "?partitions=2",
            "API_KEY": "k" * 32,
            "LOG_LEVEL": "info",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "listening" not in proc.stderr and "boot_failed" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("configuration error: --shard 0/4: the journal has 2 partitions, so at most 2 shards")
