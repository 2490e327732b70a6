"""The wire format: request and response Structs, decoded and validated once, at the edge.

Rules:
1. Requests are decoded by msgspec into Structs in one pass; a failure becomes a 4xx whose
   ``detail`` is msgspec's message, which names the field (``$.events[3].day``).
2. Responses are encoded from Structs too, so ``/openapi.json`` (generated from these same
   Structs) cannot drift from what the server sends.
3. A release response never carries the exact count, the noise, or the journal position
   (``seen_seq``): the count is derivable from estimate and noise, and the position reveals the
   non-private number of events ingested.
4. A release's ``version`` is ``EXPERIMENT_ID`` when it was set at release time, otherwise the
   release format version (``Released.VERSION`` when it was made, e.g. ``"2"``);
   ``version_of`` says which.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from actors.state import periods
from actors.state.erasure_book import ErasureReceipt
from journal.events import MechanismName, Metric, NoiseParams, Released, ReleaseRefused, SketchImpl

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
    # JSON Schema's "integer" is any number without a fraction (118.0 included); msgspec's int is
    # strict, so an integral float is taken here and checked by the handler.
    window: Annotated[int, Meta(ge=1)] | Annotated[float, Meta(ge=1)] | None = None


class IngestOut(msgspec.Struct):
    """The count the client sent and an opaque receipt (the same on an idempotent replay). Never
    a journal position: positions count every event ever ingested, exactly."""

    ingested: int
    receipt: str


class ReadyOut(msgspec.Struct, omit_defaults=True):
    """Readiness; the details only for the admin scope. ``journal_seq`` is exact (it counts every
    event ever ingested), which is why no other scope ever sees it."""

    ready: bool
    journal_seq: int | None = None
    replaying: bool | None = None
    writer_failed: str | None = None
    boot_failed: str | None = None
    restored_from_snapshot: bool | None = None


class ErrorOut(msgspec.Struct, omit_defaults=True):
    error: str
    detail: str
    field: str | None = None


class NotClosedOut(msgspec.Struct, forbid_unknown_fields=True):
    """409 ``period_not_closed``: the day the release is about (DAU: the day; MAU: the window's
    last day) has not closed yet. Nothing was released, drawn or charged."""

    error: Literal["period_not_closed"]
    detail: Annotated[str, Meta(description="What was refused and why, in words")]
    closes_at: Annotated[
        str,
        Meta(
            description="The instant (RFC 3339, in UTC) after which the day counts as over: the midnight "
            "that ends it in TIMEZONE plus LATENESS_HOURS. From then on the release can be requested (it is "
            "created and charged on its first request, if every period it reads can afford it).",
            extra_json_schema={"format": "date-time"},
        ),
    ]


IsoDay = Annotated[str, Meta(extra_json_schema={"format": "date"})]  # YYYY-MM-DD
CapName = Literal["PERIOD_BUDGET_TOTAL", "DAU_BUDGET_TOTAL", "MAU_BUDGET_TOTAL", "USER_EPSILON_LIMIT"]


class BudgetRefusedOut(msgspec.Struct, forbid_unknown_fields=True):
    """429 ``budget_exhausted``: the release would push a cap past its limit, so it was refused
    before any noise was drawn; nothing was charged. Every epsilon is at ``DELTA``, composed
    tightly (PLD) over everything charged, never a sum."""

    # gateway/errors.py builds the body through this Struct (msgspec.convert), so the body and the
    # document cannot drift; the field order is the wire order.

    error: Literal["budget_exhausted"]
    detail: Annotated[str, Meta(description="What was refused and why, in words")]
    metric: Annotated[Metric, Meta(description="The metric of the refused release")]
    accounting_period: Annotated[
        str | None,
        Meta(
            description="The accounting period (its label, e.g. 2025-01) whose cap refused the release: one of "
            "the periods whose days the release reads. Null when the lifetime USER_EPSILON_LIMIT refused it "
            "(a bound over all periods together)."
        ),
    ]
    cap: Annotated[
        CapName,
        Meta(
            description="The setting that refused it: PERIOD_BUDGET_TOTAL (everything charged to the period), "
            "DAU_BUDGET_TOTAL or MAU_BUDGET_TOTAL (that metric's share of the period), USER_EPSILON_LIMIT "
            "(everything charged to every period, the lifetime bound)"
        ),
    ]
    epsilon_spent: Annotated[
        float, Meta(description="The composition of everything already charged against that cap, before this release")
    ]
    epsilon_after_release: Annotated[
        float, Meta(description="What that composition would reach with this release: above epsilon_cap")
    ]
    epsilon_cap: Annotated[float, Meta(description="The cap's value (the setting named by cap)")]
    next_reset: Annotated[
        IsoDay | None,
        Meta(
            description="The first day after the refused accounting period: days from it on belong to later "
            "periods, each charged to its own fresh budget. The refused period's budget never comes back, so a "
            "release that reads any of its days (this one, or a MAU window reaching back into it) stays refused "
            "however long you wait; this day can be in the past. Null when USER_EPSILON_LIMIT refused it "
            "(nothing resets that)."
        ),
    ]


VersionOf = Literal["experiment_id", "release_format"]


class ReleaseOut(msgspec.Struct, omit_defaults=True):
    metric: Metric
    estimate: int
    lower_95: int
    upper_95: int
    epsilon_used: float
    delta: float
    mechanism: MechanismName
    noise: NoiseParams
    sketch_impl: SketchImpl
    budget_remaining: float
    accounting_period: str
    guarantee: str
    revision: int
    release_id: str
    charge_id: str
    released_at: str
    version: str  # rule 4
    version_of: VersionOf
    day: str  # DAU: the day; MAU: the window's last day (= ``end``)
    end: str | None = None
    window: int | None = None
    scheduled_lag: int | None = None  # published by the schedule: 0 first, L = revision at lag L days


class ReleasePage(msgspec.Struct):
    releases: list[ReleaseOut]
    total: int
    offset: int
    limit: int


class ErasureOut(msgspec.Struct):
    """The receipt: the same fields and values for a user who existed and one who never did (how
    much was removed is in the admin-only audit log)."""

    erasure_id: str
    status: Literal["pending", "applied", "purged"]
    requested_at: str
    purged_at: str | None


class ErasureAuditOut(msgspec.Struct):
    erasure_id: str
    status: Literal["pending", "applied", "purged"]
    requested_at: str
    purged_at: str | None
    events_removed: int | None


class ErasureAuditPage(msgspec.Struct):
    erasures: list[ErasureAuditOut]
    total: int
    offset: int
    limit: int


def iso_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def version_of(r: Released) -> tuple[str, VersionOf]:
    if r.experiment_id is not None:
        return r.experiment_id, "experiment_id"
    return str(r.format_version), "release_format"


def period_day(r: Released) -> int:
    day = r.day if r.metric == "dau" else r.end
    assert day is not None
    return day


def release_out(r: Released) -> ReleaseOut:
    version, of = version_of(r)
    return ReleaseOut(
        metric=r.metric,
        day=periods.iso(period_day(r)),
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
        version=version,
        version_of=of,
        scheduled_lag=r.scheduled_lag,
    )


class SeriesPoint(msgspec.Struct):
    """One day of a published series: its latest release, or the refusal of its publication.
    Fields a refused day does not have are null."""

    day: str  # DAU: the day; MAU: the window's last day
    status: Literal["released", "refused"]
    estimate: int | None
    lower_95: int | None
    upper_95: int | None
    revision: int | None  # 0 first publication, n = n-th revision (fresh noise, charged)
    epsilon_used: float | None
    delta: float | None
    mechanism: str | None
    sketch_impl: str | None
    budget_remaining: float | None
    accounting_period: str | None  # a refusal by the lifetime limit names no period
    version: str | None
    version_of: VersionOf | None
    released_at: str | None
    release_id: str | None
    refused_at: str | None  # a refused scheduled publication: when, why, and which cap
    refusal_reason: str | None
    refusal_cap: str | None


SERIES_COLUMNS = list(SeriesPoint.__struct_fields__)


class SeriesPage(msgspec.Struct):
    metric: Literal["dau", "mau"]
    window: int
    points: list[SeriesPoint]
    total: int  # points in [from, to] (all pages)
    offset: int
    limit: int
    first_day: str | None  # the range asked for (null: open)
    last_day: str | None


def series_point(day: int, r: Released | ReleaseRefused) -> SeriesPoint:
    if isinstance(r, ReleaseRefused):
        return SeriesPoint(
            periods.iso(day), "refused", None, None, None, None, None, None, None, None, None,
            r.accounting_period, None, None, None, None, iso_time(r.refused_at), r.reason, r.cap_name or None,
        )  # fmt: skip
    version, of = version_of(r)
    return SeriesPoint(
        periods.iso(day),
        "released",
        r.estimate,
        r.lower_95,
        r.upper_95,
        r.revision,
        r.epsilon_used,
        r.delta,
        r.mechanism,
        r.sketch_impl,
        r.budget_remaining,
        r.accounting_period,
        version,
        of,
        iso_time(r.released_at),
        r.release_id,
        None,
        None,
        None,
    )


class ReleaseConfigOut(msgspec.Struct):
    """The configuration every release depends on. Public: none of it depends on the data."""

    dau_mechanism: str
    mau_mechanism: str
    epsilon_dau: float
    epsilon_mau: float
    delta: float
    period_budget_total: float  # the per-period cap over everything charged to the period
    dau_budget_total: float  # sub-caps
    mau_budget_total: float
    user_epsilon_limit: float | None  # optional lifetime bound
    w_bound: int
    mau_window_days: int
    privacy_period: str
    timezone: str
    lateness_hours: float
    sketch_impl: str
    release_schedule: Literal["daily", "on-demand"]
    release_start: str | None  # first day the schedule publishes
    release_start_source: Literal["RELEASE_START", "first_start"] | None
    revision_lags_days: list[int]
    version: str  # what a release made now would say
    version_of: VersionOf
    refused: dict[str, int]  # scheduled publications refused so far, per metric
    scheduled: dict[str, int]  # scheduled publications made so far, per metric


class ErasureSummaryOut(msgspec.Struct):
    """Admin only: erasure receipts by status. Exact counts -- not a release."""

    pending: int
    applied: int
    purged: int


def erasure_out(receipt: ErasureReceipt) -> ErasureOut:
    return ErasureOut(
        erasure_id=receipt.erasure_id,
        status=receipt.status,
        requested_at=iso_time(receipt.requested_at) or "",
        purged_at=iso_time(receipt.purged_at),
    )


def erasure_audit_out(receipt: ErasureReceipt) -> ErasureAuditOut:
    return ErasureAuditOut(
        erasure_id=receipt.erasure_id,
        status=receipt.status,
        requested_at=iso_time(receipt.requested_at) or "",
        purged_at=iso_time(receipt.purged_at),
        events_removed=receipt.events_removed,
    )
