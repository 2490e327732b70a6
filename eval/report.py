"""``summary.md``: the key numbers of a run as markdown tables, ready for the README."""

from __future__ import annotations

MECHS = ("gaussian", "laplace", "laplace_same_spend", "sqrt", "tree")


def _f(x, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return str(x)
    return f"{x:.{nd}f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def render(summary: dict) -> str:
    cfg = summary["config"]
    L: list[str] = []
    L.append(f"# Evaluation `{summary['experiment_id']}`")
    L.append("")
    L.append(
        f"Seed {cfg['seed']}, {'quick' if cfg['quick'] else 'full'} mode: {cfg['n_users']} users, {cfg['n_days']} days "
        f"from {cfg['start']}, {cfg['reps']} repetitions per point, delta {cfg['delta']:g}, MAU window "
        f"{cfg['window']} days, W_BOUND {cfg['w_bound']}, accounting period = calendar month; "
        f"runtime {summary['runtime_seconds']:.0f} s. Plots: `{summary['plots_dir']}`."
    )
    L.append("")

    # -- decision ------------------------------------------------------------------------
    dec = summary["decision"]
    L.append("## Decision (f): lowest total error on the realistic workload at the default budget")
    L.append("")
    for metric in ("mau", "dau"):
        d = dec["metrics"][metric]
        runner = d["ranking"][1]
        L.append(
            f"- **{metric.upper()}: `{d['best']}`** (eps {d['epsilon']} per release, delta {dec['delta']:g}, "
            f"W_BOUND {dec['w_bound']}, {dec['window']}-day window, calendar months): total RMSE "
            f"{d['values'][d['best']]:.1f} users vs {d['values'][runner]:.1f} for `{runner}` "
            f"(x{d['margin_vs_runner_up']:.2f})."
        )
    L.append("")
    T = max(int(k) for k in summary["error_vs_epsilon"]["run_epsilon"])
    L.append(
        f"Candidates must publish every day of a {T}-day month within the cap; counters and "
        f"`laplace_same_spend` spend what {T} daily Gaussian releases spend. Over the cap: "
        + "; ".join(
            f"{m.upper()} `{x}` ({dec['metrics'][m]['table'][x]['why']})"
            for m in ("dau", "mau")
            for x in dec["metrics"][m]["infeasible"]
        )
        + "."
    )
    L.append("")
    rows = []
    for metric in ("dau", "mau"):
        d = dec["metrics"][metric]
        for m in MECHS:
            t = d["table"][m]
            name = f"**{m}**" if m == d["best"] else m
            rows.append(
                [
                    metric.upper(),
                    name,
                    _f(t["rmse"]),
                    _f(t["mae"]),
                    _f(t["noise_rmse"]),
                    _f(t["bias_rms"]),
                    _f(t["mean_bias"]),
                    ("yes" if t["feasible"] else "**no**") + f" ({t['why']})",
                ]
            )
    L += _table(
        ["metric", "mechanism", "total RMSE", "MAE", "noise RMSE", "bias RMS", "mean bias", "fits the month's cap"],
        rows,
    )
    rob = dec["robustness"]
    if rob:
        L.append("Robustness (exact expected RMSE = sqrt(noise variance + measured bias^2); best in bold):")
        L.append("")
        rows = []
        for r in rob:
            rows.append(
                [r["workload"], r["w_bound"], r["metric"].upper(), _f(r["mean_truth"], 0)]
                + [f"**{_f(r['rmse'][m])}**" if m == r["best"] else _f(r["rmse"][m]) for m in MECHS]
            )
        L += _table(["workload", "W_BOUND", "metric", "mean truth", *MECHS], rows)

    # -- streams -------------------------------------------------------------------------
    L.append("## Streams")
    L.append("")
    rows = []
    for name, s in summary["streams"].items():
        fl = s["flips_per_user_month"]
        rows.append(
            [
                name,
                s["users"],
                s["events"],
                s["withdrawals"],
                s["erasures"],
                s["evaluated"],
                _f(s["mean_dau"], 0),
                _f(s["mean_mau"], 0),
                _f(fl["dau"]["mean"], 2),
                _f(fl["mau"]["mean"], 2),
                _f(100 * fl["mau"][f"share_over_w{cfg['w_bound']}"], 2),
            ]
        )
    L += _table(
        [
            "stream",
            "users",
            "events",
            "'-' events",
            "erasures",
            "evaluated days",
            "mean DAU",
            "mean MAU",
            "DAU flips/user/month",
            "MAU flips/user/month",
            f"% users with MAU flips > {cfg['w_bound']}",
        ],
        rows,
    )

    # -- (a) -----------------------------------------------------------------------------
    err = summary["error_vs_epsilon"]
    L.append("## (a) Error vs epsilon (total RMSE, users; counters at the same monthly spend)")
    L.append("")
    T = max(err["run_epsilon"], key=int)
    L.append(
        f"Counter run epsilon for a {T}-day month: "
        + ", ".join(f"{e:g} -> {r:.2f}" for e, r in zip(err["eps_grid"], err["run_epsilon"][T]))
        + "; "
        "`laplace_same_spend` per-release epsilon: "
        + ", ".join(f"{e:g} -> {r:.3f}" for e, r in zip(err["eps_grid"], err["laplace_same_spend_epsilon"][T]))
        + "."
    )
    L.append("")
    for stream, block in err["streams"].items():
        rows = []
        for metric in ("dau", "mau"):
            for m in MECHS:
                rows.append([metric.upper(), m] + [_f(v) for v in block[metric][m]["rmse"]])
        L.append(f"**{stream}** stream")
        L.append("")
        L += _table(["metric", "mechanism"] + [f"eps {e:g}" for e in err["eps_grid"]], rows)

    # -- (b) -----------------------------------------------------------------------------
    b = summary["freezing_bias"]
    L.append("## (b) Freezing bias vs W_BOUND (counted total - true total)")
    L.append("")
    rows = []
    for stream, block in b["streams"].items():
        for metric in ("dau", "mau"):
            x = block[metric]
            for i, w in enumerate(b["w_grid"]):
                rows.append(
                    [
                        stream,
                        metric.upper(),
                        w,
                        _f(x["mean_bias"][i]),
                        _f(100 * x["relative_bias"][i], 2),
                        _f(x["frozen_users_per_month"][i], 0),
                        _f(x["mismatched_per_day"][i]),
                        _f(x["sqrt_total_rmse"][i]),
                        _f(x["tree_total_rmse"][i]),
                        _f(x["gaussian_noise_std"]),
                    ]
                )
    L += _table(
        [
            "stream",
            "metric",
            "W_BOUND",
            "mean bias",
            "bias %",
            "frozen users/month",
            "wrongly counted/day",
            "sqrt total RMSE",
            "tree total RMSE",
            "gaussian RMSE",
        ],
        rows,
    )

    # -- (c) -----------------------------------------------------------------------------
    cov = summary["coverage"]
    L.append("## (c) Empirical coverage of the 95% interval at the default epsilon")
    L.append("")
    rows = []
    for stream, block in cov["streams"].items():
        for metric in ("dau", "mau"):
            for m in MECHS:
                c = block[metric][m]
                rows.append(
                    [
                        stream,
                        metric.upper(),
                        m,
                        f"{c['coverage_truth']:.3f} ± {c['stderr']:.3f}",
                        f"{c['coverage_counted']:.3f}" if m in ("sqrt", "tree") else "(= truth)",
                        _f(c["mean_bias"]),
                        _f(c["mean_half_width"]),
                        c["releases"],
                    ]
                )
    L += _table(
        [
            "stream",
            "metric",
            "mechanism",
            "covers truth",
            "covers counted (noise only)",
            "mean bias",
            "mean half-width",
            "releases",
        ],
        rows,
    )

    # -- (d) -----------------------------------------------------------------------------
    fit = summary["budget_fit"]
    L.append("## (d) Releases per month within the default caps")
    L.append("")
    rows = []
    for metric in ("dau", "mau"):
        m = fit["metrics"][metric]
        for name, r in m["rows"].items():
            extra = r.get("extra_gaussian_after_one_run")
            rows.append(
                [
                    metric.upper(),
                    f"{m['cap']}",
                    name,
                    r["unit"],
                    _f(r["epsilon_each"], 3),
                    r["tight"],
                    r["naive"],
                    r.get("days_released", "-"),
                    "-" if extra is None else extra,
                ]
            )
    L += _table(
        [
            "metric",
            "cap",
            "mechanism",
            "unit",
            "eps per unit",
            "fit (tight PLD)",
            "fit (naive sum)",
            "days released",
            "+ gaussian releases after one run",
        ],
        rows,
    )

    sched = summary.get("schedule_fit")
    if sched:
        L.append(
            f"## (d') The default schedule per period (every DAU and every {sched['window']}-day MAU of every day), "
            f"charged by the days each release reads; PERIOD_BUDGET_TOTAL {sched['period_cap']}"
        )
        L.append("")
        L += _table(
            [
                "days",
                "DAU charged",
                "MAU charged",
                "eps combined (PLD)",
                "eps DAU",
                "eps MAU",
                "naive sum",
                "+MAU fit",
                "+DAU fit",
                "eps combined, MAU sqrt",
                "sqrt runs reading it",
            ],
            [
                [
                    r["days"],
                    r["dau_releases"],
                    r["mau_releases"],
                    _f(r["epsilon_combined"], 3),
                    _f(r["epsilon_dau"], 3),
                    _f(r["epsilon_mau"], 3),
                    _f(r["naive_sum"], 1),
                    r["extra_mau_fit"],
                    r["extra_dau_fit"],
                    _f(r["epsilon_combined_sqrt_config"], 3),
                    r.get("sqrt_runs_reading_it", "-"),
                ]
                for r in sched["rows"]
            ],
        )

    # -- (e) -----------------------------------------------------------------------------
    L += _sketches(summary["sketches"])
    return "\n".join(L)


def _lg(x) -> str:
    return "-" if x is None else str(x)


def _sketches(sk: dict) -> list[str]:
    L = ["## (e) Sketches: set vs theta vs hllpp (MAU union estimate, the service's `summarize`)", ""]
    L += _table(
        [
            "SKETCH_IMPL",
            "lg_k",
            "RSE theory %",
            "mean abs rel. error %",
            "RMS rel. error %",
            "max abs rel. error %",
            "3-sd bounds cover exact",
            "bytes per day",
            "release ms (median)",
        ],
        [
            [
                r["impl"],
                _lg(r["lg_k"]),
                _f(100 * r["rse_theory"], 2),
                _f(100 * r["mean_abs_rel_error"], 2),
                _f(100 * r["rms_rel_error"], 2),
                _f(100 * r["max_abs_rel_error"], 2),
                _f(r["bounds_3sd_coverage"], 2),
                _f(r["bytes_per_day"], 0),
                _f(r["release_ms"], 2),
            ]
            for r in sk["rows"]
        ],
    )
    L.append(
        f"Mean MAU {sk['mean_mau']:.0f} (mean DAU {sk['mean_dau']:.0f}) over {sk['ends']} window ends; the DP noise "
        f"std at the default MAU epsilon is {sk['gaussian_noise_std_mau']:.1f} users "
        f"({100 * sk['gaussian_noise_std_mau'] / sk['mean_mau']:.2f}%). Bytes per day: the serialized day sketch "
        "(`set`: the exact sorted array, 8 bytes per member, which every mode keeps anyway for deletions)."
    )
    L.append("")
    L += _table(
        [
            "SKETCH_IMPL",
            "lg_k",
            "pipeline",
            "exact",
            "estimate",
            "estimation mode",
            "estimate/k",
            "% of probed users that move it",
            "max move",
            "mean move (when moved)",
        ],
        [
            [
                s["impl"],
                _lg(s["lg_k"]),
                s["pipeline"],
                s["exact"],
                _f(s["estimate"]),
                "yes" if s["estimation_mode"] else "no",
                _f(s["estimate_over_k"], 2),
                _f(100 * s["share_moved"], 1),
                _f(s["max_move"], 2),
                _f(s["mean_move_when_moved"], 2),
            ]
            for s in sk["sensitivity"]
        ],
    )
    sens = sk["sensitivity"]
    probes = sens[0]["probes"] if sens else 0
    worst = {
        impl: max((s for s in sens if s["impl"] == impl), key=lambda s: s["max_move"])
        for impl in sk["impls"]
        if any(s["impl"] == impl for s in sens)
    }
    moves = "; ".join(
        f"{impl} up to {w['max_move']:.1f} (lg_k {_lg(w['lg_k'])}, {w['pipeline']})" for impl, w in worst.items()
    )
    L.append(
        f"Removing one user ({probes} random users probed per row) moved the estimate by: {moves}. The exact set "
        "moves by exactly 1, the sensitivity the noise is calibrated to. A sketch in estimation mode moves by more "
        "(theta: where the user's hash falls and when the sketch rebuilds; HLL: whether the user holds a "
        "register's maximum), so the maxima here are lower bounds on the worst case, and noise calibrated for "
        'sensitivity 1 gives no stated (eps, delta): theta and hllpp releases are labelled "not formally DP".'
    )
    L.append("")
    L.append(
        "Costs at larger sizes (synthetic 30-day windows, every day `dau` members drawn from 5 x `dau` users; "
        "`build ms`: a day actor rebuilding its day's sketch after a change; `release ms`: the release's "
        "`summarize` over the cached day sketches -- for `set` the exact union of the window; every mode also "
        "keeps the exact day sets, 8 bytes per member, for deletions and erasures):"
    )
    L.append("")
    L += _table(
        [
            "DAU",
            "window users",
            "SKETCH_IMPL",
            "lg_k",
            "bytes per day",
            "build ms per day",
            "release ms",
            "rel. error %",
        ],
        [
            [
                r["dau"],
                r["window_users"],
                r["impl"],
                _lg(r["lg_k"]),
                _f(r["bytes_per_day"], 0),
                _f(r["build_ms_per_day"], 2),
                _f(r["release_ms"], 2),
                _f(100 * r["rel_error"], 2),
            ]
            for r in sk["scaling"]
        ],
    )
    return L
