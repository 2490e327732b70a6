"""PNG figures of the evaluation (matplotlib, Agg backend). Input: the plain data of
``eval.experiments``; output: files under the experiment's plot folder."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

MECH_STYLE = {
    "gaussian": {"color": "tab:blue", "marker": "o"},
    "laplace": {"color": "tab:orange", "marker": "s"},
    "laplace_same_spend": {"color": "tab:brown", "marker": "D"},
    "sqrt": {"color": "tab:green", "marker": "^"},
    "tree": {"color": "tab:red", "marker": "v"},
}
STREAM_STYLE = {"realistic": {"color": "tab:blue", "marker": "o"}, "adversarial": {"color": "tab:red", "marker": "s"}}
METRIC_TITLE = {"dau": "DAU", "mau": "MAU (30-day window)"}
_DRAFT = {"on": False}  # quick mode: low resolution, no layout pass (about twice as fast)


def _save(fig, path: Path) -> Path:
    if _DRAFT["on"]:
        fig.savefig(path, dpi=60)
    else:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def error_vs_epsilon(err: dict, defaults: dict[str, float], out: Path) -> list[Path]:
    paths = []
    eps = np.asarray(err["eps_grid"])
    for stream, block in err["streams"].items():
        fig, axes = plt.subplots(1, 2, figsize=(12, 5))
        for ax, metric in zip(axes, ("dau", "mau")):
            for mech, st in block[metric].items():
                style = MECH_STYLE[mech]
                ax.plot(eps, st["rmse"], label=f"{mech} RMSE", **style)
                ax.plot(eps, st["mae"], linestyle="--", alpha=0.6, color=style["color"], label=f"{mech} MAE")
                if mech in ("sqrt", "tree"):
                    ax.plot(eps, st["noise_rmse"], linestyle=":", color=style["color"], label=f"{mech} noise only")
            ax.axvline(defaults[metric], color="grey", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("per-release epsilon")
            ax.set_ylabel("error (users)")
            ax.set_title(
                f"{METRIC_TITLE[metric]} - {stream} stream\ndelta={err['delta']:g}, W_BOUND={err['w_bound']}",
                fontsize=10,
            )
            ax.grid(True, which="both", alpha=0.3)
        axes[1].legend(fontsize=7, ncol=2)
        fig.suptitle(
            "counters and laplace_same_spend: same monthly spend as daily gaussian releases at that epsilon; "
            "laplace: per-release epsilon (a month of daily releases exceeds the cap)",
            fontsize=9,
        )
        paths.append(_save(fig, out / f"error_vs_epsilon_{stream}.png"))
    return paths


def freezing_bias(bias: dict, out: Path) -> list[Path]:
    w = bias["w_grid"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for row, metric in enumerate(("dau", "mau")):
        ax_b, ax_f, ax_t = axes[row]
        for stream, block in bias["streams"].items():
            b = block[metric]
            style = STREAM_STYLE.get(stream, {})
            ax_b.plot(w, 100 * np.asarray(b["relative_bias"]), label=stream, **style)
            ax_f.plot(w, b["frozen_users_per_month"], label=stream, **style)
            for kind, ls in (("sqrt", "-"), ("tree", "--")):
                vals = [np.nan if v is None else v for v in b[f"{kind}_total_rmse"]]
                ax_t.plot(w, vals, linestyle=ls, label=f"{stream} {kind}", **style)
            ax_t.axhline(
                b["gaussian_noise_std"],
                color="grey",
                linestyle=":",
                label="gaussian (no bias)" if stream == "realistic" else None,
            )
        ax_b.axhline(0, color="black", linewidth=0.6)
        ax_b.set_title(f"{METRIC_TITLE[metric]}: freezing bias (counted - true) / true")
        ax_b.set_ylabel("mean relative bias (%)")
        ax_f.set_title(f"{METRIC_TITLE[metric]}: users frozen per month-run")
        ax_f.set_ylabel("distinct users with a blocked flip")
        ax_t.set_title(f"{METRIC_TITLE[metric]}: expected total RMSE at default epsilon")
        ax_t.set_ylabel("sqrt(noise var + bias^2)")
        ax_t.set_yscale("log")
        for ax in (ax_b, ax_f, ax_t):
            ax.set_xlabel("W_BOUND (flips per user per month)")
            ax.set_xticks(w)
            ax.grid(True, alpha=0.3)
        ax_b.legend(fontsize=8)
        ax_t.legend(fontsize=7)
    return [_save(fig, out / "freezing_bias_vs_w.png")]


def coverage(cov: dict, out: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    streams = list(cov["streams"])
    for ax, metric in zip(axes, ("dau", "mau")):
        mechs = list(cov["streams"][streams[0]][metric])
        x = np.arange(len(mechs))
        width = 0.8 / (2 * len(streams))
        for i, stream in enumerate(streams):
            c = cov["streams"][stream][metric]
            style = STREAM_STYLE.get(stream, {})
            ax.bar(
                x + (2 * i) * width - 0.4 + width / 2,
                [c[m]["coverage_truth"] for m in mechs],
                width,
                color=style.get("color"),
                label=f"{stream}: covers truth",
            )
            ax.bar(
                x + (2 * i + 1) * width - 0.4 + width / 2,
                [c[m]["coverage_counted"] for m in mechs],
                width,
                color=style.get("color"),
                alpha=0.35,
                hatch="//",
                label=f"{stream}: covers counted (noise only)",
            )
        ax.axhline(cov["nominal"], color="black", linestyle="--", linewidth=0.8)
        ax.set_xticks(x, mechs)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{METRIC_TITLE[metric]}: empirical coverage of the 95% interval")
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("fraction of releases")
    axes[1].legend(fontsize=7, loc="lower left")
    return [_save(fig, out / "coverage.png")]


def budget_fit(fit: dict, out: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5))
    for ax, metric in zip(axes[:2], ("dau", "mau")):
        m = fit["metrics"][metric]
        names = list(m["rows"])
        x = np.arange(len(names))
        ax.bar(x - 0.2, [m["rows"][n]["tight"] for n in names], 0.4, label="tight (PLD)")
        ax.bar(x + 0.2, [m["rows"][n]["naive"] for n in names], 0.4, label="naive (sum of eps)")
        ax.axhline(31, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
        ax.set_title(
            f"{metric.upper()}: releases (counters: runs) per month\nwithin cap {m['cap']}, eps {m['epsilon']}, "
            "dotted: 31",
            fontsize=10,
        )
        ax.set_ylabel("count per month")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    ax = axes[2]
    for metric, ls in (("dau", "-"), ("mau", "--")):
        c = fit["curves"][metric]
        for mech in ("gaussian", "laplace", "naive"):
            ax.plot(c["eps"], c[mech], linestyle=ls, marker="o", label=f"{metric.upper()} {mech}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("per-release epsilon")
    ax.set_ylabel("releases per month within the cap")
    ax.set_title("tight vs naive composition (capped at 400)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return [_save(fig, out / "budget_fit.png")]


def sketches(sk: dict, out: Path) -> list[Path]:
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    inexact = [impl for impl in sk["impls"] if any(r["impl"] == impl and not r["exact"] for r in sk["rows"])]
    ax = axes[0][0]
    for impl, marker in zip(inexact, "os^v", strict=False):
        rows = [r for r in sk["rows"] if r["impl"] == impl]
        lg = [r["lg_k"] for r in rows]
        (line,) = ax.plot(lg, [100 * r["rms_rel_error"] for r in rows], marker=marker, label=f"{impl}: RMS rel. error")
        ax.plot(
            lg,
            [100 * r["rse_theory"] for r in rows],
            linestyle="--",
            alpha=0.6,
            color=line.get_color(),
            label=f"{impl}: theory",
        )
    ax.axhline(
        100 * sk["gaussian_noise_std_mau"] / sk["mean_mau"],
        color="tab:purple",
        linestyle=":",
        label="DP noise std / MAU (gaussian, default eps)",
    )
    ax.axhline(0.0, color="black", linewidth=0.8, label="set: exact")
    ax.set_xticks(sk["lg_k"])
    ax.set_xlabel("lg_k")
    ax.set_ylabel("% of exact MAU")
    ax.set_title(f"union estimate of MAU vs exact (mean MAU {sk['mean_mau']:.0f})", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)

    ax = axes[0][1]
    sens = [s for s in sk["sensitivity"] if s["pipeline"].startswith("union")]
    for impl, marker in zip(inexact, "os^v", strict=False):
        rows = [s for s in sens if s["impl"] == impl]
        ax.plot([s["lg_k"] for s in rows], [max(s["max_move"], 1e-3) for s in rows], marker=marker, label=impl)
    est_k = {s["lg_k"]: s["estimate_over_k"] for s in sens if s["lg_k"] is not None}
    ax.plot(list(est_k), list(est_k.values()), linestyle="--", marker="x", color="grey", label="estimate / k")
    ax.axhline(1.0, color="black", linestyle=":", label="set: exactly 1")
    ax.set_yscale("log")
    ax.set_xticks(sk["lg_k"])
    ax.set_xlabel("lg_k")
    ax.set_ylabel("max |change of the estimate|")
    ax.set_title("one user removed (service pipeline): the sensitivity is not 1", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)

    scaling = sk["scaling"]
    for ax, key, ylabel, title in (
        (axes[1][0], "bytes_per_day", "bytes per day", "memory of one day"),
        (axes[1][1], "release_ms", "ms per release", "release time: summarize of a 30-day window"),
    ):
        for impl, marker in zip(sk["impls"], "os^v", strict=False):
            rows = [r for r in scaling if r["impl"] == impl]
            ax.plot([r["dau"] for r in rows], [r[key] for r in rows], marker=marker, label=impl)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("DAU (members per day)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} (lg_k {next((r['lg_k'] for r in scaling if r['lg_k']), '-')})", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("SKETCH_IMPL: set vs theta vs hllpp")
    return [_save(fig, out / "sketches.png")]


def timeseries(series: dict, out: Path) -> list[Path]:
    paths = []
    for stream, block in series.items():
        fig, axes = plt.subplots(2, 1, figsize=(13, 8))
        for ax, metric in zip(axes, ("dau", "mau")):
            b = block[metric]
            x = np.arange(len(b["truth"]))
            ax.plot(x, b["truth"], color="black", linewidth=2, label="exact")
            for mech in MECH_STYLE:
                if mech in b:
                    ax.plot(
                        x,
                        b[mech]["estimate"],
                        label=f"{mech} (one run)",
                        linewidth=1,
                        **{"color": MECH_STYLE[mech]["color"]},
                    )
            if "sqrt" in b:
                ax.plot(
                    x,
                    b["sqrt"]["counted"],
                    color="tab:green",
                    linestyle=":",
                    label="counter: counted total (frozen users)",
                )
            ticks = x[:: max(1, len(x) // 8)]
            ax.set_xticks(ticks, [b["days"][i] for i in ticks], fontsize=8)
            ax.set_title(f"{METRIC_TITLE[metric]} - {stream} stream, default epsilon")
            ax.set_ylabel("users")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, ncol=3)
        paths.append(_save(fig, out / f"timeseries_{stream}.png"))
    return paths


def decision(dec: dict, out: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, metric in zip(axes, ("dau", "mau")):
        d = dec["metrics"][metric]
        mechs = list(d["table"])
        noise_part = [d["table"][m]["noise_rmse"] for m in mechs]
        bias_part = [d["table"][m]["bias_rms"] for m in mechs]
        total = [d["table"][m]["rmse"] for m in mechs]
        x = np.arange(len(mechs))
        ax.bar(x - 0.25, total, 0.25, label="total RMSE", color="tab:blue")
        ax.bar(x, noise_part, 0.25, label="noise RMSE", color="tab:cyan")
        ax.bar(x + 0.25, bias_part, 0.25, label="freezing bias RMS", color="tab:red")
        ax.set_yscale("log")
        labels = [
            f"{m}\n(best)" if m == d["best"] else (f"{m}\n(over cap)" if m in d["infeasible"] else m) for m in mechs
        ]
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_title(f"{metric.upper()} at eps {d['epsilon']}, delta {dec['delta']:g}, W_BOUND {dec['w_bound']}")
        ax.set_ylabel("users")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return [_save(fig, out / "decision.png")]


def all_plots(summary: dict, out: Path, draft: bool = False) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    _DRAFT["on"] = draft
    defaults = {m: summary["config"]["epsilon"][m] for m in ("dau", "mau")}
    paths: list[Path] = []
    paths += error_vs_epsilon(summary["error_vs_epsilon"], defaults, out)
    paths += freezing_bias(summary["freezing_bias"], out)
    paths += coverage(summary["coverage"], out)
    paths += budget_fit(summary["budget_fit"], out)
    paths += sketches(summary["sketches"], out)
    paths += timeseries(summary["examples"], out)
    paths += decision(summary["decision"], out)
    return paths
