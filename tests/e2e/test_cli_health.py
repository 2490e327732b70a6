"""``dpdau health``: the probe the Docker HEALTHCHECK runs, against the real server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import ROOT, ServerProcess

pytestmark = pytest.mark.e2e


def health(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "health", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_health_and_ready_against_the_real_server_then_down(tmp_path):
    server = ServerProcess(tmp_path / "data", env={"API_KEY": "k" * 32})
    with server:
        # HOST=0.0.0.0 is what the container binds; the probe then asks loopback
        env = {"HOST": "0.0.0.0", "PORT": str(server.port), "API_KEY": "k" * 32}
        alive = health(env=env)
        assert alive.returncode == 0 and alive.stdout == "" and alive.stderr == "", alive.stderr
        assert health("--ready", env=env).returncode == 0
        wrong_key = health("--ready", env={**env, "API_KEY": "x" * 32})
        assert wrong_key.returncode == 1 and "401" in wrong_key.stderr  # /readyz needs the key, /healthz not
        server.stop()
    down = health(env=env)
    assert down.returncode == 1 and "cannot reach" in down.stderr and len(down.stderr.strip().splitlines()) == 1
