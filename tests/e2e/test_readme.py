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
    with ServerProcess(tmp_path / "data") as server:
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
