"""journal/store.py: dense sequence numbers, durability settings, atomic transactions, the index."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import anyio
import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journal import events as ev
from journal.store import BUCKETS, MAX_SEGMENTS_PER_BUCKET, _sorted_unique_pairs, bucket_of
from journal.store import SqliteJournal as Journal
from tests.journal.helpers import DB_NAME, batch, budget_charge, erased, read_all, sql

INT64 = st.integers(-(2**63), 2**63 - 1)


@pytest.fixture
def journal(sqlite_journal: Journal) -> Journal:
    """The SQLite journal's own behaviour (files, PRAGMAs, index); the backend contract that
    every backend keeps is ``test_backend_contract.py``."""
    return sqlite_journal


def key_in_bucket(bucket: int, low: int) -> int:
    """A pseudonym whose top 8 bits put it in ``bucket`` (0..255)."""
    return ((bucket - 128) << 56) | low


# -- sequence numbers ------------------------------------------------------------------------


async def test_append_assigns_dense_per_event_seqs(journal):
    stored = await journal.append([batch([1, 2, 3]), erased(9), batch([4, 5]), budget_charge(), batch([6])])
    assert [(r.seq, r.last_seq) for r in stored] == [(1, 3), (4, 4), (5, 6), (7, 7), (8, 8)]
    assert journal.head == 8
    more = await journal.append([batch([7] * 10), erased(1, "er-2")])
    assert [(r.seq, r.last_seq) for r in more] == [(9, 18), (19, 19)]
    assert journal.head == 19
    assert [r.event for r in stored + more] == [r.event for r in await read_all(journal)]


async def test_an_empty_batch_still_occupies_one_seq(journal):
    stored = await journal.append([batch([]), batch([1])])
    assert [(r.seq, r.last_seq) for r in stored] == [(1, 1), (2, 2)]
    assert journal.head == 2


async def test_append_of_nothing_changes_nothing(journal):
    await journal.append([batch([1, 2])])
    assert await journal.append([]) == []
    assert journal.head == 2 and await journal.count_rows() == 1


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(-1, 6), min_size=1, max_size=6), max_size=6))
def test_seqs_are_dense_for_any_sequence_of_appends(groups):
    """Each inner list is one append; -1 stands for a control record, n >= 0 for a batch of n."""

    async def scenario(path: Path) -> None:
        j = await Journal.open(path)
        try:
            expected_head = 0
            for group in groups:
                events = [erased(i) if n < 0 else batch(list(range(1, n + 1))) for i, n in enumerate(group)]
                stored = await j.append(events)
                assert len(stored) == len(group)
                for rec, n in zip(stored, group):
                    assert rec.seq == expected_head + 1
                    assert rec.last_seq - rec.seq + 1 == max(n, 1)
                    expected_head = rec.last_seq
                assert j.head == expected_head
            rows = await read_all(j)
            for a, b in zip(rows, rows[1:]):
                assert b.seq == a.last_seq + 1
        finally:
            await j.close()
        j = await Journal.open(path)
        try:
            assert j.head == expected_head
        finally:
            await j.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(scenario(Path(d) / DB_NAME))


async def test_head_journal_id_and_key_version_survive_reopen(db_dir):
    path = db_dir / DB_NAME
    j = await Journal.open(path)
    try:
        assert j.head == 0 and j.key_version == 0 and j.index_watermark == 0
        jid = j.journal_id
        assert len(jid) == 32 and int(jid, 16) >= 0
        await j.append([batch([1, 2, 3]), erased(4)])
        await j.index_pending()
        async with j.transaction():
            await j.set_key_version(3)
    finally:
        await j.close()
    j = await Journal.open(path)
    try:
        assert (j.head, j.journal_id, j.key_version, j.index_watermark) == (4, jid, 3, 4)
        stored = await j.append([batch([5])])
        assert stored[0].seq == 5
    finally:
        await j.close()
    other = await Journal.open(db_dir / "other.sqlite3")
    try:
        assert other.journal_id != jid
    finally:
        await other.close()


async def test_rows_are_durable_and_visible_to_another_connection_after_append(journal, db_dir):
    await journal.append([batch([1, 2]), erased(3)])
    rows = sql(db_dir / DB_NAME, "SELECT seq, last_seq, kind, version FROM journal ORDER BY seq")
    assert rows == [(1, 2, ev.ActivityBatchRecorded.KIND, 1), (3, 3, ev.UserErased.KIND, 1)]


# -- pragmas -----------------------------------------------------------------------------------


async def test_wal_secure_delete_and_full_sync_are_on(journal, db_dir):
    async def pragma(name: str):
        async with journal._db.execute(f"PRAGMA {name}") as cur:
            return (await cur.fetchone())[0]

    assert (await pragma("journal_mode")).lower() == "wal"
    assert await pragma("secure_delete") == 1
    assert await pragma("synchronous") == 2  # FULL: the commit is fsynced
    # journal_mode is persistent: a fresh connection sees WAL too
    assert sql(db_dir / DB_NAME, "PRAGMA journal_mode")[0][0].lower() == "wal"


async def test_synchronous_can_be_relaxed_explicitly(db_dir):
    j = await Journal.open(db_dir / DB_NAME, synchronous="NORMAL")
    try:
        async with j._db.execute("PRAGMA synchronous") as cur:
            assert (await cur.fetchone())[0] == 1
        async with j._db.execute("PRAGMA secure_delete") as cur:
            assert (await cur.fetchone())[0] == 1
    finally:
        await j.close()


# -- transactions ------------------------------------------------------------------------------


async def test_failing_transaction_leaves_head_and_rows_unchanged(journal, db_dir):
    await journal.append([batch([1, 2, 3])])
    with pytest.raises(RuntimeError, match="boom"):
        async with journal.transaction():
            stored = await journal.append_in_transaction([batch([4, 5]), erased(6)])
            assert journal.head == 6 and stored[-1].seq == 6
            await journal.replace_payload(1, batch([99]))
            raise RuntimeError("boom")
    assert journal.head == 3
    assert await journal.count_rows() == 1
    rec = await journal.record_at(1)
    assert rec.event.key_array().tolist() == [1, 2, 3]
    assert sql(db_dir / DB_NAME, "SELECT COUNT(*), MAX(last_seq) FROM journal") == [(1, 3)]
    # the next append reuses nothing and skips nothing
    stored = await journal.append([erased(7)])
    assert stored[0].seq == 4


def refuse_kind(db: Path, kind: int) -> None:
    """Make SQLite itself reject inserts of one event kind (a real constraint failure)."""
    sql(
        db,
        f"CREATE TRIGGER refuse_{kind} BEFORE INSERT ON journal WHEN NEW.kind = {kind} "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )


async def test_append_that_fails_midway_writes_nothing(journal, db_dir):
    """A constraint violation on the second row must not leave the first one behind."""
    await journal.append([batch([1])])
    refuse_kind(db_dir / DB_NAME, ev.BudgetCharged.KIND)
    with pytest.raises(Exception, match="refused"):
        await journal.append([batch([2, 3]), budget_charge()])
    assert await journal.count_rows() == 1
    assert [r.seq for r in await read_all(journal)] == [1]
    assert sql(db_dir / DB_NAME, "SELECT COUNT(*) FROM journal") == [(1,)]


async def test_failed_append_restores_head_so_seqs_stay_dense(journal, db_dir):
    await journal.append([batch([1])])
    refuse_kind(db_dir / DB_NAME, ev.BudgetCharged.KIND)
    with pytest.raises(Exception, match="refused"):
        await journal.append([batch([2, 3]), budget_charge()])
    assert journal.head == 1
    stored = await journal.append([erased(5)])
    assert stored[0].seq == 2


async def test_largest_single_statement_append(journal):
    n = 6_000  # as many rows as one multi-row INSERT holds (5 parameters each)
    stored = await journal.append([erased(i, f"er-{i}") for i in range(n)])
    assert [r.seq for r in stored] == list(range(1, n + 1))
    assert journal.head == n and await journal.count_rows() == n


async def test_records_after_a_failed_append_and_a_restart_are_still_found(db_dir):
    path = db_dir / DB_NAME
    j = await Journal.open(path)
    try:
        await j.append([batch([1])])
        refuse_kind(path, ev.BudgetCharged.KIND)
        with pytest.raises(Exception, match="refused"):
            await j.append([batch([2, 3, 4]), budget_charge()])
        await j.index_pending()
    finally:
        await j.close()
    j = await Journal.open(path)
    try:
        assert j.index_watermark <= j.head
        stored = await j.append([batch([777])])
        assert await j.find_key(777) == [stored[0].seq]
        await j.index_pending()
        assert await j.find_key(777) == [stored[0].seq]
    finally:
        await j.close()


async def test_large_append_takes_the_transaction_path_and_stays_dense(journal, db_dir):
    n = 6_100  # more rows than one multi-row INSERT statement holds
    events = [erased(i, f"er-{i}") if i % 3 else batch([i, i + 1]) for i in range(n)]
    stored = await journal.append(events)
    assert len(stored) == n and stored[0].seq == 1
    for a, b in zip(stored, stored[1:]):
        assert b.seq == a.last_seq + 1
    assert journal.head == stored[-1].last_seq == await journal.count_rows() + sum(1 for i in range(n) if i % 3 == 0)
    # and a failure on that path rolls everything back, head included
    refuse_kind(db_dir / DB_NAME, ev.BudgetCharged.KIND)
    head = journal.head
    with pytest.raises(Exception, match="refused"):
        await journal.append([erased(i) for i in range(n)] + [budget_charge()])
    assert journal.head == head and await journal.count_rows() == n
    assert (await journal.append([erased(1)]))[0].seq == head + 1


async def test_cancelled_transaction_rolls_back(journal):
    await journal.append([batch([1])])
    with anyio.move_on_after(0.05):
        async with journal.transaction():
            await journal.append_in_transaction([batch([2])])
            await anyio.sleep(10)
    assert journal.head == 1 and await journal.count_rows() == 1
    assert (await journal.append([batch([3])]))[0].seq == 2


async def test_rebuild_leaves_the_journal_intact_and_the_wal_empty(journal, db_dir):
    stored = await journal.append([batch([1, 2, 3]), erased(4), batch([5])])
    await journal.index_pending()
    await journal.rebuild()
    assert (db_dir / f"{DB_NAME}-wal").stat().st_size == 0
    assert [(r.seq, r.event) for r in await read_all(journal)] == [(r.seq, r.event) for r in stored]
    assert await journal.find_key(5) == [stored[2].seq]
    assert (await journal.append([batch([6])]))[0].seq == 6


async def test_rebuild_works_right_after_a_checkpoint(journal):
    await journal.append([batch([1, 2])])
    await journal.checkpoint()
    await journal.rebuild()
    assert await journal.find_key(1) == [1]


# -- reading -----------------------------------------------------------------------------------


async def test_read_returns_records_in_order_in_chunks(journal):
    events = [batch([i, i + 1]) if i % 2 else erased(i, f"er-{i}") for i in range(1, 8)]
    stored = await journal.append(events)
    chunks = [c async for c in journal.read(0, chunk=2)]
    assert [len(c) for c in chunks] == [2, 2, 2, 1]
    flat = [r for c in chunks for r in c]
    assert [(r.seq, r.last_seq, r.event) for r in flat] == [(r.seq, r.last_seq, r.event) for r in stored]
    # after_seq is exclusive and may point into the middle of a batch's range
    after = stored[2].seq
    assert [r.seq for r in await read_all(journal, after, chunk=2)] == [r.seq for r in stored[3:]]
    assert [r.seq for r in await read_all(journal, stored[0].seq + 1)] == [r.seq for r in stored[1:]]
    assert await read_all(journal, journal.head) == []


async def test_read_kinds_filter(journal):
    await journal.append([batch([1]), erased(2), budget_charge(), batch([3, 4]), erased(5, "er-2")])
    got = await read_all(journal, kinds=[ev.UserErased.KIND], chunk=1)
    assert [(r.seq, r.event.key) for r in got] == [(2, 2), (6, 5)]
    got = await read_all(journal, kinds=[ev.ActivityBatchRecorded.KIND, ev.BudgetCharged.KIND], chunk=2)
    assert [type(r.event) for r in got] == [ev.ActivityBatchRecorded, ev.BudgetCharged, ev.ActivityBatchRecorded]
    assert await read_all(journal, kinds=[ev.SaltRotated.KIND]) == []
    assert await read_all(journal, kinds=[]) == []


async def test_record_at(journal):
    await journal.append([batch([1, 2, 3]), erased(4)])
    assert (await journal.record_at(1)).event.key_array().tolist() == [1, 2, 3]
    assert (await journal.record_at(4)).event == erased(4)
    assert await journal.record_at(2) is None  # inside the batch's range: not a record start
    assert await journal.record_at(99) is None


async def test_read_raises_on_a_newer_version_instead_of_skipping(journal, db_dir):
    await journal.append([batch([1]), erased(2)])
    sql(db_dir / DB_NAME, "UPDATE journal SET version = version + 1 WHERE seq = 2")
    with pytest.raises(ev.UnknownEvent):
        await read_all(journal)


async def test_read_upcasts_an_old_version(journal, db_dir, monkeypatch):
    monkeypatch.setitem(
        ev.UPCASTERS,
        (ev.SaltRotated.KIND, 0),
        lambda old: ev.SaltRotated(key_version=old["v"], rotated_at=0.0),
    )
    await journal.append([batch([1])])
    sql(
        db_dir / DB_NAME,
        "INSERT INTO journal VALUES (2, 2, ?, 0, ?)",
        (ev.SaltRotated.KIND, msgspec.msgpack.encode({"v": 5})),
    )
    records = await read_all(journal)
    assert records[-1].event == ev.SaltRotated(key_version=5, rotated_at=0.0)


# -- the pseudonym index -----------------------------------------------------------------------


@given(st.lists(INT64, max_size=200))
def test_bucket_of_is_the_top_byte_and_monotone(keys):
    arr = np.array(sorted(keys), dtype=np.int64)
    b = bucket_of(arr)
    assert ((b >= 0) & (b < BUCKETS)).all()
    assert (np.diff(b) >= 0).all()
    for k, bk in zip(arr.tolist(), b.tolist()):
        assert bk == ((k >> 56) & 0xFF) ^ 0x80


@given(st.lists(st.tuples(st.integers(-5, 5) | INT64, st.integers(0, 10) | st.integers(0, 2**62)), max_size=100))
def test_sorted_unique_pairs(pairs):
    keys = np.array([k for k, _ in pairs], dtype=np.int64)
    seqs = np.array([s for _, s in pairs], dtype=np.int64)
    k, s = _sorted_unique_pairs(keys, seqs)
    assert k.dtype == np.dtype("<i8") and s.dtype == np.dtype("<i8")
    assert k.flags.c_contiguous and s.flags.c_contiguous
    out = list(zip(k.tolist(), s.tolist()))
    assert out == sorted(set(pairs))


async def test_find_key_sees_the_unindexed_tail(journal):
    a, b, c = 11 << 40, -(7 << 50), 3
    stored = await journal.append([batch([a, b]), erased(a), batch([c, a, a]), batch([b])])
    assert journal.index_watermark == 0
    assert await journal.find_key(a) == [stored[0].seq, stored[2].seq]
    assert await journal.find_key(b) == [stored[0].seq, stored[3].seq]
    assert await journal.find_key(c) == [stored[2].seq]
    assert await journal.find_key(12345) == []


async def test_find_key_combines_index_and_tail_and_respects_before_seq(journal, db_dir):
    a, b = 0x1122334455667788, -0x0102030405060708
    first = await journal.append([batch([a, b, a]), batch([b])])
    assert await journal.index_pending() == 4
    assert journal.index_watermark == journal.head
    assert await journal.index_pending() == 0  # nothing new
    second = await journal.append([erased(b), batch([a]), batch([b, b])])
    # a: one record indexed, one in the tail
    assert await journal.find_key(a) == [first[0].seq, second[1].seq]
    assert await journal.find_key(b) == [first[0].seq, first[1].seq, second[2].seq]
    # before_seq is exclusive and applies to both the index and the tail
    assert await journal.find_key(b, before_seq=second[0].seq) == [first[0].seq, first[1].seq]
    assert await journal.find_key(b, before_seq=first[1].seq) == [first[0].seq]
    assert await journal.find_key(a, before_seq=second[1].seq + 1) == [first[0].seq, second[1].seq]
    assert await journal.find_key(a, before_seq=first[0].seq) == []
    # after indexing the rest the answers are the same and come from the index alone
    await journal.index_pending()
    assert journal.index_watermark == journal.head
    assert await journal.find_key(a) == [first[0].seq, second[1].seq]
    assert await journal.find_key(b) == [first[0].seq, first[1].seq, second[2].seq]
    meta = dict(sql(db_dir / DB_NAME, "SELECT name, value FROM meta"))
    assert int(meta["index_watermark"]) == journal.head


async def test_index_finds_every_record_for_many_random_keys(journal):
    rng = np.random.default_rng(7)
    universe = rng.integers(-(2**63), 2**63 - 1, size=300)
    truth: dict[int, set[int]] = {}
    for i in range(40):
        keys = rng.choice(universe, size=int(rng.integers(1, 60)))
        rec = (await journal.append([batch(keys)]))[0]
        for k in keys.tolist():
            truth.setdefault(k, set()).add(rec.seq)
        if i % 7 == 3:
            await journal.index_pending()
    assert 0 < journal.index_watermark < journal.head  # part indexed, part tail
    for k in universe.tolist():
        assert await journal.find_key(k) == sorted(truth.get(k, ())), k
    await journal.index_pending()
    for k in universe.tolist()[:50]:
        assert await journal.find_key(k) == sorted(truth.get(k, ())), k


async def test_index_survives_reopen(db_dir):
    path = db_dir / DB_NAME
    j = await Journal.open(path)
    try:
        stored = await j.append([batch([42, 43]), batch([42])])
        await j.index_pending()
    finally:
        await j.close()
    j = await Journal.open(path)
    try:
        assert j.index_watermark == j.head
        assert await j.find_key(42) == [stored[0].seq, stored[1].seq]
    finally:
        await j.close()


async def test_segments_are_merged_beyond_the_limit_and_lookups_still_find_everything(journal, db_dir):
    bucket = 200
    k1, k2 = key_in_bucket(bucket, 0x0102030405), key_in_bucket(bucket, 0x0A0B0C0D0E)
    other = key_in_bucket(3, 77)
    expect1, expect2, expect_other = [], [], []
    runs = MAX_SEGMENTS_PER_BUCKET + 3
    for i in range(runs):
        stored = await journal.append([batch([k1, other]), batch([k2] if i % 2 else [k1, k2])])
        expect1.append(stored[0].seq)
        expect_other.append(stored[0].seq)
        if i % 2 == 0:
            expect1.append(stored[1].seq)
        expect2.append(stored[1].seq)
        await journal.index_pending()
        n_segments = sql(db_dir / DB_NAME, "SELECT COUNT(*) FROM key_postings WHERE bucket = ?", (bucket,))[0][0]
        assert 1 <= n_segments <= MAX_SEGMENTS_PER_BUCKET
    assert await journal.find_key(k1) == sorted(expect1)
    assert await journal.find_key(k2) == sorted(expect2)
    assert await journal.find_key(other) == expect_other
    # the index alone (empty tail) holds every posting
    assert journal.index_watermark == journal.head
    rows = sql(db_dir / DB_NAME, "SELECT segment, last_seq, keys, seqs FROM key_postings WHERE bucket = ?", (bucket,))
    keys = np.concatenate([np.frombuffer(r[2], dtype="<i8") for r in rows])
    seqs = np.concatenate([np.frombuffer(r[3], dtype="<i8") for r in rows])
    assert sorted(seqs[keys == k1].tolist()) == sorted(expect1)
    assert sorted(seqs[keys == k2].tolist()) == sorted(expect2)
    for segment, last_seq, kb, sb in rows:
        ks, ss = np.frombuffer(kb, dtype="<i8"), np.frombuffer(sb, dtype="<i8")
        assert (bucket_of(ks) == bucket).all()
        assert list(zip(ks.tolist(), ss.tolist())) == sorted(zip(ks.tolist(), ss.tolist()))
        assert segment <= ss.min() and ss.max() <= last_seq


async def test_other_key_lookups_across_merges(journal):
    bucket = 17
    keys = [key_in_bucket(bucket, 1000 + i) for i in range(5)]
    truth: dict[int, list[int]] = {k: [] for k in keys}
    for i in range(2 * MAX_SEGMENTS_PER_BUCKET + 1):
        k = keys[i % len(keys)]
        rec = (await journal.append([batch([k, k, keys[0]])]))[0]
        truth[k].append(rec.seq)
        if k != keys[0]:
            truth[keys[0]].append(rec.seq)
        await journal.index_pending()
    for k in keys:
        assert await journal.find_key(k) == sorted(truth[k])


async def test_drop_key_from_index_removes_only_that_keys_postings_below_the_bound(journal, db_dir):
    bucket = 99
    k, neighbour = key_in_bucket(bucket, 0x0102030405), key_in_bucket(bucket, 0x0102030406)
    far = key_in_bucket(5, 1)
    early = await journal.append([batch([k, neighbour, far]), batch([k])])
    await journal.index_pending()
    mid = await journal.append([erased(k), batch([neighbour, k])])
    await journal.index_pending()
    late = await journal.append([batch([k, far])])
    await journal.index_pending()
    bound = mid[0].seq
    async with journal.transaction():
        await journal.drop_key_from_index(k, bound)
    assert await journal.find_key(k) == [mid[1].seq, late[0].seq]
    assert await journal.find_key(neighbour) == [early[0].seq, mid[1].seq]
    assert await journal.find_key(far) == [early[0].seq, late[0].seq]
    # the journal rows themselves are untouched by an index operation
    assert (await journal.record_at(early[1].seq)).event.key_array().tolist() == [k]
    rows = sql(db_dir / DB_NAME, "SELECT keys, seqs FROM key_postings WHERE bucket = ?", (bucket,))
    pairs = [
        (kk, ss)
        for kb, sb in rows
        for kk, ss in zip(np.frombuffer(kb, "<i8").tolist(), np.frombuffer(sb, "<i8").tolist())
    ]
    assert all(ss >= bound for kk, ss in pairs if kk == k)
    assert sorted(ss for kk, ss in pairs if kk == neighbour) == [early[0].seq, mid[1].seq]


async def test_drop_key_from_index_on_an_empty_bucket_is_harmless(journal):
    await journal.append([batch([key_in_bucket(1, 5)])])
    await journal.index_pending()
    async with journal.transaction():
        await journal.drop_key_from_index(key_in_bucket(250, 5), 10)
    assert await journal.find_key(key_in_bucket(1, 5)) == [1]


async def test_clear_index_then_reindex(journal):
    stored = await journal.append([batch([5, 6]), batch([6])])
    await journal.index_pending()
    async with journal.transaction():
        await journal.clear_index()
    assert journal.index_watermark == 0
    assert await journal.find_key(6) == [stored[0].seq, stored[1].seq]  # tail scan
    assert await journal.index_pending() == 3
    assert await journal.find_key(6) == [stored[0].seq, stored[1].seq]


async def test_rolled_back_transaction_restores_in_memory_index_state(journal):
    await journal.append([batch([5, 6])])
    await journal.index_pending()
    with pytest.raises(RuntimeError):
        async with journal.transaction():
            await journal.clear_index()
            await journal.set_key_version(9)
            raise RuntimeError("rolled back")
    # the database still has the old watermark, key version and postings ...
    assert journal.index_watermark == journal.head
    assert journal.key_version == 0
    # ... and indexing new rows keeps working
    await journal.append([batch([6])])
    await journal.index_pending()
    assert await journal.find_key(6) == [1, 3]
