"""clients/ts: the committed types match the live server's OpenAPI, the client type-checks, and its
node test passes against the real server.

Needs Node >= 20 and ``npm ci`` in clients/ts (``make test`` runs it when npm exists). Without
them these tests are skipped, loudly; ``.ci/run`` sets ``DPDAU_REQUIRE_NODE=1``, which turns the
skip into a failure, so CI always runs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.support import ROOT

TS = ROOT / "clients" / "ts"
pytestmark = pytest.mark.e2e


def require_node() -> str:
    node = shutil.which("node")
    missing = (
        "node is not installed"
        if node is None
        else "clients/ts/node_modules is missing (run `npm ci` in clients/ts, or `make test` with npm installed)"
        if not (TS / "node_modules" / ".bin" / "tsc").exists()
        else None
    )
    if missing:
        if os.environ.get("DPDAU_REQUIRE_NODE"):
            pytest.fail(f"DPDAU_REQUIRE_NODE is set but {missing}")
        pytest.skip(f"TypeScript client NOT TESTED: {missing}")
    assert node is not None
    return node


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        cwd=TS,
        env={**os.environ, "DPDAU_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_committed_types_match_the_live_servers_openapi(tmp_path):
    node = require_node()
    fresh = tmp_path / "schema.d.ts"
    out = run(node, "scripts/generate.mjs", "--out", str(fresh))  # starts the real server, reads /openapi.json
    assert out.returncode == 0, out.stderr
    committed = (TS / "src" / "schema.d.ts").read_text()
    assert fresh.read_text() == committed, (
        "clients/ts/src/schema.d.ts is stale: the server's OpenAPI changed. "
        "Run `npm run generate` in clients/ts and commit the result (and fix src/index.ts if tsc complains)."
    )


def test_generation_is_deterministic(tmp_path):
    node = require_node()
    doc = tmp_path / "openapi.json"
    from gateway import openapi

    doc.write_text(__import__("json").dumps(openapi.document()))
    outputs = []
    for name in ("a.d.ts", "b.d.ts"):
        out = run(node, "scripts/generate.mjs", "--input", str(doc), "--out", str(tmp_path / name))
        assert out.returncode == 0, out.stderr
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]


def test_client_type_checks():
    require_node()
    out = run(str(TS / "node_modules" / ".bin" / "tsc"), "--noEmit")
    assert out.returncode == 0, out.stdout + out.stderr


def test_node_test_against_the_real_server():
    require_node()
    out = run(shutil.which("npm") or "npm", "test", timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "# fail 0" in out.stdout and "# pass " in out.stdout, out.stdout[-2000:]
