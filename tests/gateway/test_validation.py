"""Bad input gets a 4xx JSON error naming the problem, changes nothing, and the server keeps serving."""

from __future__ import annotations

import json

import pytest

from gateway.appkeys import SYSTEM
from tests.gateway.conftest import gateway

GOOD = {"user_id": "u-1", "op": "+", "day": "2025-06-01"}

BAD_EVENTS = [
    (b"{not json", 400, "invalid_json", None),
    (b"[1, 2]", 422, "validation_error", None),
    (json.dumps({**GOOD, "op": "*"}).encode(), 422, "validation_error", "$.op"),
    (json.dumps({**GOOD, "day": "2025-02-30"}).encode(), 422, "validation_error", "$.day"),
    (json.dumps({**GOOD, "day": "20250601"}).encode(), 422, "validation_error", "$.day"),
    (json.dumps({"op": "+", "day": "2025-06-01"}).encode(), 422, "validation_error", None),
    (json.dumps({**GOOD, "user_id": ""}).encode(), 422, "validation_error", "$.user_id"),
    (json.dumps({**GOOD, "user_id": "x" * 257}).encode(), 422, "validation_error", "$.user_id"),
    (json.dumps({**GOOD, "user_id": 42}).encode(), 422, "validation_error", "$.user_id"),
    (json.dumps({**GOOD, "surprise": 1}).encode(), 422, "validation_error", None),
    (json.dumps({**GOOD, "metadata": {"k": "v" * 5000}}).encode(), 422, "metadata_too_large", "$.metadata"),
    (json.dumps({**GOOD, "metadata": [1, 2]}).encode(), 422, "validation_error", "$.metadata"),
    (json.dumps({**GOOD, "day": "2999-01-01"}).encode(), 409, "day_in_future", "$.day"),
    (json.dumps({"events": []}).encode(), 422, "empty_batch", "$.events"),
    (json.dumps({"events": [GOOD, {**GOOD, "op": "?"}]}).encode(), 422, "validation_error", "$.events[1].op"),
    (
        json.dumps({"events": [GOOD, {**GOOD, "day": "2025-13-01"}]}).encode(),
        422,
        "validation_error",
        "$.events[1].day",
    ),
]


@pytest.mark.parametrize(("body", "status", "code", "field"), BAD_EVENTS)
async def test_bad_event_is_refused_with_a_named_problem_and_nothing_is_stored(tmp_path, body, status, code, field):
    async with gateway(tmp_path) as client:
        system = client.app[SYSTEM]
        head = system.journal.head
        resp = await client.post("/event", data=body, headers={"Content-Type": "application/json"})
        assert resp.status == status
        payload = await resp.json()
        assert payload["error"] == code and payload["detail"]
        if field is not None:
            assert payload.get("field") == field
        assert system.journal.head == head  # nothing stored
        ok = await client.post("/event", json=GOOD)  # still serving
        assert ok.status == 200 and (await ok.json())["ingested"] == 1


async def test_oversized_body_and_batch(tmp_path):
    async with gateway(tmp_path, MAX_BODY_BYTES=2048, MAX_BATCH_EVENTS=3) as client:
        big = json.dumps({"events": [GOOD] * 100}).encode()
        resp = await client.post("/event", data=big)
        assert resp.status == 413 and (await resp.json())["error"] == "body_too_large"
        resp = await client.post("/event", json={"events": [GOOD] * 4})
        assert resp.status == 413 and (await resp.json())["error"] == "batch_too_large"
        assert (await client.get("/healthz")).status == 200
        assert client.app[SYSTEM].journal.head == 0


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/dau/2025-02-30", 400, "invalid_date"),
        ("/dau/yesterday", 400, "invalid_date"),
        ("/mau", 400, "missing_parameter"),
        ("/mau?end=2025-06-01&window=0", 400, "invalid_window"),
        ("/mau?end=2025-06-01&window=abc", 400, "invalid_window"),
        ("/mau?end=2025-06-01&window=9999", 400, "invalid_window"),
        ("/releases?limit=0", 400, "invalid_parameter"),
        ("/releases?metric=wau", 400, "invalid_parameter"),
        ("/erasure/nope", 404, "unknown_erasure"),
        ("/no/such/route", 404, "not_found"),
    ],
)
async def test_bad_queries(tmp_path, path, status, code):
    async with gateway(tmp_path) as client:
        resp = await client.get(path)
        assert resp.status == status
        assert (await resp.json())["error"] == code


async def test_bad_erasure_and_revision_bodies(tmp_path):
    async with gateway(tmp_path) as client:
        resp = await client.post("/erasure", json={"user": "x"})
        assert resp.status == 422 and (await resp.json())["error"] == "validation_error"
        resp = await client.post("/releases/revise", json={"metric": "dau"})
        assert resp.status == 422 and (await resp.json())["field"] == "$.day"
        resp = await client.post("/releases/revise", json={"metric": "dau", "day": "2025-01-01"})
        assert resp.status == 404 and (await resp.json())["error"] == "no_release"
        resp = await client.get("/event")
        assert resp.status == 405 and (await resp.json())["error"] == "method_not_allowed"


async def test_idempotency_key_rules(tmp_path):
    async with gateway(tmp_path) as client:
        system = client.app[SYSTEM]
        first = await client.post(
            "/event", json={"events": [GOOD, {**GOOD, "user_id": "u-2"}]}, headers={"Idempotency-Key": "abc"}
        )
        again = await client.post(
            "/event", json={"events": [GOOD, {**GOOD, "user_id": "u-2"}]}, headers={"Idempotency-Key": "abc"}
        )
        assert first.status == again.status == 200
        body = await first.json()
        assert await again.json() == body and set(body) == {"ingested", "receipt"} and body["ingested"] == 2
        assert len(body["receipt"]) == 24 and body["receipt"] not in ("1", "2")  # opaque, no position
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert system.journal.head == 2
        other = await client.post("/event", json=GOOD, headers={"Idempotency-Key": "abc"})
        assert other.status == 422 and (await other.json())["error"] == "idempotency_key_reused"
        bad = await client.post("/event", json=GOOD, headers={"Idempotency-Key": "x" * 300})
        assert bad.status == 400
        assert system.journal.head == 2


async def test_open_period_answers_409_with_the_closing_time(tmp_path):
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date().isoformat()
    async with gateway(tmp_path) as client:
        resp = await client.get(f"/dau/{today}")
        body = await resp.json()
        assert resp.status == 409 and body["error"] == "period_not_closed" and body["closes_at"]
        budget = await (await client.get("/budget")).json()
        assert all(m["charges"] == 0 for p in budget["periods"] for m in p["metrics"].values())


async def test_budget_exhausted_is_429_with_the_numbers(tmp_path):
    async with gateway(tmp_path, DAU_BUDGET_TOTAL="0.4") as client:
        assert (await client.get("/dau/2025-01-01")).status == 200
        resp = await client.get("/dau/2025-01-02")
        body = await resp.json()
        assert resp.status == 429 and body["error"] == "budget_exhausted"
        assert body["metric"] == "dau" and body["accounting_period"] == "2025-01"
        assert body["epsilon_cap"] == 0.4 and body["next_reset"] == "2025-02-01" and body["epsilon_spent"] > 0
