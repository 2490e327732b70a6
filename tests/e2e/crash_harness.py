"""Crash cycles against the real server: concurrent ingest + releases + erasures, ``kill -9``,
restart, verify. Used by ``tests/e2e/test_crash_cycles.py``; runnable on its own for figures:

    .venv/bin/python -m tests.e2e.crash_harness --cycles 24 [--seed N] [--data DIR]

Each cycle starts ``dpdau serve`` (durable journal, purges after 1 s, a snapshot every few
thousand events), drives it from several threads, and kills it: at a random moment, or -- through
``DPDAU_FAULTS`` (``journal/faults.py``) -- at a named moment that matters: a snapshot's temp file
written but not renamed, a snapshot in place but older ones not deleted, a purge inside its
transaction, committed but not VACUUMed, VACUUMed but not recorded, committed and dispatched but
snapshots not replaced. Then, on what the kill left on disk and on the restarted server:

- every acknowledged batch is in the journal exactly once (by its Idempotency-Key), with the
  events the client sent (minus erased users once purged); unacknowledged batches retried with
  their key are applied at most once;
- newest valid snapshot + tail == full replay, and full replay == a brute-force model of the
  journal (exact per-(user, day) booleans, erasures clear a user);
- every release answered before is answered again, byte for byte;
- the budget the server reports == the composition of the charges in the journal (count and
  epsilon);
- every acknowledged erasure has a receipt, and once it says ``purged`` no file in DATA_DIR holds
  the user's pseudonym.

A violation raises ``AssertionError`` naming the cycle and the seed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import signal
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from actors.privacy import accounting
from actors.privacy.accounting import Charge
from actors.state import periods
from actors.system import restore_world
from gateway import config as config_mod
from gateway.identity import Pseudonymizer, base_secret
from journal import events as ev
from journal import location
from journal.snapshots import SnapshotStore
from journal.store import Journal
from tests.support import ServerProcess


def journal_path(data: Path) -> Path:
    """The embedded journal's file in ``data`` (the harness runs the SQLite default)."""
    path = location.parse(None, data).sqlite_path
    assert path is not None
    return path


def snapshot_store(data: Path) -> SnapshotStore:
    return location.parse(None, data).snapshot_store()


# Kill modes: None = a random moment; otherwise the fault point the server kills itself at.
FAULT_POINTS = [
    "snapshot.before_rename",
    "snapshot.after_save",
    "journal.rewrite_commit",
    "journal.after_rewrite_commit",
    "journal.after_rebuild",
    "purge.before_snapshots",
]
FIRST_DAY = periods.parse_day("2025-01-01")
DAYS = 31  # January 2025: one accounting period (each new charge set is composed once per check)
USERS = 3000
SERVER_ENV = {
    "PURGE_DELAY_SECONDS": "1",
    "SNAPSHOT_EVERY_EVENTS": "4000",
    "SNAPSHOT_EVERY_SECONDS": "1",
    "INDEX_IDLE_SECONDS": "0.3",
    "INDEX_EVERY_EVENTS": "20000",
    "JOURNAL_SYNC": "FULL",
    "LOG_LEVEL": "warning",
}


@dataclass
class Figures:
    cycles: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    died_during_boot: int = 0
    requests: int = 0
    acknowledged_batches: int = 0
    acknowledged_events: int = 0
    refused_503: int = 0
    unacknowledged_retried: int = 0
    retries_found_committed: int = 0
    releases_answered: int = 0
    releases_rechecked: int = 0
    erasures_acknowledged: int = 0
    purges_journaled: int = 0
    purged_receipts_checked: int = 0
    restores_from_snapshot: int = 0
    restores_by_full_replay: int = 0
    snapshots_skipped: int = 0  # files a restore checked and refused (journal/snapshots.py rule 2)
    max_restart_seconds: float = 0.0
    journal_events: int = 0
    seconds: float = 0.0
    phase_seconds: Counter[str] = field(default_factory=Counter)

    def lines(self) -> list[str]:
        kills = ", ".join(f"{k}: {n}" for k, n in sorted(self.kills.items()))
        return [
            f"crash cycles: {self.cycles} (kill -9 at: {kills}; {self.died_during_boot} during boot recovery)",
            f"requests: {self.requests}; acknowledged batches {self.acknowledged_batches} "
            f"({self.acknowledged_events} events), 503 refusals {self.refused_503}",
            f"in flight at a kill, retried with their key: {self.unacknowledged_retried} "
            f"({self.retries_found_committed} had been committed: answered as replays, not applied twice)",
            f"releases answered {self.releases_answered}, re-read unchanged after restarts {self.releases_rechecked}",
            f"erasures acknowledged {self.erasures_acknowledged}, purges journaled {self.purges_journaled}, "
            f"purged receipts checked against every file {self.purged_receipts_checked}",
            f"restores checked: {self.restores_from_snapshot} from a snapshot + tail, "
            f"{self.restores_by_full_replay} by full replay (no valid snapshot), all equal to full replay; "
            f"snapshot files refused on the way: {self.snapshots_skipped}",
            f"journal at the end: {self.journal_events} events; slowest restart to ready "
            f"{self.max_restart_seconds:.2f} s; whole run {self.seconds:.1f} s "
            f"({', '.join(f'{k} {v:.1f} s' for k, v in self.phase_seconds.items())})",
            "violations: 0",
        ]


class Client:
    """One keep-alive HTTP connection (stdlib, so it shares no code with the server)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: object | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict, dict]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = None if body is None else json.dumps(body).encode()
        try:
            self.conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        return resp.status, json.loads(raw) if raw else {}, dict(resp.getheaders())

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Ledger:
    """What the clients were told, across every cycle."""

    batches: dict[str, list[tuple[str, int, str]]] = field(default_factory=dict)  # key -> events sent
    acked: set[str] = field(default_factory=set)
    in_flight: set[str] = field(default_factory=set)  # sent, no answer (the server died)
    releases: dict[str, dict] = field(default_factory=dict)  # path -> first answer
    erasures: dict[str, str] = field(default_factory=dict)  # erasure id -> user id
    erased_users: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Cycle:
    def __init__(self, harness: Harness, n: int, mode: str | None) -> None:
        self.h, self.n, self.mode = harness, n, mode
        self.rng = random.Random(harness.seed * 1000 + n)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def thread(self, target: object, *args: object) -> threading.Thread:
        """A worker whose failure fails the cycle (an exception in a thread is otherwise lost)."""

        def run() -> None:
            try:
                target(*args)  # type: ignore[operator]
            except BaseException as exc:
                self.errors.append(exc)
                self.stop.set()

        return threading.Thread(target=run)

    # -- the workload ---------------------------------------------------------------------------

    def ingest_worker(self, w: int) -> None:
        client, rng, seq = Client(self.h.server.port), random.Random(self.rng.random()), 0
        while not self.stop.wait(0.005):  # concurrency is the point, not volume
            seq += 1
            key = f"c{self.n}-w{w}-{seq}"
            events = [
                (f"u{rng.randrange(USERS)}", FIRST_DAY + rng.randrange(DAYS), "+" if rng.random() < 0.85 else "-")
                for _ in range(rng.randint(10, 150))
            ]
            self.send_batch(client, key, events)
        client.close()

    def send_batch(self, client: Client, key: str, events: list[tuple[str, int, str]]) -> int | None:
        led = self.h.ledger
        with led.lock:
            led.batches[key] = events
            led.in_flight.add(key)
        body = {"events": [{"user_id": u, "op": op, "day": periods.iso(d)} for u, d, op in events]}
        try:
            status, _, headers = client.request("POST", "/event", body, {"Idempotency-Key": key})
        except (OSError, http.client.HTTPException):
            self.stop.set()  # the server is gone; the batch stays in flight (retried after restart)
            return None
        self.h.figures.requests += 1
        with led.lock:
            if status == 200:
                led.in_flight.discard(key)
                if key not in led.acked:
                    led.acked.add(key)
                    self.h.figures.acknowledged_batches += 1
                    self.h.figures.acknowledged_events += len(events)
            elif status == 503:
                led.in_flight.discard(key)
                led.batches.pop(key, None)  # refused: nothing stored, nothing owed
                self.h.figures.refused_503 += 1
                assert "Retry-After" in headers, "503 without Retry-After"
            else:
                raise AssertionError(f"cycle {self.n}: POST /event answered {status}")
        return status

    def release_worker(self) -> None:
        client, rng = Client(self.h.server.port), random.Random(self.rng.random())
        while not self.stop.wait(0.02):
            d = FIRST_DAY + rng.randrange(DAYS)
            path = f"/dau/{periods.iso(d)}" if rng.random() < 0.6 else f"/mau?end={periods.iso(d)}&window=7"
            try:
                status, body, _ = client.request("GET", path)
            except (OSError, http.client.HTTPException):
                break
            self.h.figures.requests += 1
            if status == 200:
                with self.h.ledger.lock:
                    first = self.h.ledger.releases.setdefault(path, body)
                    if first is body:
                        self.h.figures.releases_answered += 1
                assert first == body, f"cycle {self.n}: {path} answered differently: {first} vs {body}"
            elif status not in (429, 503):
                raise AssertionError(f"cycle {self.n}: GET {path} answered {status}: {body}")
        client.close()

    def erasure_worker(self, users: list[str]) -> None:
        client = Client(self.h.server.port)
        for user in users:
            if self.stop.wait(0.05):
                break
            try:
                status, body, _ = client.request("POST", "/erasure", {"user_id": user})
            except (OSError, http.client.HTTPException):
                break
            self.h.figures.requests += 1
            if status == 202:
                with self.h.ledger.lock:
                    self.h.ledger.erasures[body["erasure_id"]] = user
                    self.h.figures.erasures_acknowledged += 1
            elif status != 503:
                raise AssertionError(f"cycle {self.n}: POST /erasure answered {status}: {body}")
        client.close()

    # -- one cycle --------------------------------------------------------------------------------

    def run(self) -> None:
        h = self.h
        env = dict(SERVER_ENV)
        if self.mode is not None:
            # A snapshot point may fire once while boot finishes a previous crash's recovery; the
            # second hit is then during the workload (both are moments a kill must survive).
            env["DPDAU_FAULTS"] = f"{self.mode}=kill@2" if self.mode.startswith("snapshot.") else f"{self.mode}=kill"
        h.server = ServerProcess(h.data, env, port=h.port)
        started = time.monotonic()
        try:
            h.server.start()
        except RuntimeError:  # killed itself at the fault point while finishing recovery at boot
            h.figures.died_during_boot += 1
            h.figures.kills[f"{self.mode} (boot)"] += 1
            return
        h.figures.max_restart_seconds = max(h.figures.max_restart_seconds, time.monotonic() - started)
        h.figures.phase_seconds["start"] += time.monotonic() - started
        t0 = time.monotonic()
        try:
            self.after_restart()
        except (OSError, http.client.HTTPException):
            # A fault point can fire right after ready (the snapshot loop, a due purge).
            if self.mode is None or h.server.proc is None or h.server.proc.wait(30) != -signal.SIGKILL:
                raise
            h.figures.kills[f"{self.mode} (right after restart)"] += 1
            return
        finally:
            h.figures.phase_seconds["after restart"] += time.monotonic() - t0
        # Users erased in this cycle get their activity first, acknowledged, and none after.
        doomed = [f"e{self.n}-{i}" for i in range(6)]
        setup = Client(h.server.port)
        events = [(u, FIRST_DAY + self.rng.randrange(DAYS), "+") for u in doomed for _ in range(3)]
        if self.send_batch(setup, f"c{self.n}-doomed", events) != 200:
            raise AssertionError(f"cycle {self.n}: could not seed the users to erase")
        setup.close()
        h.ledger.erased_users.update(doomed)
        threads = [self.thread(self.ingest_worker, w) for w in range(3)]
        threads += [self.thread(self.release_worker), self.thread(self.erasure_worker, doomed)]
        for t in threads:
            t.start()
        if self.mode is None:
            time.sleep(self.rng.uniform(0.3, 2.5))
            h.server.kill(signal.SIGKILL)
            h.figures.kills["random moment"] += 1
        else:
            try:
                code = h.server.proc.wait(timeout=45) if h.server.proc else None
            except Exception as exc:
                self.stop.set()
                h.server.kill(signal.SIGKILL)
                raise AssertionError(f"cycle {self.n}: fault point {self.mode} was never reached") from exc
            assert code == -signal.SIGKILL, f"cycle {self.n}: server exited {code}, not killed at {self.mode}"
            h.figures.kills[self.mode] += 1
        self.stop.set()
        for t in threads:
            t.join(60)
        if self.errors:
            raise AssertionError(f"cycle {self.n} (seed {h.seed}): a client saw {self.errors[0]!r}") from self.errors[0]

    def after_restart(self) -> None:
        """Checks that need the restarted server."""
        h, led = self.h, self.h.ledger
        client = Client(h.server.port)
        for key in sorted(led.in_flight):  # the client retries what it never got an answer for
            h.figures.unacknowledged_retried += 1
            status, _, headers = client.request("POST", "/event", _body(led.batches[key]), {"Idempotency-Key": key})
            assert status == 200, f"cycle {self.n}: retry of {key} answered {status}"
            if headers.get("Idempotent-Replayed") == "true":
                h.figures.retries_found_committed += 1
            led.in_flight.discard(key)
            led.acked.add(key)
        for path, first in led.releases.items():
            status, body, _ = client.request("GET", path)
            assert (status, body) == (200, first), f"cycle {self.n}: {path} changed after restart: {body} vs {first}"
            h.figures.releases_rechecked += 1
        for attempt in range(5):  # a release committed between the two reads: read both again
            status, budget, _ = client.request("GET", "/budget")
            assert status == 200
            try:
                self.check_budget(budget, read_charges(h.data))
                break
            except AssertionError:
                if attempt == 4:
                    raise
        purged = []
        for erasure_id, user in led.erasures.items():
            status, receipt, _ = client.request("GET", f"/erasure/{erasure_id}")
            assert status == 200 and receipt["status"] in ("applied", "purged"), f"cycle {self.n}: {receipt}"
            if receipt["status"] == "purged":
                purged.append(user)
        self.check_gone(purged)
        client.close()

    def check_budget(self, budget: dict, journaled: list[ev.BudgetCharged]) -> None:
        charges: dict[tuple[str, str], list[Charge]] = {}
        for c in journaled:  # a charge counts in every period whose days its release reads
            for period in c.periods if c.periods_complete else [c.accounting_period]:
                charges.setdefault((c.metric, period), []).append(Charge(c.mechanism, c.parameter, c.sensitivity))
        reported = {
            (metric, p["accounting_period"]): m for p in budget["periods"] for metric, m in p["metrics"].items()
        }
        for (metric, period), cs in charges.items():
            got = reported.get((metric, period))
            assert got is not None, f"cycle {self.n}: /budget lacks {metric} {period}"
            assert got["charges"] == len(cs), f"cycle {self.n}: {metric} {period}: {got['charges']} != {len(cs)}"
            memo = self.h.composed
            if (metric, period, len(cs)) not in memo:  # charges only ever grow: the count names the set
                memo[(metric, period, len(cs))] = accounting.compose_epsilon(cs, got["delta"])
            want = memo[(metric, period, len(cs))]
            assert abs(got["epsilon_spent"] - want) <= 1e-9 * max(1.0, want), f"{metric} {period}: {got} vs {want}"
        for (metric, period), got in reported.items():
            assert got["charges"] == len(charges.get((metric, period), [])), f"{metric} {period} charged {got}"

    def check_gone(self, users: list[str]) -> None:
        """No file in DATA_DIR holds the pseudonym of a user whose receipt says ``purged``."""
        users = [u for u in users if u not in self.h.checked_gone]
        if not users:
            return
        self.h.checked_gone.update(users)
        blobs = {p.name: p.read_bytes() for p in self.h.data.rglob("*") if p.is_file()}
        for user in users:
            needle = int(self.h.pseudonyms.key(user)).to_bytes(8, "little", signed=True)
            holders = [name for name, blob in blobs.items() if needle in blob]
            assert not holders, f"cycle {self.n}: purged user {user} still in {holders}"
        self.h.figures.purged_receipts_checked += len(users)


def read_charges(data: Path) -> list[ev.BudgetCharged]:
    """Every ``BudgetCharged`` in the journal, read through a read-only connection (the server
    holds the writer)."""
    db = sqlite3.connect(f"file:{journal_path(data)}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT kind, version, payload FROM journal WHERE kind = ? ORDER BY seq", (ev.BudgetCharged.KIND,)
        ).fetchall()
    finally:
        db.close()
    return [e for e in (ev.decode(*row) for row in rows) if isinstance(e, ev.BudgetCharged)]


def _body(events: list[tuple[str, int, str]]) -> dict:
    return {"events": [{"user_id": u, "op": op, "day": periods.iso(d)} for u, d, op in events]}


class Harness:
    def __init__(self, data: Path, cycles: int, seed: int) -> None:
        self.data, self.cycles, self.seed = data, cycles, seed
        self.port = 0
        self.ledger = Ledger()
        self.figures = Figures()
        self.composed: dict[tuple[str, str, int], float] = {}
        self.checked_gone: set[str] = set()
        self.server: ServerProcess
        self._pseudonyms: Pseudonymizer | None = None

    @property
    def pseudonyms(self) -> Pseudonymizer:
        if self._pseudonyms is None:
            self._pseudonyms = Pseudonymizer(base_secret(self.data, None, False))
        return self._pseudonyms

    def modes(self) -> list[str | None]:
        """Every fault point at least twice when there are cycles enough; random moments otherwise."""
        points = FAULT_POINTS * 2 if self.cycles >= 2 * len(FAULT_POINTS) + 4 else FAULT_POINTS
        modes: list[str | None] = [*points[: self.cycles]]
        modes += [None] * (self.cycles - len(modes))
        random.Random(self.seed).shuffle(modes)
        return modes

    def run(self) -> Figures:
        from tests.support import free_port

        started = time.monotonic()
        self.port = free_port()
        for n, mode in enumerate(self.modes()):
            t0 = time.monotonic()
            Cycle(self, n, mode).run()
            t1 = time.monotonic()
            self.figures.cycles += 1
            anyio.run(self.verify_on_disk, n)
            self.figures.phase_seconds["serve+kill"] += t1 - t0
            self.figures.phase_seconds["verify on disk"] += time.monotonic() - t1
        # A last start: everything settles (outstanding purges run) and is checked once more.
        last = Cycle(self, self.cycles, None)
        self.server = ServerProcess(self.data, SERVER_ENV, port=self.port)
        with self.server:
            last.after_restart()
            self.wait_all_purged(last)
            self.server.kill(signal.SIGTERM)
        anyio.run(self.verify_on_disk, self.cycles)
        self.figures.seconds = time.monotonic() - started
        return self.figures

    def wait_all_purged(self, cycle: Cycle) -> None:
        client = Client(self.server.port)
        deadline = time.monotonic() + 60
        for erasure_id in self.ledger.erasures:
            while True:
                _, receipt, _ = client.request("GET", f"/erasure/{erasure_id}")
                if receipt["status"] == "purged":
                    break
                assert time.monotonic() < deadline, f"erasure {erasure_id} never purged: {receipt}"
                time.sleep(0.1)
        self.checked_gone.clear()  # the final check covers every erased user again
        cycle.check_gone(list(self.ledger.erasures.values()))
        client.close()

    async def verify_on_disk(self, n: int) -> None:
        """On what the kill left on disk: snapshot + tail == replay == model; batches exactly once."""
        engine = config_mod.load(environ=SERVER_ENV, dotenv=None).engine
        journal = await Journal.open(journal_path(self.data))
        try:
            full, _ = await restore_world(journal, None, engine, use_snapshot=False)
            store = snapshot_store(self.data)
            restored, from_seq = await restore_world(journal, store, engine)
            self.figures.snapshots_skipped += store.rejected  # corrupt, torn, stale (purge/rotation after it)
            if from_seq is None:
                self.figures.restores_by_full_replay += 1
            else:
                self.figures.restores_from_snapshot += 1
            assert _state(restored) == _state(full), f"cycle {n} (seed {self.seed}): snapshot + tail != full replay"
            model: dict[int, set[int]] = {}
            seen: Counter[str] = Counter()
            purges = 0
            async for records in journal.read(0):
                for rec in records:
                    e = rec.event
                    if isinstance(e, ev.ActivityBatchRecorded):
                        for k, d, op in zip(e.key_array().tolist(), e.day_array().tolist(), e.op_array().tolist()):
                            (model.setdefault(d, set()).add if op else model.setdefault(d, set()).discard)(k)
                        if e.idempotency_key is not None:  # "<calling key>:<Idempotency-Key>"
                            seen[e.idempotency_key.split(":", 1)[1]] += 1
                            self.check_batch(n, e)
                    elif isinstance(e, ev.UserErased) and e.key is not None:
                        for members in model.values():
                            members.discard(e.key)
                    elif isinstance(e, ev.ErasurePurged):
                        purges += 1
            assert full.counts() == {d: len(m) for d, m in sorted(model.items()) if m}, f"cycle {n}: replay != model"
            twice = [k for k, c in seen.items() if c > 1]
            assert not twice, f"cycle {n}: batches applied twice: {twice[:5]}"
            lost = sorted(self.ledger.acked - set(seen))
            assert not lost, f"cycle {n}: acknowledged batches missing from the journal: {lost[:5]}"
            self.figures.purges_journaled = purges
            self.figures.journal_events = journal.head
        finally:
            await journal.close()

    def check_batch(self, n: int, e: ev.ActivityBatchRecorded) -> None:
        """The journaled batch is what the client sent, except that a purge may have removed the
        events of erased users (and nothing else)."""
        sent = self.ledger.batches.get((e.idempotency_key or ":").split(":", 1)[1])
        assert sent is not None, f"cycle {n}: the journal holds a batch no client sent: {e.idempotency_key}"
        want = [(int(self.pseudonyms.key(u)), d, 1 if op == "+" else 0) for u, d, op in sent]
        got = list(zip(e.key_array().tolist(), e.day_array().tolist(), e.op_array().tolist()))
        if got != want:
            erased = {int(self.pseudonyms.key(u)) for u in self.ledger.erased_users}
            removed = {k for k, _, _ in want} - {k for k, _, _ in got}
            assert removed <= erased, f"cycle {n}: batch {e.idempotency_key} lost events of users never erased"
            assert got == [w for w in want if w[0] not in removed], f"cycle {n}: batch {e.idempotency_key} differs"


def _state(world: object) -> dict:
    from actors.state.world import World

    assert isinstance(world, World)
    snap = world.snapshot()
    return {
        "days": {d.day: d.members for d in snap.days if len(d.members)},
        "ingest": sorted((k, a, b) for k, _, a, b, _ in snap.ingest.entries),
        "releases": [r.release_id for r in snap.releases.releases],
        "ledger": [c.charge_id for c in snap.ledger.charges],
        "erasures": sorted((e.erasure_id, e.key, e.purged_at) for e in snap.erasures.entries),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=24)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "data"
        print(f"seed {args.seed}, DATA_DIR {data}")
        figures = Harness(data, args.cycles, args.seed).run()
        print("\n".join(figures.lines()))


if __name__ == "__main__":
    main()
