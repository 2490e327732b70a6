"""After a purge no idempotency answer depends on the erased user -- also for a key the in-memory
index no longer holds (older than ``IDEMPOTENCY_KEYS_KEPT``), where PostgreSQL answers from the
journal's ``idempotency`` table (ingest rule 3) and the journal keeps the digests of the batches
the purge did not rewrite (idempotency rule 5)."""

from __future__ import annotations

import pytest

from actors.refusals import IdempotencyConflict
from tests.support import day, ingest, running_system
from tests.support import settings as engine_settings

D = day("2025-04-02")
ALICE, BOB, CAROL, DAVE, ZED = 11, 12, 13, 14, 99


async def answer(system, rows, key):
    try:
        _, replayed = await ingest(system, rows, key)
    except IdempotencyConflict:
        return "conflict"
    return "replayed" if replayed else "written"


async def test_a_retry_under_a_key_older_than_the_index_says_nothing_about_the_erased_user(journal_spec):
    async with running_system(journal_spec, engine_settings(idempotency_keys_kept=1)) as system:
        await ingest(system, [(ALICE, D, 1), (BOB, D, 1)], "c:with-alice")
        await ingest(system, [(CAROL, D, 1)], "c:without-alice")
        await ingest(system, [(DAVE, D, 1)], "c:newest")  # the index now holds only this key
        assert system.ingest_service.index.lookup("c:with-alice") is None
        await system.erase(ALICE)
        await system._purge(system.erasure.book.outstanding())
        assert not system.erasure.book.outstanding()
        with_alice = await answer(system, [(ALICE, D, 1), (ZED, D, 1)], "c:with-alice")  # a changed batch
        without_alice = await answer(system, [(DAVE, D, 1), (ZED, D, 1)], "c:without-alice")  # changed too
    # the same answer whether or not the batch held the erased user: no oracle
    assert with_alice == without_alice


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_before_any_purge_an_old_key_with_a_changed_batch_is_still_a_conflict(journal_spec):
    """The rule above forgets digests only across a purge: a plain reuse stays a client error."""
    async with running_system(journal_spec, engine_settings(idempotency_keys_kept=1)) as system:
        await ingest(system, [(CAROL, D, 1)], "c:old")
        await ingest(system, [(DAVE, D, 1)], "c:newest")
        assert system.ingest_service.index.lookup("c:old") is None
        assert await answer(system, [(ZED, D, 1)], "c:old") == "conflict"
        assert await answer(system, [(CAROL, D, 1)], "c:old") == "replayed"
