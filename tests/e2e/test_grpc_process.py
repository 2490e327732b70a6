"""``dpdau serve --grpc-port``: the real process serves HTTP and gRPC over one system."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import grpc
import pytest

from gateway import rpc
from tests.e2e.test_bad_config import assert_one_clear_line
from tests.support import ROOT, Http, free_port

pytestmark = pytest.mark.e2e


def test_serve_with_grpc_port(tmp_path):
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "RELEASE_SCHEDULE": "on-demand"}
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--grpc-port", str(grpc_port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        http = Http(f"http://127.0.0.1:{port}")

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                return http.get("/readyz", timeout=2)[0] == 200
            except OSError:
                return False

        deadline = time.monotonic() + 60
        while not ready():
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.05)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            ingest = channel.unary_unary(f"/{rpc.SERVICE}/Ingest")
            body = {"events": [{"user_id": f"g{i}", "op": "+", "day": "2025-07-01"} for i in range(10)]}
            assert json.loads(ingest(json.dumps(body).encode(), timeout=30))["ingested"] == 10
            dau = channel.unary_unary(f"/{rpc.SERVICE}/Dau")
            over_grpc = json.loads(dau(b'{"day": "2025-07-01"}', timeout=60))
        assert over_grpc == http.get("/dau/2025-07-01")[1]  # the same record over both transports
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        log.close()


def test_grpc_port_in_use_is_a_configuration_error(tmp_path):
    grpc_port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", grpc_port))
        holder.listen()
        proc = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(free_port()), "--grpc-port", str(grpc_port)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT), "DATA_DIR": str(tmp_path / "data")},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert_one_clear_line(proc, "--grpc-port", str(grpc_port), "in use")
