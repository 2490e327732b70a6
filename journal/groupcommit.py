"""Group commit: many concurrent appends, one transaction, acknowledged only after commit.

Rules:
1. One writer task (``run``) owns the journal while the service runs. Everything that writes --
   request batches, releases, erasure compaction, the indexer -- goes through its queue, so the
   order of the journal is the order of this queue and nothing else.
2. A request's future resolves only after (a) its transaction committed and (b) the committed
   records were handed to ``dispatch`` (which feeds the actors, awaiting their bounded
   mailboxes). So when a client sees 2xx, its events are durable *and* every later read through
   the actors' mailboxes is ordered after them.
3. The queue is bounded in events (``max_pending_events``): a submit over the bound raises
   ``Overloaded`` immediately (the gateway turns it into 503 + Retry-After). A slow consumer
   therefore shows up as backpressure at the door, never as memory growth.
4. ``append_prepared`` commits alone, after every earlier group has been committed and
   dispatched; its ``prepare`` callback runs in the writer task at that moment and may look at
   everything dispatched so far (the release actor uses this to honour every erasure that
   precedes its release in the journal).
5. A failed transaction rejects the futures of its group and leaves the journal as it was. A
   failed dispatch means the in-memory state no longer matches the journal: the committer stops
   taking work (``failure`` is set) and readiness goes false until a restart replays.
6. ``DuplicateRequest`` (another writer journaled the same Idempotency-Key first; only a shared
   PostgreSQL journal can say so) fails just the requests carrying those keys -- with that
   exception, so the caller can answer from the earlier record -- and the rest of the group is
   committed again without them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from journal.backend import DuplicateRequest, Job, JournalBackend
from journal.events import BudgetCharged, Event, StoredRecord

log = structlog.get_logger("journal.committer")

Dispatch = Callable[[list[StoredRecord]], Awaitable[None]]


class Overloaded(Exception):
    """The write queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, pending: int, limit: int, retry_after: int) -> None:
        super().__init__(f"write queue holds {pending} events (limit {limit})")
        self.retry_after = retry_after


class Closed(Exception):
    """The committer is shutting down or has failed; nothing was written."""


@dataclass(slots=True)
class _Item:
    future: asyncio.Future[list[StoredRecord]]
    events: Sequence[Event] = ()
    size: int = 0
    prepare: Callable[[list[BudgetCharged]], Sequence[Event]] | None = None
    lock_periods: Sequence[str] | None = None
    job: Job | None = None


@dataclass
class CommitStats:
    groups: int = 0
    records: int = 0
    events: int = 0
    commit_seconds: float = 0.0
    last_group_events: int = 0
    recent_rate: float = 0.0  # events/s over recent groups, for Retry-After
    failures: int = 0


class Committer:
    def __init__(
        self,
        journal: JournalBackend,
        dispatch: Dispatch,
        *,
        max_pending_events: int = 1_000_000,
        max_group_events: int = 200_000,
    ) -> None:
        self.journal = journal
        self._dispatch = dispatch
        self.max_pending_events = max_pending_events
        self.max_group_events = max_group_events
        self._queue: deque[_Item] = deque()
        self._wake = anyio.Event()
        self._closing = False
        self._stopped = anyio.Event()
        self.pending_events = 0
        self.dispatched_seq = journal.head
        self.failure: BaseException | None = None
        self.stats = CommitStats()

    # -- submitting ------------------------------------------------------------------------

    def _enqueue(self, item: _Item) -> asyncio.Future[list[StoredRecord]]:
        if self._closing or self.failure is not None:
            raise Closed("journal writer is not accepting work")
        self._queue.append(item)
        self.pending_events += item.size
        self._wake.set()
        return item.future

    def submit(self, events: Sequence[Event]) -> asyncio.Future[list[StoredRecord]]:
        """Queue events for the next group; raises Overloaded if the queue is full."""
        size = sum(max(e.size, 1) for e in events)
        if self.pending_events + size > self.max_pending_events and self.pending_events > 0:
            rate = self.stats.recent_rate or 1.0
            retry = max(1, min(30, round(self.pending_events / rate)))
            raise Overloaded(self.pending_events, self.max_pending_events, retry)
        return self._enqueue(_Item(asyncio.get_running_loop().create_future(), events, size))

    async def append(self, events: Sequence[Event]) -> list[StoredRecord]:
        return await self.submit(events)

    async def append_prepared(self, prepare: Callable[[], Sequence[Event]]) -> list[StoredRecord]:
        """Commit the events ``prepare()`` returns, alone, after all earlier work (rule 4)."""
        fut: asyncio.Future[list[StoredRecord]] = asyncio.get_running_loop().create_future()
        return await self._enqueue(_Item(fut, prepare=lambda _charges: prepare()))

    async def append_charged(
        self, periods: Sequence[str], prepare: Callable[[list[BudgetCharged]], Sequence[Event]]
    ) -> list[StoredRecord]:
        """``append_prepared`` under the journal's lock on the accounting ``periods``
        (``JournalBackend.append_locked``): ``prepare`` gets the charges committed to them --
        by any writer -- and returns what to write, or raises to write nothing."""
        fut: asyncio.Future[list[StoredRecord]] = asyncio.get_running_loop().create_future()
        return await self._enqueue(_Item(fut, prepare=prepare, lock_periods=list(periods)))

    async def run_job(self, job: Job) -> list[StoredRecord]:
        """Run maintenance with exclusive use of the journal; records it returns are dispatched."""
        fut: asyncio.Future[list[StoredRecord]] = asyncio.get_running_loop().create_future()
        return await self._enqueue(_Item(fut, job=job))

    # -- the writer ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while self.failure is None:
                if not self._queue:
                    if self._closing:
                        return
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                head = self._queue[0]
                if head.prepare is not None or head.job is not None:
                    self._queue.popleft()
                    await self._run_exclusive(head)
                else:
                    await self._commit_group(self._take_group())
        finally:
            self._fail_queue(Closed("journal writer stopped"))
            self._stopped.set()

    def _take_group(self) -> list[_Item]:
        group: list[_Item] = []
        size = 0
        while self._queue and self._queue[0].prepare is None and self._queue[0].job is None:
            if group and size + self._queue[0].size > self.max_group_events:
                break
            item = self._queue.popleft()
            group.append(item)
            size += item.size
        return group

    async def _commit_group(self, group: list[_Item]) -> None:
        size = sum(item.size for item in group)
        started = time.perf_counter()
        try:
            stored = await self.journal.append([e for item in group for e in item.events])
        except DuplicateRequest as dup:  # rule 6
            taken = [item for item in group if _idempotency_keys(item) & dup.keys]
            if not taken:
                taken = group  # cannot tell which: fail them all rather than loop
            for item in taken:
                self.pending_events -= item.size
                if not item.future.done():
                    item.future.set_exception(dup)
            rest = [item for item in group if item not in taken]
            if rest:
                await self._commit_group(rest)
            return
        except Exception as exc:  # the transaction rolled back: nothing of this group exists
            self.pending_events -= size
            self.stats.failures += 1
            log.error("journal_commit_failed", error=repr(exc), events=size)
            for item in group:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self._account(started, len(stored), size)
        self.pending_events -= size
        await self._deliver(stored)
        i = 0
        for item in group:
            n = len(item.events)
            if not item.future.done():
                item.future.set_result(stored[i : i + n])
            i += n

    async def _run_exclusive(self, item: _Item) -> None:
        started = time.perf_counter()
        try:
            if item.job is not None:
                stored = await item.job(self.journal)
            else:
                assert item.prepare is not None
                if item.lock_periods is not None:
                    stored = await self.journal.append_locked(item.lock_periods, item.prepare)
                else:
                    events = item.prepare([])
                    stored = await self.journal.append(events) if events else []
        except Exception as exc:
            # A job may have committed before failing (e.g. compaction, then the rebuild):
            # whatever is durable must reach the actors, or state and journal diverge.
            await self._catch_up()
            if not item.future.done():
                item.future.set_exception(exc)
            return
        self._account(started, len(stored), sum(r.last_seq - r.seq + 1 for r in stored))
        await self._deliver(stored)
        if not item.future.done():
            item.future.set_result(stored)

    async def _deliver(self, stored: list[StoredRecord]) -> None:
        if not stored:
            return
        try:
            await self._dispatch(stored)
        except Exception as exc:
            # The records are durable but the actors did not all see them: stop writing (rule 5).
            self.failure = exc
            log.critical("dispatch_failed_state_diverged", error=repr(exc), seq=stored[-1].seq)
            return
        self.dispatched_seq = stored[-1].last_seq

    async def _catch_up(self) -> None:
        if self.journal.head <= self.dispatched_seq:
            return
        try:
            async for records in self.journal.read(self.dispatched_seq):
                await self._deliver(records)
                if self.failure is not None:
                    return
        except Exception as exc:
            self.failure = exc
            log.critical("catch_up_failed_state_diverged", error=repr(exc))

    def _account(self, started: float, records: int, events: int) -> None:
        elapsed = time.perf_counter() - started
        s = self.stats
        s.groups += 1
        s.records += records
        s.events += events
        s.commit_seconds += elapsed
        s.last_group_events = events
        if elapsed > 0:
            rate = events / elapsed
            s.recent_rate = rate if s.recent_rate == 0 else 0.8 * s.recent_rate + 0.2 * rate

    def _fail_queue(self, exc: BaseException) -> None:
        while self._queue:
            item = self._queue.popleft()
            self.pending_events -= item.size
            if not item.future.done():
                item.future.set_exception(exc)

    # -- shutdown --------------------------------------------------------------------------

    async def drain_and_stop(self) -> None:
        """Stop taking work, commit and dispatch what is queued, then return."""
        self._closing = True
        self._wake.set()
        await self._stopped.wait()

    def info(self) -> dict[str, Any]:
        return {
            "pending_events": self.pending_events,
            "dispatched_seq": self.dispatched_seq,
            "head": self.journal.head,
        }


def _idempotency_keys(item: _Item) -> set[str]:
    return {k for e in item.events if (k := getattr(e, "idempotency_key", None)) is not None}
