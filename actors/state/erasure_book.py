"""Erasure bookkeeping: receipts, status, and which users still await their purge. Pure.

Rules:
1. The book changes only by applying journaled ``UserErased`` and ``ErasurePurged`` records.
2. Status of an erasure: ``pending`` (journaled, not yet applied by every day actor) ->
   ``applied`` (no day state contains the user; every release made after the erasure's journal
   position excludes the user) -> ``purged`` (no event of the user left on disk: the journal
   was compacted *and* every snapshot file on disk was written after the compaction).
3. The book holds a pseudonym only while its purge is outstanding; ``ErasurePurged`` drops it.
   After that the receipt is all that remains: id, request time, purge time, events removed.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from journal.events import ErasurePurged, UserErased


class ErasureEntry(msgspec.Struct):
    erasure_id: str
    seq: int
    requested_at: float
    key: int | None = None  # only until purged
    purged_at: float | None = None
    events_removed: int | None = None
    purged_seq: int | None = None  # journal position of the ErasurePurged record


class ErasureSnapshot(msgspec.Struct, frozen=True):
    applied_seq: int
    entries: list[ErasureEntry]


class ErasureBook:
    def __init__(self) -> None:
        self.applied_seq = 0
        self.entries: dict[str, ErasureEntry] = {}

    def apply(self, seq: int, event: UserErased | ErasurePurged) -> None:
        if seq <= self.applied_seq:
            return
        self.applied_seq = seq
        if isinstance(event, UserErased):
            self.entries[event.erasure_id] = ErasureEntry(event.erasure_id, seq, event.requested_at, event.key)
        else:
            entry = self.entries.get(event.erasure_id)
            if entry is None:  # purged before this book's snapshot cut; keep the receipt anyway
                entry = self.entries[event.erasure_id] = ErasureEntry(event.erasure_id, 0, event.requested_at)
            entry.key = None
            entry.purged_at = event.purged_at
            entry.purged_seq = seq
            entry.events_removed = event.events_removed

    def advance(self, seq: int) -> None:
        self.applied_seq = max(self.applied_seq, seq)

    def awaiting_purge(self) -> int:
        return sum(1 for e in self.entries.values() if e.key is not None and e.purged_at is None)

    def outstanding(self) -> list[ErasureEntry]:
        return [e for e in self.entries.values() if e.purged_at is None and e.key is not None]

    def due(self, now: float, delay: float) -> list[ErasureEntry]:
        return [
            e
            for e in self.entries.values()
            if e.purged_at is None and e.key is not None and e.requested_at + delay <= now
        ]

    def last_purge_seq(self) -> int:
        return max((e.purged_seq or 0 for e in self.entries.values()), default=0)

    def next_due(self, delay: float) -> float | None:
        times = [e.requested_at + delay for e in self.entries.values() if e.purged_at is None and e.key is not None]
        return min(times) if times else None

    def snapshot(self) -> ErasureSnapshot:
        return ErasureSnapshot(self.applied_seq, [msgspec.structs.replace(e) for e in self.entries.values()])

    @classmethod
    def restore(cls, snap: ErasureSnapshot) -> ErasureBook:
        book = cls()
        book.applied_seq = snap.applied_seq
        for e in snap.entries:
            book.entries[e.erasure_id] = msgspec.structs.replace(e)
        return book


ErasureStatus = Literal["pending", "applied", "purged"]


class ErasureReceipt(msgspec.Struct, frozen=True):
    """What the requester is told about an erasure."""

    erasure_id: str
    status: ErasureStatus
    requested_at: float
    purged_at: float | None
    events_removed: int | None


def status_of(entry: ErasureEntry, days_seen_seq: int, snapshots_clean_seq: int) -> ErasureStatus:
    if entry.purged_seq is not None and entry.purged_seq <= snapshots_clean_seq:
        return "purged"
    return "applied" if days_seen_seq >= entry.seq else "pending"


def receipt(entry: ErasureEntry, days_seen_seq: int, snapshots_clean_seq: int) -> ErasureReceipt:
    return ErasureReceipt(
        erasure_id=entry.erasure_id,
        status=status_of(entry, days_seen_seq, snapshots_clean_seq),
        requested_at=entry.requested_at,
        purged_at=entry.purged_at,
        events_removed=entry.events_removed,
    )
