"""Auth, OpenAPI, metrics, readiness, erasure receipts and release responses over real HTTP."""

from __future__ import annotations

import msgspec

from gateway import openapi
from gateway.appkeys import SYSTEM
from gateway.schemas import ErasureOut, IngestOut, ReleaseOut, ReleasePage
from tests.gateway.conftest import gateway


async def test_api_key_guards_every_route_but_healthz(tmp_path):
    async with gateway(tmp_path, API_KEY="s3cret-key") as client:
        assert (await client.get("/healthz")).status == 200
        for method, path in [
            ("GET", "/readyz"),
            ("GET", "/metrics"),
            ("GET", "/budget"),
            ("GET", "/openapi.json"),
            ("POST", "/event"),
            ("GET", "/dau/2025-01-01"),
            ("GET", "/releases"),
        ]:
            resp = await client.request(method, path)
            assert resp.status == 401, path
            assert (await resp.json())["error"] == "unauthorized"
        wrong = await client.get("/readyz", headers={"X-API-Key": "s3cret-kex"})
        assert wrong.status == 401
        ok = await client.get("/readyz", headers={"X-API-Key": "s3cret-key"})
        assert ok.status == 200


async def test_openapi_lists_exactly_the_served_routes(tmp_path):
    async with gateway(tmp_path) as client:
        doc = await (await client.get("/openapi.json")).json()
        documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
        assert documented == openapi.app_routes(client.app)
        assert doc["openapi"].startswith("3.")
        for schema in ("EventIn", "BatchIn", "ReleaseOut", "IngestOut", "ErrorOut", "ErasureOut"):
            assert schema in doc["components"]["schemas"]


async def test_responses_decode_as_their_documented_schemas(tmp_path):
    async with gateway(tmp_path) as client:
        ingest = await client.post(
            "/event", json={"events": [{"user_id": f"u{i}", "op": "+", "day": "2025-04-02"} for i in range(5)]}
        )
        msgspec.json.decode(await ingest.read(), type=IngestOut, strict=True)
        dau = await client.get("/dau/2025-04-02")
        rel = msgspec.json.decode(await dau.read(), type=ReleaseOut)
        assert (
            rel.day == "2025-04-02"
            and rel.metric == "dau"
            and rel.version == "2"
            and rel.version_of == "release_format"
        )
        raw = await dau.json()
        assert not {"seen_seq", "exact", "count", "noise_value"} & set(raw)  # nothing derivable
        mau = await client.get("/mau?end=2025-04-02")
        rel = msgspec.json.decode(await mau.read(), type=ReleaseOut)
        assert rel.end == "2025-04-02" and rel.window == 30 and rel.mechanism == "gaussian"
        page = msgspec.json.decode(await (await client.get("/releases?limit=500")).read(), type=ReleasePage)
        assert page.total == len(page.releases) == 2
        erase = await client.post("/erasure", json={"user_id": "u1"})
        assert erase.status == 202
        receipt = msgspec.json.decode(await erase.read(), type=ErasureOut)
        again = await client.get(f"/erasure/{receipt.erasure_id}")
        assert msgspec.json.decode(await again.read(), type=ErasureOut).status in ("pending", "applied")


async def test_erasing_twice_and_erasing_an_unknown_user_are_receipted_noops(tmp_path):
    async with gateway(tmp_path) as client:
        system = client.app[SYSTEM]
        await client.post(
            "/event", json={"events": [{"user_id": u, "op": "+", "day": "2025-04-03"} for u in ("alice", "bob")]}
        )
        first = await (await client.post("/erasure", json={"user_id": "alice"})).json()
        after_first = (await system.collect()).days
        second = await client.post("/erasure", json={"user_id": "alice"})
        assert second.status == 202 and (await second.json())["erasure_id"] != first["erasure_id"]
        assert (await system.collect()).days == after_first  # idempotent in effect
        ghost = await client.post("/erasure", json={"user_id": "nobody-ever"})
        assert ghost.status == 202 and (await ghost.json())["status"] in ("pending", "applied")
        assert (await system.collect()).days == after_first


async def test_metrics_are_operational_only(tmp_path):
    """Each metric is audited in gateway/metrics.py; none is a count of events, users or days
    with data, and none is a per-day series."""
    async with gateway(tmp_path) as client:
        await client.post(
            "/event", json={"events": [{"user_id": f"u{i}", "op": "+", "day": f"2025-04-0{1 + i}"} for i in range(7)]}
        )
        await client.post("/event", data=b"{bad")
        await client.get("/dau/2025-04-02")
        text = await (await client.get("/metrics")).text()
        for needle in (
            'dpdau_http_requests_total{method="POST",route="/event",status="200"} 1.0',
            'dpdau_http_requests_total{method="POST",route="/event",status="400"} 1.0',
            'dpdau_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/dau/{day}"}',
            'dpdau_mailbox_depth{actor="release"}',
            'dpdau_budget_epsilon_spent{metric="dau",period="2025-04"}',
            "dpdau_ready 1.0",
        ):
            assert needle in text, needle
        names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
        allowed = {
            "dpdau_http_requests_total",
            "dpdau_http_request_duration_seconds_bucket",
            "dpdau_http_request_duration_seconds_count",
            "dpdau_http_request_duration_seconds_sum",
            "dpdau_mailbox_depth",
            "dpdau_actor_crashes_total",
            "dpdau_releases_total",
            "dpdau_budget_epsilon_spent",
            "dpdau_ready",
            "dpdau_process",  # which process of a deployment answered (its name and kind: the command line)
            "dpdau_scheduled_releases_total",
            "dpdau_scheduled_refused_total",
            "dpdau_schedule_tick_failures_total",
            "dpdau_journal_write_failures_total",
            "dpdau_journal_found_after_failure_total",
            "dpdau_journal_unavailable",
            "dpdau_journal_unsettled_total",
            "dpdau_snapshot_failures_total",
            "dpdau_snapshots_rejected_total",
        }
        assert names <= allowed, names - allowed  # a new metric must be audited (gateway/metrics.py) first
        # running counts are counters (rate() works on them), levels are gauges
        types = dict(line.split(" ")[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
        for name in allowed:
            if name.endswith("_total"):
                assert types.get(name) == "counter", (name, types.get(name))
            elif name in types:
                assert types[name] == "gauge", (name, types[name])
        assert names >= {n for n in allowed if n.endswith("_total")} - {"dpdau_actor_crashes_total"}
        values = [
            line.rsplit(" ", 1)[1]
            for line in text.splitlines()
            if line.startswith(("dpdau_mailbox", "dpdau_releases_total"))
        ]
        assert "7.0" not in values  # nothing equals the 7 events / 7 users / 7 days ingested
        assert "2025-04-0" not in text.replace('period="2025-04"', "")  # no per-day series


async def test_readiness_reflects_replay(tmp_path):
    async with gateway(tmp_path) as client:
        system = client.app[SYSTEM]
        assert (await client.get("/readyz")).status == 200
        system.ready = False  # as during replay
        resp = await client.get("/readyz")
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        refused = await client.post("/event", json={"user_id": "a", "op": "+", "day": "2025-04-02"})
        assert refused.status == 503 and (await refused.json())["error"] == "not_ready"
        assert (await client.get("/healthz")).status == 200
        system.ready = True
