"""actors/state/schedule.py: what is due, in order, from the clock and the configuration alone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.state import periods, schedule
from actors.state.schedule import Plan, Slot
from tests.support import day

UTC = ZoneInfo("UTC")
PLAN = Plan(mau_window=30, lags=(), tz=UTC)


def at(text: str, tz: ZoneInfo = UTC) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz)


def never_done(slot: Slot) -> bool:
    return False


def test_nothing_is_due_before_the_start_day_has_closed():
    start = day("2026-03-10")
    assert schedule.due(at("2026-03-10T23:59:59"), PLAN, start, never_done) == []
    due = schedule.due(at("2026-03-11T00:00:00"), PLAN, start, never_done)
    assert [(s.metric, s.day, s.window, s.lag) for s in due] == [("dau", start, 1, 0), ("mau", start, 30, 0)]


def test_catch_up_lists_every_closed_day_oldest_first_and_skips_done_slots():
    start = day("2026-03-10")
    published = {Slot.of("dau", start + 1, 1), Slot.of("mau", start + 2, 30)}
    due = schedule.due(at("2026-03-15T08:00"), PLAN, start, lambda s: s in published)
    assert [(s.metric, periods.iso(s.day)) for s in due] == [
        ("dau", "2026-03-10"),
        ("mau", "2026-03-10"),
        ("mau", "2026-03-11"),
        ("dau", "2026-03-12"),
        ("dau", "2026-03-13"),
        ("mau", "2026-03-13"),
        ("dau", "2026-03-14"),
        ("mau", "2026-03-14"),
    ]


def test_revisions_fall_due_at_their_lag_after_first_publications_of_that_day():
    plan = Plan(mau_window=7, lags=(2, 5), tz=UTC)
    start = day("2026-03-10")
    due = schedule.due(at("2026-03-16T00:30"), plan, start, never_done)  # days 10..15 closed
    revisions = [(s.metric, periods.iso(s.day), s.lag, periods.iso(s.due_day)) for s in due if s.lag]
    assert revisions == [
        ("dau", "2026-03-10", 2, "2026-03-12"),
        ("mau", "2026-03-10", 2, "2026-03-12"),
        ("dau", "2026-03-11", 2, "2026-03-13"),
        ("mau", "2026-03-11", 2, "2026-03-13"),
        ("dau", "2026-03-12", 2, "2026-03-14"),
        ("mau", "2026-03-12", 2, "2026-03-14"),
        ("dau", "2026-03-13", 2, "2026-03-15"),
        ("mau", "2026-03-13", 2, "2026-03-15"),
        ("dau", "2026-03-10", 5, "2026-03-15"),
        ("mau", "2026-03-10", 5, "2026-03-15"),
    ]
    # on the day 2026-03-15 closes: first publications of that day, then revisions, by lag
    on_15 = [(s.metric, periods.iso(s.day), s.lag) for s in due if s.due_day == day("2026-03-15")]
    assert on_15 == [
        ("dau", "2026-03-15", 0),
        ("mau", "2026-03-15", 0),
        ("dau", "2026-03-13", 2),
        ("mau", "2026-03-13", 2),
        ("dau", "2026-03-10", 5),
        ("mau", "2026-03-10", 5),
    ]


def test_lateness_and_timezone_move_the_close():
    tz = ZoneInfo("America/New_York")
    plan = Plan(mau_window=30, lags=(), tz=tz, lateness_hours=6)
    start = day("2026-07-01")
    # 1 July closes at 06:00 New York time on 2 July = 10:00 UTC
    assert schedule.due(at("2026-07-02T09:59:59"), plan, start, never_done) == []
    assert len(schedule.due(at("2026-07-02T10:00:00"), plan, start, never_done)) == 2
    assert schedule.next_due_at(at("2026-07-02T09:00"), plan, start) == at("2026-07-02T10:00")
    assert schedule.next_due_at(at("2026-07-02T10:00"), plan, start) == at("2026-07-03T10:00")


def test_next_due_is_the_close_of_the_start_day_when_it_is_in_the_future():
    start = day("2026-09-01")
    assert schedule.next_due_at(at("2026-08-01T12:00"), PLAN, start) == at("2026-09-02T00:00")


def test_open_counter_runs_are_closed_at_their_period_end_even_before_the_start_day():
    start = day("2026-05-01")
    runs = [("mau", day("2026-03-31"), 30), ("dau", day("2026-05-31"), 1)]
    due = schedule.due(at("2026-05-02T00:00"), PLAN, start, never_done, runs)
    assert [(s.metric, periods.iso(s.day)) for s in due] == [
        ("mau", "2026-03-31"),
        ("dau", "2026-05-01"),
        ("mau", "2026-05-01"),
    ]


@settings(max_examples=60, deadline=None)
@given(
    start_offset=st.integers(0, 60),
    hours=st.integers(0, 24 * 90),
    lags=st.lists(st.integers(1, 40), max_size=3),
    lateness=st.sampled_from([0.0, 3.0, 30.0]),
    done_mask=st.integers(0, 2**64 - 1),
)
def test_due_is_sorted_unique_closed_and_exactly_the_undone_slots(start_offset, hours, lags, lateness, done_mask):
    plan = Plan(mau_window=30, lags=tuple(sorted(set(lags))), tz=UTC, lateness_hours=lateness)
    start = day("2026-01-01") + start_offset
    now = at("2026-01-01T00:00") + dt.timedelta(hours=hours)

    def done(slot: Slot) -> bool:
        return bool(done_mask >> ((slot.day * 7 + slot.lag * 3 + slot.metric_rank) % 64) & 1)

    due = schedule.due(now, plan, start, done)
    assert due == sorted(set(due))
    last = schedule.last_closed_day(now, UTC, lateness)
    assert periods.is_closed(last, now, UTC, lateness) and not periods.is_closed(last + 1, now, UTC, lateness)
    expected = {
        Slot.of(m, d, 1 if m == "dau" else 30, lag)
        for d in range(start, last + 1)
        for lag in (0, *plan.lags)
        for m in ("dau", "mau")
        if d + lag <= last
    }
    assert set(due) == {s for s in expected if not done(s)}
    for s in due:
        assert periods.is_closed(s.due_day, now, UTC, lateness) and s.day >= start
