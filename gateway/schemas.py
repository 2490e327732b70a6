"""The wire format: request and response Structs, decoded and validated once, at the edge.

Rules:
1. Requests are decoded by msgspec into Structs in one pass; a failure becomes a 4xx whose
   ``detail`` is msgspec's message, which names the field (``$.events[3].day``).
2. Responses are encoded from Structs too, so ``/openapi.json`` (generated from these same
   Structs) cannot drift from what the server sends.
3. A release response never carries the exact count, the noise, or the journal position
   (``seen_seq``): the count is derivable from estimate and noise, and the position reveals the
   non-private number of events ingested.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from actors.state import periods
from actors.state.erasure_book import ErasureReceipt
from journal.events import NoiseParams, Released

UserId = Annotated[
    str, Meta(min_length=1, max_length=256, description="Your user id; pseudonymised at the gateway, never stored")
]


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    user_id: UserId
    op: Literal["+", "-"]
    day: dt.date
    metadata: dict[str, Any] | None = None  # free-form; stored with the event, purged with the user


class BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    events: list[EventIn]


class ErasureIn(msgspec.Struct, forbid_unknown_fields=True):
    user_id: UserId


class ReviseIn(msgspec.Struct, forbid_unknown_fields=True):
    metric: Literal["dau", "mau"]
    day: dt.date | None = None
    end: dt.date | None = None
    window: Annotated[int, Meta(ge=1)] | None = None


class IngestOut(msgspec.Struct):
    ingested: int
    first_seq: int
    last_seq: int


class ErrorOut(msgspec.Struct, omit_defaults=True):
    error: str
    detail: str
    field: str | None = None


class ReleaseOut(msgspec.Struct, omit_defaults=True):
    metric: str
    estimate: int
    lower_95: int
    upper_95: int
    epsilon_used: float
    delta: float
    mechanism: str
    noise: NoiseParams
    sketch_impl: str
    budget_remaining: float
    accounting_period: str
    guarantee: str
    revision: int
    release_id: str
    charge_id: str
    released_at: str
    version: int = 1
    day: str | None = None
    end: str | None = None
    window: int | None = None


class ReleasePage(msgspec.Struct):
    releases: list[ReleaseOut]
    total: int
    offset: int
    limit: int


class ErasureOut(msgspec.Struct):
    erasure_id: str
    status: Literal["pending", "applied", "purged"]
    requested_at: str
    purged_at: str | None
    events_removed: int | None


def iso_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def release_out(r: Released) -> ReleaseOut:
    return ReleaseOut(
        metric=r.metric,
        day=periods.iso(r.day) if r.day is not None else None,
        end=periods.iso(r.end) if r.end is not None else None,
        window=r.window,
        estimate=r.estimate,
        lower_95=r.lower_95,
        upper_95=r.upper_95,
        epsilon_used=r.epsilon_used,
        delta=r.delta,
        mechanism=r.mechanism,
        noise=r.noise,
        sketch_impl=r.sketch_impl,
        budget_remaining=r.budget_remaining,
        accounting_period=r.accounting_period,
        guarantee=r.guarantee,
        revision=r.revision,
        release_id=r.release_id,
        charge_id=r.charge_id,
        released_at=iso_time(r.released_at) or "",
    )


def erasure_out(receipt: ErasureReceipt) -> ErasureOut:
    return ErasureOut(
        erasure_id=receipt.erasure_id,
        status=receipt.status,
        requested_at=iso_time(receipt.requested_at) or "",
        purged_at=iso_time(receipt.purged_at),
        events_removed=receipt.events_removed,
    )
