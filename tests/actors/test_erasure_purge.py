"""Purge bookkeeping: 'purged' is only reported once no file on disk holds the user."""

from __future__ import annotations

import anyio

from actors.erasure import purge_erased
from journal import compaction
from tests.support import day, ingest, running_system


def holds(data_dir, key: int) -> list[str]:
    needle = key.to_bytes(8, "little", signed=True)
    return [p.name for p in data_dir.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_crash_between_compaction_and_snapshot_rewrite_is_finished_at_boot(tmp_path):
    d = day("2025-10-10")
    async with running_system(tmp_path) as system:
        await ingest(system, [(42, d, 1), (43, d, 1)])
        await system.snapshot()  # a snapshot that holds user 42
        receipt = await system.erase(42)
        entry = system.erasure.book.entries[receipt.erasure_id]
        target = compaction.PurgeTarget(entry.erasure_id, 42, entry.seq, entry.requested_at)
        # the compaction commits, then the process "dies" before rewriting the snapshots
        await system.committer.run_job(lambda journal: purge_erased(journal, [target]))
        status = await system.erasure_status(receipt.erasure_id)
        assert status.status == "applied" and status.events_removed == 1
        assert any(name.endswith(".snap") for name in holds(tmp_path, 42))
    async with running_system(tmp_path) as system:
        with anyio.fail_after(10):
            while (await system.erasure_status(receipt.erasure_id)).status != "purged":
                await anyio.sleep(0.05)
        assert holds(tmp_path, 42) == []
        assert holds(tmp_path, 43)  # the search finds what is there


async def test_a_failed_purge_is_retried_and_the_system_keeps_serving(tmp_path):
    d = day("2025-10-11")
    async with running_system(tmp_path) as system:
        calls = []
        real = system.erasure._purge

        async def flaky(entries):
            calls.append(len(entries))
            if len(calls) == 1:
                raise OSError("disk full")
            await real(entries)

        system.erasure._purge = flaky
        system.erasure.purge_delay = 0.0
        system.erasure.retry_seconds = 0.05
        await ingest(system, [(42, d, 1), (43, d, 1)])
        receipt = await system.erase(42)
        with anyio.fail_after(10):
            while (await system.erasure_status(receipt.erasure_id)).status != "purged":
                await anyio.sleep(0.05)
        assert calls == [1, 1]
        await ingest(system, [(44, d, 1)])  # still serving
        assert holds(tmp_path, 42) == []
