"""The whole derived state as one pure value: what replay builds and what a snapshot holds.

Rules:
1. ``World.apply`` is replay: each record goes to the destinations ``routing.ROUTES`` names for
   it (one handler per destination here). The live system routes with the same table
   (``actors/system/router.py``); the property tests hold the two to equality.
2. Every component remembers the last seq it applied (``applied_seq``) and ignores records at or
   below it. A snapshot therefore needs no global pause: each component is captured at its own
   position (all >= the snapshot's ``last_seq``), and tail replay from ``last_seq + 1`` brings
   each one forward from exactly where it stood.
3. The snapshot payload has its own ``FORMAT`` (checked by ``journal.snapshots``); a snapshot of
   another format is ignored, never upcast by guesswork.
4. A snapshot is valid only for the journal epoch it was taken at (``journal.store`` rule 5):
   rule 2 assumes the records after ``last_seq`` are the ones the state was built against, which
   an in-place rewrite (purge: the tombstone loses its key; rotation: every key changes) breaks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import msgspec
import numpy as np

from actors.state.erasure_book import ErasureBook, ErasureSnapshot
from actors.state.idempotency import IdempotencyIndex, IdempotencySnapshot
from actors.state.ledger import Ledger, LedgerSnapshot
from actors.state.membership import Membership
from actors.state.release_book import ReleaseBook, ReleaseSnapshot
from actors.state.routing import Destination, destinations
from journal import events as ev
from journal.events import StoredRecord

FORMAT = 3  # 2: ledger charges carry the periods they read (BudgetCharged v2); 3: the idempotency index keeps the position of the last purge


class DaySnapshot(msgspec.Struct, frozen=True, array_like=True):
    day: int
    members: bytes  # sorted int64 LE


class WorldSnapshot(msgspec.Struct, frozen=True):
    format: int
    days_seq: int
    days: list[DaySnapshot]
    ingest: IdempotencySnapshot
    releases: ReleaseSnapshot
    ledger: LedgerSnapshot
    erasures: ErasureSnapshot

    @property
    def last_seq(self) -> int:
        """The position every component is at or past (rule 2)."""
        return min(
            self.days_seq,
            self.ingest.applied_seq,
            self.releases.applied_seq,
            self.ledger.applied_seq,
            self.erasures.applied_seq,
        )


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(WorldSnapshot)


class World:
    def __init__(self, *, idempotency_keys: int = 100_000) -> None:
        self.days: dict[int, Membership] = {}
        self.days_seq = 0
        self.ingest = IdempotencyIndex(idempotency_keys)
        self.releases = ReleaseBook()
        self.ledger = Ledger()
        self.erasures = ErasureBook()
        self.handlers: dict[Destination, Callable[[StoredRecord], None]] = {
            "days": self._to_days,
            "ingest": self._to_ingest,
            "releases": self._to_releases,
            "ledger": self._to_ledger,
            "erasures": self._to_erasures,
            "cuts": self._to_cuts,
        }

    def apply(self, rec: StoredRecord) -> None:
        for destination in destinations(rec.event):
            self.handlers[destination](rec)
        self.days_seq = max(self.days_seq, rec.last_seq)

    def _to_days(self, rec: StoredRecord) -> None:
        if rec.seq <= self.days_seq:
            return
        event = rec.event
        if isinstance(event, ev.ActivityBatchRecorded):
            self._apply_activity(event)
        elif isinstance(event, ev.UserErased):
            if event.key is not None:  # an erasure is a '-' on every day (membership rule 1)
                keys = np.array([event.key], dtype=np.int64)
                for day, m in self.days.items():
                    self.days[day] = m.apply_folding(keys, np.zeros(1, dtype=np.uint8))
        else:
            raise TypeError(f"the days cannot apply {type(event).__name__}")

    def _to_ingest(self, rec: StoredRecord) -> None:
        self.ingest.apply_record(rec)

    def _to_releases(self, rec: StoredRecord) -> None:
        self.releases.apply(rec.seq, rec.event)

    def _to_ledger(self, rec: StoredRecord) -> None:
        if not isinstance(rec.event, (ev.BudgetCharged, ev.Released, ev.CounterStarted)):
            raise TypeError(f"the ledger cannot apply {type(rec.event).__name__}")
        self.ledger.apply(rec.seq, rec.event)

    def _to_erasures(self, rec: StoredRecord) -> None:
        if not isinstance(rec.event, (ev.UserErased, ev.ErasurePurged)):
            raise TypeError(f"the erasure book cannot apply {type(rec.event).__name__}")
        self.erasures.apply(rec.seq, rec.event)

    def _to_cuts(self, rec: StoredRecord) -> None:
        """A cut asks live shards to read their days at its position; it changes no state."""
        if not isinstance(rec.event, ev.CutMarked):
            raise TypeError(f"cuts cannot apply {type(rec.event).__name__}")

    def _apply_activity(self, event: ev.ActivityBatchRecorded) -> None:
        for day, keys, ops in split_by_day(event):
            self.days[day] = self.days.get(day, EMPTY_DAY).apply_folding(keys, ops)

    def fold(self) -> None:
        self.days = {d: m.folded() for d, m in self.days.items()}

    def counts(self) -> dict[int, int]:
        return {d: len(m) for d, m in sorted(self.days.items()) if len(m)}

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> WorldSnapshot:
        """Every record up to ``days_seq`` went through ``apply``, so every component is at that
        position even when its last record of interest is older: the snapshot's ``last_seq`` is
        ``days_seq`` (a conservative minimum would only make the tail longer -- and make a fresh
        snapshot look older than the purge it follows)."""
        self.fold()
        for part in (self.ingest, self.releases, self.ledger, self.erasures):
            part.advance(self.days_seq)
        return WorldSnapshot(
            FORMAT,
            self.days_seq,
            [DaySnapshot(d, m.base.astype("<i8").tobytes()) for d, m in sorted(self.days.items())],
            self.ingest.snapshot(),
            self.releases.snapshot(),
            self.ledger.snapshot(),
            self.erasures.snapshot(),
        )

    @classmethod
    def restore(cls, snap: WorldSnapshot, *, idempotency_keys: int = 100_000) -> World:
        world = cls(idempotency_keys=idempotency_keys)
        world.days = {d.day: Membership(np.frombuffer(d.members, dtype="<i8").astype(np.int64)) for d in snap.days}
        world.days_seq = snap.days_seq
        world.ingest = IdempotencyIndex.restore(snap.ingest, idempotency_keys)
        world.releases = ReleaseBook.restore(snap.releases)
        world.ledger = Ledger.restore(snap.ledger)
        world.erasures = ErasureBook.restore(snap.erasures)
        return world


EMPTY_DAY = Membership()


def split_by_day(event: ev.ActivityBatchRecorded) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(day, keys, ops) per day in the batch, each in the batch's (journal) order."""
    days = event.day_array()
    keys = event.key_array().astype(np.int64)
    ops = event.op_array()
    if len(days) == 0:
        return
    first = days[0]
    if np.all(days == first):
        yield int(first), keys, ops
        return
    order = np.argsort(days, kind="stable")  # stable: keeps journal order within a day
    sorted_days = days[order]
    bounds = np.flatnonzero(np.diff(sorted_days)) + 1
    for idx in np.split(order, bounds):
        yield int(days[idx[0]]), keys[idx], ops[idx]


def encode(snap: WorldSnapshot) -> bytes:
    return _encoder.encode(snap)


def decode(payload: bytes) -> WorldSnapshot:
    return _decoder.decode(payload)
