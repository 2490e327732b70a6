"""Continual counters (matrix mechanism) for the bounded-flippancy DAU/MAU release.

Setting (Jain, Kalemaj, Raskhodnikova, Sivakumar, Smith, "Counting Distinct Elements in the
Turnstile Model with Differential Privacy under Continual Observation", NeurIPS 2023,
arXiv:2306.06723). On day t = 1..T of a horizon the service computes an integer z_t, the change
of a counted total, and releases a noisy prefix sum s_t = z_1 + ... + z_t. One user changes
the vector z by an alternating +1, -1, +1, ... vector with at most w non-zeros (w is the
flippancy bound W_BOUND). The release is the matrix mechanism for a factorisation A = L R of
the T x T lower-triangular all-ones matrix A: out = L (R z + Z), Z Gaussian, one coordinate per
row of R. Its privacy is that of the Gaussian mechanism on the query z -> R z, so sigma is set
from the l2 sensitivity of R over *alternating* vectors (``alternating_sensitivity``), which is
much smaller than the column-norm sensitivity of arbitrary w-sparse vectors.

Rule 1: two factorisations, both online (row r of R only involves days <= the day it is
complete on, and L is lower-triangular in that order):
* ``sqrt``: L = R = A^(1/2), lower-triangular Toeplitz with c_0 = 1, c_k = c_{k-1} (2k-1)/(2k)
  = C(2k, k) / 4^k (Fichtenberger, Henzinger, Upadhyay, ICML 2023; Henzinger, Upadhyay,
  Upadhyay, SODA 2023). (c * c)_k = sum_j c_j c_{k-j} = 1 is the generating-function identity
  (1 - x)^(-1/2) squared = (1 - x)^(-1), so R R = A. Rows: T, row j complete on day j.
* ``tree``: the dyadic tree of Dwork, Naor, Pitassi, Rothblum (STOC 2010) and Chan, Shi, Song
  (TISSEC 2011). Convention used here: the rows of R are the indicator vectors of all aligned
  dyadic intervals [e - 2^l + 1, e] with 2^l | e and e <= T (intervals crossing T are left
  out: they would never be complete), ordered by end e, then level l. Row count is
  sum_l floor(T / 2^l) (724 for T = 365). L's row t sums the popcount(t) intervals of the
  binary decomposition of [1, t], all of which end <= t. No Honaker re-weighting.

Rule 2: floating point is never a source of randomness, and the released number is exact.
R z is real for ``sqrt``, so the query is first rounded to the lattice 2^-b (b =
``lattice_bits``), nearest, ties towards +infinity, and the noise is a discrete Gaussian on the
same lattice: Z_r = n_r 2^-b, n_r ~ N_Z(0, (sigma 2^b)^2) from ``actors.noise`` (exact, OS
randomness). 2^b round(R z) + n is then an integer query plus integer discrete Gaussian noise,
which is the setting of Canonne-Kamath-Steinke (arXiv:2004.00010): its zCDP is that of the
continuous Gaussian up to a per-coordinate slack of order exp(-2 pi^2 sigma^2 4^b), i.e. zero
in double precision for the sigma used here. ``counter_value`` then applies L with the exact
dyadic c_k in integer arithmetic, so the published value is a function of (z, n) alone.

Rule 3: the rounding is charged to the sensitivity. For neighbours z, z' = z + v and each row,
|(round(a) - round(a')) - (a - a')| <= 2^-b (each rounding moves by at most 2^-b / 2), so
||round(R z) - round(R z')||_2 <= ||R v||_2 + sqrt(rows) 2^-b. ``plan_counter`` adds that slack
for ``sqrt``; for ``tree`` R is 0/1, R z is already on the lattice and the slack is 0.

Rule 4: ``alternating_sensitivity`` is exact (up to float rounding of the Gram matrix) by
branch and bound whenever its work budget allows, which covers (T <= 400, w <= 2) and
(T <= 31, w <= 4) with a margin of four orders of magnitude, and also T = 365 at w = 4 (sqrt
in ~0.2 s thanks to a shift argument for Toeplitz R, tree in ~4 s); otherwise it returns a
valid upper bound and says so (see its docstring). Float error is not added to the
sensitivity: the tree's Gram matrix holds small integers and is exact, and for sqrt the error
is about T * 1e-16 relative (~1e-13 at T = 365), below 1e-8 of the rounding slack of Rule 3.

Rule 5: error bars. The noise in ``counter_value`` at day t is sum_r L[t, r] n_r 2^-b, a fixed
combination of independent lattice Gaussians. Each has the variance of its continuous twin up
to a relative exp(-2 pi^2 sigma^2 4^b) (Poisson summation) and is lattice-valued with step
2^-b, about a million times below sigma at the default b = 20. The combination is
therefore normal up to CDF errors of the order of one lattice atom, ~2^-b / (sqrt(2 pi) sigma_t),
which is what ``counter_interval`` neglects when it uses the normal quantile.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import accumulate
from statistics import NormalDist

import numpy as np

from actors.privacy import noise
from actors.privacy.noise import OS_RANDOM, RandomSource
from journal.events import CounterKind  # one vocabulary for the journal and the math

_KINDS: tuple[CounterKind, ...] = ("sqrt", "tree")

# Array cells the branch and bound may touch, roughly 1 ns each: a few seconds at most, once
# per (kind, T, w) thanks to the cache in plan_counter. T = 400 at w = 2 needs 1.6e5 and T = 31
# at w = 4 about 1e5; the largest case we know the service to plan, the tree at T = 365 and
# w = 4, needs between 1e9 and 3e9 (the sqrt one needs ~1e7, see the Toeplitz pinning).
_SEARCH_BUDGET = 4_000_000_000


# --------------------------------------------------------------------------------------------
# Factorisations
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _central_binomials(n: int) -> tuple[int, ...]:
    """C(2k, k) for k = 0..n-1, so that c_k = C(2k, k) / 4^k exactly."""
    out = [1]
    for k in range(1, n):
        out.append(out[-1] * (2 * k) * (2 * k - 1) // (k * k))
    return tuple(out[:n])


def sqrt_coefficients(T: int) -> list[Fraction]:
    """c_0..c_{T-1} of A^(1/2): c_k = C(2k, k) / 4^k, exact dyadic rationals."""
    _check_horizon(T)
    return [Fraction(b, 4**k) for k, b in enumerate(_central_binomials(T))]


def _tree_count(m: int) -> int:
    """Number of aligned dyadic intervals ending at or before m: sum_l floor(m / 2^l)."""
    total = 0
    while m:
        total += m
        m >>= 1
    return total


def _tree_row(end: int, level: int) -> int:
    """Row of interval [end - 2^level + 1, end] in the (end, level) order of Rule 1."""
    return _tree_count(end - 1) + level


def _tree_decomposition(t: int) -> list[tuple[int, int]]:
    """(end, level) of the popcount(t) dyadic intervals tiling [1, t], left to right."""
    out: list[tuple[int, int]] = []
    end = 0
    for level in range(t.bit_length() - 1, -1, -1):
        if t >> level & 1:
            end += 1 << level
            out.append((end, level))
    return out


def _factor_sqrt(T: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.array([float(x) for x in sqrt_coefficients(T)])
    lag = np.subtract.outer(np.arange(T), np.arange(T))
    R = np.where(lag >= 0, c[np.clip(lag, 0, None)], 0.0)
    return R.copy(), R


def _factor_tree(T: int) -> tuple[np.ndarray, np.ndarray]:
    R = np.zeros((_tree_count(T), T))
    for end in range(1, T + 1):
        for level in range((end & -end).bit_length()):
            R[_tree_row(end, level), end - (1 << level) : end] = 1.0
    L = np.zeros((T, R.shape[0]))
    for t in range(1, T + 1):
        for end, level in _tree_decomposition(t):
            L[t - 1, _tree_row(end, level)] = 1.0
    return L, R


def factorization(kind: CounterKind, T: int) -> tuple[np.ndarray, np.ndarray]:
    """(L, R) as float64 with L @ R equal to the T x T lower-triangular ones matrix."""
    _check_kind(kind)
    _check_horizon(T)
    return _factor_sqrt(T) if kind == "sqrt" else _factor_tree(T)


# --------------------------------------------------------------------------------------------
# Sensitivity over alternating vectors
# --------------------------------------------------------------------------------------------


def _rev_cummax(a: np.ndarray) -> np.ndarray:
    return np.maximum.accumulate(a[:, ::-1], axis=1)[:, ::-1]


def _pair_tables(G: np.ndarray) -> dict[str, np.ndarray]:
    """Data-independent tables of the search, from the Gram matrix G = R^T R.

    pair[q, q'] = ||R (e_q - e_q')||^2 for q < q' (-inf elsewhere); row/col: its row and column
    maxima; p1[s], p2[s]: largest ||R e_q|| and ||R (e_q - e_q')|| over s <= q < q' (0 past T).
    """
    T = G.shape[0]
    diag = np.diag(G).copy()
    pair = diag[:, None] + diag[None, :] - 2.0 * G
    pair[np.tril_indices(T)] = -np.inf
    row, col = pair.max(axis=1), pair.max(axis=0)
    p1 = np.maximum.accumulate(np.sqrt(np.maximum(diag, 0.0))[::-1])[::-1]
    p2 = np.sqrt(np.maximum(np.maximum.accumulate(row[::-1])[::-1], 0.0))
    return {"diag": diag, "pair": pair, "row": row, "col": col, "p1": np.append(p1, 0.0), "p2": np.append(p2, 0.0)}


def _alt_max(H: np.ndarray, start: np.ndarray, r: int, sign: int) -> np.ndarray:
    """Row k: max of sign(H[k,q1] - H[k,q2] + ...) over <= r terms with start[k] <= q1 < q2 < ..."""
    k, T = H.shape
    zero = np.zeros((k, 1))
    f_plus = f_minus = np.zeros((k, T + 1))
    for _ in range(r):
        new_plus = np.maximum(_rev_cummax(H + f_minus[:, 1:]), 0.0)
        new_minus = np.maximum(_rev_cummax(-H + f_plus[:, 1:]), 0.0)
        f_plus, f_minus = np.hstack([new_plus, zero]), np.hstack([new_minus, zero])
    f = f_plus if sign > 0 else f_minus
    out: np.ndarray = f[np.arange(k), start]
    return out


def _pairing_bound(tab: dict[str, np.ndarray], r: int, start: np.ndarray | int) -> np.ndarray:
    """Triangle inequality over consecutive (+1, -1) pairs: max_{k<=r} floor(k/2) P2 + (k%2) P1."""
    p1, p2 = tab["p1"][start], tab["p2"][start]
    if r == 0:
        return np.zeros_like(p1)
    out: np.ndarray = np.maximum((r // 2) * p2 + (r % 2) * p1, ((r - 1) // 2) * p2 + ((r - 1) % 2) * p1)
    return out


def _two_step_bound(tab: dict[str, np.ndarray], H: np.ndarray, start: np.ndarray, sign: int) -> np.ndarray:
    """Row k: bound on the gain of <= 2 more terms (sign first) from start[k], given g = H[k].

    The gain of q1 < q2 is pair[q1, q2] + 2 sign (g[q1] - g[q2]). Maximising the pair term per
    q1 (row max) or per q2 (column max), not over the whole suffix, is what keeps this tight.
    """
    k, T = H.shape
    outside = np.arange(T)[None, :] < start[:, None]
    u = np.where(outside, -np.inf, 2.0 * sign * H)
    single = (u + tab["diag"][None, :]).max(axis=1, initial=-np.inf)
    later = np.hstack([_rev_cummax(-2.0 * sign * H)[:, 1:], np.full((k, 1), -np.inf)])
    by_first = (u + tab["row"][None, :] + later).max(axis=1, initial=-np.inf)
    earlier = np.hstack([np.full((k, 1), -np.inf), np.maximum.accumulate(u, axis=1)[:, :-1]])
    by_second = (-2.0 * sign * H + tab["col"][None, :] + earlier).max(axis=1, initial=-np.inf)
    out: np.ndarray = np.maximum(0.0, np.maximum(single, np.minimum(by_first, by_second)))
    return out


def _child_bounds(
    tab: dict[str, np.ndarray], H: np.ndarray, val1: np.ndarray, nxt: np.ndarray, r: int, sign: int
) -> np.ndarray:
    """Upper bounds on ||R v||^2 over completions of each child (r more terms, ``sign`` first)."""
    # ||y + t||^2 = ||y||^2 + 2 g.t + ||t||^2: bound the middle term exactly (alternating DP)
    # and the last by the pairing bound; or use (||y|| + max||t||)^2. Both are valid.
    tail = _pairing_bound(tab, r, nxt)
    alt = _alt_max(H, nxt, r, sign)
    bounds = np.minimum(val1 + 2.0 * alt + tail**2, (np.sqrt(np.maximum(val1, 0.0)) + tail) ** 2)
    if r == 2:
        bounds = np.minimum(bounds, val1 + _two_step_bound(tab, H, nxt, sign))
    out: np.ndarray = bounds
    return out


def _two_step_exact(
    tab: dict[str, np.ndarray], H: np.ndarray, y2: np.ndarray, start: np.ndarray, sign: int
) -> np.ndarray:
    """Row c: exact max of ||y_c + t||^2 over t with <= 2 more terms (sign first) from start[c].

    y_c is known only through y2[c] = ||y_c||^2 and H[c] = R^T y_c, which is all it takes.
    """
    lo, T = int(start.min()), H.shape[1]
    if lo >= T:
        return y2.copy()
    u = 2.0 * sign * H[:, lo:]
    first = np.where(np.arange(lo, T)[None, :] < start[:, None], -np.inf, u)
    single = (first + tab["diag"][None, lo:]).max(axis=1)
    gain = first[:, :, None] - u[:, None, :]
    gain += tab["pair"][None, lo:, lo:]  # -inf unless q1 < q2
    pairs = gain.reshape(len(H), -1).max(axis=1)
    out: np.ndarray = y2 + np.maximum(0.0, np.maximum(single, pairs))
    return out


def _is_lower_toeplitz(R: np.ndarray) -> bool:
    T = R.shape[1]
    if R.shape != (T, T) or np.any(np.triu(R, 1)):
        return False
    return all(np.all(np.diagonal(R, -k) == R[k, 0]) for k in range(T))


@dataclass
class _Search:
    """Mutable state of one branch and bound (shared by the recursive calls)."""

    G: np.ndarray
    tab: dict[str, np.ndarray]
    budget: int
    best: float = 0.0  # largest ||R v||^2 found
    unresolved: float = -math.inf  # largest bound of a subtree skipped for lack of budget
    work: int = 0

    @property
    def floor(self) -> float:
        # Subtrees bounded by this are pruned (<= best) or already covered (<= unresolved).
        return max(self.best, self.unresolved)

    def charge(self, cost: int, bound: float) -> bool:
        # Out of budget: the subtree is not searched, its bound is remembered instead.
        if self.work + cost > self.budget:
            self.unresolved = max(self.unresolved, bound)
            return False
        self.work += cost
        return True

    def leaves(self, H: np.ndarray, val1: np.ndarray, bounds: np.ndarray, first: int, sign: int) -> None:
        # Children with two terms left, solved exactly in batches of ~4M cells. The batches run
        # in position order so each one only spans the columns its own children can use.
        T = self.G.shape[0]
        todo = np.flatnonzero(bounds > self.floor)
        while todo.size:
            m = T - first - int(todo[0])
            batch = todo[: max(1, (1 << 22) // max(1, m * m))]
            todo = todo[batch.size :]
            batch = batch[bounds[batch] > self.floor]
            if batch.size == 0:
                continue
            if not self.charge(batch.size * m * m, float(bounds[batch].max())):
                self.unresolved = max(self.unresolved, float(bounds[todo].max(initial=-math.inf)))
                return
            vals = _two_step_exact(self.tab, H[batch], val1[batch], first + batch, sign)
            self.best = max(self.best, float(vals.max()))

    def visit(self, p: int, r: int, sign: int, g: np.ndarray, y2: float, bound: float) -> None:
        # y = R v for the non-zeros placed so far, y2 = ||y||^2, g = R^T y; adding sign * e_q
        # needs no product with R: ||y + s R e_q||^2 = y2 + 2 s g[q] + G[q, q]. Positions >= p
        # are free, r non-zeros are left, the next one has sign `sign`.
        T, diag = self.G.shape[0], self.tab["diag"]
        if p == T or r == 0:
            return
        if r <= 2:
            if self.charge((T - p) ** r, bound):
                if r == 1:
                    val = y2 + max(0.0, float((2.0 * sign * g[p:] + diag[p:]).max()))
                else:
                    one = _two_step_exact(self.tab, g[None, :], np.array([y2]), np.array([p]), sign)
                    val = float(one[0])
                self.best = max(self.best, val)
            return
        if not self.charge(8 * r * (T - p) * T, bound):
            return
        val1 = y2 + 2.0 * sign * g[p:] + diag[p:]
        self.best = max(self.best, float(val1.max()))
        H = g[None, :] + sign * self.G[p:, :]  # R^T y of each child
        bounds = _child_bounds(self.tab, H, val1, np.arange(p + 1, T + 1), r - 1, -sign)
        if r == 3:
            self.leaves(H, val1, bounds, p + 1, -sign)
            return
        for i in np.argsort(-bounds, kind="stable"):
            if bounds[i] <= self.floor:
                break  # sorted: every later child is pruned or already covered
            self.visit(p + int(i) + 1, r - 1, -sign, H[i], float(val1[i]), float(bounds[i]))


def _branch_and_bound(G: np.ndarray, w: int, budget: int, pin_first: bool) -> tuple[float, float]:
    """(best, unresolved): best squared norm found, and the largest bound left unexplored."""
    search = _Search(G, _pair_tables(G), budget)
    root_bound = float(_pairing_bound(search.tab, w, 0)) ** 2
    if pin_first:  # see alternating_sensitivity: some optimum starts on day 1
        search.best = float(search.tab["diag"][0])
        search.visit(1, w - 1, -1, G[0].copy(), search.best, root_bound)
    else:
        search.visit(0, w, 1, np.zeros(G.shape[0]), 0.0, root_bound)
    return search.best, min(search.unresolved, root_bound)


def alternating_sensitivity(R: np.ndarray, w: int) -> tuple[float, bool]:
    """max ||R v||_2 over v = +1, -1, +1, ... at <= w positions of 1..T; returns (value, exact).

    Branch and bound over the Gram matrix G = R^T R: positions are placed in increasing order,
    children best bound first; the last two positions are maximised over all pairs at once,
    and a node is pruned when an upper bound on its subtree (the alternating-sum DP bound on
    the cross term plus the pairing bound below, or a per-position bound for the last two
    terms) does not beat the best vector found. ``exact`` is True when the search finished.

    If the work budget (``_SEARCH_BUDGET`` array cells) runs out, ``exact`` is False and the
    value is an upper bound: the largest bound over the subtrees left unexplored (pruned ones
    are below the best found), never more than the pairing bound floor(w/2) D2 + (w mod 2) D1,
    where D2 is the largest ||R (e_p - e_q)|| and D1 the largest column norm (the triangle
    inequality over the consecutive (+1, -1) pairs of v). Memory is O(T^2) floats.
    """
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[1] == 0:
        raise ValueError(f"R must be a non-empty 2-D matrix, got shape {R.shape}")
    if w < 1:
        raise ValueError(f"w must be >= 1, got {w}")
    G = R.T @ R
    # For lower-triangular Toeplitz R (the sqrt factorisation), moving every non-zero of v one
    # day earlier shifts R v up by one row (its first entry was 0) and appends one more entry,
    # so ||R v|| cannot drop: the search may pin the first non-zero to day 1.
    pin_first = _is_lower_toeplitz(R)
    best, unresolved = _branch_and_bound(G, min(w, G.shape[0]), _SEARCH_BUDGET, pin_first)
    if unresolved <= best:
        return math.sqrt(best), True
    return math.sqrt(unresolved), False


# --------------------------------------------------------------------------------------------
# Plans, noise and released values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CounterPlan:
    """Everything fixed before the horizon starts; contains no data and no noise."""

    kind: CounterKind
    T: int
    w: int
    lattice_bits: int
    noise_multiplier: float  # sigma / sensitivity: what the accountant charges
    sensitivity: float  # alternating sensitivity + lattice rounding slack (the Delta_2 used)
    sensitivity_exact: bool
    sigma: float  # noise_multiplier * sensitivity, std of each Z_r in real units
    rows: int  # rows of R = length of the noise vector


@functools.lru_cache(maxsize=64)
def _sensitivity(kind: CounterKind, T: int, w: int) -> tuple[float, bool, int]:
    _, R = factorization(kind, T)
    value, exact = alternating_sensitivity(R, w)
    return value, exact, R.shape[0]


def plan_counter(kind: CounterKind, T: int, w: int, noise_multiplier: float, lattice_bits: int = 20) -> CounterPlan:
    """Sensitivity and noise scale for a horizon of T days and flippancy bound w."""
    _check_kind(kind)
    _check_horizon(T)
    if w < 1:
        raise ValueError(f"w must be >= 1, got {w}")
    if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise_multiplier must be finite and > 0, got {noise_multiplier}")
    if not 0 <= lattice_bits <= 64:
        raise ValueError(f"lattice_bits must be in [0, 64], got {lattice_bits}")
    value, exact, rows = _sensitivity(kind, T, w)
    # Rule 3: only the sqrt query is rounded; the tree query is integer and exact on the lattice.
    slack = math.ldexp(math.sqrt(rows), -lattice_bits) if kind == "sqrt" else 0.0
    sensitivity = value + slack
    return CounterPlan(
        kind=kind,
        T=T,
        w=w,
        lattice_bits=lattice_bits,
        noise_multiplier=noise_multiplier,
        sensitivity=sensitivity,
        sensitivity_exact=exact,
        sigma=noise_multiplier * sensitivity,
        rows=rows,
    )


def _lattice_sigma2(plan: CounterPlan) -> Fraction:
    # Scaling a float by 2^b is exact, so this is exactly (plan.sigma * 2^b)^2 as a rational.
    return Fraction(math.ldexp(plan.sigma, plan.lattice_bits)) ** 2


def draw_counter_noise(plan: CounterPlan, rng: RandomSource = OS_RANDOM) -> list[int]:
    """n_1..n_rows ~ N_Z(0, (sigma 2^b)^2) independently; Z_r = n_r 2^-b in real units."""
    return noise.discrete_gaussian_vector(_lattice_sigma2(plan), plan.rows, rng)


def _round_shift(x: int, e: int) -> int:
    """Nearest integer to x / 2^e, ties towards +infinity (e >= 0)."""
    return (x + (1 << (e - 1))) >> e if e > 0 else x


def _sqrt_value(T: int, b: int, z: Sequence[int], nz: Sequence[int]) -> Fraction:
    t = len(z)
    cb = _central_binomials(T)  # cached per horizon; only the first t are used
    # (R z)_j = sum_{i<=j} c_{j-i} z_i = N_j / 4^j with N_j = sum_i C(2(j-i), j-i) 4^i z_i.
    scaled = [operator.index(zi) << (2 * i) for i, zi in enumerate(z)]
    total = 0
    for j in range(t):
        n_j = sum(cb[j - i] * scaled[i] for i in range(j + 1))
        lattice = _round_shift(n_j << b, 2 * j)  # round(2^b (R z)_j): Rule 2
        # c_{t-1-j} = C(2(t-1-j), t-1-j) 4^j / 4^(t-1): one common denominator for the sum.
        total += cb[t - 1 - j] * ((lattice + operator.index(nz[j])) << (2 * j))
    return Fraction(total, 1 << (2 * (t - 1) + b))


def _tree_value(b: int, z: Sequence[int], nz: Sequence[int]) -> Fraction:
    prefix = list(accumulate((operator.index(x) for x in z), initial=0))
    total = 0
    for end, level in _tree_decomposition(len(z)):
        node_sum = prefix[end] - prefix[end - (1 << level)]
        total += (node_sum << b) + operator.index(nz[_tree_row(end, level)])
    return Fraction(total, 1 << b)


def counter_value(plan: CounterPlan, z: Sequence[int], noise: Sequence[int]) -> Fraction:
    """(L (round_lattice(R z) + Z))_t for t = len(z), exactly, in real units.

    Only rows of R complete by day t are used (sqrt: rows 1..t; tree: intervals ending <= t),
    so the value at t depends on z_1..z_t and on noise fixed before the horizon, nothing else.
    ``z`` and ``noise`` must hold integers (ints or numpy integers); floats are rejected.
    """
    t = len(z)
    if not 1 <= t <= plan.T:
        raise ValueError(f"need 1 <= len(z) <= T = {plan.T}, got {t}")
    if len(noise) != plan.rows:
        raise ValueError(f"noise must have {plan.rows} entries, got {len(noise)}")
    if plan.kind == "sqrt":
        return _sqrt_value(plan.T, plan.lattice_bits, z, noise)
    return _tree_value(plan.lattice_bits, z, noise)


def _l_row_norm2(plan: CounterPlan, t: int) -> float:
    if plan.kind == "tree":
        return float(t.bit_count())
    return math.fsum(float(c) ** 2 for c in sqrt_coefficients(t))


def counter_noise_std(plan: CounterPlan, t: int) -> float:
    """Std of the noise part of ``counter_value`` at day t: std(Z_r) ||L_t||_2.

    std(Z_r) uses the exact discrete-Gaussian variance; at the default b = 20 it equals sigma
    to double precision (the difference is exp(-2 pi^2 sigma^2 4^b) relative), but at small b
    and sigma it is measurably below sigma.
    """
    if not 1 <= t <= plan.T:
        raise ValueError(f"need 1 <= t <= T = {plan.T}, got {t}")
    lattice_var = noise.discrete_gaussian_variance(math.ldexp(plan.sigma, plan.lattice_bits))
    return math.ldexp(math.sqrt(lattice_var * _l_row_norm2(plan, t)), -plan.lattice_bits)


def counter_interval(plan: CounterPlan, t: int, coverage: float = 0.95) -> float:
    """Half-width of a central ``coverage`` interval for the noise at day t (Rule 5)."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    return NormalDist().inv_cdf(0.5 + coverage / 2.0) * counter_noise_std(plan, t)


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")


def _check_horizon(T: int) -> None:
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
