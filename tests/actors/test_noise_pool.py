"""actors/noise_pool.py: release noise is drawn ahead of time, off the request path, so how long a
release takes cannot depend on |noise| (no timing in these tests: they check *where* and *when*
the sampler runs, which is what makes the timing independent)."""

from __future__ import annotations

import threading

import anyio
import pytest

from actors import noise_pool
from actors.noise_pool import NoisePool
from actors.privacy import counters, mechanisms
from tests.support import day, ingest, running_system
from tests.support import settings as engine_settings

CAL = mechanisms.calibrate("gaussian", 0.3, 1e-6)


async def test_a_take_from_a_stocked_pool_runs_no_sampler_and_hands_out_each_value_once(monkeypatch):
    made: list[int] = []

    def sampler(cal, rng=None):
        made.append(len(made))
        return made[-1]

    monkeypatch.setattr(mechanisms, "draw", sampler)
    pool = NoisePool(depth=8, batch=4)
    pool.register(CAL)
    while await pool.fill_once():
        pass
    assert len(made) == 8 and pool.ready()
    taken = [await pool.take(CAL) for _ in range(8)]
    assert len(made) == 8  # no draw on the taking side
    assert taken == list(range(8)) and pool.taken == 8 and pool.inline_batches == 0  # oldest first, once each
    # empty: the release waits for a whole batch and takes its first value (rule 3)
    assert await pool.take(CAL) == 8 and len(made) == 12 and pool.inline_batches == 1
    assert pool.available(noise_pool.cal_key(CAL)) == 3


async def test_the_refill_loop_tops_pools_up_after_takes_and_counter_vectors_are_pooled_too(monkeypatch):
    plan = mechanisms.counter_plan("sqrt", 31, 2, 3.0, 1e-6, 20)
    pool = NoisePool(depth=16, batch=4)
    pool.register(CAL)
    pool.register_counter(plan)
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.refill_loop)
        with anyio.fail_after(30):
            while not pool.ready():
                await anyio.sleep(0.01)
        vector = await pool.take_counter(plan)
        assert len(vector) == plan.rows and pool.inline_batches == 0
        for _ in range(10):
            await pool.take(CAL)
        with anyio.fail_after(30):
            while not pool.ready():  # refilled in the background, not by the takes
                await anyio.sleep(0.01)
        assert pool.inline_batches == 0
        tg.cancel_scope.cancel()


async def test_releases_take_noise_drawn_before_they_were_asked_never_on_the_event_loop(tmp_path, monkeypatch):
    threads: list[int] = []
    real_draw, real_vector = mechanisms.draw, counters.draw_counter_noise

    def draw(cal, rng=None):
        threads.append(threading.get_ident())
        return real_draw(cal)

    def vector(plan, rng=None):
        threads.append(threading.get_ident())
        return real_vector(plan)

    monkeypatch.setattr(mechanisms, "draw", draw)
    monkeypatch.setattr(counters, "draw_counter_noise", vector)
    loop_thread = threading.get_ident()
    base = day("2025-06-01")
    async with running_system(tmp_path, engine_settings(mau_mechanism="sqrt")) as system:
        await ingest(system, [(u, base + i, 1) for i in range(10) for u in range(i, i + 30)])
        with anyio.fail_after(60):  # the pools of this configuration fill at boot
            while not system.noise.ready() or system.noise.available(noise_pool.cal_key(CAL)) == 0:
                await anyio.sleep(0.02)
        before = system.noise.taken
        for i in range(10):
            await system.release(("dau", base + i, 1))
        await system.release(("mau", base + 9, 7))  # a non-default window: gaussian at the MAU epsilon
        assert system.noise.taken == before + 11
        assert system.noise.inline_batches == 0  # every value was drawn before its release was asked
    assert threads and loop_thread not in threads  # the samplers ran in worker threads only


@pytest.mark.parametrize("mechanism", ["gaussian", "laplace"])
def test_pool_keys_separate_calibrations(mechanism):
    a = mechanisms.calibrate(mechanism, 0.3, 1e-6)
    b = mechanisms.calibrate(mechanism, 0.5, 1e-6)
    assert noise_pool.cal_key(a) != noise_pool.cal_key(b)
    assert noise_pool.cal_key(a) == noise_pool.cal_key(mechanisms.calibrate(mechanism, 0.3, 1e-6))
