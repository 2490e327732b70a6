"""The erasure actor: answers receipt lookups and runs the purge loop (the book is in
``actors/state/erasure_book.py``).

Rules:
1. The book changes only by applying journaled ``UserErased`` and ``ErasurePurged`` records fed
   in journal order.
2. The actor's purge loop runs compaction (``journal.compaction``) through the committer's
   exclusive job slot once ``PURGE_DELAY_SECONDS`` have passed since the oldest outstanding
   request -- and then purges *every* outstanding erasure (early is within the promise). A
   purge rebuilds the database file, so one per delay period, not one per erasure.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import structlog

from actors.runtime import Actor, Ask
from actors.state.erasure_book import ErasureBook, ErasureEntry
from journal.events import ErasurePurged, UserErased

log = structlog.get_logger("actors.erasure")


@dataclass(slots=True)
class Lookup(Ask):
    erasure_id: str = ""


@dataclass(slots=True)
class ErasureBarrier(Ask):
    seq: int = 0


Purge = Callable[[list[ErasureEntry]], Awaitable[None]]


class ErasureActor(Actor):
    kind = "erasure"

    def __init__(self, book: ErasureBook, *, capacity: int, purge_delay: float, purge: Purge) -> None:
        super().__init__("erasure", capacity)
        self.book = book
        self.purge_delay = purge_delay
        self._purge = purge
        self._changed = anyio.Event()
        self.retry_seconds = 5.0

    def apply_fed(self, item: tuple[int, UserErased | ErasurePurged]) -> None:
        seq, event = item
        self.book.apply(seq, event)
        self._changed.set()

    async def handle(self, message: object) -> None:
        if isinstance(message, Lookup):
            message.reply.set_result(self.book.entries.get(message.erasure_id))
        elif isinstance(message, ErasureBarrier):
            self.book.advance(message.seq)
            message.reply.set_result(self.book.snapshot())
        else:
            raise TypeError(f"erasure actor cannot handle {type(message).__name__}")

    async def purge_loop(self) -> None:
        """Purge every erasure once its delay has passed (rule 4). Owned by the system's task group."""
        while True:
            self.drain_feed()
            if self.book.due(time.time(), self.purge_delay):
                outstanding = self.book.outstanding()
                try:
                    await self._purge(outstanding)
                except Exception as exc:  # retried; meanwhile the user stays erased in every state
                    log.error("purge_failed", error=repr(exc), erasures=len(outstanding))
                    await anyio.sleep(self.retry_seconds)
                continue
            nxt = self.book.next_due(self.purge_delay)
            timeout = None if nxt is None else max(0.0, nxt - time.time()) + 0.01
            with anyio.move_on_after(timeout if timeout is not None else 3600):
                await self._changed.wait()
            self._changed = anyio.Event()
