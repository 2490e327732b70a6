"""schemathesis (from PyPI) against the live server: the OpenAPI document tells the truth.

The server runs with scoped keys configured (READ / INGEST / ADMIN and the all-scopes API_KEY);
schemathesis reads the document the server serves, authenticates through the document's own
``apiKey`` scheme (``tests/e2e/schemathesis.toml``), and runs its default checks -- no server
error, every status and header documented, responses match their schemas, schema-valid requests
accepted and schema-violating ones refused, undeclared methods answered 405 with ``Allow``,
requests without the key refused -- with a bounded number of examples per operation and a fixed
seed. Zero failures, zero 5xx.

Marked ``fuzz``: ``.ci/run`` runs it in its own block (about a minute); ``make test`` leaves it
out. ``FUZZ_EXAMPLES`` / ``FUZZ_SEED`` change the bounds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.support import ROOT, ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

KEYS = {
    "API_KEY": "fuzz-all-scopes-" + "a" * 24,
    "READ_API_KEY": "fuzz-read-" + "r" * 24,
    "INGEST_API_KEY": "fuzz-ingest-" + "i" * 24,
    "ADMIN_API_KEY": "fuzz-admin-" + "d" * 24,
}


def test_schemathesis_finds_no_disagreement_between_the_document_and_the_server(tmp_path, capsys):
    st = shutil.which("st", path=os.path.dirname(sys.executable))
    assert st is not None, "schemathesis is a dev dependency (make setup)"
    examples = os.environ.get("FUZZ_EXAMPLES", "100")
    seed = os.environ.get("FUZZ_SEED", "20251009")
    with ServerProcess(tmp_path / "data", KEYS) as server:
        status, doc, _ = server.http.get("/openapi.json", headers={"X-API-Key": KEYS["API_KEY"]})
        assert status == 200
        operations = [(m, p) for p, ops in doc["paths"].items() for m in ops]
        secured = [op for ops in doc["paths"].values() for op in ops.values() if op["security"]]
        assert secured, "keys are configured: the document must declare them"
        document = tmp_path / "openapi.json"
        document.write_text(json.dumps(doc))
        run = subprocess.run(
            [
                st,
                "--config-file",
                str(ROOT / "tests" / "e2e" / "schemathesis.toml"),
                "run",
                str(document),
                "--url",
                f"http://127.0.0.1:{server.port}",
                "--max-examples",
                examples,
                "--seed",
                seed,
                "--workers",
                "1",  # CPython 3.11.7's ast is not thread-safe (hypothesis reads lambda sources)
                "--no-color",
            ],
            cwd=tmp_path,
            env={**os.environ, "DPDAU_FUZZ_API_KEY": KEYS["API_KEY"], "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=900,
        )
        log = server.log()
    cases = re.search(r"(\d+) generated, (.*)", run.stdout)
    with capsys.disabled():
        print(
            f"\nschemathesis {examples} examples/operation, seed {seed}: {len(operations)} operations, "
            f"{cases.group(0) if cases else 'no summary'}"
        )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
    assert "unhandled_error" not in log  # no 500 slipped through unreported
