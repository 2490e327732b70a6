"""The body budget (``gateway/admission.py``) through the real app on a real 127.0.0.1 socket.

Bodies count as they arrive, not as announced; what does not fit is answered 503 + Retry-After and
stored nowhere; a body that stops arriving is 408; a slow sender holds only what it sent and does
not keep others from being served; every way a request ends gives its bytes back.
"""

from __future__ import annotations

import asyncio
import json
import time

from hypothesis import given
from hypothesis import strategies as st

from gateway import admission
from gateway.admission import BodyBudget, BodyBudgetSpent
from gateway.appkeys import BODIES, SYSTEM
from tests.gateway.conftest import gateway

GOOD = json.dumps({"user_id": "a", "op": "+", "day": "2025-01-01"}).encode()
HEAD = b"POST /event HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
SMALL = {"MAX_BODY_BYTES": 4096, "MAX_INFLIGHT_BODY_BYTES": 4096}


def padded(size: int, user: str = "p") -> bytes:
    """A valid one-event body of exactly ``size`` bytes (JSON allows trailing white space)."""
    body = json.dumps({"user_id": user, "op": "+", "day": "2025-01-01"}).encode()
    return body + b" " * (size - len(body))


async def until(condition, seconds: float = 60.0) -> None:
    """Wait on a condition with a generous deadline (never a timing)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"condition not reached: {condition.__code__.co_names}"
        await asyncio.sleep(0.01)


async def partial(port: int, announced: int, sent: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that announced ``announced`` bytes of body and sent only ``sent`` (so far)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD + f"Content-Length: {announced}\r\n\r\n".encode() + sent)
    await writer.drain()
    return reader, writer


async def status_of(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    line = await asyncio.wait_for(reader.readline(), 60)
    headers = {}
    while (header := await asyncio.wait_for(reader.readline(), 60)) not in (b"\r\n", b""):
        name, _, value = header.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(line.split()[1]), headers


async def test_a_body_that_does_not_fit_is_503_with_retry_after_and_stored_nowhere(tmp_path):
    async with gateway(tmp_path, **SMALL) as client:
        budget, journal = client.app[BODIES], client.app[SYSTEM].journal
        reader, writer = await partial(client.server.port, 4000, b'{"events": [' + b" " * 2988)
        await until(lambda: budget.used == 3000)  # what arrived is held, not what was announced
        head = journal.head
        resp = await client.post("/event", data=padded(1200))  # announced > the 1,096 bytes free
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"] == "overloaded"

        async def chunks():  # no Content-Length: refused when a chunk does not fit
            body = padded(1200)
            yield body[:600]
            yield body[600:]

        resp = await client.post("/event", data=chunks())
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert journal.head == head  # nothing of either was stored
        resp = await client.post("/event", data=padded(1000))  # what fits is served meanwhile
        assert resp.status == 200
        writer.close()  # the stalled client goes away: its bytes come back
        await until(lambda: budget.used == 0)
        resp = await client.post("/event", data=padded(1200))
        assert resp.status == 200 and journal.head == head + 2
        del reader


async def test_slow_senders_hold_only_what_they_sent_and_others_are_served(tmp_path):
    async with gateway(tmp_path, **SMALL) as client:
        budget, port = client.app[BODIES], client.server.port
        # 50 clients announce 1,000 bytes each (12 times the budget in all) and send 10.
        stalled = [await partial(port, 1000, b'{"events":') for _ in range(50)]
        await until(lambda: budget.used == 500)
        body = padded(400, "slow")

        async def byte_at_a_time() -> int:
            reader, writer = await partial(port, len(body), b"")
            for i in range(len(body)):
                writer.write(body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.002)  # the client's pace, not a synchronisation
            status, _ = await status_of(reader)
            writer.close()
            return status

        async def others() -> list[int]:  # one after another: together they would not fit 4 KiB
            return [(await client.post("/event", data=padded(1500, f"n{n}"))).status for n in range(20)]

        slow = asyncio.ensure_future(byte_at_a_time())
        statuses = await asyncio.wait_for(others(), 60)
        assert statuses == [200] * 20  # served while 51 slow clients are connected
        assert await asyncio.wait_for(slow, 60) == 200  # ... and the slow one is served too
        for _, writer in stalled:
            writer.close()
        await until(lambda: budget.used == 0)
        assert client.app[SYSTEM].journal.head == 21


async def test_a_body_that_stops_arriving_is_408_and_the_server_keeps_serving(tmp_path, monkeypatch):
    monkeypatch.setattr(admission, "BODY_IDLE_SECONDS", 0.3)
    async with gateway(tmp_path) as client:
        reader, writer = await partial(client.server.port, 1000, b'{"events": [')
        status, _ = await status_of(reader)
        writer.close()
        assert status == 408
        assert client.app[BODIES].used == 0
        assert (await client.post("/event", data=GOOD)).status == 200
        assert client.app[SYSTEM].journal.head == 1


async def test_every_answer_gives_the_bytes_back(tmp_path):
    async with gateway(tmp_path, MAX_BATCH_EVENTS=2) as client:
        answers = [
            await client.post("/event", data=GOOD),  # 200
            await client.post("/event", data=b"{not json"),  # 400
            await client.post("/event", data=b'{"user_id": 3}'),  # 422
            await client.post("/event", json={"events": [json.loads(GOOD)] * 3}),  # 413 (batch)
            await client.post("/event", data=GOOD.replace(b"2025", b"2999")),  # 409
            await client.post("/erasure", json={"user_id": "a"}),  # 202
            await client.post("/erasure", data=b"[]"),  # 422
            await client.post("/releases/revise", json={"metric": "dau", "day": "2025-01-01"}),  # 404
        ]
        assert [r.status for r in answers] == [200, 400, 422, 413, 409, 202, 422, 404]
        assert client.app[BODIES].used == 0


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40)), max_size=60))
def test_the_budget_never_exceeds_its_limit_and_returns_to_zero(steps):
    """Interleaved requests (index: which of 4 open holds takes; size: how many bytes)."""
    budget = BodyBudget(100)
    with budget.hold() as a, budget.hold() as b, budget.hold() as c, budget.hold() as d:
        holds = [a, b, c, d]
        for which, size in steps:
            before = budget.used
            try:
                holds[which].take(size)
            except BodyBudgetSpent:
                assert before + size > budget.limit and budget.used == before  # refused whole
            assert budget.used == sum(h.bytes for h in holds) <= budget.limit
    assert budget.used == 0
