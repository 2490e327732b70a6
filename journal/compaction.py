"""Erasure compaction: physically remove an erased user's events from the journal.

Rules:
1. Runs as an exclusive committer job (no append can interleave) and rewrites in ONE
   transaction: the user's events in every activity record before the tombstone, the user's
   entries in every counter step before it, the user's index postings, and the tombstone itself
   (its key is replaced by what the caller's ``anonymise`` says the anonymous tombstone holds).
   The same transaction appends one ``ErasurePurged`` audit record per erasure: id, request time,
   purge time, events removed.
2. This module stores and rewrites; it decides nothing about the domain. What an erased user
   still owes the continual-counter runs (the anonymous exits, the tokens that keep them out of a
   run in progress) is computed by the caller's ``anonymise`` from the counter records before
   the tombstone (``actors.privacy.flippancy.anonymous_tombstone``); journal/ imports no actors.
3. A record emptied by the purge stays as an empty batch: sequence numbers are never reused.
4. Then the database is rebuilt (``VACUUM``) and the WAL checkpointed with TRUNCATE.
   ``secure_delete`` alone is not enough: measured here, a rewritten index row occasionally left
   the old bytes in a page's free space (about 1 victim in 50), and any earlier rewrite can have
   left such fragments. VACUUM writes every live row into fresh pages, so nothing that is not
   live survives in the file; the checkpoint leaves nothing in ``-wal``. The caller regenerates
   snapshots and deletes the old ones (they hold the pseudonym too).
5. Events of the same user *after* the tombstone are new data and are kept.
6. A target whose tombstone has lost its key was purged already -- by another process sharing the
   journal, whose purge committed first (the transaction holds the journal's head, so the check
   and the rewrite see the same journal): it is skipped, and no second audit record is written.

Replay of a compacted journal equals replay of the journal before compaction: the events
dropped here were already cancelled by the tombstone (an erasure clears every day), and the
anonymous exits keep the counter runs' owed -1 that the dropped counter entries implied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import numpy as np

from journal import events as ev
from journal import faults
from journal.backend import JournalBackend
from journal.events import StoredRecord

Journal = JournalBackend  # every backend: the rewrites go through its maintenance methods

CounterHistory = list[ev.CounterStarted | ev.CounterStepped]
# (tombstone with its key, the counter records before it as they were) -> the anonymous tombstone
Anonymise = Callable[[ev.UserErased, CounterHistory], ev.UserErased]


@dataclass(frozen=True)
class PurgeTarget:
    erasure_id: str
    key: int
    tombstone_seq: int
    requested_at: float


async def purge(
    journal: Journal, targets: list[PurgeTarget], *, anonymise: Anonymise, now: float | None = None
) -> list[StoredRecord]:
    now = time.time() if now is None else now
    await journal.before_rewrite()
    async with journal.transaction():
        audits = []
        for target in targets:
            tomb = await journal.record_at(target.tombstone_seq)
            if tomb is None or not isinstance(tomb.event, ev.UserErased) or tomb.event.key is None:
                continue  # rule 6: purged already (by another process sharing the journal)
            removed = await journal.remove_key_activity(target.key, target.tombstone_seq)
            history = await _purge_counter_steps(journal, target)
            anonymous = anonymise(tomb.event, history)
            if anonymous.key is not None or anonymous.erasure_id != tomb.event.erasure_id:
                raise ValueError("anonymise must return the same erasure without its key")
            await journal.replace_payload(target.tombstone_seq, anonymous)
            audits.append(
                ev.ErasurePurged(
                    erasure_id=target.erasure_id,
                    requested_at=target.requested_at,
                    purged_at=now,
                    events_removed=removed,
                )
            )
        if not audits:
            return []
        stored = await journal.append_in_transaction(audits)
    faults.hit("journal.after_rewrite_commit")
    await journal.erase_physically()
    return stored


async def _purge_counter_steps(journal: Journal, target: PurgeTarget) -> CounterHistory:
    """Drop the user from the counter steps before the tombstone. Returns the counter records
    before the tombstone as they were (for ``anonymise``), in journal order."""
    history: CounterHistory = []
    kinds = [ev.CounterStarted.KIND, ev.CounterStepped.KIND]
    async for records in journal.read(0, kinds=kinds):
        for rec in records:
            step = rec.event
            if rec.seq >= target.tombstone_seq:
                return history
            if not isinstance(step, (ev.CounterStarted, ev.CounterStepped)):
                continue
            history.append(step)
            if isinstance(step, ev.CounterStarted):
                continue
            entered = np.frombuffer(step.entered, dtype="<i8")
            left = np.frombuffer(step.left, dtype="<i8")
            e_hit, l_hit = entered == target.key, left == target.key
            if e_hit.any() or l_hit.any():
                await journal.replace_payload(
                    rec.seq,
                    msgspec.structs.replace(step, entered=entered[~e_hit].tobytes(), left=left[~l_hit].tobytes()),
                )
    return history


async def shred_run_secret(journal: Journal, run_id: str) -> list[StoredRecord]:
    """Crypto-shredding at the end of a counter run: empty its token secret, then rebuild the
    file, so no token in any tombstone can be linked to a user again."""
    async with journal.transaction():
        async for records in journal.read(0, kinds=[ev.CounterStarted.KIND]):
            for rec in records:
                started = rec.event
                assert isinstance(started, ev.CounterStarted)
                if started.run_id == run_id and started.token_secret:
                    await journal.replace_payload(rec.seq, msgspec.structs.replace(started, token_secret=b""))
    faults.hit("journal.after_rewrite_commit")
    await journal.erase_physically()
    return []


async def unshredded_runs(journal: Journal) -> dict[str, int]:
    """run_id -> horizon of every run whose secret is still in the journal."""
    out: dict[str, int] = {}
    async for records in journal.read(0, kinds=[ev.CounterStarted.KIND]):
        for rec in records:
            started = rec.event
            assert isinstance(started, ev.CounterStarted)
            if started.token_secret:
                out[started.run_id] = started.horizon
    return out
