"""Snapshots of the live system: captured without a global pause, written atomically.

Rules:
1. A snapshot is a ``WorldSnapshot``: each component is captured at its own position through a
   barrier message in its own mailbox (``world.py`` rule 2), so ingest never stops for it.
2. Snapshots hold pseudonyms. After a purge or a shredding, ``replace_all`` writes a fresh one
   and deletes every other; only then is ``clean_seq`` advanced, which is what lets an erasure
   receipt say ``purged``.
3. One snapshot at a time (a lock): two writers could otherwise race on ``replace_all``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import structlog

from actors.state import world as world_mod
from actors.state.world import WorldSnapshot
from journal.snapshots import SnapshotStore

log = structlog.get_logger("actors.system")

Collect = Callable[[], Awaitable[WorldSnapshot]]


class Snapshotter:
    def __init__(self, store: SnapshotStore, collect: Collect, journal_id: Callable[[], str]) -> None:
        self.store = store
        self._collect = collect
        self._journal_id = journal_id
        self._lock = anyio.Lock()
        self.last_seq = 0  # position of the newest snapshot written (or restored from)
        self.clean_seq = 0  # every snapshot file on disk was written at or after this position

    async def write(self, *, replace_all: bool = False) -> Path:
        async with self._lock:
            snap = await self._collect()
            payload = await anyio.to_thread.run_sync(world_mod.encode, snap)
            path = await anyio.to_thread.run_sync(
                lambda: self.store.save(
                    payload, last_seq=snap.last_seq, journal_id=self._journal_id(), payload_version=world_mod.FORMAT
                )
            )
            if replace_all:
                for other in self.store.list():
                    if other != path:
                        other.unlink(missing_ok=True)
            self.last_seq = snap.last_seq
            log.info("snapshot_written", seq=snap.last_seq, bytes=len(payload))
            return path

    async def replace_all(self, dispatched_seq: int) -> None:
        """Rule 2: a fresh snapshot, then no other; ``dispatched_seq`` was read before writing."""
        await self.write(replace_all=True)
        self.clean_seq = max(self.clean_seq, dispatched_seq)
