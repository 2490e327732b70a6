"""The publication schedule, pure: given the clock, the configuration, the start day and the book
of what was published or refused, what is due -- in order. No I/O, no clock of its own.

Rules:
1. A *slot* is one scheduled publication: (metric, day, window, lag). ``lag`` 0 is the first
   publication of DAU(day) / MAU(window ending on day); ``lag`` L > 0 is its revision at lag L
   days (``REVISION_LAGS_DAYS``): a fresh, charged release labelled ``revision: n``. A slot is
   *due* once its due day (day + lag) has closed (``periods.is_closed``: midnight in
   ``TIMEZONE`` plus ``LATENESS_HOURS``).
2. For every day from the start day on, both metrics have a lag-0 slot, and one slot per lag.
   ``due`` lists every due slot that is not done, ordered by (due day, lag, metric) -- so after
   downtime the catch-up publishes day by day, oldest first, exactly as the live service would
   have. A slot is *done* once the book holds its release or its refusal (``ReleaseBook
   .slot_done``); a refusal is final, never retried.
3. A continual-counter run still open when its accounting period has closed gets a lag-0 slot for
   its period's last day (releasing that day steps the run to its end, which shreds its token
   secret), also when that day is before the start day (a run begun on request).
4. The start day is ``RELEASE_START`` when configured, otherwise the day of the service's first
   start with the schedule on, as journaled (``ReleaseStartRecorded``). Never a day taken from
   the data.

Why *what* is released and *when* depends only on the clock and the configuration, never on the
data (the argument the privacy statement relies on):
- The set of slots is a function of (start day, MAU window, revision lags) -- configuration, or
  the journaled wall-clock day of the first start -- and of the days that exist, i.e. the
  calendar. When a slot becomes due is a function of the clock, ``TIMEZONE`` and
  ``LATENESS_HOURS``. Nothing here reads a count, a membership, or whether any event arrived.
- "Done" depends only on earlier publications and refusals, i.e. on earlier outputs of this same
  function (and on requests, which are not the data).
- A refusal depends only on the budget: the composed charges of the accounting period, and each
  charge is a function of the mechanism and its parameters (configuration), never of a value.
  So whether a slot is refused is also data-independent, and it is never retried -- a retry
  "when the budget allows" would still be data-independent, but a loop would spend the cap of
  the next period on stale days.
- Counter runs close at their period's end (rule 3) by the calendar, not because data arrived.
- The values themselves are differentially private (the mechanisms); the schedule only decides
  which keys are released and when, and an observer who sees the times learns the configuration.
So an observer of the published series (keys, labels, times, refusals) learns nothing about any
user beyond what the noisy values carry. A release triggered *by* the data (e.g. re-publish a day
because an erasure touched it) would itself reveal that someone's data changed; there is none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from actors.state import periods
from actors.state.release_book import ReleaseKey
from journal.events import Metric

METRIC_ORDER: tuple[Metric, Metric] = ("dau", "mau")


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    """One scheduled publication (rule 1). Ordered by (due day, lag, metric)."""

    due_day: int
    lag: int
    metric_rank: int
    day: int
    window: int

    @property
    def metric(self) -> Metric:
        return METRIC_ORDER[self.metric_rank]

    @property
    def key(self) -> ReleaseKey:
        return ReleaseKey(self.metric, self.day, self.window)

    @classmethod
    def of(cls, metric: Metric, day: int, window: int, lag: int = 0) -> Slot:
        return cls(day + lag, lag, METRIC_ORDER.index(metric), day, window)

    def describe(self) -> str:
        what = "DAU" if self.metric == "dau" else f"MAU({self.window}d)"
        return f"{what} {periods.iso(self.day)}" + (f" revision at lag {self.lag}d" if self.lag else "")


@dataclass(frozen=True, slots=True)
class Plan:
    """The configuration the schedule depends on -- and nothing else (see the module docstring)."""

    mau_window: int
    lags: tuple[int, ...]
    tz: ZoneInfo
    lateness_hours: float = 0.0


def last_closed_day(now: dt.datetime, tz: ZoneInfo, lateness_hours: float = 0.0) -> int:
    """The latest day that has closed at ``now`` (rule 1)."""
    day = periods.today(now, tz) - 1
    while not periods.is_closed(day, now, tz, lateness_hours):  # lateness may hold back a few days
        day -= 1
    return day


def slots_due_on(due_day: int, start: int, plan: Plan) -> list[Slot]:
    """Every slot whose due day is ``due_day`` (rule 2), in order."""
    out: list[Slot] = []
    for lag in (0, *plan.lags):
        day = due_day - lag
        if day < start:
            continue
        out.append(Slot.of("dau", day, 1, lag))
        out.append(Slot.of("mau", day, plan.mau_window, lag))
    return sorted(out)


def due(
    now: dt.datetime,
    plan: Plan,
    start: int,
    done: Callable[[Slot], bool],
    open_runs: Iterable[tuple[Metric, int, int]] = (),
) -> list[Slot]:
    """Every slot due at ``now`` and not done, in publication order (rules 2 and 3).

    ``open_runs``: (metric, last day of its period, window) of each counter run not yet finished.
    """
    last = last_closed_day(now, plan.tz, plan.lateness_hours)
    found: set[Slot] = set()
    for due_day in range(start, last + 1):
        found.update(s for s in slots_due_on(due_day, start, plan) if not done(s))
    for metric, last_day, window in open_runs:
        slot = Slot.of(metric, last_day, window)
        if last_day <= last and not done(slot):
            found.add(slot)
    return sorted(found)


def next_due_at(now: dt.datetime, plan: Plan, start: int) -> dt.datetime:
    """When the next slot becomes due: the close of the first unclosed day that has slots.
    (Every day from ``start`` on has lag-0 slots, so that is the first unclosed day >= start.)"""
    first_open = max(last_closed_day(now, plan.tz, plan.lateness_hours) + 1, start)
    return periods.closes_at(first_open, plan.tz, plan.lateness_hours)
