"""What the service would publish for a stream, through the service's own pure code paths.

Rules:
1. Independent releases (``gaussian``/``laplace``) go through ``mechanisms.calibrate``,
   ``mechanisms.draw`` and ``mechanisms.release_count`` -- the set-mode path of the release
   actor's ``_independent`` -- once per release, with a seeded ``RandomSource`` instead of
   ``OS_RANDOM``. Nothing about a release is computed here by hand.
2. Continual counters (``sqrt``/``tree``) replay a run the way the service journals it: the
   run's state is a ``ReleaseBook`` (the service's book) fed ``CounterStarted``, the
   ``UserErased`` records of each day and every ``CounterStepped``, in journal order; each step
   is ``flippancy.plan_step`` on the exact window membership then ``flippancy.finish_step`` (the
   release actor's ``_step``), and each release ``mechanisms.release_counter`` on the prefix of
   z with the run's noise from ``counters.draw_counter_noise`` (drawn once per run, as
   ``_start_run`` does).
3. The flippancy reduction is independent of the noise, so it runs once per (stream, metric,
   period, W_BOUND) and is shared by every repetition and epsilon (``CounterTrace``); only the
   noise is redrawn per repetition.
4. Releases happen once per day, at the close of the day (after its arrival block); erasures of
   a day reach the run before that day's step (the run starts at step 1: earlier erasures
   concern no run).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from actors.privacy import counters, flippancy, mechanisms
from actors.privacy.noise import RandomSource
from actors.settings import IndependentMechanism
from actors.state import membership, periods
from actors.state.release_book import ReleaseBook
from eval.simulate import Stream, Truth
from journal.events import CounterKind, CounterStarted, Metric, UserErased

LATTICE_BITS = 20  # EngineSettings.lattice_bits default


@dataclass(frozen=True)
class Releases:
    """Per repetition and day: published estimate and 95% interval; the truth they are about."""

    estimate: np.ndarray  # int64 [reps, days]
    lower: np.ndarray
    upper: np.ndarray
    truth: np.ndarray  # int64 [days]: exact count at release time
    counted: np.ndarray  # int64 [days]: what the mechanism counts before noise (truth, or the
    #                      counter's counted total incl. freezing)

    @property
    def error(self) -> np.ndarray:
        return self.estimate - self.truth[None, :]

    @property
    def noise(self) -> np.ndarray:
        return self.estimate - self.counted[None, :]

    def covers_truth(self) -> np.ndarray:
        return (self.lower <= self.truth[None, :]) & (self.truth[None, :] <= self.upper)

    def covers_counted(self) -> np.ndarray:
        return (self.lower <= self.counted[None, :]) & (self.counted[None, :] <= self.upper)


def concat(parts: list[Releases]) -> Releases:
    """Join releases of several periods along the day axis."""
    return Releases(
        np.concatenate([p.estimate for p in parts], axis=1),
        np.concatenate([p.lower for p in parts], axis=1),
        np.concatenate([p.upper for p in parts], axis=1),
        np.concatenate([p.truth for p in parts]),
        np.concatenate([p.counted for p in parts]),
    )


# --------------------------------------------------------------------------------------------
# Independent mechanisms
# --------------------------------------------------------------------------------------------


def independent_releases(
    mechanism: IndependentMechanism, epsilon: float, delta: float, truth: np.ndarray, reps: int, rng: RandomSource
) -> Releases:
    cal = mechanisms.calibrate(mechanism, epsilon, delta)
    t = np.asarray(truth, dtype=np.int64)
    out = np.empty((3, reps, len(t)), dtype=np.int64)
    for r in range(reps):
        for d, count in enumerate(t.tolist()):
            noisy = mechanisms.release_count(cal, count, mechanisms.draw(cal, rng))
            out[:, r, d] = (noisy.estimate, noisy.lower, noisy.upper)
    return Releases(out[0], out[1], out[2], t, t)


# --------------------------------------------------------------------------------------------
# The flippancy reduction (noise-free part of a counter run)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CounterTrace:
    metric: str
    period: periods.Period
    w: int
    z: list[int]  # the service's z_t (ints, from CounterStepped events)
    counted: np.ndarray  # int64 [T]: counted total = prefix sums of z
    truth: np.ndarray  # int64 [T]: exact count at each release
    frozen_steps: np.ndarray  # int64 [T]: CounterStepped.frozen -- the users whose counted
    #                           membership differs from the truth right after step t
    blocked_users: int  # distinct users who had at least one flip blocked in the run

    @property
    def bias(self) -> np.ndarray:
        return self.counted - self.truth


def _started(metric: Metric, period: periods.Period, w: int, window: int, kind: CounterKind) -> CounterStarted:
    # The reduction reads flip_bound, run_id and token_secret; the noise fields are filled for the record
    # (the noise itself is drawn per repetition in ``counter_releases``).
    return CounterStarted(
        run_id=f"eval-{metric}-{period.label}-w{w}",
        metric=metric,
        accounting_period=period.label,
        first_day=period.first_day,
        horizon=period.days,
        window=window,
        kind=kind,
        flip_bound=w,
        noise_multiplier=1.0,
        sensitivity=1.0,
        sensitivity_exact=True,
        sigma=1.0,
        lattice_bits=LATTICE_BITS,
        noise=[],
        epsilon=0.0,
        charge_id="eval",
        budget_remaining=0.0,
        started_at=0.0,
        # The service draws this from OS randomness; any fixed value gives the same blocking.
        token_secret=b"eval-token-secret-0123456789abcd",
    )


def counter_trace(stream: Stream, truth: Truth, metric: Metric, period: periods.Period, w: int) -> CounterTrace:
    """Run the service's flippancy reduction over one accounting period (rule 2)."""
    first = period.first_day - stream.first_day
    T = period.days
    if first < 0 or first + T > stream.n_days:
        raise ValueError(f"{period.label} is not inside the stream")
    window = 1 if metric == "dau" else truth.window
    started = _started(metric, period, w, window, "sqrt")
    book = ReleaseBook()
    seq = itertools.count(1)
    book.apply(next(seq), started)
    members_all = truth.members(metric)
    z, frozen = [], []
    blocked = membership.EMPTY
    for t in range(1, T + 1):
        d = first + t - 1
        if t > 1:  # erasures journaled since the previous step (rule 4)
            for key in truth.erased_by_day[d].tolist():
                book.apply(next(seq), UserErased(erasure_id=f"eval-{d}-{key}", key=int(key), requested_at=0.0))
        run = book.runs[started.run_id]
        proposal = flippancy.plan_step(run, np.flatnonzero(members_all[d]).astype(np.int64))
        blocked = membership.union([blocked, proposal.frozen_keys])
        step = flippancy.finish_step(run, proposal, period.first_day + t - 1, membership.EMPTY, 0)
        book.apply(next(seq), step)
        z.append(step.z)
        frozen.append(step.frozen)
    return CounterTrace(
        metric=metric,
        period=period,
        w=w,
        z=z,
        counted=np.cumsum(np.asarray(z, dtype=np.int64)),
        truth=np.asarray(truth.counts(metric)[first : first + T], dtype=np.int64),
        frozen_steps=np.asarray(frozen, dtype=np.int64),
        blocked_users=len(blocked),
    )


def counter_plan(kind: str, trace: CounterTrace, epsilon_run: float, delta: float) -> counters.CounterPlan:
    return mechanisms.counter_plan(kind, trace.period.days, trace.w, epsilon_run, delta, LATTICE_BITS)


def counter_releases(
    kind: str, trace: CounterTrace, epsilon_run: float, delta: float, reps: int, rng: RandomSource
) -> Releases:
    """``reps`` independent runs of the counter over the trace's period (fresh noise per run)."""
    plan = counter_plan(kind, trace, epsilon_run, delta)
    T = len(trace.z)
    est = np.empty((reps, T), dtype=np.int64)
    lo = np.empty_like(est)
    hi = np.empty_like(est)
    for r in range(reps):
        noise = counters.draw_counter_noise(plan, rng)  # once per run, as _start_run does
        for t in range(1, T + 1):
            noisy = mechanisms.release_counter(plan, trace.z[:t], noise)
            est[r, t - 1], lo[r, t - 1], hi[r, t - 1] = noisy.estimate, noisy.lower, noisy.upper
    return Releases(est, lo, hi, trace.truth, trace.counted)


def counter_noise_rms(plan: counters.CounterPlan) -> float:
    """Root-mean-square over the run's days of the exact noise std of ``counter_value``."""
    var = [counters.counter_noise_std(plan, t) ** 2 for t in range(1, plan.T + 1)]
    return float(np.sqrt(np.mean(var)))
