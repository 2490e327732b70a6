"""HANDOFF "How to swap a sketch", checked through the real process: change SKETCH_IMPL, restart.

Day sketches are rebuilt in memory from the exact memberships (nothing of a sketch is journaled or
snapshotted), so a restart with another SKETCH_IMPL needs no migration; what was published keeps
its record and its `sketch_impl`, and new releases use the new kind and say so.
"""

from __future__ import annotations

import signal

import pytest

from tests.support import ServerProcess

pytestmark = pytest.mark.e2e


def test_swap_set_to_hllpp_and_back_by_restarting(tmp_path):
    data = tmp_path / "data"
    key = "k" * 32
    base = {"RELEASE_SCHEDULE": "on-demand", "API_KEY": key}
    events = [{"user_id": f"u{i}", "op": "+", "day": day} for i in range(300) for day in ("2025-07-01", "2025-07-02")]
    with ServerProcess(data, {**base, "SKETCH_IMPL": "set"}) as server:
        assert server.http.post("/event", {"events": events})[0] == 200
        status, exact_release, _ = server.http.get("/dau/2025-07-01")
        assert status == 200 and exact_release["sketch_impl"] == "set"
        server.kill(signal.SIGTERM)

    with ServerProcess(data, {**base, "SKETCH_IMPL": "hllpp", "SKETCH_LG_K": "12"}) as server:
        assert server.http.get("/dau/2025-07-01")[1] == exact_release  # published: never re-drawn
        status, sketched, _ = server.http.get("/dau/2025-07-02")
        assert status == 200 and sketched["sketch_impl"] == "hllpp"
        assert sketched["guarantee"] != exact_release["guarantee"]  # an inexact kind states its own
        assert abs(sketched["estimate"] - 300) < 100
        server.kill(signal.SIGTERM)

    with ServerProcess(data, {**base, "SKETCH_IMPL": "set"}) as server:
        status, window, _ = server.http.get("/mau?end=2025-07-02&window=2")
        assert status == 200 and window["sketch_impl"] == "set"
        assert server.http.get("/dau/2025-07-02")[1] == sketched  # still the hllpp record
