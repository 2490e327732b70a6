"""What the rest of the system may ask of a journal, whatever stores it (SQLite, PostgreSQL).

Rules:
1. Positions are dense and assigned by the journal, in commit order, one per event: an activity
   batch of n events occupies ``seq .. seq+n-1``, every other record one. A reader that has seen
   position P has seen every position below P -- with several writers too (each backend says
   how it guarantees that). ``head`` is the last position this process knows to be committed;
   ``refresh_head`` asks the store.
2. ``append`` is one transaction, durable when it returns. ``append_locked`` is the same after
   locking the named accounting periods (in sorted order) and handing the charges already
   committed to them to ``prepare``, which returns what to write or raises to write nothing:
   any number of release coordinators, in any number of processes, cannot overspend a period.
3. ``read`` yields records in position order. ``partitions`` restricts *activity* to the keys of
   those pseudonym partitions (``partition_count`` of them; an activity record then holds only
   those keys, with its full position range); control records are always all read.
4. Everything under "exclusive maintenance" runs with nothing else writing: inside a committer
   job (``Committer.run_job``) or offline. Rewrites happen between ``before_rewrite`` and
   ``erase_physically``, inside ``transaction``; ``erase_physically`` is what makes a rewrite a
   physical erasure (SQLite: VACUUM + WAL checkpoint TRUNCATE; PostgreSQL: VACUUM FULL of the
   touched tables, WAL switch, CHECKPOINT).
5. ``housekeeping`` is the backend's own background work (SQLite: building its pseudonym index);
   it writes only through the ``exclusive`` callback it is given (the committer's job slot).
6. ``shared``: other processes may write this journal at the same time (PostgreSQL opened by a
   serving process). Then ``head`` only grows when this process writes or ``refresh_head`` asks;
   ``wait_for_commits`` wakes up when another process may have committed, and the committer
   reads and dispatches what they wrote (``journal.groupcommit`` rule 7). ``refresh_head`` also
   brings ``epoch`` forward when another process rewrote the journal (its snapshots are then
   stale). The SQLite journal is never shared: one process owns its file.
7. The processes sharing a journal register themselves (``register``, once a second: a
   heartbeat): what each holds, where a shard answers, how far each has dispatched, and from
   which position on its snapshot files are clean. Erasure receipts and shard lookups read it
   (``members``). A row is never a source of truth about the data -- only about the processes.

Nothing above ``journal/`` may know which backend it talks to; ``journal.location`` opens one
from a URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from journal.events import BudgetCharged, Event, StoredRecord

KeyMapping = Callable[[np.ndarray], np.ndarray]
"""Salt rotation: old int64 pseudonyms -> new ones, deterministic (``journal.rekey``)."""

Prepare = Callable[[list[BudgetCharged]], Awaitable[Sequence[Event]]]
"""``append_locked``: the charges committed to the locked periods -> the events to write."""

Job = Callable[["JournalBackend"], Awaitable[list[StoredRecord]]]
Exclusive = Callable[[Job], Awaitable[list[StoredRecord]]]


class JournalError(Exception):
    """The journal cannot be used as configured (bad URL, unreachable, unsafe server settings).
    The CLI prints it as one line and exits with code 2."""


class JournalTooNew(JournalError):
    """The journal holds a format, or a record version, that only a newer dpdau understands.
    Nothing is read past it and nothing is written: the operator upgrades, or points elsewhere."""


class DuplicateRequest(Exception):
    """An idempotency key was already journaled (by another writer). Nothing of the group was
    written; the committer retries the group without these keys."""

    def __init__(self, keys: Collection[str]) -> None:
        super().__init__(f"idempotency keys already journaled: {sorted(keys)}")
        self.keys = frozenset(keys)


@dataclass(frozen=True)
class Member:
    """One serving process of a shared journal (rule 7)."""

    name: str  # unique per process: role @ data directory @ host
    kind: str  # "whole" | "gateway" | "shard" (actors/system/topology.py)
    shard: int | None  # a shard's index
    shards: int | None  # the shard layout it belongs to (shard) or counts over (gateway)
    address: str | None  # a shard's internal base URL
    applied_seq: int  # everything up to here is dispatched to its state
    clean_seq: int  # its snapshot files were all written at or after this position
    pid: int
    age_seconds: float = 0.0  # since its last heartbeat (read back only)


class JournalBackend(Protocol):
    kind: str  # "sqlite" | "postgresql"
    journal_id: str
    key_version: int
    partition_count: int
    epoch: int  # committed in-place rewrites (snapshots are valid for one epoch only)
    shared: bool  # rule 6

    @property
    def needs_rebuild(self) -> bool:
        """A rewrite committed but its physical erasure did not complete (a crash): finish it."""
        ...

    async def rebuild(self) -> None:
        """Finish the physical erasure of every committed rewrite (``erase_physically``'s core)."""
        ...

    @property
    def head(self) -> int: ...

    async def close(self) -> None: ...

    # -- writing (rules 1, 2) ----------------------------------------------------------------

    async def append(self, events: Sequence[Event]) -> list[StoredRecord]: ...

    async def append_locked(self, periods: Iterable[str], prepare: Prepare) -> list[StoredRecord]: ...

    # -- reading (rule 3) --------------------------------------------------------------------

    def read(
        self,
        after_seq: int = 0,
        *,
        kinds: Iterable[int] | None = None,
        partitions: Collection[int] | None = None,
        chunk: int = 256,
    ) -> AsyncIterator[list[StoredRecord]]: ...

    async def refresh_head(self) -> int: ...

    async def wait_for_commits(self, timeout: float) -> None:
        """Rule 6: return when another process may have committed, or after ``timeout``."""
        ...

    async def register(self, member: Member) -> None:
        """Rule 7: insert or refresh this process's row (its heartbeat)."""
        ...

    async def members(self) -> list[Member]:
        """Rule 7: every registered process, with the age of its heartbeat."""
        ...

    async def record_at(self, seq: int) -> StoredRecord | None: ...

    async def find_key(self, key: int, before_seq: int | None = None) -> list[int]:
        """Positions of the activity records that mention ``key`` (below ``before_seq``)."""
        ...

    async def idempotent_record(self, idempotency_key: str) -> StoredRecord | None:
        """The activity record journaled under this Idempotency-Key, if any."""
        ...

    # -- exclusive maintenance (rule 4) ------------------------------------------------------

    async def before_rewrite(self) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[None]: ...

    async def append_in_transaction(self, events: Sequence[Event]) -> list[StoredRecord]: ...

    async def replace_payload(self, seq: int, event: Event) -> None:
        """Rewrite a control record in place (tombstones, counter steps, run secrets)."""
        ...

    async def remove_key_activity(self, key: int, before_seq: int) -> int:
        """Remove the key's events from activity records below ``before_seq``; returns how many.
        A record emptied this way stays, as an empty batch (positions are never reused)."""
        ...

    async def rekey_activity(self, mapping: KeyMapping) -> int:
        """Apply ``mapping`` to every activity key; returns how many keys were rewritten."""
        ...

    async def set_key_version(self, version: int) -> None: ...

    async def erase_physically(self) -> None: ...

    # -- background and introspection (rule 5) -----------------------------------------------

    async def housekeeping(self, exclusive: Exclusive) -> None: ...

    def stats(self) -> dict[str, int]: ...
