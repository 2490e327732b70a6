"""Background loops of the running system: the journal's housekeeping, periodic snapshots.

Rules:
1. Each loop is started by ``ActorSystem`` inside its task group (never fire-and-forget) and
   runs until cancelled at shutdown.
2. Work that writes goes through the committer (``run_job``), never around it: the journal's
   own housekeeping (whatever its backend needs) gets the committer's job slot to write with.
3. Reading what other processes wrote goes through the committer too (``follow``): records are
   dispatched by its writer task alone, in journal order.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import structlog

from actors.settings import EngineSettings
from actors.system.snapshotting import Snapshotter
from journal.backend import JournalBackend, Member
from journal.groupcommit import Committer

log = structlog.get_logger("actors.system")


async def journal_housekeeping(journal: JournalBackend, committer: Committer) -> None:
    """The backend's background work, restarted after a failure (a full disk, a database that
    went away): it is an optimisation, and must never take the service down with it."""
    delay = 1.0
    while True:
        try:
            await journal.housekeeping(committer.run_job)
            return
        except Exception as exc:
            log.error("journal_housekeeping_failed", error=repr(exc), retry_in=delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, 30.0)


FOLLOW_POLL_SECONDS = 1.0  # a lost notification (a reconnect) costs at most this much delay
FOLLOW_COALESCE_SECONDS = 0.01  # commits notified within this are read back in one go


async def follow_journal(journal: JournalBackend, committer: Committer) -> None:
    """A shared journal (backend rule 6): after commits of other processes -- or once a second
    anyway -- the committer reads and dispatches what it did not write itself. Notifications
    arriving together are coalesced: one read of many commits costs far less than many reads
    (a commit's own records are dispatched at once anyway; this only bounds how stale an idle
    process may be)."""
    while True:
        await journal.wait_for_commits(FOLLOW_POLL_SECONDS)
        await anyio.sleep(FOLLOW_COALESCE_SECONDS)
        committer.follow()


HEARTBEAT_SECONDS = 1.0


async def heartbeat(journal: JournalBackend, member: Callable[[], Member]) -> None:
    """A shared journal's registry (backend rule 7): this process's row, once a second."""
    while True:
        try:
            await journal.register(member())
        except Exception as exc:  # the database is away for a moment: the next beat tries again
            log.warning("heartbeat_failed", error=repr(exc))
        await anyio.sleep(HEARTBEAT_SECONDS)


async def snapshot_loop(snapshots: Snapshotter, head: Callable[[], int], settings: EngineSettings) -> None:
    last = time.monotonic()
    while True:
        await anyio.sleep(1.0)
        behind = head() - snapshots.last_seq
        due = behind >= settings.snapshot_every_events or (
            behind > 0 and time.monotonic() - last >= settings.snapshot_every_seconds
        )
        if due:
            try:
                await snapshots.write()
            except Exception as exc:
                log.error("snapshot_failed", error=repr(exc))
            last = time.monotonic()
