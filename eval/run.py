"""Run the whole evaluation: ``python -m eval.run [--quick] [--seed N] [--experiment-id ID] [--data-dir DIR]``.

Writes PNG plots, ``summary.json`` and ``summary.md`` under ``DATA_DIR/plots/EXPERIMENT_ID/``
(``DATA_DIR``: ``--data-dir``, env ``DATA_DIR``, default ``./data``; ``EXPERIMENT_ID``: default a
UTC timestamp) and prints ``summary.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from eval import experiments as ex
from eval import plots, report
from eval.randomness import resolve_seed


def _plain(x):
    """JSON-ready: numpy scalars/arrays to Python, tuple keys to strings."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def default_experiment_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def data_dir_of(data_dir: str | os.PathLike | None = None) -> Path:
    """``DATA_DIR``: the argument when given, else env ``DATA_DIR``, else ``./data``."""
    return Path(data_dir if data_dir is not None else os.environ.get("DATA_DIR", "./data"))


def plots_dir(data_dir: str | os.PathLike | None = None, experiment_id: str | None = None) -> Path:
    """``DATA_DIR/plots/EXPERIMENT_ID/``, where every plot of the evaluation goes (``eval.ingest_plots``
    too); ``EXPERIMENT_ID`` defaults to the UTC timestamp. Not created here."""
    return data_dir_of(data_dir) / "plots" / (experiment_id or default_experiment_id())


def run(
    *,
    quick: bool = False,
    seed: int | None = None,
    experiment_id: str | None = None,
    data_dir: str | os.PathLike | None = None,
    log=print,
) -> dict:
    started = time.perf_counter()
    seed = resolve_seed(seed)
    experiment_id = experiment_id or default_experiment_id()
    out = plots_dir(data_dir, experiment_id)
    out.mkdir(parents=True, exist_ok=True)
    cfg = ex.make_config(quick, seed)
    timings: dict[str, float] = {}

    def step(name, fn, *args):
        t0 = time.perf_counter()
        result = fn(*args)
        timings[name] = round(time.perf_counter() - t0, 2)
        log(f"[eval] {name}: {timings[name]:.1f} s")
        return result

    workloads = step("streams", ex.build_workloads, cfg)
    traces = ex.TraceCache()
    err, at_default = step("a_error_vs_epsilon", ex.error_vs_epsilon, cfg, workloads, traces)
    cov = step("c_coverage", ex.coverage, cfg, at_default)
    bias = step("b_freezing_bias", ex.freezing_bias, cfg, workloads, traces)
    fit = step("d_budget_fit", ex.budget_fit, cfg)
    schedule = step("d_schedule_fit", ex.schedule_fit, cfg)
    sketch = step("e_sketches", ex.sketch_comparison, cfg, workloads["realistic"])
    decision = step("f_decision", ex.decision, cfg, err, workloads, traces)
    summary = {
        "experiment_id": experiment_id,
        "plots_dir": str(out),
        "config": {
            "quick": quick,
            "seed": seed,
            "n_users": cfg.n_users,
            "n_days": cfg.n_days,
            "start": cfg.start.isoformat(),
            "window": cfg.window,
            "delta": cfg.delta,
            "epsilon": dict(cfg.epsilon),
            "cap": dict(cfg.cap),
            "period_cap": cfg.period_cap,
            "w_bound": cfg.w_bound,
            "w_grid": list(cfg.w_grid),
            "eps_grid": list(cfg.eps_grid),
            "reps": cfg.reps,
            "lg_ks": list(cfg.lg_ks),
            "sketch_lg_k": cfg.sketch_lg_k,
            "scaling_dau": list(cfg.scaling_dau),
        },
        "streams": ex.stream_overview(cfg, workloads),
        "error_vs_epsilon": err,
        "coverage": cov,
        "freezing_bias": bias,
        "budget_fit": fit,
        "schedule_fit": schedule,
        "sketches": sketch,
        "decision": decision,
        "examples": ex.example_series(cfg, workloads, at_default),
    }
    summary = _plain(summary)
    t0 = time.perf_counter()
    summary["plots"] = [p.name for p in plots.all_plots(summary, out, draft=quick)]
    timings["plots"] = round(time.perf_counter() - t0, 2)
    summary["timings"] = timings
    summary["runtime_seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    md = report.render(summary)
    (out / "summary.md").write_text(md)
    log(md)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small streams and few repetitions (seconds)")
    p.add_argument("--seed", type=int, default=None, help="default: env DEFAULT_SEED or 20251009")
    p.add_argument("--experiment-id", default=None, help="plot folder name (default: UTC timestamp)")
    p.add_argument("--data-dir", default=None, help="default: env DATA_DIR or ./data")
    a = p.parse_args(argv)
    run(quick=a.quick, seed=a.seed, experiment_id=a.experiment_id, data_dir=a.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
