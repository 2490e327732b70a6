"""Idempotent ingest: which ``Idempotency-Key`` produced which journal records.

Rules:
1. The index is a projection of the journal (the key travels inside ``ActivityBatchRecorded``),
   so a retry is recognised after a restart, a crash or a restore exactly as before it.
2. A retry with the same key and the same (pseudonymised) batch gets the original answer and
   writes nothing. The same key with a different batch is a client error, never a silent merge.
3. The digest is computed over pseudonyms, not the request body: a hash of a raw user id on
   disk could be brute-forced back to the id.
4. The index keeps the most recent ``kept`` keys (deterministic on replay, so live == replay).
5. A purge (``ErasurePurged``) makes every digest recorded before it forget itself: a digest
   over a batch that held the erased user is derived from that user, and a retry answering
   ``replayed`` for the original batch but 422 for a changed one would tell whether the user was
   in it. Forgetting *all* of them (not only the batches that held the user) says nothing about
   which did. After that, a retry under an old key answers ``replayed`` whatever its body: the
   key alone identifies the request. (The journal drops the digests of the rewritten batches
   only, ``journal.compaction``; so a digest read back from the journal -- PostgreSQL answers a
   key the index no longer holds from its ``idempotency`` table, ingest rule 3 -- counts only if
   its record is newer than the last purge: ``counts``.)
6. Keys arrive scoped by the calling API key (``gateway/auth.py`` rule 5): one client's keys are
   not another's, so no client can probe another's batches.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import msgspec
import numpy as np

from journal.events import ActivityBatchRecorded, ErasurePurged, StoredRecord


@dataclass(frozen=True, slots=True)
class IngestReceipt:
    ingested: int
    first_seq: int  # internal: journal positions never leave the service
    last_seq: int
    digest: bytes
    receipt: str = ""  # what the client is told (``IngestService``): opaque, the same on a replay


class IdempotencySnapshot(msgspec.Struct, frozen=True):
    applied_seq: int
    entries: list[tuple[str, int, int, int, bytes]]
    forgotten_through: int = 0  # position of the last purge applied (rule 5)


def batch_digest(keys: np.ndarray, days: np.ndarray, ops: np.ndarray, metadata: list[tuple[int, bytes]]) -> bytes:
    h = hashlib.sha256()
    for arr in (keys.astype("<i8"), days.astype("<i4"), ops.astype(np.uint8)):
        h.update(arr.tobytes())
    for index, raw in metadata:
        h.update(index.to_bytes(4, "little"))
        h.update(raw)
    return h.digest()


class IdempotencyIndex:
    def __init__(self, kept: int = 100_000) -> None:
        self.kept = kept
        self.applied_seq = 0
        self.forgotten_through = 0  # rule 5: digests of records before this position are forgotten
        self._entries: OrderedDict[str, IngestReceipt] = OrderedDict()

    def apply_record(self, rec: StoredRecord) -> None:
        """The index's share of the routing table: batches, and purges (rule 5)."""
        if isinstance(rec.event, ErasurePurged):
            self.forget_digests(rec.seq)
        elif isinstance(rec.event, ActivityBatchRecorded):
            self.apply(rec.seq, rec.last_seq, rec.event)
        else:
            raise TypeError(f"the idempotency index cannot apply {type(rec.event).__name__}")

    def apply(self, seq: int, last_seq: int, event: ActivityBatchRecorded) -> None:
        if seq <= self.applied_seq:
            return
        self.applied_seq = last_seq
        if event.idempotency_key is None:
            return
        self._entries[event.idempotency_key] = IngestReceipt(
            last_seq - seq + 1, seq, last_seq, event.request_digest or b""
        )
        self._entries.move_to_end(event.idempotency_key)
        while len(self._entries) > self.kept:
            self._entries.popitem(last=False)

    def forget_digests(self, seq: int) -> None:
        """Rule 5, at the position of an ``ErasurePurged`` record."""
        if seq <= self.applied_seq:
            return
        self.applied_seq = seq
        self.forgotten_through = seq
        for key, receipt in self._entries.items():
            if receipt.digest:
                self._entries[key] = IngestReceipt(receipt.ingested, receipt.first_seq, receipt.last_seq, b"")

    def counts(self, record_seq: int, digest: bytes | None) -> bytes:
        """A digest journaled with the record at ``record_seq``, as this index would hold it: none
        when a purge came after the record (rule 5), whatever the journal still stores."""
        return (digest or b"") if record_seq > self.forgotten_through else b""

    def advance(self, seq: int) -> None:
        self.applied_seq = max(self.applied_seq, seq)

    def lookup(self, key: str) -> IngestReceipt | None:
        return self._entries.get(key)

    def __len__(self) -> int:
        return len(self._entries)

    def snapshot(self) -> IdempotencySnapshot:
        return IdempotencySnapshot(
            self.applied_seq,
            [(k, r.ingested, r.first_seq, r.last_seq, r.digest) for k, r in self._entries.items()],
            self.forgotten_through,
        )

    @classmethod
    def restore(cls, snap: IdempotencySnapshot, kept: int) -> IdempotencyIndex:
        index = cls(kept)
        index.applied_seq = snap.applied_seq
        index.forgotten_through = snap.forgotten_through
        for key, n, first, last, digest in snap.entries:
            index._entries[key] = IngestReceipt(n, first, last, digest)
        return index
