"""``ActorSystem``: the one object the gateway talks to. Boot, supervise, serve, shut down.

Theory of operation:
- ``running()`` opens the journal and one task group that owns every task: the committer (the
  only writer), the actors' loops, and the background loops (``loops.py``). Nothing is started
  outside it. A journal this process cannot use as configured (it cannot be opened, or has fewer
  pseudonym partitions than the shard layout needs) raises from ``running()`` itself, before any
  task starts; a failure later in the boot is ``boot_error``.
- Boot: newest valid snapshot (or none) + tail replay builds a ``World`` (``boot.py``); its
  pieces become the actors' states; then the committer starts and ``ready`` turns true. Until
  then every request that needs state is refused with ``NotReady`` (503), while liveness keeps
  answering.
- The gateway calls the coroutines at the bottom (``ingest``, ``release``, ``erase``, ...), which
  only translate into journal appends and actor messages. Mailbox-full and queue-full surface as
  ``MailboxFull`` / ``Overloaded``, which the gateway turns into 503 + Retry-After.
- With ``RELEASE_SCHEDULE=daily`` the ``Scheduler`` (``scheduler.py``) runs among the background
  loops and publishes each closed day by itself; ``clock`` (injected, one for the whole system)
  is the only time it and the release actor consult.
- Shutdown: the committer commits and dispatches what is queued, a final snapshot is written,
  mailboxes close and drain, background loops are cancelled, the journal is checkpointed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import anyio
import msgspec
import numpy as np
import structlog

from actors.accountant import AccountantActor, BudgetReport, BudgetReportOut, LedgerBarrier, schedule_fit
from actors.days import DayActor, DayView
from actors.erasure import ErasureActor, ErasureBarrier, ListEntries, ListErasures, Lookup, purge_erased
from actors.noise_pool import NoisePool
from actors.privacy import accounting
from actors.refusals import NotReady
from actors.release import ReleaseActor, ReleaseBarrier, RequestRelease, RequestRevision
from actors.runtime import Actor, Supervisor
from actors.settings import METRICS, EngineSettings, ReleaseSchedule
from actors.state import periods
from actors.state import world as world_mod
from actors.state.erasure_book import ErasureEntry, ErasureReceipt, receipt
from actors.state.idempotency import IngestReceipt
from actors.state.membership import Membership
from actors.state.release_book import ReleaseKey
from actors.state.world import DaySnapshot, World, WorldSnapshot
from actors.system import loops
from actors.system.boot import restore_world, snapshot_seq, utcnow
from actors.system.cuts import CutBook, ShardClient, ShardCounter
from actors.system.ingest import IngestService
from actors.system.router import Router
from actors.system.scheduler import Scheduler
from actors.system.snapshotting import Snapshotter
from actors.system.topology import Topology
from journal import compaction, faults
from journal import events as ev
from journal.backend import JournalBackend, Member
from journal.events import StoredRecord
from journal.groupcommit import Committer
from journal.location import JournalSpec

log = structlog.get_logger("actors.system")


class ActorSystem:
    upkeep_retry_seconds = 2.0  # how often a failed rebuild / snapshot replacement is retried

    def __init__(
        self,
        settings: EngineSettings,
        journal: JournalSpec,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        topology: Topology | None = None,
        shard_client: ShardClient | None = None,
    ) -> None:
        self.settings = settings
        self.topology = topology or Topology()
        self.shard_client = shard_client
        if self.topology.kind == "gateway" and shard_client is None:
            raise ValueError("a gateway over shards needs a ShardClient to reach them")
        self.spec = dataclasses.replace(journal, role=self.topology.name) if self.topology.name else journal
        self.data_dir = journal.data_dir
        self.clock = clock
        self.snapshots = Snapshotter(
            self.spec.snapshot_store(),
            self.collect,
            journal_id=lambda: self.journal.journal_id,
            epoch=lambda: self.journal.epoch,
            position=lambda: self.committer.dispatched_seq,
        )
        self.ready = False
        self.boot_error: BaseException | None = None
        self.boot_failed = anyio.Event()  # set with boot_error: the process cannot serve (serve() exits)
        self.restored_from: int | None = None
        self.actor_crashes: dict[str, int] = {}
        self._bg_scope = anyio.CancelScope()
        self._upkeep = anyio.Lock()  # a rewrite and its follow-up (rebuild, snapshots) at a time

    # -- lifecycle -------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ActorSystem]:
        self.journal: JournalBackend = await self.spec.open(serving=True)
        try:
            # What this process reads is known once the journal is open (its partition count is
            # fixed when it is created): an impossible layout is refused here, raised to the
            # caller before anything is served (gateway: one line, exit 2), not as a boot failure.
            self.partitions = self.topology.partitions(self.journal.partition_count)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._boot, name="boot")
                try:
                    yield self
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._shutdown()
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.journal.close()

    async def wait_ready(self, timeout: float = 60) -> None:
        with anyio.fail_after(timeout):
            while not self.ready:
                if self.boot_error is not None:
                    raise RuntimeError("boot failed") from self.boot_error
                await anyio.sleep(0.01)

    async def _boot(self) -> None:
        started = time.perf_counter()
        try:
            if self.journal.needs_rebuild:  # a crash during a purge's VACUUM: finish it first
                log.warning("journal_rebuild_resumed", epoch=self.journal.epoch)
                await self.journal.rebuild()
            swept = self.snapshots.store.sweep(journal_id=self.journal.journal_id, epoch=self.journal.epoch)
            world, self.restored_from = await restore_world(
                self.journal, self.snapshots.store, self.settings, partitions=self.partitions
            )
            unshredded = await compaction.unshredded_runs(self.journal)
            self._spawn(world)
        except Exception as exc:
            # Not raised into the task group: the gateway owns the process and ends it cleanly (one
            # line, an exit code); liveness keeps answering, readiness never turns true.
            self.boot_error = exc
            log.critical("boot_failed", error=repr(exc))
            self.boot_failed.set()
            return
        self._tg.start_soon(self.committer.run, name="committer")
        self._tg.start_soon(self._background, name="background")
        self.snapshots.last_seq = self.restored_from or 0
        for run_id in unshredded:  # a crash between a run's last step and its shredding
            run = world.releases.runs.get(run_id)
            if run is not None and run.t >= run.started.horizon:
                self._tg.start_soon(self._shred_run, run_id, name="shred-at-boot")
        # Files of another epoch were swept above; one of this epoch older than the last purge was
        # captured while that purge ran and may still hold its users (erasure book). Either way a
        # crash interrupted a purge's follow-up: finish it *before* ready, so no receipt says
        # "applied" for a purge that is complete, and no stale file outlives the boot.
        purged = world.erasures.last_purge_seq()
        behind = [p.name for p in self.snapshots.store.list() if snapshot_seq(p) < purged]
        if swept or behind:
            log.warning("snapshots_replaced_at_boot", swept=swept, older_than_last_purge=behind)
            try:
                await self._replace_snapshots()
            except Exception as exc:  # e.g. disk full: the upkeep loop retries (snapshots.dirty)
                log.error("snapshot_replace_failed", error=repr(exc))
        else:
            self.snapshots.mark_clean()
        self.ready = True
        log.info(
            "ready",
            journal_seq=self.journal.head,
            days=len(world.days),
            from_snapshot=self.restored_from,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _spawn(self, world: World) -> None:
        s = self.settings
        self.supervisor = Supervisor(self._tg, on_crash=self._count_crash)
        self.noise = NoisePool()  # release noise drawn ahead of time (actors/noise_pool.py)
        self.committer = Committer(
            self.journal,
            lambda records: self.router.dispatch(records),
            max_pending_events=s.max_pending_events,
            partitions=self.partitions,
            dispatched_seq=world.days_seq,
        )
        self.ingest_service = IngestService(self.committer, world.ingest, now=self._now)
        self.accountant = AccountantActor(world.ledger, s, capacity=s.control_mailbox)
        self.erasure = ErasureActor(
            world.erasures,
            capacity=s.control_mailbox,
            purge_delay=s.purge_delay_seconds,
            purge=self._purge,
            now=self._now,
        )
        self.release_actor = ReleaseActor(
            world.releases,
            s,
            capacity=s.control_mailbox,
            committer=self.committer,
            days=self,
            accountant=self.accountant,
            clock=self.clock,
            on_run_finished=self._run_finished,
            noise=self.noise,
            shards=self._shard_counter(),
        )
        self.scheduler = Scheduler(s, self.clock, self.release_actor) if s.scheduled else None
        self.router = Router(
            spawn_day=self._spawn_day,
            ingest=world.ingest,
            release=self.release_actor,
            accountant=self.accountant,
            erasure=self.erasure,
            dispatched_seq=world.days_seq,
        )
        self.cuts = CutBook(self.router) if self.topology.kind == "shard" else None
        if self.cuts is not None:
            self.router.on_cut = self.cuts.on_cut
        for actor in (self.accountant, self.erasure, self.release_actor):
            self.supervisor.spawn(actor)
        for day, state in world.days.items():
            self.router.adopt(day, self._spawn_day(day, state, world.days_seq))

    def _shard_counter(self) -> ShardCounter | None:
        if self.topology.shards is None:
            return None
        assert self.shard_client is not None
        return ShardCounter(self.journal, self.topology.shards, self.shard_client)

    def cut_book(self) -> CutBook:
        """A shard's cuts (``cuts.py``); anything else has none."""
        self._require_ready()
        if self.cuts is None:
            raise RuntimeError("only a shard holds cuts")
        return self.cuts

    def member(self) -> Member:
        """This process's row in the journal's registry (backend rule 7)."""
        t = self.topology
        index, count = t.shard if t.shard is not None else (None, t.shards)
        return Member(
            name=f"{t.name or 'main'}@{self.data_dir.resolve()}@{socket.gethostname()}",
            kind=t.kind,
            shard=index,
            shards=count,
            address=t.address,
            applied_seq=self.router.days_seen_seq(),
            clean_seq=self.snapshots.clean_seq,
            pid=os.getpid(),
        )

    async def _positions(self) -> tuple[int, int]:
        """(every day-holding process has applied up to, every process's snapshots are clean from)
        -- over all processes sharing the journal (an erasure receipt speaks for all of them)."""
        applied, clean = self.router.days_seen_seq(), self.snapshots.clean_seq
        if self.journal.shared:
            me = self.member().name
            for m in await self.journal.members():
                if m.name == me:
                    continue
                if m.kind != "gateway":
                    applied = min(applied, m.applied_seq)
                clean = min(clean, m.clean_seq)
        return applied, clean

    async def views(self, days: range, with_sketch: bool) -> tuple[list[DayView], int]:
        """The release actor's ``DayViews``: the days' memberships at one dispatch position."""
        return await self.router.views(days, with_sketch)

    def _now(self) -> float:
        """The injected clock as a POSIX timestamp (journal records store times as floats)."""
        return self.clock().timestamp()

    def _run_finished(self, run_id: str) -> None:
        self._tg.start_soon(self._shred_run, run_id, name="shred")

    def _spawn_day(self, day: int, state: Membership, seen_seq: int) -> DayActor:
        s = self.settings
        actor = DayActor(day, state, seen_seq, capacity=s.day_mailbox, sketch=s.sketch)
        self.supervisor.spawn(actor)
        return actor

    def _count_crash(self, actor: Actor, exc: BaseException) -> None:
        self.actor_crashes[actor.kind] = self.actor_crashes.get(actor.kind, 0) + 1

    async def _background(self) -> None:
        with self._bg_scope:
            async with anyio.create_task_group() as bg:
                bg.start_soon(anyio.to_thread.run_sync, accounting.warm_up, name="warm-accounting")
                bg.start_soon(self.noise.refill_loop, name="noise-pool")  # noise drawn off the request path
                bg.start_soon(self._plan_noise_ahead, name="noise-plans")
                if self.settings.scheduled:
                    bg.start_soon(self._check_schedule_fits, name="schedule-fit")
                if self.topology.writes:  # a shard only reads (topology rule 2)
                    bg.start_soon(self.erasure.purge_loop, name="purge")
                bg.start_soon(loops.journal_housekeeping, self.journal, self.committer, name="journal-housekeeping")
                bg.start_soon(
                    loops.snapshot_loop,
                    self.snapshots,
                    lambda: self.committer.dispatched_seq,
                    self.settings,
                    name="snapshots",
                )
                bg.start_soon(self._upkeep_loop, name="upkeep")
                if self.journal.shared:
                    bg.start_soon(loops.follow_journal, self.journal, self.committer, name="follow")
                    bg.start_soon(loops.heartbeat, self.journal, self.member, name="heartbeat")
                if self.scheduler is not None and self.topology.writes:
                    bg.start_soon(self.scheduler.run, name="schedule")

    async def _check_schedule_fits(self) -> None:
        """Say at start-up when the configured schedule cannot fit the caps (``accountant.
        schedule_fit``): its publications would be refused once a period's budget runs out."""
        for fit in await anyio.to_thread.run_sync(schedule_fit, self.settings):
            if not fit.fits:
                log.warning(
                    "schedule_exceeds_budget",
                    period_days=fit.days,
                    example=fit.period,
                    epsilon=round(fit.epsilon, 4),
                    epsilon_dau=round(fit.epsilon_dau, 4),
                    epsilon_mau=round(fit.epsilon_mau, 4),
                    cap=fit.cap,
                    detail="the daily schedule charges a period of this length more than the cap allows; "
                    "its later publications will be refused: raise the cap or lower EPSILON_x / COUNTER_EPSILON_x "
                    "/ REVISION_LAGS_DAYS (README 'Privacy statement')",
                )

    async def _plan_noise_ahead(self) -> None:
        """Register this period's and the next's calibrations and counter plans with the noise
        pool (``actors/noise_pool.py`` rules 3-4), at boot and then once a day."""
        while True:
            await self.release_actor.plan_ahead(periods.today(self.clock(), self.settings.tz))
            await anyio.sleep(86_400)

    async def _shutdown(self) -> None:
        self._bg_scope.cancel()
        if not self.ready:
            return
        self.ready = False
        await self.committer.drain_and_stop()
        dirty = self.snapshots.dirty and not self.journal.needs_rebuild
        if self.committer.failure is None and (dirty or self.committer.dispatched_seq > self.snapshots.last_seq):
            try:
                await self.snapshots.write(replace_all=dirty)
            except Exception as exc:
                log.error("final_snapshot_failed", error=repr(exc))
        self.supervisor.close_all()
        log.info("stopped", journal_seq=self.journal.head)

    # -- maintenance jobs (through the committer's exclusive slot) ------------------------------

    async def _purge(self, entries: list[ErasureEntry]) -> None:
        targets = [
            compaction.PurgeTarget(e.erasure_id, e.key, e.seq, e.requested_at) for e in entries if e.key is not None
        ]
        if not targets:
            return
        now = self._now()
        async with self._upkeep:
            await self.committer.run_job(lambda journal: purge_erased(journal, targets, now))
            faults.hit("purge.before_snapshots")
            await self._replace_snapshots()
        log.info("erasures_purged", count=len(targets))

    async def _shred_run(self, run_id: str) -> None:
        """Crypto-shred a finished counter run's token secret (flippancy rule 3): journal first,
        then every snapshot (they hold a copy)."""
        async with self._upkeep:
            await self.committer.run_job(lambda journal: compaction.shred_run_secret(journal, run_id))
            await self._replace_snapshots()
        log.info("counter_run_secret_shredded", run_id=run_id)

    async def _replace_snapshots(self) -> None:
        await self.snapshots.replace_all()

    async def _upkeep_loop(self) -> None:
        """Finish what a failed rewrite left undone, once the cause is gone (a full disk): the
        VACUUM of a committed purge, then the snapshot replacement -- in that order, because a
        receipt says ``purged`` only after both (no byte left in the database file, none in a
        snapshot)."""
        while True:
            await anyio.sleep(self.upkeep_retry_seconds)
            if self.committer.failure is not None or self._upkeep.locked():
                continue
            if not (self.journal.needs_rebuild or self.snapshots.dirty):
                continue
            async with self._upkeep:
                try:
                    if self.journal.needs_rebuild:
                        await self.committer.run_job(_rebuild)
                    if self.snapshots.dirty:
                        await self._replace_snapshots()
                    log.info("upkeep_completed", epoch=self.journal.epoch)
                except Exception as exc:
                    log.error("upkeep_failed", error=repr(exc))

    # -- snapshots -------------------------------------------------------------------------

    async def collect(self) -> WorldSnapshot:
        """A snapshot of the live state (see world.py rule 2 for why no global pause is needed)."""
        seq, days, ingest = await self.router.barrier()
        releases = await self.release_actor.ask(ReleaseBarrier(seq=seq))
        ledger = await self.accountant.ask(LedgerBarrier(seq=seq))
        erasures = await self.erasure.ask(ErasureBarrier(seq=seq))
        return WorldSnapshot(
            world_mod.FORMAT,
            seq,
            [DaySnapshot(d, m.base.astype("<i8").tobytes()) for d, m in sorted(days.items())],
            ingest,
            releases,
            ledger,
            erasures,
        )

    async def snapshot(self, *, replace_all: bool = False) -> Path:
        return await self.snapshots.write(replace_all=replace_all)

    # -- the gateway's entry points ----------------------------------------------------------

    def _require_ready(self) -> None:
        if not self.ready:
            raise NotReady("replaying the journal; retry shortly")

    async def ingest(
        self,
        keys: np.ndarray,
        days: np.ndarray,
        ops: np.ndarray,
        metadata: list[tuple[int, bytes]],
        idempotency_key: str | None = None,
    ) -> tuple[IngestReceipt, bool]:
        """Journal one batch; returns (receipt, replayed). Replayed = an earlier identical request."""
        self._require_ready()
        return await self.ingest_service.ingest(keys, days, ops, metadata, idempotency_key)

    async def release(self, key: ReleaseKey) -> ev.Released:
        self._require_ready()
        key = ReleaseKey._make(key)  # a plain (metric, day, window) tuple is accepted too
        cached = self.release_actor.book.latest(key)  # immutable, journaled records only
        if cached is not None:
            return cached
        return await self.release_actor.ask_nowait(RequestRelease(key=key))

    async def revise(self, key: ReleaseKey) -> ev.Released:
        self._require_ready()
        key = ReleaseKey._make(key)
        return await self.release_actor.ask_nowait(RequestRevision(key=key))

    async def budget(self, period: str | None = None, last: int | None = None) -> BudgetReportOut:
        """Spend per period (``period``: one; ``last``: the last k up to today's, with their
        composition -- accountant rule 4); every period with charges otherwise."""
        self._require_ready()
        return await self.accountant.ask_nowait(
            BudgetReport(period=period, last=last, today=periods.today(self.clock(), self.settings.tz))
        )

    def releases(self, offset: int, limit: int, metric: str | None = None) -> tuple[list[ev.Released], int]:
        self._require_ready()
        log_ = self.release_actor.book.log
        if metric is not None:
            log_ = [r for r in log_ if r.metric == metric]
        return log_[offset : offset + limit], len(log_)

    def series(
        self, metric: str, first: int | None, last: int | None
    ) -> list[tuple[int, ev.Released | ev.ReleaseRefused]]:
        """The published series of ``metric`` (MAU: the default window): per day in [first, last],
        the latest release, or the refusal of its first publication. Days without either are
        absent (not due yet, or before the schedule's start)."""
        self._require_ready()
        window = 1 if metric == "dau" else self.settings.mau_window_days
        rows = self.release_actor.book.series(metric, window)
        return sorted((d, r) for d, r in rows.items() if (first is None or d >= first) and (last is None or d <= last))

    def schedule_info(self) -> ScheduleInfo:
        """The schedule as configured and recorded (all public: it depends on no data)."""
        self._require_ready()
        s = self.settings
        book = self.release_actor.book
        configured = periods.day_of(s.release_start) if s.release_start is not None else None
        recorded = book.start.release_start if book.start is not None else None
        source: StartSource | None = "RELEASE_START" if configured is not None else None
        if source is None and recorded is not None:
            source = "first_start"
        return ScheduleInfo(
            schedule=s.release_schedule,
            release_start=configured if configured is not None else recorded,
            release_start_source=source,
            revision_lags_days=list(s.revision_lags),
            refused={m: sum(1 for r in book.refusals if r.metric == m) for m in METRICS},
            scheduled={m: sum(1 for (k, _) in book.scheduled if k.metric == m) for m in METRICS},
        )

    async def erasure_counts(self) -> dict[str, int]:
        """Erasure receipts by status -- exact counts, not a release: admin only."""
        self._require_ready()
        entries = await self.erasure.ask_nowait(ListEntries())
        counts = {"pending": 0, "applied": 0, "purged": 0}
        applied, clean = await self._positions()
        for entry in entries:
            counts[receipt(entry, applied, clean).status] += 1
        return counts

    async def erase(self, key: int) -> ErasureReceipt:
        """Always a new tombstone: a second request may follow new activity of the same user, and
        removing a user who is already gone is a no-op on the state (idempotent in effect)."""
        self._require_ready()
        erasure_id = uuid.uuid4().hex
        await self.committer.submit([ev.UserErased(erasure_id=erasure_id, key=key, requested_at=self._now())])
        entry = await self.erasure.ask_nowait(Lookup(erasure_id=erasure_id))
        if entry is None:  # the committer dispatched the tombstone before resolving the submit
            raise RuntimeError(f"erasure {erasure_id} was journaled but is not in the book")
        return receipt(entry, *await self._positions())

    async def erasure_audit(self, offset: int, limit: int) -> tuple[list[ErasureReceipt], int]:
        """The audit log: every erasure's receipt including how many events its purge removed
        (admin only -- receipts do not say it; see ``ErasureOut``)."""
        self._require_ready()
        entries, total = await self.erasure.ask_nowait(ListErasures(offset=offset, limit=limit))
        seen, clean = await self._positions()
        return [receipt(e, seen, clean) for e in entries], total

    async def erasure_status(self, erasure_id: str) -> ErasureReceipt | None:
        self._require_ready()
        entry = await self.erasure.ask_nowait(Lookup(erasure_id=erasure_id))
        return None if entry is None else receipt(entry, *await self._positions())

    def journal_seq(self) -> int:
        """The last journal position this process knows committed (operators only: /readyz)."""
        return self.journal.head

    def stats(self) -> SystemStats:
        """Numbers for /metrics (gateway/metrics.py says why each is safe): operational only --
        never a journal position or a count of events, users or days with data."""
        stats = SystemStats(
            ready=self.ready,
            actor_crashes=dict(self.actor_crashes),
            snapshot_failures=self.snapshots.failures,
            snapshots_rejected=self.snapshots.store.rejected,
        )
        if not self.ready:
            return stats
        days = self.router.days.values()
        info = self.schedule_info()
        return msgspec.structs.replace(
            stats,
            mailbox_depth={
                "day_total": sum(a.depth for a in days),
                "day_max": max((a.depth for a in days), default=0),
                "release": self.release_actor.depth,
                "accountant": self.accountant.depth,
                "erasure": self.erasure.depth,
            },
            releases=len(self.release_actor.book.log),
            scheduled=info.scheduled,
            refused=info.refused,
            schedule_failures=self.scheduler.stats.failures if self.scheduler is not None else 0,
            journal_write_failures=dict(self.committer.stats.failures_by_kind),
            journal_unavailable=self.committer.unsettled is not None,
            journal_found_after_failure=self.committer.stats.found_after_failure,
            journal_unsettled=self.committer.stats.unsettled,
        )


StartSource = Literal["RELEASE_START", "first_start"]


class ScheduleInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The publication schedule as configured and recorded; ``release_start`` is a day number."""

    schedule: ReleaseSchedule
    release_start: int | None
    release_start_source: StartSource | None
    revision_lags_days: list[int]
    refused: dict[str, int]  # scheduled publications refused by the budget, per metric
    scheduled: dict[str, int]  # scheduled publications made, per metric


class SystemStats(msgspec.Struct, frozen=True, kw_only=True):
    """Operational numbers for /metrics (aggregate; never anything per user, per day, or a count
    of events)."""

    ready: bool
    actor_crashes: dict[str, int]
    mailbox_depth: dict[str, int] = {}
    releases: int = 0
    scheduled: dict[str, int] = {}  # scheduled publications made, per metric (public: /releases, /series)
    refused: dict[str, int] = {}  # scheduled publications refused by the budget, per metric (public: /series)
    schedule_failures: int = 0
    journal_write_failures: dict[str, int] = {}  # by kind: full / busy / failed (journal.storage)
    journal_unavailable: bool = False  # the committer cannot reach the journal (groupcommit rule 8)
    journal_found_after_failure: int = 0  # failed writes that had committed after all
    journal_unsettled: int = 0  # times the journal could not be read back (writes refused meanwhile)
    snapshot_failures: int = 0
    snapshots_rejected: int = 0  # at boot: corrupt, truncated or foreign files


async def _rebuild(journal: JournalBackend) -> list[StoredRecord]:
    await journal.rebuild()
    return []
