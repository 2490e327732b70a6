"""The supervisor: runs every actor's loop in one task group and restarts a crashed actor.

Rules:
1. An actor's loop is owned by the supervisor's task group; nothing is fire-and-forget.
2. A ``Refusal`` is a domain answer ("no"), delivered to the asker; not a crash.
3. Any other exception from ``handle`` is a crash: logged, counted (``on_crash``), the asker's
   reply fails with it, and the actor goes on with its last good state (``handle`` assigns new
   state only on success), which is what "restart from its last state" means here.
4. Shutdown closes the mailboxes; each loop drains what is already queued and returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from anyio.abc import TaskGroup

from actors.refusals import Refusal
from actors.runtime.actor import Actor, Wake
from journal.storage import StorageUnavailable

log = structlog.get_logger("actors.runtime")


class Supervisor:
    """Runs actors in one task group and restarts them (from their last state) on crash."""

    def __init__(self, task_group: TaskGroup, on_crash: Callable[[Actor, BaseException], None] | None = None):
        self._tg = task_group
        self._on_crash = on_crash
        self.actors: dict[str, Actor] = {}

    def spawn(self, actor: Actor) -> Actor:
        if actor.name in self.actors:
            raise ValueError(f"actor {actor.name} already running")
        self.actors[actor.name] = actor
        self._tg.start_soon(self._run, actor, name=f"actor:{actor.name}")
        return actor

    async def _run(self, actor: Actor) -> None:
        async with actor._recv:
            async for message in actor._recv:
                try:
                    actor.drain_feed()
                    if not isinstance(message, Wake):
                        await actor.handle(message)
                    actor.processed += 1
                except (Refusal, StorageUnavailable) as exc:  # an answer for the asker, not a crash
                    reply = getattr(message, "reply", None)
                    if isinstance(reply, asyncio.Future) and not reply.done():
                        reply.set_exception(exc)
                except Exception as exc:  # restart from the last good state (see module doc)
                    actor.crashes += 1
                    log.error(
                        "actor_crashed_restarting",
                        actor=actor.name,
                        message=type(message).__name__,
                        error=repr(exc),
                        crashes=actor.crashes,
                    )
                    if self._on_crash is not None:
                        self._on_crash(actor, exc)
                    reply = getattr(message, "reply", None)
                    if isinstance(reply, asyncio.Future) and not reply.done():
                        reply.set_exception(exc)
            actor.drain_feed()

    def close_all(self) -> None:
        for actor in self.actors.values():
            actor.close()
