"""eval/notebooks/evaluation.ipynb: valid, committed without outputs, reading the results JSON.

It is executed headlessly by ``.ci/run`` on a quick evaluation and a quick benchmark (and by
``make notebook``); this test keeps the committed file clean and pointed at the right inputs.
"""

from __future__ import annotations

import nbformat

from tests.support import ROOT

NOTEBOOK = ROOT / "eval" / "notebooks" / "evaluation.ipynb"


def read() -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


def test_no_outputs_are_committed():
    nb = read()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {i} holds outputs: clear them"
        assert "attachments" not in cell, f"cell {i} holds attachments"
    assert "widgets" not in nb.metadata


def test_it_reads_the_results_json_and_draws_every_readme_figure():
    source = "\n".join(c.source for c in read().cells if c.cell_type == "code")
    for needle in ("summary.json", "bench/latest.json", "EVAL_SUMMARY", "BENCH_JSON"):
        assert needle in source, needle
    for figure in ("error_vs_epsilon", "freezing_bias", "coverage", "budget_fit", "ingest_plots.all_plots"):
        assert figure in source, figure
    readme = (ROOT / "README.md").read_text()
    assert "eval/notebooks/evaluation.ipynb" in readme
