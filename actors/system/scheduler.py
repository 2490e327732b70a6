"""The schedule loop: publishes what ``actors/state/schedule.py`` says is due, by itself.

Rules:
1. The decision is pure (``schedule.due``); this loop only reads the clock it was given (the
   system's one injected clock -- never ``time.time()``), asks the pure function, and sends each
   due slot, in order, to the release actor (``PublishScheduled``), waiting for each answer.
   The release actor re-checks that the slot is not done, so a stale read here is harmless.
2. At its first run with ``RELEASE_SCHEDULE=daily`` it journals the start day
   (``ReleaseStartRecorded``: today, in ``TIMEZONE``) unless one is recorded; ``RELEASE_START``
   overrides the recorded day. On every start the first tick therefore catches up on every
   closed day without its scheduled release, oldest first.
3. Between ticks it sleeps until the next slot is due (the close of the next day), at most
   ``SCHEDULE_POLL_SECONDS`` (clock jumps), or until ``wake()``. A failed tick is logged and
   retried at the next wake-up -- never in a tight loop.
4. It is started by ``ActorSystem`` in its background task group and cancelled at shutdown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import structlog

from actors.release import PublishScheduled, RecordScheduleStart, ReleaseActor
from actors.settings import EngineSettings
from actors.state import periods, schedule
from journal import events as ev

log = structlog.get_logger("actors.schedule")


@dataclass
class ScheduleStats:
    ticks: int = 0
    published: dict[str, int] = field(default_factory=dict)  # per metric, since start
    refused: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    last_tick_at: dt.datetime | None = None


class Scheduler:
    def __init__(self, settings: EngineSettings, clock: Callable[[], dt.datetime], release: ReleaseActor) -> None:
        self.settings = settings
        self.clock = clock
        self.release = release
        self.plan = schedule.Plan(
            mau_window=settings.mau_window_days,
            lags=settings.revision_lags,
            tz=settings.tz,
            lateness_hours=settings.lateness_hours,
        )
        self.stats = ScheduleStats()
        self._wake = anyio.Event()

    async def start_day(self) -> int:
        """RELEASE_START, or the journaled day of the first start (recorded now if none, rule 2)."""
        recorded = self.release.book.start
        if recorded is None:
            today = periods.today(self.clock(), self.settings.tz)
            recorded = await self.release.ask(RecordScheduleStart(day=today))
            log.info("schedule_start_recorded", release_start=periods.iso(recorded.release_start))
        configured = self.settings.release_start
        return periods.day_of(configured) if configured is not None else recorded.release_start

    def due(self, start: int) -> list[schedule.Slot]:
        book = self.release.book
        open_runs = [
            (r.started.metric, r.started.first_day + r.started.horizon - 1, r.started.window)
            for r in book.active_runs()
        ]
        return schedule.due(self.clock(), self.plan, start, lambda s: book.slot_done(s.key, s.lag), open_runs)

    async def tick(self) -> list[ev.Released | ev.ReleaseRefused]:
        """Publish every slot due now, in order; returns what was published or refused."""
        start = await self.start_day()
        out: list[ev.Released | ev.ReleaseRefused] = []
        for slot in self.due(start):
            result = await self.release.ask(PublishScheduled(slot=slot))
            if result is None:
                continue
            out.append(result)
            tally = self.stats.refused if isinstance(result, ev.ReleaseRefused) else self.stats.published
            tally[slot.metric] = tally.get(slot.metric, 0) + 1
            if isinstance(result, ev.ReleaseRefused):
                log.warning("scheduled_release_refused", slot=slot.describe(), period=result.accounting_period)
        self.stats.ticks += 1
        self.stats.last_tick_at = self.clock()
        if out:
            log.info("scheduled_releases", published=sum(isinstance(r, ev.Released) for r in out), total=len(out))
        return out

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
                start = await self.start_day()
                wait = (schedule.next_due_at(self.clock(), self.plan, start) - self.clock()).total_seconds()
            except Exception as exc:  # rule 3: logged, retried at the next wake-up
                self.stats.failures += 1
                log.error("schedule_tick_failed", error=repr(exc))
                wait = self.settings.schedule_poll_seconds
            with anyio.move_on_after(min(max(wait, 0.0) + 0.001, self.settings.schedule_poll_seconds)):
                await self._wake.wait()
            self._wake = anyio.Event()
