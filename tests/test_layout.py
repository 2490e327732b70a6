"""The architecture as a test: the layout DESIGN.md fixes, and imports pointing gateway -> actors -> journal."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {"journal": set(), "actors": {"journal"}, "gateway": {"actors", "journal"}}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_top_level_layout():
    for name in ("README.md", "HANDOFF.md", "Placeholders.md", "pyproject.toml", "Makefile", "LICENSE", ".ci/run",
                 "actors", "journal", "gateway", "tests", "eval", "tools", "scripts", "tools/check_placeholders.py"):
        assert (ROOT / name).exists(), name


def test_imports_point_one_way():
    for package, allowed in ALLOWED.items():
        forbidden = set(ALLOWED) - allowed - {package}
        for path in (ROOT / package).rglob("*.py"):
            bad = imports_of(path) & forbidden
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_service_code_never_imports_random():
    for package in ALLOWED:
        for path in (ROOT / package).rglob("*.py"):
            assert "random" not in imports_of(path), path
