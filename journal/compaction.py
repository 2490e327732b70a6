"""Erasure compaction: physically remove an erased user's events from the journal.

Rules:
1. Runs as an exclusive committer job (no append can interleave) and rewrites in ONE
   transaction: the user's events in every activity record before the tombstone, the user's
   entries in every counter step before it, the user's index postings, and the tombstone itself
   (its key is replaced by the anonymous ``counter_exits`` it owed). The same transaction appends
   one ``ErasurePurged`` audit record per erasure: id, request time, purge time, events removed.
2. A record emptied by the purge stays as an empty batch: sequence numbers are never reused.
3. Then the database is rebuilt (``VACUUM``) and the WAL checkpointed with TRUNCATE.
   ``secure_delete`` alone is not enough: measured here, a rewritten index row occasionally left
   the old bytes in a page's free space (about 1 victim in 50), and any earlier rewrite can have
   left such fragments. VACUUM writes every live row into fresh pages, so nothing that is not
   live survives in the file; the checkpoint leaves nothing in ``-wal``. The caller regenerates
   snapshots and deletes the old ones (they hold the pseudonym too).
4. Events of the same user *after* the tombstone are new data and are kept.

Replay of a compacted journal equals replay of the journal before compaction: the events
dropped here were already cancelled by the tombstone (an erasure clears every day), and the
anonymous exits keep the counter runs' owed -1 that the dropped counter entries implied.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec
import numpy as np

from journal import events as ev
from journal.store import Journal, StoredRecord


@dataclass(frozen=True)
class PurgeTarget:
    erasure_id: str
    key: int
    tombstone_seq: int
    requested_at: float


async def purge(journal: Journal, targets: list[PurgeTarget], now: float | None = None) -> list[StoredRecord]:
    now = time.time() if now is None else now
    await journal.index_pending()
    async with journal.transaction():
        audits = []
        for target in targets:
            removed = await _purge_activity(journal, target)
            exits = await _purge_counter_steps(journal, target)
            await journal.drop_key_from_index(target.key, target.tombstone_seq)
            tomb = await journal.record_at(target.tombstone_seq)
            if tomb is not None and isinstance(tomb.event, ev.UserErased):
                anonymous = msgspec.structs.replace(tomb.event, key=None, counter_exits=exits)
                await journal.replace_payload(target.tombstone_seq, anonymous)
            audits.append(
                ev.ErasurePurged(
                    erasure_id=target.erasure_id,
                    requested_at=target.requested_at,
                    purged_at=now,
                    events_removed=removed,
                )
            )
        stored = await journal.append_in_transaction(audits)
    await journal.rebuild()
    return stored


async def _purge_activity(journal: Journal, target: PurgeTarget) -> int:
    removed = 0
    for seq in await journal.find_key(target.key, before_seq=target.tombstone_seq):
        rec = await journal.record_at(seq)
        if rec is None or not isinstance(rec.event, ev.ActivityBatchRecorded):
            continue
        batch = rec.event
        keep = batch.key_array() != target.key
        if keep.all():
            continue
        removed += int((~keep).sum())
        await journal.replace_payload(seq, without(batch, keep))
    return removed


def without(batch: ev.ActivityBatchRecorded, keep: np.ndarray) -> ev.ActivityBatchRecorded:
    """The batch restricted to ``keep``; metadata indices follow their events."""
    new_index = np.cumsum(keep) - 1
    metadata = [(int(new_index[i]), raw) for i, raw in batch.metadata if keep[i]]
    return ev.ActivityBatchRecorded.from_arrays(
        batch.key_array()[keep],
        batch.day_array()[keep],
        batch.op_array()[keep],
        received_at=batch.received_at,
        metadata=metadata,
        idempotency_key=batch.idempotency_key,
        request_digest=None,  # a digest over the old batch would still depend on the user
    )


async def _purge_counter_steps(journal: Journal, target: PurgeTarget) -> dict[str, int]:
    """Drop the user from counter steps before the tombstone; return exits owed per run."""
    net: dict[str, int] = {}
    async for records in journal.read(0, kinds=[ev.CounterStepped.KIND]):
        for rec in records:
            step = rec.event
            if rec.seq >= target.tombstone_seq:
                return {run: 1 for run, n in net.items() if n > 0}
            assert isinstance(step, ev.CounterStepped)
            entered = np.frombuffer(step.entered, dtype="<i8")
            left = np.frombuffer(step.left, dtype="<i8")
            e_hit, l_hit = entered == target.key, left == target.key
            if not (e_hit.any() or l_hit.any()):
                continue
            net[step.run_id] = net.get(step.run_id, 0) + int(e_hit.sum()) - int(l_hit.sum())
            await journal.replace_payload(
                rec.seq,
                msgspec.structs.replace(
                    step, entered=entered[~e_hit].tobytes(), left=left[~l_hit].tobytes()
                ),
            )
    return {run: 1 for run, n in net.items() if n > 0}
