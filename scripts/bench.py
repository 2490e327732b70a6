"""Benchmarks against the real server process, with baselines measured in the same run.

    .venv/bin/python scripts/bench.py                 # full: 10M events journaled
    .venv/bin/python scripts/bench.py --events 500000 # quicker

Prints one table (and writes JSON + markdown under DATA_DIR/bench/): batch ingest over HTTP
(1,000 events/request, 8 connections), single-event ingest (32 connections, p99), GET /dau of a
released day (8 connections, p99), erasure latency with N events journaled (POST -> applied) and
the pseudonym-index lookup behind the purge, restart-to-ready with a snapshot, full replay rate,
and exact-mode bytes per user-day. Baselines: an aiohttp server that only answers (the ceiling
of any handler on this machine) and raw batched SQLite inserts of the same rows.

The JSON also holds ``ingest_sweep``: single-event ingest at 1-32 connections and batch ingest at
100-5,000 events per request (8 connections), each point with events/s and latency quantiles --
what ``eval/ingest_plots.py`` draws as throughput and latency curves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.loadgen import request_bytes, run  # noqa: E402
from tests.support import ServerProcess, free_port  # noqa: E402

BASELINE_APP = """
from aiohttp import web
async def ok(request):
    await request.read()
    return web.Response(body=b'{"ok":1}', content_type="application/json")
app = web.Application(client_max_size=16 * 1024 * 1024)
app.router.add_post("/event", ok)
app.router.add_get("/dau/{day}", ok)
web.run_app(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), access_log=None, print=None)
"""


def make_batches(n_batches: int, batch: int, users: int, days: list[str], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(n_batches):
        events = [{"user_id": f"user-{rng.randrange(users)}", "op": "+", "day": rng.choice(days)} for _ in range(batch)]
        out.append(msgspec.json.encode({"events": events}))
    return out


def days_of(start: str, n: int) -> list[str]:
    import datetime as dt

    d0 = dt.date.fromisoformat(start)
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range(n)]


async def load(port: int, bodies: list[bytes], total_requests: int, connections: int):
    reqs = [request_bytes("POST", "/event", b) for b in bodies]
    per = total_requests // connections
    return await run(
        port, lambda c, i: reqs[(c * per + i) % len(reqs)], connections=connections, requests_per_connection=per
    )


WRK_SINGLE = """
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"user_id":"wrk-%d-%d","op":"+","day":"DAY"}', math.random(1, 1000000000), counter)
  return wrk.format("POST", "/event", {["Content-Type"] = "application/json"}, body)
end
"""


def wrk(port: int, path: str, seconds: float, connections: int, script: str | None = None) -> dict | None:
    """Drive with wrk (C, far cheaper per request than any Python client) when it is installed."""
    import re

    if shutil.which("wrk") is None:
        return None
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        if script:
            fh.write(script)
            cmd += ["-s", fh.name]
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


async def single_events(port: int, seconds: float, connections: int, day: str):
    def make(c: int, i: int) -> bytes:
        body = b'{"user_id":"single-%d-%d","op":"+","day":"%s"}' % (c, i, day.encode())
        return request_bytes("POST", "/event", body)

    return await run(port, make, connections=connections, duration=seconds)


async def gets(port: int, path: str, seconds: float, connections: int):
    req = request_bytes("GET", path)
    return await run(port, lambda c, i: req, connections=connections, duration=seconds)


def baseline_sqlite(rows: int, batch: int) -> float:
    """Raw batched inserts of rows shaped like journal rows (13 bytes per event)."""
    with tempfile.TemporaryDirectory() as tmp:
        con = sqlite3.connect(Path(tmp) / "b.db", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE j (seq INTEGER PRIMARY KEY, last INTEGER, kind INTEGER, v INTEGER, payload BLOB)")
        payload = os.urandom(13 * batch)
        started = time.perf_counter()
        seq = 0
        for _ in range(rows // batch // 8):
            con.execute("BEGIN")
            for _ in range(8):
                con.execute("INSERT INTO j VALUES (?, ?, 1, 1, ?)", (seq, seq + batch - 1, payload))
                seq += batch
            con.execute("COMMIT")
        return seq / (time.perf_counter() - started)


def start_baseline_server() -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BASELINE_APP, str(port)], cwd=ROOT)
    for _ in range(200):
        try:
            import urllib.request

            urllib.request.urlopen(f"http://127.0.0.1:{port}/dau/x", timeout=1)
            break
        except Exception:
            time.sleep(0.05)
    return proc, port


async def erasures(server: ServerProcess, users: int, n: int, seed: int) -> tuple[list[float], int]:
    rng = random.Random(seed + 1)
    lat, applied = [], 0
    for _ in range(n):
        body = json.dumps({"user_id": f"user-{rng.randrange(users)}"}).encode()
        started = time.perf_counter()
        _, receipt, _ = await asyncio.to_thread(server.http.post, "/erasure", raw=body)
        while receipt.get("status") == "pending":
            _, receipt, _ = await asyncio.to_thread(server.http.get, f"/erasure/{receipt['erasure_id']}")
        lat.append(time.perf_counter() - started)
        applied += receipt.get("status") == "applied"
    return lat, applied


async def index_lookups(data_dir: Path, users: int, n: int, secret: bytes, seed: int) -> list[float]:
    from gateway.identity import Pseudonymizer
    from journal.store import SqliteJournal as Journal

    journal = await Journal.open(data_dir / "journal.sqlite3")
    try:
        await journal.index_pending()
        pseudo = Pseudonymizer(secret)
        rng = random.Random(seed + 2)
        out = []
        for _ in range(n):
            key = pseudo.key(f"user-{rng.randrange(users)}")
            started = time.perf_counter()
            await journal.find_key(key)
            out.append(time.perf_counter() - started)
        return out
    finally:
        await journal.close()


async def replay_rate(data_dir: Path) -> dict:
    from actors.settings import EngineSettings
    from actors.system import restore_world
    from journal.store import SqliteJournal as Journal

    journal = await Journal.open(data_dir / "journal.sqlite3")
    try:
        started = time.perf_counter()
        world, _ = await restore_world(journal, None, EngineSettings(), use_snapshot=False)
        seconds = time.perf_counter() - started
        user_days = sum(len(m) for m in world.days.values())
        nbytes = sum(m.folded().nbytes() for m in world.days.values())
        return {"events": journal.head, "seconds": seconds, "user_days": user_days, "bytes": nbytes}
    finally:
        await journal.close()


SWEEP_CONNECTIONS = (1, 4, 16, 32)  # single-event ingest
SWEEP_BATCHES = (100, 1000, 5000)  # events per request, at 8 connections


def sweep_point(r, connections: int, batch: int) -> dict:
    ok = r.statuses.get(200, 0)
    return {
        "connections": connections,
        "batch": batch,
        "requests": r.requests,
        "errors": r.errors,
        "seconds": r.seconds,
        "events_per_s": ok * batch / r.seconds,
        "p50_ms": pct(r.latencies, 0.5) * 1000,
        "p90_ms": pct(r.latencies, 0.9) * 1000,
        "p99_ms": pct(r.latencies, 0.99) * 1000,
        "latency_ms_quantiles": [pct(r.latencies, q / 100) * 1000 for q in range(1, 100)],
    }


async def ingest_sweep(port: int, args: argparse.Namespace, days: list[str]) -> dict:
    """Throughput and latency of ingest as load grows (the Python client, so points compare)."""
    single = []
    for connections in SWEEP_CONNECTIONS:
        r = await single_events(port, args.sweep_seconds, connections, "2025-09-16")
        single.append(sweep_point(r, connections, 1))
    batch = []
    for size in SWEEP_BATCHES:
        reqs = [
            request_bytes("POST", "/event", b)
            for b in make_batches(max(4, 40_000 // size), size, args.users, days, args.seed + size)
        ]
        r = await run(
            port, lambda c, i, reqs=reqs: reqs[(c + 8 * i) % len(reqs)], connections=8, duration=args.sweep_seconds
        )
        batch.append(sweep_point(r, 8, size))
    return {"single": single, "batch": batch, "seconds_per_point": args.sweep_seconds}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def main(args: argparse.Namespace) -> dict:
    out: dict = {"events_target": args.events}
    days = days_of("2025-09-01", 30)
    n_bodies = min(400, max(20, args.events // 1000))
    print(f"preparing {n_bodies} distinct 1,000-event batches ...", flush=True)
    bodies = make_batches(n_bodies, 1000, args.users, days, args.seed)

    single_script = WRK_SINGLE.replace("DAY", "2025-09-15")
    out["load_generator"] = "wrk" if shutil.which("wrk") else "python keep-alive (scripts/loadgen.py)"
    base_proc, base_port = start_baseline_server()
    try:
        r = await load(base_port, bodies, 400, 8)
        out["baseline_http_batch_events_per_s"] = r.requests * 1000 / r.seconds
        w = wrk(base_port, "/event", args.seconds, 32, single_script)
        if w is not None:
            out["baseline_http_single_req_per_s"] = w["rps"]
            out["baseline_http_get_p99_ms"] = wrk(base_port, "/dau/2025-09-01", args.seconds, 8)["p99_ms"]
        else:
            r = await single_events(base_port, args.seconds, 32, "2025-09-15")
            out["baseline_http_single_req_per_s"] = r.requests / r.seconds
            r = await gets(base_port, "/dau/2025-09-01", args.seconds, 8)
            out["baseline_http_get_p99_ms"] = r.percentile(0.99) * 1000
    finally:
        base_proc.terminate()
        base_proc.wait()
    out["baseline_sqlite_rows_per_s"] = baseline_sqlite(2_000_000, 1000)

    workdir = Path(tempfile.mkdtemp(prefix="dpdau-bench-"))
    data = workdir / "data"
    server = ServerProcess(data, {"LOG_LEVEL": "warning", "SNAPSHOT_EVERY_EVENTS": str(10**9)}).start()
    try:
        requests_ = args.events // 1000
        print(f"batch ingest: {requests_:,} requests x 1,000 events, 8 connections ...", flush=True)
        r = await load(server.port, bodies, requests_, 8)
        assert r.errors == 0, r.statuses
        out["batch_events_per_s"] = r.requests * 1000 / r.seconds
        out["batch_p99_ms"] = r.percentile(0.99) * 1000

        print("single-event ingest: 32 connections ...", flush=True)
        w = wrk(server.port, "/event", args.seconds, 32, single_script)
        if w is not None:
            assert w["non2xx"] == 0, w
            out.update(single_events_per_s=w["rps"], single_p50_ms=w["p50_ms"], single_p99_ms=w["p99_ms"])
        else:
            r = await single_events(server.port, args.seconds, 32, "2025-09-15")
            out["single_events_per_s"] = (r.statuses.get(200, 0)) / r.seconds
            out["single_p50_ms"] = r.percentile(0.5) * 1000
            out["single_p99_ms"] = r.percentile(0.99) * 1000

        status, _, _ = server.http.get("/dau/2025-09-01", timeout=120)
        assert status == 200
        w = wrk(server.port, "/dau/2025-09-01", args.seconds, 8)
        if w is not None:
            out.update(get_dau_req_per_s=w["rps"], get_dau_p99_ms=w["p99_ms"])
        else:
            r = await gets(server.port, "/dau/2025-09-01", args.seconds, 8)
            out["get_dau_req_per_s"] = r.requests / r.seconds
            out["get_dau_p99_ms"] = r.percentile(0.99) * 1000

        print("erasures ...", flush=True)
        lat, applied = await erasures(server, args.users, args.erasures, args.seed)
        out["erasure_p50_ms"] = pct(lat, 0.5) * 1000
        out["erasure_p99_ms"] = pct(lat, 0.99) * 1000
        out["erasure_applied_at_response"] = applied / max(1, len(lat))

        print("ingest sweep: single events at 1-32 connections, batches of 100-5,000 ...", flush=True)
        out["ingest_sweep"] = await ingest_sweep(server.port, args, days)
        out["journal_seq"] = server.http.get("/readyz")[1]["journal_seq"]

        server.kill(signal.SIGTERM)  # graceful: writes the snapshot
        started = time.perf_counter()
        server.start()
        out["restart_to_ready_s"] = time.perf_counter() - started
        server.kill(signal.SIGTERM)

        secret = (data / "secret").read_text().strip().encode()
        lookups = await index_lookups(data, args.users, args.erasures, secret, args.seed)
        out["index_lookup_p99_ms"] = pct(lookups, 0.99) * 1000
        print("offline full replay ...", flush=True)
        rep = await replay_rate(data)
        out["replay_events_per_s"] = rep["events"] / rep["seconds"]
        out["bytes_per_user_day"] = rep["bytes"] / max(1, rep["user_days"])
        out["user_days"] = rep["user_days"]
    finally:
        server.__exit__()
        shutil.rmtree(workdir, ignore_errors=True)
    out["ratio_batch_vs_http_baseline"] = out["batch_events_per_s"] / out["baseline_http_batch_events_per_s"]
    out["ratio_single_vs_http_baseline"] = out["single_events_per_s"] / out["baseline_http_single_req_per_s"]
    out["ratio_batch_vs_sqlite_baseline"] = out["batch_events_per_s"] / out["baseline_sqlite_rows_per_s"]
    return out


TARGETS = [
    ("batch_events_per_s", "batch ingest, events/s (1,000/request, 8 conns)", ">= 250,000"),
    ("single_events_per_s", "single-event ingest, events/s (32 conns)", ">= 15,000"),
    ("single_p99_ms", "single-event ingest p99, ms", "< 20"),
    ("get_dau_p99_ms", "GET /dau (released) p99, ms (8 conns)", "< 5"),
    ("erasure_p99_ms", "erasure POST -> applied p99, ms", "< 50"),
    ("index_lookup_p99_ms", "pseudonym index lookup p99, ms", "-"),
    ("restart_to_ready_s", "restart to ready with a snapshot, s", "< 2 at 10M"),
    ("replay_events_per_s", "full journal replay, events/s", ">= 1,000,000"),
    ("bytes_per_user_day", "exact mode memory, bytes per user-day", "<= 16"),
]


def markdown(out: dict) -> str:
    lines = [
        f"Journal: {out.get('journal_seq', 0):,} events; request-rate load from {out['load_generator']}. "
        f"Baselines in the same run: aiohttp answer-only server "
        f"{out['baseline_http_batch_events_per_s']:,.0f} events/s batch, {out['baseline_http_single_req_per_s']:,.0f} req/s single; "
        f"raw SQLite batched inserts {out['baseline_sqlite_rows_per_s']:,.0f} rows/s.",
        "",
        "| measure | result | target |",
        "|---|---|---|",
    ]
    for key, label, target in TARGETS:
        value = out.get(key)
        lines.append(
            f"| {label} | {value:,.1f} | {target} |"
            if isinstance(value, float)
            else f"| {label} | {value} | {target} |"
        )
    lines += [
        "",
        f"Ratios: batch ingest / aiohttp baseline = {out['ratio_batch_vs_http_baseline']:.2f}; "
        f"single / baseline = {out['ratio_single_vs_http_baseline']:.2f}; batch ingest / raw SQLite = "
        f"{out['ratio_batch_vs_sqlite_baseline']:.2f}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--users", type=int, default=2_000_000)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--erasures", type=int, default=200)
    p.add_argument("--sweep-seconds", type=float, default=4.0, help="per point of the ingest sweep")
    p.add_argument("--seed", type=int, default=int(os.environ.get("DEFAULT_SEED", "20251009")))
    p.add_argument("--out", type=Path, default=Path(os.environ.get("DATA_DIR", "./data")) / "bench")
    args = p.parse_args()
    result = asyncio.run(main(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (args.out / "latest.md").write_text(md + "\n")
    print(md)
