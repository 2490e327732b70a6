"""Privacy accounting for the DAU/MAU releases: tight (PLD) composition of per-release charges.

Pure module: no I/O, no clocks, no randomness. It turns "what has been released this period" into
"how much (epsilon, delta) has been spent", and calibrates the noise of the next release.

Rules
-----
1. A release is described by a :class:`Charge`: the mechanism that produced it and the one number
   that fixes its privacy loss (``parameter``). The unit of privacy is one *user* (user-level DP):
   every mechanism here is applied to a count whose user-level L1/L2 sensitivity is 1 (the callers
   guarantee this by contributing each user at most once per count).

   ===================  ====================================  ================================
   mechanism            parameter                             accounted with
   ===================  ====================================  ================================
   discrete_gaussian    sigma of N_Z(0, sigma^2) (CKS 2020)   exact discrete Gaussian PLD
   discrete_laplace     a in P(x) ~ exp(-a|x|)  (= its eps)   exact discrete Laplace PLD
   gaussian_counter     noise multiplier sigma / Delta_2 of   continuous Gaussian PLD (one run
                        one whole run of a continual counter  of the counter is one event)
   ===================  ====================================  ================================

2. The spend of a period is the *tight* composition of all its charges, computed with Google's
   ``dp_accounting`` privacy-loss-distribution (PLD) machinery -- never the sum of per-release
   epsilons. ``compose_epsilon(charges, delta)`` is the smallest epsilon such that the adaptive
   composition of all charges is (epsilon, delta)-DP, up to the PLD discretisation, which is
   rounded *pessimistically* (the library default) so the reported value is an upper bound.
3. A release is admitted only if the composition *including it* stays within the cap
   (:func:`fits`); the check is ``<=``, so a sequence landing exactly on the cap is admitted.
4. No charges compose to epsilon 0 and delta 0.

Theory of operation
-------------------
A PLD is the distribution of the privacy loss ``L = ln(P(o) / Q(o))`` for ``o ~ P`` (P, Q the
output distributions on a worst-case pair of neighbouring datasets). For any epsilon,
``delta(epsilon) = E[(1 - exp(epsilon - L))_+]`` (the hockey-stick divergence), and the PLD of an
adaptive composition is the *convolution* of the PLDs. Epsilon(delta) of the composition is read
off the convolved distribution, which is exact where summing epsilons (basic composition) or
even the advanced composition theorem are loose: k Gaussian releases grow like sqrt(k), not k.

Computation, for speed (``compose_epsilon`` runs on every release request and ``GET /budget``):

* Charges are grouped into a canonical, sorted tuple of ``(charge, count)``; that tuple is the
  memoisation key at every level below, so the same multiset of charges always yields the same
  float, whatever order the caller listed them in.
* One PLD is built per distinct charge (``_single_pld``), self-composed ``count`` times per group
  (``_group_pld``: one FFT power instead of ``count`` convolutions), then the groups are convolved
  (``_composed_pld``). This holds for ``gaussian_counter`` too. (k Gaussians of multiplier m are
  exactly one Gaussian of multiplier m / sqrt(k) -- PLDAccountant uses that for a
  ``SelfComposedDpEvent(GaussianDpEvent)`` -- but building that wide PLD from scratch is slower
  than the FFT power, and the two agree to ~1e-7 in epsilon.)
* Epsilon/delta answers are memoised per (key, delta) / (key, epsilon); PLD objects are memoised
  with small caches because a dense PLD is ~1 MB.

Calibration:

* ``discrete_gaussian``: sigma comes from the analytic Gaussian calibration (Balle-Wang 2018,
  ``dp_accounting.get_sigma_gaussian``), which is exact for the *continuous* Gaussian. The noise we
  add is the *discrete* Gaussian, so we then check epsilon(delta) of the exact discrete-Gaussian
  PLD at that sigma against the target and, should it exceed it (discretisation or the
  discrete/continuous gap), raise sigma by bisection to the smallest value that passes.
* ``gaussian_counter``: one run over a horizon of T days is one Gaussian event, so its multiplier
  is ``get_sigma_gaussian(epsilon_run, delta)``; by default ``epsilon_run`` is what T independent
  daily discrete-Gaussian releases would spend (``default_counter_epsilon``).
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from journal.events import AccountingMechanism

if TYPE_CHECKING:  # imported lazily below: dp_accounting pulls in scipy (~2 s), which the
    # service's boot path (replay, snapshot restore) never needs -- restart-to-ready matters.
    from dp_accounting import dp_event
    from dp_accounting.pld import privacy_loss_distribution as pld_lib


def _pld_lib() -> Any:
    from dp_accounting.pld import privacy_loss_distribution

    return privacy_loss_distribution


def _dp_event() -> Any:
    from dp_accounting import dp_event

    return dp_event


def _sigma_gaussian(epsilon: float, delta: float) -> float:
    from dp_accounting import get_sigma_gaussian

    return float(get_sigma_gaussian(epsilon, delta))


def warm_up() -> None:
    """Import dp-accounting ahead of the first quote (the system calls this in a worker thread)."""
    _pld_lib()


__all__ = [
    "VALUE_DISCRETIZATION_INTERVAL",
    "Charge",
    "Mechanism",
    "calibrate_discrete_gaussian_sigma",
    "clear_caches",
    "compose_delta",
    "compose_epsilon",
    "default_counter_epsilon",
    "fits",
    "gaussian_counter_multiplier",
    "naive_epsilon",
    "releases_that_fit",
    "to_composed_dp_event",
    "to_dp_event",
]

Mechanism = AccountingMechanism  # the journal records it (BudgetCharged.mechanism)
_MECHANISMS: frozenset[str] = frozenset(get_args(Mechanism))

# Width of the privacy-loss grid. Same as the library default (and PLDAccountant's), so our numbers
# and an accountant fed with `to_dp_event` agree. Pessimistic rounding moves every loss *up* to the
# grid, so the composed epsilon overshoots the truth by roughly at most (number of charges) * 1e-4.
VALUE_DISCRETIZATION_INTERVAL: float = 1e-4

# Cache sizes. Answers (floats) are cheap, keep many; PLDs are dense arrays of 1e4-1e6 floats.
_ANSWER_CACHE = 4096
_SINGLE_PLD_CACHE = 128
_GROUP_PLD_CACHE = 64
_COMPOSED_PLD_CACHE = 16

# Bisection for the discrete-Gaussian sigma stops when the bracket is this tight (relative).
_SIGMA_RTOL = 1e-9


@dataclass(frozen=True)
class Charge:
    """One release (or one whole continual-counter run) to be accounted for.

    ``parameter``: discrete_gaussian -> sigma; discrete_laplace -> epsilon (the a in exp(-a|x|));
    gaussian_counter -> noise multiplier sigma / Delta_2.
    ``sensitivity``: for the two discrete mechanisms the integer L1 sensitivity of the count (always
    1 in this service; a larger value is honoured, never ignored, so it can only *raise* the
    accounted loss). For gaussian_counter it must be 1.0, because ``parameter`` is already the
    noise multiplier.
    """

    mechanism: Mechanism
    parameter: float
    sensitivity: float = 1.0

    def __post_init__(self) -> None:
        # Validate eagerly: a malformed charge must never reach the ledger, where it would make
        # every later composition fail (or, worse, under-count).
        if self.mechanism not in _MECHANISMS:
            raise ValueError(f"unknown mechanism {self.mechanism!r}; expected one of {sorted(_MECHANISMS)}")
        parameter = float(self.parameter)
        sensitivity = float(self.sensitivity)
        if not (math.isfinite(parameter) and parameter > 0):
            raise ValueError(f"{self.mechanism}: parameter must be finite and > 0, got {self.parameter!r}")
        if self.mechanism == "gaussian_counter":
            if sensitivity != 1.0:
                raise ValueError("gaussian_counter: parameter is already sigma/Delta_2; sensitivity must be 1.0")
        elif not (math.isfinite(sensitivity) and sensitivity >= 1 and sensitivity.is_integer()):
            raise ValueError(f"{self.mechanism}: sensitivity must be a positive integer, got {self.sensitivity!r}")
        # Normalise numpy scalars etc. to float so equal charges hash, sort and print alike.
        object.__setattr__(self, "parameter", parameter)
        object.__setattr__(self, "sensitivity", sensitivity)


# A multiset of charges in canonical order: the memoisation key for everything below.
_GroupKey = tuple[tuple[Charge, int], ...]


def _sort_key(charge: Charge) -> tuple[str, float, float]:
    return (charge.mechanism, charge.parameter, charge.sensitivity)


def _group(charges: Iterable[Charge]) -> _GroupKey:
    """Canonical (sorted) multiset of charges; order of releases does not change the composition."""
    counts: collections.Counter[Charge] = collections.Counter()
    for charge in charges:
        if not isinstance(charge, Charge):
            raise TypeError(f"expected Charge, got {type(charge).__name__}")
        counts[charge] += 1
    return tuple(sorted(counts.items(), key=lambda item: _sort_key(item[0])))


def _check_delta(delta: float) -> float:
    delta = float(delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return delta


def _check_epsilon(epsilon: float, name: str = "epsilon") -> float:
    epsilon = float(epsilon)
    if not (math.isfinite(epsilon) and epsilon >= 0.0):
        raise ValueError(f"{name} must be finite and >= 0, got {epsilon!r}")
    return epsilon


# --------------------------------------------------------------------------------------------
# PLD construction (memoised)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=_SINGLE_PLD_CACHE)
def _single_pld(charge: Charge) -> pld_lib.PrivacyLossDistribution:
    """The exact PLD of one release, pessimistically discretised (an upper bound on its loss)."""
    if charge.mechanism == "discrete_gaussian":
        # Exact PLD of the discrete Gaussian N_Z(0, sigma^2) with integer sensitivity; its noise is
        # truncated where the remaining mass is < 1e-30, far below any delta we use.
        return _pld_lib().from_discrete_gaussian_mechanism(
            charge.parameter,
            sensitivity=int(charge.sensitivity),
            value_discretization_interval=VALUE_DISCRETIZATION_INTERVAL,
        )
    if charge.mechanism == "discrete_laplace":
        # P(x) ~ exp(-a|x|): the privacy loss takes only the values +-a*sensitivity, so this is
        # exactly (a*sensitivity)-DP per release, and the PLD captures how those losses add up.
        return _pld_lib().from_discrete_laplace_mechanism(
            charge.parameter,
            sensitivity=int(charge.sensitivity),
            value_discretization_interval=VALUE_DISCRETIZATION_INTERVAL,
        )
    # gaussian_counter: the whole run of the matrix mechanism is one Gaussian release of a vector
    # with L2 sensitivity Delta_2 and noise sigma; only sigma / Delta_2 matters.
    return _gaussian_pld(charge.parameter)


def _gaussian_pld(noise_multiplier: float) -> pld_lib.PrivacyLossDistribution:
    return _pld_lib().from_gaussian_mechanism(
        noise_multiplier,
        sensitivity=1,
        value_discretization_interval=VALUE_DISCRETIZATION_INTERVAL,
    )


@functools.lru_cache(maxsize=_GROUP_PLD_CACHE)
def _group_pld(charge: Charge, count: int) -> pld_lib.PrivacyLossDistribution:
    """PLD of ``count`` adaptive releases of the same charge (privacy losses add, PLDs convolve)."""
    single = _single_pld(charge)
    return single if count == 1 else single.self_compose(count)


@functools.lru_cache(maxsize=_COMPOSED_PLD_CACHE)
def _composed_pld(key: _GroupKey) -> pld_lib.PrivacyLossDistribution:
    """Convolution of the group PLDs, in the canonical order of ``key`` (non-empty)."""
    (first_charge, first_count), *rest = key
    composed = _group_pld(first_charge, first_count)
    for charge, count in rest:
        # Default tail_mass_truncation (1e-15) moves truncated right-tail mass to the infinity
        # mass, i.e. it is counted as a privacy failure: still an upper bound.
        composed = composed.compose(_group_pld(charge, count))
    return composed


@functools.lru_cache(maxsize=_ANSWER_CACHE)
def _epsilon_for_key(key: _GroupKey, delta: float) -> float:
    if not key:
        return 0.0
    return float(_composed_pld(key).get_epsilon_for_delta(delta))


@functools.lru_cache(maxsize=_ANSWER_CACHE)
def _delta_for_key(key: _GroupKey, epsilon: float) -> float:
    if not key:
        return 0.0
    return float(_composed_pld(key).get_delta_for_epsilon(epsilon))


def clear_caches() -> None:
    """Drop every memoised PLD and answer (for benchmarks and tests; never needed for correctness)."""
    for cached in (
        _single_pld,
        _group_pld,
        _composed_pld,
        _epsilon_for_key,
        _delta_for_key,
        _calibrate_discrete_gaussian_sigma,
        _gaussian_counter_multiplier,
    ):
        cached.cache_clear()


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def _discrete_gaussian_epsilon(sigma: float, delta: float) -> float:
    return _epsilon_for_key(_group([Charge("discrete_gaussian", sigma)]), delta)


@functools.lru_cache(maxsize=256)
def _calibrate_discrete_gaussian_sigma(epsilon: float, delta: float) -> float:
    # Step 1: the analytic Gaussian sigma (Balle-Wang 2018) -- exact for the continuous Gaussian
    # and much smaller than the classical sqrt(2 ln(1.25/delta)) / epsilon.
    sigma = _sigma_gaussian(epsilon, delta)
    if _discrete_gaussian_epsilon(sigma, delta) <= epsilon:
        return sigma
    # Step 2: the noise actually drawn is the discrete Gaussian, and its exact PLD (pessimistically
    # discretised) says sigma is a hair too small. Epsilon(delta) decreases in sigma, so bracket and
    # bisect for the smallest sigma that meets the target; always return the *passing* end.
    lo, hi = sigma, sigma * 1.001
    while _discrete_gaussian_epsilon(hi, delta) > epsilon:
        lo, hi = hi, hi * 2.0
        if hi > 1e12:
            raise ValueError(f"cannot calibrate a discrete Gaussian to epsilon={epsilon}, delta={delta}")
    while hi - lo > _SIGMA_RTOL * hi:
        mid = 0.5 * (lo + hi)
        if _discrete_gaussian_epsilon(mid, delta) <= epsilon:
            hi = mid
        else:
            lo = mid
    return hi


def calibrate_discrete_gaussian_sigma(epsilon: float, delta: float) -> float:
    """Smallest sigma (to 1e-9 relative) whose discrete Gaussian release is (epsilon, delta)-DP.

    Starts from the analytic Gaussian sigma and verifies it against the exact discrete-Gaussian PLD;
    only raises it if that check fails.
    """
    epsilon = _check_epsilon(epsilon)
    if epsilon == 0.0:
        raise ValueError("epsilon must be > 0 to calibrate noise")
    return _calibrate_discrete_gaussian_sigma(epsilon, _check_delta(delta))


@functools.lru_cache(maxsize=256)
def _gaussian_counter_multiplier(epsilon: float, delta: float) -> float:
    return _sigma_gaussian(epsilon, delta)


def gaussian_counter_multiplier(epsilon: float, delta: float) -> float:
    """Noise multiplier sigma / Delta_2 making one counter run (epsilon, delta)-DP (analytic Gaussian).

    The counter's noise is a discrete Gaussian on a 2^-b lattice (b = 20 by default), one
    coordinate per row of R. Canonne-Kamath-Steinke bound the multivariate discrete Gaussian's
    privacy by the continuous Gaussian's up to a gap of order exp(-2 pi^2 sigma^2 4^b): zero in
    double precision at b = 20, but an approximation in principle -- which is why the counter's
    lattice rounding slack is added to its sensitivity and this gap is named in the README.
    """
    epsilon = _check_epsilon(epsilon)
    if epsilon == 0.0:
        raise ValueError("epsilon must be > 0 to calibrate noise")
    return _gaussian_counter_multiplier(epsilon, _check_delta(delta))


def default_counter_epsilon(T: int, epsilon_per_release: float, delta: float) -> float:
    """Run-level epsilon for a counter over T days: the tight spend of T independent daily releases.

    That is, epsilon(delta) of T self-composed discrete-Gaussian releases each calibrated to
    ``epsilon_per_release`` -- so switching to the counter never spends more than the daily
    releases it replaces, and it buys lower error at equal budget.
    """
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    sigma = calibrate_discrete_gaussian_sigma(epsilon_per_release, delta)
    return compose_epsilon([Charge("discrete_gaussian", sigma)] * T, delta)


# --------------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------------


def compose_epsilon(charges: Sequence[Charge], delta: float) -> float:
    """Tight epsilon(delta) of the adaptive composition of ``charges`` (0.0 for none).

    An upper bound (pessimistic PLD); may be ``inf`` if delta is below the mass that no finite
    epsilon covers.
    """
    return _epsilon_for_key(_group(charges), _check_delta(delta))


def compose_delta(charges: Sequence[Charge], epsilon: float) -> float:
    """Tight delta(epsilon) of the adaptive composition of ``charges`` (0.0 for none)."""
    return _delta_for_key(_group(charges), _check_epsilon(epsilon))


def naive_epsilon(charges: Sequence[Charge], per_charge_epsilon: Sequence[float]) -> float:
    """Basic composition: the plain sum of per-charge epsilons. For comparison only, never for gating.

    (Basic composition also sums the deltas; this returns only the epsilon part.)
    """
    if len(charges) != len(per_charge_epsilon):
        raise ValueError(f"{len(charges)} charges but {len(per_charge_epsilon)} epsilons")
    # fsum: exact rounding, so e.g. ten 0.3's are exactly 3.0 and compare cleanly against a cap.
    return math.fsum(_check_epsilon(e, "per-charge epsilon") for e in per_charge_epsilon)


def fits(charges: Sequence[Charge], new: Charge, cap_epsilon: float, delta: float) -> tuple[bool, float]:
    """Would ``new`` keep the period within ``cap_epsilon``? Returns (fits, composed epsilon incl. new)."""
    cap_epsilon = _check_epsilon(cap_epsilon, "cap_epsilon")
    composed = compose_epsilon([*charges, new], delta)
    return composed <= cap_epsilon, composed


def releases_that_fit(
    charge: Charge, cap_epsilon: float, delta: float, limit: int = 400, already: Sequence[Charge] = ()
) -> int:
    """Largest n <= limit with compose_epsilon(already + [charge] * n, delta) <= cap_epsilon
    (0 if none; -1 if ``already`` alone exceeds the cap).

    Epsilon of n identical releases increases with n, so: double until over the cap, then bisect.
    """
    cap_epsilon = _check_epsilon(cap_epsilon, "cap_epsilon")
    delta = _check_delta(delta)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative int, got {limit!r}")
    if already and compose_epsilon(already, delta) > cap_epsilon:
        return -1

    def ok(n: int) -> bool:
        if not already:
            return n == 0 or _epsilon_for_key(((charge, n),), delta) <= cap_epsilon
        return compose_epsilon([*already, *[charge] * n], delta) <= cap_epsilon

    good, bad = 0, 1
    while bad <= limit and ok(bad):
        good, bad = bad, bad * 2
    if bad > limit:
        if ok(limit):
            return limit
        bad = limit
    # Invariant: ok(good) and not ok(bad).
    while bad - good > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


# --------------------------------------------------------------------------------------------
# dp_accounting events (for logs, audits and cross-checks)
# --------------------------------------------------------------------------------------------


def to_dp_event(charge: Charge) -> dp_event.DpEvent:
    """The dp_accounting event describing ``charge``.

    gaussian_counter -> ``GaussianDpEvent(multiplier)`` and discrete_laplace ->
    ``DiscreteLaplaceDpEvent(a, sensitivity)`` are exact: a PLDAccountant fed with them reproduces
    this module's numbers. dp_accounting has no discrete-Gaussian event, so discrete_gaussian maps
    to the closest honest description, ``GaussianDpEvent(sigma / sensitivity)``; an accountant fed
    with it uses the *continuous* Gaussian PLD, which differs slightly (in the third or fourth
    decimal of epsilon) from the exact discrete-Gaussian PLD this module composes.
    """
    if charge.mechanism == "discrete_laplace":
        return _dp_event().DiscreteLaplaceDpEvent(noise_parameter=charge.parameter, sensitivity=int(charge.sensitivity))
    if charge.mechanism == "discrete_gaussian":
        return _dp_event().GaussianDpEvent(noise_multiplier=charge.parameter / charge.sensitivity)
    return _dp_event().GaussianDpEvent(noise_multiplier=charge.parameter)


def to_composed_dp_event(charges: Sequence[Charge]) -> dp_event.DpEvent:
    """One event for a whole ledger: grouped, in canonical order, as ``SelfComposedDpEvent`` s.

    PLDAccountant self-composes a discrete-Laplace ``SelfComposedDpEvent`` exactly as this module
    does, and a Gaussian one in closed form (multiplier / sqrt(count)), which agrees with this
    module's FFT self-composition to ~1e-7 in epsilon.
    """
    return _dp_event().ComposedDpEvent(
        [_dp_event().SelfComposedDpEvent(to_dp_event(charge), count) for charge, count in _group(charges)]
    )
