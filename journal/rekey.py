"""Salt rotation, journal side: re-key every stored pseudonym in one transaction.

Rules:
1. ``mapping`` sends each old key to its new key (the gateway passes k -> HMAC(new secret, k));
   it must be deterministic, so one user stays one key everywhere: activity, tombstones awaiting
   purge, and counter steps (re-sorted, since sorting is by key).
2. The same transaction clears the pseudonym index, appends ``SaltRotated`` and stores the new
   ``key_version``; the index is rebuilt right after, then the whole file (``erase_physically``, e.g. SQLite's
   VACUUM + WAL checkpoint TRUNCATE) so no old key survives in free space or in ``-wal``.
3. Request digests (idempotency) were computed over old keys; they are dropped, so a retry of
   a pre-rotation request is recognised by its key alone.
4. Tombstones -- the key of one awaiting its purge, the counter-run tokens of a purged one --
   are rewritten by the caller's ``retombstone`` (``actors.privacy.flippancy.rekey_tombstone``),
   given every ``CounterStarted`` before it: a token must follow its key, or an erased user
   would re-enter a run in progress after the rotation. This module decides nothing about that;
   if ``retombstone`` raises, the transaction rolls back and nothing is rotated.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import numpy as np

from journal import events as ev
from journal.backend import JournalBackend as Journal

Mapping = Callable[[np.ndarray], np.ndarray]
# (tombstone, the counter runs started before it, mapping) -> the tombstone under the new keys
Retombstone = Callable[[ev.UserErased, dict[str, ev.CounterStarted], Mapping], ev.UserErased]


async def rekey(journal: Journal, mapping: Mapping, new_version: int, *, retombstone: Retombstone) -> int:
    """Returns the number of keys (and tokens) rewritten."""
    runs: dict[str, ev.CounterStarted] = {}
    kinds = [ev.UserErased.KIND, ev.CounterStepped.KIND, ev.CounterStarted.KIND]
    await journal.before_rewrite()
    async with journal.transaction():
        rewritten = await journal.rekey_activity(mapping)  # each backend its own way
        async for records in journal.read(0, kinds=kinds, chunk=256):
            for rec in records:
                event = rec.event
                if isinstance(event, ev.CounterStarted):
                    runs[event.run_id] = event
                    continue
                if isinstance(event, ev.UserErased):
                    if event.key is None and not event.blocked_tokens:
                        continue
                    new_tomb = retombstone(event, runs, mapping)
                    if new_tomb == event:
                        continue
                    event = new_tomb
                    rewritten += 1 if event.key is not None else len(event.blocked_tokens)
                elif isinstance(event, ev.CounterStepped):
                    entered = np.sort(mapping(np.frombuffer(event.entered, dtype="<i8").astype(np.int64)))
                    left = np.sort(mapping(np.frombuffer(event.left, dtype="<i8").astype(np.int64)))
                    rewritten += len(entered) + len(left)
                    event = msgspec.structs.replace(
                        event, entered=entered.astype("<i8").tobytes(), left=left.astype("<i8").tobytes()
                    )
                await journal.replace_payload(rec.seq, event)
        await journal.append_in_transaction([ev.SaltRotated(key_version=new_version, rotated_at=time.time())])
        await journal.set_key_version(new_version)
    await journal.erase_physically()  # SQLite: reindex + VACUUM; PostgreSQL: WAL switch + CHECKPOINT
    return rewritten
