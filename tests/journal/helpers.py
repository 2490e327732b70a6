"""Shared helpers for the journal unit tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from journal import events as ev
from journal.backend import JournalBackend as Journal
from journal.events import StoredRecord

DB_NAME = "journal.sqlite3"


def batch(
    keys: Sequence[int] | np.ndarray,
    days: Sequence[int] | np.ndarray | None = None,
    ops: Sequence[int] | np.ndarray | None = None,
    **fields,
) -> ev.ActivityBatchRecorded:
    """An activity batch; days default to 20_000 + index, ops to OP_RECORD."""
    keys = np.asarray(keys, dtype=np.int64)
    n = len(keys)
    days = np.arange(20_000, 20_000 + n) if days is None else np.asarray(days)
    ops = np.full(n, ev.OP_RECORD) if ops is None else np.asarray(ops)
    fields.setdefault("received_at", 1_700_000_000.0)
    return ev.ActivityBatchRecorded.from_arrays(keys, days, ops, **fields)


def erased(key: int | None, erasure_id: str = "er-1", requested_at: float = 1_700_000_100.0) -> ev.UserErased:
    return ev.UserErased(erasure_id=erasure_id, key=key, requested_at=requested_at)


def keys_bytes(keys: Iterable[int]) -> bytes:
    return np.array(sorted(keys), dtype="<i8").tobytes()


def counter_started(run_id: str) -> ev.CounterStarted:
    return ev.CounterStarted(
        run_id=run_id,
        metric="dau",
        accounting_period="2026-11",
        first_day=20_000,
        horizon=30,
        window=1,
        kind="sqrt",
        flip_bound=4,
        noise_multiplier=1.5,
        sensitivity=4.0,
        sensitivity_exact=True,
        sigma=2.0,
        lattice_bits=20,
        noise=[1, -2, 3],
        epsilon=1.0,
        charge_id=f"ch-{run_id}",
        budget_remaining=2.0,
        started_at=1_700_000_000.0,
    )


def counter_step(run_id: str, t: int, entered: Iterable[int] = (), left: Iterable[int] = ()) -> ev.CounterStepped:
    return ev.CounterStepped(
        run_id=run_id,
        t=t,
        day=20_000 + t,
        z=len(list(entered)) - len(list(left)),
        exits_consumed=0,
        entered=keys_bytes(entered),
        left=keys_bytes(left),
        frozen=0,
    )


def budget_charge(charge_id: str = "ch-1", purpose: str = "release") -> ev.BudgetCharged:
    return ev.BudgetCharged(
        charge_id=charge_id,
        metric="dau",
        accounting_period="2026-11",
        periods=["2026-11"],
        mechanism="discrete_gaussian",
        parameter=3.0,
        sensitivity=1.0,
        epsilon=0.5,
        delta=1e-9,
        charged_at=1_700_000_000.0,
        purpose=purpose,
    )


async def read_all(journal: Journal, after: int = 0, **kw) -> list[StoredRecord]:
    out: list[StoredRecord] = []
    async for chunk in journal.read(after, **kw):
        out.extend(chunk)
    return out


def sql(db: Path, query: str, params: tuple = ()) -> list[tuple]:
    """Run a query through the stdlib driver, independent of the code under test."""
    con = sqlite3.connect(db, isolation_level=None)  # autocommit: writes land immediately
    try:
        return con.execute(query, params).fetchall()
    finally:
        con.close()


def key_patterns(key: int) -> dict[str, bytes]:
    """Every way a pseudonym can sit on disk: int64 LE (numpy blobs), BE (msgpack ints), decimal."""
    return {
        "le": int(key).to_bytes(8, "little", signed=True),
        "be": int(key).to_bytes(8, "big", signed=True),
        "decimal": str(int(key)).encode(),
    }


def files_containing(directory: Path, pattern: bytes) -> list[str]:
    """Names of the files in ``directory`` (database, -wal, -shm, anything) holding ``pattern``."""
    return sorted(p.name for p in Path(directory).iterdir() if p.is_file() and pattern in p.read_bytes())


def db_files(directory: Path) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir() if p.is_file())


def random_keys(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct random int64 pseudonyms whose 8 bytes are all non-zero (no accidental matches)."""
    out: list[int] = []
    seen: set[int] = set()
    while len(out) < n:
        k = int(rng.integers(-(2**63), 2**63 - 1))
        if k in seen or 0 in k.to_bytes(8, "little", signed=True):
            continue
        seen.add(k)
        out.append(k)
    return np.array(out, dtype=np.int64)


async def settle(journal: Journal) -> None:
    """Let the backend finish what it defers (SQLite: build the pseudonym index; PostgreSQL:
    nothing to do) -- so a test can put records on both sides of the index watermark."""
    index_pending = getattr(journal, "index_pending", None)
    if index_pending is not None:
        await index_pending()


async def refuse_kind(journal: Journal, db_dir: Path, kind: int) -> None:
    """Make the store itself reject inserts of one event kind (a real constraint failure)."""
    if journal.kind == "sqlite":
        sql(
            db_dir / DB_NAME,
            f"CREATE TRIGGER refuse_{kind} BEFORE INSERT ON journal WHEN NEW.kind = {kind} "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        return
    import asyncpg

    conn = await asyncpg.connect(journal.url)  # type: ignore[attr-defined]
    try:
        await conn.execute(
            f"""CREATE FUNCTION refuse_{kind}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN IF NEW.kind = {kind} THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;
                CREATE TRIGGER refuse_{kind} BEFORE INSERT ON control FOR EACH ROW EXECUTE FUNCTION refuse_{kind}();"""
        )
    finally:
        await conn.close()
