"""Statistical and exactness tests for ``actors.privacy.noise``.

All randomness here comes from ``SeededSource`` with fixed seeds, so every p-value below is a
fixed number: a failure is a real regression, not bad luck.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest
from scipy import stats

from actors.privacy import noise
from tests.randomness import SeededSource

N_DRAWS = 100_000


def _binned_chisquare(draws: list[int], pmf: Callable[[int], float]) -> float:
    """p-value of a chi-square fit; bins are integers with expected count >= 5, tails pooled."""
    n = len(draws)
    m = 0
    while n * pmf(m + 1) >= 5.0:
        m += 1
    inner = list(range(-m, m + 1))
    probs = [pmf(x) for x in inner]
    tail = max(0.0, (1.0 - math.fsum(probs)) / 2.0)
    counts = Counter(draws)
    observed = [sum(c for x, c in counts.items() if x < -m)]
    observed += [counts.get(x, 0) for x in inner]
    observed += [sum(c for x, c in counts.items() if x > m)]
    expected = [tail, *probs, tail]
    if expected[0] * n < 5.0:  # too little mass to be its own bin: pool the tails into the edges
        observed = [observed[0] + observed[1], *observed[2:-2], observed[-2] + observed[-1]]
        expected = [expected[0] + expected[1], *expected[2:-2], expected[-2] + expected[-1]]
    total = math.fsum(expected)
    f_exp = [n * e / total for e in expected]
    return float(stats.chisquare(observed, f_exp).pvalue)


def _check_moments(draws: list[int], variance: float) -> None:
    n = len(draws)
    mean = math.fsum(draws) / n
    second = math.fsum(x * x for x in draws) / n
    fourth = math.fsum(x**4 for x in draws) / n
    assert abs(mean) <= 5.0 * math.sqrt(variance / n)
    # Var(x^2) = E x^4 - (E x^2)^2 estimates the spread of the sample second moment.
    assert abs(second - variance) <= 5.0 * math.sqrt(max(fourth - second**2, 1e-12) / n)


def _check_tail(draws: list[int], q: int, exact_tail: float) -> None:
    n = len(draws)
    frac = sum(1 for x in draws if abs(x) > q) / n
    se = math.sqrt(exact_tail * (1.0 - exact_tail) / n)
    assert exact_tail <= 0.05
    assert abs(frac - exact_tail) <= 5.0 * se
    assert frac <= 0.05 + 5.0 * se


def _mass_within(q: int, pmf: Callable[[int], float]) -> float:
    return math.fsum(pmf(x) for x in range(-q, q + 1))


@pytest.mark.parametrize(("sigma", "seed"), [(0.5, 11), (2.0, 12), (13.0, 13)])
def test_discrete_gaussian_distribution(sigma: float, seed: int) -> None:
    rng = SeededSource(seed)
    draws = noise.discrete_gaussian_vector(Fraction(sigma) ** 2, N_DRAWS, rng)
    pvalue = _binned_chisquare(draws, lambda x: noise.discrete_gaussian_pmf(x, sigma))
    assert pvalue > 1e-3
    _check_moments(draws, noise.discrete_gaussian_variance(sigma))
    q = noise.discrete_gaussian_quantile(sigma)
    tail = 1.0 - _mass_within(q, lambda x: noise.discrete_gaussian_pmf(x, sigma))
    _check_tail(draws, q, tail)


@pytest.mark.parametrize(("scale", "seed"), [(Fraction(1, 2), 21), (Fraction(10, 3), 22), (Fraction(10), 23)])
def test_discrete_laplace_distribution(scale: Fraction, seed: int) -> None:
    rng = SeededSource(seed)
    draws = [noise.discrete_laplace(scale, rng) for _ in range(N_DRAWS)]
    fscale = float(scale)
    pvalue = _binned_chisquare(draws, lambda x: noise.discrete_laplace_pmf(x, fscale))
    assert pvalue > 1e-3
    _check_moments(draws, noise.discrete_laplace_variance(fscale))
    q = noise.discrete_laplace_quantile(fscale)
    tail = 1.0 - _mass_within(q, lambda x: noise.discrete_laplace_pmf(x, fscale))
    _check_tail(draws, q, tail)


@pytest.mark.parametrize("gamma", [Fraction(0), Fraction(1, 3), Fraction(1), Fraction(5, 2)])
def test_bernoulli_exp_frequency(gamma: Fraction) -> None:
    rng = SeededSource(31 + gamma.numerator)
    hits = sum(noise.bernoulli_exp(gamma, rng) for _ in range(N_DRAWS))
    p = math.exp(-float(gamma))
    if p == 1.0:
        assert hits == N_DRAWS
        return
    assert stats.binomtest(hits, N_DRAWS, p).pvalue > 1e-3


def test_large_sigma_sampler_is_fast_and_centred() -> None:
    """sigma = 4 * 2^20 lattice units (the counter's regime) needs O(1) work per draw."""
    sigma = 4 * 2**20
    draws = noise.discrete_gaussian_vector(Fraction(sigma) ** 2, 5_000, SeededSource(41))
    _check_moments(draws, noise.discrete_gaussian_variance(float(sigma)))


@pytest.mark.parametrize("sigma", [0.3, 0.5, 1.0, 2.0, 13.0, 255.9, 256.0, 700.5])
@pytest.mark.parametrize("coverage", [0.5, 0.95, 0.999])
def test_discrete_gaussian_quantile_is_tight(sigma: float, coverage: float) -> None:
    q = noise.discrete_gaussian_quantile(sigma, coverage)
    pmf = lambda x: noise.discrete_gaussian_pmf(x, sigma)  # noqa: E731
    assert _mass_within(q, pmf) >= coverage
    assert q == 0 or _mass_within(q - 1, pmf) < coverage


@pytest.mark.parametrize("scale", [0.1, 0.5, 10 / 3, 10.0, 1000.0])
@pytest.mark.parametrize("coverage", [0.5, 0.95, 0.999])
def test_discrete_laplace_quantile_is_tight(scale: float, coverage: float) -> None:
    q = noise.discrete_laplace_quantile(scale, coverage)
    pmf = lambda x: noise.discrete_laplace_pmf(x, scale)  # noqa: E731
    assert _mass_within(q, pmf) >= coverage
    assert q == 0 or _mass_within(q - 1, pmf) < coverage


@pytest.mark.parametrize("sigma", [0.2, 0.5, 0.99, 1.0, 3.0])
def test_discrete_gaussian_facts_match_brute_force(sigma: float) -> None:
    xs = range(-60, 61)
    weights = [math.exp(-x * x / (2 * sigma * sigma)) for x in xs]
    z = math.fsum(weights)
    for x, w in zip(xs, weights):
        assert noise.discrete_gaussian_pmf(x, sigma) == pytest.approx(w / z, rel=1e-12, abs=1e-300)
    variance = math.fsum(x * x * w for x, w in zip(xs, weights)) / z
    assert noise.discrete_gaussian_variance(sigma) == pytest.approx(variance, rel=1e-12)
    assert noise.discrete_gaussian_variance(sigma) < sigma**2


def test_discrete_gaussian_variance_approaches_sigma_squared() -> None:
    for sigma in (2.0, 13.0, 4.0 * 2**20):
        assert noise.discrete_gaussian_variance(sigma) == pytest.approx(sigma**2, rel=1e-12)


@pytest.mark.parametrize("scale", [0.3, 1.0, 10 / 3])
def test_discrete_laplace_facts_match_brute_force(scale: float) -> None:
    xs = range(-400, 401)
    weights = [math.exp(-abs(x) / scale) for x in xs]
    z = math.fsum(weights)
    for x, w in zip(xs, weights):
        assert noise.discrete_laplace_pmf(x, scale) == pytest.approx(w / z, rel=1e-12, abs=1e-300)
    variance = math.fsum(x * x * w for x, w in zip(xs, weights)) / z
    assert noise.discrete_laplace_variance(scale) == pytest.approx(variance, rel=1e-12)


def test_os_random_default_path() -> None:
    assert all(type(noise.discrete_gaussian(Fraction(9))) is int for _ in range(5))
    assert all(type(noise.discrete_laplace(Fraction(3, 2))) is int for _ in range(5))
    assert all(type(noise.bernoulli_exp(Fraction(1, 2))) is bool for _ in range(5))
    draws = noise.discrete_gaussian_vector(Fraction(4 * 2**20) ** 2, 3)
    assert len(draws) == 3 and all(type(x) is int for x in draws)
    assert 0 <= noise.OS_RANDOM.randbelow(7) < 7


def test_module_does_not_import_stdlib_random() -> None:
    source = Path(noise.__file__).read_text(encoding="utf-8")
    assert "import random" not in source
    assert "from random" not in source


@pytest.mark.parametrize(
    "call",
    [
        lambda: noise.bernoulli_exp(Fraction(-1)),
        lambda: noise.discrete_laplace(Fraction(0)),
        lambda: noise.discrete_gaussian(Fraction(-1, 2)),
        lambda: noise.discrete_gaussian_vector(Fraction(1), -1),
        lambda: noise.discrete_gaussian_quantile(1.0, 1.0),
        lambda: noise.discrete_laplace_quantile(0.0),
    ],
)
def test_invalid_arguments_are_rejected(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()
