"""The refusals of a release are typed: a real 429 ``budget_exhausted`` body is exactly
``BudgetRefusedOut``, a real 409 ``period_not_closed`` body exactly ``NotClosedOut``, and
``/openapi.json`` declares those schemas for every route that can answer them. ``next_reset``
names the first day of the next period, which can be in the past: the refused period's budget
never comes back."""

from __future__ import annotations

import datetime as dt
import json
from typing import TypeVar

import msgspec
import pytest

from gateway import openapi
from gateway.schemas import BudgetRefusedOut, NotClosedOut
from tests.gateway.conftest import gateway

S = TypeVar("S", bound=msgspec.Struct)

# The operations whose handler asks the release actor for a release or a revision.
RELEASING = {("get", "/dau/{day}"), ("get", "/mau"), ("post", "/releases/revise")}


def exactly(raw: bytes, schema: type[S]) -> S:
    """``raw`` decodes as ``schema`` (unknown fields forbidden, every field required), has exactly
    its keys, and is byte for byte that Struct's encoding (the server built it from the Struct)."""
    out = msgspec.json.decode(raw, type=schema)
    assert set(json.loads(raw)) == set(schema.__struct_fields__)
    assert msgspec.json.encode(out) == raw
    return out


def month_after(label: str) -> str:
    year, month = map(int, label.split("-"))
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}-01"


@pytest.mark.parametrize(
    ("env", "granted", "refused", "metric", "cap"),
    [
        ({"DAU_BUDGET_TOTAL": "0.4"}, "/dau/2025-01-01", "/dau/2025-01-02", "dau", "DAU_BUDGET_TOTAL"),
        # A 30-day window ending in January reads December too: both periods are charged.
        ({"MAU_BUDGET_TOTAL": "0.6"}, "/mau?end=2025-01-10", "/mau?end=2025-01-11", "mau", "MAU_BUDGET_TOTAL"),
        ({"PERIOD_BUDGET_TOTAL": "0.55"}, "/dau/2025-03-01", "/mau?end=2025-03-31", "mau", "PERIOD_BUDGET_TOTAL"),
    ],
)
async def test_a_real_budget_refusal_is_exactly_budget_refused_out(tmp_path, env, granted, refused, metric, cap):
    async with gateway(tmp_path, **env) as client:
        assert (await client.get(granted)).status == 200
        resp = await client.get(refused)
        assert resp.status == 429 and resp.content_type == "application/json"
        out = exactly(await resp.read(), BudgetRefusedOut)
        assert out.error == "budget_exhausted" and out.metric == metric and out.cap == cap
        assert out.epsilon_cap == float(next(iter(env.values())))
        assert 0 < out.epsilon_spent <= out.epsilon_cap < out.epsilon_after_release
        assert out.accounting_period is not None and out.next_reset == month_after(out.accounting_period)
        assert out.accounting_period in out.detail and cap in out.detail


async def test_the_lifetime_refusal_names_no_period_and_no_reset(tmp_path):
    async with gateway(tmp_path, USER_EPSILON_LIMIT="0.45") as client:
        assert (await client.get("/dau/2025-01-05")).status == 200
        assert (await client.get("/dau/2025-04-05")).status == 200
        resp = await client.get("/dau/2025-07-05")
        assert resp.status == 429
        raw = await resp.read()
        out = exactly(raw, BudgetRefusedOut)
        assert out.cap == "USER_EPSILON_LIMIT" and out.epsilon_cap == 0.45
        assert out.accounting_period is None and out.next_reset is None
        assert b'"accounting_period":null' in raw and b'"next_reset":null' in raw  # present, null


async def test_a_refused_day_of_a_past_period_stays_refused_after_its_next_reset(tmp_path):
    """``next_reset`` is not "when the budget comes back": it is already past, a later period's
    day is released on its fresh budget, and the refused day is still refused, identically."""
    async with gateway(tmp_path, DAU_BUDGET_TOTAL="0.4") as client:
        assert (await client.get("/dau/2025-01-01")).status == 200
        first = await client.get("/dau/2025-01-02")
        assert first.status == 429
        refused = exactly(await first.read(), BudgetRefusedOut)
        assert refused.accounting_period == "2025-01" and refused.next_reset == "2025-02-01"
        assert dt.date.fromisoformat(refused.next_reset) < dt.datetime.now(dt.UTC).date()  # in the past
        assert (await client.get(f"/dau/{refused.next_reset}")).status == 200  # February: a fresh budget
        again = await client.get("/dau/2025-01-02")
        assert again.status == 429
        assert exactly(await again.read(), BudgetRefusedOut) == refused  # nothing charged, nothing reset
        budget = await (await client.get("/budget?period=2025-01")).json()
        (january,) = budget["periods"]
        assert january["metrics"]["dau"]["charges"] == 1


async def test_a_real_not_closed_refusal_is_exactly_not_closed_out(tmp_path):
    today = dt.datetime.now(dt.UTC).date()
    async with gateway(tmp_path, LATENESS_HOURS="2") as client:
        for path in (f"/dau/{today}", f"/mau?end={today}"):
            asked = dt.datetime.now(dt.UTC)
            resp = await client.get(path)
            assert resp.status == 409, path
            out = exactly(await resp.read(), NotClosedOut)
            assert out.error == "period_not_closed" and out.closes_at in out.detail
            closes = dt.datetime.fromisoformat(out.closes_at)
            assert closes.utcoffset() == dt.timedelta(0) and closes > asked
            assert closes == dt.datetime.combine(today + dt.timedelta(days=1), dt.time(2), dt.UTC)


async def test_a_revision_of_a_day_that_closes_later_since_is_not_closed_out(tmp_path):
    """The 409 /releases/revise declares: released while closed, then LATENESS_HOURS moved the
    day's close past now (same data directory, restarted)."""
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    async with gateway(tmp_path) as client:
        assert (await client.get(f"/dau/{day}")).status == 200
    async with gateway(tmp_path, LATENESS_HOURS="96") as client:
        resp = await client.post("/releases/revise", json={"metric": "dau", "day": day.isoformat()})
        assert resp.status == 409
        out = exactly(await resp.read(), NotClosedOut)
        assert dt.datetime.fromisoformat(out.closes_at) > dt.datetime.now(dt.UTC)


@pytest.mark.parametrize("keys", [{}, {"API_KEY": "k-all"}])
async def test_openapi_types_every_release_refusal(tmp_path, keys):
    async with gateway(tmp_path, **keys) as client:
        live = await (await client.get("/openapi.json", headers={"X-API-Key": "k-all"})).json()
    for doc in (live, openapi.document()):
        answering = {"409": set(), "429": set()}
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                for status, schema in (("409", "NotClosedOut"), ("429", "BudgetRefusedOut")):
                    response = op["responses"].get(status)
                    if response is None:
                        continue
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    if (method, path) == ("post", "/event"):  # its 409 is day_in_future, not a release's
                        assert ref == "#/components/schemas/ErrorOut"
                        continue
                    assert ref == f"#/components/schemas/{schema}", (method, path, status)
                    answering[status].add((method, path))
        assert answering == {"409": RELEASING, "429": RELEASING}
        schemas = doc["components"]["schemas"]
        for struct in (BudgetRefusedOut, NotClosedOut):
            component = schemas[struct.__name__]
            assert set(component["required"]) == set(component["properties"]) == set(struct.__struct_fields__)
            assert component["additionalProperties"] is False
        budget = schemas["BudgetRefusedOut"]["properties"]
        assert {"type": "null"} in budget["accounting_period"]["anyOf"] and {"type": "null"} in budget["next_reset"][
            "anyOf"
        ]
        assert "never comes back" in budget["next_reset"]["description"]
        assert "in the past" in budget["next_reset"]["description"]
