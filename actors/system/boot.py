"""Boot: how the state is rebuilt from a journal (whichever backend) and its snapshots.

Rules:
1. The state is always ``World.apply`` over the journal, from the newest snapshot that passes
   every check (``journal.snapshots`` rule 2, including the journal epoch: a snapshot taken before
   a purge, a shredding or a rotation is never used after it) or from the start. A snapshot that
   checks out but does not decode is skipped, never trusted.
2. Nothing here writes: the caller decides what to do with the rebuilt world.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from pathlib import Path

import anyio
import structlog

from actors.settings import EngineSettings
from actors.state import world as world_mod
from actors.state.world import World
from journal import events as ev
from journal.backend import JournalBackend, JournalTooNew
from journal.snapshots import SnapshotStore

log = structlog.get_logger("actors.system")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def snapshot_seq(path: Path) -> int:
    """The journal position a snapshot file was written at (from its name)."""
    try:
        return int(path.stem.split("-")[-1])
    except ValueError:
        return 0


async def restore_world(
    journal: JournalBackend,
    store: SnapshotStore | None,
    settings: EngineSettings,
    *,
    use_snapshot: bool = True,
    partitions: Collection[int] | None = None,
) -> tuple[World, int | None]:
    """Newest valid snapshot + tail replay (or full replay). Returns (world, snapshot seq or None).
    ``partitions``: the pseudonym partitions this process holds (``topology``; None = all) -- the
    snapshot store must be this process's own, holding the same ones."""
    world, start, from_seq = None, 0, None
    if use_snapshot and store is not None:
        loaded = store.load_latest(
            journal_id=journal.journal_id, head=journal.head, payload_version=world_mod.FORMAT, epoch=journal.epoch
        )
        if loaded is not None:
            info, payload = loaded
            try:
                snap = await anyio.to_thread.run_sync(world_mod.decode, payload)
                world = World.restore(snap, idempotency_keys=settings.idempotency_keys_kept)
                start = from_seq = snap.last_seq
            except Exception as exc:  # valid checksum but undecodable: never trust it
                store.rejected += 1
                log.warning("snapshot_undecodable", file=info.path.name, error=repr(exc))
                world, start, from_seq = None, 0, None
    if world is None:
        world = World(idempotency_keys=settings.idempotency_keys_kept)
    try:
        async for records in journal.read(start, chunk=512, partitions=partitions):
            for rec in records:
                world.apply(rec)
    except ev.UnknownEvent as exc:  # never skip a record: stop, and say why (events.py rule 2)
        raise JournalTooNew(
            f"the journal holds a record this dpdau cannot read ({exc}) after position {world.days_seq}: "
            "it was written by a newer dpdau; upgrade before starting"
        ) from exc
    world.fold()
    return world, from_seq
