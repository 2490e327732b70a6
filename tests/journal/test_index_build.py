"""The pseudonym index is built off the writer: collected on a read connection, written briefly,
and a collection made stale by a rewrite is refused rather than stored."""

from __future__ import annotations

import numpy as np
import pytest

from journal import events as ev
from journal.store import SqliteJournal as Journal


@pytest.fixture
def journal(sqlite_journal: Journal) -> Journal:
    """The SQLite journal's own behaviour (files, PRAGMAs, index); the backend contract that
    every backend keeps is ``test_backend_contract.py``."""
    return sqlite_journal


def batch(keys):
    keys = np.array(keys, dtype=np.int64)
    return ev.ActivityBatchRecorded.from_arrays(
        keys, np.zeros(len(keys)), np.ones(len(keys), np.uint8), received_at=0.0
    )


async def test_collected_postings_go_stale_after_a_rewrite(journal):
    stored = await journal.append([batch([1, 2, 3])])
    postings = await journal.collect_postings()
    assert postings is not None and postings.events == 3 and journal.index_watermark == 0  # nothing written yet
    async with journal.transaction():  # a purge-like rewrite in between
        await journal.replace_payload(stored[0].seq, batch([1, 2]))
    assert await journal.write_postings(postings) == 0 and journal.index_watermark == 0
    assert await journal.index_pending() == 2
    assert await journal.find_key(3) == [] and await journal.find_key(2) == [stored[0].seq]


async def test_appends_continue_while_postings_are_collected(journal):
    await journal.append([batch(list(range(1000)))])
    postings = await journal.collect_postings()
    more = await journal.append([batch([5000])])  # the writer was never held
    assert await journal.write_postings(postings) == 1000
    assert journal.index_watermark == more[0].seq - 1
    assert await journal.find_key(5000) == [more[0].seq]  # found in the unindexed tail
    assert await journal.index_pending() == 1 and journal.index_watermark == journal.head
