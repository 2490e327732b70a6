"""Exact discrete noise samplers, and float facts about the distributions they sample.

Everything that decides a released number goes through the samplers in this module, so they
are written to the following rules. The privacy argument of the whole service rests on them.

Rule 1: randomness comes only from ``RandomSource.randbelow``. In production that is
``OS_RANDOM`` (``secrets.randbelow``, i.e. the kernel CSPRNG). The stdlib ``random`` module is
never imported here (CI greps for it): its Mersenne Twister is predictable from its output.
Tests inject a seeded source through the ``rng`` argument; nothing else should.

Rule 2: sampling uses only integer (and ``Fraction``) arithmetic. The one primitive is
Bernoulli(n/d) := ``randbelow(d) < n``, which is exact for integers 0 <= n <= d. Floating point
never touches a sample: Mironov (CCS 2012, "On significance of the least significant bits for
differential privacy") showed that float Laplace samplers leak the input through the low bits
of the output, and the same attack applies to any float-built noise.

Rule 3: the samplers are the exact algorithms of Canonne, Kamath and Steinke, "The Discrete
Gaussian for Differential Privacy" (NeurIPS 2020, arXiv:2004.00010):

* Algorithm 1, ``bernoulli_exp``: Bernoulli(exp(-gamma)) for rational gamma >= 0. For
  gamma <= 1 it runs the alternating-series trick: draw A_k ~ Bernoulli(gamma/k) for
  k = 1, 2, ... until the first failure at k = K; P(K odd) = exp(-gamma). For gamma > 1 it uses
  exp(-gamma) = exp(-1)^floor(gamma) * exp(-(gamma - floor(gamma))), stopping at the first
  failing factor, so the expected work is O(1) however large gamma is.
* Algorithm 2, ``discrete_laplace``: P(x) proportional to exp(-|x| / scale) for rational
  scale = t/s. The magnitude is U + t*V with U uniform on {0..t-1} accepted with probability
  exp(-U/t) and V geometric, divided by s. Every Bernoulli(exp(-gamma)) it asks for has
  gamma <= 1, so the expected work is O(1) for any scale.
* Algorithm 3, ``discrete_gaussian``: P(x) proportional to exp(-x^2 / (2 sigma^2)) by rejection
  from the discrete Laplace with integer scale t = floor(sigma) + 1, accepting Y with
  probability exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2)). With that t, CKS's analysis of Alg. 3
  bounds the acceptance probability below by a constant, so the expected work is O(1) for any
  sigma (measured: the same ~1e5 draws/s at sigma = 13 and sigma = 4 * 2^20 with a fast
  source). The exponent is written as one integer ratio per call, so there is no Fraction
  normalisation (gcd) in the loop.

Why exact sampling is enough for privacy: CKS prove that adding N_Z(0, sigma^2) to an
integer-valued query of l2 sensitivity Delta is (Delta^2 / (2 sigma^2))-zCDP in one dimension,
and, for independent coordinates, zCDP with a slack that decays like exp(-2 pi^2 sigma^2) per
coordinate (their multivariate theorem). The callers (``actors.counters``) use sigma in the
millions of lattice units, where that slack is far below double precision.

Rule 4: the ``*_pmf``, ``*_variance`` and ``*_quantile`` functions are floating point and that
is fine: they describe the distributions (for error bars and tests), they never produce one.
They are computed from the exact pmf (series, Poisson summation or Euler-Maclaurin with the
remainder far below double precision), not from a normal approximation.
"""

from __future__ import annotations

import math
import secrets
from fractions import Fraction
from statistics import NormalDist
from typing import Protocol


class RandomSource(Protocol):
    """Anything with a uniform ``randbelow``; the samplers need nothing else."""

    def randbelow(self, n: int) -> int:
        """Uniform integer in [0, n)."""
        ...


class _OsRandom:
    """``secrets.randbelow``: the kernel CSPRNG, the only source the service uses."""

    __slots__ = ()

    def randbelow(self, n: int) -> int:
        return secrets.randbelow(n)


OS_RANDOM: RandomSource = _OsRandom()


# --------------------------------------------------------------------------------------------
# Samplers (integer arithmetic only)
# --------------------------------------------------------------------------------------------


def _bernoulli_exp_le1(num: int, den: int, rng: RandomSource) -> bool:
    """Bernoulli(exp(-num/den)) for 0 <= num <= den (CKS Alg. 1, gamma <= 1 branch)."""
    # P(first failure of Bernoulli(gamma/k) at k = K) = gamma^(K-1)/(K-1)! - gamma^K/K!,
    # and summing over odd K gives the series of exp(-gamma) term by term: exact.
    if num == 0:
        return True
    # Bernoulli(1/1) needs no draw: skipping it saves a syscall per geometric step under OS_RANDOM.
    k = 2 if num == den else 1
    while rng.randbelow(den * k) < num:
        k += 1
    return k % 2 == 1


def _bernoulli_exp(num: int, den: int, rng: RandomSource) -> bool:
    """Bernoulli(exp(-num/den)) for integers num >= 0, den > 0 (CKS Alg. 1)."""
    whole, rest = divmod(num, den)
    # exp(-gamma) = exp(-1)^whole * exp(-rest/den); a product of independent Bernoullis is a
    # Bernoulli of the product, and we may stop at the first failure, so this loop ends after
    # a geometric(1 - 1/e) number of rounds even when `whole` is large.
    for _ in range(whole):
        if not _bernoulli_exp_le1(1, 1, rng):
            return False
    return _bernoulli_exp_le1(rest, den, rng)


def bernoulli_exp(gamma: Fraction, rng: RandomSource = OS_RANDOM) -> bool:
    """True with probability exactly exp(-gamma), for rational gamma >= 0."""
    gamma = Fraction(gamma)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    return _bernoulli_exp(gamma.numerator, gamma.denominator, rng)


def _discrete_laplace(t: int, s: int, rng: RandomSource) -> int:
    """Integer X with P(X = x) proportional to exp(-|x| * s / t) (CKS Alg. 2)."""
    while True:
        u = rng.randbelow(t)
        # U accepted with prob. exp(-U/t) is the fractional part (in units of 1/t) of an
        # Exp(1) variable; gamma = U/t < 1, so no long Alg. 1 loop.
        if not _bernoulli_exp_le1(u, t, rng):
            continue
        v = 0
        while _bernoulli_exp_le1(1, 1, rng):
            v += 1  # geometric: the integer part of the same Exp(1)
        y = (u + t * v) // s  # floor(t*E/s) is geometric with ratio exp(-s/t)
        negative = rng.randbelow(2) == 1
        if negative and y == 0:
            continue  # otherwise zero would be counted twice (as +0 and -0)
        return -y if negative else y


def discrete_laplace(scale: Fraction, rng: RandomSource = OS_RANDOM) -> int:
    """Exact sample with P(x) proportional to exp(-|x| / scale), for rational scale > 0."""
    scale = Fraction(scale)
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return _discrete_laplace(scale.numerator, scale.denominator, rng)


def _gaussian_params(sigma2: Fraction) -> tuple[int, int, int]:
    """(p, q, t) with sigma^2 = p/q and t = floor(sigma) + 1, all integers, no float sqrt."""
    sigma2 = Fraction(sigma2)
    if sigma2 <= 0:
        raise ValueError(f"sigma2 must be > 0, got {sigma2}")
    p, q = sigma2.numerator, sigma2.denominator
    # floor(sqrt(p/q)) = floor(sqrt(p*q)/q) = isqrt(p*q) // q, exactly.
    return p, q, math.isqrt(p * q) // q + 1


def _discrete_gaussian(p: int, q: int, t: int, rng: RandomSource) -> int:
    """One draw of N_Z(0, p/q) with t = floor(sqrt(p/q)) + 1 (CKS Alg. 3)."""
    # gamma = (|Y| - sigma^2/t)^2 / (2 sigma^2) = (|Y| q t - p)^2 / (2 p q t^2): the same
    # rational number as in CKS, written over one integer denominator.
    den = 2 * p * q * t * t
    qt = q * t
    while True:
        y = _discrete_laplace(t, 1, rng)
        diff = abs(y) * qt - p
        if _bernoulli_exp(diff * diff, den, rng):
            return y


def discrete_gaussian(sigma2: Fraction, rng: RandomSource = OS_RANDOM) -> int:
    """Exact sample with P(x) proportional to exp(-x^2 / (2 sigma2)), for rational sigma2 > 0."""
    return _discrete_gaussian(*_gaussian_params(sigma2), rng)


def discrete_gaussian_vector(sigma2: Fraction, n: int, rng: RandomSource = OS_RANDOM) -> list[int]:
    """``n`` independent draws of N_Z(0, sigma2)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    p, q, t = _gaussian_params(sigma2)
    return [_discrete_gaussian(p, q, t, rng) for _ in range(n)]


# --------------------------------------------------------------------------------------------
# Facts about the exact distributions (floating point; never a source of randomness)
# --------------------------------------------------------------------------------------------

# Below this sigma the pmf is summed term by term; above it the Poisson-summation and
# Euler-Maclaurin forms converge in a handful of terms with errors far below 1 ulp.
_DIRECT_SIGMA = 1.0
_DIRECT_QUANTILE_SIGMA = 256.0
# exp(-x) underflows to 0 for x > 745; summing further adds nothing.
_EXP_UNDERFLOW = 746.0


def _check_positive(name: str, value: float) -> None:
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be finite and > 0, got {value}")


def _check_coverage(coverage: float) -> None:
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")


def _dg_direct_support(sigma: float) -> int:
    """Largest |x| whose unnormalised weight exp(-x^2/(2 sigma^2)) is not 0.0 in double."""
    return math.ceil(sigma * math.sqrt(2.0 * _EXP_UNDERFLOW)) + 1


def _dg_norm_and_second_moment(sigma: float) -> tuple[float, float]:
    """(Z, S) = (sum_x exp(-x^2/2s^2), sum_x x^2 exp(-x^2/2s^2)) over all integers x."""
    if sigma < _DIRECT_SIGMA:
        xs = range(1, _dg_direct_support(sigma) + 1)
        weights = [math.exp(-x * x / (2.0 * sigma * sigma)) for x in xs]
        z = 1.0 + 2.0 * math.fsum(weights)
        s = 2.0 * math.fsum(x * x * w for x, w in zip(xs, weights))
        return z, s
    # Poisson summation: sum_x f(x) = sum_k f^(k) with f^(xi) the Fourier transform; for the
    # Gaussian the k != 0 terms are exp(-2 pi^2 sigma^2 k^2) <= 2.7e-9 already at sigma = 1.
    a = 2.0 * math.pi**2 * sigma * sigma
    ks = range(1, 8)
    z_corr = math.fsum(math.exp(-a * k * k) for k in ks)
    s_corr = math.fsum((1.0 - 2.0 * a * k * k) * math.exp(-a * k * k) for k in ks)
    root = math.sqrt(2.0 * math.pi) * sigma
    return root * (1.0 + 2.0 * z_corr), root * sigma * sigma * (1.0 + 2.0 * s_corr)


def discrete_gaussian_pmf(x: int, sigma: float) -> float:
    """P(X = x) for X ~ N_Z(0, sigma^2)."""
    _check_positive("sigma", sigma)
    z, _ = _dg_norm_and_second_moment(sigma)
    return math.exp(-x * x / (2.0 * sigma * sigma)) / z


def discrete_gaussian_variance(sigma: float) -> float:
    """Var(X) for X ~ N_Z(0, sigma^2); strictly below sigma^2 (CKS), equal to it in double
    precision once exp(-2 pi^2 sigma^2) is negligible, i.e. for sigma >~ 1.5."""
    _check_positive("sigma", sigma)
    z, s = _dg_norm_and_second_moment(sigma)
    return s / z


def _dg_tail_direct(sigma: float) -> list[float]:
    """tail[q] = P(X > q) for q = 0 .. support, summed outside-in (no cancellation)."""
    n = _dg_direct_support(sigma)
    z, _ = _dg_norm_and_second_moment(sigma)
    tail = [0.0] * (n + 1)
    acc = 0.0
    for x in range(n, 0, -1):
        acc += math.exp(-x * x / (2.0 * sigma * sigma)) / z
        tail[x - 1] = acc
    return tail


def _dg_tail_euler_maclaurin(q: int, sigma: float) -> float:
    """P(X > q) for sigma >= _DIRECT_QUANTILE_SIGMA via Euler-Maclaurin on the exact pmf."""
    # sum_{x>=a} g(x) = int_a^inf g + g(a)/2 - g'(a)/12 + g'''(a)/720 - g^(5)(a)/30240 + R, with
    # g^(n)(a) = (-1/sigma)^n He_n(u) g(a), u = a/sigma. R is O(g(a) / sigma^6) relative, i.e.
    # below 1e-17 of the tail for sigma >= 256: the result is the exact tail to double precision.
    a = q + 1
    u = a / sigma
    g = math.exp(-0.5 * u * u)
    integral = sigma * math.sqrt(math.pi / 2.0) * math.erfc(u / math.sqrt(2.0))
    he1, he3, he5 = u, u**3 - 3 * u, u**5 - 10 * u**3 + 15 * u
    corr = 0.5 + he1 / (12 * sigma) - he3 / (720 * sigma**3) + he5 / (30240 * sigma**5)
    z, _ = _dg_norm_and_second_moment(sigma)
    return (integral + g * corr) / z


def discrete_gaussian_quantile(sigma: float, coverage: float = 0.95) -> int:
    """Smallest integer q >= 0 with P(|X| <= q) >= coverage, X ~ N_Z(0, sigma^2)."""
    _check_positive("sigma", sigma)
    _check_coverage(coverage)
    alpha = 1.0 - coverage
    if sigma < _DIRECT_QUANTILE_SIGMA:
        tail = _dg_tail_direct(sigma)
        return next((q for q, mass in enumerate(tail) if 2.0 * mass <= alpha), len(tail))
    # The normal quantile is within a few units of the answer; walk to it using the exact tail.
    q = max(0, math.floor(sigma * NormalDist().inv_cdf(1.0 - alpha / 2.0)))
    while 2.0 * _dg_tail_euler_maclaurin(q, sigma) > alpha:
        q += 1
    while q > 0 and 2.0 * _dg_tail_euler_maclaurin(q - 1, sigma) <= alpha:
        q -= 1
    return q


def _dl_ratio(scale: float) -> float:
    """exp(-1/scale), the geometric ratio of the discrete Laplace."""
    _check_positive("scale", scale)
    return math.exp(-1.0 / scale)


def discrete_laplace_pmf(x: int, scale: float) -> float:
    """P(X = x) = tanh(1/(2 scale)) * exp(-|x|/scale)."""
    _check_positive("scale", scale)
    return math.tanh(0.5 / scale) * math.exp(-abs(x) / scale)


def discrete_laplace_variance(scale: float) -> float:
    """Var(X) = 2r/(1-r)^2 with r = exp(-1/scale), written as 1/(2 sinh^2(1/(2 scale)))."""
    _check_positive("scale", scale)
    return 0.5 / math.sinh(0.5 / scale) ** 2


def _dl_tail(q: int, scale: float) -> float:
    """P(|X| > q) = 2 r^(q+1) / (1 + r), r = exp(-1/scale)."""
    r = _dl_ratio(scale)
    return 2.0 * math.exp(-(q + 1) / scale) / (1.0 + r)


def discrete_laplace_quantile(scale: float, coverage: float = 0.95) -> int:
    """Smallest integer q >= 0 with P(|X| <= q) >= coverage (closed form, then checked)."""
    _check_positive("scale", scale)
    _check_coverage(coverage)
    alpha = 1.0 - coverage
    r = _dl_ratio(scale)
    # 2 r^(q+1)/(1+r) <= alpha  <=>  q + 1 >= scale * ln(2 / (alpha (1 + r))).
    q = max(0, math.ceil(scale * math.log(2.0 / (alpha * (1.0 + r)))) - 1)
    # The log can be off by an ulp at an exact boundary; settle it on the tail itself.
    while _dl_tail(q, scale) > alpha:
        q += 1
    while q > 0 and _dl_tail(q - 1, scale) <= alpha:
        q -= 1
    return q
