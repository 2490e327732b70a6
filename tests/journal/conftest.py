from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from journal.store import SqliteJournal as Journal
from tests.journal.helpers import DB_NAME


@pytest.fixture
def db_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
async def journal(db_dir: Path) -> AsyncIterator[Journal]:
    j = await Journal.open(db_dir / DB_NAME)
    try:
        yield j
    finally:
        await j.close()
