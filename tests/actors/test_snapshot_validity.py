"""Which snapshot may be used after the journal was rewritten (purge, shredding, rotation).

The divergence of issue 12, reduced to its smallest form: a snapshot taken at position S holds a
user's activity; the user is erased at T > S; the purge rewrites every record before T without
the user *and* rewrites the tombstone itself (its key becomes None). Replaying the tail S..head
of the rewritten journal then never removes the user, so "snapshot + tail" resurrects what full
replay no longer has. A snapshot is valid only for the journal *epoch* (count of in-place
rewrites) it was taken at; the tests below hold restore == full replay across every rewrite and
crash window, in-process (copying the data directory is the crash image: what ``kill -9`` leaves).
"""

from __future__ import annotations

import anyio

from actors.erasure import purge_erased
from actors.state.world import World
from actors.system import restore_world
from actors.system.maintenance import write_snapshot
from journal import compaction
from journal import events as ev
from journal.location import JournalSpec
from journal.snapshots import SnapshotStore
from journal.store import SqliteJournal as Journal
from tests.support import crash_image, day, ingest, running_system, sqlite_spec
from tests.support import settings as engine_settings

D = day("2025-10-10")


async def restored_and_replayed(image: JournalSpec) -> tuple[World, World, int | None]:
    engine = engine_settings()
    journal = await image.open()
    try:
        restored, from_seq = await restore_world(journal, image.snapshot_store(), engine)
        full, _ = await restore_world(journal, None, engine, use_snapshot=False)
        return restored, full, from_seq
    finally:
        await journal.close()


async def test_minimal_a_snapshot_older_than_a_purge_is_never_used_after_it(tmp_path):
    engine = engine_settings()
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:
        keys = __import__("numpy").array([42, 43], dtype="int64")
        await journal.append([ev.ActivityBatchRecorded.from_arrays(keys, [D, D], [1, 1], received_at=1.0)])
        world, _ = await restore_world(journal, None, engine, use_snapshot=False)
        write_snapshot(journal, world, sqlite_spec(tmp_path))  # holds user 42 at seq 2
        (tomb,) = await journal.append([ev.UserErased(erasure_id="e1", key=42, requested_at=2.0)])
        await purge_erased(journal, [compaction.PurgeTarget("e1", 42, tomb.seq, 2.0)])

        restored, from_seq = await restore_world(journal, SnapshotStore(tmp_path / "snapshots"), engine)
        full, _ = await restore_world(journal, None, engine, use_snapshot=False)
        assert full.counts() == {D: 1}
        assert restored.counts() == full.counts()  # the stale snapshot resurrected user 42
        assert from_seq is None  # ... because it must not have been used at all
    finally:
        await journal.close()


async def test_crash_between_purge_commit_and_snapshot_rewrite(tmp_path):
    data = tmp_path / "data"
    async with running_system(data) as system:
        await ingest(system, [(42, D, 1), (43, D, 1)])
        await system.snapshot()  # holds user 42
        receipt = await system.erase(42)
        entry = system.erasure.book.entries[receipt.erasure_id]
        target = compaction.PurgeTarget(entry.erasure_id, 42, entry.seq, entry.requested_at)
        await system.committer.run_job(lambda journal: purge_erased(journal, [target]))
        image = await crash_image(system, tmp_path / "crashed")  # dies before the snapshots are rewritten

    restored, full, _ = await restored_and_replayed(image)
    assert full.counts() == {D: 1}
    assert restored.counts() == full.counts()

    async with running_system(image) as system:  # and the live system booted on it agrees
        assert {d: len(a.state.members()) for d, a in system.router.days.items()} == {D: 1}
        status = await system.erasure_status(receipt.erasure_id)
        assert status.status == "purged"  # boot finished the purge's job before ready


async def test_snapshot_collected_before_a_purge_and_saved_after_it_is_not_trusted(tmp_path):
    """The periodic snapshot captures state, then a purge commits while it is being written."""
    data = tmp_path / "data"
    async with running_system(data) as system:
        await ingest(system, [(42, D, 1), (43, D, 1)])
        real_collect = system.snapshots._collect
        purged = anyio.Event()

        async def collect_then_purge_commits():
            snap = await real_collect()  # state at S: user 42 present, tombstone not yet written
            receipt = await system.erase(42)
            entry = system.erasure.book.entries[receipt.erasure_id]
            target = compaction.PurgeTarget(entry.erasure_id, 42, entry.seq, entry.requested_at)
            await system.committer.run_job(lambda journal: purge_erased(journal, [target]))
            purged.set()
            return snap

        system.snapshots._collect = collect_then_purge_commits
        await system.snapshot()
        assert purged.is_set()
        image = await crash_image(system, tmp_path / "crashed")

    restored, full, _ = await restored_and_replayed(image)
    assert full.counts() == {D: 1}
    assert restored.counts() == full.counts()


async def test_offline_compact_leaves_a_snapshot_the_next_boot_uses(tmp_path):
    """``dpdau compact`` then start: the receipt says purged as soon as the server is ready."""
    from actors.system import maintenance

    data = tmp_path / "data"
    async with running_system(data) as system:
        await ingest(system, [(42, D, 1), (43, D, 1)])
        receipt = await system.erase(42)
    out = await maintenance.compact(engine_settings(), sqlite_spec(data))
    assert [p["erasure_id"] for p in out["purged"]] == [receipt.erasure_id]
    async with running_system(data) as system:
        assert system.restored_from is not None and system.restored_from >= system.journal.head - 1
        assert (await system.erasure_status(receipt.erasure_id)).status == "purged"
