"""Actors: a bounded mailbox, an in-order feed of journal records, and a ``handle`` hook.

Theory of operation:
- An ``Actor`` owns a bounded mailbox (an anyio memory object stream) and a ``handle`` coroutine.
  Its domain logic is a pure state object; ``handle`` computes the next state and assigns it
  only when the computation succeeded. So when ``handle`` raises, the actor's state is still the
  last good one, and "restart from its last state" is simply: log, count, fail the message's
  reply, and take the next message.
- A ``Supervisor`` (``supervisor.py``) owns every actor's loop through one task group
  (structured concurrency: nothing is fire-and-forget; an error that escapes the loop reaches
  the owner).
- Backpressure: ``send`` waits while a mailbox is full; ``try_send`` raises ``MailboxFull`` at
  once. The gateway only ever uses ``try_send``/``ask_nowait``, which is how a full mailbox
  becomes 503 + Retry-After instead of an unbounded queue.
- Control-plane records from the journal (releases, charges, erasures) reach the actors that
  also *write* such records through ``feed`` -- an in-order side queue drained before every
  message -- never through the bounded mailbox: a writer waiting on the mailbox of an actor that
  is itself waiting on the writer would deadlock. Their volume is bounded by the writer's own
  queue bound, because every fed record was first admitted there.
- Shutdown closes the mailboxes; each loop drains what is already queued and returns.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio

T = TypeVar("T")


class MailboxFull(Exception):
    def __init__(self, actor: str, capacity: int) -> None:
        super().__init__(f"mailbox of {actor} is full ({capacity} messages)")
        self.actor = actor
        self.retry_after = 1


class ActorStopped(Exception):
    pass


@dataclass(slots=True)
class Ask(Generic[T]):
    """Base for messages that expect an answer of type ``T``. ``reply`` is keyword-only so that
    every message can declare its own fields as required (no placeholder defaults)."""

    reply: asyncio.Future[T] = field(default_factory=lambda: asyncio.get_running_loop().create_future(), kw_only=True)

    def answer(self, value: T) -> None:
        """Reply, unless the asker has stopped waiting (its task was cancelled, e.g. at shutdown):
        an abandoned question is not a crash of the actor that answers it."""
        if not self.reply.done():
            self.reply.set_result(value)


@dataclass(slots=True)
class Wake:
    """Nudge to drain the feed (sent best-effort; a full mailbox will drain it anyway)."""


class Actor:
    kind = "actor"

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self._send, self._recv = anyio.create_memory_object_stream[Any](capacity)
        self.feed: deque[Any] = deque()
        self.crashes = 0
        self.processed = 0

    # -- the loop's hooks (override) ---------------------------------------------------------

    async def handle(self, message: Any) -> None:
        raise NotImplementedError

    def apply_fed(self, item: Any) -> None:
        """Apply one fed journal record to the state (override when the actor has a feed)."""

    def drain_feed(self) -> None:
        while self.feed:
            self.apply_fed(self.feed.popleft())

    # -- sending -----------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return self._send.statistics().current_buffer_used

    async def send(self, message: Any) -> None:
        """Enqueue, waiting while the mailbox is full (backpressure). When there is room this does
        not yield to the event loop, so a dispatcher can fan out a batch without interleaving."""
        try:
            self._send.send_nowait(message)
        except anyio.WouldBlock:
            try:
                await self._send.send(message)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
                raise ActorStopped(self.name) from exc
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            raise ActorStopped(self.name) from exc

    def try_send(self, message: Any) -> None:
        try:
            self._send.send_nowait(message)
        except anyio.WouldBlock as exc:
            raise MailboxFull(self.name, self.capacity) from exc
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            raise ActorStopped(self.name) from exc

    async def ask(self, message: Ask[T]) -> T:
        """Send (waiting for room) and await the reply."""
        await self.send(message)
        return await message.reply

    async def ask_nowait(self, message: Ask[T]) -> T:
        """Send without waiting for room (MailboxFull if none) and await the reply."""
        self.try_send(message)
        return await message.reply

    def push_feed(self, item: Any) -> None:
        self.feed.append(item)
        try:
            self._send.send_nowait(Wake())
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # a queued message will drain the feed first anyway

    def close(self) -> None:
        self._send.close()
