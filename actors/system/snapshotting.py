"""Snapshots of the live system: captured without a global pause, written atomically.

Rules:
1. A snapshot is a ``WorldSnapshot``: each component is captured at its own position through a
   barrier message in its own mailbox (``world.py`` rule 2), so ingest never stops for it.
2. The journal epoch is read *before* the capture starts and written into the header: a rewrite
   that commits while the state is being captured or saved makes the file stale (skipped at
   load), never a pre-rewrite state labelled as post-rewrite (``journal.snapshots`` rule 2).
3. Snapshots hold pseudonyms. After a purge or a shredding (``dirty``), ``replace_all`` writes a
   fresh one and deletes every other; only then is ``clean_seq`` advanced, which is what lets an
   erasure receipt say ``purged``. A failed replacement leaves ``dirty`` set and is retried by
   the snapshot loop until it succeeds (a full disk, then space again).
4. One snapshot at a time (a lock): two writers could otherwise race on ``replace_all``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import structlog

from actors.state import world as world_mod
from actors.state.world import WorldSnapshot
from journal import faults
from journal.snapshots import SnapshotStore

log = structlog.get_logger("actors.system")

Collect = Callable[[], Awaitable[WorldSnapshot]]


class Snapshotter:
    def __init__(
        self,
        store: SnapshotStore,
        collect: Collect,
        journal_id: Callable[[], str],
        epoch: Callable[[], int],
        position: Callable[[], int],
    ) -> None:
        self.store = store
        self._collect = collect
        self._journal_id = journal_id
        self._epoch = epoch  # the journal's epoch now
        self._position = position  # everything up to here has been dispatched to the actors
        self._lock = anyio.Lock()
        self.last_seq = 0  # position of the newest snapshot written (or restored from)
        self.clean_seq = 0  # every snapshot file on disk was written at or after this position ...
        self.clean_epoch = 0  # ... and at this journal epoch (rule 3)
        self._clean = False  # set by mark_clean / a successful replace_all
        self.failures = 0

    @property
    def dirty(self) -> bool:
        """A rewrite committed since the files on disk were written: they must be replaced."""
        return not self._clean or self.clean_epoch != self._epoch()

    def mark_clean(self) -> None:
        """Boot: every file on disk was checked to be current (swept, none older than a purge)."""
        self.clean_epoch, self.clean_seq, self._clean = self._epoch(), self._position(), True

    async def write(self, *, replace_all: bool = False) -> Path:
        async with self._lock:
            epoch, position = self._epoch(), self._position()  # rule 2: before the capture
            snap = await self._collect()
            payload = await anyio.to_thread.run_sync(world_mod.encode, snap)
            try:
                path = await anyio.to_thread.run_sync(
                    lambda: self.store.save(
                        payload,
                        last_seq=snap.last_seq,
                        journal_id=self._journal_id(),
                        payload_version=world_mod.FORMAT,
                        epoch=epoch,
                    )
                )
                faults.hit("snapshot.after_save")
                if replace_all:
                    for other in self.store.list():
                        if other != path:
                            other.unlink(missing_ok=True)
            except BaseException:
                self.failures += 1
                raise
            if replace_all:
                self.clean_epoch, self._clean = epoch, True
                self.clean_seq = max(self.clean_seq, position)
            self.last_seq = snap.last_seq
            log.info("snapshot_written", seq=snap.last_seq, epoch=epoch, bytes=len(payload), replace_all=replace_all)
            return path

    async def replace_all(self) -> None:
        """Rule 3: a fresh snapshot, then no other."""
        await self.write(replace_all=True)
