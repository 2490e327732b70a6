from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from journal.backend import JournalBackend
from journal.location import JournalSpec
from journal.store import SqliteJournal
from tests.journal.helpers import DB_NAME


@pytest.fixture
def db_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture
async def journal(journal_spec: JournalSpec) -> AsyncIterator[JournalBackend]:
    """Every backend in turn (tests that hold for any journal)."""
    j = await journal_spec.open()
    try:
        yield j
    finally:
        await j.close()


@pytest.fixture
async def sqlite_journal(db_dir: Path) -> AsyncIterator[SqliteJournal]:
    """The SQLite journal in ``db_dir`` (tests of its own files, PRAGMAs and index)."""
    j = await SqliteJournal.open(db_dir / DB_NAME)
    try:
        yield j
    finally:
        await j.close()
