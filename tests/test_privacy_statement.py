"""The README's privacy statement points every claim at a test: those tests must exist (a renamed
or deleted test would leave a claim unchecked while the README still says it is checked)."""

from __future__ import annotations

import ast
import re

from tests.support import ROOT


def claims() -> list[tuple[str, list[str]]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Privacy statement", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    out = []
    for row in rows:
        refs = [r for r in re.findall(r"`((?:[\w/]+\.py)?(?:::\w+)?)`", row.rsplit("|", 2)[-2]) if r]
        out.append((row.split("|")[1].strip(), refs))
    return out


def test_every_claim_points_at_tests_that_exist():
    found = claims()
    assert len(found) >= 15 and all(refs for _, refs in found), found
    last_file = None
    for number, refs in found:
        for ref in refs:
            path, _, name = ref.partition("::")
            file = ROOT / "tests" / path if path else last_file  # "::name" continues the previous file
            assert file is not None, (number, ref)
            assert file.exists(), (number, ref)
            last_file = file
            if name:
                tree = ast.parse(file.read_text())
                names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
                assert name in names, (number, ref)
