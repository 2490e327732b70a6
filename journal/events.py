"""The journal's vocabulary: every fact the system records, as versioned msgspec Structs.

Rules:
1. Events are named in the past tense and are never mutated once committed -- except by the
   two rewrites the product requires (erasure compaction, salt rotation), both in
   ``journal/store.py`` and both documented there.
2. Every event type has a ``KIND`` (stable small int, the ``kind`` column) and a ``VERSION``.
   Decoding an older version goes through an upcaster registered in ``UPCASTERS``; an unknown
   kind or a version newer than this code is an error, never silently skipped.
3. Pseudonyms are signed 64-bit ints (HMAC output). Raw user ids never reach this module.
4. Activity is journaled in batches, column-wise (``keys``/``days``/``ops`` as little-endian
   numpy-compatible bytes): one record per acknowledged request, one sequence number per event.
   This keeps the ingest and replay paths vectorised (no per-event Python object).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import msgspec
import numpy as np

# The vocabulary the records use, validated by msgspec when a record is decoded.
Metric = Literal["dau", "mau"]
MechanismName = Literal["gaussian", "laplace", "sqrt", "tree"]
CounterKind = Literal["sqrt", "tree"]
SketchImpl = Literal["set", "theta", "hllpp"]
ChargePurpose = Literal["release", "revision", "counter_run"]
AccountingMechanism = Literal["discrete_gaussian", "discrete_laplace", "gaussian_counter"]
TokenScheme = Literal["hmac", "prp64"]

OP_WITHDRAW = 0  # '-': the user is not active that day (as far as this event is concerned)
OP_RECORD = 1  # '+': the user is active that day


class Event(msgspec.Struct, frozen=True, kw_only=True):
    KIND: ClassVar[int]
    VERSION: ClassVar[int] = 1

    @property
    def size(self) -> int:
        """How many sequence numbers this record occupies."""
        return 1


class ActivityBatchRecorded(Event, frozen=True, kw_only=True):
    """One acknowledged ``POST /event``: n events, in request order."""

    KIND: ClassVar[int] = 1
    keys: bytes  # int64 LE pseudonyms
    days: bytes  # int32 LE days since 1970-01-01
    ops: bytes  # uint8: OP_RECORD / OP_WITHDRAW
    received_at: float
    metadata: list[tuple[int, bytes]] = []  # (index in batch, raw JSON object) for events that had one
    idempotency_key: str | None = None
    request_digest: bytes | None = None  # sha256 of the canonical batch, to detect key reuse

    @property
    def size(self) -> int:
        return len(self.ops)

    def key_array(self) -> np.ndarray:
        return np.frombuffer(self.keys, dtype="<i8")

    def day_array(self) -> np.ndarray:
        return np.frombuffer(self.days, dtype="<i4")

    def op_array(self) -> np.ndarray:
        return np.frombuffer(self.ops, dtype=np.uint8)

    @classmethod
    def from_arrays(cls, keys: np.ndarray, days: np.ndarray, ops: np.ndarray, **fields: Any) -> ActivityBatchRecorded:
        return cls(
            keys=np.ascontiguousarray(keys, dtype="<i8").tobytes(),
            days=np.ascontiguousarray(days, dtype="<i4").tobytes(),
            ops=np.ascontiguousarray(ops, dtype=np.uint8).tobytes(),
            **fields,
        )


def batch_without(
    batch: ActivityBatchRecorded, keep: np.ndarray, *, keep_digest: bool = False
) -> ActivityBatchRecorded:
    """The batch restricted to ``keep``; metadata indices follow their events. The request digest
    is dropped unless asked for: a digest over the old batch would still depend on the removed
    users (a purge); a partition's view of a batch keeps it (nothing was removed from the store)."""
    new_index = np.cumsum(keep) - 1
    metadata = [(int(new_index[i]), raw) for i, raw in batch.metadata if keep[i]]
    return ActivityBatchRecorded.from_arrays(
        batch.key_array()[keep],
        batch.day_array()[keep],
        batch.op_array()[keep],
        received_at=batch.received_at,
        metadata=metadata,
        idempotency_key=batch.idempotency_key,
        request_digest=batch.request_digest if keep_digest else None,
    )


class UserErased(Event, frozen=True, kw_only=True):
    """Tombstone: the user is removed from every day's state from this point of the journal.

    After compaction ``key`` is None (the audit keeps no identifier). What the continual
    counters still need about the user survives without it: ``counter_exits`` (per run, the
    anonymous exit flip this erasure owed) and ``blocked_tokens`` (per run still in progress, the
    keyed hash that keeps the user from re-entering that run; its key is shredded when the run
    ends, see ``flippancy`` rule 3).
    """

    KIND: ClassVar[int] = 2
    erasure_id: str
    key: int | None
    requested_at: float
    counter_exits: dict[str, int] = {}
    blocked_tokens: dict[str, int] = {}


class ErasurePurged(Event, frozen=True, kw_only=True):
    """Audit record: the user's events are physically gone from journal, index and snapshots."""

    KIND: ClassVar[int] = 3
    erasure_id: str
    requested_at: float
    purged_at: float
    events_removed: int


class BudgetCharged(Event, frozen=True, kw_only=True):
    """One DP event, charged to every accounting period whose days the release reads. Written in
    the same transaction as the release (or counter run) it pays for.

    Version 2 added ``periods``. A version-1 record was charged to ``accounting_period`` only;
    its upcast says so (``periods_complete=False``) and the ledger completes ``periods`` from the
    ``Released``/``CounterStarted`` record that follows it (``actors/state/ledger.py``).
    """

    KIND: ClassVar[int] = 4
    VERSION: ClassVar[int] = 2
    charge_id: str
    metric: Metric
    accounting_period: str  # the period the release is about (its last day's), e.g. "2026-11"
    periods: list[str]  # every period whose days it reads, in order (accounting_period included)
    periods_complete: bool = True  # False only for an upcast version-1 record (see above)
    mechanism: AccountingMechanism  # how actors.privacy.accounting composes it
    parameter: float
    sensitivity: float
    epsilon: float  # this charge alone, at ``delta`` (informational; composition is recomputed)
    delta: float
    charged_at: float
    purpose: ChargePurpose


class NoiseParams(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Public description of the noise (never the noise itself)."""

    distribution: str  # "discrete_gaussian" | "discrete_laplace" | "lattice_gaussian_counter"
    sigma: float | None = None
    scale: float | None = None
    sensitivity: float = 1.0
    noise_multiplier: float | None = None
    counter: str | None = None  # "sqrt" | "tree"
    horizon_days: int | None = None
    flip_bound: int | None = None
    lattice_bits: int | None = None
    step: int | None = None
    sensitivity_exact: bool | None = None


RELEASE_FORMAT = 2  # ``Released.VERSION``: what a release's ``version`` says when EXPERIMENT_ID is unset


class Released(Event, frozen=True, kw_only=True):
    """An immutable published number. Journaled before any response carries it.

    Version 2 added ``scheduled_lag``, ``experiment_id`` and ``format_version`` (all defaulted, so
    a version-1 record upcasts to "format 1, not scheduled, no experiment id")."""

    KIND: ClassVar[int] = 5
    VERSION: ClassVar[int] = RELEASE_FORMAT
    release_id: str
    metric: Metric
    day: int | None = None  # DAU: the day
    end: int | None = None  # MAU: last day of the window
    window: int | None = None
    revision: int = 0
    estimate: int
    lower_95: int
    upper_95: int
    mechanism: MechanismName
    noise: NoiseParams
    epsilon_used: float
    delta: float
    charge_id: str
    accounting_period: str
    sketch_impl: SketchImpl
    guarantee: str
    budget_remaining: float  # least epsilon left under any cap it was checked against, right after it
    seen_seq: int  # journal position of the data it reflects (internal; never in a response)
    released_at: float
    # None: made on request (or an admin revision); 0: the schedule's first publication of the
    # period; L > 0: the schedule's revision at lag L days (REVISION_LAGS_DAYS).
    scheduled_lag: int | None = None
    experiment_id: str | None = None  # EXPERIMENT_ID when the release was made
    format_version: int = 1  # the Released.VERSION it was made with (1 = before this field existed)


class CounterStarted(Event, frozen=True, kw_only=True):
    """A continual-counter run for (metric, accounting period): plan and its secret noise."""

    KIND: ClassVar[int] = 6
    run_id: str
    metric: Metric
    accounting_period: str
    first_day: int
    horizon: int
    window: int
    kind: CounterKind
    flip_bound: int
    noise_multiplier: float
    sensitivity: float
    sensitivity_exact: bool
    sigma: float
    lattice_bits: int
    noise: list[int]  # lattice units; secret, never part of any response
    token_secret: bytes = b""  # keys the run's blocked-user tokens; emptied (shredded) at run end
    # How tokens are made (actors/privacy/flippancy.py): "prp64" = a keyed permutation of the key,
    # which a salt rotation can re-key; records written before it existed used "hmac" (one-way).
    token_scheme: TokenScheme = "hmac"
    epsilon: float
    charge_id: str
    budget_remaining: float
    started_at: float


class CounterStepped(Event, frozen=True, kw_only=True):
    """Day ``t`` of a counter run: the change of the counted total and who flipped."""

    KIND: ClassVar[int] = 7
    run_id: str
    t: int  # 1-based
    day: int
    z: int
    exits_consumed: int  # anonymous exits (erasures) folded into z
    entered: bytes  # sorted int64 LE keys that flipped 0 -> 1
    left: bytes  # sorted int64 LE keys that flipped 1 -> 0
    frozen: int  # users whose membership changed but who had no flips left (internal, eval only)


class SaltRotated(Event, frozen=True, kw_only=True):
    """Every stored pseudonym k was re-keyed to HMAC(new secret, k) in this transaction."""

    KIND: ClassVar[int] = 8
    key_version: int
    rotated_at: float


class ReleaseStartRecorded(Event, frozen=True, kw_only=True):
    """The day the publication schedule starts by default: the day (in ``TIMEZONE``) of the
    service's first start with ``RELEASE_SCHEDULE=daily``. Recorded once, never derived from the
    data (whose first day is itself private); ``RELEASE_START`` overrides it."""

    KIND: ClassVar[int] = 9
    release_start: int  # days since 1970-01-01
    timezone: str
    recorded_at: float


class ReleaseRefused(Event, frozen=True, kw_only=True):
    """A scheduled publication the budget could not afford. Recorded (so the series and the
    metrics show it) and never retried by the schedule; nothing was drawn or charged."""

    KIND: ClassVar[int] = 10
    refusal_id: str
    metric: Metric
    day: int  # DAU day or MAU window end
    window: int  # 1 for DAU
    lag: int  # the slot: 0 = first publication, L = revision at lag L days
    accounting_period: str | None  # the period whose cap refused it (None: the lifetime limit)
    reason: str  # "budget_exhausted"
    epsilon_spent: float
    epsilon_cap: float
    refused_at: float
    cap_name: str = ""  # which cap: PERIOD_BUDGET_TOTAL, DAU_BUDGET_TOTAL, ..., USER_EPSILON_LIMIT


class CutMarked(Event, frozen=True, kw_only=True):
    """A release coordinator's consistent cut over the shards (``actors/system/cuts.py``): every
    shard reads the named days' memberships exactly at this record's position -- after every
    record before it, before every record after it -- and keeps them for the coordinator to
    count. It holds no pseudonym and no count; replay ignores it."""

    KIND: ClassVar[int] = 11
    cut_id: str
    first_day: int
    last_day: int
    marked_at: float


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """An event as the journal holds it: its first and last sequence number (rule 4)."""

    seq: int
    last_seq: int
    event: Event


EVENT_TYPES: dict[int, type[Event]] = {
    cls.KIND: cls
    for cls in (
        ActivityBatchRecorded,
        UserErased,
        ErasurePurged,
        BudgetCharged,
        Released,
        CounterStarted,
        CounterStepped,
        SaltRotated,
        ReleaseStartRecorded,
        ReleaseRefused,
        CutMarked,
    )
}


def _budget_charged_v1(payload: dict[str, Any]) -> BudgetCharged:
    """Version 1 charged a release to the period of its last day only."""
    return msgspec.convert(
        {**payload, "periods": [payload["accounting_period"]], "periods_complete": False}, BudgetCharged
    )


def _released_v1(old: dict[str, Any]) -> Released:
    """Version 1 lacked the schedule/version fields; their defaults say exactly that."""
    return msgspec.convert(old, Released)


# (kind, stored version) -> function from the decoded-as-dict old payload to the current Struct.
# The day a field changes, bump VERSION and register the upcaster here; replay of old journals
# then keeps working.
UPCASTERS: dict[tuple[int, int], Any] = {
    (BudgetCharged.KIND, 1): _budget_charged_v1,
    (Released.KIND, 1): _released_v1,
}

_encoder = msgspec.msgpack.Encoder()
_decoders = {kind: msgspec.msgpack.Decoder(cls) for kind, cls in EVENT_TYPES.items()}


class UnknownEvent(ValueError):
    """A stored record this code cannot interpret (newer version or unknown kind)."""


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(kind: int, version: int, payload: bytes) -> Event:
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise UnknownEvent(f"unknown event kind {kind}")
    if version == cls.VERSION:
        decoded: Event = _decoders[kind].decode(payload)
        return decoded
    upcast = UPCASTERS.get((kind, version))
    if upcast is None:
        raise UnknownEvent(f"{cls.__name__} version {version} (this code knows {cls.VERSION})")
    upcasted: Event = upcast(msgspec.msgpack.decode(payload))
    return upcasted
