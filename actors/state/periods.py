"""Days, windows, accounting periods and closing times. Pure: the clock is always a parameter.

Rules:
1. A day is an int: days since 1970-01-01 (the journal stores int32). Dates are calendar dates
   in ``TIMEZONE``; the service never converts an event's day through a timezone.
2. A day *closes* at the next midnight in ``TIMEZONE`` plus ``LATENESS_HOURS``. A period (a DAU
   day, a MAU window) can be released only once its last day has closed.
3. An accounting period is a calendar month (or ISO week, quarter, year). A release *belongs to*
   the period of the day it is about (the DAU day, the MAU window's last day) -- never the
   wall-clock time of the request -- and is *charged to* every period whose days it reads
   (``periods_read``): a MAU window to each period it overlaps, a counter run to its own period
   and every earlier one its first windows reach back into (``counter_run_reads``). A user's
   activity within one period can only reach releases charged to that period; that is what makes
   the per-period cap a per-user bound.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

EPOCH = dt.date(1970, 1, 1)
EPOCH_ORDINAL = EPOCH.toordinal()
PERIOD_KINDS = ("month", "week", "quarter", "year")
# The days the service takes: from the epoch (day 0) to the end of year 9998 -- a window or a
# period around any of them stays inside what ``datetime.date`` can represent.
LAST_DATE = dt.date(9998, 12, 31)
DAY_RANGE = "1970-01-01 .. 9998-12-31"


def day_of(date: dt.date) -> int:
    return date.toordinal() - EPOCH_ORDINAL


def date_of(day: int) -> dt.date:
    return dt.date.fromordinal(day + EPOCH_ORDINAL)


def iso(day: int) -> str:
    return date_of(day).isoformat()


def parse_day(text: str) -> int:
    """``YYYY-MM-DD`` -> day; ValueError names the problem (impossible dates included)."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise ValueError(f"{text!r} is not a date in YYYY-MM-DD form")
    date = dt.date.fromisoformat(text)
    if not EPOCH <= date <= LAST_DATE:
        raise ValueError(f"{text} is outside the days this service takes ({DAY_RANGE})")
    return day_of(date)


def closes_at(day: int, tz: ZoneInfo, lateness_hours: float = 0.0) -> dt.datetime:
    """The instant (aware, UTC) after which ``day`` counts as over (rule 2)."""
    midnight = dt.datetime.combine(date_of(day + 1), dt.time(0), tzinfo=tz)
    return (midnight + dt.timedelta(hours=lateness_hours)).astimezone(dt.UTC)


def is_closed(day: int, now: dt.datetime, tz: ZoneInfo, lateness_hours: float = 0.0) -> bool:
    return now >= closes_at(day, tz, lateness_hours)


def today(now: dt.datetime, tz: ZoneInfo) -> int:
    return day_of(now.astimezone(tz).date())


@dataclass(frozen=True)
class Period:
    """An accounting period: a label and its first/last day (inclusive)."""

    label: str
    first_day: int
    last_day: int

    @property
    def days(self) -> int:
        return self.last_day - self.first_day + 1

    def index_of(self, day: int) -> int:
        """1-based position of ``day`` in the period (the continual counter's t)."""
        if not self.first_day <= day <= self.last_day:
            raise ValueError(f"{iso(day)} is not in {self.label}")
        return day - self.first_day + 1


def period_of(day: int, kind: str = "month") -> Period:
    d = date_of(day)
    if kind == "month":
        first = d.replace(day=1)
        nxt = (first + dt.timedelta(days=32)).replace(day=1)
        return Period(f"{d.year:04d}-{d.month:02d}", day_of(first), day_of(nxt) - 1)
    if kind == "week":
        first = d - dt.timedelta(days=d.weekday())
        year, week, _ = d.isocalendar()
        return Period(f"{year:04d}-W{week:02d}", day_of(first), day_of(first) + 6)
    if kind == "quarter":
        q = (d.month - 1) // 3
        first = dt.date(d.year, 3 * q + 1, 1)
        nxt = dt.date(d.year + (q == 3), (3 * q + 3) % 12 + 1, 1)
        return Period(f"{d.year:04d}-Q{q + 1}", day_of(first), day_of(nxt) - 1)
    if kind == "year":
        return Period(f"{d.year:04d}", day_of(dt.date(d.year, 1, 1)), day_of(dt.date(d.year, 12, 31)))
    raise ValueError(f"unknown accounting period {kind!r} (one of {', '.join(PERIOD_KINDS)})")


def periods_between(first_day: int, last_day: int, kind: str = "month") -> list[Period]:
    """Every accounting period that intersects the days ``first_day..last_day``, in order."""
    out: list[Period] = []
    day = first_day
    while day <= last_day:
        period = period_of(day, kind)
        out.append(period)
        day = period.last_day + 1
    return out


def periods_read(end: int, window: int, kind: str = "month") -> list[Period]:
    """The periods a release of the ``window`` days ending on ``end`` reads (DAU: window 1)."""
    return periods_between(end - window + 1, end, kind)


def counter_run_reads(period: Period, window: int, kind: str = "month") -> list[Period]:
    """The periods a counter run over ``period`` reads: its windows end on the period's days, so
    the first ones reach ``window - 1`` days back into the period(s) before it."""
    return periods_between(period.first_day - window + 1, period.last_day, kind)


def kind_of(label: str) -> str:
    """The period kind a label was made by (``2026-11`` month, ``2026-W05`` week, ``2026-Q1``
    quarter, ``2026`` year)."""
    if "-W" in label:
        return "week"
    if "-Q" in label:
        return "quarter"
    return "month" if "-" in label else "year"


def window_days(end: int, window: int) -> range:
    """The days of the MAU window of ``window`` days ending on ``end`` (inclusive)."""
    return range(end - window + 1, end + 1)
