"""Which state each journal record changes: the one routing table of the system. Pure data.

Rules:
1. ``ROUTES`` maps every event type of ``journal.events.EVENT_TYPES`` to the destinations whose
   state it changes. Replay (``World.apply``) and the live router (``Router.dispatch``) both read
   this table and nothing else to decide where a record goes; each has one handler per
   ``Destination``. The property tests hold live == replay, and ``tests/actors/test_routing.py``
   holds that every event type has a route and both sides handle every destination.
2. A destination decides what a record *means* to it (the days turn activity into memberships and
   an erasure into a ``-`` on every day); the table decides only *who sees it*, in journal order.
3. A new event type is one line here (plus, for a new destination, one handler in ``World`` and
   one in ``Router``). A record with no route is an error, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

from journal import events as ev

Destination = Literal[
    "days",  # the per-day memberships (day actors live; ``World.days`` in replay)
    "ingest",  # the idempotency index
    "releases",  # the release book (release actor's feed)
    "ledger",  # the budget ledger (accountant's feed)
    "erasures",  # the erasure book (erasure actor's feed)
    "cuts",  # a shard's consistent cuts (live only: replay has no coordinator waiting for them)
]
DESTINATIONS: tuple[Destination, ...] = get_args(Destination)

ROUTES: Mapping[type[ev.Event], tuple[Destination, ...]] = {
    ev.ActivityBatchRecorded: ("ingest", "days"),
    ev.UserErased: ("days", "releases", "erasures"),
    # a purge also makes the idempotency index forget its digests (idempotency rule 5)
    ev.ErasurePurged: ("erasures", "ingest"),
    ev.BudgetCharged: ("ledger",),
    # releases and run starts also complete version-1 charges in the ledger (ledger rule 3)
    ev.Released: ("releases", "ledger"),
    ev.CounterStarted: ("releases", "ledger"),
    ev.CounterStepped: ("releases",),
    ev.SaltRotated: (),
    ev.CutMarked: ("cuts",),  # the keys were rewritten in place; no derived state records the version
    ev.ReleaseStartRecorded: ("releases",),  # the schedule's start (release book rule 4)
    ev.ReleaseRefused: ("releases",),  # a refused scheduled publication (release book rule 4)
}


class Unrouted(LookupError):
    """A journal record whose type has no entry in ``ROUTES`` (rule 3)."""


def destinations(event: ev.Event) -> tuple[Destination, ...]:
    try:
        return ROUTES[type(event)]
    except KeyError:
        raise Unrouted(f"no route for {type(event).__name__}: add it to actors/state/routing.py") from None
