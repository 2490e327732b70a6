"""What the service would publish for a stream, through the service's own pure code paths.

Rules:
1. Independent releases (``gaussian``/``laplace``) go through ``mechanisms.calibrate``,
   ``mechanisms.draw`` and ``mechanisms.release_count`` -- the set-mode path of
   ``release_actor._independent`` -- with a seeded ``RandomSource`` instead of ``OS_RANDOM``.
2. Continual counters (``sqrt``/``tree``) go through the same steps as
   ``release_actor._start_run``/``_step``: one run per accounting period with
   ``mechanisms.counter_plan`` and ``counters.draw_counter_noise`` (drawn once per run); every
   day ``flippancy.plan_step`` on the exact window membership, ``flippancy.adjust_for_erasures``,
   ``flippancy.step_event`` -> a ``CounterStepped`` event applied with ``flippancy.apply_step``,
   then ``mechanisms.release_counter`` on the prefix of z. Erasures journaled between two steps
   reach the run through ``flippancy.apply_erasure`` before the next step, in journal order, as
   ``ReleaseBook.apply`` does for active runs.
3. The flippancy reduction is independent of the noise, so it runs once per (stream, metric,
   period, W_BOUND) and is shared by every repetition and epsilon (``CounterTrace``); only the
   noise is redrawn per repetition.
4. Releases happen once per day, at the close of the day (after its arrival block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actors.privacy import counters, flippancy, mechanisms
from actors.privacy.flippancy import CounterRun
from actors.privacy.noise import RandomSource
from actors.state import membership, periods
from eval.simulate import Stream, Truth
from journal.events import CounterStarted

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
    mechanism: str, epsilon: float, delta: float, truth: np.ndarray, reps: int, rng: RandomSource
) -> Releases:
    cal = mechanisms.calibrate(mechanism, epsilon, delta)
    t = np.asarray(truth, dtype=np.int64)
    noise = np.array([[mechanisms.draw(cal, rng) for _ in range(len(t))] for _ in range(reps)], dtype=np.int64).reshape(
        reps, len(t)
    )
    # ``release_count`` recomputes the exact quantile on every call (~0.5 ms at small epsilon);
    # it is data-independent, so apply it once per calibration and check the vectorised
    # version against the service's function on the first release.
    q = mechanisms.half_width(cal)
    est = t[None, :] + noise
    lo, hi = est - q, est + q
    if reps and len(t):
        ref = mechanisms.release_count(cal, int(t[0]), int(noise[0, 0]))
        assert (ref.estimate, ref.lower, ref.upper) == (est[0, 0], lo[0, 0], hi[0, 0])
    return Releases(est, lo, hi, t, t)


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
    frozen_steps: np.ndarray  # int64 [T]: CounterStepped.frozen (blocked flips at that step)
    mismatched: np.ndarray  # int64 [T]: users whose counted membership differs from the truth
    blocked_users: int  # distinct users who had at least one flip blocked in the run
    exhausted_users: int  # distinct users who used all w flips

    @property
    def bias(self) -> np.ndarray:
        return self.counted - self.truth


def _started(metric: str, period: periods.Period, w: int, window: int, kind: str) -> CounterStarted:
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


def counter_trace(stream: Stream, truth: Truth, metric: str, period: periods.Period, w: int) -> CounterTrace:
    """Run the service's flippancy reduction over one accounting period (rule 2)."""
    first = period.first_day - stream.first_day
    T = period.days
    if first < 0 or first + T > stream.n_days:
        raise ValueError(f"{period.label} is not inside the stream")
    window = 1 if metric == "dau" else truth.window
    run = CounterRun(_started(metric, period, w, window, "sqrt"))
    members_all = truth.members(metric)
    counts = truth.counts(metric)
    frozen, mismatched = [], []
    blocked = membership.EMPTY
    for t in range(1, T + 1):
        d = first + t - 1
        if t > 1:  # erasures journaled since the previous step (the run starts at step 1)
            for key in truth.erased_by_day[d].tolist():
                flippancy.apply_erasure(run, int(key))
        members = np.flatnonzero(members_all[d]).astype(np.int64)
        proposal = flippancy.plan_step(run, members)
        joining = membership.difference(members, run.counted)
        leaving = membership.difference(run.counted, members)
        newly_blocked = membership.union([joining[run.flips_of(joining) >= w], leaving[run.flips_of(leaving) >= w]])
        blocked = membership.union([blocked, newly_blocked])
        entered, left, consumed = flippancy.adjust_for_erasures(run, proposal, membership.EMPTY, 0)
        step = flippancy.step_event(run, period.first_day + t - 1, entered, left, consumed, proposal.frozen)
        flippancy.apply_step(run, step)
        frozen.append(step.frozen)
        diff = len(membership.difference(members, run.counted)) + len(membership.difference(run.counted, members))
        mismatched.append(diff)
    z = list(run.z)
    return CounterTrace(
        metric=metric,
        period=period,
        w=w,
        z=z,
        counted=np.cumsum(np.asarray(z, dtype=np.int64)),
        truth=np.asarray(counts[first : first + T], dtype=np.int64),
        frozen_steps=np.asarray(frozen, dtype=np.int64),
        mismatched=np.asarray(mismatched, dtype=np.int64),
        blocked_users=len(blocked),
        exhausted_users=int((run.flip_counts >= w).sum()),
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
