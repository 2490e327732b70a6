"""kill -9 at random moments and at the named moments that matter, 20 times; nothing lost, nothing
applied twice, nothing answered differently, and snapshot + tail == full replay every time.

Marked ``crash``: ``.ci/run`` runs it in its own block (about two minutes on the reference
machine); ``make test`` leaves it out so the everyday suite stays quick. The harness and what it
checks are in ``tests/e2e/crash_harness.py``.
"""

from __future__ import annotations

import os

import pytest

from tests.e2e.crash_harness import FAULT_POINTS, Harness

pytestmark = [pytest.mark.e2e, pytest.mark.crash]


def test_twenty_kill_cycles_lose_nothing_and_restore_equals_replay(tmp_path, capsys):
    seed = int(os.environ.get("CRASH_SEED", "20251009"))
    figures = Harness(tmp_path / "data", cycles=20, seed=seed).run()
    with capsys.disabled():  # the figures belong in the CI log (README "Reliability")
        print(f"\ncrash cycles, seed {seed}:\n  " + "\n  ".join(figures.lines()))
    assert figures.cycles == 20
    assert figures.kills["random moment"] >= 8
    fired = {k.split(" ")[0] for k in figures.kills if k != "random moment"}
    assert fired == set(FAULT_POINTS)  # every named moment was reached (at boot, or while serving)
    assert figures.acknowledged_events > 0 and figures.erasures_acknowledged > 0
    assert figures.releases_answered > 0 and figures.purges_journaled > 0
    assert figures.restores_from_snapshot > 0  # the equality was not only ever checked vacuously
