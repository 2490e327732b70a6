"""Test helpers: a real server process, in-process systems, a brute-force model of the counts."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import numpy as np

from actors.settings import EngineSettings
from actors.state import periods
from actors.state.world import WorldSnapshot
from actors.system import ActorSystem
from journal import location
from journal.location import JournalSpec

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def day(text: str) -> int:
    return periods.parse_day(text)


def clear_of_utc_midnight(minutes: float) -> dt.date:
    """Today (UTC), at least ``minutes`` before the next UTC midnight: a test that counts the days a
    real ``daily`` server has closed calls this first, so the day cannot roll over (and the schedule
    publish one more day) while it runs. Within ``minutes`` of midnight it waits until just after it
    (at most ``minutes``), and says so on stderr."""
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    left = (midnight - now).total_seconds()
    if left < minutes * 60:
        print(f"waiting {left:.0f} s for UTC midnight to pass before counting closed days", file=sys.stderr)
        time.sleep(left + 2)
    return dt.datetime.now(dt.UTC).date()


class Http:
    """Tiny synchronous JSON client (stdlib only, so it cannot share bugs with the server)."""

    def __init__(self, base: str, api_key: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.api_key = api_key

    def request(
        self,
        method: str,
        path: str,
        body: object | None = None,
        headers: dict | None = None,
        raw: bytes | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict, dict]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if self.api_key:
            hdrs.setdefault("X-API-Key", self.api_key)
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read()
                return resp.status, _json(text), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read()), dict(exc.headers)

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post(self, path: str, body: object | None = None, **kw):
        return self.request("POST", path, body, **kw)


def _json(data: bytes):
    try:
        return json.loads(data) if data else {}
    except ValueError:
        return {"_text": data.decode(errors="replace")}


class ServerProcess:
    """``dpdau serve`` as a child process on 127.0.0.1 with its own DATA_DIR and log file."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None, args: list[str] | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.args = list(args or [])  # more `dpdau serve` flags (--workers, --shard, ...)
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "DATA_DIR": str(self.data_dir),
            "PURGE_DELAY_SECONDS": "300",
            "LOG_LEVEL": "info",
            # Tests publish on request unless they test the schedule (which they then set): a
            # scheduled release at midnight would otherwise change what a test counts.
            "RELEASE_SCHEDULE": "on-demand",
            **(env or {}),
        }
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        key = next(
            (self.env[k] for k in ("API_KEY", "ADMIN_API_KEY", "READ_API_KEY", "INGEST_API_KEY") if self.env.get(k)),
            None,
        )
        self.http = Http(f"http://127.0.0.1:{self.port}", key)  # /readyz answers any valid key

    def start(self, wait_ready: bool = True, timeout: float = 60) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        path = "/readyz" if wait_ready else "/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _, _ = self.http.get(path, timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not {'ready' if wait_ready else 'alive'}:\n{self.log()}")

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        return self.kill(signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class FakeClock:
    """The system's one clock (``ActorSystem(clock=...)``, ``create_app(clock=...)``), moved by a test."""

    def __init__(self, text: str) -> None:
        self.now = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def set(self, text: str) -> None:
        self.now = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def settings(**overrides) -> EngineSettings:
    base = {
        "purge_delay_seconds": 3600,
        "snapshot_every_seconds": 3600,
        "release_schedule": "on-demand",  # see ServerProcess
    }
    base.update(overrides)
    return EngineSettings(**base)


async def crash_image(system: ActorSystem, dst: Path, *, position: list[int] | None = None) -> JournalSpec:
    """The deployment as a ``kill -9`` at this instant leaves it: the data directory copied inside
    an exclusive committer job, so no journal write (the indexer's included) is half-done while
    copying -- and, on PostgreSQL, the journal's database copied into a fresh one in the same job.
    Returns where the image's journal lives."""
    url: list[str] = []

    def copy_file(src: str, target: str) -> None:
        # The snapshotter prunes old snapshot files outside the committer's jobs: one listed by
        # copytree may be gone when it is copied. A crash at this instant leaves it either way
        # (a restore checks every snapshot file), so a vanished file is left out.
        try:
            shutil.copy2(src, target)
        except FileNotFoundError:
            if Path(src).exists():
                raise

    def copy_files() -> None:
        if system.data_dir.exists():
            shutil.copytree(system.data_dir, dst, ignore=shutil.ignore_patterns(".lock*"), copy_function=copy_file)
        else:  # a PostgreSQL journal and nothing written to DATA_DIR yet
            dst.mkdir(parents=True)

    async def copy(journal: object) -> list:
        if position is not None:
            position.append(system.committer.dispatched_seq)
        await anyio.to_thread.run_sync(copy_files)
        if system.spec.kind == "postgresql":
            from tests import pg

            url.append(await pg.clone_database(system.spec.url))
        return []

    await system.committer.run_job(copy)
    if url:
        return location.parse(url[0], dst)
    return sqlite_spec(dst)


async def crash_image_and_state(system: ActorSystem, dst: Path) -> tuple[JournalSpec, WorldSnapshot]:
    """A crash image and the live state at exactly its position. Background writers (the
    scheduler, a shredding) may commit between the copy and the capture; then try again."""
    for attempt in range(50):
        at: list[int] = []
        image = await crash_image(system, dst.with_name(f"{dst.name}-{attempt}"), position=at)
        live = await system.collect()
        if live.days_seq == at[0]:
            return image, live
    raise AssertionError("the journal never held still long enough for a crash image")


def sqlite_spec(data_dir: Path) -> JournalSpec:
    """The embedded journal under ``data_dir``, relaxed fsync (tests), quick indexing."""
    return location.parse(None, data_dir, sqlite_synchronous="NORMAL", index_idle_seconds=0.2)


@asynccontextmanager
async def running_system(data_dir: Path | JournalSpec, engine: EngineSettings | None = None, **kw):
    spec = data_dir if isinstance(data_dir, JournalSpec) else sqlite_spec(data_dir)
    system = ActorSystem(engine or settings(), spec, **kw)
    async with system.running():
        await system.wait_ready()
        yield system


async def ingest(system: ActorSystem, rows: list[tuple[int, int, int]], idem: str | None = None):
    """rows = [(key, day, op)] in order; op 1 = '+', 0 = '-'."""
    keys = np.array([r[0] for r in rows], dtype=np.int64)
    days = np.array([r[1] for r in rows], dtype=np.int32)
    ops = np.array([r[2] for r in rows], dtype=np.uint8)
    return await system.ingest(keys, days, ops, [], idem)


class Model:
    """Brute-force reference: per (user, day) a boolean, journal order decides, erasure clears all."""

    def __init__(self) -> None:
        self.active: set[tuple[int, int]] = set()

    def apply(self, key: int, day_: int, op: int) -> None:
        if op:
            self.active.add((key, day_))
        else:
            self.active.discard((key, day_))

    def erase(self, key: int) -> None:
        self.active = {(k, d) for k, d in self.active if k != key}

    def dau(self, day_: int) -> int:
        return sum(1 for _, d in self.active if d == day_)

    def mau(self, end: int, window: int) -> int:
        return len({k for k, d in self.active if end - window < d <= end})

    def counts(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for _, d in self.active:
            out[d] = out.get(d, 0) + 1
        return dict(sorted(out.items()))
