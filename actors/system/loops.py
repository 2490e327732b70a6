"""Background loops of the running system: indexing, periodic snapshots.

Rules:
1. Each loop is started by ``ActorSystem`` inside its task group (never fire-and-forget) and
   runs until cancelled at shutdown.
2. Work that writes goes through the committer (``run_job``), never around it; reads and sorts
   happen off the writer (a read connection and a worker thread).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import structlog

from actors.settings import EngineSettings
from actors.system.snapshotting import Snapshotter
from journal.events import StoredRecord
from journal.groupcommit import Committer
from journal.store import Journal, Postings

log = structlog.get_logger("actors.system")


async def index_loop(journal: Journal, committer: Committer, settings: EngineSettings) -> None:
    """Index in big steps: when enough is unindexed, or when ingest has been quiet for a whole
    interval (small increments would mean many segments and frequent merges)."""
    seen = journal.head
    while True:
        await anyio.sleep(settings.index_idle_seconds)
        head = journal.head
        lag = head - journal.index_watermark
        if lag >= settings.index_every_events or (lag > 0 and head == seen):
            # Read and sort off the writer (read connection + worker thread); only the short
            # write of the result takes the committer's exclusive slot.
            postings = await journal.collect_postings()
            if postings is not None:
                await committer.run_job(_writer(postings))
        seen = journal.head


def _writer(postings: Postings) -> Callable[[Journal], Awaitable[list[StoredRecord]]]:
    async def write(journal: Journal) -> list[StoredRecord]:
        await journal.write_postings(postings)
        return []

    return write


async def snapshot_loop(snapshots: Snapshotter, head: Callable[[], int], settings: EngineSettings) -> None:
    last = time.monotonic()
    while True:
        await anyio.sleep(1.0)
        behind = head() - snapshots.last_seq
        due = behind >= settings.snapshot_every_events or (
            behind > 0 and time.monotonic() - last >= settings.snapshot_every_seconds
        )
        if due:
            try:
                await snapshots.write()
            except Exception as exc:
                log.error("snapshot_failed", error=repr(exc))
            last = time.monotonic()
