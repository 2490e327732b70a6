"""Fault injection for tests: named points where a test makes this process die or fail.

Rules:
1. Off by default. A test turns points on through the environment of the process it starts
   (``DPDAU_FAULTS``) or, in-process, with ``arm``/``disarm``. With nothing armed, ``hit`` is one
   dict lookup on an empty dict.
2. Never in production: ``DPDAU_FAULTS`` together with ``DPDAU_ENV=production`` is refused at
   configuration (``FaultsInProduction``, which the gateway turns into exit code 2), and ``hit``
   itself does nothing when ``DPDAU_ENV`` is ``production`` -- two independent locks.
3. ``DPDAU_FAULTS`` is ``point=action[,point=action...]``; an action is
   ``kill`` (SIGKILL this process at that instant: what ``kill -9`` would do there),
   ``kill@N`` (on the N-th hit of the point), or ``raise:KIND`` / ``raise:KIND*N`` (raise the
   storage error KIND on every hit, or on the next N hits): ``full`` (SQLite's "database or disk
   is full"), ``locked`` ("database is locked"), ``enospc`` / ``eio`` (OSError), ``busy`` (the
   connection to the database lost).
4. Points are named ``<module>.<moment>`` and listed in ``POINTS``; arming an unknown point is an
   error, so a renamed point cannot silently turn a test into a no-op.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

POINTS = {
    "journal.append": "before a group's INSERT is executed (the group is not stored)",
    "journal.after_append": "a group is committed, its caller not yet told (a lost commit acknowledgement)",
    "journal.refresh_head": "the committer asks the journal for its real head (after a failed write)",
    "journal.rewrite_commit": "inside a rewriting transaction (purge, shredding), just before COMMIT",
    "journal.after_rewrite_commit": "a rewrite committed, before its VACUUM",
    "journal.after_rebuild": "after VACUUM, before the WAL checkpoint",
    "snapshot.before_rename": "a snapshot's temp file is written and fsynced, not yet renamed",
    "snapshot.after_save": "a snapshot is in place, older ones not yet deleted",
    "purge.before_snapshots": "a purge is committed and dispatched; snapshots not yet replaced",
}

ENV = "DPDAU_FAULTS"


class FaultsInProduction(Exception):
    """DPDAU_FAULTS was set in a production environment (rule 2)."""


@dataclass
class _Fault:
    action: str  # "kill" | "raise"
    kind: str = ""
    at_hit: int = 1  # kill on this hit
    remaining: int | None = None  # raise this many more times (None: always)
    hits: int = 0


_armed: dict[str, _Fault] = {}


def _production() -> bool:
    return os.environ.get("DPDAU_ENV", "development").lower() == "production"


def parse(spec: str) -> dict[str, _Fault]:
    out: dict[str, _Fault] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        point, sep, action = part.partition("=")
        if not sep or point not in POINTS:
            raise ValueError(f"{ENV}: unknown fault point {point!r} (known: {', '.join(sorted(POINTS))})")
        if action == "kill" or action.startswith("kill@"):
            out[point] = _Fault("kill", at_hit=int(action[5:] or 1) if "@" in action else 1)
        elif action.startswith("raise:"):
            kind, _, times = action[6:].partition("*")
            if kind not in _ERRORS:
                raise ValueError(f"{ENV}: unknown error kind {kind!r} (known: {', '.join(_ERRORS)})")
            out[point] = _Fault("raise", kind=kind, remaining=int(times) if times else None)
        else:
            raise ValueError(f"{ENV}: unknown action {action!r} for {point} (kill, kill@N, raise:KIND[*N])")
    return out


def configure_from_env(environ: dict[str, str] | None = None) -> None:
    """Arm what ``DPDAU_FAULTS`` asks for; refuse in production (rule 2)."""
    env = os.environ if environ is None else environ
    spec = env.get(ENV, "")
    if not spec:
        return
    if env.get("DPDAU_ENV", "development").lower() == "production":
        raise FaultsInProduction(f"{ENV} is a test hook and cannot be used with DPDAU_ENV=production")
    _armed.update(parse(spec))


def arm(point: str, action: str) -> None:
    """In-process tests: ``arm("journal.append", "raise:full*3")``."""
    _armed.update(parse(f"{point}={action}"))


def disarm(point: str | None = None) -> None:
    if point is None:
        _armed.clear()
    else:
        _armed.pop(point, None)


def hit(point: str) -> None:
    """A named moment (rule 4). Does nothing unless a test armed this point (rule 1)."""
    if not _armed:
        return
    fault = _armed.get(point)
    if fault is None or _production():
        return
    fault.hits += 1
    if fault.action == "kill":
        if fault.hits >= fault.at_hit:
            os.kill(os.getpid(), signal.SIGKILL)
        return
    if fault.remaining is not None:
        if fault.remaining <= 0:
            return
        fault.remaining -= 1
    raise _ERRORS[fault.kind]()


_ERRORS: dict[str, Callable[[], Exception]] = {
    "full": lambda: sqlite3.OperationalError("database or disk is full"),
    "locked": lambda: sqlite3.OperationalError("database is locked"),
    "enospc": lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    "eio": lambda: OSError(errno.EIO, os.strerror(errno.EIO)),
    "busy": lambda: ConnectionResetError(errno.ECONNRESET, "connection to the database lost"),
}
