"""Benchmarks of the several-process deployments (issue 9), with baselines measured in the same run.

    .venv/bin/python -m scripts.bench_cluster                      # full: 1M users/day x 30 days
    .venv/bin/python -m scripts.bench_cluster --mau-users 100000   # quicker

Starts a throwaway PostgreSQL 15 (``scripts/pgcluster.py``; or ``--pg-url``) and the real server
processes on 127.0.0.1, and prints one table (also written as JSON + markdown under
DATA_DIR/bench/cluster-latest.*):

- ingest: single events (1 event/request, 32 connections, ``wrk`` when installed) and batches
  (1,000 events/request, 8 connections, the keep-alive Python client) against SQLite (one
  process), PostgreSQL with 1 and 2 gateway workers (``--workers``), and 2 workers over 2 shards;
- MAU release time for ``--mau-users`` users/day, loaded straight into the journal (1M users/day ->
  ~46M events for 46 days), at 1, 2 and 4 shards (``--shards N`` gateway + N ``--shard``
  processes), one whole-state PostgreSQL process, and SQLite: each configuration publishes the
  30-day windows of consecutive days (the first after its start merges the whole window; the
  next ones slide it by a day, ``SlidingUnion``), days no other configuration published;
- baselines: an aiohttp server that only answers, as 1 and as 2 processes on one port
  (``SO_REUSEPORT``): the ceiling of any handler on this machine.

Every number here shares the machine with the load generator (``wrk`` takes a core's worth) and
with whatever else runs: the load average before and after is printed next to the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import pgcluster  # noqa: E402
from scripts.bench import WRK_SINGLE, make_batches, pct, wrk  # noqa: E402
from scripts.loadgen import request_bytes, run  # noqa: E402
from tests.support import ServerProcess, free_port  # noqa: E402

SECRET = "bench-cluster-secret-0123456789abcdef"
MAU_START = "2025-01-01"  # 30 closed days of data; the window ends on the 30th
MAU_END = "2025-01-30"
UNLIMITED = {"PERIOD_BUDGET_TOTAL": "1000000", "MAU_BUDGET_TOTAL": "1000000", "DAU_BUDGET_TOTAL": "1000000"}

BASELINE_APP = """
import sys, socket
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(body=b'{"ok":1}', content_type="application/json")
app = web.Application(client_max_size=16 * 1024 * 1024)
app.router.add_post("/event", ok)
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
web.run_app(app, sock=sock, access_log=None, print=None)
"""


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- baselines ---------------------------------------------------------------------------------


def baseline_servers(processes: int) -> tuple[list[subprocess.Popen], int]:
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", BASELINE_APP, str(port)], cwd=ROOT) for _ in range(processes)]
    import urllib.request

    for _ in range(400):
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/event", data=b"{}"), timeout=1)
            break
        except Exception:
            time.sleep(0.05)
    time.sleep(0.5)  # the last process to bind joins the port group
    return procs, port


def stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)


# -- ingest --------------------------------------------------------------------------------------


async def ingest_point(port: int, seconds: float, bodies: list[bytes]) -> dict:
    out: dict = {}
    w = wrk(port, "/event", seconds, 32, WRK_SINGLE.replace("DAY", "2025-09-15"))
    if w is not None:
        out.update(single_events_per_s=w["rps"], single_p50_ms=w["p50_ms"], single_p99_ms=w["p99_ms"])
        out["single_non2xx"] = w["non2xx"]
    reqs = [request_bytes("POST", "/event", b) for b in bodies]
    r = await run(port, lambda c, i: reqs[(c + 8 * i) % len(reqs)], connections=8, duration=seconds)
    ok = r.statuses.get(200, 0)
    out.update(
        batch_events_per_s=ok * 1000 / r.seconds,
        batch_p50_ms=pct(r.latencies, 0.5) * 1000,
        batch_p99_ms=pct(r.latencies, 0.99) * 1000,
        batch_non200=r.requests - ok,
    )
    return out


def start_servers(
    data: Path, env: dict[str, str], shards: int, workers: int
) -> tuple[ServerProcess, list[ServerProcess]]:
    shard_procs = [
        ServerProcess(data, env, args=["--shard", f"{i}/{shards}"]).start(timeout=3600) for i in range(shards)
    ]
    args = (["--workers", str(workers)] if workers > 1 else []) + (["--shards", str(shards)] if shards else [])
    gateway = ServerProcess(data, env, args=args).start(timeout=3600)
    return gateway, shard_procs


def stop_servers(*procs: ServerProcess) -> None:
    for p in procs:
        p.stop()
    for p in procs:
        p.__exit__()


async def ingest_phase(args: argparse.Namespace, workdir: Path, pg_admin: str) -> dict:
    bodies = make_batches(200, 1000, 2_000_000, [f"2025-09-{d:02d}" for d in range(1, 31)], args.seed)
    configs = [("sqlite, 1 process", None, 0, 1), ("postgresql, 1 worker", "pg", 0, 1)]
    configs += [("postgresql, 2 workers", "pg", 0, 2), ("postgresql, 2 workers + 2 shards", "pg", 2, 2)]
    out = {}
    for n, (label, backend, shards, workers) in enumerate(configs):
        env = {"LOG_LEVEL": "warning", "HASH_SALT_SECRET": SECRET, "SNAPSHOT_EVERY_EVENTS": str(10**9)}
        if backend == "pg":
            env["JOURNAL_URL"] = await new_database(pg_admin)
        print(f"ingest: {label} ...", flush=True)
        gateway, shard_procs = start_servers(workdir / f"ingest-{n}", env, shards, workers)
        try:
            out[label] = await ingest_point(gateway.port, args.seconds, bodies)
        finally:
            stop_servers(gateway, *shard_procs)
    return out


# -- MAU release time --------------------------------------------------------------------------


async def new_database(admin_url: str) -> str:
    from tests import pg

    return await pg.create_database(admin_url)


def population(users: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-(2**62), 2**62, size=2 * users, dtype=np.int64)


def day_keys(pop: np.ndarray, users: int, seed: int, day: int) -> np.ndarray:
    """Day ``day``'s ``users`` distinct users out of ``pop`` (2x as many: a window's union ~2x)."""
    return np.random.default_rng([seed, day]).choice(pop, size=users, replace=False)


async def load_journal(spec_url: str | None, data: Path, pop: np.ndarray, users: int, days: int, seed: int) -> float:
    from journal import events as ev
    from journal import location
    from journal.store import SqliteJournal

    spec = location.parse(spec_url, data, sqlite_synchronous="NORMAL")
    journal = await spec.open()
    started = time.perf_counter()
    try:
        d0 = int(np.datetime64(MAU_START).astype(int))
        for offset in range(days):
            keys = day_keys(pop, users, seed, offset)
            for chunk in np.array_split(keys, max(1, len(keys) // 100_000)):
                day = np.full(len(chunk), d0 + offset, dtype=np.int32)
                ops = np.ones(len(chunk), dtype=np.uint8)
                await journal.append([ev.ActivityBatchRecorded.from_arrays(chunk, day, ops, received_at=time.time())])
        if isinstance(journal, SqliteJournal):
            await journal.index_pending()  # built now, not by the server while it is being timed
    finally:
        await journal.close()
    return time.perf_counter() - started


def iso(offset: int) -> str:
    return str(np.datetime64(MAU_START) + offset)


def time_releases(server: ServerProcess, ends: list[int]) -> list[float]:
    """Wall time of each day's 30-day MAU release as the client sees it, one day after another
    (the first after a start merges the whole window; the next ones slide it by a day)."""
    times = []
    for end in ends:
        started = time.perf_counter()
        status, body, _ = server.http.get(f"/mau?end={iso(end)}", timeout=600)
        assert status == 200, body
        times.append(time.perf_counter() - started)
    return times


async def mau_phase(args: argparse.Namespace, workdir: Path, pg_admin: str) -> dict:
    pg_configs = [("postgresql, 1 process (whole state)", 0)] + [
        (f"postgresql, {n} shard{'s' * (n > 1)}", n) for n in (1, 2, 4)
    ]
    slides = args.releases  # daily releases after the first, per configuration
    per = 1 + slides
    days = 29 + per * len(pg_configs) + 1  # each configuration publishes its own days' windows
    print(f"MAU: {args.mau_users:,} users/day x {days} days ...", flush=True)
    pop = population(args.mau_users, args.seed)
    out: dict = {"users_per_day": args.mau_users, "window": 30, "days": days, "events": args.mau_users * days}
    first = day_keys(pop, args.mau_users, args.seed, 0)
    out["window_union"] = len(
        np.unique(np.concatenate([day_keys(pop, args.mau_users, args.seed, d) for d in range(30)]))
    )
    del first
    env = {"LOG_LEVEL": "warning", "HASH_SALT_SECRET": SECRET, "SNAPSHOT_EVERY_EVENTS": str(10**10), **UNLIMITED}
    env["SNAPSHOT_EVERY_SECONDS"] = "100000"
    env["RELEASE_SCHEDULE"] = "on-demand"
    sqlite_data = workdir / "mau-sqlite"
    out["load_sqlite_s"] = await load_journal(None, sqlite_data, pop, args.mau_users, 29 + per, args.seed)
    pg_url = await new_database(pg_admin)
    out["load_postgresql_s"] = await load_journal(pg_url, workdir / "mau-pg-load", pop, args.mau_users, days, args.seed)
    configs = [("sqlite, 1 process", None, 0, 0)]
    configs += [(label, pg_url, shards, i) for i, (label, shards) in enumerate(pg_configs)]
    releases = {}
    for n, (label, url, shards, i) in enumerate(configs):
        print(f"MAU releases: {label} ...", flush=True)
        run_env = {**env, **({"JOURNAL_URL": url} if url else {})}
        data = sqlite_data if url is None else workdir / f"mau-{n}"
        started = time.perf_counter()
        gateway, shard_procs = start_servers(data, run_env, shards, 1)
        ready = time.perf_counter() - started
        try:
            times = time_releases(gateway, [29 + i * per + j for j in range(per)])
        finally:
            stop_servers(gateway, *shard_procs)
        releases[label] = {
            "first_s": times[0],
            "median_s": float(np.median(times[1:])),
            "max_s": max(times[1:]),
            "ready_s": ready,
        }
    out["releases"] = releases
    return out


# -- the run -----------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> dict:
    out: dict = {
        "cores": os.cpu_count(),
        "load_before": load_average(),
        "load_generator": "wrk" if shutil.which("wrk") else "python",
    }
    workdir = Path(tempfile.mkdtemp(prefix="dpdau-bench-cluster-"))
    pg_dir = None
    try:
        if args.pg_url:
            pg_admin = args.pg_url
        else:
            pg_dir = Path(tempfile.mkdtemp(prefix="dpdau-bench-pg-"))  # its own: the server runs as postgres
            pg_admin = pgcluster.start(pg_dir, free_port())
        print("baselines: answer-only aiohttp, 1 and 2 processes ...", flush=True)
        bodies = make_batches(50, 1000, 2_000_000, ["2025-09-01"], args.seed)
        for n in (1, 2):
            procs, port = baseline_servers(n)
            try:
                out[f"baseline_{n}"] = await ingest_point(port, args.seconds, bodies)
            finally:
                stop_all(procs)
        if not args.skip_ingest:
            out["ingest"] = await ingest_phase(args, workdir, pg_admin)
        if not args.skip_mau:
            out["mau"] = await mau_phase(args, workdir, pg_admin)
    finally:
        if pg_dir is not None:
            pgcluster.stop(pg_dir)
            shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    out["load_after"] = load_average()
    return out


def markdown(out: dict) -> str:
    b1, b2 = out["baseline_1"], out["baseline_2"]
    lines = [
        f"Machine: {out['cores']} cores shared with other work (load average {out['load_before']} before, "
        f"{out['load_after']} after); single events driven by {out['load_generator']} (itself ~1 core), batches by "
        "the Python keep-alive client.",
        "",
        f"Baselines (answer-only aiohttp): 1 process {b1.get('single_events_per_s', 0):,.0f} req/s single "
        f"(p99 {b1.get('single_p99_ms', 0):.1f} ms), {b1['batch_events_per_s']:,.0f} events/s batch; "
        f"2 processes {b2.get('single_events_per_s', 0):,.0f} req/s single, {b2['batch_events_per_s']:,.0f} events/s batch.",
    ]
    if "ingest" in out:
        lines += [
            "",
            "| ingest | single events/s (32 conns) | single p99 ms | vs answer-only | batch events/s (1,000/req, 8 conns) | batch p99 ms | vs answer-only |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, r in out["ingest"].items():
            base = b2 if "2 workers" in label else b1
            lines.append(
                f"| {label} | {r.get('single_events_per_s', 0):,.0f} | {r.get('single_p99_ms', 0):.1f} | "
                f"{r.get('single_events_per_s', 0) / max(1, base.get('single_events_per_s', 1)):.2f} | "
                f"{r['batch_events_per_s']:,.0f} | {r['batch_p99_ms']:.1f} | "
                f"{r['batch_events_per_s'] / base['batch_events_per_s']:.2f} |"
            )
        lines.append("")
        lines.append(
            "Targets: single >= 15,000 events/s with p99 < 20 ms; batch >= 250,000 events/s with p99 < 100 ms."
        )
    if "mau" in out:
        m = out["mau"]
        lines += [
            "",
            f"MAU release (30-day window), {m['users_per_day']:,} users/day ({m['window_union']:,} in a window), "
            f"{m['days']} days ({m['events']:,} events) loaded straight into the journal "
            f"({m['load_sqlite_s']:.0f} s into SQLite, {m['load_postgresql_s']:.0f} s into PostgreSQL); each "
            "configuration publishes consecutive days' windows:",
            "",
            "| configuration | first release after start, s | daily release median s | max s | start to ready s |",
            "|---|---|---|---|---|",
        ]
        for label, r in m["releases"].items():
            lines.append(
                f"| {label} | {r['first_s']:.2f} | {r['median_s']:.2f} | {r['max_s']:.2f} | {r['ready_s']:.1f} |"
            )
        lines.append("")
        lines.append("Target: <= 1 s.")
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0, help="per ingest measurement")
    p.add_argument("--mau-users", type=int, default=1_000_000, help="users per day (30 days)")
    p.add_argument("--releases", type=int, default=3, help="daily releases timed after the first, per configuration")
    p.add_argument("--pg-url", help="an existing PostgreSQL (admin URL); default: a throwaway cluster")
    p.add_argument("--skip-ingest", action="store_true")
    p.add_argument("--skip-mau", action="store_true")
    p.add_argument("--seed", type=int, default=int(os.environ.get("DEFAULT_SEED", "20251009")))
    p.add_argument("--out", type=Path, default=Path(os.environ.get("DATA_DIR", "./data")) / "bench")
    args = p.parse_args()
    result = asyncio.run(main(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster-latest.json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (args.out / "cluster-latest.md").write_text(md + "\n")
    print(md)
