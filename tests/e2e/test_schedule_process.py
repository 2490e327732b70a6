"""The schedule in the real ``dpdau serve`` process, with the real clock: a restart after downtime
catches up every closed day from RELEASE_START by itself (also across a SIGKILL in the middle of
the catch-up), refusals are recorded and shown, and ``dpdau series`` prints what /series serves."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, ServerProcess, clear_of_utc_midnight

pytestmark = pytest.mark.e2e

N_DAYS = 12


def closed_days() -> tuple[dt.date, list[str]]:
    """RELEASE_START and every day the schedule has closed since, fixed for the whole test."""
    start = clear_of_utc_midnight(10) - dt.timedelta(days=N_DAYS)
    return start, [(start + dt.timedelta(days=i)).isoformat() for i in range(N_DAYS)]


def wait_until(predicate, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(what)


def series(server: ServerProcess, metric: str) -> list[dict]:
    status, body, _ = server.http.get(f"/series?metric={metric}")
    assert status == 200, body
    return body["points"]


def complete(server: ServerProcess, metric: str) -> list[dict] | None:
    points = series(server, metric)
    return points if len(points) == N_DAYS else None


def test_restart_catches_up_every_closed_day_and_records_refusals(tmp_path):
    START, DAYS = closed_days()
    data = tmp_path / "data"
    env = {
        "RELEASE_START": START.isoformat(),
        "DAU_BUDGET_TOTAL": "1.0",  # a few DAU releases per period fit, then the schedule is refused
        "MAU_WINDOW_DAYS": "7",
        "API_KEY": "e2e-key",
    }
    # 1. the data arrives while the service runs on request only (nothing published by itself)
    with ServerProcess(data, {**env, "RELEASE_SCHEDULE": "on-demand"}) as server:
        for i, day in enumerate(DAYS):
            batch = {"events": [{"user_id": f"user{u}", "op": "+", "day": day} for u in range(i * 3, i * 3 + 40)]}
            assert server.http.post("/event", batch)[0] == 200
        assert series(server, "dau") == []
    # 2. start with the schedule on: it publishes every closed day by itself -- kill it mid-way
    server = ServerProcess(data, {**env, "RELEASE_SCHEDULE": "daily"}).start()
    try:
        wait_until(lambda: len(series(server, "dau")) >= 3, what="catch-up started")
        server.kill(signal.SIGKILL)
        before = {p["day"]: p for p in series_after_restart(server)}
        # 3. after the restart the catch-up finishes: each closed day once, in order
        points = wait_until(lambda: complete(server, "dau"), what="catch-up")
        mau = wait_until(lambda: complete(server, "mau"), what="catch-up of mau")
        assert [p["day"] for p in points] == DAYS and [p["day"] for p in mau] == DAYS
        for p in points:
            if p["day"] in before:  # published before the kill: the same record, never re-drawn
                assert p == before[p["day"]]
        # refusals: once a period's cap is reached, the rest of that period is refused (identical charges)
        by_period: dict[str, list[str]] = {}
        for p in points:
            by_period.setdefault(p["accounting_period"], []).append(p["status"])
        assert any("refused" in s for s in by_period.values())
        for statuses in by_period.values():
            assert statuses == sorted(statuses, key=lambda s: s == "refused")
            assert statuses[0] == "released"
        status, releases, _ = server.http.get("/releases?metric=dau&limit=1000")
        assert status == 200
        released_days = [r["day"] for r in releases["releases"]]
        assert sorted(released_days) == [p["day"] for p in points if p["status"] == "released"]  # once each
        assert all(r["scheduled_lag"] == 0 and r["revision"] == 0 for r in releases["releases"])
        # the metrics and the configuration say the same
        refused = sum(p["status"] == "refused" for p in points)
        status, metrics, _ = server.http.get("/metrics")
        assert status == 200
        text = metrics["_text"]
        assert f'dpdau_scheduled_refused_total{{metric="dau"}} {float(refused)}' in text
        status, cfg, _ = server.http.get("/config")
        assert status == 200 and cfg["release_start"] == START.isoformat() and cfg["refused"]["dau"] == refused
        # 4. the CLI prints the same series
        out = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "series", "dau", "--csv"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "PORT": str(server.port), "API_KEY": "e2e-key", "DATA_DIR": str(data)},
        )
        assert out.returncode == 0, out.stderr
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        assert [(r["day"], r["status"], r["estimate"]) for r in rows] == [
            (p["day"], p["status"], "" if p["estimate"] is None else str(p["estimate"])) for p in points
        ]
        out = subprocess.run(
            [str(Path(sys.executable).parent / "dpdau"), "series", "mau", "--from", DAYS[2], "--to", DAYS[4]],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "PORT": str(server.port), "API_KEY": "e2e-key", "DATA_DIR": str(data)},
        )
        assert out.returncode == 0, out.stderr
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert [(x["day"], x["window"]) for x in lines] == [(d, 7) for d in DAYS[2:5]]
    finally:
        server.__exit__()


def series_after_restart(server: ServerProcess) -> list[dict]:
    server.start()
    return series(server, "dau")
