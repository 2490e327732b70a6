"""The schedule loop: publishes what ``actors/state/schedule.py`` says is due, by itself.

Rules:
1. The decision is pure (``schedule.due``), taken by the release actor over its own book
   (``PlanSchedule``), so the book is touched by the actor's task alone. This loop only reads the
   clock it was given -- the system's one injected clock, never ``time.time()`` -- and sends each
   due slot, in order, to the release actor (``PublishScheduled``), waiting for each answer. The
   actor re-checks that a slot is not done, so a slot listed twice is published once.
2. At the first tick with ``RELEASE_SCHEDULE=daily`` the actor journals the start day
   (``ReleaseStartRecorded``: today, in ``TIMEZONE``) unless one is recorded; ``RELEASE_START``
   overrides the recorded day. The first tick of every start therefore catches up on every closed
   day without its scheduled release, oldest first.
3. Between ticks it sleeps until the next slot is due (the close of the next day), at most
   ``SCHEDULE_POLL_SECONDS`` (clock jumps), or until ``wake()``. A failed tick is logged and
   counted, and retried at the next wake-up -- never in a tight loop.
4. It is started by ``ActorSystem`` in its background task group and cancelled at shutdown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import structlog

from actors.release import PlanSchedule, PublishScheduled, ReleaseActor
from actors.settings import EngineSettings
from actors.state import periods, schedule
from journal import events as ev

log = structlog.get_logger("actors.schedule")


@dataclass
class ScheduleStats:
    ticks: int = 0
    published: dict[str, int] = field(default_factory=dict)  # per metric, since this process started
    refused: dict[str, int] = field(default_factory=dict)
    failures: int = 0


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
        self.configured_start = periods.day_of(settings.release_start) if settings.release_start else None
        self.stats = ScheduleStats()
        self.next_due_at: dt.datetime | None = None
        self._wake = anyio.Event()

    async def tick(self) -> list[ev.Released | ev.ReleaseRefused]:
        """Publish every slot due now, in order; returns what was published or refused."""
        due = await self.release.ask(
            PlanSchedule(now=self.clock(), plan=self.plan, configured_start=self.configured_start)
        )
        out: list[ev.Released | ev.ReleaseRefused] = []
        for slot in due.slots:
            result = await self.release.ask(PublishScheduled(slot=slot))
            if result is None:
                continue
            out.append(result)
            refused = isinstance(result, ev.ReleaseRefused)
            tally = self.stats.refused if refused else self.stats.published
            tally[slot.metric] = tally.get(slot.metric, 0) + 1
            if refused:
                log.warning("scheduled_release_refused", slot=slot.describe(), period=result.accounting_period)
        self.stats.ticks += 1
        self.next_due_at = due.next_due_at
        if out:
            log.info("scheduled_releases", published=sum(isinstance(r, ev.Released) for r in out), total=len(out))
        return out

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            wait = self.settings.schedule_poll_seconds
            try:
                await self.tick()
                if self.next_due_at is not None:
                    wait = min(wait, max(0.0, (self.next_due_at - self.clock()).total_seconds()) + 0.001)
            except Exception as exc:  # rule 3: logged, counted, retried at the next wake-up
                self.stats.failures += 1
                log.error("schedule_tick_failed", error=repr(exc))
            with anyio.move_on_after(wait):
                await self._wake.wait()
            self._wake = anyio.Event()
