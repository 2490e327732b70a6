"""Tests for ``actors.privacy.counters``: factorisations, alternating sensitivity, exact released values.

Every expected value is recomputed here independently of the module (Fractions, brute force,
explicit matrices); randomness comes from ``SeededSource`` or a seeded numpy generator.
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.privacy import counters
from actors.privacy.counters import CounterKind
from tests.randomness import SeededSource

KINDS: tuple[CounterKind, ...] = ("sqrt", "tree")


def _ones(T: int) -> np.ndarray:
    return np.tril(np.ones((T, T)))


def _alternating(T: int, positions: tuple[int, ...]) -> np.ndarray:
    v = np.zeros(T)
    for j, q in enumerate(positions):
        v[q] = 1.0 if j % 2 == 0 else -1.0
    return v


def _brute_sensitivity(R: np.ndarray, w: int) -> float:
    T = R.shape[1]
    best = 0.0
    for k in range(1, min(w, T) + 1):
        for positions in itertools.combinations(range(T), k):
            best = max(best, float(np.linalg.norm(R @ _alternating(T, positions))))
    return best


@functools.cache
def _sensitivity(kind: CounterKind, T: int, w: int) -> tuple[float, bool]:
    return counters.alternating_sensitivity(counters.factorization(kind, T)[1], w)


# ------------------------------------------------------------------------------------------
# Factorisations
# ------------------------------------------------------------------------------------------


def test_sqrt_coefficients_are_central_binomials() -> None:
    c = counters.sqrt_coefficients(80)
    assert len(c) == 80 and c[0] == 1
    for k in range(1, 80):
        assert c[k] == Fraction(math.comb(2 * k, k), 4**k)
        assert c[k] == c[k - 1] * Fraction(2 * k - 1, 2 * k)
        assert c[k].denominator & (c[k].denominator - 1) == 0  # dyadic
    # (c * c)_k = 1: the exact identity behind R R = A.
    assert all(sum(c[j] * c[k - j] for j in range(k + 1)) == 1 for k in range(80))


@pytest.mark.parametrize("T", [1, 7, 31, 365])
def test_sqrt_factorisation_squares_to_prefix_sums(T: int) -> None:
    L, R = counters.factorization("sqrt", T)
    assert L.shape == R.shape == (T, T) and L.dtype == R.dtype == np.float64
    assert np.array_equal(L, R) and np.array_equal(R, np.tril(R))
    assert np.allclose(L @ R, _ones(T), rtol=0, atol=1e-12)


@pytest.mark.parametrize("T", [1, 2, 3, 7, 8, 31, 32, 365])
def test_tree_factorisation(T: int) -> None:
    L, R = counters.factorization("tree", T)
    rows = sum(T >> level for level in range(T.bit_length()))
    assert R.shape == (rows, T) and L.shape == (T, rows)
    assert np.array_equal(L @ R, _ones(T))
    ends = []
    for row in R:
        (cols,) = np.nonzero(row)
        size, end = len(cols), int(cols[-1]) + 1
        assert size & (size - 1) == 0 and end % size == 0  # aligned dyadic interval
        assert np.array_equal(cols, np.arange(end - size, end))
        ends.append(end)
    assert ends == sorted(ends)  # rows complete in order
    for t in range(1, T + 1):
        used = np.nonzero(L[t - 1])[0]
        assert len(used) == t.bit_count()
        assert all(ends[r] <= t for r in used)  # online: only complete intervals


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        counters.factorization("dyadic", 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        counters.sqrt_coefficients(0)
    with pytest.raises(ValueError):
        counters.alternating_sensitivity(np.eye(3), 0)
    with pytest.raises(ValueError):
        counters.plan_counter("sqrt", 10, 2, 0.0)
    with pytest.raises(ValueError):
        counters.plan_counter("tree", 10, 0, 1.0)
    plan = counters.plan_counter("sqrt", 5, 2, 1.0)
    with pytest.raises(ValueError):
        counters.counter_value(plan, [], [0] * plan.rows)
    with pytest.raises(ValueError):
        counters.counter_value(plan, [1] * 6, [0] * plan.rows)
    with pytest.raises(ValueError):
        counters.counter_value(plan, [1], [0] * (plan.rows - 1))
    with pytest.raises(ValueError):
        counters.counter_noise_std(plan, 6)
    with pytest.raises(TypeError):
        counters.counter_value(plan, [1.0, 2.0], [0] * plan.rows)  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------
# Alternating sensitivity
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("w", [1, 2, 3, 4])
def test_sensitivity_matches_brute_force(kind: CounterKind, w: int) -> None:
    for T in range(1, 13):
        R = counters.factorization(kind, T)[1]
        value, exact = counters.alternating_sensitivity(R, w)
        assert exact
        assert value == pytest.approx(_brute_sensitivity(R, w), rel=1e-12, abs=1e-12)


def test_sensitivity_matches_brute_force_on_arbitrary_matrices() -> None:
    gen = np.random.default_rng(7)
    for _ in range(60):
        T, rows, w = int(gen.integers(1, 10)), int(gen.integers(1, 14)), int(gen.integers(1, 5))
        R = gen.normal(size=(rows, T))
        value, exact = counters.alternating_sensitivity(R, w)
        assert exact
        assert value == pytest.approx(_brute_sensitivity(R, w), rel=1e-12, abs=1e-12)


def test_known_values_at_one_year() -> None:
    value, exact = _sensitivity("sqrt", 365, 2)
    assert exact and round(value, 3) == 2.183
    value, exact = _sensitivity("tree", 365, 2)
    assert exact and value == pytest.approx(4.0, abs=1e-12)  # 9 + 7 nodes, levels 0..8


def test_exact_for_small_horizon_at_w4() -> None:
    for kind in KINDS:
        assert _sensitivity(kind, 31, 4)[1]
    assert _sensitivity("sqrt", 400, 2)[1] and _sensitivity("tree", 400, 2)[1]


@pytest.mark.parametrize("kind", KINDS)
def test_out_of_budget_returns_upper_bound(kind: CounterKind, monkeypatch: pytest.MonkeyPatch) -> None:
    R = counters.factorization(kind, 60)[1]
    true, exact = counters.alternating_sensitivity(R, 4)
    assert exact
    monkeypatch.setattr(counters, "_SEARCH_BUDGET", 5_000)
    bound, exact = counters.alternating_sensitivity(R, 4)
    assert not exact
    assert true <= bound + 1e-12
    assert bound <= 2 * counters.alternating_sensitivity(R, 2)[0] + 1e-12  # pairing bound


@settings(max_examples=150, deadline=None)
@given(data=st.data(), kind=st.sampled_from(KINDS), T=st.integers(1, 48), w=st.integers(1, 4))
def test_random_alternating_vectors_respect_sensitivity(data: st.DataObject, kind: CounterKind, T: int, w: int) -> None:
    k = data.draw(st.integers(1, min(w, T)))
    positions = tuple(sorted(data.draw(st.sets(st.integers(0, T - 1), min_size=k, max_size=k))))
    R = counters.factorization(kind, T)[1]
    assert np.linalg.norm(R @ _alternating(T, positions)) <= _sensitivity(kind, T, w)[0] + 1e-9


@settings(max_examples=100, deadline=None)
@given(positions=st.sets(st.integers(0, 364), min_size=1, max_size=2))
def test_random_alternating_vectors_at_one_year(positions: set[int]) -> None:
    R = counters.factorization("sqrt", 365)[1]
    v = _alternating(365, tuple(sorted(positions)))
    assert np.linalg.norm(R @ v) <= _sensitivity("sqrt", 365, 2)[0] + 1e-9


# ------------------------------------------------------------------------------------------
# Plans and released values
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_plan_fields(kind: CounterKind) -> None:
    plan = counters.plan_counter(kind, 30, 2, 1.5, lattice_bits=12)
    value, exact = _sensitivity(kind, 30, 2)
    slack = math.sqrt(30) * 2.0**-12 if kind == "sqrt" else 0.0
    assert (plan.kind, plan.T, plan.w, plan.lattice_bits) == (kind, 30, 2, 12)
    assert plan.sensitivity == pytest.approx(value + slack, rel=1e-15)
    assert plan.sensitivity_exact == exact
    assert plan.sigma == pytest.approx(1.5 * plan.sensitivity, rel=1e-15)
    assert plan.rows == counters.factorization(kind, 30)[1].shape[0]


def _reference_value(plan: counters.CounterPlan, z: list[int], nz: list[int]) -> Fraction:
    """(L (round(R z) + Z))_t from the definitions, with Fractions and explicit rounding."""
    t, scale = len(z), Fraction(1, 2**plan.lattice_bits)
    L, R = counters.factorization(plan.kind, plan.T)
    if plan.kind == "tree":  # R z is integral, so rounding is the identity
        used = np.nonzero(L[t - 1])[0]
        node = [sum(z[i] for i in np.nonzero(R[r])[0]) for r in used]
        return sum(node) + sum(nz[r] for r in used) * scale
    c = counters.sqrt_coefficients(plan.T)
    x = [sum(c[j - i] * z[i] for i in range(j + 1)) for j in range(t)]
    lattice = [math.floor(xj / scale + Fraction(1, 2)) for xj in x]
    return sum(c[t - 1 - j] * (lattice[j] + nz[j]) for j in range(t)) * scale


def _test_vectors(T: int, rows: int, seed: int) -> tuple[list[int], list[int]]:
    rng = SeededSource(seed)
    z = [rng.randbelow(7) - 3 for _ in range(T)]
    nz = [rng.randbelow(2_000_001) - 1_000_000 for _ in range(rows)]
    return z, nz


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bits", [0, 5, 20])
def test_counter_value_matches_reference(kind: CounterKind, bits: int) -> None:
    plan = counters.plan_counter(kind, 24, 2, 1.0, lattice_bits=bits)
    z, nz = _test_vectors(plan.T, plan.rows, seed=100 + bits)
    for t in range(1, plan.T + 1):
        assert counters.counter_value(plan, z[:t], nz) == _reference_value(plan, z[:t], nz)


@pytest.mark.parametrize("kind", KINDS)
def test_counter_value_is_prefix_sum_plus_l_times_noise_when_exact(kind: CounterKind) -> None:
    # With 2^b a multiple of every 4^j, j < T, R z is on the lattice and nothing is rounded.
    T = 16
    plan = counters.plan_counter(kind, T, 2, 1.0, lattice_bits=2 * T)
    z, nz = _test_vectors(T, plan.rows, seed=7)
    L = counters.factorization(kind, T)[0]
    c = counters.sqrt_coefficients(T)
    for t in range(1, T + 1):
        if kind == "sqrt":
            lz = sum(c[t - 1 - j] * nz[j] for j in range(t))
        else:
            lz = Fraction(sum(nz[r] for r in np.nonzero(L[t - 1])[0]))
        expected = sum(z[:t]) + lz / 2**plan.lattice_bits
        assert counters.counter_value(plan, z[:t], nz) == expected


@pytest.mark.parametrize("bits", [0, 3, 20])
def test_rounding_error_bound_without_noise(bits: int) -> None:
    # |sum_j c_{t-1-j} (round(x_j) - x_j)| <= 2^-b / 2 * sum_{k<t} c_k = t c_t 2^-b, using the
    # identity sum_{k<t} c_k = 2 t c_t.
    T = 40
    c = counters.sqrt_coefficients(T + 1)
    assert all(sum(c[:t]) == 2 * t * c[t] for t in range(1, T + 1))
    z, _ = _test_vectors(T, 0, seed=9)
    for kind in KINDS:
        plan = counters.plan_counter(kind, T, 2, 1.0, lattice_bits=bits)
        zero = [0] * plan.rows
        for t in range(1, T + 1):
            error = abs(counters.counter_value(plan, z[:t], zero) - sum(z[:t]))
            assert error <= (t * c[t] / 2**bits if kind == "sqrt" else 0)


@pytest.mark.parametrize("kind", KINDS)
def test_counter_value_is_online(kind: CounterKind) -> None:
    T = 33
    plan = counters.plan_counter(kind, T, 2, 1.0)
    z, nz = _test_vectors(T, plan.rows, seed=11)
    z2, nz2 = _test_vectors(T, plan.rows, seed=12)
    L = counters.factorization(kind, T)[0]
    for t in range(1, T + 1):
        future = z[:t] + z2[t:]
        # Noise of rows not used on day t (sqrt: rows > t; tree: intervals not in row t of L,
        # in particular every interval ending after t) may change freely.
        used = set(np.nonzero(L[t - 1])[0])
        other = [nz[r] if r in used else nz2[r] for r in range(plan.rows)]
        assert counters.counter_value(plan, future[:t], other) == counters.counter_value(plan, z[:t], nz)


# ------------------------------------------------------------------------------------------
# Noise
# ------------------------------------------------------------------------------------------


def test_draw_counter_noise_scale() -> None:
    plan = counters.plan_counter("sqrt", 365, 2, 1.0)
    rng = SeededSource(5)
    draws = [x for _ in range(40) for x in counters.draw_counter_noise(plan, rng)]
    assert len(draws) == 40 * plan.rows and all(type(x) is int for x in draws)
    values = [math.ldexp(x, -plan.lattice_bits) for x in draws]
    assert statistics.fmean(values) == pytest.approx(0.0, abs=4 * plan.sigma / math.sqrt(len(values)))
    assert statistics.pstdev(values) == pytest.approx(plan.sigma, rel=0.02)


def test_draw_counter_noise_uses_os_random_by_default() -> None:
    plan = counters.plan_counter("tree", 8, 2, 1.0)
    draws = counters.draw_counter_noise(plan)
    assert len(draws) == plan.rows == 15 and all(type(x) is int for x in draws)


@pytest.mark.parametrize(
    ("kind", "T", "multiplier", "bits", "seed"),
    [("sqrt", 24, 1.0, 20, 61), ("tree", 24, 1.0, 20, 62), ("tree", 8, 0.2, 0, 63)],
)
def test_counter_noise_std_matches_monte_carlo(
    kind: CounterKind, T: int, multiplier: float, bits: int, seed: int
) -> None:
    # The last case has sigma ~ 0.5 lattice steps, where the discrete variance is well below
    # sigma^2: counter_noise_std must follow the discrete one.
    plan = counters.plan_counter(kind, T, 2, multiplier, lattice_bits=bits)
    rng = SeededSource(seed)
    days = sorted({1, 5, T})
    zeros = [0] * T
    samples: dict[int, list[float]] = {t: [] for t in days}
    for _ in range(3000):
        nz = counters.draw_counter_noise(plan, rng)
        for t in days:
            samples[t].append(float(counters.counter_value(plan, zeros[:t], nz)))
    for t in days:
        expected = counters.counter_noise_std(plan, t)
        assert statistics.pstdev(samples[t]) == pytest.approx(expected, rel=0.05)
        half = counters.counter_interval(plan, t, 0.95)
        inside = sum(abs(x) <= half for x in samples[t]) / len(samples[t])
        if bits:  # fine lattice: the noise is normal for all practical purposes
            assert half == pytest.approx(1.959963984540054 * expected, rel=1e-12)
            assert inside == pytest.approx(0.95, abs=0.015)


def test_counter_noise_std_formula() -> None:
    plan = counters.plan_counter("sqrt", 365, 2, 1.0)
    c = counters.sqrt_coefficients(365)
    for t in (1, 2, 100, 365):
        norm = math.sqrt(sum(float(x) ** 2 for x in c[:t]))
        assert counters.counter_noise_std(plan, t) == pytest.approx(plan.sigma * norm, rel=1e-12)
    tree = counters.plan_counter("tree", 365, 2, 1.0)
    for t in (1, 255, 256, 365):
        expected = tree.sigma * math.sqrt(t.bit_count())
        assert counters.counter_noise_std(tree, t) == pytest.approx(expected, rel=1e-12)


def test_module_does_not_import_stdlib_random() -> None:
    source = Path(counters.__file__).read_text(encoding="utf-8")
    assert "import random" not in source and "from random" not in source
