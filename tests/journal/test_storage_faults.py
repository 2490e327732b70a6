"""Storage faults at the journal boundary, on every backend (groupcommit rule 8, journal.storage).

A failed write acknowledges nothing; a write that failed *after* committing is found and handed
to the actors before anything else is written; a journal that cannot be reached makes the
committer refuse work at once (never hang) and come back by itself. Faults are injected at the
journal boundary (``journal/faults.py``); the real disk-full and locked-database cases run
against the real server in ``tests/e2e/test_storage_faults.py``.
"""

from __future__ import annotations

import errno
import sqlite3

import anyio
import asyncpg
import pytest

from journal import faults
from journal.groupcommit import Closed
from journal.storage import StorageFull, StorageUnavailable, classify
from tests.journal.helpers import batch, read_all
from tests.journal.test_groupcommit import Recorder, running


@pytest.fixture(autouse=True)
def _disarm():
    yield
    faults.disarm()


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (sqlite3.OperationalError("database or disk is full"), "full"),
        (sqlite3.OperationalError("database is locked"), "busy"),
        (sqlite3.OperationalError("disk I/O error"), "failed"),
        (sqlite3.DatabaseError("database disk image is malformed"), "failed"),
        (sqlite3.IntegrityError("UNIQUE constraint failed: journal.seq"), None),
        (OSError(errno.ENOSPC, "No space left on device"), "full"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "full"),
        (OSError(errno.EIO, "Input/output error"), "failed"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "busy"),
        (TimeoutError(), "busy"),
        (asyncpg.exceptions.DiskFullError("could not extend file"), "full"),
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"), "busy"),
        (asyncpg.exceptions.InterfaceError("connection is closed"), "busy"),
        (asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"), "busy"),
        (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), "busy"),
        (asyncpg.exceptions.SerializationError("could not serialize access"), "busy"),
        (asyncpg.exceptions.PostgresIOError("could not write block"), "failed"),
        (asyncpg.exceptions.DataCorruptedError("invalid page"), "failed"),
        (asyncpg.exceptions.UniqueViolationError("duplicate key"), None),
        (ValueError("a bug"), None),
    ],
)
def test_classify(exc, kind):
    assert classify(exc) == kind


async def test_a_full_disk_acknowledges_nothing_and_the_next_group_succeeds(journal):
    rec = Recorder()
    faults.arm("journal.append", "raise:full*2")
    async with running(journal, rec) as c:
        for _ in range(2):
            with pytest.raises(StorageFull) as info:
                await c.submit([batch([1, 2])])
            assert info.value.retry_after > 0 and isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert journal.head == 0 and rec.records == []  # nothing stored, nothing dispatched
        (stored,) = await c.submit([batch([3])])  # space is back: no restart, no intervention
        assert (stored.seq, c.failure, c.unsettled) == (1, None, None)
        assert c.stats.failures_by_kind == {"full": 2}
    assert [r.seq for r in await read_all(journal)] == [1]


async def test_a_commit_whose_acknowledgement_was_lost_is_found_and_dispatched(journal):
    """The write committed but the caller heard an error (a connection lost after COMMIT): the
    request is not acknowledged, yet the actors see the records before anything else is written,
    so the live state equals the journal."""
    rec = Recorder()
    faults.arm("journal.after_append", "raise:eio*1")
    async with running(journal, rec) as c:
        with pytest.raises(StorageUnavailable):
            await c.submit([batch([1, 2, 3])])
        assert journal.head == 3 and [r.seq for r in rec.records] == [1]  # found, dispatched
        assert c.stats.found_after_failure == 1
        (after,) = await c.submit([batch([4])])
        assert after.seq == 4  # no position reused, nothing overwritten
    assert [(r.seq, r.last_seq) for r in await read_all(journal)] == [(1, 3), (4, 4)]


async def test_an_unreachable_journal_refuses_work_at_once_and_comes_back(journal):
    rec = Recorder()
    faults.arm("journal.append", "raise:busy*1")  # the write fails ...
    faults.arm("journal.refresh_head", "raise:busy*4")  # ... and the journal cannot even be asked
    async with running(journal, rec) as c:
        queued = [c.submit([batch([i])]) for i in range(1, 4)]
        for fut in queued:
            with pytest.raises(StorageUnavailable):
                await fut
        assert c.unsettled is not None
        with pytest.raises(StorageUnavailable):  # refused at the door while unsettled, not queued
            c.submit([batch([9])])
        with anyio.fail_after(20):
            while c.unsettled is not None:  # settles by itself once the journal answers
                await anyio.sleep(0.05)
        (stored,) = await c.submit([batch([5])])
        assert stored.seq == 1 and c.failure is None
        assert c.stats.failures_by_kind == {"busy": 1}
        assert c.stats.unsettled == 1  # one episode, however many settle attempts it took
    assert [r.seq for r in await read_all(journal)] == [1]


async def test_shutdown_while_unsettled_ends_cleanly(journal):
    rec = Recorder()
    faults.arm("journal.append", "raise:busy*1")
    faults.arm("journal.refresh_head", "raise:busy")
    async with running(journal, rec) as c:
        with pytest.raises(StorageUnavailable):
            await c.submit([batch([1])])
        assert c.unsettled is not None
    with pytest.raises(Closed):
        c.submit([batch([2])])


async def test_postgresql_connection_lost_mid_transaction_then_reconnected(pg_url):
    """The writer's backend is terminated while its group waits inside the transaction (the head
    row is locked by another session): nothing of the group is committed or acknowledged, the
    request is answered 'busy', and the next group reconnects and commits, with no gap."""
    from journal.postgres import PostgresJournal

    journal = await PostgresJournal.open(pg_url)
    other = await asyncpg.connect(pg_url)
    try:
        rec = Recorder()
        async with running(journal, rec) as c:
            (first,) = await c.submit([batch([1])])
            writer_pid = journal._conn.get_server_pid()
            blocker = other.transaction()
            await blocker.start()
            await other.execute("SELECT head FROM journal_head WHERE id = 1 FOR UPDATE")
            stuck = c.submit([batch([2, 3])])
            with anyio.fail_after(20):  # the writer is now waiting for the row lock, mid-transaction
                while not await other.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'", writer_pid
                ):
                    await anyio.sleep(0.02)
            assert await other.fetchval("SELECT pg_terminate_backend($1)", writer_pid)
            with pytest.raises(StorageUnavailable) as info:
                await stuck
            assert info.value.kind == "busy"
            await blocker.rollback()
            (after,) = await c.submit([batch([4])])  # reconnected by itself
            assert after.seq == first.last_seq + 1 and c.failure is None and c.unsettled is None
            assert journal._conn.get_server_pid() != writer_pid
        assert [r.seq for r in await read_all(journal)] == [1, 2]
        assert [r.seq for r in rec.records] == [1, 2]  # the live state saw exactly the journal
    finally:
        await other.close()
        await journal.close()
