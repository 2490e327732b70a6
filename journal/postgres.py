"""The PostgreSQL journal (asyncpg): a ``JournalBackend`` that several processes can share.

Rules (and ``journal/backend.py`` for what every backend promises):
1. Schema (``schema_sql``). Activity is one row per event in ``activity``, hash-partitioned by
   the pseudonym (``PARTITION BY HASH (key)``; Citus: ``create_distributed_table('activity',
   'key')``); metadata in ``activity_meta``, partitioned the same way. A batch's header (time,
   Idempotency-Key, request digest) is a row of ``batches``; every other record is a row of
   ``control``. Both are unsharded and small per request. ``journal_head`` is one row: the last
   position, the journal id, the key version, the partition count.
2. Positions are never assigned in memory. A group reserves its dense range with
   ``UPDATE journal_head SET head = head + n RETURNING head`` inside its transaction: the row lock
   makes every other writer wait until this transaction has committed (and is visible), so
   positions are committed in order and a reader "after P" can never skip a row that commits
   later with a smaller position -- the classic event-store trap of sequences. The price is that
   writers' transactions are serialised (each process still groups many requests into one).
3. A group is one transaction: a single statement (a data-modifying CTE over arrays) for small
   groups, binary COPY of the activity rows (built by numpy, no per-event Python) for large ones.
   Idempotency keys go into ``idempotency`` (primary key) in the same transaction; a clash
   means another writer journaled that request: ``DuplicateRequest``, nothing written.
4. ``append_locked`` locks the accounting periods' rows of ``accounting_periods`` (created on
   demand, locked ``ORDER BY period``) before it reads their charges, then reserves positions:
   a release decided there cannot be overspent by a coordinator in another process.
5. Erasure is physical (``erase_physically``): every table a rewrite touched -- the erased key's
   activity partitions, ``control`` -- is rewritten by VACUUM FULL (only live rows reach the
   new files; the old files are unlinked at the next checkpoint), then the WAL is switched and a
   CHECKPOINT removes every segment that held the old rows. That needs ``wal_recycle = off``
   (a recycled segment keeps its old bytes under a new name), no archiving, no WAL kept for
   standbys or slots: ``check_erasure_settings`` reads them at start, warns, and refuses in
   production. Statistics are off for every column that can hold a pseudonym, so ANALYZE never
   copies one into ``pg_statistic``. One process erases at a time (a session advisory lock);
   ``rebuild`` leaves a crashed rewrite to whoever holds that lock, or does it itself.
6. Several serving processes (``shared``) hold the journal's advisory lock in shared mode; an
   offline tool takes it exclusively, so it never rewrites under a running server. A shared
   journal tells the others about each commit (``NOTIFY dpdau_journal`` in the committing
   transaction, so it is delivered exactly when the rows are visible); ``wait_for_commits``
   LISTENs on its own connection. A notification is only a wake-up: the truth is ``read(after)``.
"""

from __future__ import annotations

import io
import struct
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg
import msgspec
import numpy as np
import structlog

from journal import events as ev
from journal import faults
from journal.backend import DuplicateRequest, Exclusive, JournalError, KeyMapping, Member, Prepare
from journal.events import StoredRecord
from journal.storage import StorageUnavailable

log = structlog.get_logger("journal.postgres")

_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.AdminShutdownError,
    OSError,
)
_ACTIVITY = ev.ActivityBatchRecorded.KIND
_CHARGE = ev.BudgetCharged.KIND
SMALL_GROUP_EVENTS = 256  # up to this many events a group is one statement; above, binary COPY
_SCHEMA_LOCK = 0x64706461  # advisory lock key serialising schema creation ("dpda")


REGISTRY_SQL = """
CREATE TABLE IF NOT EXISTS processes (      -- the serving processes sharing this journal (rule 6)
    name        text PRIMARY KEY,
    kind        text NOT NULL,
    shard       int,
    shards      int,
    address     text,
    applied_seq bigint NOT NULL,
    clean_seq   bigint NOT NULL,
    pid         int NOT NULL,
    heartbeat   timestamptz NOT NULL
);
"""


def schema_sql(partitions: int) -> str:
    parts = "".join(
        f"CREATE TABLE IF NOT EXISTS activity_p{i} PARTITION OF activity FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i});\n"
        f"CREATE TABLE IF NOT EXISTS activity_meta_p{i} PARTITION OF activity_meta FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i});\n"
        for i in range(partitions)
    )
    return f"""
CREATE TABLE IF NOT EXISTS journal_head (
    id          int PRIMARY KEY CHECK (id = 1),
    head        bigint NOT NULL,       -- last position assigned (and, rule 2, committed)
    journal_id  text NOT NULL,
    key_version int NOT NULL,
    partitions  int NOT NULL,
    epoch       bigint NOT NULL DEFAULT 0,  -- committed rewrites (purges, shreddings, rotations)
    rebuilt_epoch bigint NOT NULL DEFAULT 0 -- the epoch the last completed erase_physically reached
);
CREATE TABLE IF NOT EXISTS control (        -- every record but activity, whole
    seq      bigint PRIMARY KEY,
    last_seq bigint NOT NULL,
    kind     smallint NOT NULL,
    version  smallint NOT NULL,
    periods  text[],                        -- BudgetCharged: every period it is charged to
    payload  bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS control_kind ON control (kind, seq);
CREATE TABLE IF NOT EXISTS batches (        -- activity records' headers: one row per request
    seq      bigint PRIMARY KEY,
    last_seq bigint NOT NULL,
    version  smallint NOT NULL,
    digest   bytea,                         -- request digest (cleared by purges and rotations)
    payload  bytea NOT NULL                 -- the batch without keys, days, ops, metadata, digest
);
CREATE TABLE IF NOT EXISTS activity (       -- one row per event, distributed by the pseudonym
    key bigint NOT NULL,
    seq bigint NOT NULL,                    -- first position of its batch
    idx int NOT NULL,                       -- index in the batch: the event's position is seq + idx
    day int NOT NULL,
    op  smallint NOT NULL
) PARTITION BY HASH (key);
CREATE TABLE IF NOT EXISTS activity_meta (
    key bigint NOT NULL,
    seq bigint NOT NULL,
    idx int NOT NULL,
    raw bytea NOT NULL
) PARTITION BY HASH (key);
{parts}
CREATE INDEX IF NOT EXISTS activity_seq ON activity (seq, idx);
CREATE INDEX IF NOT EXISTS activity_meta_seq ON activity_meta (seq, idx);
CREATE TABLE IF NOT EXISTS idempotency (key text PRIMARY KEY, seq bigint NOT NULL);
{REGISTRY_SQL}
CREATE TABLE IF NOT EXISTS accounting_periods (period text PRIMARY KEY);
ALTER TABLE activity ALTER COLUMN key SET STATISTICS 0;
ALTER TABLE activity_meta ALTER COLUMN key SET STATISTICS 0;
ALTER TABLE activity_meta ALTER COLUMN raw SET STATISTICS 0;
ALTER TABLE control ALTER COLUMN payload SET STATISTICS 0;
"""


# A small group in one statement (rule 3): the head row is locked first, everything else follows.
_APPEND_ONE_STATEMENT = """
WITH h AS (UPDATE journal_head SET head = head + $1 WHERE id = 1 RETURNING head - $1 + 1 AS base),
a AS (INSERT INTO activity (key, seq, idx, day, op)
      SELECT r.key, h.base + r.rel, r.idx, r.day, r.op FROM h,
             unnest($2::int8[], $3::int8[], $4::int4[], $5::int4[], $6::int2[]) AS r(key, rel, idx, day, op)),
m AS (INSERT INTO activity_meta (key, seq, idx, raw)
      SELECT r.key, h.base + r.rel, r.idx, r.raw FROM h,
             unnest($7::int8[], $8::int8[], $9::int4[], $10::bytea[]) AS r(key, rel, idx, raw)),
i AS (INSERT INTO idempotency (key, seq)
      SELECT r.key, h.base + r.rel FROM h, unnest($11::text[], $12::int8[]) AS r(key, rel)),
b AS (INSERT INTO batches (seq, last_seq, version, digest, payload)
      SELECT h.base + r.s, h.base + r.l, r.v, r.d, r.p FROM h,
             unnest($13::int8[], $14::int8[], $15::int2[], $16::bytea[], $17::bytea[]) AS r(s, l, v, d, p)),
c AS (INSERT INTO control (seq, last_seq, kind, version, periods, payload)
      SELECT h.base + r.s, h.base + r.l, r.k, r.v, string_to_array(r.pe, chr(31)), r.p FROM h,
             unnest($18::int8[], $19::int8[], $20::int2[], $21::int2[], $22::text[], $23::bytea[]) AS r(s, l, k, v, pe, p))
SELECT base - 1 FROM h
"""
# The same, telling listeners (other processes tailing the journal) when it commits (rule 6).
_APPEND_ONE_STATEMENT_NOTIFY = _APPEND_ONE_STATEMENT.replace(
    "SELECT base - 1 FROM h", "SELECT base - 1 FROM h, (SELECT pg_notify('dpdau_journal', '')) AS n"
)
CHANNEL = "dpdau_journal"
_OWNER_LOCK = "dpdau:"  # + journal id: the advisory lock serving processes share, tools take alone
_ERASE_LOCK = 0x64706565  # session advisory lock held while a rewrite's physical erasure runs

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = b"\xff\xff"
# activity (key int8, seq int8, idx int4, day int4, op int2) as binary COPY tuples
_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l0", ">i4"),
        ("key", ">i8"),
        ("l1", ">i4"),
        ("seq", ">i8"),
        ("l2", ">i4"),
        ("idx", ">i4"),
        ("l3", ">i4"),
        ("day", ">i4"),
        ("l4", ">i4"),
        ("op", ">i2"),
    ]
)
_ROW_LENGTHS = {"n": 5, "l0": 8, "l1": 8, "l2": 4, "l3": 4, "l4": 2}
_ACTIVITY_COLUMNS = ["key", "seq", "idx", "day", "op"]

# The server settings physical erasure depends on (rule 5): name -> (what is needed, why).
ERASURE_SETTINGS: dict[str, tuple[Callable[[str], bool], str]] = {
    "wal_recycle": (lambda v: v == "off", "a recycled WAL segment keeps the old rows' bytes under a new name"),
    "archive_mode": (lambda v: v == "off", "archived WAL segments keep every purged row"),
    "wal_keep_size": (lambda v: v == "0", "WAL kept for standbys keeps the purged rows"),
    "log_statement": (lambda v: v in ("none", "ddl"), "statement logging can write pseudonyms to the server log"),
    "log_min_duration_statement": (lambda v: v == "-1", "slow-statement logging can write pseudonyms"),
}


@dataclass
class _Encoded:
    """A group as rows relative to its base position (rule 3)."""

    total: int = 0
    rel: list[tuple[int, int]] = field(default_factory=list)  # per event: (first, last) offset
    keys: list[np.ndarray] = field(default_factory=list)
    rels: list[np.ndarray] = field(default_factory=list)
    idxs: list[np.ndarray] = field(default_factory=list)
    days: list[np.ndarray] = field(default_factory=list)
    ops: list[np.ndarray] = field(default_factory=list)
    meta: list[tuple[int, int, int, bytes]] = field(default_factory=list)  # key, rel, idx, raw
    idem: list[tuple[str, int]] = field(default_factory=list)
    batches: list[tuple[int, int, int, bytes | None, bytes]] = field(default_factory=list)
    control: list[tuple[int, int, int, int, str | None, bytes]] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(len(k) for k in self.keys)

    def activity_columns(self) -> tuple[np.ndarray, ...]:
        if not self.keys:
            empty64, empty32 = np.empty(0, np.int64), np.empty(0, np.int32)
            return empty64, empty64, empty32, empty32, np.empty(0, np.int16)
        return (
            np.concatenate(self.keys),
            np.concatenate(self.rels),
            np.concatenate(self.idxs),
            np.concatenate(self.days),
            np.concatenate(self.ops),
        )


def encode_group(events: Sequence[ev.Event]) -> _Encoded:
    out = _Encoded()
    pos = 0
    for event in events:
        first, last = pos, pos + max(event.size, 1) - 1
        pos = last + 1
        out.rel.append((first, last))
        if isinstance(event, ev.ActivityBatchRecorded):
            keys = event.key_array()
            n = len(keys)
            out.keys.append(keys.astype(np.int64))
            out.rels.append(np.full(n, first, dtype=np.int64))
            out.idxs.append(np.arange(n, dtype=np.int32))
            out.days.append(event.day_array().astype(np.int32))
            out.ops.append(event.op_array().astype(np.int16))
            out.meta.extend((int(keys[i]), first, i, raw) for i, raw in event.metadata)
            if event.idempotency_key is not None:
                out.idem.append((event.idempotency_key, first))
            header = msgspec.structs.replace(event, keys=b"", days=b"", ops=b"", metadata=[], request_digest=None)
            out.batches.append((first, last, event.VERSION, event.request_digest, ev.encode(header)))
        else:
            out.control.append((first, last, event.KIND, event.VERSION, _periods(event), ev.encode(event)))
    out.total = pos
    return out


def _copy_bytes(keys: np.ndarray, seqs: np.ndarray, idxs: np.ndarray, days: np.ndarray, ops: np.ndarray) -> bytes:
    rows = np.empty(len(keys), dtype=_ROW)
    for name, length in _ROW_LENGTHS.items():
        rows[name] = length
    rows["key"], rows["seq"], rows["idx"], rows["day"], rows["op"] = keys, seqs, idxs, days, ops
    return _COPY_HEADER + rows.tobytes() + _COPY_TRAILER


def _parse_copy(data: bytes) -> np.ndarray:
    body = data[len(_COPY_HEADER) : len(data) - len(_COPY_TRAILER)]
    return np.frombuffer(body, dtype=_ROW)


class PostgresJournal:
    """One journal in one PostgreSQL database. The writer connection is used by one task at a
    time (the committer, or an offline tool); reads take a pooled connection, except inside a
    ``transaction`` where they must see its uncommitted rewrites."""

    kind = "postgresql"
    shared: bool

    def __init__(self, url: str, writer: asyncpg.Connection, pool: asyncpg.Pool) -> None:
        self.url = url
        self._conn = writer
        self._pool = pool
        self._head = 0
        self.journal_id = ""
        self.key_version = 0
        self.partition_count = 0
        self._lock = anyio.Lock()
        self._tx: asyncpg.Connection | None = None
        self._tx_task: int | None = None  # the task that opened ``transaction()`` (its reads see it)
        self._dirty: set[str] = set()
        self.epoch = 0
        self.rebuilt_epoch = 0
        self._rewrote = False
        self._owned = False  # holds an ownership lock (to take again after a reconnect)
        self.erasure_problems: list[str] = []
        self.shared = False  # several serving processes write this journal (rule 6)
        self._listener: asyncpg.Connection | None = None
        self._commits = anyio.Event()

    @property
    def head(self) -> int:
        return self._head

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        partitions: int = 16,
        production: bool = False,
        exclusive: bool = True,
        shared: bool = False,
    ) -> PostgresJournal:
        """``shared``: a serving process among others (workers, shards): they all hold the journal's
        advisory lock in shared mode and tail each other (rule 6). ``exclusive``: alone (offline
        maintenance): refused while any process holds it. Neither: no lock (tests, tools)."""
        try:
            writer = await asyncpg.connect(url, timeout=30)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise JournalError(f"JOURNAL_URL: cannot connect to {_redact(url)}: {exc}") from None
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=4, reset=_keep_session)
            self = cls(url, writer, pool)
            await self._create_schema(partitions)
            if shared or exclusive:
                await self._take_ownership(shared)
            self.shared = shared
            self._owned = shared or exclusive
            self.erasure_problems = await check_erasure_settings(writer)
        except BaseException:
            await writer.close()
            raise
        if self.erasure_problems:
            detail = "; ".join(self.erasure_problems)
            if production:
                await self.close()
                raise JournalError(
                    f"JOURNAL_URL: PostgreSQL is configured so that erasure cannot be physical: {detail}"
                )
            log.warning("erasure_not_physical", problems=self.erasure_problems)
        return self

    async def _create_schema(self, partitions: int) -> None:
        async with self._conn.transaction():
            await self._conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            exists = await self._conn.fetchval("SELECT to_regclass('journal_head') IS NOT NULL")
            if not exists:
                await self._conn.execute(schema_sql(partitions))
                await self._conn.execute(
                    "INSERT INTO journal_head VALUES (1, 0, $1, 0, $2)", uuid.uuid4().hex, partitions
                )
            else:
                await self._conn.execute(REGISTRY_SQL)  # journals created before the registry existed
        row = await self._conn.fetchrow(
            "SELECT head, journal_id, key_version, partitions, epoch, rebuilt_epoch FROM journal_head"
        )
        self._head, self.journal_id, self.key_version, self.partition_count = (
            row["head"],
            row["journal_id"],
            row["key_version"],
            row["partitions"],
        )
        self.epoch, self.rebuilt_epoch = row["epoch"], row["rebuilt_epoch"]

    @property
    def needs_rebuild(self) -> bool:
        return self.rebuilt_epoch < self.epoch

    async def rebuild(self) -> None:
        """After a crash between a rewrite's commit and its erasure we no longer know what was
        touched: rewrite every table that can hold a pseudonym. With several processes, another
        one may be erasing right now (it holds the erase lock): then it finishes the job."""
        async with self._lock:
            if not await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", _ERASE_LOCK):
                return
            try:
                row = await self._conn.fetchrow("SELECT epoch, rebuilt_epoch FROM journal_head")
            finally:
                await self._conn.execute("SELECT pg_advisory_unlock($1)", _ERASE_LOCK)
            self.epoch, self.rebuilt_epoch = max(self.epoch, row["epoch"]), row["rebuilt_epoch"]
            if self.rebuilt_epoch >= self.epoch:
                return
        if not self._dirty:
            self._dirty = {f"{t}_p{i}" for i in range(self.partition_count) for t in ("activity", "activity_meta")}
            self._dirty.add("control")
        self._rewrote = True
        await self.erase_physically()

    async def _take_ownership(self, shared: bool) -> None:
        """Serving processes share the journal; offline maintenance (which rewrites with nobody
        else writing) needs it alone. A session advisory lock says which (location rule 2)."""
        how = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        got = await self._conn.fetchval(f"SELECT {how}(hashtext($1))", _OWNER_LOCK + self.journal_id)
        if not got:
            who = "an offline dpdau command" if shared else "another dpdau process (a server?)"
            raise JournalError(f"JOURNAL_URL: the journal at {_redact(self.url)} is in use by {who}")

    async def _writer(self) -> asyncpg.Connection:
        """The writer connection; after it was lost (a restart of PostgreSQL, a network cut, an
        administrator's ``pg_terminate_backend``) a new one, with the ownership lock taken again.
        What the lost connection was doing rolled back, or committed: the committer finds out
        (``groupcommit`` rule 8)."""
        if not self._conn.is_closed():
            return self._conn
        log.warning("journal_reconnecting", url=_redact(self.url))
        conn = await asyncpg.connect(self.url, timeout=10)
        self._conn = conn
        if self._owned:
            try:
                await self._take_ownership(self.shared)
            except JournalError as exc:  # taken by another process while we were cut off: never write
                await conn.close()
                raise StorageUnavailable("failed", str(exc)) from exc
        log.info("journal_reconnected", url=_redact(self.url))
        return conn

    @asynccontextmanager
    async def _dropping_broken(self) -> AsyncIterator[None]:
        """A connection-level failure leaves the writer unusable (asyncpg may not have seen the
        server's FATAL yet): drop it, so the next write reconnects (``_writer``)."""
        try:
            yield
        except _CONNECTION_ERRORS:
            if not self._conn.is_closed():
                self._conn.terminate()
            raise

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._listener is not None:
                await self._listener.close()
            await self._pool.close()
            await self._conn.close()

    # -- following other writers (rule 6) ----------------------------------------------------

    async def wait_for_commits(self, timeout: float) -> None:
        """Return when another process may have committed (a NOTIFY), or after ``timeout``."""
        if self._listener is None:
            self._listener = await asyncpg.connect(self.url, timeout=30)
            await self._listener.add_listener(CHANNEL, self._notified)
        with anyio.move_on_after(timeout):
            await self._commits.wait()
        self._commits = anyio.Event()

    def _notified(self, *args: object) -> None:
        self._commits.set()

    async def register(self, member: Member) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO processes VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())"
                " ON CONFLICT (name) DO UPDATE SET kind = $2, shard = $3, shards = $4, address = $5,"
                " applied_seq = $6, clean_seq = $7, pid = $8, heartbeat = now()",
                member.name,
                member.kind,
                member.shard,
                member.shards,
                member.address,
                member.applied_seq,
                member.clean_seq,
                member.pid,
            )

    async def members(self) -> list[Member]:
        async with self._reader() as conn:
            rows = await conn.fetch(
                "SELECT name, kind, shard, shards, address, applied_seq, clean_seq, pid,"
                " extract(epoch FROM now() - heartbeat)::float8 AS age FROM processes ORDER BY name"
            )
        return [
            Member(
                name=r["name"],
                kind=r["kind"],
                shard=r["shard"],
                shards=r["shards"],
                address=r["address"],
                applied_seq=r["applied_seq"],
                clean_seq=r["clean_seq"],
                pid=r["pid"],
                age_seconds=r["age"],
            )
            for r in rows
        ]

    async def _notify(self, conn: asyncpg.Connection) -> None:
        if self.shared:
            await conn.execute("SELECT pg_notify($1, '')", CHANNEL)

    # -- appending -------------------------------------------------------------------------

    async def append(self, events: Sequence[ev.Event]) -> list[StoredRecord]:
        if not events:
            return []
        group = encode_group(events)
        async with self._lock, self._dropping_broken():
            await self._writer()
            try:
                faults.hit("journal.append")
                if group.events <= SMALL_GROUP_EVENTS:
                    base = await self._append_statement(self._conn, group)
                else:
                    async with self._conn.transaction():
                        base = await self._append_copy(self._conn, group)
                        await self._notify(self._conn)
                faults.hit("journal.after_append")  # committed; the caller may never hear of it
            except asyncpg.UniqueViolationError as exc:
                raise await self._duplicate(exc, group) from None
        return self._stored(events, group, base)

    async def append_in_transaction(self, events: Sequence[ev.Event]) -> list[StoredRecord]:
        conn = self._tx
        assert conn is not None, "append_in_transaction outside transaction()"
        if not events:
            return []
        group = encode_group(events)
        base = await self._append_copy(conn, group)
        return self._stored(events, group, base)

    def _stored(self, events: Sequence[ev.Event], group: _Encoded, base: int) -> list[StoredRecord]:
        self._head = max(self._head, base + group.total)
        return [StoredRecord(base + first + 1, base + last + 1, e) for e, (first, last) in zip(events, group.rel)]

    async def _append_statement(self, conn: asyncpg.Connection, g: _Encoded) -> int:
        keys, rels, idxs, days, ops = g.activity_columns()
        meta = list(zip(*g.meta)) if g.meta else [(), (), (), ()]
        idem = list(zip(*g.idem)) if g.idem else [(), ()]
        bat = list(zip(*g.batches)) if g.batches else [(), (), (), (), ()]
        ctl = list(zip(*g.control)) if g.control else [(), (), (), (), (), ()]
        base: int = await conn.fetchval(
            _APPEND_ONE_STATEMENT_NOTIFY if self.shared else _APPEND_ONE_STATEMENT,
            g.total,
            keys.tolist(),
            rels.tolist(),
            idxs.tolist(),
            days.tolist(),
            ops.tolist(),
            *(list(c) for c in meta),
            *(list(c) for c in idem),
            *(list(c) for c in bat),
            *(list(c) for c in ctl),
        )
        return base

    async def _append_copy(self, conn: asyncpg.Connection, g: _Encoded) -> int:
        """Inside a transaction: reserve, then COPY activity and insert the rest (rule 3)."""
        base: int = await conn.fetchval(
            "UPDATE journal_head SET head = head + $1 WHERE id = 1 RETURNING head - $1", g.total
        )
        keys, rels, idxs, days, ops = g.activity_columns()
        if len(keys):
            data = _copy_bytes(keys, rels + base + 1, idxs, days, ops)
            await conn.copy_to_table("activity", source=io.BytesIO(data), format="binary", columns=_ACTIVITY_COLUMNS)
        if g.meta:
            await conn.executemany(
                "INSERT INTO activity_meta (key, seq, idx, raw) VALUES ($1, $2, $3, $4)",
                [(k, base + 1 + rel, i, raw) for k, rel, i, raw in g.meta],
            )
        if g.idem:
            await conn.execute(
                "INSERT INTO idempotency (key, seq) SELECT k, $3 + r FROM unnest($1::text[], $2::int8[]) AS t(k, r)",
                [k for k, _ in g.idem],
                [r for _, r in g.idem],
                base + 1,
            )
        if g.batches:
            await conn.executemany(
                "INSERT INTO batches (seq, last_seq, version, digest, payload) VALUES ($1, $2, $3, $4, $5)",
                [(base + 1 + s, base + 1 + last, v, d, p) for s, last, v, d, p in g.batches],
            )
        if g.control:
            await conn.executemany(
                "INSERT INTO control (seq, last_seq, kind, version, periods, payload)"
                " VALUES ($1, $2, $3, $4, string_to_array($5, chr(31)), $6)",
                [(base + 1 + s, base + 1 + last, k, v, pe, p) for s, last, k, v, pe, p in g.control],
            )
        return base

    async def _duplicate(self, exc: asyncpg.UniqueViolationError, group: _Encoded) -> Exception:
        if exc.constraint_name != "idempotency_pkey":
            return exc  # type: ignore[no-any-return]
        keys = [k for k, _ in group.idem]
        taken = await self._conn.fetch("SELECT key FROM idempotency WHERE key = ANY($1::text[])", keys)
        return DuplicateRequest({r["key"] for r in taken} or set(keys))

    async def append_locked(self, periods: Iterable[str], prepare: Prepare) -> list[StoredRecord]:
        """Rule 4: lock the periods (sorted), read their charges, decide, write -- one transaction."""
        wanted = sorted(set(periods))
        async with self._lock, self._dropping_broken():
            await self._writer()
            return await self._append_locked(wanted, prepare)

    async def _append_locked(self, wanted: list[str], prepare: Prepare) -> list[StoredRecord]:
        async with self._conn.transaction():
            conn = self._conn
            await conn.execute(
                "INSERT INTO accounting_periods SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", wanted
            )
            await conn.execute(
                "SELECT period FROM accounting_periods WHERE period = ANY($1::text[]) ORDER BY period FOR UPDATE",
                wanted,
            )
            rows = await conn.fetch(
                "SELECT version, payload FROM control WHERE kind = $1 AND periods && $2::text[] ORDER BY seq",
                _CHARGE,
                wanted,
            )
            charges = [ev.decode(_CHARGE, r["version"], r["payload"]) for r in rows]
            events = await prepare([c for c in charges if isinstance(c, ev.BudgetCharged)])
            if not events:
                return []
            group = encode_group(events)
            base = await self._append_copy(conn, group)
            await self._notify(conn)
        return self._stored(events, group, base)

    # -- reading ---------------------------------------------------------------------------

    def _reader(self) -> Any:
        """The transaction's connection for the task inside one (it must see its own rewrites);
        the pool for everything else -- a request or the registry reading while a purge's
        transaction is open must neither see it nor share its connection."""
        if self._tx is not None and self._tx_task == anyio.get_current_task().id:
            return _Borrowed(self._tx)
        return self._pool.acquire()

    async def refresh_head(self) -> int:
        """The committed head, and the epochs other processes' rewrites moved (rule 6)."""
        faults.hit("journal.refresh_head")
        async with self._reader() as conn:
            row = await conn.fetchrow("SELECT head, epoch, rebuilt_epoch FROM journal_head")
        head: int = row["head"]
        self._head = max(self._head, head)
        if self._tx is None:
            self.epoch = max(self.epoch, row["epoch"])
            self.rebuilt_epoch = max(self.rebuilt_epoch, row["rebuilt_epoch"])
        return head

    async def read(
        self,
        after_seq: int = 0,
        *,
        kinds: Iterable[int] | None = None,
        partitions: Collection[int] | None = None,
        chunk: int = 256,
    ) -> AsyncIterator[list[StoredRecord]]:
        wanted = None if kinds is None else sorted({int(k) for k in kinds})
        last = after_seq
        limit = max(chunk, 1024)
        while True:
            async with self._reader() as conn:
                records = await self._records(conn, "seq > $1", [last], wanted, partitions, limit)
            if not records:
                return
            for i in range(0, len(records), chunk):
                yield records[i : i + chunk]
            if len(records) < limit:
                return  # that was the end as the query saw it: no second round trip to learn so
            last = records[-1].seq

    async def record_at(self, seq: int) -> StoredRecord | None:
        async with self._reader() as conn:
            records = await self._records(conn, "seq = $1", [seq], None, None, 1)
        return records[0] if records else None

    async def _records(
        self,
        conn: asyncpg.Connection,
        where: str,
        args: list[Any],
        kinds: list[int] | None,
        partitions: Collection[int] | None,
        limit: int,
    ) -> list[StoredRecord]:
        with_activity = kinds is None or _ACTIVITY in kinds
        control_kinds = None if kinds is None else [k for k in kinds if k != _ACTIVITY]
        parts = []
        if control_kinds is None or control_kinds:
            kind_filter = (
                "" if control_kinds is None else f" AND kind = ANY('{{{','.join(map(str, control_kinds))}}}'::int2[])"
            )
            parts.append(
                f"SELECT seq, last_seq, kind, version, payload, NULL::bytea AS digest FROM control WHERE {where}{kind_filter}"
            )
        if with_activity:
            parts.append(f"SELECT seq, last_seq, 1::int2, version, payload, digest FROM batches WHERE {where}")
        if not parts:
            return []
        query = " UNION ALL ".join(f"({p} ORDER BY seq LIMIT {int(limit)})" for p in parts)
        rows = await conn.fetch(f"SELECT * FROM ({query}) AS r ORDER BY seq LIMIT {int(limit)}", *args)
        if not rows:
            return []
        batch_rows = [r for r in rows if r[2] == _ACTIVITY]
        columns: dict[int, tuple[np.ndarray, ...]] = {}
        metadata: dict[int, list[tuple[int, bytes]]] = {}
        if batch_rows:
            columns, metadata = await self._activity(conn, batch_rows[0][0], batch_rows[-1][1], partitions)
        out = []
        for seq, last_seq, kind, version, payload, digest in rows:
            event = ev.decode(kind, version, payload)
            if isinstance(event, ev.ActivityBatchRecorded):
                event = _assemble(event, digest, columns.get(seq), metadata.get(seq, []))
            out.append(StoredRecord(seq, last_seq, event))
        return out

    def _tables(self, base: str, partitions: Collection[int] | None) -> list[str]:
        if partitions is None:
            return [base]
        return [f"{base}_p{int(p)}" for p in sorted(set(partitions)) if 0 <= int(p) < self.partition_count]

    async def _activity(
        self, conn: asyncpg.Connection, first: int, last: int, partitions: Collection[int] | None
    ) -> tuple[dict[int, tuple[np.ndarray, ...]], dict[int, list[tuple[int, bytes]]]]:
        tables = self._tables("activity", partitions)
        if not tables:
            return {}, {}
        query = " UNION ALL ".join(
            f"SELECT key, seq, idx, day, op FROM {t} WHERE seq >= {int(first)} AND seq <= {int(last)}" for t in tables
        )
        chunks: list[bytes] = []

        async def sink(data: bytes) -> None:
            chunks.append(bytes(data))

        await conn.copy_from_query(query, output=sink, format="binary")
        rows = _parse_copy(b"".join(chunks))
        columns: dict[int, tuple[np.ndarray, ...]] = {}
        if len(rows):
            seqs = rows["seq"].astype(np.int64)
            idxs = rows["idx"].astype(np.int64)
            order = np.lexsort((idxs, seqs))
            seqs, idxs = seqs[order], idxs[order]
            keys, days, ops = rows["key"][order], rows["day"][order], rows["op"][order]
            starts = np.flatnonzero(np.r_[True, seqs[1:] != seqs[:-1]])
            ends = np.r_[starts[1:], len(seqs)]
            for a, b in zip(starts.tolist(), ends.tolist()):
                columns[int(seqs[a])] = (keys[a:b], days[a:b], ops[a:b], idxs[a:b])
        metadata: dict[int, list[tuple[int, bytes]]] = {}
        meta_query = " UNION ALL ".join(
            f"SELECT seq, idx, raw FROM {t} WHERE seq >= $1 AND seq <= $2"
            for t in self._tables("activity_meta", partitions)
        )
        for seq, idx, raw in await conn.fetch(meta_query, first, last):
            metadata.setdefault(seq, []).append((idx, raw))
        return columns, metadata

    async def find_key(self, key: int, before_seq: int | None = None) -> list[int]:
        limit = self._head + 1 if before_seq is None else before_seq
        async with self._reader() as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT seq FROM activity WHERE key = $1 AND seq < $2 ORDER BY seq", key, limit
            )
        return [r[0] for r in rows]

    async def idempotent_record(self, idempotency_key: str) -> StoredRecord | None:
        async with self._reader() as conn:
            seq = await conn.fetchval("SELECT seq FROM idempotency WHERE key = $1", idempotency_key)
        return None if seq is None else await self.record_at(seq)

    async def count_rows(self) -> int:
        """Records stored (introspection for operators and tests)."""
        async with self._reader() as conn:
            n: int = await conn.fetchval("SELECT (SELECT count(*) FROM control) + (SELECT count(*) FROM batches)")
        return n

    # -- exclusive maintenance ---------------------------------------------------------------

    async def before_rewrite(self) -> None:
        return None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """One transaction holding the head row: no other writer appends until it ends."""
        saved = (self._head, self.key_version)
        async with self._lock:
            await self._writer()
            tx = self._conn.transaction()
            await tx.start()
            self._tx = self._conn
            self._tx_task = anyio.get_current_task().id
            self._rewrote = False
            try:
                await self._conn.execute("SELECT head FROM journal_head WHERE id = 1 FOR UPDATE")
                yield
                if self._rewrote:  # the epoch moves in the rewriting transaction itself
                    await self._conn.execute("UPDATE journal_head SET epoch = epoch + 1")
                await self._notify(self._conn)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    self._tx = None
                    try:
                        await tx.rollback()
                    except _CONNECTION_ERRORS:  # the connection is gone: so is the transaction
                        self._conn.terminate()
                self._head, self.key_version = saved
                self._rewrote = False
                raise
            with anyio.CancelScope(shield=True):
                self._tx = None
                await tx.commit()
            if self._rewrote:
                self.epoch += 1
                self._rewrote = False

    async def replace_payload(self, seq: int, event: ev.Event) -> None:
        conn = self._tx
        assert conn is not None, "replace_payload outside transaction()"
        if isinstance(event, ev.ActivityBatchRecorded):
            old = await self.record_at(seq)
            await conn.execute("DELETE FROM activity WHERE seq = $1", seq)
            await conn.execute("DELETE FROM activity_meta WHERE seq = $1", seq)
            old_keys = old.event.key_array() if old and isinstance(old.event, ev.ActivityBatchRecorded) else np.empty(0)
            self._dirty.update(await self._partitions_of(conn, old_keys))
            keys = event.key_array()
            if len(keys):
                data = _copy_bytes(
                    keys,
                    np.full(len(keys), seq, np.int64),
                    np.arange(len(keys), dtype=np.int32),
                    event.day_array(),
                    event.op_array(),
                )
                await conn.copy_to_table(
                    "activity", source=io.BytesIO(data), format="binary", columns=_ACTIVITY_COLUMNS
                )
            for i, raw in event.metadata:
                await conn.execute("INSERT INTO activity_meta VALUES ($1, $2, $3, $4)", int(keys[i]), seq, i, raw)
            header = msgspec.structs.replace(event, keys=b"", days=b"", ops=b"", metadata=[], request_digest=None)
            await conn.execute(
                "UPDATE batches SET version = $2, digest = $3, payload = $4 WHERE seq = $1",
                seq,
                event.VERSION,
                event.request_digest,
                ev.encode(header),
            )
            return
        await conn.execute(
            "UPDATE control SET kind = $2, version = $3, periods = string_to_array($4, chr(31)), payload = $5"
            " WHERE seq = $1",
            seq,
            event.KIND,
            event.VERSION,
            _periods(event),
            ev.encode(event),
        )
        self._dirty.add("control")
        self._rewrote = True

    async def _partitions_of(self, conn: asyncpg.Connection, keys: np.ndarray) -> set[str]:
        """The partitions (activity and activity_meta) that hold or would hold these keys."""
        if not len(keys):
            return set()
        rows = await conn.fetch(
            "SELECT DISTINCT p FROM unnest($1::int8[]) AS k, generate_series(0, $2 - 1) AS p "
            "WHERE satisfies_hash_partition('activity'::regclass, $2, p, k)",
            np.unique(keys).tolist(),
            self.partition_count,
        )
        return {f"{t}_p{r[0]}" for r in rows for t in ("activity", "activity_meta")}

    async def remove_key_activity(self, key: int, before_seq: int) -> int:
        conn = self._tx
        assert conn is not None, "remove_key_activity outside transaction()"
        rows = await conn.fetch(
            "WITH d AS (DELETE FROM activity WHERE key = $1 AND seq < $2 RETURNING seq) "
            "SELECT seq, count(*) FROM d GROUP BY seq",
            key,
            before_seq,
        )
        await conn.execute("DELETE FROM activity_meta WHERE key = $1 AND seq < $2", key, before_seq)
        if rows:
            # A digest over the old batch would still depend on the user.
            await conn.execute("UPDATE batches SET digest = NULL WHERE seq = ANY($1::int8[])", [r[0] for r in rows])
        # Dirty even when nothing was found: a purge retried after a failed VACUUM must still
        # rewrite the partition that holds the dead rows.
        self._dirty.update(await self._partitions_of(conn, np.array([key], dtype=np.int64)))
        self._rewrote = True
        return sum(int(r[1]) for r in rows)

    async def rekey_activity(self, mapping: KeyMapping) -> int:
        """All activity through ``mapping``: read out, TRUNCATE (fresh files), COPY back. Offline
        and whole-journal like the SQLite rewrite; it holds the activity in memory once."""
        conn = self._tx
        assert conn is not None, "rekey_activity outside transaction()"
        chunks: list[bytes] = []

        async def sink(data: bytes) -> None:
            chunks.append(bytes(data))

        await conn.copy_from_query("SELECT key, seq, idx, day, op FROM activity", output=sink, format="binary")
        rows = _parse_copy(b"".join(chunks))
        meta = await conn.fetch("SELECT key, seq, idx, raw FROM activity_meta")
        await conn.execute("TRUNCATE activity, activity_meta")
        if len(rows):
            new = mapping(rows["key"].astype(np.int64))
            data = _copy_bytes(new, rows["seq"], rows["idx"], rows["day"], rows["op"])
            await conn.copy_to_table("activity", source=io.BytesIO(data), format="binary", columns=_ACTIVITY_COLUMNS)
        if meta:
            new_meta = mapping(np.array([r[0] for r in meta], dtype=np.int64)).tolist()
            await conn.executemany(
                "INSERT INTO activity_meta VALUES ($1, $2, $3, $4)",
                [(k, r[1], r[2], r[3]) for k, r in zip(new_meta, meta)],
            )
        await conn.execute("UPDATE batches SET digest = NULL WHERE digest IS NOT NULL")
        self._rewrote = True
        return len(rows)

    async def set_key_version(self, version: int) -> None:
        conn = self._tx
        assert conn is not None, "set_key_version outside transaction()"
        await conn.execute("UPDATE journal_head SET key_version = $1", version)
        self.key_version = version

    async def erase_physically(self) -> None:
        """Rule 5: VACUUM FULL what was touched, switch the WAL, CHECKPOINT."""
        async with self._lock:
            conn = self._conn
            await conn.execute("SELECT pg_advisory_lock($1)", _ERASE_LOCK)  # one eraser at a time
            try:
                await _wait_for_older_snapshots(conn)
                for table in sorted(self._dirty):
                    await conn.execute(f"VACUUM (FULL) {table}")
                self._dirty.clear()
                await conn.execute("SELECT pg_switch_wal()")
                await conn.execute("CHECKPOINT")
                await conn.execute("UPDATE journal_head SET rebuilt_epoch = GREATEST(rebuilt_epoch, $1)", self.epoch)
                self.rebuilt_epoch = max(self.rebuilt_epoch, self.epoch)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _ERASE_LOCK)

    # -- background --------------------------------------------------------------------------

    async def housekeeping(self, exclusive: Exclusive) -> None:
        await anyio.sleep_forever()  # nothing to build: the store indexes what it needs itself

    def stats(self) -> dict[str, int]:
        return {"head": self._head, "partitions": self.partition_count}


class _Borrowed:
    """``async with`` over a connection that is not the pool's (the transaction's)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def __aenter__(self) -> asyncpg.Connection:
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The read pool's connections carry no session state -- no SET, no LISTEN, no advisory lock,
    no transaction left open (those live on the writer and listener connections) -- so returning
    one to the pool needs no reset: asyncpg's default RESET ALL etc. cost a round trip per read,
    measured as a quarter of a following shard's time."""
    return None


def _periods(event: ev.Event) -> str | None:
    """A charge's periods as one text (unit-separator joined: periods never contain it)."""
    if isinstance(event, ev.BudgetCharged):
        return "\x1f".join(event.periods or [event.accounting_period])
    return None


def _assemble(
    header: ev.ActivityBatchRecorded,
    digest: bytes | None,
    columns: tuple[np.ndarray, ...] | None,
    metadata: list[tuple[int, bytes]],
) -> ev.ActivityBatchRecorded:
    if columns is None:
        keys = np.empty(0, np.int64)
        days = np.empty(0, np.int32)
        ops = np.empty(0, np.uint8)
        idxs = np.empty(0, np.int64)
    else:
        keys, days, ops, idxs = columns
    meta = []
    if metadata:
        where = np.searchsorted(idxs, [i for i, _ in metadata])
        meta = sorted((int(w), raw) for w, (i, raw) in zip(where.tolist(), metadata) if w < len(idxs) and idxs[w] == i)
    return ev.ActivityBatchRecorded(
        keys=np.ascontiguousarray(keys, dtype="<i8").tobytes(),
        days=np.ascontiguousarray(days, dtype="<i4").tobytes(),
        ops=np.ascontiguousarray(ops, dtype=np.uint8).tobytes(),
        received_at=header.received_at,
        metadata=meta,
        idempotency_key=header.idempotency_key,
        request_digest=digest,
    )


async def check_erasure_settings(conn: asyncpg.Connection) -> list[str]:
    """What about this server would keep a purged pseudonym on disk (rule 5), one line each."""
    problems = []
    rows = await conn.fetch(
        "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])", list(ERASURE_SETTINGS)
    )
    for name, setting, unit in rows:
        ok, why = ERASURE_SETTINGS[name]
        if not ok(setting):
            problems.append(f"{name} = {setting}{unit or ''} ({why})")
    slots = await conn.fetchval("SELECT count(*) FROM pg_replication_slots")
    if slots:
        problems.append(f"{slots} replication slot(s) (they keep WAL segments for their consumers)")
    allowed = await conn.fetchval(
        "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
        " OR (pg_has_role(current_user, 'pg_checkpoint', 'MEMBER')"
        "     AND has_function_privilege('pg_switch_wal()', 'EXECUTE'))"
    )
    if not allowed:
        problems.append(
            "the journal's role may not run CHECKPOINT and pg_switch_wal() (grant pg_checkpoint and EXECUTE)"
        )
    return problems


async def _wait_for_older_snapshots(conn: asyncpg.Connection, timeout: float = 30.0) -> None:
    """VACUUM FULL copies rows some open snapshot may still see: wait until every other
    transaction of this database started after the rewrite committed."""
    with anyio.move_on_after(timeout):
        while await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity a,"
            " (SELECT backend_xmin AS mine FROM pg_stat_activity WHERE pid = pg_backend_pid()) m"
            " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
            " AND a.backend_xmin IS NOT NULL AND m.mine IS NOT NULL AND age(a.backend_xmin) >= age(m.mine)"
        ):
            await anyio.sleep(0.02)
        return
    log.warning("erasure_waited_for_old_snapshots", seconds=timeout)


def _redact(url: str) -> str:
    from journal.location import redact

    return redact(url)
