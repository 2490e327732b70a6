"""The ``dpdau`` command line against a real server and a real data directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import anyio
import pytest

from actors.state import membership
from actors.system import restore_world
from gateway import config as config_mod
from gateway.identity import Pseudonymizer, load_rotations, rekey
from journal.store import SqliteJournal
from tests.support import ROOT, ServerProcess, day

pytestmark = pytest.mark.e2e


def dpdau(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"dpdau {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_ingest_jsonl_and_csv_then_query(tmp_path):
    data = tmp_path / "data"
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"user_id": f"j{i}", "op": "+", "day": "2025-07-01"}) + "\n" for i in range(2500))
    )
    csv_file = tmp_path / "events.csv"
    csv_file.write_text(
        "user_id,op,day,metadata\n"
        + "".join(f"c{i},+,2025-07-02,\n" for i in range(40))
        + 'c0,-,2025-07-02,"{""why"": ""test""}"\n'
    )
    with ServerProcess(data) as server:
        env = {"DATA_DIR": str(data), "PORT": str(server.port)}
        out = json.loads(dpdau("ingest", str(jsonl), "--batch", "1000", env=env).stdout)
        assert out["ingested"] == 2500
        assert json.loads(dpdau("ingest", str(csv_file), env=env).stdout)["ingested"] == 41
        assert server.http.get("/readyz")[1]["journal_seq"] == 2541
        dau = json.loads(dpdau("dau", "2025-07-01", env=env).stdout)
        assert dau["metric"] == "dau" and abs(dau["estimate"] - 2500) < 100
        mau = json.loads(dpdau("mau", "2025-07-02", "--window", "7", env=env).stdout)
        assert mau["window"] == 7 and abs(mau["estimate"] - 2540) < 100
        assert dpdau("dau", "2025-02-30", env=env, check=False).returncode == 1
        busy = dpdau("replay", env=env, check=False)
        assert busy.returncode == 1 and "in use" in busy.stderr  # offline tools refuse while serving


def test_offline_replay_snapshot_restore_and_corrupt_snapshot(tmp_path):
    data = tmp_path / "data"
    env = {"DATA_DIR": str(data)}
    with ServerProcess(data) as server:
        server.http.post(
            "/event", {"events": [{"user_id": f"u{i}", "op": "+", "day": "2025-07-03"} for i in range(100)]}
        )
        server.http.get("/dau/2025-07-03")
        server.kill(signal.SIGTERM)
    replay = json.loads(dpdau("replay", env=env).stdout)
    assert replay["user_days"] == 100 and replay["releases"] == 1 and replay["records"]["ActivityBatchRecorded"] == 1
    snap = json.loads(dpdau("snapshot", "--out", str(tmp_path / "backup.snap"), env=env).stdout)
    assert (tmp_path / "backup.snap").exists() and snap["seq"] >= 100
    restored = json.loads(dpdau("restore", str(tmp_path / "backup.snap"), env=env).stdout)
    assert restored["restored_from_snapshot_seq"] is not None and restored["user_days"] == 100
    corrupt = tmp_path / "corrupt.snap"
    blob = bytearray((tmp_path / "backup.snap").read_bytes())
    blob[-5] ^= 0xFF
    corrupt.write_bytes(bytes(blob))
    refused = dpdau("restore", str(corrupt), env=env, check=False)
    assert refused.returncode == 1 and "checksum" in refused.stderr
    for f in (data / "snapshots").glob("*.snap"):  # a corrupt snapshot among the real ones is skipped
        f.write_bytes(bytes(blob))
    after = json.loads(dpdau("restore", env=env).stdout)
    assert after["restored_from_snapshot_seq"] is None and after["user_days"] == 100  # full replay


def test_compact_purges_now(tmp_path):
    data = tmp_path / "data"
    env = {"DATA_DIR": str(data)}
    with ServerProcess(data) as server:
        server.http.post("/event", {"events": [{"user_id": u, "op": "+", "day": "2025-07-04"} for u in ("a", "b")]})
        cli_env = {**env, "PORT": str(server.port)}
        erasure = json.loads(dpdau("erase", "a", env=cli_env).stdout)
        assert erasure["status"] in ("pending", "applied")
        status = json.loads(dpdau("erasure-status", erasure["erasure_id"], env=cli_env).stdout)
        assert status["erasure_id"] == erasure["erasure_id"] and status["purged_at"] is None
        assert dpdau("erasure-status", "no-such-id", env=cli_env, check=False).returncode == 1
        server.kill(signal.SIGTERM)
    out = json.loads(dpdau("compact", env=env).stdout)
    assert out["purged"] == [{"erasure_id": erasure["erasure_id"], "events_removed": 1}]
    with ServerProcess(data) as server:
        assert server.http.get(f"/erasure/{erasure['erasure_id']}")[1]["status"] == "purged"


async def _window_union(data, first: int, last: int) -> int:
    journal = await SqliteJournal.open(data / "journal.sqlite3")
    try:
        world, _ = await restore_world(
            journal, None, config_mod.load(environ={}, dotenv=None).engine, use_snapshot=False
        )
        return len(membership.union([world.days[d].members() for d in range(first, last + 1) if d in world.days]))
    finally:
        await journal.close()


def test_rotate_salt_keeps_every_count_and_erasure_still_finds_old_events(tmp_path):
    data = tmp_path / "data"
    env = {"DATA_DIR": str(data), "PURGE_DELAY_SECONDS": "0"}
    users = [f"user-{i}" for i in range(30)]
    with ServerProcess(data) as server:
        server.http.post("/event", {"events": [{"user_id": u, "op": "+", "day": "2025-08-01"} for u in users]})
        server.kill(signal.SIGTERM)
    old_secret = (data / "secret").read_text().strip().encode()
    old_key = Pseudonymizer(old_secret).key("user-3")
    rotated = json.loads(dpdau("rotate-salt", env=env).stdout)
    assert rotated["key_version"] == 1 and rotated["keys_rewritten"] == 30
    new_key = int(rekey(load_rotations(data)[0], __import__("numpy").array([old_key]))[0])
    with ServerProcess(data, {"PURGE_DELAY_SECONDS": "0"}) as server:
        # the same people after the rotation, on other days
        server.http.post("/event", {"events": [{"user_id": u, "op": "+", "day": "2025-08-10"} for u in users]})
        server.http.post("/event", {"user_id": "newcomer", "op": "+", "day": "2025-08-10"})
        assert anyio.run(_window_union, data, day("2025-07-20"), day("2025-08-18")) == 31  # each user once
        receipt = server.http.post("/erasure", {"user_id": "user-3"})[1]
        for _ in range(100):
            receipt = server.http.get(f"/erasure/{receipt['erasure_id']}")[1]
            if receipt["status"] == "purged":
                break
            anyio.run(anyio.sleep, 0.1)
        assert receipt["status"] == "purged"
        audit = {e["erasure_id"]: e for e in server.http.get("/audit/erasures")[1]["erasures"]}
        assert audit[receipt["erasure_id"]]["events_removed"] == 2  # before and after rotation
        server.kill(signal.SIGTERM)
    blobs = [p.read_bytes() for p in data.rglob("*") if p.is_file()]
    for key in (old_key, new_key):
        assert not any(key.to_bytes(8, "little", signed=True) in b for b in blobs)
    assert anyio.run(_window_union, data, day("2025-07-20"), day("2025-08-18")) == 30
