"""gateway/rpc.py: the same ActorSystem over gRPC, next to HTTP, on real sockets.

A release asked over gRPC is the record HTTP returns (one facade, never re-drawn); ingest over
gRPC is visible over HTTP; errors, auth and idempotency behave as the HTTP error table says.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway import rpc
from gateway.app import create_app
from gateway.appkeys import SYSTEM
from tests.gateway.conftest import make_config

KEY = "k" * 32


class Client:
    def __init__(self, port: int, api_key: str | None = KEY) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.metadata = (("x-api-key", api_key),) if api_key else ()

    async def call(self, method: str, body: object, metadata: tuple = ()) -> dict:
        stub = self.channel.unary_unary(f"/{rpc.SERVICE}/{method}")
        raw = await stub(json.dumps(body).encode(), metadata=self.metadata + metadata, timeout=60)
        return json.loads(raw)


@asynccontextmanager
async def serving(tmp_path):
    """The real app on a 127.0.0.1 socket with gRPC attached (entered in the test's own task:
    the actor system's task group must be left in the task that entered it)."""
    app = create_app(make_config(tmp_path, API_KEY=KEY))
    rpc.attach(app, "127.0.0.1", 0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as http:
        await app[SYSTEM].wait_ready()
        client = Client(app[rpc.GRPC_PORT])
        try:
            yield http, client, app[rpc.GRPC_PORT]
        finally:
            await client.channel.close()


async def test_ingest_over_grpc_is_seen_over_http_and_releases_are_the_same_record(tmp_path):
    async with serving(tmp_path) as (http, client, _):
        headers = {"X-API-Key": KEY}
        events = {"events": [{"user_id": f"u{i}", "op": "+", "day": "2025-07-01"} for i in range(50)]}
        receipt = await client.call("Ingest", events, (("idempotency-key", "grpc-1"),))
        assert receipt["ingested"] == 50
        again = await client.call("Ingest", events, (("idempotency-key", "grpc-1"),))
        assert again == receipt  # the first answer, nothing written twice
        ready = await (await http.get("/readyz", headers=headers)).json()
        assert ready["journal_seq"] == 50
        over_grpc = await client.call("Dau", {"day": "2025-07-01"})
        over_http = await (await http.get("/dau/2025-07-01", headers=headers)).json()
        assert over_grpc == over_http and over_grpc["metric"] == "dau"
        mau = await client.call("Mau", {"end": "2025-07-01", "window": 7})
        assert mau == await (await http.get("/mau?end=2025-07-01&window=7", headers=headers)).json()
        budget = await client.call("Budget", {})
        assert budget == await (await http.get("/budget", headers=headers)).json()


async def test_erasure_over_grpc(tmp_path):
    async with serving(tmp_path) as (_, client, _):
        await client.call("Ingest", {"user_id": "alice", "op": "+", "day": "2025-07-02"})
        receipt = await client.call("Erase", {"user_id": "alice"})
        assert receipt["status"] in ("pending", "applied") and receipt["erasure_id"]
        status = await client.call("ErasureStatus", {"erasure_id": receipt["erasure_id"]})
        assert status["erasure_id"] == receipt["erasure_id"]


@pytest.mark.parametrize(
    ("method", "body", "code", "error"),
    [
        ("Dau", {"day": "2025-02-30"}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_date"),
        ("Dau", {"day": "2025-07-01", "extra": 1}, grpc.StatusCode.INVALID_ARGUMENT, "validation_error"),
        ("Ingest", {"events": []}, grpc.StatusCode.INVALID_ARGUMENT, "empty_batch"),
        ("Mau", {"end": "2025-07-01", "window": 9999}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_window"),
        ("ErasureStatus", {"erasure_id": "nope"}, grpc.StatusCode.NOT_FOUND, "unknown_erasure"),
        ("Dau", {"day": "2999-01-01"}, grpc.StatusCode.FAILED_PRECONDITION, "period_not_closed"),
    ],
)
async def test_errors_follow_the_http_error_table(tmp_path, method, body, code, error):
    async with serving(tmp_path) as (_, client, _):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.call(method, body)
        assert caught.value.code() == code
        assert json.loads(caught.value.details())["error"] == error


async def test_a_key_is_required_when_api_key_is_set(tmp_path):
    async with serving(tmp_path) as (_, _, port):
        for api_key in (None, "x" * 32):
            other = Client(port, api_key=api_key)
            try:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await other.call("Budget", {})
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert json.loads(caught.value.details())["error"] == "unauthorized"
            finally:
                await other.channel.close()


async def test_grpc_methods_need_the_scope_of_their_http_route(tmp_path):
    keys = {"READ_API_KEY": "r" * 32, "INGEST_API_KEY": "i" * 32, "ADMIN_API_KEY": "a" * 32}
    app = create_app(make_config(tmp_path, **keys))
    rpc.attach(app, "127.0.0.1", 0)
    async with TestClient(TestServer(app, host="127.0.0.1")):
        await app[SYSTEM].wait_ready()
        port = app[rpc.GRPC_PORT]
        reader, ingester, admin = (Client(port, keys[k]) for k in ("READ_API_KEY", "INGEST_API_KEY", "ADMIN_API_KEY"))
        try:
            out = await ingester.call("Ingest", {"user_id": "u", "op": "+", "day": "2025-07-03"})
            assert set(out) == {"ingested", "receipt"}  # no journal position over gRPC either
            for client, method, body in [
                (reader, "Ingest", {"user_id": "u", "op": "+", "day": "2025-07-03"}),
                (ingester, "Dau", {"day": "2025-07-03"}),
                (reader, "Mau", {"end": "2025-07-03", "window": 7}),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await client.call(method, body)
                assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
                assert json.loads(info.value.details())["error"] == "forbidden"
            assert (await reader.call("Mau", {"end": "2025-07-03"}))["window"] == 30
            assert (await admin.call("Mau", {"end": "2025-07-03", "window": 7}))["window"] == 7
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await Client(port, "nope").call("Dau", {"day": "2025-07-03"})
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            for c in (reader, ingester, admin):
                await c.channel.close()
