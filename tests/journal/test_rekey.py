"""journal/rekey.py: salt rotation re-keys every stored pseudonym, atomically, leaving no old key."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from journal import events as ev
from journal.rekey import rekey
from journal.store import SqliteJournal as Journal
from tests.journal.helpers import (
    DB_NAME,
    batch,
    budget_charge,
    counter_started,
    counter_step,
    erased,
    files_containing,
    key_patterns,
    random_keys,
    read_all,
    refuse_kind,
    settle,
    sql,
)

MUL = np.int64(-7046029254386353131)  # odd: the map is a bijection of int64
XOR = np.int64(0x5BD1E9955BD1E995)


def mapping(keys: np.ndarray) -> np.ndarray:
    return (np.asarray(keys, dtype=np.int64) * MUL) ^ XOR


def map_tombstone(tomb: ev.UserErased, runs: dict, mapping_) -> ev.UserErased:
    """A stand-in for the actors' rule (flippancy.rekey_tombstone): keys and tokens both mapped."""
    if tomb.key is not None:
        return msgspec.structs.replace(tomb, key=int(mapping_(np.array([tomb.key]))[0]))
    tokens = {run: int(mapping_(np.array([t]))[0]) for run, t in tomb.blocked_tokens.items()}
    return msgspec.structs.replace(tomb, blocked_tokens=tokens)


def m(k: int) -> int:
    return int(mapping(np.array([k], dtype=np.int64))[0])


def unpack(b: bytes) -> list[int]:
    return np.frombuffer(b, dtype="<i8").tolist()


async def build(journal: Journal, keys: list[int]) -> dict:
    k1, k2, k3, k4, k5, *rest = keys
    s = {}
    recs = await journal.append(
        [
            batch(
                [k1, k2, k3],
                metadata=[(1, json.dumps({"x": 1}).encode())],
                idempotency_key="i1",
                request_digest=b"\x11" * 32,
            ),
            counter_started("r1"),
            counter_step("r1", 1, entered=[k1, k3, k4], left=[k5]),
            batch([k4, k4, k1]),
        ]
    )
    s["b1"], _, s["step"], s["b2"] = (r.seq for r in recs)
    await settle(journal)
    recs = await journal.append(
        [
            erased(k2, "er-pending"),  # awaiting purge: its key must follow the rotation
            ev.UserErased(erasure_id="er-done", key=None, requested_at=1.0, counter_exits={"r1": 1}),
            ev.ErasurePurged(erasure_id="er-done", requested_at=1.0, purged_at=2.0, events_removed=3),
            budget_charge(),
            batch([k5, k2, *rest]),  # unindexed tail
            batch([]),  # an emptied batch
        ]
    )
    s["tomb"], s["done"], s["audit"], s["charge"], s["b3"], s["empty"] = (r.seq for r in recs)
    return s


async def test_rekey_rewrites_every_pseudonym_and_nothing_else(journal, db_dir):
    keys = random_keys(np.random.default_rng(5), 12).tolist()
    k1, k2, k3, k4, k5, *rest = keys
    s = await build(journal, keys)
    before = {r.seq: r for r in await read_all(journal)}
    found_before = {k: await journal.find_key(k) for k in keys}
    assert all(found_before.values())
    head = journal.head

    rewritten = await rekey(journal, mapping, 2, retombstone=map_tombstone)

    after = {r.seq: r for r in await read_all(journal)}
    assert rewritten == 3 + 3 + (3 + 1) + 1 + (2 + len(rest))  # activity, step entries, tombstone
    # one SaltRotated appended, in the same transaction, with the new version
    assert journal.head == head + 1
    assert isinstance(after[head + 1].event, ev.SaltRotated) and after[head + 1].event.key_version == 2
    assert journal.key_version == 2
    if journal.kind == "sqlite":
        assert dict(sql(db_dir / DB_NAME, "SELECT name, value FROM meta"))["key_version"] == "2"

    # activity: keys mapped position by position; everything else kept, digests dropped
    for name in ("b1", "b2", "b3", "empty"):
        old, new = before[s[name]].event, after[s[name]].event
        assert new.key_array().tolist() == [m(k) for k in old.key_array().tolist()], name
        assert new.days == old.days and new.ops == old.ops and new.metadata == old.metadata
        assert new.idempotency_key == old.idempotency_key and new.received_at == old.received_at
        assert new.request_digest is None
        assert (after[s[name]].seq, after[s[name]].last_seq) == (before[s[name]].seq, before[s[name]].last_seq)

    # tombstones: a pending one follows the rotation, a purged one stays anonymous
    assert after[s["tomb"]].event == erased(m(k2), "er-pending")
    assert after[s["done"]].event == before[s["done"]].event

    # counter steps: mapped and re-sorted (by the new keys)
    step = after[s["step"]].event
    assert unpack(step.entered) == sorted(m(k) for k in (k1, k3, k4))
    assert unpack(step.left) == [m(k5)]
    assert [m(k) for k in sorted([k1, k3, k4])] != sorted(m(k) for k in (k1, k3, k4)), "mapping must reorder"
    assert (step.run_id, step.t, step.z) == (before[s["step"]].event.run_id, 1, before[s["step"]].event.z)

    for name in ("audit", "charge"):
        assert after[s[name]].event == before[s[name]].event
    for seq, rec in before.items():
        if isinstance(rec.event, ev.CounterStarted):
            assert after[seq].event == rec.event

    # the index was rebuilt: new keys found where the old ones were, old keys nowhere
    if journal.kind == "sqlite":
        assert journal.index_watermark == journal.head
    for k in keys:
        assert await journal.find_key(m(k)) == found_before[k]
        assert await journal.find_key(k) == []


async def test_no_file_contains_an_old_key_after_rekey(sqlite_journal, db_dir):
    journal = sqlite_journal
    rng = np.random.default_rng(11)
    keys = random_keys(rng, 80)
    await build(journal, keys.tolist())
    for i in range(30):
        await journal.append([batch(rng.choice(keys, size=40), request_digest=rng.bytes(32))])
        if i % 10 == 9:
            await journal.index_pending()
    await journal.checkpoint()
    tombstone_key = keys[1]
    assert files_containing(db_dir, key_patterns(tombstone_key)["be"])  # msgpack int: the search can see it
    assert all(files_containing(db_dir, key_patterns(k)["le"]) for k in keys.tolist()[:5])

    await rekey(journal, mapping, 1, retombstone=map_tombstone)

    for k in keys.tolist():
        for name in ("le", "be"):
            assert files_containing(db_dir, key_patterns(k)[name]) == [], f"old key {k} survives ({name})"
    assert (db_dir / f"{DB_NAME}-wal").stat().st_size == 0  # checkpointed with TRUNCATE
    for k in keys.tolist()[:5]:
        assert DB_NAME in files_containing(db_dir, key_patterns(m(k))["le"])  # the new keys are there


async def test_key_version_and_rotation_survive_reopen(db_dir):
    path = db_dir / DB_NAME
    j = await Journal.open(path)
    try:
        await j.append([batch([101, 202])])
        await rekey(j, mapping, 1, retombstone=map_tombstone)
        await rekey(j, mapping, 2, retombstone=map_tombstone)
        head = j.head
    finally:
        await j.close()
    j = await Journal.open(path)
    try:
        assert j.key_version == 2 and j.head == head
        rotations = [r.event.key_version for r in await read_all(j, kinds=[ev.SaltRotated.KIND])]
        assert rotations == [1, 2]
        assert (await j.record_at(1)).event.key_array().tolist() == [m(m(101)), m(m(202))]
        assert await j.find_key(m(m(101))) == [1]
    finally:
        await j.close()


async def test_rekey_of_an_empty_journal(journal):
    assert await rekey(journal, mapping, 1, retombstone=map_tombstone) == 0
    assert journal.head == 1 and journal.key_version == 1


async def test_a_mapping_error_rolls_everything_back(journal):
    await journal.append([batch([1, 2]), erased(3), batch([4])])
    await settle(journal)
    before = [(r.seq, r.event) for r in await read_all(journal)]
    calls = 0

    def flaky(keys):
        nonlocal calls
        calls += 1
        if calls == 2:  # after some keys were rewritten, on every backend
            raise RuntimeError("HMAC backend went away")
        return mapping(keys)

    with pytest.raises(RuntimeError):
        await rekey(journal, flaky, 1, retombstone=map_tombstone)
    assert [(r.seq, r.event) for r in await read_all(journal)] == before
    assert journal.head == 4 and journal.key_version == 0
    assert await journal.find_key(1) == [1]
    assert await journal.find_key(m(1)) == []


async def test_a_failure_at_the_end_of_the_transaction_leaves_the_rows_unchanged(journal, db_dir):
    await journal.append([batch([1, 2]), erased(3)])
    await settle(journal)
    before = [(r.seq, r.event) for r in await read_all(journal)]
    await refuse_kind(journal, db_dir, ev.SaltRotated.KIND)
    with pytest.raises(Exception, match="refused"):
        await rekey(journal, mapping, 1, retombstone=map_tombstone)
    assert [(r.seq, r.event) for r in await read_all(journal)] == before
    assert journal.head == 3 and journal.key_version == 0
    assert await journal.refresh_head() == 3
    if journal.kind == "sqlite":
        meta = dict(sql(db_dir / DB_NAME, "SELECT name, value FROM meta"))
        assert meta.get("key_version", "0") == "0" and meta["index_watermark"] == "3"


async def test_a_failed_rekey_leaves_the_index_usable(journal, db_dir):
    await journal.append([batch([1, 2]), erased(3)])
    await settle(journal)
    await refuse_kind(journal, db_dir, ev.SaltRotated.KIND)
    with pytest.raises(Exception, match="refused"):
        await rekey(journal, mapping, 1, retombstone=map_tombstone)
    await journal.append([batch([2])])
    if journal.kind == "sqlite":
        assert journal.index_watermark == 3
        assert await journal.index_pending() == 1
    assert await journal.find_key(2) == [1, 4]


async def test_a_purged_tombstones_tokens_are_rewritten_by_the_callers_rule_with_the_runs_before_it(journal):
    await journal.append(
        [
            counter_started("r1"),
            ev.UserErased(erasure_id="er", key=None, requested_at=1.0, blocked_tokens={"r1": 41}),
            counter_started("r2"),
        ]
    )
    seen: list[tuple[str, list[str]]] = []

    def spy(tomb, runs, mapping_):
        seen.append((tomb.erasure_id, sorted(runs)))
        return map_tombstone(tomb, runs, mapping_)

    assert await rekey(journal, mapping, 1, retombstone=spy) == 1
    assert seen == [("er", ["r1"])]  # only the runs journaled before the tombstone
    (tomb,) = [r.event for r in await read_all(journal, kinds=[ev.UserErased.KIND])]
    assert tomb.blocked_tokens == {"r1": m(41)}


async def test_a_refusing_rule_rolls_the_whole_rotation_back(journal):
    keys = random_keys(np.random.default_rng(9), 3).tolist()
    await journal.append(
        [batch(keys), ev.UserErased(erasure_id="er", key=None, requested_at=1.0, blocked_tokens={"r1": 41})]
    )
    before = await read_all(journal)

    def refuse(tomb, runs, mapping_):
        raise ValueError("cannot re-key these tokens")

    with pytest.raises(ValueError, match="cannot re-key"):
        await rekey(journal, mapping, 1, retombstone=refuse)
    assert await read_all(journal) == before and journal.key_version == 0
