"""The README's "Reliability" section names, for each fault tried, the tests that prove it: those
tests must exist (a renamed or deleted test would leave a row saying a fault is checked when
nothing checks it any more)."""

from __future__ import annotations

import ast
import re

from tests.support import ROOT


def rows() -> list[tuple[str, list[str]]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Reliability\n", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| fault tried")]
    out = []
    for row in table:
        cells = row.strip("|").split(" | ")
        refs = re.findall(r"`((?:[\w/]+\.py)?::\w+|[\w/]+\.py)`", cells[-1])
        out.append((cells[0][:60], refs))
    return out


def test_every_fault_points_at_tests_that_exist():
    found = rows()
    assert len(found) >= 10 and all(refs for _, refs in found), found
    faults = " ".join(fault for fault, _ in found)
    for needle in ("kill -9", "disk full", "locked", "bit-flipped", "newer format", "PostgreSQL", "burst", "SIGTERM"):
        assert needle in faults, needle
    for fault, refs in found:
        last_file = None
        for ref in refs:
            path, _, name = ref.partition("::")
            file = ROOT / "tests" / path if path else last_file  # "::name" continues the previous file
            assert file is not None and file.exists(), (fault, ref)
            last_file = file
            if name:
                tree = ast.parse(file.read_text())
                names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
                assert name in names, (fault, ref)
