"""Releases and the privacy budget through the real (in-process) actor system and journal."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from dp_accounting.pld import privacy_loss_distribution as pld

from actors.privacy import accounting, counters, mechanisms
from actors.refusals import BudgetExhausted, NotClosed, NothingToRevise
from actors.state import periods
from journal import events as ev
from tests.support import day, ingest, running_system
from tests.support import settings as engine_settings

NOV = [day("2025-11-01") + i for i in range(30)]


@pytest.fixture
def zero_noise(monkeypatch):
    """Replace the noise (test process only) so the counting pipeline itself can be checked."""
    monkeypatch.setattr(mechanisms, "draw", lambda cal, rng=None: 0)
    monkeypatch.setattr(counters, "draw_counter_noise", lambda plan, rng=None: [0] * plan.rows)


def rows_for(users, d, op=1):
    return [(u, d, op) for u in users]


async def test_release_is_journaled_immutable_and_free_on_repeat(tmp_path):
    async with running_system(tmp_path) as system:
        await ingest(system, rows_for(range(1, 50), NOV[3]))
        first = await system.release(("dau", NOV[3], 1))
        charges = len(system.accountant.ledger.records)
        for _ in range(5):
            assert await system.release(("dau", NOV[3], 1)) is first
        assert len(system.accountant.ledger.records) == charges == 1
        kinds = []
        async for records in system.journal.read(0):
            kinds += [type(r.event).__name__ for r in records]
        assert kinds.count("Released") == 1 and kinds.count("BudgetCharged") == 1
        assert kinds.index("BudgetCharged") < kinds.index("Released")


async def test_release_survives_restart_snapshot_restore_and_full_replay(tmp_path):
    async with running_system(tmp_path) as system:
        await ingest(system, rows_for(range(1, 30), NOV[5]))
        dau = await system.release(("dau", NOV[5], 1))
        mau = await system.release(("mau", NOV[5], 30))
    async with running_system(tmp_path) as system:  # from the shutdown snapshot
        assert system.restored_from is not None
        assert await system.release(("dau", NOV[5], 1)) == dau
        assert await system.release(("mau", NOV[5], 30)) == mau
    for snap in (tmp_path / "snapshots").iterdir():
        snap.unlink()
    async with running_system(tmp_path) as system:  # full replay
        assert system.restored_from is None
        assert await system.release(("dau", NOV[5], 1)) == dau
        assert len(system.accountant.ledger.records) == 2


async def test_open_period_is_refused_and_nothing_is_charged(tmp_path):
    today = periods.today(dt.datetime.now(dt.UTC), periods.ZoneInfo("UTC"))
    async with running_system(tmp_path) as system:
        with pytest.raises(NotClosed) as info:
            await system.release(("dau", today, 1))
        assert info.value.closes_at.startswith(periods.iso(today + 1))
        assert system.accountant.ledger.records == []


async def test_budget_cap_refuses_before_noise_and_charges_nothing(tmp_path):
    engine = engine_settings(dau_budget_total=0.4)  # one release at 0.3 fits, two compose to ~0.43
    async with running_system(tmp_path, engine) as system:
        await system.release(("dau", NOV[0], 1))
        with pytest.raises(BudgetExhausted) as info:
            await system.release(("dau", NOV[1], 1))
        body = info.value.body
        assert body["metric"] == "dau" and body["accounting_period"] == "2025-11"
        assert body["epsilon_cap"] == 0.4 and body["epsilon_after_release"] > 0.4
        assert body["next_reset"] == "2025-12-01"
        assert len(system.accountant.ledger.records) == 1 and system.noise.taken == 1  # none for the refused one
        assert system.release_actor.book.latest(("dau", NOV[1], 1)) is None
        # other periods have their own budget
        assert (await system.release(("dau", day("2025-12-02"), 1))).accounting_period == "2025-12"


async def test_all_31_daily_dau_releases_of_a_month_fit_the_default_cap(tmp_path):
    """The acceptance number: tight (PLD) composition fits 31 releases at eps 0.3 in a 3.0 cap;
    summing epsilons would have stopped at 10."""
    jan = [day("2025-01-01") + i for i in range(31)]
    async with running_system(tmp_path) as system:
        for d in jan:
            await ingest(system, rows_for(range(1, 20), d))
        for d in jan:
            await system.release(("dau", d, 1))
        report = await system.budget("2025-01")
    dau = report.periods[0].metrics["dau"]
    assert dau.charges == 31
    assert 1.85 < dau.epsilon_spent < 1.95 <= 3.0
    assert int(3.0 / 0.3 + 1e-9) == 10  # what a naive sum of epsilons allows
    sigma = accounting.calibrate_discrete_gaussian_sigma(0.3, 1e-6)
    direct = pld.from_discrete_gaussian_mechanism(sigma).self_compose(31).get_epsilon_for_delta(1e-6)
    assert dau.epsilon_spent == pytest.approx(direct, rel=1e-9)


SQRT = engine_settings(mau_mechanism="sqrt")


async def test_counter_run_releases_every_earlier_day_first_with_one_charge(tmp_path, zero_noise):
    async with running_system(tmp_path, SQRT) as system:
        for i, d in enumerate(NOV[:10]):
            await ingest(system, rows_for(range(i, i + 5), d))
        out = await system.release(("mau", NOV[9], 30))
        book = system.release_actor.book
        for i, d in enumerate(NOV[:10]):
            rel = book.latest(("mau", d, 30))
            assert rel is not None and rel.mechanism == "sqrt" and rel.noise.step == i + 1
            assert rel.estimate == i + 5  # users 0..i+4 seen so far, exact with zero noise
        charges = system.accountant.ledger.records
        assert len(charges) == 1 and charges[0].purpose == "counter_run"
        assert out.epsilon_used == pytest.approx(accounting.default_counter_epsilon(30, 0.5, 1e-6))


async def test_counter_outputs_are_prefix_sums_plus_L_Z_for_a_fixed_noise_vector(tmp_path, monkeypatch):
    fixed = {}

    def fixed_noise(plan, rng=None):
        fixed["noise"] = [((i * 7919) % 13 - 6) * 2**18 for i in range(plan.rows)]
        fixed["plan"] = plan
        return fixed["noise"]

    monkeypatch.setattr(counters, "draw_counter_noise", fixed_noise)
    async with running_system(tmp_path, SQRT) as system:
        for i, d in enumerate(NOV[:6]):
            await ingest(system, rows_for(range(i, i + 3), d))
        await system.release(("mau", NOV[5], 30))
        run = system.release_actor.book.run_for("mau", "2025-11")
        assert run.z == [3, 1, 1, 1, 1, 1]  # z = change of the counted total
        for t in range(1, 7):
            value = counters.counter_value(fixed["plan"], run.z[:t], fixed["noise"])
            rel = system.release_actor.book.latest(("mau", NOV[t - 1], 30))
            assert rel.estimate == round(value)
            half = counters.counter_interval(fixed["plan"], t)
            assert rel.lower_95 <= value - half + 1 and rel.upper_95 >= value + half - 1


async def test_revision_is_labelled_charged_and_keeps_the_original(tmp_path):
    async with running_system(tmp_path) as system:
        with pytest.raises(NothingToRevise):
            await system.revise(("dau", NOV[2], 1))
        original = await system.release(("dau", NOV[2], 1))
        revised = await system.revise(("dau", NOV[2], 1))
        assert revised.revision == 1 and original.revision == 0
        assert revised.release_id != original.release_id
        assert await system.release(("dau", NOV[2], 1)) == revised
        assert [r.release_id for r in system.release_actor.book.log] == [original.release_id, revised.release_id]
        assert [c.purpose for c in system.accountant.ledger.records] == ["release", "revision"]


async def test_erasure_is_excluded_from_every_later_release(tmp_path, zero_noise):
    async with running_system(tmp_path) as system:
        await ingest(system, rows_for(range(1, 11), NOV[1]) + rows_for(range(1, 11), NOV[2]))
        assert (await system.release(("dau", NOV[1], 1))).estimate == 10
        await system.erase(3)
        assert (await system.release(("dau", NOV[2], 1))).estimate == 9  # first release after
        assert (await system.release(("dau", NOV[1], 1))).estimate == 10  # published stays
        assert (await system.release(("mau", NOV[20], 30))).estimate == 9
        assert (await system.revise(("dau", NOV[1], 1))).estimate == 9


@pytest.mark.parametrize("impl", ["set", "hllpp"])
async def test_erasure_committed_while_a_release_is_computed_is_honoured(tmp_path, zero_noise, impl):
    # hllpp: 10 users are counted exactly (coupon mode); the erased one leaves by membership
    async with running_system(tmp_path, engine_settings(sketch_impl=impl)) as system:
        await ingest(system, rows_for(range(1, 11), NOV[4]))
        real_views = system.router.views

        async def views_then_erase(days, with_sketch):
            out = await real_views(days, with_sketch)
            await system.erase(7)  # lands in the journal after the read, before the release
            return out

        system.release_actor.days.views = views_then_erase  # type: ignore[method-assign]
        assert (await system.release(("dau", NOV[4], 1))).estimate == 9
        assert (await system.release(("mau", NOV[4], 30))).estimate == 9


async def test_late_events_change_later_releases_only(tmp_path, zero_noise):
    async with running_system(tmp_path) as system:
        await ingest(system, rows_for([1, 2], NOV[7]))
        before = await system.release(("dau", NOV[7], 1))
        await ingest(system, [*rows_for([3, 4, 5], NOV[7]), (1, NOV[7], 0)])
        assert await system.release(("dau", NOV[7], 1)) == before
        assert before.estimate == 2
        assert (await system.release(("mau", NOV[8], 7))).estimate == 4  # window 7: independent


async def test_no_response_field_equals_the_exact_count_more_often_than_chance(tmp_path):
    engine = engine_settings(epsilon_dau=0.1, dau_budget_total=100.0)
    days = [day("2025-02-01") + i for i in range(28)]
    hits = {}
    async with running_system(tmp_path, engine) as system:
        for i, d in enumerate(days):
            await ingest(system, rows_for(range(0, 40 + i), d))
        for i, d in enumerate(days):
            rel = await system.release(("dau", d, 1))
            for field in ("estimate", "lower_95", "upper_95", "epsilon_used", "budget_remaining"):
                hits[field] = hits.get(field, 0) + (getattr(rel, field) == 40 + i)
    # sigma ~ 39: P(noise == 0) ~ 1%; 28 releases -> P(>= 4 hits) < 1e-3 by chance
    assert all(n <= 3 for n in hits.values()), hits


async def test_two_fresh_deployments_with_identical_data_draw_different_noise(tmp_path):
    estimates = []
    for name in ("a", "b"):
        async with running_system(tmp_path / name) as system:
            for d in NOV[:8]:
                await ingest(system, rows_for(range(100), d))
            estimates.append([(await system.release(("dau", d, 1))).estimate for d in NOV[:8]])
    assert estimates[0] != estimates[1]


async def test_intervals_come_from_the_exact_discrete_distribution(tmp_path):
    async with running_system(tmp_path) as system:
        rel = await system.release(("dau", NOV[0], 1))
        sigma = accounting.calibrate_discrete_gaussian_sigma(0.3, 1e-6)
        from actors.privacy import noise

        q = noise.discrete_gaussian_quantile(sigma, 0.95)
        assert rel.upper_95 - rel.estimate == rel.estimate - rel.lower_95 == q
        assert rel.noise.distribution == "discrete_gaussian" and rel.noise.sigma == sigma


async def test_laplace_and_tree_mechanisms(tmp_path, zero_noise):
    engine = engine_settings(dau_mechanism="laplace", mau_mechanism="tree")
    async with running_system(tmp_path, engine) as system:
        await ingest(system, rows_for(range(1, 6), NOV[0]))
        dau = await system.release(("dau", NOV[0], 1))
        assert dau.mechanism == "laplace" and dau.delta == 0.0 and "(0.3)-DP" in dau.guarantee
        assert dau.noise.scale == pytest.approx(1 / 0.3) and dau.estimate == 5
        mau = await system.release(("mau", NOV[3], 30))
        assert mau.mechanism == "tree" and mau.noise.counter == "tree" and mau.estimate == 5
        kinds = [c.mechanism for c in system.accountant.ledger.records]
        assert kinds == ["discrete_laplace", "gaussian_counter"]


@pytest.mark.parametrize("impl, lg_k", [("theta", 5), ("hllpp", 4)])
async def test_sketch_mode_is_labelled_honestly_and_widens_the_interval(tmp_path, impl, lg_k):
    engine = engine_settings(sketch_impl=impl, sketch_lg_k=lg_k)
    async with running_system(tmp_path, engine) as system:
        await ingest(system, rows_for(range(1, 2001), NOV[0]))
        rel = await system.release(("dau", NOV[0], 1))
        assert rel.sketch_impl == impl and "not formally DP" in rel.guarantee
        assert rel.guarantee == engine.sketch.guarantee
        q = mechanisms.half_width(mechanisms.calibrate("gaussian", 0.3, 1e-6))
        assert rel.upper_95 - rel.lower_95 > 2 * q  # the sketch's own bounds widen it
        # The point is the day's sketch estimate plus the noise (sigma ~13: 8 sigma fails ~1e-15).
        (view,), _ = await system.views(range(NOV[0], NOV[0] + 1), True)
        assert view.sketch is not None
        sketch_estimate = engine.sketch.union([view.sketch]).estimate()  # what a release reads
        sigma = accounting.calibrate_discrete_gaussian_sigma(0.3, 1e-6)
        assert abs(rel.estimate - round(sketch_estimate)) <= 8 * sigma
        assert rel.lower_95 <= 2000 <= rel.upper_95  # the truth, inside the sketch-widened interval


async def test_sketch_mode_erasure_leaves_by_rebuilding_the_day_never_by_subtraction(tmp_path, zero_noise):
    """A day that lost users is rebuilt from its exact membership: the release after the erasures
    reads exactly the sketch of the remaining members."""
    engine = engine_settings(sketch_impl="hllpp", sketch_lg_k=4)
    kind = engine.sketch
    async with running_system(tmp_path, engine) as system:
        await ingest(system, rows_for(range(1, 301), NOV[0]))
        (before,), _ = await system.views(range(NOV[0], NOV[0] + 1), True)
        assert before.sketch is not None and before.sketch.serialize() == kind.build(before.members).serialize()
        for user in range(1, 101):
            await system.erase(user)
        (after,), _ = await system.views(range(NOV[0], NOV[0] + 1), True)
        assert after.members.tolist() == list(range(101, 301))
        assert after.sketch is not None and after.sketch.serialize() == kind.build(after.members).serialize()
        assert after.sketch.serialize() != before.sketch.serialize()
        rel = await system.release(("dau", NOV[0], 1))
        assert rel.estimate == round(kind.build(after.members).estimate())  # zero noise


async def test_budget_report_matches_dp_accounting_called_directly(tmp_path):
    async with running_system(tmp_path, SQRT) as system:
        await system.release(("dau", NOV[0], 1))
        await system.release(("dau", NOV[1], 1))
        await system.release(("mau", NOV[1], 30))
        report = (await system.budget("2025-11")).periods[0]
    sigma = accounting.calibrate_discrete_gaussian_sigma(0.3, 1e-6)
    dau = pld.from_discrete_gaussian_mechanism(sigma).self_compose(2)
    m = accounting.gaussian_counter_multiplier(accounting.default_counter_epsilon(30, 0.5, 1e-6), 1e-6)
    mau = pld.from_gaussian_mechanism(m)
    assert report.metrics["dau"].epsilon_spent == pytest.approx(dau.get_epsilon_for_delta(1e-6), rel=1e-9)
    assert report.metrics["mau"].epsilon_spent == pytest.approx(mau.get_epsilon_for_delta(1e-6), rel=1e-6)
    assert report.combined.epsilon_spent == pytest.approx(dau.compose(mau).get_epsilon_for_delta(1e-6), rel=1e-6)
    assert report.combined.epsilon_spent < report.metrics["dau"].epsilon_spent + report.metrics["mau"].epsilon_spent


def test_released_record_never_holds_the_noise():
    fields = set(ev.Released.__struct_fields__) | set(ev.NoiseParams.__struct_fields__)
    assert not {"noise_value", "exact", "count", "true_count"} & fields
    assert "noise" not in ev.NoiseParams.__struct_fields__
    assert np.int64  # numpy import used by helpers


async def test_erased_user_cannot_reenter_the_run_and_the_run_secret_is_shredded_at_its_end(tmp_path, zero_noise):
    import anyio

    from journal import events as jev

    async with running_system(tmp_path, SQRT) as system:
        await ingest(system, rows_for(range(1, 6), NOV[0]))
        assert (await system.release(("mau", NOV[0], 30))).estimate == 5
        await system.erase(3)
        await ingest(system, rows_for([3], NOV[2]))  # comes back: new data, but not in this run
        assert (await system.release(("mau", NOV[2], 30))).estimate == 4
        await system._purge(system.erasure.book.outstanding())  # compaction: the tombstone keeps a token
    async with running_system(tmp_path, SQRT) as system:  # restart after the purge
        await ingest(system, rows_for([3], NOV[4]))
        assert (await system.release(("mau", NOV[4], 30))).estimate == 4
        run = system.release_actor.book.run_for("mau", "2025-11")
        secret = run.started.token_secret
        assert len(secret) == 32 and len(run.blocked) == 1
        await system.release(("mau", NOV[29], 30))  # the run's last day: the run ends
        with anyio.fail_after(20):
            while any(secret in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()):
                await anyio.sleep(0.05)
        started = [r.event async for recs in system.journal.read(0, kinds=[jev.CounterStarted.KIND]) for r in recs]
        assert [s.token_secret for s in started] == [b""]
    # a December run counts the returning user again (a new run, a new period); Nov 1 is out of the window
    async with running_system(tmp_path, SQRT) as system:
        await ingest(system, rows_for([3], day("2025-12-01")))
        assert (await system.release(("mau", day("2025-12-01"), 30))).estimate == 1
