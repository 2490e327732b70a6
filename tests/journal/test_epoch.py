"""The journal epoch (store.py rule 5) and the snapshot checks built on it (snapshots.py rule 2)."""

from __future__ import annotations

import sqlite3

import pytest

from actors.erasure import purge_erased
from journal import compaction, faults
from journal.backend import JournalTooNew
from journal.snapshots import SnapshotStore
from journal.store import FORMAT, Journal
from tests.journal.helpers import DB_NAME, batch, erased

JID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def journal(sqlite_journal: Journal) -> Journal:
    """The SQLite journal's epoch and fault points (the PostgreSQL epoch is in journal_head)."""
    return sqlite_journal


async def test_a_rewrite_moves_the_epoch_in_its_own_transaction(db_dir):
    journal = await Journal.open(db_dir / DB_NAME)
    await journal.append([batch([1, 2])])
    assert journal.epoch == 0
    async with journal.transaction():
        await journal.replace_payload(1, batch([1]))
        assert journal.epoch == 0  # not before the commit
    assert journal.epoch == 1
    async with journal.transaction():  # a transaction that rewrites nothing leaves it alone
        await journal.append_in_transaction([batch([3])])
    assert journal.epoch == 1
    await journal.close()
    reopened = await Journal.open(db_dir / DB_NAME)
    try:
        assert reopened.epoch == 1
    finally:
        await reopened.close()


async def test_a_rolled_back_rewrite_leaves_the_epoch(journal, db_dir):
    await journal.append([batch([1, 2])])
    with pytest.raises(RuntimeError):
        async with journal.transaction():
            await journal.replace_payload(1, batch([1]))
            raise RuntimeError("boom")
    assert journal.epoch == 0
    assert (await journal.record_at(1)).event.key_array().tolist() == [1, 2]


async def test_a_failed_commit_rolls_back_content_and_epoch(journal):
    await journal.append([batch([1, 2])])
    faults.arm("journal.rewrite_commit", "raise:full*1")
    try:
        with pytest.raises(sqlite3.OperationalError, match="full"):
            async with journal.transaction():
                await journal.replace_payload(1, batch([1]))
    finally:
        faults.disarm()
    assert journal.epoch == 0 and not journal._db.in_transaction
    assert (await journal.record_at(1)).event.key_array().tolist() == [1, 2]
    async with journal.transaction():  # and the journal keeps working
        await journal.replace_payload(1, batch([1]))
    assert journal.epoch == 1


async def test_rewrites_outside_a_transaction_are_refused(journal):
    await journal.append([batch([1, 2])])
    with pytest.raises(RuntimeError, match=r"inside Journal.transaction"):
        await journal.replace_payload(1, batch([1]))


async def test_an_interrupted_vacuum_is_remembered(db_dir):
    journal = await Journal.open(db_dir / DB_NAME)
    await journal.append([batch([7, 8])])
    (tomb,) = await journal.append([erased(7)])
    faults.arm("journal.after_rebuild", "raise:eio*1")
    try:
        with pytest.raises(OSError):
            await purge_erased(journal, [compaction.PurgeTarget("er-1", 7, tomb.seq, 1.0)])
    finally:
        faults.disarm()
    assert journal.epoch == 1 and journal.needs_rebuild  # the purge committed; its VACUUM did not finish
    await journal.close()
    reopened = await Journal.open(db_dir / DB_NAME)
    try:
        assert reopened.needs_rebuild
        await reopened.rebuild()
        assert not reopened.needs_rebuild
    finally:
        await reopened.close()


async def test_a_journal_from_a_newer_version_is_refused_at_open(db_dir):
    j = await Journal.open(db_dir / DB_NAME)
    await j.close()
    with sqlite3.connect(db_dir / DB_NAME) as db:
        db.execute("UPDATE meta SET value = ? WHERE name = 'format'", (str(FORMAT + 1),))
    with pytest.raises(JournalTooNew, match=r"newer dpdau \(journal format 2"):
        await Journal.open(db_dir / DB_NAME)


def test_a_snapshot_of_another_epoch_is_skipped_with_its_reason(tmp_path, caplog):
    store = SnapshotStore(tmp_path / "snapshots")
    store.save(b"before the purge", last_seq=5, journal_id=JID, payload_version=1, epoch=3)
    assert store.load_latest(journal_id=JID, head=10, payload_version=1, epoch=4) is None
    with pytest.raises(ValueError, match="stale: taken at journal epoch 3, the journal is at epoch 4"):
        store.check(store.list()[0], journal_id=JID, head=10, payload_version=1, epoch=4)
    info, payload = store.load_latest(journal_id=JID, head=10, payload_version=1, epoch=3)
    assert (info.epoch, payload) == (3, b"before the purge")


def test_sweep_deletes_stale_epochs_and_interrupted_writes_only(tmp_path):
    store = SnapshotStore(tmp_path / "snapshots", keep=10)
    store.save(b"old", last_seq=5, journal_id=JID, payload_version=1, epoch=1)
    current = store.save(b"current", last_seq=6, journal_id=JID, payload_version=1, epoch=2)
    foreign = store.save(b"other journal", last_seq=7, journal_id="f" * 32, payload_version=1, epoch=0)
    (store.directory / "snapshot-00000000000000000009.tmp").write_bytes(b"half written")
    v1 = store.directory / "snapshot-00000000000000000001.snap"
    v1.write_bytes(b"DPDAUSNP\x01\x00" + b"\x00" * 200)  # container format 1: no epoch, never trusted
    removed = store.sweep(journal_id=JID, epoch=2)
    assert sorted(removed) == sorted(
        ["snapshot-00000000000000000005.snap", "snapshot-00000000000000000009.tmp", v1.name]
    )
    assert sorted(store.list()) == sorted([current, foreign])
