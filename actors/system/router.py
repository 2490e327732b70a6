"""The router: hands committed journal records to the actors, in journal order.

Rules:
1. ``dispatch`` is the live twin of ``World.apply``: both send a record to the destinations
   ``actors.state.routing.ROUTES`` names, so the same record reaches the same state. Here "days"
   are the day actors (activity: one message per day per run of consecutive batches, never per
   event; erasures: consecutive ones coalesced into one message per day actor), "ingest" the
   idempotency index, and "releases", "ledger", "erasures" the feeds of the release actor, the
   accountant and the erasure actor.
2. Sends to day mailboxes *wait* when a mailbox is full. The committer is the caller, so a slow
   day actor holds back the committer, whose bounded queue then refuses new requests (503):
   backpressure reaches the client without any unbounded buffer in between.
3. ``views`` enqueues its reads under the same lock as ``dispatch``, so the answer reflects
   exactly the records dispatched up to the position it returns (rule 2 of ``days.py``).
4. "cuts": a ``CutMarked`` record goes to ``on_cut`` while ``dispatch`` holds the lock, after the
   days got everything before it and before they get anything after it -- so the reads it
   enqueues (``enqueue_views``) see the days exactly at the cut (``actors/system/cuts.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import numpy as np

from actors.days import ApplyOps, Barrier, DayActor, DayView, EraseKeys, GetView
from actors.runtime import Actor
from actors.state.idempotency import IdempotencyIndex, IdempotencySnapshot
from actors.state.membership import EMPTY, Membership
from actors.state.routing import Destination, destinations
from actors.state.world import split_by_day
from journal import events as ev
from journal.events import StoredRecord


def _concat(batches: list[ev.ActivityBatchRecorded]) -> ev.ActivityBatchRecorded:
    """Consecutive batches as one (journal order kept); only keys, days and ops matter here."""
    return ev.ActivityBatchRecorded(
        keys=b"".join(b.keys for b in batches),
        days=b"".join(b.days for b in batches),
        ops=b"".join(b.ops for b in batches),
        received_at=batches[-1].received_at,
    )


class Router:
    def __init__(
        self,
        *,
        spawn_day: Callable[[int, Membership, int], DayActor],
        ingest: IdempotencyIndex,
        release: Actor,
        accountant: Actor,
        erasure: Actor,
        dispatched_seq: int,
        on_cut: Callable[[StoredRecord], Awaitable[None]] | None = None,
    ) -> None:
        self._spawn_day = spawn_day
        self.days: dict[int, DayActor] = {}
        self.ingest = ingest
        self.release = release
        self.accountant = accountant
        self.erasure = erasure
        self.dispatched_seq = dispatched_seq
        self.on_cut = on_cut
        self._advanced = anyio.Event()
        self._lock = anyio.Lock()
        self._pending: list[StoredRecord] = []  # consecutive records of one type bound for the days
        self._handlers: dict[Destination, Callable[[StoredRecord], Awaitable[None]]] = {
            "days": self._to_days,
            "ingest": self._to_ingest,
            "releases": self._feed_to(release),
            "ledger": self._feed_to(accountant),
            "erasures": self._feed_to(erasure),
            "cuts": self._to_cuts,
        }

    def adopt(self, day: int, actor: DayActor) -> None:
        self.days[day] = actor

    def _day(self, day: int) -> DayActor:
        actor = self.days.get(day)
        if actor is None:
            actor = self.days[day] = self._spawn_day(day, Membership(), self.dispatched_seq)
        return actor

    async def dispatch(self, records: list[StoredRecord]) -> None:
        async with self._lock:
            self._pending = []
            for rec in records:
                if self._pending and type(rec.event) is not type(self._pending[0].event):
                    await self._flush_days()  # journal order across kinds: deliver what came first
                for destination in destinations(rec.event):
                    await self._handlers[destination](rec)
            await self._flush_days()
            self.dispatched_seq = records[-1].last_seq
        self._advanced.set()
        self._advanced = anyio.Event()

    async def reached(self, seq: int) -> None:
        """Return once everything up to ``seq`` has been dispatched."""
        while self.dispatched_seq < seq:
            await self._advanced.wait()

    async def _to_cuts(self, rec: StoredRecord) -> None:
        if not isinstance(rec.event, ev.CutMarked):
            raise TypeError(f"cuts cannot apply {type(rec.event).__name__}")
        await self._flush_days()  # rule 4: everything before the cut reaches the days first
        if self.on_cut is not None:
            await self.on_cut(rec)

    async def _to_days(self, rec: StoredRecord) -> None:
        event = rec.event
        if isinstance(event, ev.UserErased) and event.key is None:
            return  # compacted: its user is no longer in any day
        if not isinstance(event, (ev.ActivityBatchRecorded, ev.UserErased)):
            raise TypeError(f"day actors cannot apply {type(event).__name__}")
        self._pending.append(rec)

    async def _to_ingest(self, rec: StoredRecord) -> None:
        self.ingest.apply_record(rec)

    @staticmethod
    def _feed_to(actor: Actor) -> Callable[[StoredRecord], Awaitable[None]]:
        async def feed(rec: StoredRecord) -> None:
            actor.push_feed((rec.seq, rec.event))

        return feed

    async def _flush_days(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        if isinstance(pending[0].event, ev.ActivityBatchRecorded):
            await self._deliver_activity(pending)
        else:
            keys = [r.event.key for r in pending if isinstance(r.event, ev.UserErased) and r.event.key is not None]
            await self._broadcast_erasure(pending[-1].seq, keys)

    async def _deliver_activity(self, records: list[StoredRecord]) -> None:
        batches = [r.event for r in records if isinstance(r.event, ev.ActivityBatchRecorded)]
        batch = batches[0] if len(batches) == 1 else _concat(batches)
        seq = records[-1].last_seq
        for day, keys, ops in split_by_day(batch):
            await self._day(day).send(ApplyOps(seq, keys, ops))

    async def _broadcast_erasure(self, seq: int, keys: list[int]) -> None:
        arr = np.unique(np.array(keys, dtype=np.int64))
        for actor in list(self.days.values()):
            await actor.send(EraseKeys(seq, arr))

    async def views(self, days: range, with_sketch: bool) -> tuple[list[DayView], int]:
        async with self._lock:
            seen = self.dispatched_seq
            asks = await self.enqueue_views(days, with_sketch)
        return await collect_views(asks, seen), seen

    async def enqueue_views(self, days: range, with_sketch: bool) -> list[tuple[int, GetView | None]]:
        """Ask the days for their views; the caller holds the dispatch lock (rules 3, 4)."""
        asks: list[tuple[int, GetView | None]] = []
        for day in days:
            actor = self.days.get(day)
            msg = None
            if actor is not None:
                msg = GetView(with_sketch=with_sketch)
                await actor.send(msg)
            asks.append((day, msg))
        return asks

    async def barrier(self) -> tuple[int, dict[int, Membership], IdempotencySnapshot]:
        """Fold every day and capture it at one dispatch position (for snapshots)."""
        async with self._lock:
            seq = self.dispatched_seq
            msgs = []
            for actor in self.days.values():
                msg = Barrier(seq=seq)
                await actor.send(msg)
                msgs.append((actor.day, msg))
            self.ingest.advance(seq)
            ingest = self.ingest.snapshot()
        days = {}
        for day, msg in msgs:
            state, _ = await msg.reply
            days[day] = state
        return seq, days, ingest

    def days_seen_seq(self) -> int:
        """Every day actor has applied everything up to this position."""
        if not self.days:
            return self.dispatched_seq
        return min(a.seen_seq for a in self.days.values())


async def collect_views(asks: list[tuple[int, GetView | None]], seen: int) -> list[DayView]:
    """The replies to ``enqueue_views`` (a day without an actor is empty)."""
    return [await msg.reply if msg is not None else DayView(day, seen, EMPTY, None) for day, msg in asks]
