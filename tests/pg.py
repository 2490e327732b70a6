"""A real PostgreSQL for the tests: the one in ``DPDAU_TEST_POSTGRES_URL``, else a throwaway
cluster started once per test session (``scripts/pgcluster.py``) when the binaries exist.

Each test gets its own fresh database (``fresh_database``), so tests never see each other's
rows. Where PostgreSQL cannot be had, the PostgreSQL tests are skipped with a loud reason --
except when ``DPDAU_REQUIRE_POSTGRES=1`` (``.ci/run`` sets it): there a missing server fails.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg

from scripts import pgcluster
from tests.support import free_port

ENV_URL = "DPDAU_TEST_POSTGRES_URL"
ENV_DATA = "DPDAU_TEST_POSTGRES_DATA"  # its data directory, for the byte-scan tests (optional)
ENV_REQUIRED = "DPDAU_REQUIRE_POSTGRES"


@dataclass(frozen=True)
class Server:
    url: str  # an admin URL (a database that always exists)
    data_dir: Path | None  # the cluster's data directory when this process can read it


_server: Server | None = None
_reason = ""


def server() -> Server | None:
    """The session's server (started on first use), or None with ``unavailable_reason()``."""
    global _server, _reason
    if _server is not None or _reason:
        return _server
    url = os.environ.get(ENV_URL)
    if url:
        data = os.environ.get(ENV_DATA)
        _server = Server(url, Path(data) if data else None)
        return _server
    if pgcluster.bin_dir() is None:
        _reason = (
            f"PostgreSQL tests SKIPPED: no PostgreSQL binaries (apt-get install postgresql-15) and {ENV_URL} is not set"
        )
        return None
    directory = Path(tempfile.mkdtemp(prefix="dpdau-pg-"))
    try:
        url = pgcluster.start(directory, free_port())
    except Exception as exc:
        shutil.rmtree(directory, ignore_errors=True)
        _reason = f"PostgreSQL tests SKIPPED: could not start a cluster: {exc}"
        return None

    def stop() -> None:
        pgcluster.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)

    atexit.register(stop)
    _server = Server(url, directory / "data")
    return _server


def unavailable_reason() -> str:
    return _reason


def required() -> bool:
    return os.environ.get(ENV_REQUIRED, "") not in ("", "0")


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


async def create_database(admin_url: str) -> str:
    name = "t_" + uuid.uuid4().hex[:16]
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return with_database(admin_url, name)


def fresh_database(srv: Server) -> str:
    """A new empty database (synchronous: usable from fixtures and hypothesis examples)."""
    return anyio.run(create_database, srv.url)


# Every table of the journal schema (journal/postgres.py), in an order that restores cleanly.
JOURNAL_TABLES = (
    "journal_head",
    "control",
    "batches",
    "activity",
    "activity_meta",
    "idempotency",
    "accounting_periods",
    "processes",
)


async def clone_database(url: str) -> str:
    """A new database holding exactly what ``url``'s journal holds now: the PostgreSQL half of a
    crash image. The caller guarantees nobody writes meanwhile (an exclusive committer job); the
    copy is also one REPEATABLE READ snapshot of the source."""
    from journal.postgres import PostgresJournal

    source = await asyncpg.connect(url)
    try:
        partitions = await source.fetchval("SELECT partitions FROM journal_head")
        clone = await create_database(url)
        target = await PostgresJournal.open(clone, partitions=partitions, exclusive=False)  # the schema
        await target.close()
        dest = await asyncpg.connect(clone)
        try:
            await dest.execute(f"TRUNCATE {', '.join(JOURNAL_TABLES)}")
            async with source.transaction(isolation="repeatable_read", readonly=True):
                for table in JOURNAL_TABLES:
                    chunks: list[bytes] = []

                    async def sink(data: bytes, chunks: list[bytes] = chunks) -> None:
                        chunks.append(bytes(data))

                    await source.copy_from_query(f"SELECT * FROM {table}", output=sink, format="binary")
                    await dest.copy_to_table(table, source=io.BytesIO(b"".join(chunks)), format="binary")
        finally:
            await dest.close()
    finally:
        await source.close()
    return clone
