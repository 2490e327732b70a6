"""Noise drawn ahead of time, off the request path, so a release's timing cannot tell |noise|.

Rules:
1. The exact samplers (``actors/privacy/noise.py``) are rejection samplers: their running time
   grows with the magnitude of the value they return. A release that drew its noise while the
   client waited would answer later when |noise| is large -- the response time would be a side
   channel on exactly the number the noise hides. So values are drawn ahead of time, in a worker
   thread, by ``refill_loop`` (a background task of the system), one pool per calibration, and a
   release *takes* the oldest pre-drawn value: a deque pop, the same cost whatever the value and
   whatever the data.
2. What is drawn is unchanged: ``mechanisms.draw`` and ``counters.draw_counter_noise`` (OS
   randomness, CKS samplers), independent draws, each value used at most once and only after the
   accountant admitted the release (a refused release takes nothing). The pool changes *when*
   they are drawn, never *how*. Values live in this process's memory only: never journaled,
   logged or snapshotted; a restart draws afresh.
3. An empty pool (a burst deeper than ``depth``, or a calibration seen for the first time) makes
   the release wait for a fresh batch of ``batch`` draws and take the first: its wait is the time
   of the whole batch, of which its own value is one part in ``batch``. The calibrations a
   configuration uses are registered at start (``register``), so in normal operation this does
   not happen; ``inline_batches`` counts it.
4. Counter runs take their whole noise vector the same way, keyed by the run's plan; the system
   registers the plans of the current and the next accounting period ahead (``register_counter``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

import anyio

from actors.privacy import counters, mechanisms

DEPTH = 256
BATCH = 32


def cal_key(cal: mechanisms.Calibrated) -> Hashable:
    return ("independent", cal.mechanism, cal.epsilon, cal.delta, cal.charge)


def plan_key(plan: counters.CounterPlan) -> Hashable:
    return ("counter", plan.kind, plan.T, plan.w, plan.noise_multiplier, plan.lattice_bits)


class NoisePool:
    def __init__(self, *, depth: int = DEPTH, batch: int = BATCH, counter_depth: int = 1) -> None:
        self.depth = depth
        self.batch = batch
        self.counter_depth = counter_depth
        self._pools: dict[Hashable, deque[Any]] = {}
        self._makers: dict[Hashable, Callable[[], Any]] = {}
        self._targets: dict[Hashable, int] = {}
        self._wake = anyio.Event()
        self.taken = 0  # values handed to releases
        self.inline_batches = 0  # rule 3: batches a release had to wait for

    # -- what to keep ready -------------------------------------------------------------------

    def register(self, cal: mechanisms.Calibrated) -> Hashable:
        key = cal_key(cal)
        if key not in self._pools:
            self._add(key, lambda: mechanisms.draw(cal), self.depth)
        return key

    def register_counter(self, plan: counters.CounterPlan) -> Hashable:
        key = plan_key(plan)
        if key not in self._pools:
            self._add(key, lambda: counters.draw_counter_noise(plan), self.counter_depth)
        return key

    def _add(self, key: Hashable, make: Callable[[], Any], target: int) -> None:
        self._pools[key] = deque()
        self._makers[key] = make
        self._targets[key] = target
        self._wake.set()

    # -- taking (the request path) ------------------------------------------------------------

    async def take(self, cal: mechanisms.Calibrated) -> int:
        value: int = await self._take(self.register(cal))
        return value

    async def take_counter(self, plan: counters.CounterPlan) -> list[int]:
        vector: list[int] = await self._take(self.register_counter(plan))
        return vector

    async def _take(self, key: Hashable) -> Any:
        pool = self._pools[key]
        if not pool:  # rule 3
            self.inline_batches += 1
            pool.extend(await self._draw(key, max(1, min(self.batch, self._targets[key]))))
        self.taken += 1
        self._wake.set()  # the refill loop tops it up, off this path
        return pool.popleft()

    def available(self, key: Hashable) -> int:
        return len(self._pools.get(key, ()))

    # -- refilling (a background task) --------------------------------------------------------

    async def _draw(self, key: Hashable, n: int) -> list[Any]:
        make = self._makers[key]
        return await anyio.to_thread.run_sync(lambda: [make() for _ in range(n)])

    async def fill_once(self) -> bool:
        """Top up every pool below its target by at most one batch; True if anything was drawn."""
        drew = False
        for key in list(self._pools):
            missing = self._targets[key] - len(self._pools[key])
            if missing > 0:
                self._pools[key].extend(await self._draw(key, min(missing, self.batch)))
                drew = True
        return drew

    async def refill_loop(self) -> None:
        """Owned by the system's task group (rule 1)."""
        while True:
            while await self.fill_once():
                pass
            await self._wake.wait()
            self._wake = anyio.Event()

    def ready(self) -> bool:
        return all(len(self._pools[k]) >= self._targets[k] for k in self._pools)
