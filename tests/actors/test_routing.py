"""The one routing table: every journal record type has a route, and replay and the live router
both handle every destination (``actors/state/routing.py``). That they route *the same way* is
the replay property test (live == replay)."""

from __future__ import annotations

from typing import ClassVar

import pytest

from actors.state import routing
from actors.state.idempotency import IdempotencyIndex
from actors.state.world import World
from actors.system.router import Router
from journal import events as ev
from journal.events import StoredRecord


def test_every_event_type_has_a_route_to_known_destinations():
    assert set(routing.ROUTES) == set(ev.EVENT_TYPES.values())
    for event_type, dests in routing.ROUTES.items():
        assert set(dests) <= set(routing.DESTINATIONS), event_type
        assert len(set(dests)) == len(dests), event_type


def test_replay_handles_every_destination():
    assert set(World().handlers) == set(routing.DESTINATIONS)


class _Nobody:
    def push_feed(self, item: object) -> None:
        raise AssertionError("nothing should be fed")


def _router() -> Router:
    return Router(
        spawn_day=lambda *a: pytest.fail("no day"),
        ingest=IdempotencyIndex(10),
        release=_Nobody(),  # type: ignore[arg-type]
        accountant=_Nobody(),  # type: ignore[arg-type]
        erasure=_Nobody(),  # type: ignore[arg-type]
        dispatched_seq=0,
    )


def test_the_live_router_handles_every_destination():
    assert set(_router()._handlers) == set(routing.DESTINATIONS)


class _Unknown(ev.Event, frozen=True, kw_only=True):
    KIND: ClassVar[int] = 999


def test_a_record_without_a_route_is_an_error_not_dropped():
    with pytest.raises(routing.Unrouted, match="_Unknown"):
        World().apply(StoredRecord(1, 1, _Unknown()))


async def test_the_live_router_refuses_a_record_without_a_route_too():
    with pytest.raises(routing.Unrouted, match="_Unknown"):
        await _router().dispatch([StoredRecord(1, 1, _Unknown())])
