"""No membership oracle: erasure receipts, idempotency after a purge, idempotency across clients,
ingest answers and request ids (issue: "no exact count, position or membership on any surface")."""

from __future__ import annotations

import anyio

from gateway.appkeys import SYSTEM
from tests.gateway.conftest import gateway

DAY = "2025-04-02"


def batch(*users: str) -> dict:
    return {"events": [{"user_id": u, "op": "+", "day": DAY} for u in users]}


async def purge_all(client) -> None:
    system = client.app[SYSTEM]
    await system._purge(system.erasure.book.outstanding())


async def wait_status(client, erasure_id: str, status: str) -> dict:
    with anyio.fail_after(30):
        while True:
            body = await (await client.get(f"/erasure/{erasure_id}")).json()
            if body["status"] == status:
                return body
            await anyio.sleep(0.02)


async def test_erasure_receipts_look_the_same_for_a_user_who_existed_and_one_who_never_did(tmp_path):
    async with gateway(tmp_path) as client:
        await client.post("/event", json=batch("alice", "bob"))
        await client.post("/event", json=batch("alice"))
        real = await client.post("/erasure", json={"user_id": "alice"})
        ghost = await client.post("/erasure", json={"user_id": "never-seen"})
        assert real.status == ghost.status == 202
        a, b = await real.json(), await ghost.json()
        assert set(a) == set(b) == {"erasure_id", "status", "requested_at", "purged_at"}
        assert a["status"] == b["status"] and a["purged_at"] is b["purged_at"] is None
        assert set(real.headers) == set(ghost.headers)
        await purge_all(client)
        a = await wait_status(client, a["erasure_id"], "purged")
        b = await wait_status(client, b["erasure_id"], "purged")
        assert {k: v for k, v in a.items() if k not in ("erasure_id", "requested_at")} == {
            k: v for k, v in b.items() if k not in ("erasure_id", "requested_at")
        }
        # the detail is in the admin-only audit log
        audit = await (await client.get("/audit/erasures")).json()
        removed = {e["erasure_id"]: e["events_removed"] for e in audit["erasures"]}
        assert removed == {a["erasure_id"]: 2, b["erasure_id"]: 0} and audit["total"] == 2


async def test_after_a_purge_no_idempotency_answer_depends_on_the_erased_user(tmp_path):
    async with gateway(tmp_path) as client:
        system = client.app[SYSTEM]
        first = await client.post("/event", json=batch("alice", "bob"), headers={"Idempotency-Key": "with-alice"})
        await client.post("/event", json=batch("carol"), headers={"Idempotency-Key": "without-alice"})
        before = await first.json()
        # before the purge the digest tells a changed batch from the original (a client error)
        changed = await client.post("/event", json=batch("alice", "zed"), headers={"Idempotency-Key": "with-alice"})
        assert changed.status == 422
        erased = await (await client.post("/erasure", json={"user_id": "alice"})).json()
        await purge_all(client)
        await wait_status(client, erased["erasure_id"], "purged")
        head = system.journal.head
        answers = {}
        for key, body in [
            ("with-alice", batch("alice", "bob")),  # the original
            ("with-alice", batch("alice", "zed")),  # changed
            ("without-alice", batch("carol")),
            ("without-alice", batch("dave")),
        ]:
            resp = await client.post("/event", json=body, headers={"Idempotency-Key": key})
            answers.setdefault(key, []).append((resp.status, resp.headers.get("Idempotent-Replayed")))
        # the same answers whether or not the batch held the erased user: no oracle
        assert answers["with-alice"] == answers["without-alice"] == [(200, "true"), (200, "true")]
        assert system.journal.head == head  # nothing written
        replay = await client.post("/event", json=batch("alice", "bob"), headers={"Idempotency-Key": "with-alice"})
        assert await replay.json() == before  # same count, same receipt
        # nothing derived from the batch's content remains in the index, nor in a snapshot of it
        assert all(not r.digest for r in system.ingest_service.index._entries.values())
        snap = await system.collect()
        assert all(not entry[-1] for entry in snap.ingest.entries)


async def test_idempotency_keys_are_scoped_by_the_calling_api_key(tmp_path):
    keys = {"INGEST_API_KEY": "ingest-key-0123456789", "API_KEY": "all-key-0123456789"}
    async with gateway(tmp_path, **keys) as client:
        mine = {"X-API-Key": keys["INGEST_API_KEY"], "Idempotency-Key": "batch-1"}
        theirs = {"X-API-Key": keys["API_KEY"], "Idempotency-Key": "batch-1"}
        assert (await client.post("/event", json=batch("alice"), headers=mine)).status == 200
        # another client, the same Idempotency-Key: neither "replayed" nor "reused" -- its own batch
        other = await client.post("/event", json=batch("mallory"), headers=theirs)
        assert other.status == 200 and "Idempotent-Replayed" not in other.headers
        probe = await client.post("/event", json=batch("alice"), headers=theirs)
        assert probe.status == 422  # conflicts with its own "mallory" batch: my "alice" batch is invisible to it
        own = await client.post("/event", json=batch("mallory"), headers=theirs)
        assert own.headers.get("Idempotent-Replayed") == "true"
        again = await client.post("/event", json=batch("alice"), headers=mine)
        assert again.headers.get("Idempotent-Replayed") == "true"


async def test_ingest_answers_and_request_ids_carry_no_position(tmp_path):
    async with gateway(tmp_path) as client:
        ids, receipts = [], []
        for i in range(5):
            resp = await client.post("/event", json=batch(f"u{i}"))
            body = await resp.json()
            assert set(body) == {"ingested", "receipt"} and body["ingested"] == 1
            receipts.append(body["receipt"])
            ids.append(resp.headers["X-Request-Id"])
        assert len(set(receipts)) == len(set(ids)) == 5
        for text in receipts + ids:
            assert not text.isdigit() and not any(text.endswith(f"-{n}") for n in range(1, 20))
        echoed = await client.get("/healthz", headers={"X-Request-Id": "mine-42"})
        assert echoed.headers["X-Request-Id"] == "mine-42"
