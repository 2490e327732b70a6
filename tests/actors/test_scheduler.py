"""The schedule running in the real (in-process) actor system and journal, driven by a fake clock:
day closes, catch-up after downtime, refusals recorded once, revision lags, counter runs closed
and shredded at their period's end, and the same publications whatever the data."""

from __future__ import annotations

import anyio

from actors.state import periods
from journal import compaction
from journal import events as ev
from tests.support import FakeClock, day, ingest, running_system
from tests.support import settings as engine_settings

D = day("2026-03-11")  # a Wednesday


def daily(**overrides):
    base = {"release_schedule": "daily", "schedule_poll_seconds": 3600.0}
    return engine_settings(**{**base, **overrides})


async def journal_events(system, *types):
    out = []
    async for records in system.journal.read(0):
        out += [r.event for r in records if isinstance(r.event, types)]
    return out


def slot_of(e: ev.Released | ev.ReleaseRefused):
    if isinstance(e, ev.Released):
        return ("released", e.metric, e.day if e.metric == "dau" else e.end, e.revision, e.scheduled_lag)
    return ("refused", e.metric, e.day, None, e.lag)


async def wait_for(predicate, timeout: float = 60.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


async def test_first_start_is_journaled_and_a_day_is_published_once_it_closes(tmp_path):
    clock = FakeClock("2026-03-11T15:00")
    async with running_system(tmp_path, daily(), clock=clock) as system:
        await ingest(system, [(k, D, 1) for k in range(1, 40)])
        assert await system.scheduler.tick() == []
        [start] = await journal_events(system, ev.ReleaseStartRecorded)
        assert start.release_start == D and start.timezone == "UTC"
        clock.set("2026-03-11T23:59:59")
        assert await system.scheduler.tick() == []
        clock.set("2026-03-12T00:00:01")
        published = await system.scheduler.tick()
        assert [slot_of(r) for r in published] == [("released", "dau", D, 0, 0), ("released", "mau", D, 0, 0)]
        assert await system.scheduler.tick() == []  # done slots are not published again
        dau = system.release_actor.book.latest(("dau", D, 1))
        assert dau is published[0] and dau.released_at == clock.now.timestamp()
        assert dau.format_version == ev.RELEASE_FORMAT and dau.experiment_id is None
    async with running_system(tmp_path, daily(), clock=clock) as system:  # a restart records nothing new
        assert len(await journal_events(system, ev.ReleaseStartRecorded)) == 1
        assert await system.scheduler.tick() == []


async def test_catch_up_after_downtime_publishes_every_missed_day_in_order_by_itself(tmp_path):
    clock = FakeClock("2026-03-11T12:00")
    async with running_system(tmp_path, daily(), clock=clock) as system:
        await ingest(system, [(k, D + i, 1) for i in range(6) for k in range(1, 20 + i)])
        clock.set("2026-03-12T00:30")
        await system.scheduler.tick()
    clock.set("2026-03-16T09:00")  # down for four days
    async with running_system(tmp_path, daily(schedule_poll_seconds=0.05), clock=clock) as system:
        book = system.release_actor.book
        await wait_for(lambda: book.slot_done(("mau", D + 4, 30), 0))
        released = await journal_events(system, ev.Released)
        assert [(r.metric, r.day or r.end) for r in released] == [
            (m, D + i) for i in range(5) for m in ("dau", "mau")
        ]  # each day once, oldest first, DAU before MAU
        assert all(r.scheduled_lag == 0 for r in released)
        assert not book.slot_done(("dau", D + 5, 1), 0)  # 2026-03-16 has not closed


async def test_the_loop_publishes_when_the_clock_passes_a_close(tmp_path):
    clock = FakeClock("2026-03-11T22:00")
    async with running_system(tmp_path, daily(schedule_poll_seconds=0.05), clock=clock) as system:
        book = system.release_actor.book
        await wait_for(lambda: book.start is not None)
        assert not book.slot_done(("dau", D, 1), 0)
        clock.set("2026-03-12T00:00:00")
        await wait_for(lambda: book.slot_done(("mau", D, 30), 0))
        assert system.scheduler.stats.failures == 0


async def test_release_start_setting_overrides_the_recorded_day(tmp_path):
    clock = FakeClock("2026-03-14T10:00")
    engine = daily(release_start=periods.date_of(D))
    async with running_system(tmp_path, engine, clock=clock) as system:
        await system.scheduler.tick()  # (the loop's first tick at boot may have done it already)
        published = await journal_events(system, ev.Released)
        assert [(r.metric, r.day or r.end) for r in published] == [(m, D + i) for i in range(3) for m in ("dau", "mau")]
        assert system.release_actor.book.start.release_start == D + 3  # recorded anyway: the first start
        assert system.schedule_info().release_start == D
        assert system.schedule_info().release_start_source == "RELEASE_START"


async def test_a_release_the_budget_cannot_afford_is_recorded_as_refused_once(tmp_path):
    clock = FakeClock("2026-03-11T12:00")
    engine = daily(dau_budget_total=0.4, mau_budget_total=0.6)  # one release of each fits
    async with running_system(tmp_path, engine, clock=clock) as system:
        await system.scheduler.tick()
        clock.set("2026-03-13T01:00")
        out = await system.scheduler.tick()
        assert [slot_of(r) for r in out] == [
            ("released", "dau", D, 0, 0),
            ("released", "mau", D, 0, 0),
            ("refused", "dau", D + 1, None, 0),
            ("refused", "mau", D + 1, None, 0),
        ]
        refusal = out[2]
        assert refusal.accounting_period == "2026-03" and refusal.epsilon_cap == 0.4
        assert refusal.reason == "budget_exhausted"
        charges = len(system.accountant.ledger.records)
        assert charges == 2  # nothing charged for the refusals
        assert await system.scheduler.tick() == []  # not retried
        assert system.series("dau", None, None) == [(D, out[0]), (D + 1, refusal)]
        assert system.schedule_info().refused == {"dau": 1, "mau": 1}
    clock.set("2026-03-13T02:00")
    async with running_system(tmp_path, engine, clock=clock) as system:  # from the journal / snapshot
        assert await system.scheduler.tick() == []
        assert len(await journal_events(system, ev.ReleaseRefused)) == 2
        assert system.series("dau", D + 1, D + 1)[0][1] == refusal
        assert len(system.accountant.ledger.records) == 2


async def test_revisions_at_each_lag_are_fresh_charged_releases_and_the_latest_is_served(tmp_path):
    clock = FakeClock("2026-03-11T12:00")
    async with running_system(tmp_path, daily(revision_lags_days="2"), clock=clock) as system:
        await ingest(system, [(k, D, 1) for k in range(1, 30)])
        await system.scheduler.tick()
        clock.set("2026-03-13T06:00")  # D and D+1 closed: no revision due yet
        await system.scheduler.tick()
        assert [r.revision for r in system.release_actor.book.by_key[("dau", D, 1)]] == [0]
        await ingest(system, [(k, D, 1) for k in range(30, 60)])  # late data for D
        clock.set("2026-03-14T00:00")  # D + 2 closed: the lag-2 revision of D is due
        out = await system.scheduler.tick()
        assert [slot_of(r) for r in out] == [
            ("released", "dau", D + 2, 0, 0),
            ("released", "mau", D + 2, 0, 0),
            ("released", "dau", D, 1, 2),
            ("released", "mau", D, 1, 2),
        ]
        first, revised = system.release_actor.book.by_key[("dau", D, 1)]
        assert revised.revision == 1 and revised.release_id != first.release_id
        assert revised.seen_seq > first.seen_seq  # it reads the data known at its own time
        assert await system.release(("dau", D, 1)) is revised  # a GET returns the latest release
        purposes = [c.purpose for c in system.accountant.ledger.records]
        assert purposes.count("revision") == 2 and purposes.count("release") == 6
        assert await system.scheduler.tick() == []


async def test_counter_run_is_closed_and_shredded_at_its_period_end_by_the_schedule(tmp_path):
    clock = FakeClock("2026-03-11T12:00")  # Wednesday; accounting period = ISO week
    engine = daily(mau_mechanism="sqrt", privacy_period="week", mau_window_days=3)
    async with running_system(tmp_path, engine, clock=clock) as system:
        await ingest(system, [(k, D - 2 + i, 1) for i in range(7) for k in range(1, 10 + i)])
        clock.set("2026-03-13T00:30")
        await system.scheduler.tick()
        [run] = system.release_actor.book.active_runs()
        assert run.started.token_secret and run.t == 4  # Mon..Thu: Mon, Tue stepped before the start day
        assert await compaction.unshredded_runs(system.journal) == {run.run_id: 7}
        clock.set("2026-03-16T00:30")  # Sunday 15 March has closed: the week's run ends
        await system.scheduler.tick()
        assert system.release_actor.book.active_runs() == []
        await wait_for_async(lambda: compaction.unshredded_runs(system.journal), {})
        [started] = await journal_events(system, ev.CounterStarted)
        assert started.token_secret == b""


async def test_a_run_begun_on_request_before_the_start_day_is_closed_by_the_schedule(tmp_path):
    clock = FakeClock("2026-03-11T12:00")
    engine = daily(
        mau_mechanism="sqrt", privacy_period="week", mau_window_days=3, release_start=periods.date_of(D + 14)
    )
    async with running_system(tmp_path, engine, clock=clock) as system:
        await ingest(system, [(k, D - 2, 1) for k in range(1, 10)])
        await system.release(("mau", D - 2, 3))  # Monday of that week, on request
        assert len(system.release_actor.book.active_runs()) == 1
        clock.set("2026-03-16T00:00")
        out = await system.scheduler.tick()
        assert [(r.metric, r.end) for r in out] == [("mau", D + 4)]  # the week's Sunday
        assert system.release_actor.book.active_runs() == []
        await wait_for_async(lambda: compaction.unshredded_runs(system.journal), {})


async def test_what_is_published_and_when_does_not_depend_on_the_data(tmp_path):
    """Same clock and configuration, different data (none at all, small, large): the same keys,
    revisions, lags and refusals, in the same order."""

    async def trace(name: str, rows) -> list:
        clock = FakeClock("2026-03-11T12:00")
        engine = daily(revision_lags_days="1,3", dau_budget_total=1.0, mau_budget_total=1.2)
        async with running_system(tmp_path / name, engine, clock=clock) as system:
            if rows:
                await ingest(system, rows)
            for stamp in ("2026-03-12T00:10", "2026-03-14T05:00", "2026-03-18T00:00"):
                clock.set(stamp)
                await system.scheduler.tick()
            return [slot_of(e) for e in await journal_events(system, ev.Released, ev.ReleaseRefused)]

    empty = await trace("empty", [])
    small = await trace("small", [(k, D + i, 1) for i in range(5) for k in range(1, 4)])
    large = await trace("large", [(k, D + i, (k + i) % 3 > 0) for i in range(-40, 8) for k in range(1, 3000)])
    assert empty == small == large
    kinds = [t[0] for t in empty]
    assert kinds.count("released") >= 8 and kinds.count("refused") >= 8  # the caps bite, identically


async def wait_for_async(probe, expected, timeout: float = 60.0) -> None:
    with anyio.fail_after(timeout):
        while await probe() != expected:
            await anyio.sleep(0.05)
