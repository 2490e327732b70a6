"""What a failed storage operation means for the request that asked for it: full, busy, broken.

Rules:
1. ``classify`` maps an exception raised by a journal backend (sqlite3, asyncpg, the OS) to a
   ``kind``: ``full`` (no space: SQLite SQLITE_FULL, ENOSPC/EDQUOT, PostgreSQL class 53 "disk
   full" / "insufficient resources"), ``busy`` (worth retrying soon: SQLite BUSY/LOCKED,
   PostgreSQL connection lost or refused, lock and serialization conflicts, operator
   intervention, timeouts), ``failed`` (I/O errors, corruption, any other error of the storage
   layer). ``None`` means "not a storage error": a bug, which propagates as it is.
2. A request whose write failed gets ``StorageUnavailable`` (chained to the cause): nothing of it
   is acknowledged, and the gateway answers 507 (``full``) or 503 (the others), both with
   ``Retry-After``. If the failure hid a commit that did happen (a connection lost after COMMIT
   was sent), the committer finds the records and hands them to the actors before writing
   anything else (``groupcommit`` rule 8); a client that retries with its Idempotency-Key then
   gets the first answer, never a second copy.
3. This module imports no backend: it recognises their exceptions by type name and SQLSTATE, so
   it applies to every backend (and ``journal/faults.py`` can imitate each kind).
"""

from __future__ import annotations

import errno
import sqlite3

KINDS = ("full", "busy", "failed")
RETRY_AFTER = {"full": 10, "busy": 2, "failed": 5}

_SQLITE_FULL, _SQLITE_BUSY, _SQLITE_LOCKED = 13, 5, 6
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_BUSY_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EAGAIN,
}
# PostgreSQL SQLSTATE classes (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_PG_BUSY_STATES = {"08", "40", "55P03", "57P01", "57P02", "57P03", "57014", "53300", "53200"}


class StorageUnavailable(Exception):
    """The journal could not store this request; nothing of it was acknowledged (rule 2)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.retry_after = RETRY_AFTER[kind]


class StorageFull(StorageUnavailable):
    """``StorageUnavailable`` of kind ``full`` (the gateway's 507)."""


def classify(exc: BaseException) -> str | None:
    """Rule 1."""
    if isinstance(exc, StorageUnavailable):
        return exc.kind
    if isinstance(exc, sqlite3.Error):
        return _sqlite(exc)
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and type(exc).__module__.startswith("asyncpg"):
        return _postgres(state)
    name = type(exc).__name__
    if type(exc).__module__.startswith("asyncpg") and name in (
        "InterfaceError",
        "ConnectionDoesNotExistError",
        "InternalClientError",  # "cannot switch to state ...": the server's FATAL arrived, the close not yet
    ):
        return "busy"  # asyncpg's own connection errors carry no SQLSTATE
    if isinstance(exc, TimeoutError):
        return "busy"
    if isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNOS:
            return "full"
        if exc.errno in _BUSY_ERRNOS or isinstance(exc, ConnectionError):
            return "busy"
        return "failed"
    return None


def _sqlite(exc: sqlite3.Error) -> str | None:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc).lower()
    if primary == _SQLITE_FULL or "disk is full" in text:
        return "full"
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in text or "busy" in text:
        return "busy"
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return None  # a bug in what we asked, not a storage condition
    return "failed"


def _postgres(state: str) -> str | None:
    if state in ("53100", "53000"):
        return "full"
    if state in _PG_BUSY_STATES or state[:2] in _PG_BUSY_STATES:
        return "busy"
    if state[:2] in ("58", "XX"):  # system error (I/O), internal error (corruption)
        return "failed"
    return None


def unavailable(exc: BaseException, kind: str) -> StorageUnavailable:
    what = {"full": "the journal's storage is full", "busy": "the journal is busy or unreachable"}.get(
        kind, "the journal could not write"
    )
    cls = StorageFull if kind == "full" else StorageUnavailable
    out = cls(kind, f"{what}; nothing of this request was stored ({type(exc).__name__})")
    out.__cause__ = exc
    return out
