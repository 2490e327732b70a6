"""Where the journal lives: ``JOURNAL_URL`` parsed once, at start, into a ``JournalSpec``.

Rules:
1. ``sqlite:///PATH`` (SQLAlchemy's form: three slashes then a relative path, four for an
   absolute one) or ``postgresql://user[:password]@host[:port]/database[?partitions=N]``. Unset or
   empty means ``sqlite:///DATA_DIR/journal.sqlite3``. Anything else is a ``JournalError``
   naming ``JOURNAL_URL`` -- the CLI prints that one line and exits with 2.
2. ``DATA_DIR`` still holds what is per deployment and not journal: the secret, the keyring and
   the snapshot files (a snapshot is a process's own restart accelerator, never the truth). One
   process per ``role`` owns a ``DATA_DIR`` at a time (``lock``); several processes of one
   deployment (workers, shards) may share a ``DATA_DIR``, each with its own ``role``: its own
   lock file and snapshot directory. ``open(serving=True)`` opens a PostgreSQL journal shared
   with the other serving processes; anything else (offline maintenance) opens it alone
   (``journal.postgres`` rule 6). A SQLite journal is one process's, always.
3. A password never appears in a log line or an error: ``redacted``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from journal.backend import JournalBackend, JournalError
from journal.lock import DataDirLock
from journal.snapshots import SnapshotStore

SQLITE_FILE = "journal.sqlite3"
SCHEMES = ("sqlite", "postgresql", "postgres")


@dataclass(frozen=True)
class JournalSpec:
    url: str
    data_dir: Path
    kind: str  # "sqlite" | "postgresql"
    sqlite_path: Path | None = None
    sqlite_synchronous: str = "FULL"
    index_every_events: int = 262_144
    index_idle_seconds: float = 2.0
    pg_partitions: int = 16
    production: bool = False
    options: dict[str, str] = field(default_factory=dict)
    role: str = ""  # rule 2: "" the single process; "worker-1", "shard-0of2", ...

    @property
    def redacted(self) -> str:
        return redact(self.url)

    def lock(self) -> DataDirLock:
        return DataDirLock(self.data_dir, self.role)

    def snapshot_store(self) -> SnapshotStore:
        return SnapshotStore(self.data_dir / "snapshots" / self.role if self.role else self.data_dir / "snapshots")

    async def open(self, *, serving: bool = False) -> JournalBackend:
        if self.kind == "sqlite":
            from journal.store import SqliteJournal

            assert self.sqlite_path is not None
            return await SqliteJournal.open(
                self.sqlite_path,
                synchronous=self.sqlite_synchronous,
                index_every_events=self.index_every_events,
                index_idle_seconds=self.index_idle_seconds,
            )
        from journal.postgres import PostgresJournal

        return await PostgresJournal.open(
            self.url, partitions=self.pg_partitions, production=self.production, exclusive=not serving, shared=serving
        )


def parse(
    url: str | None,
    data_dir: Path | str,
    *,
    sqlite_synchronous: str = "FULL",
    index_every_events: int = 262_144,
    index_idle_seconds: float = 2.0,
    production: bool = False,
) -> JournalSpec:
    data_dir = Path(data_dir)
    tuning = {
        "sqlite_synchronous": sqlite_synchronous,
        "index_every_events": index_every_events,
        "index_idle_seconds": index_idle_seconds,
        "production": production,
    }
    if not url:
        path = data_dir / SQLITE_FILE
        return JournalSpec(f"sqlite:///{path}", data_dir, "sqlite", sqlite_path=path, **tuning)  # type: ignore[arg-type]
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise JournalError(
            f"JOURNAL_URL: unknown scheme {parts.scheme!r} in {redact(url)!r}; use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
        )
    if scheme == "sqlite":
        if parts.netloc or not url.lower().startswith("sqlite:///") or parts.path in ("", "/"):
            raise JournalError(
                f"JOURNAL_URL: {url!r} is not sqlite:///PATH (three slashes, then a relative path; four for an absolute one)"
            )
        path = Path(parts.path[1:])
        return JournalSpec(url, data_dir, "sqlite", sqlite_path=path, **tuning)  # type: ignore[arg-type]
    if not parts.hostname:
        raise JournalError(f"JOURNAL_URL: {redact(url)!r} names no host (postgresql://USER@HOST:PORT/DB)")
    try:
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise JournalError(f"JOURNAL_URL: {redact(url)!r} has an invalid port") from None
    if parts.path.strip("/") == "" or "/" in parts.path.strip("/"):
        raise JournalError(f"JOURNAL_URL: {redact(url)!r} names no database (postgresql://USER@HOST:PORT/DB)")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    partitions = 16
    if "partitions" in query:
        text = query.pop("partitions")
        if not text.isdigit() or not 1 <= int(text) <= 1024:
            raise JournalError(f"JOURNAL_URL: partitions={text!r}; it must be an integer in 1..1024")
        partitions = int(text)
    clean = urlunsplit(("postgresql", parts.netloc, parts.path, "&".join(f"{k}={v}" for k, v in query.items()), ""))
    return JournalSpec(clean, data_dir, "postgresql", pg_partitions=partitions, options=query, **tuning)  # type: ignore[arg-type]


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
