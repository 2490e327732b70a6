#!/usr/bin/env python3
"""Keep the double-brace placeholder tokens in the repository and the ledger in ``Placeholders.md`` in sync.

Rules:
1. Every token written as two opening braces, an UPPER_SNAKE name and two closing braces in a
   tracked text file must have a row in the ledger table of ``Placeholders.md``.
2. Every ledger row must name a token that still appears in the file its row points at.
3. Every ledger row fills all columns (file, token, description, type, constraints/example,
   default or REQUIRED).

Exit status 0 when in sync, 1 otherwise (with one line per problem). Standard library only, so
it runs before any virtualenv exists (``.ci/run`` calls it first, pre-commit calls it too).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

TOKEN = re.compile(r"\{\{([A-Z][A-Z0-9_]*)\}\}")
LEDGER = "Placeholders.md"
COLUMNS = 6  # file, token, description, type, constraints/example, default-or-REQUIRED
SKIP_DIRS = {".git", ".venv", "data", "__pycache__", ".pytest_cache", ".hypothesis", "build", "dist"}
TEXT_SUFFIXES = {
    ".py",
    ".md",
    ".toml",
    ".cfg",
    ".ini",
    ".txt",
    ".yaml",
    ".yml",
    ".json",
    ".sh",
    ".example",
    ".env",
    ".service",
    "",
}


def repo_files(root: Path) -> list[Path]:
    """Tracked and untracked-but-not-ignored files; falls back to a walk outside git."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        paths = [root / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in root.rglob("*") if p.is_file()]
    return [p for p in paths if p.is_file() and not (set(p.relative_to(root).parts) & SKIP_DIRS)]


def tokens_in_repo(root: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in repo_files(root):
        rel = path.relative_to(root).as_posix()
        if rel == LEDGER or (path.suffix not in TEXT_SUFFIXES and path.name not in {"Makefile", "run"}):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for name in TOKEN.findall(text):
            found.setdefault(name, set()).add(rel)
    return found


def ledger_rows(root: Path) -> tuple[dict[str, str], list[str]]:
    """Token -> file (path part of the 'file + line hint' column), and problems found."""
    rows: dict[str, str] = {}
    problems: list[str] = []
    path = root / LEDGER
    if not path.exists():
        return rows, [f"{LEDGER} is missing"]
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = TOKEN.findall(cells[1]) if len(cells) > 1 else []
        if not names:
            continue  # the header row
        if len(cells) != COLUMNS or not all(cells):
            problems.append(f"{LEDGER}:{lineno}: row for {names[0]} needs {COLUMNS} non-empty columns")
        where = cells[0].split()[0].strip("`").split(":")[0]
        if names[0] in rows:
            problems.append(f"{LEDGER}:{lineno}: {names[0]} listed twice")
        rows[names[0]] = where
    return rows, problems


def check(root: Path) -> list[str]:
    in_repo = tokens_in_repo(root)
    rows, problems = ledger_rows(root)
    for name, files in sorted(in_repo.items()):
        if name not in rows:
            problems.append(f"{{{{{name}}}}} used in {', '.join(sorted(files))} but missing from {LEDGER}")
    for name, where in sorted(rows.items()):
        if name not in in_repo:
            problems.append(f"{{{{{name}}}}} is in {LEDGER} but appears nowhere in the repository")
        elif where not in in_repo[name]:
            problems.append(
                f"{{{{{name}}}}}: {LEDGER} points at {where}, but it is used in {', '.join(sorted(in_repo[name]))}"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=Path(__file__).resolve().parent.parent, type=Path)
    args = parser.parse_args(argv)
    problems = check(args.root.resolve())
    for problem in problems:
        print(problem)
    if problems:
        print(f"placeholder check failed: {len(problems)} problem(s)")
        return 1
    print("placeholders in sync")
    return 0


if __name__ == "__main__":
    sys.exit(main())
