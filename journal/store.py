"""The SQLite journal (WAL, through aiosqlite): the embedded default ``JournalBackend``.

Rules (and ``journal/backend.py`` for what every backend promises):
1. Sequence numbers are dense and assigned here, in commit order, one per event: an activity
   batch of n events occupies ``seq .. seq+n-1`` (its row's ``seq`` and ``last_seq``), every
   other record occupies one. ``head`` is the last assigned number.
2. A call to ``append`` is one transaction; the rows are durable when it returns (WAL +
   ``synchronous=FULL`` by default: the commit is fsynced). Group commit -- many requests in
   one ``append`` -- lives in ``groupcommit.py``; this module knows nothing about requests.
3. Live traffic only ever appends. Rows change in exactly two places, both whole-journal
   maintenance run exclusively by the committer: erasure compaction (``compaction.py``) and salt
   rotation (``rekey.py``). ``secure_delete`` is always on so rewritten bytes are zeroed, and
   those jobs checkpoint the WAL with TRUNCATE afterwards.
4. The pseudonym index (``key_postings``) is built off the hot path, in bulk: per 8-bit key
   bucket, segments of sorted (key, seq) pairs. ``collect_postings`` reads and sorts the
   unindexed tail on a *separate read-only connection* (a WAL snapshot), so the writer is never
   held while it works; ``write_postings`` then stores the result in one short transaction and
   refuses a result that a rewrite (purge, rotation) or another build made stale. Reads on the
   writer connection are only ever done inside exclusive jobs: an open read statement on the
   writer's connection would delay the commit of an autocommit INSERT until it finished. A random-key
   B-tree index on the ingest path costs more than everything else on it together (measured:
   ~120k rows/s at 10M rows versus ~5M rows/s for the appends); bulk segments cost almost
   nothing and a lookup reads one bucket's few segments plus the not-yet-indexed tail.
5. ``epoch`` counts the committed in-place rewrites (rule 3). Every rewriting method marks its
   transaction, and ``transaction`` stores ``epoch + 1`` in ``meta`` in that same transaction,
   so the journal's content and its epoch change atomically. A snapshot records the epoch it
   was taken at and is valid only while the journal is still at that epoch (a snapshot from
   before a purge still holds the user, and tail replay of the rewritten records would never
   take them out again). ``rebuilt_epoch`` is the epoch of the last completed ``rebuild``: when
   it lags (a crash during VACUUM), the next start rebuilds before anything else.
6. ``FORMAT`` is the version of this file's schema, stored in ``meta``. A journal written by a
   newer version is refused at open (``JournalTooNew``), never read by guesswork.
"""

from __future__ import annotations

import functools
import sqlite3
import uuid
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import anyio
import msgspec
import numpy as np

from journal import events as ev
from journal import faults
from journal.backend import Exclusive, Job, JournalBackend, JournalTooNew, KeyMapping, Member, Prepare
from journal.events import StoredRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq      INTEGER PRIMARY KEY,   -- first sequence number of the record
    last_seq INTEGER NOT NULL,      -- last sequence number (== seq unless an activity batch)
    kind     INTEGER NOT NULL,      -- events.Event.KIND
    version  INTEGER NOT NULL,      -- events.Event.VERSION at write time
    payload  BLOB NOT NULL          -- msgpack of the event Struct
);
-- Control records (everything but activity) are few; compaction and rotation find them fast.
CREATE INDEX IF NOT EXISTS journal_control ON journal(kind, seq) WHERE kind <> 1;
CREATE TABLE IF NOT EXISTS key_postings (
    bucket   INTEGER NOT NULL,      -- top 8 bits of the pseudonym, 0..255
    segment  INTEGER NOT NULL,      -- first journal seq this segment covers
    last_seq INTEGER NOT NULL,      -- last journal seq this segment covers
    keys     BLOB NOT NULL,         -- int64 LE, sorted
    seqs     BLOB NOT NULL,         -- int64 LE, record seq of each key (sorted within a key)
    PRIMARY KEY (bucket, segment)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

FORMAT = 1  # rule 6
BUCKETS = 256
MAX_SEGMENTS_PER_BUCKET = 8
_ACTIVITY = ev.ActivityBatchRecorded.KIND
_ROWS_PER_STATEMENT = 6000  # 5 parameters a row, under SQLite's default 32,766-variable limit


@functools.lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    return "INSERT INTO journal VALUES " + ",".join(["(?, ?, ?, ?, ?)"] * rows)


@dataclass(frozen=True, slots=True)
class Postings:
    """A sorted, not yet stored slice of the pseudonym index: activity in (start, upto]."""

    start: int
    upto: int
    epoch: int
    keys: np.ndarray
    seqs: np.ndarray
    events: int  # activity events read (before pairs were deduplicated)


Segment = tuple[int, int, np.ndarray, np.ndarray]  # (first seq, last seq, sorted keys, their seqs)


def bucket_of(keys: np.ndarray) -> np.ndarray:
    return (keys >> 56) + 128


class SqliteJournal:
    """One SQLite database file. Not safe for concurrent use by two tasks: the committer is
    the only writer while the service runs; offline tools open their own. One process per file
    (``journal.lock``), so positions assigned in memory are safe here (rule 1)."""

    kind = "sqlite"
    shared = False  # one process owns the file (backend rule 6)
    partition_count = 1  # one process holds every key: there is nothing to partition

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        self.head = 0
        self.index_every_events = 262_144
        self.index_idle_seconds = 2.0
        self.journal_id = ""
        self.key_version = 0
        self.index_watermark = 0
        self.rewrite_epoch = 0  # in memory: bumped by every rewrite call (index staleness, rule 4)
        self.epoch = 0  # committed in-place rewrites, persisted (rule 5)
        self.rebuilt_epoch = 0
        self._rewrote = False  # the open transaction rewrote something
        self._reader: aiosqlite.Connection | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        synchronous: str = "FULL",
        index_every_events: int = 262_144,
        index_idle_seconds: float = 2.0,
    ) -> SqliteJournal:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        for pragma in (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={synchronous}",
            "PRAGMA secure_delete=ON",
            "PRAGMA cache_size=-65536",
            "PRAGMA temp_store=MEMORY",
        ):
            await db.execute(pragma)
        await db.executescript(SCHEMA)
        self = cls(db, path)
        self.index_every_events = index_every_events
        self.index_idle_seconds = index_idle_seconds
        async with db.execute("SELECT COALESCE(MAX(last_seq), 0) FROM journal") as cur:
            self.head = _scalar(await cur.fetchone())
        meta = await self._meta()
        stored_format = int(meta.get("format", FORMAT))
        if stored_format > FORMAT:
            await db.close()
            raise JournalTooNew(
                f"{path} was written by a newer dpdau (journal format {stored_format}; this version reads "
                f"up to {FORMAT}); upgrade dpdau or point DATA_DIR elsewhere"
            )
        if "format" not in meta:
            await self._set_meta("format", FORMAT)
        if "journal_id" not in meta:
            meta["journal_id"] = uuid.uuid4().hex
            await db.execute("INSERT INTO meta VALUES ('journal_id', ?)", (meta["journal_id"],))
        self.journal_id = meta["journal_id"]
        self.epoch = int(meta.get("epoch", 0))
        if "rebuilt_epoch" not in meta:  # a new journal (or one from before epochs): nothing pending
            meta["rebuilt_epoch"] = str(self.epoch)
            await self._set_meta("rebuilt_epoch", self.epoch)
        self.rebuilt_epoch = int(meta["rebuilt_epoch"])
        self.key_version = int(meta.get("key_version", 0))
        # Defence: a watermark past the head would hide later records from the index.
        self.index_watermark = min(int(meta.get("index_watermark", 0)), self.head)
        return self

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._reader is not None:
                await self._reader.close()
                self._reader = None
            await self.checkpoint()
            await self._db.close()

    async def _reader_db(self) -> aiosqlite.Connection:
        if self._reader is None:
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader.execute("PRAGMA query_only=ON")
        return self._reader

    async def _meta(self) -> dict[str, str]:
        async with self._db.execute("SELECT name, value FROM meta") as cur:
            return {name: value async for name, value in cur}

    async def _set_meta(self, name: str, value: object) -> None:
        await self._db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            (name, str(value)),
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; a commit or rollback is never cut short by cancellation.
        A failed COMMIT (disk full, I/O error) is rolled back like a failed body: the journal and
        its in-memory mirror (head, watermark, key version, epoch) are as before the call."""
        saved = (self.head, self.index_watermark, self.key_version)
        await self._db.execute("BEGIN IMMEDIATE")
        self._rewrote = False
        try:
            yield
            with anyio.CancelScope(shield=True):
                if self._rewrote:  # rule 5: the epoch moves in the rewriting transaction itself
                    await self._set_meta("epoch", self.epoch + 1)
                    faults.hit("journal.rewrite_commit")
                await self._db.execute("COMMIT")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.rollback_quietly()
            self.head, self.index_watermark, self.key_version = saved  # (rewrite_epoch stays bumped)
            self._rewrote = False
            raise
        if self._rewrote:
            self.epoch += 1
            self._rewrote = False

    async def rollback_quietly(self) -> None:
        """End whatever transaction is open (SQLite may already have rolled back on an error)."""
        if self._db.in_transaction:
            try:
                await self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _mark_rewrite(self) -> None:
        if not self._db.in_transaction:
            raise RuntimeError("journal rewrites must run inside Journal.transaction() (rule 5)")
        self.rewrite_epoch += 1
        self._rewrote = True

    @property
    def needs_rebuild(self) -> bool:
        """A rewrite committed but its VACUUM did not complete (rule 5)."""
        return self.rebuilt_epoch < self.epoch

    async def checkpoint(self) -> None:
        """Move the WAL into the main file and truncate it (after rewrites: no stale copies).
        The result row is read so the statement is finished (a live one blocks VACUUM)."""
        async with self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
            row = await cur.fetchone()
        busy = 0 if row is None else int(row[0])
        if busy:
            raise RuntimeError("WAL checkpoint could not complete (a reader is holding it)")

    async def rebuild(self) -> None:
        """VACUUM (every live row into fresh pages, free space gone) then checkpoint: after a
        rewrite that must leave no trace of the old bytes anywhere in the files."""
        await self._db.execute("VACUUM")
        faults.hit("journal.after_rebuild")
        await self._set_meta("rebuilt_epoch", self.epoch)
        self.rebuilt_epoch = self.epoch
        await self.checkpoint()

    async def erase_physically(self) -> None:
        """After rewrites (backend rule 4): index what is pending (so the index is whole again),
        then VACUUM + checkpoint TRUNCATE."""
        await self.index_pending()
        await self.rebuild()

    async def before_rewrite(self) -> None:
        """Index the tail first: lookups inside the rewrite then read few unindexed rows."""
        await self.index_pending()

    async def refresh_head(self) -> int:
        """What the file holds, not what this process believes: after a failed write whose
        outcome is unknown (an fsync error after the WAL frame was written) the rows may be
        there (``groupcommit`` rule 8). Called by the writer's owner only, between writes."""
        faults.hit("journal.refresh_head")
        async with self._db.execute("SELECT COALESCE(MAX(last_seq), 0) FROM journal") as cur:
            stored = _scalar(await cur.fetchone())
        self.head = max(self.head, stored)
        return self.head

    async def wait_for_commits(self, timeout: float) -> None:
        await anyio.sleep(timeout)  # nobody else writes this file (backend rule 6)

    async def register(self, member: Member) -> None:
        return None  # one process: nobody to tell (backend rule 7)

    async def members(self) -> list[Member]:
        return []

    def stats(self) -> dict[str, int]:
        return {"head": self.head, "index_watermark": self.index_watermark}

    async def housekeeping(self, exclusive: Exclusive) -> None:
        """Index in big steps: when enough is unindexed, or when ingest has been quiet for a whole
        interval (small increments would mean many segments and frequent merges). Read and sort
        off the writer (read connection + worker thread); only the short write of the result
        takes the committer's exclusive slot."""
        seen = self.head
        while True:
            await anyio.sleep(self.index_idle_seconds)
            head = self.head
            lag = head - self.index_watermark
            if lag >= self.index_every_events or (lag > 0 and head == seen):
                postings = await self.collect_postings()
                if postings is not None:
                    await exclusive(_posting_writer(postings))
            seen = self.head

    # -- appending -------------------------------------------------------------------------

    async def append(self, events: Sequence[ev.Event]) -> list[StoredRecord]:
        """Append events atomically and return them with their sequence numbers.

        A group that fits one multi-row INSERT is written as that single statement in
        autocommit mode: SQLite makes one statement one transaction, and it costs one hop to
        the database thread instead of three (BEGIN, INSERT, COMMIT) -- each hop waits for the
        GIL, which is what dominated small-request latency.
        """
        if not events:
            return []
        head = self.head
        stored, rows = self._rows(events)
        if len(rows) <= _ROWS_PER_STATEMENT:
            try:
                faults.hit("journal.append")
                await self._db.execute(_insert_sql(len(rows)), [v for row in rows for v in row])
                faults.hit("journal.after_append")  # committed; the caller may never hear of it
            except BaseException:
                self.head = head
                raise
            return stored
        self.head = head
        async with self.transaction():
            return await self.append_in_transaction(events)

    async def append_in_transaction(self, events: Sequence[ev.Event]) -> list[StoredRecord]:
        stored, rows = self._rows(events)
        faults.hit("journal.append")
        await self._db.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?)", rows)
        return stored

    def _rows(self, events: Sequence[ev.Event]) -> tuple[list[StoredRecord], list[tuple[int, int, int, int, bytes]]]:
        """Assign sequence numbers (rule 1) and encode; advances ``head``."""
        stored: list[StoredRecord] = []
        rows = []
        seq = self.head
        for event in events:
            first, seq = seq + 1, seq + max(event.size, 1)
            stored.append(StoredRecord(first, seq, event))
            rows.append((first, seq, event.KIND, event.VERSION, ev.encode(event)))
        self.head = seq
        return stored, rows

    # -- reading ---------------------------------------------------------------------------

    async def read(
        self,
        after_seq: int = 0,
        *,
        kinds: Iterable[int] | None = None,
        partitions: Collection[int] | None = None,
        chunk: int = 256,
    ) -> AsyncIterator[list[StoredRecord]]:
        """Records with seq > after_seq, in order, in chunks (a chunk is one thread hop). There is
        one partition (0): asking for others yields activity records emptied of their keys."""
        if partitions is not None and 0 not in partitions:
            async for records in self.read(after_seq, kinds=kinds, chunk=chunk):
                yield [_emptied(r) for r in records]
            return
        where = ""
        if kinds is not None:
            where = f" AND kind IN ({','.join(str(int(k)) for k in kinds)})"
        last = after_seq
        while True:
            async with self._db.execute(
                f"SELECT seq, last_seq, kind, version, payload FROM journal WHERE seq > ?{where} ORDER BY seq LIMIT ?",
                (last, chunk),
            ) as cur:
                rows = list(await cur.fetchall())
            if not rows:
                return
            yield [StoredRecord(s, ls, ev.decode(k, v, p)) for s, ls, k, v, p in rows]
            last = rows[-1][0]

    async def record_at(self, seq: int) -> StoredRecord | None:
        async with self._db.execute(
            "SELECT seq, last_seq, kind, version, payload FROM journal WHERE seq = ?", (seq,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else StoredRecord(row[0], row[1], ev.decode(*row[2:]))

    async def idempotent_record(self, idempotency_key: str) -> StoredRecord | None:
        """A scan (the live system answers retries from its in-memory index; with one writer a
        ``DuplicateRequest`` never happens here, so this is only a fallback)."""
        found = None
        async for records in self.read(0, kinds=[_ACTIVITY], chunk=1024):
            for rec in records:
                if getattr(rec.event, "idempotency_key", None) == idempotency_key:
                    found = rec
        return found

    async def append_locked(self, periods: Iterable[str], prepare: Prepare) -> list[StoredRecord]:
        """One writer, one file: BEGIN IMMEDIATE is the lock on every period at once."""
        wanted = set(periods)
        async with self.transaction():
            charges: list[ev.BudgetCharged] = []
            async for records in self.read(0, kinds=[ev.BudgetCharged.KIND]):
                for rec in records:
                    if isinstance(rec.event, ev.BudgetCharged) and wanted & {
                        rec.event.accounting_period,
                        *rec.event.periods,
                    }:
                        charges.append(rec.event)
            events = await prepare(charges)
            return await self.append_in_transaction(events) if events else []

    async def count_rows(self) -> int:
        async with self._db.execute("SELECT COUNT(*) FROM journal") as cur:
            return _scalar(await cur.fetchone())

    # -- the pseudonym index ---------------------------------------------------------------

    async def index_pending(self) -> int:
        """Index every activity row past the watermark; returns the number of events indexed."""
        postings = await self.collect_postings()
        return 0 if postings is None else await self.write_postings(postings)

    async def collect_postings(self) -> Postings | None:
        """Read and sort the unindexed tail on the read connection (rule 4); writes nothing."""
        start, upto, epoch = self.index_watermark, self.head, self.rewrite_epoch
        if start >= upto:
            return None
        db = await self._reader_db()
        keys, seqs, last = [], [], start
        while True:
            async with db.execute(
                "SELECT seq, version, payload FROM journal WHERE seq > ? AND seq <= ? AND kind = ? ORDER BY seq LIMIT 1024",
                (last, upto, _ACTIVITY),
            ) as cur:
                rows = list(await cur.fetchall())
            if not rows:
                break
            for seq, version, payload in rows:
                k = ev.decode(_ACTIVITY, version, payload).key_array()  # type: ignore[attr-defined]
                keys.append(k)
                seqs.append(np.full(len(k), seq, dtype=np.int64))
            last = rows[-1][0]
        if keys:
            k_all, s_all = await anyio.to_thread.run_sync(
                lambda: _sorted_unique_pairs(np.concatenate(keys), np.concatenate(seqs))
            )
        else:
            k_all = s_all = np.empty(0, dtype=np.int64)
        return Postings(start, upto, epoch, k_all, s_all, sum(len(k) for k in keys))

    async def write_postings(self, postings: Postings) -> int:
        """Store collected postings and advance the watermark; 0 (nothing) if they went stale."""
        if postings.start != self.index_watermark or postings.epoch != self.rewrite_epoch:
            return 0
        async with self.transaction():
            if len(postings.keys):
                await self._write_segments(postings.keys, postings.seqs, postings.upto)
            await self._set_meta("index_watermark", postings.upto)
        self.index_watermark = postings.upto
        return postings.events

    async def _write_segments(self, keys: np.ndarray, seqs: np.ndarray, upto: int) -> None:
        """``keys``/``seqs`` sorted by (key, seq) and unique (``_sorted_unique_pairs``)."""
        buckets = bucket_of(keys)
        bounds = np.searchsorted(buckets, np.arange(BUCKETS + 1))
        segment = int(seqs.min())
        rows = []
        for b in range(BUCKETS):
            lo, hi = bounds[b], bounds[b + 1]
            if hi > lo:
                rows.append((b, segment, upto, keys[lo:hi].tobytes(), seqs[lo:hi].tobytes()))
        await self._db.executemany("INSERT INTO key_postings VALUES (?, ?, ?, ?, ?)", rows)
        await self._merge_full_buckets([r[0] for r in rows])

    async def _merge_full_buckets(self, buckets: Sequence[int]) -> None:
        for b in buckets:
            segs = await self._segments(b)
            if len(segs) > MAX_SEGMENTS_PER_BUCKET:
                await self._replace_bucket(b, segs, drop_key=None)

    async def _segments(self, bucket: int) -> list[Segment]:
        async with self._db.execute(
            "SELECT segment, last_seq, keys, seqs FROM key_postings WHERE bucket = ? ORDER BY segment",
            (bucket,),
        ) as cur:
            return [(s, ls, np.frombuffer(k, dtype="<i8"), np.frombuffer(q, dtype="<i8")) async for s, ls, k, q in cur]

    async def _replace_bucket(
        self, bucket: int, segs: list[Segment], *, drop_key: int | None, before_seq: int | None = None
    ) -> None:
        """Merge a bucket's segments into one, optionally without (key, seq < before_seq)."""
        keys = np.concatenate([s[2] for s in segs])
        seqs = np.concatenate([s[3] for s in segs])
        if drop_key is not None:
            keep = ~((keys == drop_key) & (seqs < (before_seq or np.iinfo(np.int64).max)))
            keys, seqs = keys[keep], seqs[keep]
        keys, seqs = _sorted_unique_pairs(keys, seqs)
        await self._db.execute("DELETE FROM key_postings WHERE bucket = ?", (bucket,))
        if len(keys):
            await self._db.execute(
                "INSERT INTO key_postings VALUES (?, ?, ?, ?, ?)",
                (bucket, min(s[0] for s in segs), max(s[1] for s in segs), keys.tobytes(), seqs.tobytes()),
            )

    async def drop_key_from_index(self, key: int, before_seq: int) -> None:
        self._mark_rewrite()
        bucket = int(bucket_of(np.array([key], dtype=np.int64))[0])
        segs = await self._segments(bucket)
        if segs:
            await self._replace_bucket(bucket, segs, drop_key=key, before_seq=before_seq)

    async def clear_index(self) -> None:
        self._mark_rewrite()
        await self._db.execute("DELETE FROM key_postings")
        await self._set_meta("index_watermark", 0)
        self.index_watermark = 0

    async def find_key(self, key: int, before_seq: int | None = None) -> list[int]:
        """Sequence numbers of activity records that mention ``key`` (index + unindexed tail)."""
        limit = self.head + 1 if before_seq is None else before_seq
        bucket = int(bucket_of(np.array([key], dtype=np.int64))[0])
        found: set[int] = set()
        for _, _, keys, seqs in await self._segments(bucket):
            lo, hi = np.searchsorted(keys, key, "left"), np.searchsorted(keys, key, "right")
            found.update(int(s) for s in seqs[lo:hi] if s < limit)
        async for records in self.read(self.index_watermark, kinds=[_ACTIVITY], chunk=1024):
            for rec in records:
                batch = rec.event
                if rec.seq < limit and isinstance(batch, ev.ActivityBatchRecorded) and np.any(batch.key_array() == key):
                    found.add(rec.seq)
        return sorted(found)

    # -- rewriting (used by compaction and rotation only) -----------------------------------

    async def replace_payload(self, seq: int, event: ev.Event) -> None:
        self._mark_rewrite()
        await self._db.execute(
            "UPDATE journal SET kind = ?, version = ?, payload = ? WHERE seq = ?",
            (event.KIND, event.VERSION, ev.encode(event), seq),
        )

    async def delete_record(self, seq: int) -> None:
        self._mark_rewrite()
        await self._db.execute("DELETE FROM journal WHERE seq = ?", (seq,))

    async def remove_key_activity(self, key: int, before_seq: int) -> int:
        """Rewrite every batch below ``before_seq`` that holds the key, and its index postings."""
        removed = 0
        for seq in await self.find_key(key, before_seq=before_seq):
            rec = await self.record_at(seq)
            if rec is None or not isinstance(rec.event, ev.ActivityBatchRecorded):
                continue
            batch = rec.event
            keep = batch.key_array() != key
            if keep.all():
                continue
            removed += int((~keep).sum())
            await self.replace_payload(seq, ev.batch_without(batch, keep))
        await self.drop_key_from_index(key, before_seq)
        return removed

    async def rekey_activity(self, mapping: KeyMapping) -> int:
        """Every batch's keys through ``mapping``; the index is cleared (rebuilt by
        ``erase_physically``). Request digests were over the old keys: dropped."""
        rewritten = 0
        async for records in self.read(0, kinds=[_ACTIVITY], chunk=256):
            for rec in records:
                event = rec.event
                assert isinstance(event, ev.ActivityBatchRecorded)
                new = mapping(event.key_array())
                rewritten += len(new)
                await self.replace_payload(
                    rec.seq,
                    msgspec.structs.replace(event, keys=new.astype("<i8").tobytes(), request_digest=None),
                )
        await self.clear_index()
        return rewritten

    async def set_key_version(self, version: int) -> None:
        await self._set_meta("key_version", version)
        self.key_version = version


def _posting_writer(postings: Postings) -> Job:
    async def write(journal: JournalBackend) -> list[StoredRecord]:
        assert isinstance(journal, SqliteJournal)
        await journal.write_postings(postings)
        return []

    return write


def _emptied(rec: StoredRecord) -> StoredRecord:
    if not isinstance(rec.event, ev.ActivityBatchRecorded):
        return rec
    keep = np.zeros(rec.event.size, dtype=bool)
    return StoredRecord(rec.seq, rec.last_seq, ev.batch_without(rec.event, keep, keep_digest=True))


def _scalar(row: object) -> int:
    """The single integer of a one-column result row (0 when there is no row)."""
    if row is None:
        return 0
    value = row[0]  # type: ignore[index]
    return int(value) if value is not None else 0


def _sorted_unique_pairs(keys: np.ndarray, seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((seqs, keys))
    keys, seqs = keys[order], seqs[order]
    if len(keys) > 1:
        keep = np.ones(len(keys), dtype=bool)
        keep[1:] = (keys[1:] != keys[:-1]) | (seqs[1:] != seqs[:-1])
        keys, seqs = keys[keep], seqs[keep]
    return np.ascontiguousarray(keys, dtype="<i8"), np.ascontiguousarray(seqs, dtype="<i8")


Journal = SqliteJournal  # the name other modules knew before the backend seam
