"""Offline operations on a journal and its data directory (the server must be stopped:
``JournalSpec.lock``).

Each one is journal + ``World`` and nothing more: replay is ``World.apply`` over the log,
a snapshot is ``World.snapshot()`` in the same file format the server writes, restore is the
server's own boot path, compaction is the server's own purge job.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from actors.erasure import purge_erased
from actors.settings import EngineSettings
from actors.state import periods
from actors.state import world as world_mod
from actors.state.world import World
from actors.system.boot import restore_world
from journal import compaction
from journal.backend import JournalBackend
from journal.events import ErasurePurged
from journal.location import JournalSpec


@asynccontextmanager
async def opened(spec: JournalSpec) -> AsyncIterator[JournalBackend]:
    with spec.lock():
        journal = await spec.open()
        try:
            if journal.needs_rebuild:  # a purge's VACUUM was interrupted: finish it first
                await journal.rebuild()
            spec.snapshot_store().sweep(journal_id=journal.journal_id, epoch=journal.epoch)
            yield journal
        finally:
            await journal.close()


async def describe(journal: JournalBackend, world: World, seconds: float) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    async for records in journal.read(0, chunk=1024):
        for rec in records:
            kinds[type(rec.event).__name__] += 1
    days = sorted(d for d, m in world.days.items() if len(m))
    return {
        "journal_seq": journal.head,
        "records": dict(kinds),
        "days_with_data": len(days),
        "first_day": periods.iso(days[0]) if days else None,
        "last_day": periods.iso(days[-1]) if days else None,
        "user_days": sum(len(world.days[d]) for d in days),
        "releases": len(world.releases.log),
        "counter_runs": len(world.releases.runs),
        "charges": len(world.ledger.records),
        "erasures": len(world.erasures.entries),
        "erasures_awaiting_purge": world.erasures.awaiting_purge(),
        "key_version": journal.key_version,
        "seconds": round(seconds, 3),
    }


async def replay(settings: EngineSettings, spec: JournalSpec) -> dict[str, Any]:
    async with opened(spec) as journal:
        started = time.perf_counter()
        world, _ = await restore_world(journal, None, settings, use_snapshot=False)
        return {
            "replayed_from": "journal (snapshots ignored)",
            **await describe(journal, world, time.perf_counter() - started),
        }


def write_snapshot(journal: JournalBackend, world: World, spec: JournalSpec, *, replace_all: bool = False) -> Path:
    snap = world.snapshot()
    store = spec.snapshot_store()
    path = store.save(
        world_mod.encode(snap),
        last_seq=snap.last_seq,
        journal_id=journal.journal_id,
        payload_version=world_mod.FORMAT,
        epoch=journal.epoch,
    )
    if replace_all:
        for other in store.list():
            if other != path:
                other.unlink(missing_ok=True)
    return path


async def snapshot(settings: EngineSettings, spec: JournalSpec, out: Path | None = None) -> dict[str, Any]:
    async with opened(spec) as journal:
        world, _ = await restore_world(journal, spec.snapshot_store(), settings)
        path = write_snapshot(journal, world, spec)
        if out is not None:
            shutil.copyfile(path, out)
        return {"snapshot": str(path), "copied_to": str(out) if out else None, "seq": world.days_seq}


async def restore(settings: EngineSettings, spec: JournalSpec, file: Path | None = None) -> dict[str, Any]:
    async with opened(spec) as journal:
        store = spec.snapshot_store()
        if file is not None:
            # Refuse a file that would be skipped anyway, before it lands among the good ones.
            store.check(
                file,
                journal_id=journal.journal_id,
                head=journal.head,
                payload_version=world_mod.FORMAT,
                epoch=journal.epoch,
            )
            store.install(file)
        started = time.perf_counter()
        world, from_seq = await restore_world(journal, store, settings)
        return {
            "restored_from_snapshot_seq": from_seq,
            "tail_replayed_from": (from_seq or 0) + 1,
            **await describe(journal, world, time.perf_counter() - started),
        }


async def compact(settings: EngineSettings, spec: JournalSpec) -> dict[str, Any]:
    async with opened(spec) as journal:
        world, _ = await restore_world(journal, spec.snapshot_store(), settings)
        targets = [
            compaction.PurgeTarget(e.erasure_id, e.key, e.seq, e.requested_at)
            for e in world.erasures.entries.values()
            if e.key is not None and e.purged_at is None
        ]
        purged = await purge_erased(journal, targets) if targets else []
        world, _ = await restore_world(journal, None, settings, use_snapshot=False)
        path = write_snapshot(journal, world, spec, replace_all=True)
        return {
            "purged": [
                {"erasure_id": r.event.erasure_id, "events_removed": r.event.events_removed}
                for r in purged
                if isinstance(r.event, ErasurePurged)
            ],
            "snapshot": str(path),
        }
