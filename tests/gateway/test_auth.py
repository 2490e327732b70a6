"""Scoped API keys (gateway/auth.py) over real HTTP, and the OpenAPI document telling the truth
about them."""

from __future__ import annotations

import hmac

import pytest

from gateway import auth
from gateway.config import GatewaySettings
from tests.gateway.conftest import gateway

KEYS = {
    "READ_API_KEY": "read-key-0123456789",
    "INGEST_API_KEY": "ingest-key-0123456789",
    "ADMIN_API_KEY": "admin-key-0123456789",
    "API_KEY": "all-key-0123456789",
}
READ, INGEST, ADMIN, ALL = (KEYS[k] for k in ("READ_API_KEY", "INGEST_API_KEY", "ADMIN_API_KEY", "API_KEY"))
EVENT = {"user_id": "u1", "op": "+", "day": "2025-04-02"}

# (method, path, body, the scope it needs) -- written out here, not read from the code under test
ROUTES = [
    ("POST", "/event", EVENT, "ingest"),
    ("POST", "/erasure", {"user_id": "u1"}, "ingest"),
    ("GET", "/erasure/nope", None, "ingest"),
    ("GET", "/dau/2025-04-02", None, "read"),
    ("GET", "/mau?end=2025-04-02", None, "read"),
    ("GET", "/mau?end=2025-04-02&window=7", None, "admin"),
    ("GET", "/budget", None, "read"),
    ("GET", "/budget?periods=2", None, "read"),
    ("GET", "/releases", None, "read"),
    ("POST", "/releases/revise", {"metric": "dau", "day": "2025-04-01"}, "admin"),
    ("GET", "/metrics", None, "admin"),
    ("GET", "/audit/erasures", None, "admin"),
]
GRANTS = {READ: {"read"}, INGEST: {"ingest"}, ADMIN: {"admin", "read"}, ALL: {"read", "ingest", "admin"}}


async def call(client, method, path, body=None, key=None):
    headers = {"X-API-Key": key} if key is not None else {}
    resp = await client.request(method, path, json=body, headers=headers)
    return resp.status, await resp.json() if resp.content_type == "application/json" else {}


async def test_every_route_needs_a_key_of_its_scope(tmp_path):
    async with gateway(tmp_path, **KEYS) as client:
        assert (await client.get("/healthz")).status == 200  # open
        for method, path, body, scope in ROUTES:
            status, out = await call(client, method, path, body)
            assert status == 401 and out["error"] == "unauthorized", (path, status)
            status, out = await call(client, method, path, body, key="not-a-key")
            assert status == 401, path
            status, out = await call(client, method, path, body, key=READ + "x")  # a near miss
            assert status == 401, path
            for key, scopes in GRANTS.items():
                status, out = await call(client, method, path, body, key=key)
                if scope in scopes:
                    assert status not in (401, 403), (path, key, status, out)
                else:
                    assert status == 403 and out["error"] == "forbidden", (path, key)
                    # names a scope the key lacks: the one needed, or the route's first one
                    assert out["scope"] not in scopes and out["scope"] in (scope, "read"), (path, key)
                    assert repr(out["scope"]) in out["detail"] and "API_KEY" in out["detail"]
        for path in ("/readyz", "/openapi.json"):  # any valid key
            assert (await call(client, "GET", path))[0] == 401
            for key in GRANTS:
                assert (await call(client, "GET", path, key=key))[0] == 200


async def test_readiness_is_all_a_non_admin_caller_learns(tmp_path):
    async with gateway(tmp_path, **KEYS) as client:
        for key in (READ, INGEST):
            status, body = await call(client, "GET", "/readyz", key=key)
            assert status == 200 and body == {"ready": True}
        status, body = await call(client, "GET", "/readyz", key=ADMIN)
        assert body["ready"] is True and body["replaying"] is False and "restored_from_snapshot" in body
        assert body["journal_seq"] == 0  # exact, and for the admin scope only


async def test_keys_are_compared_in_constant_time_against_every_configured_key(monkeypatch):
    gw = GatewaySettings(**{k.lower(): v for k, v in KEYS.items()})
    keyring = auth.Keyring.from_settings(gw)
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    for presented in (READ, ALL, "wrong", "x" * 500):
        calls.clear()
        keyring.scopes_of(presented)
        assert len(calls) == len(KEYS)  # every key compared, whichever matched (or none)
        assert all(a == b == 32 for a, b in calls)  # digests: the length of the key does not show
    assert keyring.scopes_of(ADMIN)[0] == {"admin", "read"}
    assert keyring.scopes_of(READ)[1] != keyring.scopes_of(INGEST)[1]  # distinct client labels
    assert READ not in keyring.scopes_of(READ)[1]  # the label is not the key


def test_no_key_configured_is_said_loudly_and_an_unreachable_scope_is_named(capsys):
    written: list[str] = []
    keyring = auth.warn_if_open(GatewaySettings(), write=written.append)
    assert not keyring.enabled and "NO API KEY IS CONFIGURED" in "".join(written)
    written.clear()
    keyring = auth.warn_if_open(GatewaySettings(read_api_key="r" * 20), write=written.append)
    assert keyring.enabled and written == []  # a partial set is logged per scope, not bannered
    keyring = auth.warn_if_open(GatewaySettings(dpdau_env="production"), write=written.append)
    assert not keyring.enabled and written == []  # production: an error-level JSON log line, no banner


async def test_without_keys_every_route_is_open_and_the_document_says_so(tmp_path):
    async with gateway(tmp_path) as client:
        assert (await client.get("/metrics")).status == 200
        doc = await (await client.get("/openapi.json")).json()
        assert "No API key is configured" in doc["info"]["description"]
        for ops in doc["paths"].values():
            for op in ops.values():
                assert op["security"] == []
                assert not {"401", "403"} & set(op["responses"])  # no route here can answer them


@pytest.mark.parametrize("keys", [KEYS, {"API_KEY": ALL}])
async def test_the_openapi_security_of_every_operation_is_what_the_middleware_enforces(tmp_path, keys):
    async with gateway(tmp_path, **keys) as client:
        doc = await (await client.get("/openapi.json", headers={"X-API-Key": ALL})).json()
        assert doc["components"]["securitySchemes"]["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                url = path.replace("{day}", "2025-04-02").replace("{erasure_id}", "nope")
                body = {"post": {"/event": EVENT, "/erasure": {"user_id": "u"}}}.get(method, {}).get(path)
                status, _ = await call(client, method.upper(), url, body)
                if op["security"] == []:
                    assert status not in (401, 403), (method, path)
                    continue
                assert status == 401, (method, path)
                (requirement,) = op["security"]
                assert "401" in op["responses"]
                roles = requirement["apiKey"]
                if roles and "READ_API_KEY" in keys:
                    (scope,) = roles
                    wrong = next(k for k, s in GRANTS.items() if scope not in s)
                    assert (await call(client, method.upper(), url, body, key=wrong))[0] == 403, (method, path)
                    assert "403" in op["responses"]
