"""The architecture as a test: the layout, and imports pointing gateway -> actors -> journal.

The pure core (``actors/privacy``, ``actors/state``, ``actors/sketches`` and the plain-data
modules beside them) does no I/O and knows no event loop: it may not import anyio, aiosqlite,
aiohttp or asyncio, so replay, snapshots and the evaluation can call it directly.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {"journal": set(), "actors": {"journal"}, "gateway": {"actors", "journal"}}
PURE = [
    ROOT / "actors" / "privacy",
    ROOT / "actors" / "state",
    ROOT / "actors" / "sketches",
    ROOT / "actors" / "settings.py",
    ROOT / "actors" / "refusals.py",
    ROOT / "journal" / "events.py",
]
IO_MODULES = {"anyio", "aiosqlite", "aiohttp", "asyncio", "asyncpg", "psycopg", "structlog", "sqlite3", "socket"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def full_imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(target: Path) -> list[Path]:
    return [target] if target.suffix == ".py" else sorted(target.rglob("*.py"))


def test_top_level_layout():
    for name in (
        "README.md",
        "HANDOFF.md",
        "Placeholders.md",
        "pyproject.toml",
        "Makefile",
        "LICENSE",
        ".ci/run",
        "actors",
        "journal",
        "gateway",
        "tests",
        "eval",
        "tools",
        "scripts",
        "tools/check_placeholders.py",
    ):
        assert (ROOT / name).exists(), name


def test_actors_package_shows_the_architecture():
    actors = ROOT / "actors"
    for sub in ("runtime", "privacy", "state", "sketches", "system"):
        init = actors / sub / "__init__.py"
        assert init.exists(), sub
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"actors/{sub}/__init__.py needs a docstring that maps the package"
    assert ast.get_docstring(ast.parse((actors / "__init__.py").read_text()))


def test_imports_point_one_way():
    for package, allowed in ALLOWED.items():
        forbidden = set(ALLOWED) - allowed - {package}
        for path in (ROOT / package).rglob("*.py"):
            bad = imports_of(path) & forbidden
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_pure_core_does_no_io():
    checked = 0
    for target in PURE:
        for path in _files(target):
            bad = imports_of(path) & IO_MODULES
            assert not bad, f"{path.relative_to(ROOT)} is pure but imports {bad}"
            # ... nor may it reach I/O through the impure parts of the service
            impure = {
                m
                for m in full_imports_of(path)
                if m.startswith(("actors.runtime", "actors.system", "journal.store", "journal.groupcommit", "gateway"))
            }
            assert not impure, f"{path.relative_to(ROOT)} is pure but imports {impure}"
            checked += 1
    assert checked >= 15


def test_service_code_never_imports_random():
    for package in ALLOWED:
        for path in (ROOT / package).rglob("*.py"):
            assert "random" not in imports_of(path), path


# The journal's implementations and their drivers: only ``journal/`` may know them (issue 9: the
# backend interface is ``journal/backend.py``, opened by ``journal/location.py`` from JOURNAL_URL).
BACKEND_SPECIFIC = {"journal.store", "journal.postgres", "sqlite3", "aiosqlite", "asyncpg", "psycopg"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, ``from journal import store`` counted as ``journal.store``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_nothing_above_the_journal_knows_its_backend():
    checked = 0
    for package in ("actors", "gateway"):
        for path in (ROOT / package).rglob("*.py"):
            bad = {m for m in imported_modules(path) if any(m == b or m.startswith(b + ".") for b in BACKEND_SPECIFIC)}
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}: use journal.backend / journal.location"
            checked += 1
    assert checked >= 40
