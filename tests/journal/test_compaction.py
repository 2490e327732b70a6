"""journal/compaction.py: an erased user's events are physically gone; nothing else changes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.erasure import purge_erased as purge  # the purge as the service runs it
from journal import events as ev
from journal.compaction import PurgeTarget
from journal.compaction import purge as purge_with
from journal.store import SqliteJournal as Journal
from tests.journal.helpers import (
    DB_NAME,
    batch,
    budget_charge,
    counter_started,
    counter_step,
    db_files,
    erased,
    files_containing,
    key_patterns,
    random_keys,
    read_all,
    settle,
    sql,
)

NOW = 1_800_000_000.0
E, C, X, Y = 0x5EC0_0001_0203_0405, -0x3A11_0A0B_0C0D_0E0F, 0x0111_2233_4455_6677, -0x0777_6655_4433_2211


def md(day: int, who: str) -> bytes:
    return json.dumps({"day": day, "who": who}).encode()


def steps_of(records) -> dict[int, ev.CounterStepped]:
    return {r.seq: r.event for r in records if isinstance(r.event, ev.CounterStepped)}


def unpack(b: bytes) -> list[int]:
    return np.frombuffer(b, dtype="<i8").tolist()


def postings(db, key: int) -> list[int]:
    out = []
    for kb, sb in sql(db, "SELECT keys, seqs FROM key_postings"):
        ks, ss = np.frombuffer(kb, "<i8"), np.frombuffer(sb, "<i8")
        out += ss[ks == key].tolist()
    return sorted(out)


async def build(journal: Journal) -> dict:
    """The scenario: E is erased at T; C, X, Y are not. Returns the seqs of interest."""
    s = {}
    a = batch(
        [E, C, X, E, Y],
        days=[100, 101, 102, 103, 104],
        ops=[1, 1, 1, 0, 1],
        metadata=[(0, md(100, "E")), (1, md(101, "C")), (3, md(103, "E")), (4, md(104, "Y"))],
        idempotency_key="idem-A",
        request_digest=b"\xd1" * 32,
    )
    recs = await journal.append([a, counter_started("r1"), counter_started("r2"), counter_started("r3")])
    s["A"] = recs[0].seq
    recs = await journal.append([counter_step("r1", 1, entered=[E, C, X])])
    s["r1t1"] = recs[0].seq
    await settle(journal)  # A and r1t1 are in the index; what follows is the tail
    recs = await journal.append(
        [
            batch([E], days=[105], metadata=[(0, md(105, "E"))]),
            counter_step("r2", 1, entered=[E, Y]),
            counter_step("r2", 2, left=[E]),
            counter_step("r3", 1, entered=[X], left=[Y]),
            batch([C, X], days=[106, 107], metadata=[(1, md(107, "X"))]),
            budget_charge(),
        ]
    )
    s["B"], s["r2t1"], s["r2t2"], s["r3t1"], s["D"], s["charge"] = (r.seq for r in recs)
    await settle(journal)
    recs = await journal.append([batch([X, E, E], days=[108, 109, 110])])  # unindexed tail
    s["F"] = recs[0].seq
    recs = await journal.append([erased(E, "er-E", requested_at=NOW - 600)])
    s["T"] = recs[0].seq
    recs = await journal.append(
        [
            batch([E, C], days=[111, 112], metadata=[(0, md(111, "E"))]),  # E came back: new data
            counter_step("r1", 2, entered=[E], left=[C]),
        ]
    )
    s["G"], s["r1t2"] = (r.seq for r in recs)
    return s


async def test_purge_removes_the_users_events_before_the_tombstone_and_nothing_else(journal, db_dir):
    s = await build(journal)
    before = {r.seq: r for r in await read_all(journal)}
    head, rows = journal.head, await journal.count_rows()

    audit = await purge(journal, [PurgeTarget("er-E", E, s["T"], NOW - 600)], now=NOW)

    # one audit record appended, nothing else: seqs are never reused or shifted
    assert journal.head == head + 1 and await journal.count_rows() == rows + 1
    assert len(audit) == 1 and (audit[0].seq, audit[0].last_seq) == (head + 1, head + 1)
    assert audit[0].event == ev.ErasurePurged(
        erasure_id="er-E", requested_at=NOW - 600, purged_at=NOW, events_removed=5
    )
    after = {r.seq: r for r in await read_all(journal)}
    assert after[head + 1].event == audit[0].event
    assert [(r.seq, r.last_seq) for r in before.values()] == [(r.seq, r.last_seq) for r in after.values()][:-1]

    # no activity of E before the tombstone survives; later events do
    for seq, r in after.items():
        if isinstance(r.event, ev.ActivityBatchRecorded):
            assert (E in r.event.key_array().tolist()) == (seq > s["T"]), seq
    a = after[s["A"]].event
    assert a.key_array().tolist() == [C, X, Y]
    assert a.day_array().tolist() == [101, 102, 104]
    assert a.op_array().tolist() == [1, 1, 1]
    assert a.metadata == [(0, md(101, "C")), (2, md(104, "Y"))]  # indices follow their events
    assert a.idempotency_key == "idem-A" and a.received_at == before[s["A"]].event.received_at
    assert a.request_digest is None  # a digest over the old batch would still depend on E

    emptied = after[s["B"]]
    assert isinstance(emptied.event, ev.ActivityBatchRecorded) and emptied.event.size == 0
    assert emptied.event.metadata == []
    assert (emptied.seq, emptied.last_seq) == (before[s["B"]].seq, before[s["B"]].last_seq)
    assert after[s["F"]].event.key_array().tolist() == [X]
    assert after[s["F"]].event.day_array().tolist() == [108]
    for untouched in ("D", "G", "charge", "r3t1", "r1t2"):
        assert after[s[untouched]].event == before[s[untouched]].event, untouched
    for seq, r in before.items():
        if isinstance(r.event, ev.CounterStarted):
            assert after[seq].event == r.event

    # counter steps before the tombstone lose E, keep everyone else, stay sorted
    steps = steps_of(after.values())
    assert unpack(steps[s["r1t1"]].entered) == sorted([C, X])
    assert unpack(steps[s["r2t1"]].entered) == [Y]
    assert unpack(steps[s["r2t2"]].left) == []
    assert unpack(steps[s["r1t2"]].entered) == [E]  # after the tombstone: kept
    assert steps[s["r1t1"]].z == before[s["r1t1"]].event.z  # only the key lists change

    # the tombstone keeps no identifier, only the anonymous exits it owed
    tomb = after[s["T"]].event
    assert tomb == ev.UserErased(erasure_id="er-E", key=None, requested_at=NOW - 600, counter_exits={"r1": 1})

    # the index no longer knows E below the tombstone; others are unaffected
    assert await journal.find_key(E) == [s["G"]]
    assert await journal.find_key(E, before_seq=s["T"]) == []
    if journal.kind == "sqlite":
        assert postings(db_dir / DB_NAME, E) == [s["G"]]  # purge indexed the tail first, then dropped E < T
    assert await journal.find_key(C) == [s["A"], s["D"], s["G"]]
    assert await journal.find_key(X) == [s["A"], s["D"], s["F"]]
    assert await journal.find_key(Y) == [s["A"]]
    if journal.kind == "sqlite":
        assert journal.index_watermark >= s["T"]


async def test_purge_is_durable_across_reopen(db_dir):
    path = db_dir / DB_NAME
    j = await Journal.open(path)
    try:
        s = await build(j)
        await purge(j, [PurgeTarget("er-E", E, s["T"], NOW)], now=NOW)
        head = j.head
    finally:
        await j.close()
    j = await Journal.open(path)
    try:
        assert j.head == head
        assert await j.find_key(E) == [s["G"]]
        assert (await j.record_at(s["T"])).event.key is None
        assert E not in (await j.record_at(s["A"])).event.key_array().tolist()
    finally:
        await j.close()


async def test_purge_hands_the_counter_history_to_anonymise_and_writes_what_it_returns(journal):
    """journal/ decides nothing about counter runs: it passes the counter records before the
    tombstone, as journaled (key still in them), and writes the tombstone it is given."""
    recs = await journal.append(
        [counter_started("r1"), counter_step("r1", 1, entered=[E, C]), counter_step("r1", 2, left=[E])]
    )
    tomb = (await journal.append([erased(E, "er-1")]))[0]
    await journal.append([counter_step("r1", 3, entered=[E])])  # after the tombstone: not history
    calls = []

    def anonymise(tombstone: ev.UserErased, history: list) -> ev.UserErased:
        calls.append((tombstone, list(history)))
        return ev.UserErased(erasure_id=tombstone.erasure_id, key=None, requested_at=0.0, counter_exits={"x": 7})

    await purge_with(journal, [PurgeTarget("er-1", E, tomb.seq, 0.0)], anonymise=anonymise, now=NOW)
    assert calls == [(tomb.event, [r.event for r in recs])]
    assert (await journal.record_at(tomb.seq)).event.counter_exits == {"x": 7}
    for r in await read_all(journal, kinds=[ev.CounterStepped.KIND]):
        assert (E in unpack(r.event.entered) + unpack(r.event.left)) == (r.seq > tomb.seq)
    # a repeated purge (after a failure) does not ask again: the tombstone is already anonymous
    await purge_with(journal, [PurgeTarget("er-1", E, tomb.seq, 0.0)], anonymise=anonymise, now=NOW)
    assert len(calls) == 1


async def test_purge_refuses_an_anonymised_tombstone_that_still_names_the_user(journal):
    tomb = (await journal.append([erased(E, "er-1")]))[0]

    def leaky(tombstone: ev.UserErased, history: list) -> ev.UserErased:
        return tombstone

    with pytest.raises(ValueError, match="without its key"):
        await purge_with(journal, [PurgeTarget("er-1", E, tomb.seq, 0.0)], anonymise=leaky, now=NOW)
    assert (await journal.record_at(tomb.seq)).event.key == E  # the transaction rolled back


async def test_two_erasures_in_one_purge(journal):
    e2 = 0x0F0E_0D0C_0B0A_0908
    first = await journal.append([batch([E, e2, C]), batch([e2, e2])])
    t1 = (await journal.append([erased(E, "er-1", 1.0)]))[0].seq
    mid = await journal.append([batch([e2, E])])  # E after its tombstone is kept; e2 still purged
    t2 = (await journal.append([erased(e2, "er-2", 2.0)]))[0].seq
    head = journal.head
    audit = await purge(journal, [PurgeTarget("er-1", E, t1, 1.0), PurgeTarget("er-2", e2, t2, 2.0)], now=NOW)
    assert [(r.seq, r.event.erasure_id, r.event.events_removed) for r in audit] == [
        (head + 1, "er-1", 1),
        (head + 2, "er-2", 4),
    ]
    assert (await journal.record_at(first[0].seq)).event.key_array().tolist() == [C]
    assert (await journal.record_at(first[1].seq)).event.size == 0
    assert (await journal.record_at(mid[0].seq)).event.key_array().tolist() == [E]
    assert await journal.find_key(e2) == []
    assert await journal.find_key(E) == [mid[0].seq]
    assert (await journal.record_at(t1)).event.key is None
    assert (await journal.record_at(t2)).event.key is None


async def test_a_user_erased_twice_is_purged_in_two_steps(journal):
    a = await journal.append([batch([E, C])])
    t1 = (await journal.append([erased(E, "er-1")]))[0].seq
    await purge(journal, [PurgeTarget("er-1", E, t1, 0.0)], now=NOW)
    b = await journal.append([batch([E]), batch([C, E])])
    t2 = (await journal.append([erased(E, "er-2")]))[0].seq
    audit = await purge(journal, [PurgeTarget("er-2", E, t2, 0.0)], now=NOW)
    assert audit[0].event.events_removed == 2
    assert await journal.find_key(E) == []
    assert (await journal.record_at(a[0].seq)).event.key_array().tolist() == [C]
    assert (await journal.record_at(b[1].seq)).event.key_array().tolist() == [C]


async def test_purging_the_same_erasure_again_keeps_the_owed_exits(journal):
    await journal.append([counter_step("r1", 1, entered=[E, C]), batch([E])])
    tomb = (await journal.append([erased(E, "er-1")]))[0].seq
    target = PurgeTarget("er-1", E, tomb, 0.0)
    await purge(journal, [target], now=NOW)
    assert (await journal.record_at(tomb)).event.counter_exits == {"r1": 1}
    # e.g. the first purge job committed, then failed (checkpoint), so the erasure actor retries
    again = await purge(journal, [target], now=NOW + 1)
    assert all(r.event.events_removed == 0 for r in again)
    assert (await journal.record_at(tomb)).event.counter_exits == {"r1": 1}


# -- batch_without(): the metadata stays aligned -------------------------------------------------------


@st.composite
def batch_and_mask(draw):
    n = draw(st.integers(0, 30))
    keys = draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))
    keep = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    with_md = sorted(draw(st.sets(st.integers(0, n - 1), max_size=n))) if n else []
    b = batch(
        keys,
        days=list(range(1000, 1000 + n)),
        ops=[i % 2 for i in range(n)],
        metadata=[(i, str(i).encode()) for i in with_md],  # raw bytes name the original index
        idempotency_key=draw(st.none() | st.text(max_size=5)),
        request_digest=b"\x07" * 32,
    )
    return b, keep


@given(batch_and_mask())
def test_without_keeps_metadata_aligned(case):
    b, keep = case
    out = ev.batch_without(b, keep)
    assert out.size == int(keep.sum())
    assert out.key_array().tolist() == b.key_array()[keep].tolist()
    assert out.day_array().tolist() == b.day_array()[keep].tolist()
    assert out.op_array().tolist() == b.op_array()[keep].tolist()
    original = {i for i, _ in b.metadata}
    assert [int(raw) for _, raw in out.metadata] == [i for i in sorted(original) if keep[i]]
    for j, raw in out.metadata:
        i = int(raw)
        assert 0 <= j < out.size
        assert out.day_array()[j] == b.day_array()[i]  # the metadata sits on the same event
        assert j == int(keep[:i].sum())
    assert [j for j, _ in out.metadata] == sorted({j for j, _ in out.metadata})
    assert out.idempotency_key == b.idempotency_key and out.received_at == b.received_at
    assert out.request_digest is None
    # and it round-trips through the journal encoding
    assert ev.decode(out.KIND, out.VERSION, ev.encode(out)) == out


# -- on disk: no byte of the erased pseudonym survives -------------------------------------------


async def test_no_byte_of_the_erased_key_remains_in_any_database_file(sqlite_journal, db_dir):
    journal = sqlite_journal
    rng = np.random.default_rng(20261125)
    erased_key, control, *others = random_keys(rng, 60).tolist()
    others = np.array(others, dtype=np.int64)
    n_batches = 40
    for i in range(n_batches):
        keys = rng.choice(others, size=50)
        metadata = []
        if i % 3 == 0:
            keys[7] = erased_key
            metadata.append((7, json.dumps({"note": str(erased_key)}).encode()))
        if i % 4 == 0:
            keys[11] = control
            metadata.append((11, json.dumps({"note": str(control)}).encode()))
        await journal.append([batch(keys, metadata=metadata, request_digest=rng.bytes(32))])
        if i == n_batches // 2:
            await journal.index_pending()
    await journal.append([counter_started("r1"), counter_step("r1", 1, entered=[erased_key, control])])
    tomb = (await journal.append([erased(erased_key, "er-bytes")]))[0].seq

    # the search is not vacuous: before the purge every encoding of the key is on disk
    await journal.checkpoint()
    for name, pattern in key_patterns(erased_key).items():
        assert files_containing(db_dir, pattern), f"{name} encoding should be on disk before the purge"

    audit = await purge(journal, [PurgeTarget("er-bytes", erased_key, tomb, 0.0)], now=NOW)
    assert audit[0].event.events_removed == len(range(0, n_batches, 3))

    files = db_files(db_dir)
    assert DB_NAME in files and f"{DB_NAME}-wal" in files and f"{DB_NAME}-shm" in files
    for name, pattern in key_patterns(erased_key).items():
        assert files_containing(db_dir, pattern) == [], f"{name} encoding of the erased key survives"
    assert (db_dir / f"{DB_NAME}-wal").stat().st_size == 0  # checkpointed with TRUNCATE
    assert DB_NAME in files_containing(db_dir, key_patterns(control)["le"])
    assert DB_NAME in files_containing(db_dir, key_patterns(control)["decimal"])


async def test_no_byte_of_many_erased_keys_remains_after_indexing_and_purge(sqlite_journal, db_dir):
    journal = sqlite_journal
    """Regression: index_pending inserting new segments rebalances key_postings pages, and SQLite
    moves cells without zeroing their old copies (secure_delete covers deleted content only).
    With this seed, before purge rebuilt the file, 2 of the 128 erased keys survived in page free
    space. Large per-bucket rows (many events per index run) are what makes the relocation likely.
    """
    rng = np.random.default_rng(0)
    keys_all = random_keys(rng, 628)
    targets, others = keys_all[:128], keys_all[128:]
    for i in range(16):
        keys = rng.choice(others, size=2000)
        keys[:128] = targets
        rng.shuffle(keys)
        await journal.append([batch(keys, days=np.full(2000, 100))])
        if i == 8:
            await journal.index_pending()
    tombs = await journal.append([erased(int(k), f"er-{i}") for i, k in enumerate(targets)])
    await purge(journal, [PurgeTarget(r.event.erasure_id, r.event.key, r.seq, 0.0) for r in tombs], now=NOW)
    # none of them is in a live row any more ...
    for k in targets.tolist()[:5]:
        assert await journal.find_key(k) == []
    # ... and none of their bytes is anywhere on disk
    survivors = [k for k in targets.tolist() if files_containing(db_dir, key_patterns(k)["le"])]
    assert survivors == []
