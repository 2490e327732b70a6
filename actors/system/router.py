"""The router: hands committed journal records to the actors, in journal order.

Rules:
1. ``dispatch`` is the live twin of ``World.apply``: the same record goes to the same state.
   Activity goes to day actors (one message per day per batch, never per event) and to the
   idempotency index; erasures go to every day actor (consecutive erasures coalesced into one
   message per day), and to the feeds of the release and erasure actors; charges to the
   accountant's feed; releases and counter records to the release actor's feed (and releases and
   run starts to the accountant's too, for version-1 charges: ledger rule 3).
2. Sends to day mailboxes *wait* when a mailbox is full. The committer is the caller, so a slow
   day actor holds back the committer, whose bounded queue then refuses new requests (503):
   backpressure reaches the client without any unbounded buffer in between.
3. ``views`` enqueues its reads under the same lock as ``dispatch``, so the answer reflects
   exactly the records dispatched up to the position it returns (rule 2 of ``days.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import numpy as np

from actors.days import ApplyOps, Barrier, DayActor, DayView, EraseKeys, GetView
from actors.runtime import Actor
from actors.state.idempotency import IdempotencyIndex, IdempotencySnapshot
from actors.state.membership import EMPTY, Membership
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
    ) -> None:
        self._spawn_day = spawn_day
        self.days: dict[int, DayActor] = {}
        self.ingest = ingest
        self.release = release
        self.accountant = accountant
        self.erasure = erasure
        self.dispatched_seq = dispatched_seq
        self._lock = anyio.Lock()

    def adopt(self, day: int, actor: DayActor) -> None:
        self.days[day] = actor

    def _day(self, day: int) -> DayActor:
        actor = self.days.get(day)
        if actor is None:
            actor = self.days[day] = self._spawn_day(day, Membership(), self.dispatched_seq)
        return actor

    async def dispatch(self, records: list[StoredRecord]) -> None:
        async with self._lock:
            activity: list[StoredRecord] = []  # consecutive activity, delivered as one message per day
            erased: list[int] = []
            erased_seq = 0
            for rec in records:
                event = rec.event
                if isinstance(event, ev.ActivityBatchRecorded):
                    if erased:
                        await self._broadcast_erasure(erased_seq, erased)
                        erased = []
                    self.ingest.apply(rec.seq, rec.last_seq, event)
                    activity.append(rec)
                    continue
                if activity:
                    await self._deliver_activity(activity)
                    activity = []
                if isinstance(event, ev.UserErased):
                    if event.key is not None:
                        erased.append(event.key)
                        erased_seq = rec.seq
                    self.release.push_feed((rec.seq, event))
                    self.erasure.push_feed((rec.seq, event))
                    continue
                if erased:
                    await self._broadcast_erasure(erased_seq, erased)
                    erased = []
                self._feed(rec, event)
            if activity:
                await self._deliver_activity(activity)
            if erased:
                await self._broadcast_erasure(erased_seq, erased)
            self.dispatched_seq = records[-1].last_seq

    async def _deliver_activity(self, records: list[StoredRecord]) -> None:
        batches = [r.event for r in records if isinstance(r.event, ev.ActivityBatchRecorded)]
        batch = batches[0] if len(batches) == 1 else _concat(batches)
        seq = records[-1].last_seq
        for day, keys, ops in split_by_day(batch):
            await self._day(day).send(ApplyOps(seq, keys, ops))

    def _feed(self, rec: StoredRecord, event: ev.Event) -> None:
        if isinstance(event, ev.BudgetCharged):
            self.accountant.push_feed((rec.seq, event))
        elif isinstance(event, (ev.Released, ev.CounterStarted, ev.CounterStepped)):
            self.release.push_feed((rec.seq, event))
            if not isinstance(event, ev.CounterStepped):  # completes version-1 charges (ledger rule 3)
                self.accountant.push_feed((rec.seq, event))
        elif isinstance(event, ev.ErasurePurged):
            self.erasure.push_feed((rec.seq, event))

    async def _broadcast_erasure(self, seq: int, keys: list[int]) -> None:
        arr = np.unique(np.array(keys, dtype=np.int64))
        for actor in list(self.days.values()):
            await actor.send(EraseKeys(seq, arr))

    async def views(self, days: range, with_theta: bool) -> tuple[list[DayView], int]:
        asks: list[tuple[int, GetView | None]] = []
        async with self._lock:
            seen = self.dispatched_seq
            for day in days:
                actor = self.days.get(day)
                msg = None
                if actor is not None:
                    msg = GetView(with_theta=with_theta)
                    await actor.send(msg)
                asks.append((day, msg))
        return [await msg.reply if msg is not None else DayView(day, seen, EMPTY, None) for day, msg in asks], seen

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
