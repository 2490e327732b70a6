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
from dataclasses import dataclass

import numpy as np

from actors import sketches
from actors.privacy import accounting, counters, mechanisms, noise
from actors.settings import COUNTER_MECHANISMS, EngineSettings
from actors.state import periods
from eval import releases as rl
from eval import simulate
from eval.randomness import SeededSource, numpy_rng
from eval.releases import CounterTrace, Releases
from eval.simulate import ChurnParams, Stream, Truth

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
    theta_every: int = 3  # theta: every k-th evaluated MAU end day
    sensitivity_probes: int = 300  # theta: users removed one at a time

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
            theta_every=7,
            sensitivity_probes=40,
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


def theta_ends(cfg: Config) -> list[int]:
    return [int(d) for d in evaluated_days(cfg)[:: cfg.theta_every]]


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
        "realistic": build_workload(realistic, cfg, theta_ends(cfg)),
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
                    mism.append(tr.mismatched)
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


def schedule_fit(cfg: Config, months: tuple[int, ...] = (28, 29, 30, 31)) -> dict:
    """(d') The default schedule -- every DAU and every ``window``-day MAU of every day, forever --
    against the per-period caps, with accounting by the data a release reads: a period of L days
    is charged by its L DAU releases and by every MAU window that reads one of its days (the L
    ending in it and the ``window - 1`` ending after it). Counted by enumerating releases with
    ``periods.periods_read``, composed with the service's PLD accountant; ``extra_*`` are how many
    more releases of that size still fit (``accounting.releases_that_fit``)."""
    dau = mechanisms.calibrate("gaussian", cfg.eps("dau"), cfg.delta).charge
    mau = mechanisms.calibrate("gaussian", cfg.eps("mau"), cfg.delta).charge
    first_of = {28: "2025-02-01", 29: "2024-02-01", 30: "2025-04-01", 31: "2025-01-01"}
    rows = []
    for L in months:
        period = periods.period_of(periods.parse_day(first_of[L]))
        span = range(period.first_day - 400, period.last_day + 400)
        n_dau = sum(1 for d in span if period in periods.periods_read(d, 1))
        n_mau = sum(1 for d in span if period in periods.periods_read(d, cfg.window))
        base = [dau] * n_dau + [mau] * n_mau
        runs = [
            accounting.Charge(
                "gaussian_counter",
                accounting.gaussian_counter_multiplier(run_epsilon(T, cfg.eps("mau"), cfg.delta), cfg.delta),
            )
            for T in (L, 31)  # its own run and the next period's (at most 31 days), whose windows read it
        ]
        rows.append(
            {
                "days": L,
                "dau_releases": n_dau,
                "mau_releases": n_mau,
                "epsilon_combined": accounting.compose_epsilon(base, cfg.delta),
                "epsilon_dau": accounting.compose_epsilon([dau] * n_dau, cfg.delta),
                "epsilon_mau": accounting.compose_epsilon([mau] * n_mau, cfg.delta),
                "naive_sum": n_dau * cfg.eps("dau") + n_mau * cfg.eps("mau"),
                "extra_mau_fit": accounting.releases_that_fit(mau, cfg.period_cap, cfg.delta, already=base),
                "extra_dau_fit": accounting.releases_that_fit(dau, cfg.period_cap, cfg.delta, already=base),
                "epsilon_combined_sqrt_config": accounting.compose_epsilon([dau] * n_dau + runs, cfg.delta),
            }
        )
    return {"period_cap": cfg.period_cap, "caps": dict(cfg.cap), "delta": cfg.delta, "window": cfg.window, "rows": rows}


# --------------------------------------------------------------------------------------------
# (e) theta vs set
# --------------------------------------------------------------------------------------------


class _ThetaCache:
    """Day sketches keyed by (lg_k, the day's exact member set): a day is rebuilt only when its
    membership changed, as the service does (``sketches`` rule 1)."""

    def __init__(self) -> None:
        self._cache: dict = {}

    def get(self, members: np.ndarray, lg_k: int):
        key = (lg_k, len(members), hashlib.blake2b(members.tobytes(), digest_size=16).digest())
        sketch = self._cache.get(key)
        if sketch is None:
            sketch = self._cache[key] = sketches.build_theta(members, lg_k)
        return sketch


def theta_vs_set(cfg: Config, wl: Workload) -> dict:
    """(e) relative error of the theta union estimate of MAU, and how much one user moves it."""
    cache = _ThetaCache()
    ends = sorted(wl.truth.window_days)
    out: dict = {"lg_k": list(cfg.lg_ks), "ends": len(ends), "rows": []}
    for lg_k in cfg.lg_ks:
        rel, cover, exact_mode = [], [], []
        for end in ends:
            days = [np.flatnonzero(row).astype(np.int64) for row in wl.truth.window_days[end]]
            s = sketches.summarize(days, impl="theta", lg_k=lg_k, theta=[cache.get(d, lg_k) for d in days])
            rel.append((s.estimate - s.exact) / s.exact)
            cover.append(s.lower <= s.exact <= s.upper)
            exact_mode.append(s.estimate == s.exact)
        rel_a = np.asarray(rel)
        out["rows"].append(
            {
                "lg_k": lg_k,
                "k": 1 << lg_k,
                "rse_theory": 1.0 / math.sqrt(1 << lg_k),
                "mean_abs_rel_error": float(np.mean(np.abs(rel_a))),
                "rms_rel_error": float(np.sqrt(np.mean(rel_a**2))),
                "max_abs_rel_error": float(np.max(np.abs(rel_a))),
                "mean_rel_error": float(np.mean(rel_a)),
                "bounds_3sd_coverage": float(np.mean(cover)),
                "share_exact": float(np.mean(exact_mode)),
            }
        )
    out["mean_mau"] = float(np.mean([wl.truth.mau[e] for e in ends]))
    out["sensitivity"] = theta_sensitivity(cfg, wl, cache)
    cal = mechanisms.calibrate("gaussian", cfg.eps("mau"), cfg.delta)
    out["gaussian_noise_std_mau"] = math.sqrt(noise.discrete_gaussian_variance(cal.params.sigma))
    return out


def theta_sensitivity(cfg: Config, wl: Workload, cache: _ThetaCache) -> list[dict]:
    """Remove one user at a time from a MAU window and record how far the theta estimate moves
    (set mode always moves by exactly 1). Two pipelines: the service's (union of the day
    sketches, rebuilding only the days that held the user) and one sketch built over the
    window's union. The maximum over random users is a lower bound on the sensitivity."""
    ends = sorted(wl.truth.window_days)
    end = ends[len(ends) // 2]
    block = wl.truth.window_days[end]
    days = [np.flatnonzero(row).astype(np.int64) for row in block]
    union = np.flatnonzero(block.any(axis=0)).astype(np.int64)
    rng = numpy_rng(cfg.seed, "theta-sensitivity")
    probes = rng.choice(union, min(cfg.sensitivity_probes, len(union)), replace=False)
    rows = []
    for lg_k in cfg.lg_ks:
        for pipeline in ("union of day sketches (service)", "one sketch of the window"):
            if pipeline.startswith("union"):
                base = sketches.summarize(days, impl="theta", lg_k=lg_k, theta=[cache.get(d, lg_k) for d in days])
                base_est, exact = base.estimate, base.exact
            else:
                base_est, exact = sketches.build_theta(union, lg_k).get_estimate(), len(union)
            moves = []
            for u in probes.tolist():
                if pipeline.startswith("union"):
                    held = block[:, u]
                    nd = [d[d != u] if h else d for d, h in zip(days, held)]
                    theta = [sketches.build_theta(d, lg_k) if h else cache.get(d, lg_k) for d, h in zip(nd, held)]
                    est = sketches.summarize(nd, impl="theta", lg_k=lg_k, theta=theta).estimate
                else:
                    est = sketches.build_theta(union[union != u], lg_k).get_estimate()
                moves.append(base_est - est)
            m = np.abs(np.asarray(moves))
            moved = m > 1e-9
            rows.append(
                {
                    "lg_k": lg_k,
                    "pipeline": pipeline,
                    "end": periods.iso(wl.stream.first_day + end),
                    "exact": int(exact),
                    "estimate": float(base_est),
                    "estimation_mode": bool(abs(base_est - exact) > 1e-9),
                    "estimate_over_k": base_est / (1 << lg_k),
                    "probes": len(m),
                    "share_moved": float(np.mean(moved)),
                    "max_move": float(m.max()),
                    "mean_move_when_moved": float(m[moved].mean()) if moved.any() else 0.0,
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
