"""The per-user bound (accountant rules 2 and 4): every release is charged to every accounting
period whose days it reads, one combined cap per period bounds the tight composition of
everything charged to it, and the default schedule fits every period."""

from __future__ import annotations

import datetime as dt

import anyio
import pytest
from dp_accounting.pld import privacy_loss_distribution as pld
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.accountant import schedule_fit, statement
from actors.privacy import accounting, mechanisms
from actors.refusals import BudgetExhausted
from actors.settings import EngineSettings
from actors.state import periods
from tests.support import day, ingest, running_system
from tests.support import settings as engine_settings

DEFAULTS = EngineSettings()


# -- which periods a release reads ---------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    end=st.integers(day("2020-01-01"), day("2030-12-31")),
    window=st.integers(1, 366),
    kind=st.sampled_from(periods.PERIOD_KINDS),
)
def test_periods_read_are_exactly_the_periods_holding_the_window_days(end, window, kind):
    read = periods.periods_read(end, window, kind)
    expected = []
    for d in periods.window_days(end, window):
        label = periods.period_of(d, kind).label
        if label not in expected:
            expected.append(label)
    assert [p.label for p in read] == expected
    assert all(periods.kind_of(p.label) == kind for p in read)


def test_a_counter_run_reads_its_period_and_the_one_its_first_windows_reach_back_into():
    nov = periods.period_of(day("2025-11-15"))
    assert [p.label for p in periods.counter_run_reads(nov, 30)] == ["2025-10", "2025-11"]
    assert [p.label for p in periods.counter_run_reads(nov, 1)] == ["2025-11"]  # a DAU run
    assert [p.label for p in periods.counter_run_reads(periods.period_of(day("2025-03-03")), 31)] == [
        "2025-01",  # a 31-day window ending 1 March starts on 30 January: past all of February
        "2025-02",
        "2025-03",
    ]


# -- the default schedule fits every period --------------------------------------------------


def default_schedule_charges(period: periods.Period) -> tuple[int, int]:
    """(DAU, MAU) releases of the default schedule charged to ``period``: every DAU of every day
    and every default-window MAU of every day, forever -- counted by enumerating releases."""
    w = DEFAULTS.mau_window_days
    dau = sum(1 for d in range(period.first_day - 400, period.last_day + 400) if period in periods.periods_read(d, 1))
    mau = sum(1 for d in range(period.first_day - 400, period.last_day + 400) if period in periods.periods_read(d, w))
    return dau, mau


@pytest.mark.parametrize("month", ["2025-02-01", "2024-02-01", "2025-04-01", "2025-01-01"])
def test_the_default_schedule_fits_every_period_under_the_default_caps(month):
    period = periods.period_of(day(month))
    n_dau, n_mau = default_schedule_charges(period)
    assert (n_dau, n_mau) == (period.days, period.days + DEFAULTS.mau_window_days - 1)  # 28/29/30/31 + 29
    s = DEFAULTS
    dau = mechanisms.calibrate("gaussian", s.epsilon_dau, s.delta).charge
    mau = mechanisms.calibrate("gaussian", s.epsilon_mau, s.delta).charge
    combined = accounting.compose_epsilon([dau] * n_dau + [mau] * n_mau, s.delta)
    assert combined <= s.period_budget_total
    assert accounting.compose_epsilon([dau] * n_dau, s.delta) <= s.dau_budget_total
    assert accounting.compose_epsilon([mau] * n_mau, s.delta) <= s.mau_budget_total
    # and the schedule is not trivially inside: naive summing would exceed the cap many times over
    assert n_dau * s.epsilon_dau + n_mau * s.epsilon_mau > 5 * s.period_budget_total
    # room left for revisions/other windows, as releases_that_fit (the evaluation's code) counts it
    extra = accounting.releases_that_fit(mau, s.period_budget_total, s.delta, already=[dau] * n_dau + [mau] * n_mau)
    assert extra >= 7


def test_schedule_fit_reports_the_default_schedule_and_what_does_not_fit():
    """``accountant.schedule_fit`` (the start-up check): the default schedule fits every month
    length; revisions at a 7-day lag double it and do not; a MAU counter run is read by its own
    month and the next -- and January (non-leap) also by March's run, whose first 30-day window
    starts on 31 January -- so the default run epsilon does not fit January, 2.7 does."""
    fits = schedule_fit(DEFAULTS)
    assert [f.days for f in fits] == [28, 29, 30, 31] and all(f.fits for f in fits)
    assert [f.charges for f in fits] == [28 + 57, 29 + 58, 30 + 59, 31 + 60]
    assert max(f.epsilon for f in fits) == pytest.approx(5.1854, abs=1e-3)
    revised = schedule_fit(EngineSettings(revision_lags_days="7"))
    assert not any(f.fits for f in revised) and {f.cap for f in revised} == {"PERIOD_BUDGET_TOTAL"}
    sqrt = {f.period: f for f in schedule_fit(EngineSettings(mau_mechanism="sqrt"))}
    assert sqrt["2025-01"].charges == 31 + 3 and not sqrt["2025-01"].fits  # three runs read January
    assert sqrt["2025-04"].charges == 30 + 2 and sqrt["2025-04"].fits
    assert all(f.fits for f in schedule_fit(EngineSettings(mau_mechanism="sqrt", counter_epsilon_mau=2.7)))


async def test_the_default_schedule_runs_end_to_end_and_january_is_charged_exactly_what_reads_it(tmp_path):
    jan = day("2025-01-01")
    async with running_system(tmp_path) as system:
        for i in range(31):
            await ingest(system, [(u, jan + i, 1) for u in range(i, i + 20)])
        for i in range(31):
            await system.release(("dau", jan + i, 1))
        for i in range(31 + 29):  # every 30-day window that reads a January day
            await system.release(("mau", jan + i, 30))
        report = await system.budget("2025-01")
        feb = (await system.budget("2025-02")).periods[0]
    january = report.periods[0]
    assert january.combined.charges == 31 + 60 and january.metrics["mau"].charges == 60
    assert feb.combined.charges == 29 and feb.metrics["dau"].charges == 0
    s = DEFAULTS
    sd = accounting.calibrate_discrete_gaussian_sigma(s.epsilon_dau, s.delta)
    sm = accounting.calibrate_discrete_gaussian_sigma(s.epsilon_mau, s.delta)
    direct = (
        pld.from_discrete_gaussian_mechanism(sd)
        .self_compose(31)
        .compose(pld.from_discrete_gaussian_mechanism(sm).self_compose(60))
        .get_epsilon_for_delta(s.delta)
    )
    assert january.combined.epsilon_spent == pytest.approx(direct, rel=1e-6)
    assert january.combined.epsilon_spent <= s.period_budget_total == january.combined.epsilon_cap


# -- refusal names the period, before any noise ------------------------------------------------


async def test_a_window_reaching_into_a_spent_period_is_refused_naming_that_period(tmp_path):
    # Two DAU releases (0.43) fit under 0.55, a MAU release (0.5) alone too, but not both together.
    engine = engine_settings(period_budget_total=0.55, dau_budget_total=10, mau_budget_total=10)
    jan, feb10 = day("2025-01-01"), day("2025-02-10")
    async with running_system(tmp_path, engine) as system:
        await system.release(("dau", jan + 3, 1))
        await system.release(("dau", jan + 4, 1))
        taken = system.noise.taken
        with pytest.raises(BudgetExhausted) as info:
            await system.release(("mau", feb10, 30))  # reads 12 Jan .. 10 Feb
        body = info.value.body
        assert body["accounting_period"] == "2025-01" and body["cap"] == "PERIOD_BUDGET_TOTAL"
        assert body["epsilon_after_release"] > 0.55 >= body["epsilon_spent"]
        assert body["next_reset"] == "2025-02-01" and "2025-01" in str(info.value)
        assert system.noise.taken == taken  # no noise taken for it
        assert len(system.accountant.ledger.records) == 2  # nothing charged
        ok = await system.release(("mau", feb10, 7))  # reads February only
        assert ok.accounting_period == "2025-02"
        assert system.accountant.ledger.records[-1].periods == ["2025-02"]


async def test_the_metric_sub_cap_still_applies_and_is_named(tmp_path):
    engine = engine_settings(dau_budget_total=0.4)
    async with running_system(tmp_path, engine) as system:
        await system.release(("dau", day("2025-03-01"), 1))
        with pytest.raises(BudgetExhausted) as info:
            await system.release(("dau", day("2025-03-02"), 1))
        assert info.value.body["cap"] == "DAU_BUDGET_TOTAL"
        assert info.value.body["accounting_period"] == "2025-03"


async def test_a_counter_run_is_charged_to_the_period_its_first_windows_read(tmp_path):
    engine = engine_settings(mau_mechanism="sqrt")
    async with running_system(tmp_path, engine) as system:
        await system.release(("mau", day("2025-11-03"), 30))
        (charge,) = system.accountant.ledger.records
        assert charge.purpose == "counter_run" and charge.periods == ["2025-10", "2025-11"]
        october = (await system.budget("2025-10")).periods[0]
        assert october.metrics["mau"].charges == 1


async def test_user_epsilon_limit_refuses_once_the_lifetime_composition_would_exceed_it(tmp_path):
    engine = engine_settings(user_epsilon_limit=0.45)
    async with running_system(tmp_path, engine) as system:
        await system.release(("dau", day("2025-01-05"), 1))
        await system.release(("dau", day("2025-04-05"), 1))  # another period: still the same user
        taken = system.noise.taken
        with pytest.raises(BudgetExhausted) as info:
            await system.release(("dau", day("2025-07-05"), 1))
        assert info.value.body["cap"] == "USER_EPSILON_LIMIT" and info.value.body["accounting_period"] is None
        assert info.value.body["next_reset"] is None and system.noise.taken == taken
        report = await system.budget()
        assert report.lifetime.epsilon_limit == 0.45
        assert report.lifetime.epsilon_spent <= 0.45 and report.lifetime.charges == 2
        # releases already made are still served, free
        assert (await system.release(("dau", day("2025-01-05"), 1))).accounting_period == "2025-01"


async def test_budget_of_the_last_k_periods_is_their_composition_with_each_release_once(tmp_path):
    now = dt.datetime(2025, 3, 15, 12, tzinfo=dt.UTC)
    async with running_system(tmp_path, clock=lambda: now) as system:
        await system.release(("dau", day("2025-01-10"), 1))
        await system.release(("mau", day("2025-02-10"), 30))  # reads January and February
        await system.release(("dau", day("2025-03-01"), 1))
        report = await system.budget(last=3)
        two = await system.budget(last=2)
    comp = report.composition
    assert comp is not None and comp.periods == ["2025-01", "2025-02", "2025-03"] and comp.charges == 3
    sd = accounting.calibrate_discrete_gaussian_sigma(0.3, 1e-6)
    sm = accounting.calibrate_discrete_gaussian_sigma(0.5, 1e-6)
    direct = (
        pld.from_discrete_gaussian_mechanism(sd)
        .self_compose(2)
        .compose(pld.from_discrete_gaussian_mechanism(sm))
        .get_epsilon_for_delta(1e-6)
    )
    assert comp.epsilon == pytest.approx(direct, rel=1e-6)
    # February and March: the MAU window (reads Feb) and the March DAU; the January DAU does not reach them
    assert two.composition is not None
    assert two.composition.periods == ["2025-02", "2025-03"] and two.composition.charges == 2
    assert report.statement == statement(DEFAULTS)


async def test_every_release_carries_the_statement(tmp_path):
    async with running_system(tmp_path, engine_settings(mau_mechanism="sqrt")) as system:
        for key in (("dau", day("2025-05-02"), 1), ("mau", day("2025-05-02"), 30), ("mau", day("2025-05-02"), 7)):
            rel = await system.release(key)
            assert rel.guarantee.startswith(statement(system.settings)), rel.guarantee
        assert "(5.5, 1e-06)-DP with respect to that user's activity within any one accounting period" in rel.guarantee


async def test_in_sketch_mode_the_budget_does_not_claim_the_bound_for_sketch_releases(tmp_path):
    """Claim 20: a sketch-mode release is "not formally DP"; /budget must not state the exact-mode
    bound as if it held for them."""
    now = dt.datetime(2025, 5, 15, 12, tzinfo=dt.UTC)
    async with running_system(tmp_path, engine_settings(sketch_impl="theta"), clock=lambda: now) as system:
        rel = await system.release(("dau", day("2025-05-02"), 1))
        report = await system.budget(last=1)
    assert "not formally DP" in rel.guarantee
    assert report.statement.startswith("not formally DP (SKETCH_IMPL=theta)")
    assert statement(system.settings) in report.statement  # what exact mode would give, named as such
    assert report.composition is not None and report.composition.meaning.startswith("in exact mode")


# -- the cap holds under concurrency --------------------------------------------------------


async def test_period_composition_never_exceeds_the_cap_under_concurrent_releases_and_revisions(tmp_path):
    """DAU, MAU windows of several lengths and revisions requested concurrently: whatever gets
    admitted, every period's composition stays within PERIOD_BUDGET_TOTAL, every refusal names a
    period it reads, and replay rebuilds the same ledger."""
    cap = 2.0
    engine = engine_settings(period_budget_total=cap, dau_budget_total=50, mau_budget_total=50)
    base = day("2025-06-01")
    keys = [("dau", base + i, 1) for i in range(0, 60, 3)]
    keys += [("mau", base + i, w) for i, w in ((5, 7), (20, 30), (33, 45), (40, 60), (61, 90), (29, 2), (45, 30))]
    admitted, refused = [], []
    async with running_system(tmp_path, engine) as system:
        await ingest(system, [(u, base + i, 1) for i in range(0, 70, 2) for u in range(i, i + 5)])
        await system.release(("dau", base + 1, 1))
        await system.release(("mau", base + 30, 30))

        async def ask(kind, key):
            try:
                rel = await (system.revise(key) if kind == "revise" else system.release(key))
                admitted.append((key, rel.revision))
            except BudgetExhausted as exc:
                refused.append((key, exc.body))

        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(ask, "release", key)
            for _ in range(3):
                tg.start_soon(ask, "revise", ("dau", base + 1, 1))
                tg.start_soon(ask, "revise", ("mau", base + 30, 30))
        ledger = system.accountant.ledger
        labels = ledger.periods()
        for label in labels:
            assert accounting.compose_epsilon(ledger.period_charges(label), 1e-6) <= cap, label
        for key, body in refused:
            assert body["accounting_period"] in [p.label for p in periods.periods_read(key[1], key[2])]
        assert admitted and refused  # the cap really was reached, and something fit
        charges = {label: ledger.period_charges(label) for label in labels}
    for snap in (tmp_path / "snapshots").iterdir():
        snap.unlink()
    async with running_system(tmp_path, engine) as system:  # full replay: the same ledger
        assert {label: system.accountant.ledger.period_charges(label) for label in labels} == charges


async def test_a_schedule_that_cannot_fit_is_reported_at_start_up(tmp_path, monkeypatch):
    from actors.system import facade

    warned: list[dict] = []

    class Recorder:
        def __getattr__(self, level):
            return lambda event, **kw: warned.append({"event": event, **kw}) if level == "warning" else None

    monkeypatch.setattr(facade, "log", Recorder())
    async with running_system(tmp_path, engine_settings(release_schedule="daily", revision_lags_days="7")):
        with anyio.fail_after(60):
            while not any(e["event"] == "schedule_exceeds_budget" for e in warned):
                await anyio.sleep(0.05)
    exceeded = [e for e in warned if e["event"] == "schedule_exceeds_budget"]
    assert {e["period_days"] for e in exceeded} == {28, 29, 30, 31}
    assert {e["cap"] for e in exceeded} == {"PERIOD_BUDGET_TOTAL"}
    warned.clear()
    async with running_system(tmp_path / "ok", engine_settings(release_schedule="daily")) as system:
        await anyio.to_thread.run_sync(schedule_fit, system.settings)  # what the check computes
        await system._check_schedule_fits()
    assert not any(e["event"] == "schedule_exceeds_budget" for e in warned)
