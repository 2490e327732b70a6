"""Experiments (a)-(f) of the evaluation (README "Evaluation"). Each returns plain data.

Rules:
1. Every number is computed by the service's own pure functions (``eval.releases``), against
   the exact truth at release time (``eval.simulate``); randomness is seeded per experiment
   and configuration (``eval.randomness``), so a run is reproducible from its seed.
2. The accounting period is the calendar month; a counter run covers one month (T = its days)
   and its run epsilon is ``accounting.default_counter_epsilon(T, eps, delta)``: the same
   monthly spend as T independent discrete-Gaussian releases at the per-release eps (the
   service default). Epsilon on the x-axis is the per-release eps for every mechanism.
3. Only months whose every MAU window lies inside the stream are evaluated (the first
   ``window - 1`` days are warm-up), for DAU and MAU alike.
4. Counter total error = noise + freezing bias; both parts are reported separately.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import math
import time
from dataclasses import dataclass
from typing import get_args

import msgspec
import numpy as np

from actors import accountant, sketches
from actors.privacy import accounting, counters, mechanisms, noise
from actors.settings import COUNTER_MECHANISMS, EngineSettings
from actors.state import membership, periods
from eval import releases as rl
from eval import simulate
from eval.randomness import SeededSource, numpy_rng
from eval.releases import CounterTrace, Releases
from eval.simulate import ChurnParams, Stream, Truth
from journal.events import SketchImpl

METRICS = ("dau", "mau")
INDEPENDENT = ("gaussian", "laplace")
# Evaluated mechanisms: the service's four, plus the discrete Laplace calibrated to the same
# monthly spend as the others (at the per-release epsilon the Laplace cannot release every day
# of a month within the cap: pure-DP Laplace composes linearly, see experiment (d)).
SAME_SPEND = "laplace_same_spend"
EVAL_MECHANISMS = ("gaussian", "laplace", SAME_SPEND, "sqrt", "tree")


@dataclass(frozen=True)
class Config:
    quick: bool
    seed: int
    n_users: int
    n_days: int
    start: dt.date = simulate.DEFAULT_START
    window: int = 30
    delta: float = 1e-6
    epsilon: tuple[tuple[str, float], ...] = (("dau", 0.3), ("mau", 0.5))
    cap: tuple[tuple[str, float], ...] = (("dau", 3.0), ("mau", 5.0))
    period_cap: float = 5.5  # PERIOD_BUDGET_TOTAL: everything charged to one period
    w_bound: int = 2
    w_grid: tuple[int, ...] = (2, 4, 6, 8)
    noise_w_max: int = 8  # plans (exact sensitivity search) beyond this w are skipped
    eps_grid: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
    reps: int = 100
    lg_ks: tuple[int, ...] = (10, 12, 14)
    budget_months: tuple[int, ...] = (28, 30, 31)  # month lengths for the budget table
    sketch_every: int = 3  # sketches: every k-th evaluated MAU end day
    sensitivity_probes: int = 300  # sketches: users removed one at a time
    sketch_lg_k: int = 12  # sketches: the size the scaling rows use (the SKETCH_LG_K default)
    scaling_dau: tuple[int, ...] = (10_000, 100_000, 1_000_000)  # sketches: synthetic DAU sizes

    def eps(self, metric: str) -> float:
        return dict(self.epsilon)[metric]

    def budget_cap(self, metric: str) -> float:
        return dict(self.cap)[metric]


def make_config(quick: bool, seed: int) -> Config:
    defaults = EngineSettings()
    base = {
        "seed": seed,
        "window": defaults.mau_window_days,
        "delta": defaults.delta,
        "epsilon": (("dau", defaults.epsilon_dau), ("mau", defaults.epsilon_mau)),
        "cap": (("dau", defaults.dau_budget_total), ("mau", defaults.mau_budget_total)),
        "period_cap": defaults.period_budget_total,
        "w_bound": defaults.w_bound,
    }
    if quick:
        return Config(
            quick=True,
            n_users=2_000,
            n_days=59,
            eps_grid=(0.3, 0.5, 1.0),
            reps=20,
            noise_w_max=4,
            sketch_every=7,
            sensitivity_probes=40,
            scaling_dau=(10_000, 50_000),
            lg_ks=(8, 10, 12),
            budget_months=(28,),
            **base,
        )
    return Config(quick=False, n_users=20_000, n_days=120, **base)


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    stream: Stream
    truth: Truth
    months: list[tuple[periods.Period, slice]]

    @property
    def name(self) -> str:
        return self.stream.name

    def days(self) -> np.ndarray:
        return np.concatenate([np.arange(s.start, s.stop) for _, s in self.months])


def evaluated_days(cfg: Config) -> np.ndarray:
    months = simulate.calendar_months(periods.day_of(cfg.start), cfg.n_days, cfg.window - 1)
    return np.concatenate([np.arange(s.start, s.stop) for _, s in months])


def sketch_ends(cfg: Config) -> list[int]:
    return [int(d) for d in evaluated_days(cfg)[:: cfg.sketch_every]]


def build_workload(stream: Stream, cfg: Config, keep_windows=()) -> Workload:
    truth = simulate.exact_truth(stream, cfg.window, keep_windows)
    months = simulate.month_slices(stream, cfg.window - 1)
    if not months:
        raise ValueError("the stream holds no calendar month after the MAU warm-up")
    return Workload(stream, truth, months)


def build_workloads(cfg: Config) -> dict[str, Workload]:
    kw = {"n_users": cfg.n_users, "n_days": cfg.n_days, "start": cfg.start}
    realistic = simulate.realistic_stream(cfg.seed, **kw)
    adversarial = simulate.adversarial_stream(cfg.seed, window=cfg.window, **kw)
    return {
        "realistic": build_workload(realistic, cfg, sketch_ends(cfg)),
        "adversarial": build_workload(adversarial, cfg),
    }


class TraceCache:
    """The flippancy reduction per (workload, metric, month, w): noise-free, computed once."""

    def __init__(self) -> None:
        self._traces: dict[tuple, CounterTrace] = {}

    def get(self, wl: Workload, metric: str, period: periods.Period, w: int) -> CounterTrace:
        key = (wl.stream.fingerprint(), metric, period.label, w)
        if key not in self._traces:
            self._traces[key] = rl.counter_trace(wl.stream, wl.truth, metric, period, w)
        return self._traces[key]


def _source(cfg: Config, *label: object) -> SeededSource:
    return SeededSource(cfg.seed, ":".join(str(x) for x in label))


def run_epsilon(T: int, eps: float, delta: float) -> float:
    return accounting.default_counter_epsilon(T, eps, delta)


@functools.lru_cache(maxsize=256)
def laplace_same_spend_epsilon(T: int, eps: float, delta: float, rtol: float = 1e-3) -> float:
    """Largest per-release Laplace epsilon (to ``rtol``) whose T releases compose (PLD) to at
    most the monthly spend of T discrete-Gaussian releases at ``eps`` (= the counter run epsilon)."""
    target = run_epsilon(T, eps, delta)

    def spend(e: float) -> float:
        return accounting.compose_epsilon([accounting.Charge("discrete_laplace", e)] * T, delta)

    lo, hi = target / T, target / math.sqrt(T)  # basic composition always fits at target / T
    while spend(hi) <= target:
        lo, hi = hi, 2 * hi
    while hi - lo > rtol * lo:
        mid = 0.5 * (lo + hi)
        if spend(mid) <= target:
            lo = mid
        else:
            hi = mid
    return lo


def simulate_releases(
    cfg: Config,
    wl: Workload,
    metric: str,
    mechanism: str,
    eps: float,
    reps: int,
    traces: TraceCache,
    w: int | None = None,
) -> Releases:
    """Daily releases over the evaluated months, ``reps`` independent repetitions."""
    w = cfg.w_bound if w is None else w
    parts = []
    for period, sl in wl.months:
        rng = _source(cfg, "releases", wl.name, metric, mechanism, eps, period.label, w)
        if mechanism in INDEPENDENT:
            parts.append(rl.independent_releases(mechanism, eps, cfg.delta, wl.truth.counts(metric)[sl], reps, rng))
        elif mechanism == SAME_SPEND:
            e = laplace_same_spend_epsilon(period.days, eps, cfg.delta)
            parts.append(rl.independent_releases("laplace", e, cfg.delta, wl.truth.counts(metric)[sl], reps, rng))
        else:
            trace = traces.get(wl, metric, period, w)
            parts.append(
                rl.counter_releases(mechanism, trace, run_epsilon(period.days, eps, cfg.delta), cfg.delta, reps, rng)
            )
    return rl.concat(parts)


def error_stats(r: Releases) -> dict:
    err = r.error.astype(float)
    noise_part = r.noise.astype(float)
    bias = (r.counted - r.truth).astype(float)
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "mean_error": float(np.mean(err)),
        "noise_rmse": float(np.sqrt(np.mean(noise_part**2))),
        "bias_rms": float(np.sqrt(np.mean(bias**2))),
        "mean_bias": float(np.mean(bias)),
        "mean_truth": float(np.mean(r.truth)),
        "releases": int(err.size),
    }


# --------------------------------------------------------------------------------------------
# (a) error vs epsilon   (c) coverage   -- one pass over the release simulations
# --------------------------------------------------------------------------------------------


def error_vs_epsilon(cfg: Config, workloads: dict[str, Workload], traces: TraceCache) -> tuple[dict, dict]:
    """(a) RMSE/MAE vs per-release epsilon per mechanism; also returns the releases at the
    default epsilon of each metric (for coverage, the decision and the time-series plot)."""
    out: dict = {"eps_grid": list(cfg.eps_grid), "delta": cfg.delta, "w_bound": cfg.w_bound, "streams": {}}
    at_default: dict = {}
    grid = sorted(set(cfg.eps_grid) | {cfg.eps(m) for m in METRICS})
    out["eps_grid"] = grid
    month_T = sorted({p.days for wl in workloads.values() for p, _ in wl.months})
    out["run_epsilon"] = {str(T): [run_epsilon(T, e, cfg.delta) for e in grid] for T in month_T}
    out["laplace_same_spend_epsilon"] = {
        str(T): [laplace_same_spend_epsilon(T, e, cfg.delta) for e in grid] for T in month_T
    }
    for name, wl in workloads.items():
        out["streams"][name] = {}
        for metric in METRICS:
            per_mech = {}
            for mech in EVAL_MECHANISMS:
                rows = []
                for eps in grid:
                    r = simulate_releases(cfg, wl, metric, mech, eps, cfg.reps, traces)
                    rows.append(error_stats(r))
                    if eps == cfg.eps(metric):
                        at_default[(name, metric, mech)] = r
                per_mech[mech] = {k: [row[k] for row in rows] for k in rows[0]}
            out["streams"][name][metric] = per_mech
    return out, at_default


def coverage(cfg: Config, at_default: dict) -> dict:
    """(c) Fraction of releases whose [lower_95, upper_95] contains the truth (and, for
    counters, the counted total: the noise-only truth)."""
    out: dict = {"nominal": mechanisms.COVERAGE, "streams": {}}
    for (name, metric, mech), r in at_default.items():
        cov_t = r.covers_truth()
        cov_c = r.covers_counted()
        n = cov_t.size
        p = float(cov_t.mean())
        entry = {
            "epsilon": cfg.eps(metric),
            "coverage_truth": p,
            "stderr": math.sqrt(max(p * (1 - p), 1e-12) / n),
            "coverage_counted": float(cov_c.mean()),
            "mean_bias": float(np.mean(r.counted - r.truth)),
            "mean_half_width": float(np.mean(r.upper - r.lower) / 2),
            "releases": int(n),
            "runs": int(r.estimate.shape[0]) if mech in COUNTER_MECHANISMS else None,
        }
        out["streams"].setdefault(name, {}).setdefault(metric, {})[mech] = entry
    return out


def example_series(cfg: Config, workloads: dict[str, Workload], at_default: dict) -> dict:
    """One repetition per mechanism at the default epsilon, for the time-series figure."""
    out: dict = {}
    for (name, metric, mech), r in at_default.items():
        wl = workloads[name]
        days = [periods.iso(wl.stream.first_day + int(d)) for d in wl.days()]
        block = out.setdefault(name, {}).setdefault(metric, {"days": days, "truth": r.truth.tolist()})
        block[mech] = {
            "estimate": r.estimate[0].tolist(),
            "lower": r.lower[0].tolist(),
            "upper": r.upper[0].tolist(),
            "counted": r.counted.tolist(),
        }
    return out


# --------------------------------------------------------------------------------------------
# (b) freezing bias vs W_BOUND
# --------------------------------------------------------------------------------------------


def _plan(kind: str, T: int, w: int, eps: float, delta: float) -> counters.CounterPlan:
    return mechanisms.counter_plan(kind, T, w, run_epsilon(T, eps, delta), delta, rl.LATTICE_BITS)


def freezing_bias(cfg: Config, workloads: dict[str, Workload], traces: TraceCache) -> dict:
    """(b) counted total minus true total, and frozen users, per W_BOUND; with the exact
    expected total error of each counter (noise variance + bias^2) at the default epsilon."""
    out: dict = {"w_grid": list(cfg.w_grid), "streams": {}, "noise_w_max": cfg.noise_w_max}
    for name, wl in workloads.items():
        for metric in METRICS:
            eps = cfg.eps(metric)
            cal = mechanisms.calibrate("gaussian", eps, cfg.delta)
            gauss_std = math.sqrt(noise.discrete_gaussian_variance(cal.params.sigma))
            rows = []
            for w in cfg.w_grid:
                bias, truth, mism, blocked, frozen_steps = [], [], [], [], []
                sq_err = {k: [] for k in COUNTER_MECHANISMS}
                noise_rms = {k: [] for k in COUNTER_MECHANISMS}
                for period, _ in wl.months:
                    tr = traces.get(wl, metric, period, w)
                    bias.append(tr.bias)
                    truth.append(tr.truth)
                    mism.append(tr.frozen_steps)  # frozen at step t == mismatched after it
                    blocked.append(tr.blocked_users)
                    frozen_steps.append(int(tr.frozen_steps.sum()))
                    if w <= cfg.noise_w_max:
                        for kind in COUNTER_MECHANISMS:
                            plan = _plan(kind, period.days, w, eps, cfg.delta)
                            var = np.array([counters.counter_noise_std(plan, t) ** 2 for t in range(1, plan.T + 1)])
                            sq_err[kind].append(var + tr.bias.astype(float) ** 2)
                            noise_rms[kind].append(var)
                b = np.concatenate(bias).astype(float)
                t = np.concatenate(truth).astype(float)
                row = {
                    "w": w,
                    "mean_bias": float(b.mean()),
                    "bias_rms": float(np.sqrt(np.mean(b**2))),
                    "relative_bias": float(b.mean() / t.mean()),
                    "mean_truth": float(t.mean()),
                    "mismatched_per_day": float(np.concatenate(mism).mean()),
                    "frozen_users_per_month": float(np.mean(blocked)),
                    "blocked_flips_per_month": float(np.mean(frozen_steps)),
                }
                for kind in COUNTER_MECHANISMS:
                    if sq_err[kind]:
                        row[f"{kind}_noise_rms"] = float(np.sqrt(np.concatenate(noise_rms[kind]).mean()))
                        row[f"{kind}_total_rmse"] = float(np.sqrt(np.concatenate(sq_err[kind]).mean()))
                    else:
                        row[f"{kind}_noise_rms"] = row[f"{kind}_total_rmse"] = None
                rows.append(row)
            block = {k: [r[k] for r in rows] for k in rows[0]}
            block["gaussian_noise_std"] = gauss_std
            block["epsilon"] = eps
            block["users"] = wl.stream.n_users
            out["streams"].setdefault(name, {})[metric] = block
    return out


# --------------------------------------------------------------------------------------------
# (d) releases per month that fit the caps
# --------------------------------------------------------------------------------------------


def _fits_after(first: accounting.Charge, each: accounting.Charge, cap: float, delta: float, limit: int = 400) -> int:
    """Largest n <= limit with compose([first] + [each] * n) <= cap (-1 if ``first`` alone is over)."""
    return accounting.releases_that_fit(each, cap, delta, limit, already=[first])


def budget_fit(cfg: Config) -> dict:
    """(d) releases per month within the default caps: tight PLD composition vs naive sums."""
    out: dict = {"delta": cfg.delta, "metrics": {}, "curves": {}}
    for metric in METRICS:
        eps, cap = cfg.eps(metric), cfg.budget_cap(metric)
        rows = {}
        for mech in INDEPENDENT:
            cal = mechanisms.calibrate(mech, eps, cfg.delta)
            rows[mech] = {
                "unit": "release",
                "epsilon_each": eps,
                "tight": accounting.releases_that_fit(cal.charge, cap, cfg.delta),
                "naive": math.floor(cap / eps + 1e-12),
                "month_of_31_epsilon": accounting.compose_epsilon([cal.charge] * 31, cfg.delta),
            }
        for T in cfg.budget_months:
            e = laplace_same_spend_epsilon(T, eps, cfg.delta)
            charge = mechanisms.calibrate("laplace", e, cfg.delta).charge
            rows[f"{SAME_SPEND}_T{T}"] = {
                "unit": "release",
                "epsilon_each": e,
                "tight": accounting.releases_that_fit(charge, cap, cfg.delta),
                "naive": math.floor(cap / e + 1e-12),
            }
        g = mechanisms.calibrate("gaussian", eps, cfg.delta).charge
        for kind in COUNTER_MECHANISMS:
            for T in cfg.budget_months:
                plan = _plan(kind, T, cfg.w_bound, eps, cfg.delta)
                charge = mechanisms.counter_charge(plan)
                run_eps = run_epsilon(T, eps, cfg.delta)
                runs = accounting.releases_that_fit(charge, cap, cfg.delta, limit=50)
                rows[f"{kind}_T{T}"] = {
                    "unit": "run",
                    "epsilon_each": run_eps,
                    "tight": runs,
                    "naive": math.floor(cap / run_eps + 1e-12),
                    "days_released": runs * T,
                    # independent Gaussian releases (revisions, other windows) left after one run
                    "extra_gaussian_after_one_run": _fits_after(charge, g, cap, cfg.delta) if runs else None,
                    "run_epsilon_composed": accounting.compose_epsilon([charge], cfg.delta),
                }
        out["metrics"][metric] = {"epsilon": eps, "cap": cap, "rows": rows}
        grid = [e for e in ((1.0,) if cfg.quick else (0.1, 0.2, 0.3, 0.5, 1.0)) if e <= cap]
        curve = {"eps": grid}
        for mech in INDEPENDENT:
            curve[mech] = [
                accounting.releases_that_fit(mechanisms.calibrate(mech, e, cfg.delta).charge, cap, cfg.delta)
                for e in grid
            ]
        curve["naive"] = [math.floor(cap / e + 1e-12) for e in grid]
        out["curves"][metric] = curve
    return out


def schedule_fit(cfg: Config) -> dict:
    """(d') The default schedule -- every DAU and every ``window``-day MAU of every day, forever --
    against the per-period caps, with accounting by the data a release reads: a period of L days
    is charged by its L DAU releases and by every MAU window that reads one of its days (the L
    ending in it and the ``window - 1`` ending after it). The service's own start-up check
    (``accountant.schedule_fit``: releases enumerated with ``periods.periods_read``, composed with
    the service's PLD accountant); ``extra_*`` are how many more releases of that size still fit
    (``accounting.releases_that_fit``); the ``sqrt`` column is the same schedule with a MAU
    counter run per month at the default run epsilon."""
    base = EngineSettings(
        epsilon_dau=cfg.eps("dau"),
        epsilon_mau=cfg.eps("mau"),
        delta=cfg.delta,
        mau_window_days=cfg.window,
        period_budget_total=cfg.period_cap,
        dau_budget_total=cfg.budget_cap("dau"),
        mau_budget_total=cfg.budget_cap("mau"),
    )
    dau = mechanisms.calibrate("gaussian", cfg.eps("dau"), cfg.delta).charge
    mau = mechanisms.calibrate("gaussian", cfg.eps("mau"), cfg.delta).charge
    sqrt = {f.period: f for f in accountant.schedule_fit(msgspec.structs.replace(base, mau_mechanism="sqrt"))}
    rows = []
    for fit in accountant.schedule_fit(base):
        n_dau, n_mau = fit.days, fit.charges - fit.days
        already = [dau] * n_dau + [mau] * n_mau
        rows.append(
            {
                "days": fit.days,
                "dau_releases": n_dau,
                "mau_releases": n_mau,
                "epsilon_combined": fit.epsilon,
                "epsilon_dau": fit.epsilon_dau,
                "epsilon_mau": fit.epsilon_mau,
                "naive_sum": n_dau * cfg.eps("dau") + n_mau * cfg.eps("mau"),
                "extra_mau_fit": accounting.releases_that_fit(mau, cfg.period_cap, cfg.delta, already=already),
                "extra_dau_fit": accounting.releases_that_fit(dau, cfg.period_cap, cfg.delta, already=already),
                "epsilon_combined_sqrt_config": sqrt[fit.period].epsilon,
                "sqrt_runs_reading_it": sqrt[fit.period].charges - n_dau,
            }
        )
    return {"period_cap": cfg.period_cap, "caps": dict(cfg.cap), "delta": cfg.delta, "window": cfg.window, "rows": rows}


# --------------------------------------------------------------------------------------------
# (e) sketches: set vs theta vs hllpp
# --------------------------------------------------------------------------------------------

SKETCH_IMPLS: tuple[SketchImpl, ...] = get_args(SketchImpl)
SERVICE_PIPELINE = "union of day sketches (service)"
WINDOW_PIPELINE = "one sketch of the window"


class _SketchCache:
    """Day sketches keyed by (impl, lg_k, the day's exact member set): a day is rebuilt only when
    its membership changed, as the day actors do (sketches interface rule 2)."""

    def __init__(self) -> None:
        self._cache: dict = {}

    def get(self, kind: sketches.SketchKind, members: np.ndarray) -> sketches.Sketch:
        key = (kind.impl, kind.lg_k, len(members), hashlib.blake2b(members.tobytes(), digest_size=16).digest())
        sketch = self._cache.get(key)
        if sketch is None:
            sketch = self._cache[key] = kind.build(members)
        return sketch


def _kinds(cfg: Config) -> list[sketches.SketchKind]:
    """``set`` once (it has no size), every inexact kind at every lg_k of the grid."""
    out = [sketches.kind("set", cfg.sketch_lg_k)]
    for impl in SKETCH_IMPLS:
        if impl != "set":
            out += [sketches.kind(impl, lg_k) for lg_k in cfg.lg_ks]
    return out


def sketch_comparison(cfg: Config, wl: Workload) -> dict:
    """(e) set, theta and hllpp on the realistic workload's MAU windows, through the service's
    ``sketches.summarize`` with cached day sketches: relative error of the union estimate, how
    often the sketch's own bounds cover the truth, memory per day, release (union) time; how far
    one user moves the estimate; and the same costs on synthetic windows at larger DAU."""
    cache = _SketchCache()
    ends = sorted(wl.truth.window_days)
    windows = {end: [np.flatnonzero(row).astype(np.int64) for row in wl.truth.window_days[end]] for end in ends}
    exact = {end: len(membership.union(days)) for end, days in windows.items()}
    out: dict = {"impls": list(SKETCH_IMPLS), "lg_k": list(cfg.lg_ks), "ends": len(ends), "rows": []}
    for kind in _kinds(cfg):
        rel, cover, exact_mode, seconds, day_bytes = [], [], [], [], []
        for end in ends:
            days = windows[end]
            cached = [cache.get(kind, d) for d in days]  # built once per day, like the day actors
            day_bytes += [len(sk.serialize()) for sk in cached]
            t0 = time.perf_counter()
            s = sketches.summarize(days, kind, cached)
            seconds.append(time.perf_counter() - t0)
            n = exact[end]
            rel.append((s.estimate - n) / n)
            cover.append(s.lower <= n <= s.upper)
            exact_mode.append(s.estimate == n)
        rel_a = np.asarray(rel)
        out["rows"].append(
            {
                "impl": kind.impl,
                "lg_k": None if kind.exact else kind.lg_k,
                "exact": kind.exact,
                "rse_theory": 0.0 if kind.exact else _rse_theory(kind),
                "mean_abs_rel_error": float(np.mean(np.abs(rel_a))),
                "rms_rel_error": float(np.sqrt(np.mean(rel_a**2))),
                "max_abs_rel_error": float(np.max(np.abs(rel_a))),
                "mean_rel_error": float(np.mean(rel_a)),
                "bounds_3sd_coverage": float(np.mean(cover)),
                "share_exact": float(np.mean(exact_mode)),
                "bytes_per_day": float(np.mean(day_bytes)),
                "release_ms": 1e3 * float(np.median(seconds)),
            }
        )
    out["mean_mau"] = float(np.mean([wl.truth.mau[e] for e in ends]))
    out["mean_dau"] = float(np.mean(wl.truth.dau[ends]))
    out["sensitivity"] = sketch_sensitivity(cfg, wl, cache)
    out["scaling"] = sketch_scaling(cfg)
    cal = mechanisms.calibrate("gaussian", cfg.eps("mau"), cfg.delta)
    out["gaussian_noise_std_mau"] = math.sqrt(noise.discrete_gaussian_variance(cal.params.sigma))
    return out


def _rse_theory(kind: sketches.SketchKind) -> float:
    """Textbook relative standard error: 1/sqrt(k) for theta (KMV), 1.04/sqrt(k) for HLL."""
    return (1.04 if kind.impl == "hllpp" else 1.0) / math.sqrt(1 << kind.lg_k)


def sketch_sensitivity(cfg: Config, wl: Workload, cache: _SketchCache) -> list[dict]:
    """Remove one user at a time from a MAU window and record how far each kind's estimate
    moves (the exact set moves by exactly 1, measured too). Two pipelines: the service's (union
    of the day sketches, rebuilding only the days that held the user) and one sketch built over
    the window's union. The maximum over random users is a lower bound on the sensitivity."""
    ends = sorted(wl.truth.window_days)
    end = ends[len(ends) // 2]
    block = wl.truth.window_days[end]
    days = [np.flatnonzero(row).astype(np.int64) for row in block]
    union = np.flatnonzero(block.any(axis=0)).astype(np.int64)
    rng = numpy_rng(cfg.seed, "sketch-sensitivity")
    probes = rng.choice(union, min(cfg.sensitivity_probes, len(union)), replace=False)
    rows = []
    for kind in _kinds(cfg):
        for pipeline in (SERVICE_PIPELINE, WINDOW_PIPELINE):
            if kind.exact and pipeline == WINDOW_PIPELINE:
                continue  # the same thing for an exact set
            if pipeline == SERVICE_PIPELINE:
                base_est = sketches.summarize(days, kind, [cache.get(kind, d) for d in days]).estimate
            else:
                base_est = kind.build(union).estimate()
            exact = len(union)
            moves = []
            for u in probes.tolist():
                if pipeline == SERVICE_PIPELINE:
                    held = block[:, u]
                    nd = [d[d != u] if h else d for d, h in zip(days, held, strict=True)]
                    cached = [kind.build(d) if h else cache.get(kind, d) for d, h in zip(nd, held, strict=True)]
                    est = sketches.summarize(nd, kind, cached).estimate
                else:
                    est = kind.build(union[union != u]).estimate()
                moves.append(base_est - est)
            m = np.abs(np.asarray(moves))
            moved = m > 1e-6
            rows.append(
                {
                    "impl": kind.impl,
                    "lg_k": None if kind.exact else kind.lg_k,
                    "pipeline": pipeline,
                    "end": periods.iso(wl.stream.first_day + end),
                    "exact": int(exact),
                    "estimate": float(base_est),
                    "estimation_mode": bool(abs(base_est - exact) > 1e-6 * exact),
                    "estimate_over_k": None if kind.exact else base_est / (1 << kind.lg_k),
                    "probes": len(m),
                    "share_moved": float(np.mean(moved)),
                    "max_move": float(m.max()),
                    "mean_move_when_moved": float(m[moved].mean()) if moved.any() else 0.0,
                }
            )
    return rows


def _median_seconds(fn, repeats: int = 3) -> float:
    """A timing on a shared machine: the median of a few runs."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def sketch_scaling(cfg: Config) -> list[dict]:
    """Costs at larger sizes than the simulated stream: a 30-day window whose days each hold
    ``dau`` members drawn from 5 x ``dau`` users. Per kind (at ``cfg.sketch_lg_k``): memory of a
    day, time to build a day's sketch (a day actor's rebuild), time of the release's
    ``summarize`` over cached day sketches (for ``set``: the exact union), and the window
    estimate's relative error."""
    rows = []
    rng = numpy_rng(cfg.seed, "sketch-scaling")
    for dau in cfg.scaling_dau:
        population = np.unique(rng.integers(-(2**63), 2**63 - 1, size=5 * dau, dtype=np.int64))
        days = [np.sort(rng.choice(population, dau, replace=False)) for _ in range(cfg.window)]
        truth = len(np.unique(np.concatenate(days)))
        for impl in SKETCH_IMPLS:
            kind = sketches.kind(impl, cfg.sketch_lg_k)
            t0 = time.perf_counter()
            built = [kind.build(d) for d in days]
            build_s = (time.perf_counter() - t0) / len(days)
            s = sketches.summarize(days, kind, built)
            release_s = _median_seconds(functools.partial(sketches.summarize, days, kind, built))
            rows.append(
                {
                    "dau": dau,
                    "window_users": truth,
                    "impl": impl,
                    "lg_k": None if kind.exact else kind.lg_k,
                    "bytes_per_day": float(np.mean([len(b.serialize()) for b in built])),
                    "build_ms_per_day": 1e3 * build_s,
                    "release_ms": 1e3 * release_s,
                    "rel_error": (s.estimate - truth) / truth,
                }
            )
    return rows


# --------------------------------------------------------------------------------------------
# (f) the decision
# --------------------------------------------------------------------------------------------


def decide(candidates: dict[str, dict], key: str = "rmse") -> dict:
    """The mechanism with the smallest total error; ties go to the earlier candidate."""
    ranking = sorted(candidates, key=lambda m: (candidates[m][key], list(candidates).index(m)))
    best = ranking[0]
    runner = ranking[1] if len(ranking) > 1 else None
    return {
        "best": best,
        "criterion": key,
        "ranking": ranking,
        "values": {m: candidates[m][key] for m in ranking},
        "margin_vs_runner_up": (candidates[runner][key] / candidates[best][key])
        if runner and candidates[best][key] > 0
        else None,
    }


def feasible(cfg: Config, mechanism: str, metric: str, T: int | None = None) -> tuple[bool, str]:
    """Can the mechanism publish every day of a T-day month (default: the longest month of the
    budget table, 31 in full mode) within the metric's cap?"""
    T = max(cfg.budget_months) if T is None else T
    eps, cap = cfg.eps(metric), cfg.budget_cap(metric)
    if mechanism in INDEPENDENT:
        n = accounting.releases_that_fit(mechanisms.calibrate(mechanism, eps, cfg.delta).charge, cap, cfg.delta)
        return n >= T, f"{n} daily releases fit in the cap"
    if mechanism == SAME_SPEND:
        e = laplace_same_spend_epsilon(T, eps, cfg.delta)
        spent = accounting.compose_epsilon([accounting.Charge("discrete_laplace", e)] * T, cfg.delta)
        return spent <= cap, f"eps {e:.4f} per release, month spends {spent:.3f}"
    charge = mechanisms.counter_charge(_plan(mechanism, T, cfg.w_bound, eps, cfg.delta))
    spent = accounting.compose_epsilon([charge], cfg.delta)
    return spent <= cap, f"one run spends {spent:.3f}"


def decision(cfg: Config, err: dict, workloads: dict[str, Workload], traces: TraceCache) -> dict:
    """(f) lowest total error on the realistic workload at the default budget, per metric,
    among the mechanisms that can publish every day of a month within the cap; plus how robust
    the choice is (other W_BOUND, other realistic workloads; exact expected errors from the
    noise variance and the measured freezing bias)."""
    out: dict = {
        "workload": "realistic",
        "delta": cfg.delta,
        "w_bound": cfg.w_bound,
        "window": cfg.window,
        "period": "calendar month",
        "metrics": {},
    }
    stream = err["streams"]["realistic"]
    for metric in METRICS:
        eps = cfg.eps(metric)
        i = err["eps_grid"].index(eps)
        table = {}
        for m in EVAL_MECHANISMS:
            row = {k: stream[metric][m][k][i] for k in ("rmse", "mae", "noise_rmse", "bias_rms", "mean_bias")}
            row["feasible"], row["why"] = feasible(cfg, m, metric)
            table[m] = row
        d = decide({m: r for m, r in table.items() if r["feasible"]})
        d["epsilon"] = eps
        d["table"] = table
        d["infeasible"] = [m for m, r in table.items() if not r["feasible"]]
        out["metrics"][metric] = d
    out["robustness"] = decision_robustness(cfg, workloads, traces)
    return out


ROBUSTNESS_WORKLOADS = {
    "realistic (default)": ChurnParams(),
    "stickier users": ChurnParams(beta_a=1.5, beta_b=2.0, churn_hazard=0.003, return_prob=0.003),
    "casual users": ChurnParams(beta_a=0.3, beta_b=2.0),
}


def expected_errors(cfg: Config, wl: Workload, traces: TraceCache, metric: str, w: int) -> dict:
    """Exact expected RMSE per mechanism: noise std for independent mechanisms; for counters
    sqrt(mean over days of noise variance + bias^2) on the measured freezing bias."""
    eps = cfg.eps(metric)
    out = {}
    for mech in INDEPENDENT:
        cal = mechanisms.calibrate(mech, eps, cfg.delta)
        var = (
            noise.discrete_gaussian_variance(cal.params.sigma)
            if mech == "gaussian"
            else noise.discrete_laplace_variance(cal.params.scale)
        )
        out[mech] = {"rmse": math.sqrt(var), "bias_rms": 0.0}
    var = [
        noise.discrete_laplace_variance(1.0 / laplace_same_spend_epsilon(p.days, eps, cfg.delta)) * p.days
        for p, _ in wl.months
    ]
    out[SAME_SPEND] = {"rmse": math.sqrt(sum(var) / sum(p.days for p, _ in wl.months)), "bias_rms": 0.0}
    for kind in COUNTER_MECHANISMS:
        sq, b2 = [], []
        for period, _ in wl.months:
            tr = traces.get(wl, metric, period, w)
            plan = _plan(kind, period.days, w, eps, cfg.delta)
            var = np.array([counters.counter_noise_std(plan, t) ** 2 for t in range(1, plan.T + 1)])
            sq.append(var + tr.bias.astype(float) ** 2)
            b2.append(tr.bias.astype(float) ** 2)
        out[kind] = {
            "rmse": float(np.sqrt(np.concatenate(sq).mean())),
            "bias_rms": float(np.sqrt(np.concatenate(b2).mean())),
        }
    return out


def decision_robustness(cfg: Config, workloads: dict[str, Workload], traces: TraceCache) -> list[dict]:
    rows = []
    for label, params in ROBUSTNESS_WORKLOADS.items():
        if label == "realistic (default)":
            wl = workloads["realistic"]
        else:
            stream = simulate.realistic_stream(
                cfg.seed, n_users=cfg.n_users, n_days=cfg.n_days, start=cfg.start, params=params
            )
            stream = dataclasses.replace(stream, name=f"realistic-{label.split()[0]}")
            wl = build_workload(stream, cfg)
        for w in sorted({cfg.w_bound, 4}):
            if w > cfg.noise_w_max:
                continue
            for metric in METRICS:
                errs = expected_errors(cfg, wl, traces, metric, w)
                d = decide({m: e for m, e in errs.items() if feasible(cfg, m, metric)[0]})
                rows.append(
                    {
                        "workload": label,
                        "w_bound": w,
                        "metric": metric,
                        "mean_truth": float(np.mean(wl.truth.counts(metric)[wl.days()])),
                        "best": d["best"],
                        "rmse": {m: errs[m]["rmse"] for m in EVAL_MECHANISMS},
                        "bias_rms": {m: errs[m]["bias_rms"] for m in EVAL_MECHANISMS},
                    }
                )
    return rows


# --------------------------------------------------------------------------------------------
# Streams overview
# --------------------------------------------------------------------------------------------


def stream_overview(cfg: Config, workloads: dict[str, Workload]) -> dict:
    out = {}
    for name, wl in workloads.items():
        days = wl.days()
        s = wl.stream
        flips = {}
        for metric in METRICS:
            per_month = [simulate.membership_flips(wl.truth.members(metric), sl) for _, sl in wl.months]
            f = np.concatenate(per_month)
            flips[metric] = {
                "mean": float(f.mean()),
                "p99": float(np.percentile(f, 99)),
                "max": int(f.max()),
                f"share_over_w{cfg.w_bound}": float(np.mean(f > cfg.w_bound)),
            }
        out[name] = {
            "users": s.n_users,
            "days": s.n_days,
            "first_day": periods.iso(s.first_day),
            "evaluated": f"{periods.iso(s.first_day + int(days[0]))}..{periods.iso(s.first_day + int(days[-1]))}",
            "months": [p.label for p, _ in wl.months],
            "events": s.n_events,
            "withdrawals": int((s.op == simulate.OP_MINUS).sum()),
            "erasures": len(s.erased_user),
            "fingerprint": s.fingerprint(),
            "mean_dau": float(wl.truth.dau[days].mean()),
            "mean_mau": float(wl.truth.mau[days].mean()),
            "flips_per_user_month": flips,
        }
    return out
