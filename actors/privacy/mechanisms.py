"""From an exact count (or counter state) to a published number: noise, interval, charge.

Rules:
1. Noise is drawn here and nowhere else, only through ``actors.noise`` (exact samplers, OS
   randomness). Nothing in this module takes a seed.
2. Independent mechanisms release one count of user-level sensitivity 1: a user is in a DAU
   day's set at most once and in a MAU window's union at most once, and removing all of one
   user's events changes either count by at most 1.
3. Intervals are those of the exact noise distribution: ``P(|noise| <= q) >= 95%`` from the
   discrete pmf, so ``[estimate - q, estimate + q]`` covers the count with >= 95% (noise only;
   sketch error and counter freezing bias are separate and stated where they apply).
4. With an inexact sketch (``actors.sketches``: theta, hllpp) the interval is widened by the
   sketch's own bounds: noise at 97.5% and the sketch's 3-standard-deviation bounds (~99.7%),
   so by the union bound the widened interval covers the true distinct count with probability
   >= 97.2% > 95% (as far as the library's bounds hold; the evaluation measures their coverage).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

from actors.privacy import accounting, counters, noise
from actors.privacy.accounting import Charge
from actors.privacy.counters import CounterPlan
from actors.privacy.noise import OS_RANDOM, RandomSource
from actors.settings import IndependentMechanism
from journal.events import CounterKind, NoiseParams

COVERAGE = 0.95
SKETCH_NOISE_COVERAGE = 0.975  # rule 4


@dataclass(frozen=True)
class Calibrated:
    """An independent mechanism, ready to draw: its charge and public parameters."""

    mechanism: IndependentMechanism
    epsilon: float
    delta: float
    charge: Charge
    params: NoiseParams


@dataclass(frozen=True)
class Noisy:
    estimate: int
    lower: int
    upper: int


def calibrate(mechanism: IndependentMechanism, epsilon: float, delta: float) -> Calibrated:
    if mechanism == "gaussian":
        sigma = accounting.calibrate_discrete_gaussian_sigma(epsilon, delta)
        return Calibrated(
            mechanism,
            epsilon,
            delta,
            Charge("discrete_gaussian", sigma),
            NoiseParams(distribution="discrete_gaussian", sigma=sigma),
        )
    if mechanism == "laplace":
        # P(x) ~ exp(-epsilon |x|) on the integers is exactly epsilon-DP for sensitivity 1.
        return Calibrated(
            mechanism,
            epsilon,
            0.0,
            Charge("discrete_laplace", epsilon),
            NoiseParams(distribution="discrete_laplace", scale=1.0 / epsilon),
        )
    raise ValueError(f"{mechanism!r} is not an independent (per-release) mechanism")


def draw(cal: Calibrated, rng: RandomSource = OS_RANDOM) -> int:
    if cal.mechanism == "gaussian":
        return noise.discrete_gaussian(Fraction(cal.charge.parameter) ** 2, rng)  # parameter = sigma
    return noise.discrete_laplace(1 / Fraction(cal.epsilon), rng)


def half_width(cal: Calibrated, coverage: float = COVERAGE) -> int:
    return _half_width(cal.mechanism, cal.charge.parameter, cal.epsilon, coverage)


@functools.lru_cache(maxsize=256)
def _half_width(mechanism: IndependentMechanism, sigma: float, epsilon: float, coverage: float) -> int:
    """Data-independent and deterministic (an exact quantile: ~0.5 ms at small epsilon), so it
    is computed once per calibration, not once per release."""
    if mechanism == "gaussian":
        return noise.discrete_gaussian_quantile(sigma, coverage)  # charge parameter = sigma
    return noise.discrete_laplace_quantile(1.0 / epsilon, coverage)


def release_count(cal: Calibrated, count: int, noise_value: int) -> Noisy:
    """Set mode: integer count + integer noise, exact interval (rule 3)."""
    q = half_width(cal)
    estimate = count + noise_value
    return Noisy(estimate, estimate - q, estimate + q)


def release_sketch(cal: Calibrated, estimate: float, lower: float, upper: float, noise_value: int) -> Noisy:
    """An inexact sketch's estimate: rounded + noise, interval widened by the sketch's bounds (rule 4)."""
    q = half_width(cal, SKETCH_NOISE_COVERAGE)
    point = round(estimate) + noise_value
    return Noisy(
        point,
        math.floor(point - q - (estimate - lower)),
        math.ceil(point + q + (upper - estimate)),
    )


# -- continual counters --------------------------------------------------------------------


def counter_plan(
    kind: CounterKind, horizon: int, w: int, epsilon: float, delta: float, lattice_bits: int
) -> CounterPlan:
    """A run over ``horizon`` days, (epsilon, delta)-DP as a whole: one Gaussian event."""
    multiplier = accounting.gaussian_counter_multiplier(epsilon, delta)
    return counters.plan_counter(kind, horizon, w, multiplier, lattice_bits)


def counter_charge(plan: CounterPlan) -> Charge:
    return Charge("gaussian_counter", plan.noise_multiplier)


def counter_params(plan: CounterPlan, step: int) -> NoiseParams:
    return NoiseParams(
        distribution="lattice_gaussian_counter",
        sigma=plan.sigma,
        sensitivity=plan.sensitivity,
        noise_multiplier=plan.noise_multiplier,
        counter=plan.kind,
        horizon_days=plan.T,
        flip_bound=plan.w,
        lattice_bits=plan.lattice_bits,
        step=step,
        sensitivity_exact=plan.sensitivity_exact,
    )


def release_counter(plan: CounterPlan, z: list[int], noise_vector: list[int]) -> Noisy:
    """Noisy prefix sum at t = len(z); interval from the exact noise std (counters rule 5)."""
    t = len(z)
    value = counters.counter_value(plan, z, noise_vector)
    q = counters.counter_interval(plan, t, COVERAGE)
    estimate = round(value)
    return Noisy(estimate, math.floor(value - q), math.ceil(value + q))
