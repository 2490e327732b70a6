"""Consistent cuts over pseudonym shards: the exact count of a window, from shards that each hold
a part of the users, at one journal position.

Theory of operation (the protocol; HANDOFF "Shards and the consistent cut"):
1. The coordinator (a gateway's release actor) journals ``CutMarked(cut_id, first_day,
   last_day)``; it lands at position C.
2. Every shard dispatches the journal in order. When it reaches C, the router hands the record to
   ``CutBook.on_cut`` with every earlier record delivered to the days and no later one (router
   rule 4); ``on_cut`` enqueues a view request in each day actor of the window -- so the views are
   the days *exactly at C* -- and keeps them under ``cut_id`` (the newest ``keep`` cuts).
3. The coordinator asks every shard for ``count(cut_id, C)`` (``ShardClient``; the gateway's
   implementation is an internal HTTP route). A shard waits until it has dispatched C, unions
   its views once (worker thread; kept incrementally per window length, ``SlidingUnion``, so a
   daily release slides its share of the window by a day) and answers how many of its users
   were active in the window at C. A user lives in exactly one shard (``topology`` rule 1), so the sum is the exact count at C
   -- sensitivity 1 -- and noise and accounting happen once, on the sum, in the coordinator.
4. Under the period lock (release rule 4) the coordinator has dispatched everything committed
   before the lock, so it knows every erasure journaled after C; it asks each shard how many of
   those keys its union at C holds (``among``) and subtracts them (release rule 5).
5. A shard that restarted past C (from a snapshot) or dropped the cut answers ``CutUnavailable``;
   a shard that is down or unregistered makes the attempt fail with ``ShardsUnavailable`` (503
   with Retry-After). Either way nothing is published or charged, and the retry takes a new cut.
   A cut record is harmless: replay ignores it (``World``), a shard forgets it.
6. What the reader of that 503 learns is which shard index is missing, never where the
   deployment's processes live: a client's failure names the shard's internal address (and the
   driver's error text, which repeats it); ``ShardCounter`` logs both (``shard_unreachable``) and
   answers ``shard I of N unreachable`` instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import numpy as np
import structlog

from actors.days import DayView, GetView
from actors.refusals import ShardsUnavailable
from actors.sketches import SlidingUnion
from actors.state import membership
from actors.system.router import Router, collect_views
from journal import events as ev
from journal.backend import JournalBackend
from journal.events import StoredRecord

log = structlog.get_logger("actors.system")

CUT_WAIT_SECONDS = 30.0  # how long a shard waits to reach a cut before answering "unavailable"
HEARTBEAT_FRESH_SECONDS = 15.0  # a shard whose row is older than this is taken for dead
UNION_CACHES = 4  # window lengths whose incremental union a shard keeps


class CutUnavailable(Exception):
    """This shard cannot answer at that cut (it started after it, or forgot it): take a new one."""


@dataclass
class _Cut:
    seq: int
    asks: list[tuple[int, GetView | None]]
    union: np.ndarray | None = None
    lock: anyio.Lock = field(default_factory=anyio.Lock)


class CutBook:
    """A shard's side (rules 2, 3, 4)."""

    def __init__(self, router: Router, keep: int = 64) -> None:
        self.router = router
        self.keep = keep
        self._cuts: OrderedDict[str, _Cut] = OrderedDict()
        self._unions: dict[int, SlidingUnion] = {}  # window length -> its incremental union
        self._union_lock = anyio.Lock()  # one worker thread touches the caches at a time

    async def on_cut(self, rec: StoredRecord) -> None:
        event = rec.event
        assert isinstance(event, ev.CutMarked)
        asks = await self.router.enqueue_views(range(event.first_day, event.last_day + 1), False)
        self._cuts[event.cut_id] = _Cut(rec.seq, asks)
        while len(self._cuts) > self.keep:
            self._cuts.popitem(last=False)

    async def union(self, cut_id: str, seq: int, timeout: float = CUT_WAIT_SECONDS) -> np.ndarray:
        try:
            with anyio.fail_after(timeout):
                await self.router.reached(seq)
        except TimeoutError:
            raise CutUnavailable(f"this shard has not reached position {seq} within {timeout:g} s") from None
        cut = self._cuts.get(cut_id)
        if cut is None or cut.seq != seq:
            raise CutUnavailable(f"cut {cut_id} at {seq} is not held here (restarted after it, or forgotten)")
        async with cut.lock:
            if cut.union is None:
                views = await collect_views(cut.asks, seq)
                async with self._union_lock:
                    cut.union = await anyio.to_thread.run_sync(self._window_union, views)
                cut.asks = []
            return cut.union

    def _window_union(self, views: list[DayView]) -> np.ndarray:
        """As the release actor's (``SlidingUnion`` per window length, the newest few kept)."""
        if len(views) == 1:
            return views[0].members
        cache = self._unions.pop(len(views), None) or SlidingUnion()
        self._unions[len(views)] = cache
        while len(self._unions) > UNION_CACHES:
            self._unions.pop(next(iter(self._unions)))
        return cache.union({v.day: v.members for v in views})

    async def count(self, cut_id: str, seq: int) -> int:
        return len(await self.union(cut_id, seq))

    async def among(self, cut_id: str, seq: int, keys: np.ndarray) -> int:
        union = await self.union(cut_id, seq)
        return int(membership.contains(union, np.asarray(keys, dtype=np.int64)).sum()) if len(keys) else 0


class ShardClient(Protocol):
    """How a coordinator reaches a shard's ``CutBook`` (the gateway: internal HTTP)."""

    async def count(self, address: str, cut_id: str, seq: int) -> int: ...

    async def among(self, address: str, cut_id: str, seq: int, keys: Sequence[int]) -> int: ...


class ShardCounter:
    """A gateway's side (rules 1, 3, 4): which shards exist (the journal's registry) and the sum."""

    def __init__(self, journal: JournalBackend, shards: int, client: ShardClient) -> None:
        self.journal = journal
        self.shards = shards
        self.client = client

    async def addresses(self) -> list[str]:
        """The internal address of every shard of the layout, from the registry (freshest row)."""
        rows = [m for m in await self.journal.members() if m.kind == "shard" and m.shards == self.shards]
        out = []
        for index in range(self.shards):
            mine = sorted((m for m in rows if m.shard == index), key=lambda m: m.age_seconds)
            if not mine or mine[0].address is None or mine[0].age_seconds > HEARTBEAT_FRESH_SECONDS:
                raise ShardsUnavailable(
                    f"shard {index} of {self.shards} is not registered or has stopped answering; retry shortly"
                )
            out.append(mine[0].address)
        return out

    async def count(self, cut_id: str, seq: int) -> tuple[int, list[str]]:
        addresses = await self.addresses()
        counts = await _each(addresses, lambda address: self.client.count(address, cut_id, seq))
        return sum(counts), addresses

    async def among(self, addresses: list[str], cut_id: str, seq: int, keys: np.ndarray) -> int:
        if not len(keys):
            return 0
        wanted = [int(k) for k in keys]
        return sum(await _each(addresses, lambda address: self.client.among(address, cut_id, seq, wanted)))


async def _each(addresses: list[str], ask: Callable[[str], Awaitable[int]]) -> list[int]:
    """Ask every shard at once; the first failure (``ShardsUnavailable``) is the answer (rule 6:
    by the shard's index; its address only in the log)."""
    out = [0] * len(addresses)

    async def one(i: int, address: str) -> None:
        try:
            out[i] = await ask(address)
        except ShardsUnavailable as exc:
            log.warning("shard_unreachable", shard=i, shards=len(addresses), address=address, reason=str(exc))
            raise ShardsUnavailable(f"shard {i} of {len(addresses)} unreachable; retry shortly") from None

    try:
        async with anyio.create_task_group() as tg:
            for i, address in enumerate(addresses):
                tg.start_soon(one, i, address)
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    return out
