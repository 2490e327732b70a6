"""The README's quickstart lines, run verbatim (only the port differs) against the real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, ServerProcess

pytestmark = pytest.mark.e2e


def quickstart_blocks() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart in 120 seconds", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = []
    for block in blocks:
        joined = block.replace("\\\n", " ")
        commands.append([line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")])
    return commands


def test_quickstart_lines_work_verbatim(tmp_path):
    blocks = quickstart_blocks()
    curls = [c for block in blocks for c in block if c.startswith("curl")]
    cli = [c for block in blocks for c in block if c.startswith(".venv/bin/dpdau")]
    assert len(curls) >= 8 and len(cli) >= 3
    with ServerProcess(tmp_path / "data", {"RELEASE_SCHEDULE": "daily"}) as server:  # as `make run`
        env = {**os.environ, "PORT": str(server.port), "DATA_DIR": str(tmp_path / "data")}
        for command in curls:
            command = command.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
            out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, env=env)
            assert out.returncode == 0, (command, out.stderr)
            body = json.loads(out.stdout)
            assert "error" not in body, (command, body)
        dpdau = str(Path(sys.executable).parent / "dpdau")
        for command in cli:
            out = subprocess.run(
                ["bash", "-c", command.replace(".venv/bin/dpdau", dpdau)],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                cwd=ROOT,
            )
            assert out.returncode == 0, (command, out.stdout, out.stderr)
            assert "error" not in json.loads(out.stdout)


def postgres_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Running on PostgreSQL", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        lines += [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return lines


def test_running_on_postgresql_lines_work_verbatim(pg_server):
    """The section's lines (the cluster's directory and the ports differ), then the quickstart's
    curl lines against ``make run`` on that PostgreSQL, then the stop line."""
    import signal
    import tempfile
    import time

    from tests.support import Http, free_port

    lines = postgres_blocks()
    assert lines[0].startswith("apt-get install") and "postgresql-15" in lines[0]  # root, once: not run here
    start, run, stop = lines[1], lines[2], lines[3]
    assert start.startswith(".venv/bin/python -m scripts.pgcluster start /tmp/dpdau-pg --port 5433")
    assert run == "JOURNAL_URL=postgresql://postgres@127.0.0.1:5433/postgres make run"
    assert stop == ".venv/bin/python -m scripts.pgcluster stop /tmp/dpdau-pg"
    cluster = tempfile.mkdtemp(prefix="dpdau-readme-pg-")  # under /tmp: the postgres user must reach it
    pg_port, port = free_port(), free_port()
    python = str(Path(sys.executable))

    def local(line: str) -> str:
        return line.replace("/tmp/dpdau-pg", cluster).replace("5433", str(pg_port)).replace(".venv/bin/python", python)

    out = subprocess.run(["bash", "-c", local(start)], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
    env = {**os.environ, "PORT": str(port), "DATA_DIR": str(Path(cluster) / "dpdau-data")}
    server = subprocess.Popen(
        ["bash", "-c", local(run)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        http = Http(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, "make run exited"
            try:
                if http.get("/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        curls = [c for block in quickstart_blocks() for c in block if c.startswith("curl")]
        for command in curls:
            command = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            res = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
            assert res.returncode == 0 and "error" not in json.loads(res.stdout), (command, res.stdout)
        assert http.get("/readyz")[1]["journal_seq"] >= 4
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # make and the server it started
        server.wait(60)
        res = subprocess.run(["bash", "-c", local(stop)], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert res.returncode == 0, res.stderr
        assert not (Path(cluster) / "data" / "postmaster.pid").exists()
        import shutil

        shutil.rmtree(cluster, ignore_errors=True)


def test_workers_and_shards_lines_work_verbatim(pg_url, tmp_path):
    """README "Several processes": the block as one shell script (the database, the ports and the
    venv path differ), then the quickstart's curl lines against its gateway workers -- releases
    count through the two shards."""
    import signal
    import time

    from tests.support import Http, free_port

    block = postgres_blocks()[4:]
    assert block[0] == "export JOURNAL_URL=postgresql://postgres@127.0.0.1:5433/postgres"
    assert [b.split(" --port")[0] for b in block[2:]] == [
        ".venv/bin/dpdau serve --shard 0/2",
        ".venv/bin/dpdau serve --shard 1/2",
        ".venv/bin/dpdau serve --workers 2 --shards 2",
    ]
    port, shard0, shard1 = free_port(), free_port(), free_port()
    dpdau = str(Path(sys.executable).parent / "dpdau")
    script = "\n".join(block)
    for old, new in (
        ("postgresql://postgres@127.0.0.1:5433/postgres", pg_url),
        ("--port 9100", f"--port {shard0}"),
        ("--port 9101", f"--port {shard1}"),
        ("--port 8000", f"--port {port}"),
        (".venv/bin/dpdau", dpdau),
    ):
        script = script.replace(old, new)
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "RELEASE_SCHEDULE": "daily"}  # the default, as written
    log = open(tmp_path / "deployment.log", "wb")
    group = subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        http = Http(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert group.poll() is None, (tmp_path / "deployment.log").read_text()
            try:
                if http.get("/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        curls = [c for block in quickstart_blocks() for c in block if c.startswith("curl")]
        for command in curls:
            command = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            for _ in range(100):  # a release waits for both shards to be registered (503 until then)
                res = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
                body = json.loads(res.stdout)
                if body.get("error") != "shards_unavailable":
                    break
                time.sleep(0.2)
            assert res.returncode == 0 and "error" not in body, (command, res.stdout)
        assert http.get("/dau/2026-11-02")[1]["guarantee"]  # a release, counted by the shards
    finally:
        os.killpg(group.pid, signal.SIGTERM)  # the shards and the workers' supervisor
        group.wait(60)
        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline
            and subprocess.run(["pgrep", "-g", str(group.pid)], capture_output=True).returncode == 0
        ):
            time.sleep(0.1)


def test_keys_and_scopes_lines_work_verbatim(tmp_path):
    """The README's "Keys and scopes" example: the server started with the documented keys, each
    curl line as written; a line commented ``# 403`` must be refused for its scope."""
    text = (ROOT / "README.md").read_text()
    section = text.split("**Keys and scopes.**", 1)[1].split("\n## ", 1)[0]
    blocks = [
        [ln.strip() for ln in b.splitlines() if ln.strip()] for b in re.findall(r"```sh\n(.*?)```", section, re.S)
    ]
    (run,), curls = blocks[0], blocks[1]
    assert run.endswith(" make run")
    env = dict(item.split("=", 1) for item in run.removesuffix(" make run").split())
    assert set(env) == {"READ_API_KEY", "INGEST_API_KEY", "ADMIN_API_KEY"}
    with ServerProcess(tmp_path / "data", env) as server:
        for command in curls:
            command = command.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
            out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, (command, out.stderr)
            body = json.loads(out.stdout)
            if "# 403" in command:
                assert body["error"] == "forbidden" and body["scope"] == "admin", (command, body)
            else:
                assert "error" not in body, (command, body)
            if "/readyz" in command:
                assert body == {"ready": True}
        assert "NO API KEY IS CONFIGURED" not in server.log()
