"""A bad configuration, through the real ``dpdau`` process: one line naming the setting, exit 2.

Never a traceback, nothing started: the port is checked before the journal is opened, and
``DATA_DIR`` is proved writable before anything is written to it. A ``DATA_DIR`` another dpdau
process holds is not a bad setting but a busy resource: one line naming it, exit 1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import GatewaySettings
from tests.support import ROOT, ServerProcess, free_port

pytestmark = pytest.mark.e2e


def dpdau(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=cwd,  # a directory without a .env, so only ``env`` configures the process
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_clear_line(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("configuration error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        ({"HASH_SALT_SECRET": "too-short"}, ["HASH_SALT_SECRET", "16 bytes"]),
        ({"EPSILON_DAU": "-0.5"}, ["EPSILON_DAU"]),
        ({"EPSILON_MAU": "abc"}, ["EPSILON_MAU", "'abc'"]),
        ({"DAU_MECHANISM": "magic"}, ["DAU_MECHANISM", "magic", "gaussian"]),
        ({"MAU_MECHANISM": "exponential"}, ["MAU_MECHANISM", "exponential"]),
        ({"PURGE_DELAY_SECONDS": "-1"}, ["PURGE_DELAY_SECONDS", ">= 0"]),
        ({"LOG_LEVEL": "loud"}, ["LOG_LEVEL"]),
        ({"TIMEZONE": "Mars/Olympus"}, ["TIMEZONE", "Mars/Olympus"]),
        ({"DPDAU_ENV": "production"}, ["HASH_SALT_SECRET", "production"]),
        (
            {"DPDAU_ENV": "production", "HASH_SALT_SECRET": "0123456789abcdef0123", "READ_API_KEY": "demo-read"},
            ["READ_API_KEY", "16 bytes", "production"],
        ),
        ({"MAX_INFLIGHT_BODY_BYTES": "1048576"}, ["MAX_INFLIGHT_BODY_BYTES", "MAX_BODY_BYTES"]),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, dict) else None,
)
def test_bad_setting_stops_serve_with_one_line_and_exit_2(tmp_path, env, needles):
    data = tmp_path / "data"
    proc = dpdau("serve", "--port", str(free_port()), env={"DATA_DIR": str(data), **env}, cwd=tmp_path)
    assert_one_clear_line(proc, *needles)
    assert not data.exists() or not any(data.iterdir())  # nothing was started


def test_a_short_api_key_is_refused_in_production_only_and_never_echoed(tmp_path):
    env = {"DPDAU_ENV": "production", "HASH_SALT_SECRET": "0123456789abcdef0123", "ADMIN_API_KEY": "adm1n-Key"}
    proc = dpdau("serve", "--port", str(free_port()), env={"DATA_DIR": str(tmp_path / "d"), **env}, cwd=tmp_path)
    assert "adm1n-Key" not in assert_one_clear_line(proc, "ADMIN_API_KEY")
    assert GatewaySettings(admin_api_key="adm1n-Key").admin_api_key == "adm1n-Key"  # fine on a laptop
    with pytest.raises(ValueError, match="ADMIN_API_KEY must be at least 16 bytes"):
        GatewaySettings(dpdau_env="production", hash_salt_secret="0123456789abcdef0123", admin_api_key="adm1n-Key")
    long_key = "0123456789abcdef"
    assert GatewaySettings(dpdau_env="production", admin_api_key=long_key).admin_api_key == long_key


def test_the_secret_is_never_echoed(tmp_path):
    secret = "short-Secret"
    proc = dpdau("serve", env={"DATA_DIR": str(tmp_path / "d"), "HASH_SALT_SECRET": secret}, cwd=tmp_path)
    assert secret not in assert_one_clear_line(proc, "HASH_SALT_SECRET")


def test_port_in_use_is_found_before_the_journal_is_opened(tmp_path):
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        proc = dpdau("serve", "--host", "127.0.0.1", "--port", str(port), env={"DATA_DIR": str(tmp_path)}, cwd=tmp_path)
    assert_one_clear_line(proc, "PORT", str(port), "in use")
    assert not any(tmp_path.iterdir())  # DATA_DIR is still empty: no journal was opened


def test_unknown_host_names_host(tmp_path):
    proc = dpdau("serve", "--host", "no-such-host.invalid", env={"DATA_DIR": str(tmp_path)}, cwd=tmp_path)
    assert_one_clear_line(proc, "HOST", "no-such-host.invalid")


def test_data_dir_that_is_a_file_or_under_a_file(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    for data_dir in (blocker, blocker / "data"):
        for command in (["serve", "--port", str(free_port())], ["replay"], ["snapshot"]):
            proc = dpdau(*command, env={"DATA_DIR": str(data_dir)}, cwd=tmp_path)
            assert_one_clear_line(proc, "DATA_DIR", str(data_dir))


def _unwritable_dir(parent: Path) -> tuple[Path, list[str]]:
    """An existing directory this process cannot write: chmod for a normal user; as root (modes
    do not bind root) the immutable attribute, or -- where that capability is missing, as in a
    default container -- /proc/self, which no one can create files in. Returns (dir, undo command)."""
    directory = parent / "readonly"
    directory.mkdir()
    directory.chmod(0o500)
    undo: list[str] = []
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        if chattr and subprocess.run([chattr, "+i", str(directory)], capture_output=True).returncode == 0:
            undo = [chattr, "-i", str(directory)]
        else:
            directory.chmod(0o700)
            directory = Path("/proc/self")
    with pytest.raises(OSError):
        (directory / "probe").write_text("x")  # the premise of the test: it really is unwritable
    return directory, undo


def test_unwritable_data_dir(tmp_path):
    data, undo = _unwritable_dir(tmp_path)
    try:
        for command in (["serve", "--port", str(free_port())], ["compact"]):
            proc = dpdau(*command, env={"DATA_DIR": str(data)}, cwd=tmp_path)
            assert_one_clear_line(proc, "DATA_DIR", str(data), "not a writable directory")
        proc = dpdau("serve", env={"DATA_DIR": str(data / "sub")}, cwd=tmp_path)
        assert_one_clear_line(proc, "DATA_DIR", "sub")
    finally:
        if undo:
            subprocess.run(undo, check=True)
        if data.is_relative_to(tmp_path):
            data.chmod(0o700)


def test_dpdau_help_says_what_it_does_with_examples(tmp_path):
    proc = dpdau("--help", env={}, cwd=tmp_path)
    assert proc.returncode == 0
    assert "differential privacy" in proc.stdout and "examples:" in proc.stdout
    for command in ("serve", "ingest", "dau", "mau", "erase", "budget", "replay", "rotate-salt"):
        assert command in proc.stdout
    sub = dpdau("ingest", "--help", env={}, cwd=tmp_path)
    assert sub.returncode == 0 and "example:" in sub.stdout and "dpdau ingest events.jsonl" in sub.stdout
    assert "--retries" in sub.stdout and "--retry-for" in sub.stdout


@pytest.mark.parametrize("command", [["serve", "--host", "127.0.0.1"], ["replay"]], ids=["serve", "replay"])
def test_a_data_dir_held_by_a_running_server_is_one_line_and_exit_1(tmp_path, command):
    """Exit 1, not 2: nothing is wrong with the setting, the directory is busy (README
    "Configuration and deployment"). The refused process touches nothing; the running server
    keeps serving. A key is set so the open-access banner of a keyless start is not in the way."""
    data = tmp_path / "data"
    env = {"DATA_DIR": str(data), "API_KEY": "k" * 32}
    with ServerProcess(data, env) as first:
        assert first.http.post("/event", {"user_id": "u1", "op": "+", "day": "2025-03-03"})[0] == 200
        args = [*command, "--port", str(free_port())] if command[0] == "serve" else command
        second = dpdau(*args, env=env, cwd=tmp_path)
        assert second.returncode == 1, (second.returncode, second.stderr)
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        assert lines[0].startswith("dpdau: ") and str(data) in lines[0], lines[0]
        assert "in use by another dpdau process" in lines[0], lines[0]
        assert first.proc is not None and first.proc.poll() is None
        assert first.http.get("/healthz")[0] == 200
        assert first.http.get("/readyz")[0] == 200
        assert first.http.post("/event", {"user_id": "u2", "op": "+", "day": "2025-03-03"})[0] == 200
