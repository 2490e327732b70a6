"""What schemathesis found where the document and the server disagreed, each pinned by a quick
test (the fuzzing itself runs in CI: tests/e2e/test_openapi_fuzz.py)."""

from __future__ import annotations

from gateway import openapi
from tests.gateway.conftest import gateway


async def test_an_undeclared_method_is_405_with_allow(tmp_path):
    async with gateway(tmp_path) as client:
        resp = await client.request("TRACE", "/releases")
        assert resp.status == 405 and (await resp.json())["error"] == "method_not_allowed"
        assert "GET" in resp.headers["Allow"]


async def test_days_outside_the_range_are_refused_not_a_500(tmp_path):
    async with gateway(tmp_path) as client:
        resp = await client.get("/mau?end=0001-01-01&window=159")  # was a 500 (date overflow)
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_date"
        resp = await client.get("/dau/9999-12-31")
        assert resp.status == 400
        resp = await client.post("/event", json={"user_id": "a", "op": "+", "day": "1969-12-31"})
        assert resp.status == 422 and (await resp.json())["error"] == "day_out_of_range"
        resp = await client.get("/series?metric=dau&to=")  # an empty date is not "no date"
        assert resp.status == 400


async def test_a_revision_window_is_any_json_integer_and_never_above_the_maximum(tmp_path):
    async with gateway(tmp_path, MAX_WINDOW_DAYS="100", MAU_WINDOW_DAYS="30") as client:
        resp = await client.post("/releases/revise", json={"metric": "mau", "end": "2025-01-01", "window": 7.0})
        assert resp.status == 404  # accepted as 7 (nothing to revise yet), not a 422
        resp = await client.post("/releases/revise", json={"metric": "mau", "end": "2025-01-01", "window": 7.5})
        assert resp.status == 422
        resp = await client.post("/releases/revise", json={"metric": "dau", "day": "2025-01-01", "window": 101})
        assert resp.status == 422 and (await resp.json())["error"] == "invalid_window"  # even when unused
        doc = await (await client.get("/openapi.json")).json()
        window = next(p for p in doc["paths"]["/mau"]["get"]["parameters"] if p["name"] == "window")
        assert window["schema"]["maximum"] == 100  # the configured maximum, not a constant


def test_every_operation_declares_what_its_kind_of_route_can_answer():
    doc = openapi.document()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            if (method, path) not in openapi._NO_SYSTEM:
                assert responses["503"]["headers"]["Retry-After"]["required"], (method, path)
            if (method, path) in openapi._JOURNALS:
                assert "507" in responses, (method, path)
            if (method, path) in openapi._BODY:
                assert {"400", "408", "413", "422"} <= set(responses), (method, path)
    events = doc["components"]["schemas"]["BatchIn"]["properties"]["events"]
    assert events["minItems"] == 1 and events["maxItems"] == 100_000
