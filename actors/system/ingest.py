"""The ingest service: one request's batch -> one journal record, exactly once per Idempotency-Key.

Rules:
1. A batch is acknowledged only when the committer resolved its future: committed *and*
   dispatched to the actors (``journal.groupcommit`` rule 2).
2. A retry with the same key and the same (pseudonymised) batch gets the first answer and
   writes nothing, also while the first attempt is still in flight; the same key with a
   different batch is ``IdempotencyConflict``. If the first attempt failed, a retry may write.
3. With several writers (workers sharing a PostgreSQL journal) the first attempt may have been
   journaled by another process that this one has not yet followed: the journal refuses the
   duplicate (``DuplicateRequest``) and the answer comes from the record it holds.
4. The client is told the count it sent and an opaque receipt, never a journal position. With an
   idempotency key the receipt is HMAC(journal id, key) -- the same on every replay, also after
   a restart, and nothing about what else was ingested; without one it is random.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import secrets
from collections.abc import Callable

import numpy as np

from actors.refusals import IdempotencyConflict
from actors.state.idempotency import IdempotencyIndex, IngestReceipt, batch_digest
from journal import events as ev
from journal.backend import DuplicateRequest
from journal.events import StoredRecord
from journal.groupcommit import Committer


class IngestService:
    def __init__(self, committer: Committer, index: IdempotencyIndex, *, now: Callable[[], float]) -> None:
        self.committer = committer
        self._now = now
        self.index = index  # the router applies committed batches to it, in journal order
        self._inflight: dict[str, tuple[bytes, asyncio.Future[list[StoredRecord]]]] = {}

    async def ingest(
        self,
        keys: np.ndarray,
        days: np.ndarray,
        ops: np.ndarray,
        metadata: list[tuple[int, bytes]],
        idempotency_key: str | None = None,
    ) -> tuple[IngestReceipt, bool]:
        """Journal one batch; returns (receipt, replayed). Replayed = an earlier identical request."""
        digest = b""
        if idempotency_key is not None:
            digest = batch_digest(keys, days, ops, metadata)
            previous = await self._previous(idempotency_key, digest)
            if previous is not None:
                return dataclasses.replace(previous, receipt=self.receipt_for(idempotency_key)), True
        event = ev.ActivityBatchRecorded.from_arrays(
            keys,
            days,
            ops,
            received_at=self._now(),
            metadata=metadata,
            idempotency_key=idempotency_key,
            request_digest=digest if idempotency_key else None,
        )
        future = self.committer.submit([event])
        if idempotency_key is not None:
            self._inflight[idempotency_key] = (digest, future)
        try:
            (stored,) = await future
        except DuplicateRequest:
            assert idempotency_key is not None
            journaled = await self._journaled(idempotency_key, digest)
            return dataclasses.replace(journaled, receipt=self.receipt_for(idempotency_key)), True
        finally:
            if idempotency_key is not None:
                self._inflight.pop(idempotency_key, None)
        receipt = self.receipt_for(idempotency_key) if idempotency_key is not None else secrets.token_hex(12)
        return IngestReceipt(len(ops), stored.seq, stored.last_seq, digest, receipt), False

    def receipt_for(self, idempotency_key: str) -> str:
        """Rule 4 (the journal id is shared by every process on one journal: the same receipt)."""
        secret = self.committer.journal.journal_id.encode()
        return hmac.digest(secret, b"receipt:" + idempotency_key.encode(), "sha256")[:12].hex()

    async def _journaled(self, key: str, digest: bytes) -> IngestReceipt:
        """Rule 3: the record another writer journaled under ``key``."""
        record = await self.committer.journal.idempotent_record(key)
        if record is None or not isinstance(record.event, ev.ActivityBatchRecorded):
            raise RuntimeError(f"the journal refused Idempotency-Key {key!r} as a duplicate but holds no batch for it")
        journaled = self.index.counts(record.seq, record.event.request_digest)  # idempotency rule 5
        if journaled and journaled != digest:
            raise IdempotencyConflict(key)
        return IngestReceipt(record.last_seq - record.seq + 1, record.seq, record.last_seq, journaled or b"")

    async def _previous(self, key: str, digest: bytes) -> IngestReceipt | None:
        inflight = self._inflight.get(key)
        if inflight is not None:
            other_digest, future = inflight
            if other_digest != digest:
                raise IdempotencyConflict(key)
            try:
                await future
            except Exception:
                return None  # the first attempt failed: this one may try again
        found = self.index.lookup(key)
        if found is None:
            return None
        if found.digest and found.digest != digest:
            raise IdempotencyConflict(key)
        return found
