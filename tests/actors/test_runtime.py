"""Supervision, bounded mailboxes, refusals, orderly drain."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import pytest

from actors.refusals import Refusal
from actors.runtime import Actor, Ask, MailboxFull, Supervisor


@dataclass(slots=True)
class Add(Ask):
    n: int = 0


@dataclass(slots=True)
class Poison(Ask):
    pass


@dataclass(slots=True)
class Say(Ask):
    pass


class No(Refusal):
    pass


class Counter(Actor):
    def __init__(self, capacity: int = 4) -> None:
        super().__init__("counter", capacity)
        self.state = 0
        self.fed: list[int] = []

    def apply_fed(self, item: int) -> None:
        self.fed.append(item)

    async def handle(self, message) -> None:
        if isinstance(message, Add):
            nxt = self.state + message.n  # pure: compute, then assign
            self.state = nxt
            message.reply.set_result(nxt)
        elif isinstance(message, Poison):
            _ = self.state + 1
            raise RuntimeError("boom")
        elif isinstance(message, Say):
            raise No("refused")


async def test_crash_is_logged_counted_and_the_actor_keeps_its_last_state():
    crashes = []
    async with anyio.create_task_group() as tg:
        sup = Supervisor(tg, on_crash=lambda a, e: crashes.append((a.name, repr(e))))
        actor = sup.spawn(Counter())
        assert await actor.ask(Add(n=5)) == 5
        with pytest.raises(RuntimeError, match="boom"):
            await actor.ask(Poison())
        assert await actor.ask(Add(n=1)) == 6  # restarted from the last good state
        with pytest.raises(No):
            await actor.ask(Say())
        assert actor.crashes == 1 and crashes == [("counter", "RuntimeError('boom')")]
        sup.close_all()


async def test_full_mailbox_refuses_instead_of_growing():
    async with anyio.create_task_group() as tg:
        sup = Supervisor(tg)
        actor = Counter(capacity=2)
        sup.actors[actor.name] = actor  # not started: nothing drains the mailbox
        actor.try_send(Add(n=1))
        actor.try_send(Add(n=1))
        with pytest.raises(MailboxFull) as info:
            actor.try_send(Add(n=1))
        assert info.value.retry_after >= 1 and actor.depth == 2
        tg.start_soon(sup._run, actor)
        actor.close()
    assert actor.state == 2  # close drains what was queued


async def test_feed_is_applied_in_order_before_each_message():
    async with anyio.create_task_group() as tg:
        sup = Supervisor(tg)
        actor = sup.spawn(Counter())
        for i in range(5):
            actor.push_feed(i)
        await actor.ask(Add(n=0))
        assert actor.fed == [0, 1, 2, 3, 4]
        sup.close_all()
