"""eval/ingest_plots.py reads what scripts/bench.py writes, and draws it."""

from __future__ import annotations

import json
import re

import pytest

from eval import ingest_plots
from eval import run as eval_run
from scripts import bench
from scripts.loadgen import Result


def point(connections: int, batch: int, latencies: list[float], ok: int) -> dict:
    r = Result(requests=ok, statuses={200: ok}, latencies=latencies, seconds=2.0)
    return bench.sweep_point(r, connections, batch)


def bench_json() -> dict:
    single = [point(c, 1, [0.001 * (i % 50 + c) for i in range(500)], 100 * c) for c in (16, 1, 4)]
    batch = [point(8, b, [0.01 * (i % 10 + 1) for i in range(100)], 50) for b in (5000, 100)]
    return {
        "ingest_sweep": {"single": single, "batch": batch, "seconds_per_point": 2.0},
        "batch_events_per_s": 300_000.0,  # above its target
        "single_p99_ms": 25.0,  # above its bound: not met
        "journal_seq": 1234,
        "load_generator": "python",
    }


def test_sweep_point_is_what_the_plots_read():
    p = point(4, 1, [0.002] * 98 + [0.5, 0.9], 100)
    assert p["events_per_s"] == 50.0 and p["p50_ms"] == 2.0 and p["p99_ms"] == 900.0
    assert len(p["latency_ms_quantiles"]) == 99 and p["latency_ms_quantiles"] == sorted(p["latency_ms_quantiles"])


def test_series_are_ordered_by_load():
    s = ingest_plots.sweep_series(bench_json(), "single")
    assert s["x"] == [1, 4, 16] and s["events_per_s"] == [50.0, 200.0, 800.0]
    assert ingest_plots.sweep_series(bench_json(), "batch")["x"] == [100, 5000]


def test_headline_compares_with_targets_in_the_right_direction():
    rows = {label: (value, met) for label, value, _, met in ingest_plots.headline(bench_json())}
    assert rows["batch ingest, events/s"] == (300_000.0, True)
    assert rows["single-event p99, ms"] == (25.0, False)
    assert "replay, events/s" not in rows  # absent from the JSON: not invented


def test_all_plots_write_pngs(tmp_path):
    paths = ingest_plots.all_plots(bench_json(), tmp_path)
    assert [p.name for p in paths] == list(ingest_plots.FIGURES)
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_cli_refuses_a_json_without_the_sweep(tmp_path, capsys):
    old = tmp_path / "latest.json"
    old.write_text(json.dumps({"batch_events_per_s": 1.0}))
    assert ingest_plots.main([str(old)]) == 1
    assert "ingest_sweep" in capsys.readouterr().err
    with pytest.raises(ValueError):
        ingest_plots.load(old)


def test_readme_ingest_figures_are_the_committed_run():
    """README "Benchmarks" shows the sweep of eval/results/bench_ingest.json: the figures exist and
    the numbers quoted beside them are that JSON's (a rerun must update both)."""
    from tests.support import ROOT

    committed = ingest_plots.load(ROOT / "eval" / "results" / "bench_ingest.json")
    readme = (ROOT / "README.md").read_text()
    for name in ("ingest_throughput_latency.png", "ingest_latency_quantiles.png"):
        assert f"](eval/results/{name})" in readme and (ROOT / "eval" / "results" / name).exists(), name
    single, batch = (ingest_plots.sweep_series(committed, kind) for kind in ("single", "batch"))
    text = " ".join(readme.split())
    assert " -> ".join(f"{round(v):,}" for v in single["events_per_s"]) + " events/s" in text
    assert " / ".join(f"{round(v / 1000)}k" for v in batch["events_per_s"]) in text
    assert "p99 " + " / ".join(f"{round(v)}" for v in batch["p99_ms"]) + " ms" in text
    assert not any(single["errors"] + batch["errors"]), "the README says no request failed"


def pngs(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_cli_draws_into_the_evaluations_plot_folder_by_default(tmp_path, monkeypatch, capsys):
    """Without --out the PNGs go to DATA_DIR/plots/EXPERIMENT_ID/, resolved as eval.run resolves
    them (env DATA_DIR; --experiment-id, else a UTC timestamp), not next to the bench JSON."""
    data = tmp_path / "data"
    (data / "bench").mkdir(parents=True)
    (data / "bench" / "latest.json").write_text(json.dumps(bench_json()))
    monkeypatch.setenv("DATA_DIR", str(data))
    assert ingest_plots.main(["--experiment-id", "sweep-1"]) == 0
    out = data / "plots" / "sweep-1"
    assert pngs(out) == sorted(ingest_plots.FIGURES)
    assert capsys.readouterr().out.split() == [str(out / name) for name in ingest_plots.FIGURES]
    assert pngs(data / "bench") == []

    # no experiment id: a fresh timestamped folder beside the one above, as eval.run names them
    assert ingest_plots.main([]) == 0
    (stamped,) = [d for d in (data / "plots").iterdir() if d.name != "sweep-1"]
    assert re.fullmatch(r"\d{8}T\d{6}Z", stamped.name) and pngs(stamped) == sorted(ingest_plots.FIGURES)
    assert stamped.parent == eval_run.plots_dir(None, stamped.name).parent


def test_cli_data_dir_flag_beats_the_environment_and_out_overrides_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "elsewhere"))
    data = tmp_path / "data"
    (data / "bench").mkdir(parents=True)
    (data / "bench" / "latest.json").write_text(json.dumps(bench_json()))
    assert ingest_plots.main(["--data-dir", str(data), "--experiment-id", "x"]) == 0
    assert pngs(data / "plots" / "x") == sorted(ingest_plots.FIGURES)
    assert not (tmp_path / "elsewhere").exists()

    chosen = tmp_path / "chosen"
    assert ingest_plots.main([str(data / "bench" / "latest.json"), "--out", str(chosen), "--experiment-id", "y"]) == 0
    assert pngs(chosen) == sorted(ingest_plots.FIGURES) and not (data / "plots" / "y").exists()
