"""``eval.experiments`` and ``eval.run``: quick end-to-end run, coverage sanity, the decision."""

from __future__ import annotations

import json
import math

import pytest

from actors.privacy import accounting
from eval import experiments as ex
from eval import run as eval_run
from eval.randomness import SeededSource, resolve_seed

EXPECTED_PLOTS = {
    "error_vs_epsilon_realistic.png",
    "error_vs_epsilon_adversarial.png",
    "freezing_bias_vs_w.png",
    "coverage.png",
    "budget_fit.png",
    "sketches.png",
    "timeseries_realistic.png",
    "timeseries_adversarial.png",
    "decision.png",
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    summary = eval_run.run(
        quick=True, seed=20251009, experiment_id="quick-test", data_dir=data_dir, log=lambda *a: None
    )
    return data_dir / "plots" / "quick-test", summary


def test_quick_run_writes_plots_and_summaries(quick) -> None:
    out, summary = quick
    files = {p.name for p in out.iterdir()}
    assert files >= EXPECTED_PLOTS
    for name in EXPECTED_PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["experiment_id"] == "quick-test" and on_disk["config"]["quick"] is True
    assert set(on_disk["plots"]) == EXPECTED_PLOTS
    md = (out / "summary.md").read_text()
    for heading in ("## Decision (f)", "## (a)", "## (b)", "## (c)", "## (d)", "## (e)"):
        assert heading in md
    assert summary["decision"]["metrics"]["mau"]["best"] in ex.EVAL_MECHANISMS


def test_quick_gaussian_coverage_is_sane(quick) -> None:
    _, summary = quick
    for stream in ("realistic", "adversarial"):
        for metric in ("dau", "mau"):
            c = summary["coverage"]["streams"][stream][metric]["gaussian"]
            assert 0.90 <= c["coverage_truth"] <= 0.995, (stream, metric, c)
            # counters: the interval is about the noise, so it covers the counted total
            assert summary["coverage"]["streams"][stream][metric]["sqrt"]["coverage_counted"] >= 0.85


def test_quick_numbers_are_consistent(quick) -> None:
    _, s = quick
    err = s["error_vs_epsilon"]["streams"]["realistic"]
    for metric in ("dau", "mau"):
        g = err[metric]["gaussian"]["rmse"]
        assert g == sorted(g, reverse=True)  # more epsilon, less error
        for kind in ("sqrt", "tree"):  # total error is at least the freezing bias
            for total, bias in zip(err[metric][kind]["rmse"], err[metric][kind]["bias_rms"]):
                assert total >= 0.9 * bias
    fit = s["budget_fit"]["metrics"]
    assert fit["dau"]["rows"]["gaussian"]["tight"] > fit["dau"]["rows"]["gaussian"]["naive"]
    assert fit["mau"]["rows"]["laplace"]["tight"] == fit["mau"]["rows"]["laplace"]["naive"]
    bias = s["freezing_bias"]["streams"]
    assert bias["adversarial"]["mau"]["mean_bias"][0] < bias["realistic"]["mau"]["mean_bias"][0] <= 0
    sk = s["sketches"]
    assert sk["impls"] == ["set", "theta", "hllpp"]
    sens = sk["sensitivity"]
    assert all(row["max_move"] == 1.0 and row["share_moved"] == 1.0 for row in sens if row["impl"] == "set")
    assert all(row["max_move"] > 1.5 for row in sens if row["impl"] == "theta" and row["estimation_mode"])
    assert max(row["max_move"] for row in sens if row["impl"] == "hllpp") > 1.5  # not sensitivity 1 either
    exact = [r for r in sk["rows"] if r["impl"] == "set"]
    assert len(exact) == 1 and exact[0]["rms_rel_error"] == 0.0
    for r in sk["rows"]:
        if not r["exact"]:  # the sketches' own 3-sd bounds cover the truth on almost every window
            assert r["bounds_3sd_coverage"] >= 0.9, r
    by_impl = {(r["dau"], r["impl"]): r for r in sk["scaling"]}
    for dau in s["config"]["scaling_dau"]:
        assert by_impl[(dau, "hllpp")]["bytes_per_day"] < by_impl[(dau, "theta")]["bytes_per_day"]
        assert by_impl[(dau, "set")]["bytes_per_day"] == 8 * dau


def test_decision_picks_smaller_total_error() -> None:
    cands = {
        "gaussian": {"rmse": 8.0},
        "laplace": {"rmse": 10.7},
        "sqrt": {"rmse": 4.6},  # smaller total error wins, whatever its noise alone
        "tree": {"rmse": 9.1},
    }
    d = ex.decide(cands)
    assert d["best"] == "sqrt"
    assert d["ranking"] == ["sqrt", "gaussian", "tree", "laplace"]
    assert math.isclose(d["margin_vs_runner_up"], 8.0 / 4.6)
    # ties go to the earlier candidate; a different criterion is honoured
    assert ex.decide({"a": {"rmse": 1.0}, "b": {"rmse": 1.0}})["best"] == "a"
    assert ex.decide({"a": {"rmse": 1.0, "mae": 3.0}, "b": {"rmse": 2.0, "mae": 1.0}}, key="mae")["best"] == "b"


def test_laplace_same_spend_matches_the_counter_run_epsilon() -> None:
    T, eps, delta = 28, 0.5, 1e-6
    target = ex.run_epsilon(T, eps, delta)
    e = ex.laplace_same_spend_epsilon(T, eps, delta)
    spend = lambda x: accounting.compose_epsilon([accounting.Charge("discrete_laplace", x)] * T, delta)  # noqa: E731
    assert spend(e) <= target < spend(e * 1.01)


def test_seeds() -> None:
    a, b = SeededSource(1, "x"), SeededSource(1, "x")
    assert [a.randbelow(1000) for _ in range(20)] == [b.randbelow(1000) for _ in range(20)]
    assert [SeededSource(1, "y").randbelow(10**9) for _ in range(3)] != [
        SeededSource(2, "y").randbelow(10**9) for _ in range(3)
    ]
    assert resolve_seed(5) == 5


def test_resolve_seed_from_env(monkeypatch) -> None:
    monkeypatch.setenv("DEFAULT_SEED", "123")
    assert resolve_seed(None) == 123
    monkeypatch.delenv("DEFAULT_SEED")
    assert resolve_seed(None) == 20251009
