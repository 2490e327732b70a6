"""The erasure actor: answers receipt lookups and runs the purge loop (the book is in
``actors/state/erasure_book.py``).

Rules:
1. The book changes only by applying journaled ``UserErased`` and ``ErasurePurged`` records fed
   in journal order.
2. The actor's purge loop runs compaction (``journal.compaction``) through the committer's
   exclusive job slot once ``PURGE_DELAY_SECONDS`` have passed since the oldest outstanding
   request -- and then purges *every* outstanding erasure (early is within the promise). A
   purge rebuilds the database file, so one per delay period, not one per erasure.
3. ``purge_erased`` is compaction with the domain's rule for the anonymous tombstone (what the erased
   user still owes the counter runs, ``flippancy.anonymous_tombstone``): every purge in the
   service, the offline ``compact`` and the tests goes through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import msgspec
import structlog

from actors.privacy import flippancy
from actors.runtime import Actor, Ask
from actors.state.erasure_book import ErasureBook, ErasureEntry, ErasureSnapshot
from journal import compaction
from journal.backend import JournalBackend as Journal
from journal.compaction import PurgeTarget
from journal.events import ErasurePurged, StoredRecord, UserErased

log = structlog.get_logger("actors.erasure")


async def purge_erased(journal: Journal, targets: list[PurgeTarget], now: float | None = None) -> list[StoredRecord]:
    """Physically remove erased users (rule 3); run it as an exclusive committer job."""
    return await compaction.purge(journal, targets, anonymise=flippancy.anonymous_tombstone, now=now)


@dataclass(slots=True)
class Lookup(Ask[ErasureEntry | None]):
    erasure_id: str


@dataclass(slots=True)
class ErasureBarrier(Ask[ErasureSnapshot]):
    seq: int


@dataclass(slots=True)
class ListErasures(Ask[tuple[list[ErasureEntry], int]]):
    """A page of the audit log (oldest first) and its length."""

    offset: int
    limit: int


@dataclass(slots=True)
class PlanPurge(Ask[tuple[list[ErasureEntry], float | None]]):
    """Reply ``(entries to purge now, next time one falls due or None)`` as of ``now``."""

    now: float


@dataclass(slots=True)
class ListEntries(Ask[list[ErasureEntry]]):
    """Every receipt (for the admin-only counts by status)."""


Purge = Callable[[list[ErasureEntry]], Awaitable[None]]


class ErasureActor(Actor):
    kind = "erasure"

    def __init__(
        self, book: ErasureBook, *, capacity: int, purge_delay: float, purge: Purge, now: Callable[[], float]
    ) -> None:
        super().__init__("erasure", capacity)
        self.book = book
        self.purge_delay = purge_delay
        self._purge = purge
        self._now = now
        self._changed = anyio.Event()
        self.retry_seconds = 5.0

    def apply_fed(self, item: tuple[int, UserErased | ErasurePurged]) -> None:
        seq, event = item
        self.book.apply(seq, event)
        self._changed.set()

    async def handle(self, message: object) -> None:
        if isinstance(message, Lookup):
            message.answer(self.book.entries.get(message.erasure_id))
        elif isinstance(message, ListEntries):
            message.answer(list(self.book.entries.values()))
        elif isinstance(message, ErasureBarrier):
            self.book.advance(message.seq)
            message.answer(self.book.snapshot())
        elif isinstance(message, ListErasures):
            entries = list(self.book.entries.values())
            page = [msgspec.structs.replace(e) for e in entries[message.offset : message.offset + message.limit]]
            message.answer((page, len(entries)))
        elif isinstance(message, PlanPurge):
            due = self.book.outstanding() if self.book.due(message.now, self.purge_delay) else []
            message.answer((due, self.book.next_due(self.purge_delay)))
        else:
            raise TypeError(f"erasure actor cannot handle {type(message).__name__}")

    async def purge_loop(self) -> None:
        """Purge every erasure once its delay has passed (rule 4). Owned by the system's task group;
        it reads the book only by asking the actor, so the book is touched by the actor's task alone."""
        while True:
            due, nxt = await self.ask(PlanPurge(now=self._now()))
            if due:
                try:
                    await self._purge(due)
                except Exception as exc:  # retried; meanwhile the user stays erased in every state
                    log.error("purge_failed", error=repr(exc), erasures=len(due))
                    await anyio.sleep(self.retry_seconds)
                continue
            timeout = 3600.0 if nxt is None else max(0.0, nxt - self._now()) + 0.01
            with anyio.move_on_after(timeout):
                await self._changed.wait()
            self._changed = anyio.Event()
