"""journal/events.py: versioned, kind-tagged records that round-trip exactly (rules 2 and 4)."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journal import events as ev
from tests.journal.helpers import batch

INT64 = st.integers(-(2**63), 2**63 - 1)
FLOATS = st.floats(allow_nan=False)
TEXT = st.text(max_size=20)
SMALL = st.integers(-(2**31), 2**31 - 1)


@st.composite
def activity_batches(draw) -> ev.ActivityBatchRecorded:
    n = draw(st.integers(0, 40))
    keys = draw(st.lists(INT64, min_size=n, max_size=n))
    days = draw(st.lists(SMALL, min_size=n, max_size=n))
    ops = draw(st.lists(st.sampled_from([ev.OP_WITHDRAW, ev.OP_RECORD]), min_size=n, max_size=n))
    idx = draw(st.lists(st.integers(0, max(n - 1, 0)), unique=True, max_size=n)) if n else []
    metadata = [(i, draw(st.binary(max_size=30))) for i in sorted(idx)]
    return ev.ActivityBatchRecorded.from_arrays(
        np.array(keys, dtype=np.int64),
        np.array(days, dtype=np.int64),
        np.array(ops, dtype=np.uint8),
        received_at=draw(FLOATS),
        metadata=metadata,
        idempotency_key=draw(st.none() | TEXT),
        request_digest=draw(st.none() | st.binary(min_size=32, max_size=32)),
    )


NOISE = st.builds(
    ev.NoiseParams,
    distribution=st.sampled_from(["discrete_gaussian", "discrete_laplace", "lattice_gaussian_counter"]),
    sigma=st.none() | FLOATS,
    scale=st.none() | FLOATS,
    sensitivity=FLOATS,
    noise_multiplier=st.none() | FLOATS,
    counter=st.none() | st.sampled_from(["sqrt", "tree"]),
    horizon_days=st.none() | SMALL,
    flip_bound=st.none() | SMALL,
    lattice_bits=st.none() | SMALL,
    step=st.none() | SMALL,
    sensitivity_exact=st.none() | st.booleans(),
)

EVENTS = {
    ev.ActivityBatchRecorded: activity_batches(),
    ev.UserErased: st.builds(
        ev.UserErased,
        erasure_id=TEXT,
        key=st.none() | INT64,
        requested_at=FLOATS,
        counter_exits=st.dictionaries(TEXT, SMALL, max_size=4),
    ),
    ev.ErasurePurged: st.builds(
        ev.ErasurePurged, erasure_id=TEXT, requested_at=FLOATS, purged_at=FLOATS, events_removed=SMALL
    ),
    ev.BudgetCharged: st.builds(
        ev.BudgetCharged,
        charge_id=TEXT,
        metric=st.sampled_from(["dau", "mau"]),
        accounting_period=TEXT,
        periods=st.lists(TEXT, max_size=3),
        mechanism=st.sampled_from(["discrete_gaussian", "discrete_laplace", "gaussian_counter"]),
        parameter=FLOATS,
        sensitivity=FLOATS,
        epsilon=FLOATS,
        delta=FLOATS,
        charged_at=FLOATS,
        purpose=st.sampled_from(["release", "revision", "counter_run"]),
    ),
    ev.Released: st.builds(
        ev.Released,
        release_id=TEXT,
        metric=st.sampled_from(["dau", "mau"]),
        day=st.none() | SMALL,
        end=st.none() | SMALL,
        window=st.none() | SMALL,
        revision=SMALL,
        estimate=INT64,
        lower_95=INT64,
        upper_95=INT64,
        mechanism=st.sampled_from(["gaussian", "laplace", "sqrt", "tree"]),
        noise=NOISE,
        epsilon_used=FLOATS,
        delta=FLOATS,
        charge_id=TEXT,
        accounting_period=TEXT,
        sketch_impl=st.sampled_from(["set", "theta", "hllpp"]),
        guarantee=TEXT,
        budget_remaining=FLOATS,
        seen_seq=INT64,
        released_at=FLOATS,
        scheduled_lag=st.none() | SMALL,
        experiment_id=st.none() | TEXT,
        format_version=SMALL,
    ),
    ev.CounterStarted: st.builds(
        ev.CounterStarted,
        run_id=TEXT,
        metric=st.sampled_from(["dau", "mau"]),
        accounting_period=TEXT,
        first_day=SMALL,
        horizon=SMALL,
        window=SMALL,
        kind=st.sampled_from(["sqrt", "tree"]),
        flip_bound=SMALL,
        noise_multiplier=FLOATS,
        sensitivity=FLOATS,
        sensitivity_exact=st.booleans(),
        sigma=FLOATS,
        lattice_bits=SMALL,
        noise=st.lists(INT64, max_size=10),
        epsilon=FLOATS,
        charge_id=TEXT,
        budget_remaining=FLOATS,
        started_at=FLOATS,
    ),
    ev.CounterStepped: st.builds(
        ev.CounterStepped,
        run_id=TEXT,
        t=SMALL,
        day=SMALL,
        z=INT64,
        exits_consumed=SMALL,
        entered=st.lists(INT64, max_size=10).map(lambda ks: np.array(sorted(ks), dtype="<i8").tobytes()),
        left=st.lists(INT64, max_size=10).map(lambda ks: np.array(sorted(ks), dtype="<i8").tobytes()),
        frozen=SMALL,
    ),
    ev.SaltRotated: st.builds(ev.SaltRotated, key_version=SMALL, rotated_at=FLOATS),
    ev.ReleaseStartRecorded: st.builds(ev.ReleaseStartRecorded, release_start=SMALL, timezone=TEXT, recorded_at=FLOATS),
    ev.ReleaseRefused: st.builds(
        ev.ReleaseRefused,
        refusal_id=TEXT,
        metric=st.sampled_from(["dau", "mau"]),
        day=SMALL,
        window=SMALL,
        lag=SMALL,
        accounting_period=TEXT,
        reason=TEXT,
        epsilon_spent=FLOATS,
        epsilon_cap=FLOATS,
        refused_at=FLOATS,
        cap_name=TEXT,
    ),
    ev.CutMarked: st.builds(ev.CutMarked, cut_id=TEXT, first_day=SMALL, last_day=SMALL, marked_at=FLOATS),
}


def test_every_event_type_has_a_distinct_kind_and_a_strategy_here():
    assert set(EVENTS) == set(ev.EVENT_TYPES.values())
    kinds = [cls.KIND for cls in ev.EVENT_TYPES.values()]
    assert len(set(kinds)) == len(kinds)
    for kind, cls in ev.EVENT_TYPES.items():
        assert kind == cls.KIND
        assert isinstance(cls.VERSION, int) and cls.VERSION >= 1


@pytest.mark.parametrize("cls", list(EVENTS), ids=lambda c: c.__name__)
@settings(max_examples=60)
@given(data=st.data())
def test_encode_decode_round_trip(cls, data):
    event = data.draw(EVENTS[cls])
    decoded = ev.decode(cls.KIND, cls.VERSION, ev.encode(event))
    assert type(decoded) is cls
    assert decoded == event


def test_round_trip_preserves_metadata_tuples_and_bytes_exactly():
    b = batch([5, -6, 7], metadata=[(0, b'{"a":1}'), (2, b"{}")], idempotency_key="k", request_digest=b"\x01" * 32)
    out = ev.decode(b.KIND, b.VERSION, ev.encode(b))
    assert out.metadata == [(0, b'{"a":1}'), (2, b"{}")]
    assert out.key_array().tolist() == [5, -6, 7]
    assert out.request_digest == b"\x01" * 32


def test_decode_unknown_kind_raises():
    with pytest.raises(ev.UnknownEvent, match="unknown event kind"):
        ev.decode(max(ev.EVENT_TYPES) + 1, 1, ev.encode(ev.SaltRotated(key_version=1, rotated_at=0.0)))
    assert issubclass(ev.UnknownEvent, ValueError)


@pytest.mark.parametrize("cls", list(EVENTS), ids=lambda c: c.__name__)
def test_decode_newer_version_raises_never_skips(cls):
    payload = ev.encode(ev.SaltRotated(key_version=1, rotated_at=0.0))
    with pytest.raises(ev.UnknownEvent, match="version"):
        ev.decode(cls.KIND, cls.VERSION + 1, payload)


def test_decode_older_version_without_upcaster_raises():
    payload = ev.encode(ev.SaltRotated(key_version=1, rotated_at=0.0))
    with pytest.raises(ev.UnknownEvent):
        ev.decode(ev.SaltRotated.KIND, ev.SaltRotated.VERSION - 1, payload)


def test_registered_upcaster_is_used_for_an_old_version(monkeypatch):
    calls = []

    def upcast(old: dict) -> ev.SaltRotated:
        calls.append(old)
        return ev.SaltRotated(key_version=old["kv"], rotated_at=old["when"])

    old_version = ev.SaltRotated.VERSION - 1
    monkeypatch.setitem(ev.UPCASTERS, (ev.SaltRotated.KIND, old_version), upcast)
    payload = msgspec.msgpack.encode({"kv": 7, "when": 12.5})
    out = ev.decode(ev.SaltRotated.KIND, old_version, payload)
    assert out == ev.SaltRotated(key_version=7, rotated_at=12.5)
    assert calls == [{"kv": 7, "when": 12.5}]
    # the current version still goes through the typed decoder, not the upcaster
    cur = ev.SaltRotated(key_version=1, rotated_at=1.0)
    assert ev.decode(cur.KIND, cur.VERSION, ev.encode(cur)) == cur
    assert len(calls) == 1


def test_from_arrays_converts_dtypes_and_byte_order():
    keys = np.array([1, -2, 2**62], dtype=">i8")  # big-endian input must still be stored LE
    days = np.array([19000, 19001, 19002], dtype=np.int64)
    ops = [1, 0, 1]
    b = ev.ActivityBatchRecorded.from_arrays(keys, days, ops, received_at=3.0)
    assert b.keys == np.array([1, -2, 2**62], dtype="<i8").tobytes()
    assert b.days == np.array([19000, 19001, 19002], dtype="<i4").tobytes()
    assert b.ops == bytes([1, 0, 1])
    assert b.key_array().dtype == np.dtype("<i8")
    assert b.key_array().tolist() == [1, -2, 2**62]
    assert b.day_array().tolist() == [19000, 19001, 19002]
    assert b.op_array().tolist() == [1, 0, 1]
    assert b.size == 3
    assert b.metadata == [] and b.idempotency_key is None and b.request_digest is None


def test_from_arrays_on_non_contiguous_views():
    base = np.arange(10, dtype=np.int64)
    b = ev.ActivityBatchRecorded.from_arrays(base[::2], base[1::2], np.ones(5, dtype=np.uint8), received_at=0.0)
    assert b.key_array().tolist() == [0, 2, 4, 6, 8]
    assert b.day_array().tolist() == [1, 3, 5, 7, 9]


@given(st.lists(INT64, max_size=50))
def test_key_array_round_trips_any_int64(keys):
    b = ev.ActivityBatchRecorded.from_arrays(
        np.array(keys, dtype=np.int64), np.zeros(len(keys)), np.ones(len(keys)), received_at=0.0
    )
    assert b.key_array().tolist() == keys
    assert b.size == len(keys) == len(b.op_array()) == len(b.day_array())


@pytest.mark.parametrize("cls", [c for c in EVENTS if c is not ev.ActivityBatchRecorded], ids=lambda c: c.__name__)
@settings(max_examples=10)
@given(data=st.data())
def test_size_is_one_for_every_non_activity_event(cls, data):
    assert data.draw(EVENTS[cls]).size == 1


def test_activity_size_is_the_number_of_events():
    assert batch([]).size == 0
    assert batch([1, 2, 3, 4]).size == 4


def test_events_are_immutable():
    b = batch([1])
    with pytest.raises(AttributeError):
        b.keys = b""  # type: ignore[misc]
    e = ev.UserErased(erasure_id="x", key=1, requested_at=0.0)
    with pytest.raises(AttributeError):
        e.key = None  # type: ignore[misc]


def test_mutable_defaults_are_not_shared():
    a, b = batch([1]), batch([2])
    assert a.metadata is not b.metadata
    e1 = ev.UserErased(erasure_id="a", key=1, requested_at=0.0)
    e2 = ev.UserErased(erasure_id="b", key=2, requested_at=0.0)
    assert e1.counter_exits is not e2.counter_exits


def test_no_nan_sneaks_into_float_round_trip():
    # -0.0 and infinities survive msgpack exactly (the strategies above exclude only NaN)
    r = ev.ErasurePurged(erasure_id="e", requested_at=-0.0, purged_at=math.inf, events_removed=0)
    out = ev.decode(r.KIND, r.VERSION, ev.encode(r))
    assert math.copysign(1.0, out.requested_at) == -1.0 and out.purged_at == math.inf


def test_a_version_1_release_upcasts_to_format_1_unscheduled_without_experiment_id():
    """Released v1 (before the schedule) as stored by the old code: every v1 field, none of v2's."""
    v1 = {
        "release_id": "r1",
        "metric": "mau",
        "end": 20000,
        "window": 30,
        "revision": 0,
        "estimate": 120,
        "lower_95": 100,
        "upper_95": 140,
        "mechanism": "gaussian",
        "noise": {"distribution": "discrete_gaussian", "sigma": 8.06},
        "epsilon_used": 0.5,
        "delta": 1e-6,
        "charge_id": "c1",
        "accounting_period": "2024-10",
        "sketch_impl": "set",
        "guarantee": "g",
        "budget_remaining": 3.0,
        "seen_seq": 17,
        "released_at": 1.7e9,
    }
    out = ev.decode(ev.Released.KIND, 1, msgspec.msgpack.encode(v1))
    assert isinstance(out, ev.Released) and ev.Released.VERSION == ev.RELEASE_FORMAT == 2
    assert out.format_version == 1 and out.scheduled_lag is None and out.experiment_id is None
    assert out.end == 20000 and out.noise.sigma == 8.06 and out.estimate == 120
