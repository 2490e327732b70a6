"""Salt rotation, journal side: re-key every stored pseudonym in one transaction.

Rules:
1. ``mapping`` sends each old key to its new key (the gateway passes k -> HMAC(new secret, k));
   it must be deterministic, so one user stays one key everywhere: activity, tombstones awaiting
   purge, and counter steps (re-sorted, since sorting is by key).
2. The same transaction re-keys activity (``rekey_activity``: the backend's own way), appends
   ``SaltRotated`` and stores the new ``key_version``; then ``erase_physically`` so no old key
   survives in free space, in a WAL or in an index.
3. Request digests (idempotency) were computed over old keys; they are dropped, so a retry of
   a pre-rotation request is recognised by its key alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import numpy as np

from journal import events as ev
from journal.backend import JournalBackend

Mapping = Callable[[np.ndarray], np.ndarray]


async def rekey(journal: JournalBackend, mapping: Mapping, new_version: int) -> int:
    """Returns the number of keys rewritten."""
    kinds = [ev.UserErased.KIND, ev.CounterStepped.KIND]
    await journal.before_rewrite()
    async with journal.transaction():
        rewritten = await journal.rekey_activity(mapping)
        async for records in journal.read(0, kinds=kinds, chunk=256):
            for rec in records:
                event = rec.event
                if isinstance(event, ev.UserErased):
                    if event.key is None:
                        continue
                    event = msgspec.structs.replace(event, key=int(mapping(np.array([event.key], dtype=np.int64))[0]))
                    rewritten += 1
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
    await journal.erase_physically()
    return rewritten
