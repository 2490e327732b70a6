"""Ingest throughput and latency plots from the benchmark JSON (``scripts/bench.py``).

    python -m eval.ingest_plots [BENCH_JSON] [--data-dir DIR] [--experiment-id ID] [--out DIR]

``BENCH_JSON`` defaults to ``DATA_DIR/bench/latest.json``. The PNGs go where every other plot of
the evaluation goes, ``DATA_DIR/plots/EXPERIMENT_ID/``, resolved by ``eval.run``'s own helpers
(``DATA_DIR``: ``--data-dir``, env ``DATA_DIR``, default ``./data``; ``EXPERIMENT_ID``:
``--experiment-id``, default a UTC timestamp); ``--out DIR`` puts them in ``DIR`` instead.

Input: the ``ingest_sweep`` block (single-event ingest at 1-32 connections, batch ingest at
100-5,000 events per request) and the headline numbers with their same-run baselines. Nothing
here measures anything: the benchmark does, against the real server.

Rules: pure reading of the JSON (``sweep_series``, ``headline``) is separate from drawing, so it
is tested without pixels; figures use matplotlib's Agg backend like ``eval/plots.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from eval.run import data_dir_of, plots_dir

FIGURES = ("ingest_throughput_latency.png", "ingest_latency_quantiles.png", "ingest_vs_targets.png")

# (key in the JSON, label, target, True when higher is better); the README's benchmark table
HEADLINE = (
    ("batch_events_per_s", "batch ingest, events/s", 250_000, True),
    ("single_events_per_s", "single-event ingest, events/s", 15_000, True),
    ("single_p99_ms", "single-event p99, ms", 20, False),
    ("get_dau_p99_ms", "GET /dau p99, ms", 5, False),
    ("erasure_p99_ms", "erasure -> applied p99, ms", 50, False),
    ("restart_to_ready_s", "restart to ready, s", 2, False),
    ("replay_events_per_s", "replay, events/s", 1_000_000, True),
)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    bench: dict[str, Any] = json.loads(Path(path).read_text())
    if "ingest_sweep" not in bench:
        raise ValueError(f"{path}: no ingest_sweep (written by scripts/bench.py since the sweep was added)")
    return bench


def sweep_series(bench: dict[str, Any], kind: str) -> dict[str, list[float]]:
    """One curve per measure over the sweep's x (connections for 'single', batch size for 'batch')."""
    points = bench["ingest_sweep"][kind]
    x_key = "connections" if kind == "single" else "batch"
    points = sorted(points, key=lambda p: p[x_key])
    return {
        "x": [p[x_key] for p in points],
        "events_per_s": [p["events_per_s"] for p in points],
        "p50_ms": [p["p50_ms"] for p in points],
        "p99_ms": [p["p99_ms"] for p in points],
        "errors": [p["errors"] for p in points],
    }


def headline(bench: dict[str, Any]) -> list[tuple[str, float, float, bool]]:
    """(label, measured, target, met) for every headline number the JSON holds."""
    rows = []
    for key, label, target, higher in HEADLINE:
        value = bench.get(key)
        if isinstance(value, int | float):
            rows.append((label, float(value), float(target), value >= target if higher else value < target))
    return rows


def throughput_latency(bench: dict[str, Any], out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, kind, xlabel in (
        (axes[0], "single", "concurrent connections (one event per request)"),
        (axes[1], "batch", "events per request (8 connections)"),
    ):
        s = sweep_series(bench, kind)
        ax.plot(s["x"], s["events_per_s"], marker="o", color="tab:blue", label="events/s")
        ax.set_xscale("log", base=2 if kind == "single" else 10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("events/s", color="tab:blue")
        ax.grid(True, alpha=0.3)
        lat = ax.twinx()
        lat.plot(s["x"], s["p50_ms"], marker="s", color="tab:orange", linestyle="--", label="p50 ms")
        lat.plot(s["x"], s["p99_ms"], marker="^", color="tab:red", label="p99 ms")
        lat.set_ylabel("request latency, ms", color="tab:red")
        lines = ax.get_lines() + lat.get_lines()
        ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper left")
        ax.set_title(f"{'single-event' if kind == 'single' else 'batch'} ingest", fontsize=10)
    seconds = bench["ingest_sweep"].get("seconds_per_point")
    fig.suptitle(
        f"Ingest throughput and latency (real server, durable journal; {seconds:g} s per point, "
        f"{bench.get('journal_seq', 0):,} events journaled at the end)",
        fontsize=10,
    )
    fig.tight_layout()
    path = out / FIGURES[0]
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def latency_quantiles(bench: dict[str, Any], out: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    qs = list(range(1, 100))
    for ax, kind in zip(axes, ("single", "batch")):
        for p in bench["ingest_sweep"][kind]:
            label = f"{p['connections']} conn" if kind == "single" else f"{p['batch']:,}/request"
            ax.plot(p["latency_ms_quantiles"], qs, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("request latency, ms")
        ax.set_title(f"{'single-event' if kind == 'single' else 'batch'} ingest: latency distribution", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("percentile")
    fig.tight_layout()
    path = out / FIGURES[1]
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def versus_targets(bench: dict[str, Any], out: Path) -> Path:
    rows = headline(bench)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.2))
    ratios = [(v / t) for _, v, t, _ in rows]
    colors = ["tab:green" if met else "tab:red" for *_, met in rows]
    ax.barh([label for label, *_ in rows], ratios, color=colors)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("measured / target (green: target met; for latencies lower is better)")
    ax.invert_yaxis()
    for i, (_, value, _, _) in enumerate(rows):
        ax.text(ratios[i], i, f" {value:,.1f}", va="center", fontsize=8)
    ax.set_title(f"Benchmark vs targets (load generator: {bench.get('load_generator', '?')})", fontsize=10)
    fig.tight_layout()
    path = out / FIGURES[2]
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def all_plots(bench: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [throughput_latency(bench, out), latency_quantiles(bench, out), versus_targets(bench, out)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.ingest_plots", description=__doc__.splitlines()[0])
    p.add_argument("bench_json", nargs="?", type=Path, default=None, help="default: DATA_DIR/bench/latest.json")
    p.add_argument("--data-dir", default=None, help="default: env DATA_DIR or ./data")
    p.add_argument(
        "--experiment-id", default=None, help="plot folder name under DATA_DIR/plots/ (default: UTC timestamp)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="write the PNGs here (default: DATA_DIR/plots/EXPERIMENT_ID/)"
    )
    a = p.parse_args(argv)
    bench_json = a.bench_json if a.bench_json is not None else data_dir_of(a.data_dir) / "bench" / "latest.json"
    try:
        bench = load(bench_json)
    except (OSError, ValueError) as exc:
        print(
            f"eval.ingest_plots: {exc} -- run `make bench` (or scripts/bench.py --events 100000) first", file=sys.stderr
        )
        return 1
    for path in all_plots(bench, a.out if a.out is not None else plots_dir(a.data_dir, a.experiment_id)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
