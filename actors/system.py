"""The actor system: restore, supervise, serve, snapshot, shut down -- and nothing else.

Theory of operation:
- ``ActorSystem.running()`` opens the journal and one task group that owns every task: the
  committer (the only writer), the actors' loops, and the background loops (indexer, purge,
  snapshots). Nothing is started outside it.
- Boot: newest valid snapshot (or none) + tail replay builds a ``World``; its pieces become the
  actors' states; then the committer starts and ``ready`` turns true. Until then every request
  that needs state is refused with ``NotReady`` (503), while liveness keeps answering.
- The gateway calls the coroutines at the bottom (``ingest``, ``release``, ``erase``, ...), which
  only translate into journal appends and actor messages. Mailbox-full and queue-full surface as
  ``MailboxFull`` / ``Overloaded``, which the gateway turns into 503 + Retry-After.
- Shutdown: the committer commits and dispatches what is queued, a final snapshot is written,
  mailboxes close and drain, background loops are cancelled, the journal is checkpointed.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import numpy as np
import structlog

from actors import accounting
from actors import world as world_mod
from actors.accountant import AccountantActor, BudgetReport, LedgerBarrier
from actors.days import DayActor
from actors.erasure import ErasureActor, ErasureBarrier, ErasureEntry, Lookup, receipt
from actors.ingest import IngestReceipt, batch_digest
from actors.membership import Membership
from actors.release_actor import ReleaseActor, ReleaseBarrier, RequestRelease, RequestRevision
from actors.releases import Key
from actors.router import Router
from actors.runtime import Actor, Supervisor
from actors.settings import EngineSettings
from actors.world import DaySnapshot, World, WorldSnapshot
from journal import compaction
from journal import events as ev
from journal.groupcommit import Committer
from journal.snapshots import SnapshotStore
from journal.store import Journal

log = structlog.get_logger("actors.system")


class NotReady(Exception):
    retry_after = 1


class IdempotencyConflict(Exception):
    pass


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def journal_path(data_dir: Path) -> Path:
    return Path(data_dir) / "journal.sqlite3"


def snapshot_store(data_dir: Path) -> SnapshotStore:
    return SnapshotStore(Path(data_dir) / "snapshots")


async def restore_world(
    journal: Journal, store: SnapshotStore | None, settings: EngineSettings, *, use_snapshot: bool = True
) -> tuple[World, int | None]:
    """Newest valid snapshot + tail replay (or full replay). Returns (world, snapshot seq or None)."""
    world, start, from_seq = None, 0, None
    if use_snapshot and store is not None:
        loaded = store.load_latest(journal_id=journal.journal_id, head=journal.head, payload_version=world_mod.FORMAT)
        if loaded is not None:
            info, payload = loaded
            try:
                snap = await anyio.to_thread.run_sync(world_mod.decode, payload)
                world = World.restore(snap, idempotency_keys=settings.idempotency_keys_kept)
                start = from_seq = snap.last_seq
            except Exception as exc:  # valid checksum but undecodable: never trust it
                log.warning("snapshot_undecodable", file=info.path.name, error=repr(exc))
                world, start, from_seq = None, 0, None
    if world is None:
        world = World(idempotency_keys=settings.idempotency_keys_kept)
    async for records in journal.read(start, chunk=512):
        for rec in records:
            world.apply(rec)
    world.fold()
    return world, from_seq


class ActorSystem:
    def __init__(
        self,
        settings: EngineSettings,
        data_dir: Path | str,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        synchronous: str = "FULL",
    ) -> None:
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.synchronous = synchronous
        self.snapshots = snapshot_store(self.data_dir)
        self.ready = False
        self.boot_error: BaseException | None = None
        self.restored_from: int | None = None
        self.actor_crashes: dict[str, int] = {}
        self.last_snapshot_seq = 0
        self.snapshots_clean_seq = 0  # every snapshot file on disk was written at or after this
        self._snapshot_lock = anyio.Lock()
        self._bg_scope = anyio.CancelScope()
        self._inflight: dict[str, tuple[bytes, object]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ActorSystem]:
        self.journal = await Journal.open(journal_path(self.data_dir), synchronous=self.synchronous)
        try:
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
            world, self.restored_from = await restore_world(self.journal, self.snapshots, self.settings)
            unshredded = await compaction.unshredded_runs(self.journal)
            self._spawn(world)
        except Exception as exc:
            self.boot_error = exc
            log.critical("boot_failed", error=repr(exc))
            raise
        self._tg.start_soon(self.committer.run, name="committer")
        self._tg.start_soon(self._background, name="background")
        self.last_snapshot_seq = self.restored_from or 0
        for run_id in unshredded:  # a crash between a run's last step and its shredding
            run = world.releases.runs.get(run_id)
            if run is not None and run.t >= run.started.horizon:
                self._tg.start_soon(self._shred_run, run_id, name="shred-at-boot")
        purged = world.erasures.last_purge_seq()
        stale = [p for p in self.snapshots.list() if _snapshot_seq(p) < purged]
        if stale:  # a crash between a purge and its snapshot rewrite: finish the purge's job
            self._tg.start_soon(self._replace_snapshots, name="snapshot-after-purge")
        else:
            self.snapshots_clean_seq = self.journal.head
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
        self.committer = Committer(
            self.journal, lambda records: self.router.dispatch(records), max_pending_events=s.max_pending_events
        )
        self.accountant = AccountantActor(world.ledger, s, capacity=s.control_mailbox)
        self.erasure = ErasureActor(
            world.erasures, capacity=s.control_mailbox, purge_delay=s.purge_delay_seconds, purge=self._purge
        )
        self.router = Router(
            spawn_day=self._spawn_day,
            ingest=world.ingest,
            release=None,  # type: ignore[arg-type]  # set just below (the two know each other)
            accountant=self.accountant,
            erasure=self.erasure,
            dispatched_seq=self.journal.head,
        )
        self.release_actor = ReleaseActor(
            world.releases, s, capacity=s.control_mailbox, committer=self.committer,
            days=self.router, accountant=self.accountant, clock=self.clock,
            on_run_finished=lambda run_id: self._tg.start_soon(self._shred_run, run_id, name="shred"),
        )
        self.router.release = self.release_actor
        for actor in (self.accountant, self.erasure, self.release_actor):
            self.supervisor.spawn(actor)
        for day, state in world.days.items():
            self.router.adopt(day, self._spawn_day(day, state, world.days_seq))

    def _spawn_day(self, day: int, state: Membership, seen_seq: int) -> DayActor:
        s = self.settings
        actor = DayActor(day, state, seen_seq, capacity=s.day_mailbox, lg_k=s.theta_lg_k)
        self.supervisor.spawn(actor)
        return actor

    def _count_crash(self, actor: Actor, exc: BaseException) -> None:
        self.actor_crashes[actor.kind] = self.actor_crashes.get(actor.kind, 0) + 1

    async def _background(self) -> None:
        with self._bg_scope:
            async with anyio.create_task_group() as bg:
                bg.start_soon(anyio.to_thread.run_sync, accounting.warm_up, name="warm-accounting")
                bg.start_soon(self.erasure.purge_loop, name="purge")
                bg.start_soon(self._index_loop, name="indexer")
                bg.start_soon(self._snapshot_loop, name="snapshots")

    async def _shutdown(self) -> None:
        self._bg_scope.cancel()
        if not self.ready:
            return
        self.ready = False
        await self.committer.drain_and_stop()
        if self.committer.failure is None and self.journal.head > self.last_snapshot_seq:
            try:
                await self.snapshot()
            except Exception as exc:
                log.error("final_snapshot_failed", error=repr(exc))
        self.supervisor.close_all()
        log.info("stopped", journal_seq=self.journal.head)

    # -- background loops ------------------------------------------------------------------

    async def _index_loop(self) -> None:
        """Index in big steps: when enough is unindexed, or when ingest has been quiet for a
        whole interval (small increments would mean many segments and frequent merges)."""
        s = self.settings
        seen = self.journal.head
        while True:
            await anyio.sleep(s.index_idle_seconds)
            head = self.journal.head
            lag = head - self.journal.index_watermark
            if lag >= s.index_every_events or (lag > 0 and head == seen):
                # Read and sort off the writer (read connection + worker thread); only the short
                # write of the result takes the committer's exclusive slot.
                postings = await self.journal.collect_postings()
                if postings is not None:
                    await self.committer.run_job(lambda journal: _write_postings(journal, postings))
            seen = self.journal.head

    async def _snapshot_loop(self) -> None:
        s = self.settings
        last = time.monotonic()
        while True:
            await anyio.sleep(1.0)
            behind = self.journal.head - self.last_snapshot_seq
            due = behind >= s.snapshot_every_events or (behind > 0 and time.monotonic() - last >= s.snapshot_every_seconds)
            if due:
                try:
                    await self.snapshot()
                except Exception as exc:
                    log.error("snapshot_failed", error=repr(exc))
                last = time.monotonic()

    async def _purge(self, entries: list[ErasureEntry]) -> None:
        targets = [
            compaction.PurgeTarget(e.erasure_id, e.key, e.seq, e.requested_at) for e in entries if e.key is not None
        ]
        if not targets:
            return
        await self.committer.run_job(lambda journal: compaction.purge(journal, targets))
        await self._replace_snapshots()
        log.info("erasures_purged", count=len(targets))

    async def _shred_run(self, run_id: str) -> None:
        """Crypto-shred a finished counter run's token secret (flippancy rule 3): journal first,
        then every snapshot (they hold a copy)."""
        await self.committer.run_job(lambda journal: compaction.shred_run_secret(journal, run_id))
        await self._replace_snapshots()
        log.info("counter_run_secret_shredded", run_id=run_id)

    async def _replace_snapshots(self) -> None:
        """Snapshots hold pseudonyms too: write a fresh one, then delete every other. Only then
        does an erasure report ``purged``."""
        seq = self.committer.dispatched_seq
        await self.snapshot(replace_all=True)
        self.snapshots_clean_seq = max(self.snapshots_clean_seq, seq)

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
        async with self._snapshot_lock:
            snap = await self.collect()
            payload = await anyio.to_thread.run_sync(world_mod.encode, snap)
            path = await anyio.to_thread.run_sync(
                lambda: self.snapshots.save(
                    payload, last_seq=snap.last_seq, journal_id=self.journal.journal_id, payload_version=world_mod.FORMAT
                )
            )
            if replace_all:
                for other in self.snapshots.list():
                    if other != path:
                        other.unlink(missing_ok=True)
            self.last_snapshot_seq = snap.last_seq
            log.info("snapshot_written", seq=snap.last_seq, bytes=len(payload))
            return path

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
        digest = b""
        if idempotency_key is not None:
            digest = batch_digest(keys, days, ops, metadata)
            previous = await self._previous(idempotency_key, digest)
            if previous is not None:
                return previous, True
        event = ev.ActivityBatchRecorded.from_arrays(
            keys, days, ops, received_at=time.time(), metadata=metadata,
            idempotency_key=idempotency_key, request_digest=digest if idempotency_key else None,
        )
        future = self.committer.submit([event])
        if idempotency_key is not None:
            self._inflight[idempotency_key] = (digest, future)
        try:
            (stored,) = await future
        finally:
            if idempotency_key is not None:
                self._inflight.pop(idempotency_key, None)
        return IngestReceipt(len(ops), stored.seq, stored.last_seq, digest), False

    async def _previous(self, key: str, digest: bytes) -> IngestReceipt | None:
        inflight = self._inflight.get(key)
        if inflight is not None:
            other_digest, future = inflight
            if other_digest != digest:
                raise IdempotencyConflict(key)
            try:
                await future  # type: ignore[misc]
            except Exception:
                return None  # the first attempt failed: this one may try again
        found = self.router.ingest.lookup(key)
        if found is None:
            return None
        if found.digest and found.digest != digest:
            raise IdempotencyConflict(key)
        return found

    async def release(self, key: Key) -> ev.Released:
        self._require_ready()
        cached = self.release_actor.book.latest(key)  # immutable, journaled records only
        if cached is not None:
            return cached
        return await self.release_actor.ask_nowait(RequestRelease(key=key))

    async def revise(self, key: Key) -> ev.Released:
        self._require_ready()
        return await self.release_actor.ask_nowait(RequestRevision(key=key))

    async def budget(self, period: str | None = None) -> dict:
        self._require_ready()
        from actors.periods import today

        return await self.accountant.ask_nowait(
            BudgetReport(period=period, today=today(self.clock(), self.settings.tz))
        )

    def releases(self, offset: int, limit: int, metric: str | None = None) -> tuple[list[ev.Released], int]:
        self._require_ready()
        log_ = self.release_actor.book.log
        if metric is not None:
            log_ = [r for r in log_ if r.metric == metric]
        return log_[offset : offset + limit], len(log_)

    async def erase(self, key: int) -> dict:
        """Always a new tombstone: a second request may follow new activity of the same user, and
        removing a user who is already gone is a no-op on the state (idempotent in effect)."""
        self._require_ready()
        erasure_id = uuid.uuid4().hex
        (stored,) = await self.committer.submit(
            [ev.UserErased(erasure_id=erasure_id, key=key, requested_at=time.time())]
        )
        entry = await self.erasure.ask_nowait(Lookup(erasure_id=erasure_id))
        return receipt(entry, self.router.days_seen_seq(), self.snapshots_clean_seq)

    async def erasure_status(self, erasure_id: str) -> dict | None:
        self._require_ready()
        entry = await self.erasure.ask_nowait(Lookup(erasure_id=erasure_id))
        return None if entry is None else receipt(entry, self.router.days_seen_seq(), self.snapshots_clean_seq)

    def stats(self) -> dict:
        """Numbers for /metrics (never anything per user)."""
        out = {"ready": self.ready, "journal_seq": self.journal.head, "actor_crashes": dict(self.actor_crashes)}
        if self.ready:
            days = self.router.days.values()
            out.update(
                pending_events=self.committer.pending_events,
                dispatched_seq=self.committer.dispatched_seq,
                commit_groups=self.committer.stats.groups,
                day_actors=len(self.router.days),
                mailbox_depth={
                    "day_total": sum(a.depth for a in days),
                    "day_max": max((a.depth for a in days), default=0),
                    "release": self.release_actor.depth,
                    "accountant": self.accountant.depth,
                    "erasure": self.erasure.depth,
                },
                releases=len(self.release_actor.book.log),
                index_watermark=self.journal.index_watermark,
            )
        return out


def _snapshot_seq(path: Path) -> int:
    try:
        return int(path.stem.split("-")[-1])
    except ValueError:
        return 0


async def _write_postings(journal: Journal, postings) -> list:
    await journal.write_postings(postings)
    return []
