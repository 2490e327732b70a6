"""Exact per-day membership against a brute-force set model."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.state import membership
from actors.state.membership import Membership

ops_strategy = st.lists(st.tuples(st.integers(-5, 5), st.sampled_from([0, 1])), max_size=60)


def brute(ops, start=()):
    s = set(start)
    for k, op in ops:
        (s.add if op else s.discard)(k)
    return sorted(s)


@given(st.lists(ops_strategy, max_size=6), st.lists(st.integers(-5, 5), max_size=8))
@settings(max_examples=200, deadline=None)
def test_apply_in_chunks_equals_brute_force(chunks, start):
    m = Membership.of(np.array(start, dtype=np.int64))
    flat = []
    for chunk in chunks:
        keys = np.array([k for k, _ in chunk], dtype=np.int64)
        ops = np.array([o for _, o in chunk], dtype=np.uint8)
        m = m.apply(keys, ops)
        flat += chunk
    assert m.members().tolist() == brute(flat, start)
    assert len(m) == len(brute(flat, start))
    assert m.folded().members().tolist() == m.members().tolist()


def test_last_op_wins_and_repeats_are_idempotent():
    m = Membership().apply(np.array([7, 7, 7, 8, 8], dtype=np.int64), np.array([1, 0, 1, 1, 1], dtype=np.uint8))
    assert m.members().tolist() == [7, 8]
    m = m.apply(np.array([7, 7], dtype=np.int64), np.array([0, 0], dtype=np.uint8))
    assert m.members().tolist() == [8]
    assert 8 in m and 7 not in m


def test_apply_never_mutates_the_old_value():
    a = Membership.of(np.array([1, 2, 3], dtype=np.int64))
    before = a.base.copy()
    b = a.apply(np.array([2, 9], dtype=np.int64), np.array([0, 1], dtype=np.uint8)).folded()
    assert a.members().tolist() == before.tolist() == [1, 2, 3]
    assert b.members().tolist() == [1, 3, 9]


def test_erase_clears_every_given_key():
    m = Membership.of(np.array([1, 2, 3, 4], dtype=np.int64)).erase(np.array([2, 4, 99]))
    assert m.members().tolist() == [1, 3]


def test_fold_threshold_bounds_the_pending_log():
    m = Membership()
    for i in range(40):
        keys = np.arange(i * 1000, (i + 1) * 1000, dtype=np.int64)
        m = m.apply_folding(keys, np.ones(1000, dtype=np.uint8))
        assert m.pending < max(membership.FOLD_MIN, len(m.base) // membership.FOLD_FRACTION) + 1000
    assert len(m) == 40_000
    # exact mode memory: 8 bytes per user-day once folded
    assert m.folded().nbytes() == 8 * 40_000


@given(st.lists(st.lists(st.integers(-50, 50), max_size=30), max_size=5), st.integers(1, 60))
def test_union_difference_contains(arrays, slice_keys):
    arrs = [np.unique(np.array(a, dtype=np.int64)) for a in arrays]
    u = membership.union(arrs, slice_keys)
    assert u.tolist() == sorted(set().union(*map(set, arrays)) if arrays else set())
    if len(arrs) >= 2:
        d = membership.difference(arrs[0], arrs[1])
        assert d.tolist() == sorted(set(arrays[0]) - set(arrays[1]))
        mask = membership.contains(arrs[0], np.array(arrays[1], dtype=np.int64))
        assert mask.tolist() == [x in set(arrays[0]) for x in arrays[1]]


@given(st.lists(st.lists(st.integers(-30, 30), max_size=40), max_size=8), st.integers(1, 50))
def test_sorted_slices_are_the_sorted_multiset_in_disjoint_value_ranges(arrays, slice_keys):
    arrs = [np.unique(np.array(a, dtype=np.int64)) for a in arrays]
    slices = list(membership.sorted_slices(arrs, slice_keys))
    assert all(len(s) for s in slices)
    assert [k for s in slices for k in s.tolist()] == sorted(k for a in arrs for k in a.tolist())
    for lo, hi in zip(slices, slices[1:]):
        assert lo[-1] < hi[0]  # every copy of a value is in one slice
