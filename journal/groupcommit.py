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
7. Other writers (a shared journal, ``backend`` rule 6): ``dispatch`` still sees every record
   exactly once, in journal order. Before this process's own records are dispatched, whatever
   others committed below them is read and dispatched first (``_catch_up``: positions are
   committed in order, so the gap is complete when our commit returns); ``follow`` (woken by the
   journal's notifications) dispatches what others committed while this process is idle; and
   a locked or prepared append catches up *inside* its lock before ``prepare`` runs, so a release
   decided there has seen every release, charge and erasure committed before it by anyone.
   ``partitions`` says what this process holds: ``None`` every key (records are dispatched as
   written), an empty set none (activity is dispatched without its keys: positions and
   idempotency only), a subset only those pseudonym partitions (read back from the journal).
8. A storage failure (``journal.storage``: full, busy, broken; any backend) fails the requests of
   that group with ``StorageUnavailable`` -- nothing of them is acknowledged -- and then the
   committer *settles* before writing anything else: it asks the journal for its real head (a
   connection lost after COMMIT was sent, an fsync error after the WAL frame: the write may have
   happened after all) and dispatches every committed record it had not, so the live state never
   lags the journal. If the journal cannot even be read (a database that is down), the committer
   is *unsettled*: it fails what is queued and refuses new work with ``StorageUnavailable`` (503
   + Retry-After, never a request hanging on a dead database), and retries settling with a
   backoff until the journal answers again. A read error is never fatal; only a failed dispatch
   (rule 5, a bug) is.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
import structlog

from journal.backend import DuplicateRequest, Job, JournalBackend
from journal.events import ActivityBatchRecorded, BudgetCharged, Event, StoredRecord
from journal.storage import StorageUnavailable, classify, unavailable

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
    prepare: Callable[[list[BudgetCharged]], Awaitable[Sequence[Event]]] | None = None
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
    failures_by_kind: dict[str, int] = field(default_factory=dict)  # storage failures (rule 8)
    found_after_failure: int = 0  # failed writes that had committed after all (rule 8)
    unsettled: int = 0  # times the journal could not be read back, so work was refused (rule 8)


class Committer:
    def __init__(
        self,
        journal: JournalBackend,
        dispatch: Dispatch,
        *,
        max_pending_events: int = 1_000_000,
        max_group_events: int = 200_000,
        partitions: Collection[int] | None = None,
        dispatched_seq: int | None = None,
    ) -> None:
        self.journal = journal
        self.partitions = None if partitions is None else frozenset(partitions)  # rule 7
        self._dispatch = dispatch
        self.max_pending_events = max_pending_events
        self.max_group_events = max_group_events
        self._queue: deque[_Item] = deque()
        self._wake = anyio.Event()
        self._closing = False
        self._stopped = anyio.Event()
        self.pending_events = 0
        self.dispatched_seq = journal.head if dispatched_seq is None else dispatched_seq
        self.failure: BaseException | None = None
        self.unsettled: BaseException | None = None  # rule 8: the journal could not be read
        self._settle_delay = self.SETTLE_MIN_SECONDS
        self.stats = CommitStats()
        self._follow_due = False
        self.followed_records = 0  # records other processes wrote, dispatched here (rule 7)

    SETTLE_MIN_SECONDS = 0.1
    SETTLE_MAX_SECONDS = 2.0

    # -- submitting ------------------------------------------------------------------------

    def _enqueue(self, item: _Item) -> asyncio.Future[list[StoredRecord]]:
        if self._closing or self.failure is not None:
            raise Closed("journal writer is not accepting work")
        if self.unsettled is not None:
            raise unavailable(self.unsettled, classify(self.unsettled) or "failed")
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

        async def call(_charges: list[BudgetCharged]) -> Sequence[Event]:
            return prepare()

        return await self._enqueue(_Item(fut, prepare=call))

    async def append_charged(
        self, periods: Sequence[str], prepare: Callable[[list[BudgetCharged]], Awaitable[Sequence[Event]]]
    ) -> list[StoredRecord]:
        """``append_prepared`` under the journal's lock on the accounting ``periods``
        (``JournalBackend.append_locked``): ``prepare`` runs once everything committed before the
        lock was taken -- by any writer -- has been dispatched here (rule 7), gets the charges
        committed to the periods, and returns what to write (possibly nothing), or raises to
        write nothing."""
        fut: asyncio.Future[list[StoredRecord]] = asyncio.get_running_loop().create_future()
        return await self._enqueue(_Item(fut, prepare=prepare, lock_periods=list(periods)))

    async def run_job(self, job: Job) -> list[StoredRecord]:
        """Run maintenance with exclusive use of the journal; records it returns are dispatched."""
        fut: asyncio.Future[list[StoredRecord]] = asyncio.get_running_loop().create_future()
        return await self._enqueue(_Item(fut, job=job))

    # -- the writer ------------------------------------------------------------------------

    def follow(self) -> None:
        """Dispatch what other processes committed (rule 7), at the writer's next turn."""
        self._follow_due = True
        self._wake.set()

    async def run(self) -> None:
        try:
            while self.failure is None:
                if self.unsettled is not None:  # rule 8: nothing is written until settled
                    if self._closing:
                        return
                    await anyio.sleep(self._settle_delay)
                    self._settle_delay = min(self._settle_delay * 2, self.SETTLE_MAX_SECONDS)
                    await self._settle()
                    continue
                if self._follow_due:
                    self._follow_due = False
                    await self._catch_up()
                    continue
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
        except Exception as exc:  # nothing of this group is acknowledged (rule 8)
            self.pending_events -= size
            answer = self._failed(exc, events=size)
            await self._settle()  # first: by the time a client hears, the actors match the journal
            for item in group:
                if not item.future.done():
                    item.future.set_exception(answer)
            return
        self._account(started, len(stored), size)
        self.pending_events -= size
        if not await self._deliver(stored) and self.unsettled is not None:
            self._fail_group(group, self.unsettled)
            return
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
                prepare = item.prepare
                assert prepare is not None

                async def caught_up(charges: list[BudgetCharged]) -> Sequence[Event]:
                    await self._catch_up()  # rule 7: inside the lock, before deciding
                    if self.failure is not None:
                        raise Closed("journal writer failed while catching up")
                    if self.unsettled is not None:  # rule 8: never decide without everything
                        raise unavailable(self.unsettled, classify(self.unsettled) or "failed")
                    return await prepare(charges)

                if item.lock_periods is not None:
                    stored = await self.journal.append_locked(item.lock_periods, caught_up)
                else:
                    events = await caught_up([])
                    stored = await self.journal.append(events) if events else []
        except Exception as exc:
            # A job may have committed before failing (e.g. compaction, then the rebuild):
            # whatever is durable must reach the actors, or state and journal diverge.
            answer = self._failed(exc, events=0)
            if item.job is not None:
                answer = exc  # maintenance: its caller wants the cause, not an HTTP answer
            await self._settle()
            if not item.future.done():
                item.future.set_exception(answer)
            return
        self._account(started, len(stored), sum(r.last_seq - r.seq + 1 for r in stored))
        if not await self._deliver(stored) and self.unsettled is not None:
            self._fail_group([item], self.unsettled)
            return
        if not item.future.done():
            item.future.set_result(stored)

    async def _deliver(self, stored: list[StoredRecord]) -> bool:
        """This process's own committed records: what others committed below them first (rule 7).
        False if they could not all be dispatched: a bug (``failure``), or the journal could not
        be read back (``unsettled``; settling dispatches them later, rule 8)."""
        if not stored:
            return True
        if stored[0].seq > self.dispatched_seq + 1:
            await self._catch_up(until=stored[0].seq - 1)
            if self.unsettled is not None:
                return False
            if self.failure is None and self.dispatched_seq != stored[0].seq - 1:
                self.failure = RuntimeError(
                    f"journal gap: dispatched up to {self.dispatched_seq}, own records start at {stored[0].seq}"
                )
            if self.failure is not None:
                return False
        if self.partitions:  # a shard: its share of the keys is what the journal reads back
            await self._catch_up(until=stored[-1].last_seq)
            return self.failure is None and self.unsettled is None
        await self._dispatch_checked(stored if self.partitions is None else [_keyless(r) for r in stored])
        return self.failure is None

    async def _dispatch_checked(self, records: list[StoredRecord]) -> None:
        try:
            await self._dispatch(records)
        except Exception as exc:
            # The records are durable but the actors did not all see them: stop writing (rule 5).
            self.failure = exc
            log.critical("dispatch_failed_state_diverged", error=repr(exc), seq=records[-1].seq)
            return
        self.dispatched_seq = records[-1].last_seq

    async def _catch_up(self, until: int | None = None) -> None:
        """Read and dispatch every record after ``dispatched_seq`` (up to ``until``): what a failed
        job committed, or what other processes wrote (rule 7). A read error leaves the committer
        unsettled (rule 8), never failed: nothing diverged, the records are simply not read yet."""
        try:
            await self._read_and_dispatch(until, refresh=self.journal.shared)
        except Exception as exc:
            self._unsettle(exc)

    async def _read_and_dispatch(self, until: int | None = None, *, refresh: bool) -> None:
        if refresh:
            await self.journal.refresh_head()
        if self.journal.head <= self.dispatched_seq:
            return
        async for records in self.journal.read(self.dispatched_seq, partitions=self.partitions):
            mine = [r for r in records if r.seq > self.dispatched_seq and (until is None or r.seq <= until)]
            if mine:
                await self._dispatch_checked(mine)
                self.followed_records += len(mine)
            if self.failure is not None or (until is not None and records[-1].last_seq >= until):
                return

    # -- storage failures (rule 8) -------------------------------------------------------------

    def _failed(self, exc: Exception, *, events: int) -> Exception:
        """Count and log a failed write; what its requests are answered with."""
        self.stats.failures += 1
        kind = classify(exc)
        if kind is None:  # not a storage condition: a bug, answered as it is (500)
            log.error("journal_write_failed", error=repr(exc), events=events)
            return exc
        self.stats.failures_by_kind[kind] = self.stats.failures_by_kind.get(kind, 0) + 1
        log.error("journal_write_failed", kind=kind, error=repr(exc), events=events)
        return exc if isinstance(exc, StorageUnavailable) else unavailable(exc, kind)

    async def _settle(self) -> None:
        """Learn the journal's real head and dispatch what was committed but not dispatched."""
        before = self.dispatched_seq
        try:
            await self._read_and_dispatch(refresh=True)
        except Exception as exc:
            self._unsettle(exc)
            return
        if self.dispatched_seq > before and not self.journal.shared:  # (shared: others' records too)
            self.stats.found_after_failure += 1
            log.warning("journal_write_found_committed", first=before + 1, last=self.dispatched_seq)
        if self.unsettled is not None:
            log.info("journal_settled")
        self.unsettled = None
        self._settle_delay = self.SETTLE_MIN_SECONDS

    def _unsettle(self, exc: Exception) -> None:
        if self.unsettled is None:
            self.stats.unsettled += 1
            log.error("journal_unsettled", kind=classify(exc), error=repr(exc))
            self._fail_queue(unavailable(exc, classify(exc) or "failed"))
        self.unsettled = exc

    def _fail_group(self, items: list[_Item], cause: BaseException) -> None:
        """Committed but not dispatched (the journal could not be read back): not acknowledged --
        settling dispatches the records; a retry with the Idempotency-Key gets the first answer."""
        answer = unavailable(cause, classify(cause) or "failed")
        for item in items:
            if not item.future.done():
                item.future.set_exception(answer)

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


def _keyless(rec: StoredRecord) -> StoredRecord:
    """An activity record as a process holding no partition sees it: positions and header only."""
    if not isinstance(rec.event, ActivityBatchRecorded):
        return rec
    event = msgspec.structs.replace(rec.event, keys=b"", days=b"", ops=b"", metadata=[])
    return StoredRecord(rec.seq, rec.last_seq, event)


def _idempotency_keys(item: _Item) -> set[str]:
    return {k for e in item.events if (k := getattr(e, "idempotency_key", None)) is not None}
