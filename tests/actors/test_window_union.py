"""actors/sketches/window.py: the incremental window union equals the plain union, always."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.sketches import SlidingUnion
from actors.state import membership

KEYS = st.lists(st.integers(-50, 50), max_size=25).map(lambda ks: np.unique(np.array(ks, dtype=np.int64)))
STEP = st.one_of(
    st.tuples(st.just("slide"), KEYS),  # a new day enters, the oldest leaves
    st.tuples(st.just("change"), st.integers(0, 9), KEYS),  # a day in the window gets a new array
    st.tuples(st.just("jump"), st.integers(2, 15)),  # the window moves by several days
    st.tuples(st.just("same")),  # asked again with nothing changed
    st.tuples(st.just("resize"), st.integers(1, 12)),  # another window length
)


@settings(max_examples=300, deadline=None)
@given(
    window=st.integers(1, 10),
    steps=st.lists(STEP, max_size=25),
    seed=st.integers(0, 2**32 - 1),
    slice_keys=st.integers(1, 40),
)
def test_sliding_union_equals_membership_union_after_any_sequence(window, steps, seed, slice_keys):
    rng = np.random.default_rng(seed)
    days: dict[int, np.ndarray] = {}

    def day_array(d: int) -> np.ndarray:
        if d not in days:
            days[d] = np.unique(rng.integers(-50, 50, size=rng.integers(0, 20)))
        return days[d]

    cache = SlidingUnion(slice_keys)  # tiny slices: a rebuild sorts many value ranges
    end = 0
    kept: list[tuple[np.ndarray, np.ndarray]] = []  # (returned array, a copy): never changed later
    for step in [("same",), *steps]:
        if step[0] == "slide":
            end += 1
            days[end] = step[1]
        elif step[0] == "change":
            days[end - step[1]] = np.array(step[2], copy=True)  # a new object, maybe equal content
        elif step[0] == "jump":
            end += step[1]
        elif step[0] == "resize":
            window = step[1]
        parts = {d: day_array(d) for d in range(end - window + 1, end + 1)}
        got = cache.union(parts)
        members = [set(a.tolist()) for a in parts.values()]
        expected = sorted(set().union(*members))  # by Python sets, not by the code under test
        assert got.tolist() == expected
        assert np.array_equal(got, membership.union(list(parts.values()), slice_keys))
        assert cache.counts.tolist() == [sum(k in m for m in members) for k in expected]
        assert got.dtype == np.int64 and (len(got) < 2 or np.all(np.diff(got) > 0))
        kept.append((got, got.copy()))
    for returned, copy in kept:
        assert np.array_equal(returned, copy)


def test_a_slide_touches_one_day_and_the_result_is_read_only():
    rng = np.random.default_rng(7)
    pool = rng.integers(-(2**63), 2**63 - 1, size=5000, dtype=np.int64)
    arrays = {d: np.unique(rng.choice(pool, 1000, replace=False)) for d in range(40)}
    cache = SlidingUnion()
    first = cache.union({d: arrays[d] for d in range(0, 30)})
    assert np.array_equal(first, membership.union([arrays[d] for d in range(30)]))
    second = cache.union({d: arrays[d] for d in range(1, 31)})
    assert np.array_equal(second, membership.union([arrays[d] for d in range(1, 31)]))
    assert set(cache.parts) == set(range(1, 31)) and all(cache.parts[d] is arrays[d] for d in range(1, 31))
    assert int(cache.counts.sum()) == sum(len(arrays[d]) for d in range(1, 31))  # counted, not rebuilt wrong
    with pytest.raises(ValueError):
        second[0] = 0
