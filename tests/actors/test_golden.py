"""Golden streams: small fixed inputs with DAU/MAU known by hand, through the release pipeline."""

from __future__ import annotations

import pytest

from actors.privacy import counters, mechanisms
from tests.support import day, ingest, running_system
from tests.support import settings as engine_settings

# alice: Jan 30, Jan 31, Feb 2 ; bob: Jan 31 (withdrawn), Feb 1 ; carol: Feb 2 only, withdrawn then re-added
STREAM = [
    ("alice", "2025-01-30", 1),
    ("alice", "2025-01-31", 1),
    ("bob", "2025-01-31", 1),
    ("bob", "2025-01-31", 0),
    ("bob", "2025-02-01", 1),
    ("alice", "2025-02-02", 1),
    ("carol", "2025-02-02", 1),
    ("carol", "2025-02-02", 0),
    ("carol", "2025-02-02", 1),
    ("alice", "2025-01-31", 1),  # repeat: idempotent
]
IDS = {"alice": 1, "bob": 2, "carol": 3}
DAU = {"2025-01-30": 1, "2025-01-31": 1, "2025-02-01": 1, "2025-02-02": 2, "2025-02-03": 0}
MAU = {("2025-02-02", 30): 3, ("2025-02-02", 3): 3, ("2025-02-01", 2): 2, ("2025-01-31", 30): 1, ("2025-02-03", 2): 2}


@pytest.fixture
def zero_noise(monkeypatch):
    monkeypatch.setattr(mechanisms, "draw", lambda cal, rng=None: 0)
    monkeypatch.setattr(counters, "draw_counter_noise", lambda plan, rng=None: [0] * plan.rows)


@pytest.mark.parametrize("mau_mechanism", ["gaussian", "sqrt", "tree"])
async def test_golden_dau_and_mau_across_a_month_boundary(tmp_path, zero_noise, mau_mechanism):
    engine = engine_settings(mau_mechanism=mau_mechanism, dau_budget_total=10, mau_budget_total=10)
    async with running_system(tmp_path, engine) as system:
        await ingest(system, [(IDS[u], day(d), op) for u, d, op in STREAM])
        assert {d: (await system.release(("dau", day(d), 1))).estimate for d in DAU} == DAU
        got = {(e, w): (await system.release(("mau", day(e), w))).estimate for e, w in MAU}
        assert got == MAU
        spans = system.release_actor.book.latest(("mau", day("2025-02-02"), 30))
        assert spans.accounting_period == "2025-02"  # the window reaches into January
