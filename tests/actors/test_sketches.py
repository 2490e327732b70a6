"""actors/sketches: every registered implementation honours the one interface.

The keys are fixed (a seeded generator) and the libraries hash deterministically, so the
statistical assertions below are reproducible, not flaky.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import sketches
from actors.settings import EngineSettings
from actors.state import membership
from journal.events import SketchImpl

IMPLS: tuple[SketchImpl, ...] = get_args(SketchImpl)
INEXACT = [impl for impl in IMPLS if not sketches.kind(impl, 12).exact]


def keys(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.unique(rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64))


def test_the_registry_is_keyed_by_the_journal_literal():
    assert tuple(sketches.SKETCHES) == IMPLS
    assert INEXACT == ["theta", "hllpp"]
    for impl in IMPLS:
        k = sketches.kind(impl, 12)
        assert k.impl == impl and k.lg_k == 12
        assert (k.guarantee is None) == k.exact  # only an exact kind keeps the mechanism's guarantee


def test_the_settings_build_the_configured_kind_and_refuse_a_bad_size():
    assert EngineSettings(sketch_impl="hllpp", sketch_lg_k=10).sketch.impl == "hllpp"
    with pytest.raises(ValueError, match=r"SKETCH_LG_K.*hllpp"):
        EngineSettings(sketch_impl="hllpp", sketch_lg_k=22)
    with pytest.raises(ValueError, match=r"SKETCH_LG_K.*theta"):
        EngineSettings(sketch_impl="theta", sketch_lg_k=4)
    with pytest.raises(ValueError, match="SKETCH_IMPL"):
        sketches.kind("hll", 12)  # type: ignore[arg-type]


@pytest.mark.parametrize("impl", IMPLS)
def test_serialize_round_trips(impl):
    kind = sketches.kind(impl, 10)
    for n in (0, 1, 500, 20_000):
        s = kind.build(keys(n))
        back = kind.deserialize(s.serialize())
        assert back.serialize() == s.serialize()
        assert back.estimate() == s.estimate() and back.bounds() == s.bounds()


@pytest.mark.parametrize("impl", IMPLS)
def test_small_counts_are_exact(impl):
    """Below its capacity every kind counts exactly: theta below k entries, HLL in its coupon
    (list/set) modes, which at lg_k 12 hold a few hundred members before going dense."""
    kind = sketches.kind(impl, 12)
    for n in (0, 1, 2, 100, 300):
        s = kind.build(keys(n, seed=n))
        assert round(s.estimate()) == n
        lower, upper = s.bounds()
        assert lower <= n <= upper


@pytest.mark.parametrize("impl", INEXACT)
@pytest.mark.parametrize("n", [30_000, 120_000])
def test_estimates_are_within_their_own_bounds(impl, n):
    kind = sketches.kind(impl, 10)
    s = kind.build(keys(n, seed=n))
    lower, upper = s.bounds()
    assert lower < n < upper and lower < s.estimate() < upper
    assert abs(s.estimate() - n) < 0.15 * n  # ~10 standard errors at lg_k 10


@pytest.mark.parametrize("impl", IMPLS)
def test_add_leaves_the_original_alone_and_equals_a_union(impl):
    kind = sketches.kind(impl, 10)
    a, b = keys(5000, 1), keys(7000, 2)
    base = kind.build(a)
    before = base.serialize()
    grown = base.add(b)
    assert base.serialize() == before  # immutable (interface rule 1)
    assert grown.serialize() == kind.union([kind.build(a), kind.build(b)]).serialize()
    lower, upper = grown.bounds()
    assert lower <= len(membership.union([a, b])) <= upper


@pytest.mark.parametrize("impl", IMPLS)
def test_union_ignores_order_and_duplicates(impl):
    kind = sketches.kind(impl, 10)
    days = [keys(3000, seed) for seed in range(5)]
    parts = [kind.build(d) for d in days]
    forward = kind.union(parts).estimate()
    assert kind.union(parts[::-1]).estimate() == pytest.approx(forward, rel=1e-12)
    assert kind.union(parts + parts[:2]).estimate() == pytest.approx(forward, rel=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_union_refuses_another_implementations_sketch(impl):
    other = next(i for i in IMPLS if i != impl)
    kind = sketches.kind(impl, 10)
    with pytest.raises(TypeError):
        kind.union([kind.build(keys(10)), sketches.kind(other, 10).build(keys(10))])


@settings(max_examples=60, deadline=None)
@given(
    days=st.lists(st.sets(st.integers(-(2**40), 2**40), max_size=60), min_size=1, max_size=6),
    impl=st.sampled_from(IMPLS),
    cached=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_summarize_is_the_union_of_the_days_sketches(days, impl, cached):
    kind = sketches.kind(impl, 10)
    arrays = [np.array(sorted(d), dtype=np.int64) for d in days]
    given_sketches = [kind.build(a) if c else None for a, c in zip(arrays, cached, strict=False)]
    s = sketches.summarize(arrays, kind, given_sketches)
    truth = set().union(*days)
    union = kind.union([kind.build(a) for a in arrays])
    assert s.estimate == pytest.approx(union.estimate(), rel=1e-12)
    assert s.lower <= s.estimate <= s.upper
    if kind.exact:
        assert s.exact == s.estimate == s.lower == s.upper == len(truth)
    else:
        assert s.exact is None  # a sketch release never builds the exact union (interface rule 4)


@settings(max_examples=60, deadline=None)
@given(
    days=st.lists(st.sets(st.integers(-50, 50), max_size=30), max_size=6),
    keys=st.sets(st.integers(-60, 60), max_size=20),
)
def test_present_counts_the_keys_held_by_any_day(days, keys):
    arrays = [np.array(sorted(d), dtype=np.int64) for d in days]
    probe = np.array(sorted(keys), dtype=np.int64)
    assert sketches.present(arrays, probe) == len(keys & set().union(*days))


def test_a_removal_is_a_rebuild_from_the_exact_members():
    """What the day actor does after anyone left: the sketch of the remaining members, which
    differs from the one that still holds them (nothing is subtracted)."""
    for impl in INEXACT:
        kind = sketches.kind(impl, 10)
        members = keys(20_000, 5)
        gone = members[::7]
        kept = membership.difference(members, gone)
        rebuilt = kind.build(kept)
        assert rebuilt.serialize() != kind.build(members).serialize()
        lower, upper = rebuilt.bounds()
        assert lower <= len(kept) <= upper
