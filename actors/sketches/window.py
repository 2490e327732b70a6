"""The union of a window of days, kept incrementally from one release to the next. Pure.

Rules:
1. ``SlidingUnion.union(parts)`` returns exactly ``membership.union(parts.values())`` -- the sorted
   unique members of the given day arrays -- whatever was asked before (a property test holds
   it). It is a cache, never a source of truth: nothing here is journaled or snapshotted.
2. It keeps, per member, how many of the window's days hold it (``counts``), and remembers each
   day's array *by identity*. Day arrays are immutable (``membership`` rule 2: a change makes a
   new array), so "same object" means "same members": a day whose array object changed (late
   data, a withdrawal, an erasure) is removed with its old array and added with its new one.
3. Sliding the window by a day removes one array and adds one: two ``searchsorted`` passes over
   the window's members, O(n log n) in the size of one day instead of sorting all 30 days again
   (``scripts/bench_mau.py``: 1M users/day x 30 days, ~0.1 s instead of ~0.4-1.4 s). When more
   than a third of the window changed (the first release after a start, a jump), it rebuilds
   from ``membership.sorted_slices`` (the window sorted one value range at a time), counting.
4. The returned array is read-only and never modified afterwards (a new array replaces it), so a
   release can keep using it -- e.g. for the erasure adjustment -- while the cache moves on.
"""

from __future__ import annotations

import numpy as np

from actors.state import membership

COUNT = np.uint16  # a member is in at most MAX_WINDOW_DAYS (366) days of a window


class SlidingUnion:
    __slots__ = ("counts", "keys", "parts", "slice_keys")

    def __init__(self, slice_keys: int = membership.SLICE_KEYS) -> None:
        self.slice_keys = slice_keys  # keys sorted at once by a rebuild (tests make it tiny)
        self.parts: dict[int, np.ndarray] = {}  # day -> the array object counted (rule 2)
        self.keys: np.ndarray = membership.EMPTY  # sorted unique members of the counted parts
        self.counts: np.ndarray = np.empty(0, dtype=COUNT)  # days holding each member

    def union(self, parts: dict[int, np.ndarray]) -> np.ndarray:
        gone = [d for d, a in self.parts.items() if parts.get(d) is not a]
        new = [d for d, a in parts.items() if self.parts.get(d) is not a]
        if not gone and not new:
            return self.keys
        if 3 * len(new) > len(parts) or not self.parts:
            self._rebuild(parts)
            return self.keys
        for d in gone:
            self._remove(self.parts.pop(d))
        for d in new:
            self._add(parts[d])
            self.parts[d] = parts[d]
        if len(self.counts) and not self.counts.all():
            alive = self.counts > 0
            self.keys, self.counts = self.keys[alive], self.counts[alive]
        self._freeze()
        return self.keys

    def _freeze(self) -> None:
        if self.keys is not membership.EMPTY:
            self.keys.flags.writeable = False

    def _rebuild(self, parts: dict[int, np.ndarray]) -> None:
        self.parts = dict(parts)
        keys, counts = [], []
        for merged in membership.sorted_slices(list(parts.values()), self.slice_keys):
            starts = np.flatnonzero(membership.first_copies(merged))
            keys.append(merged[starts])
            counts.append(np.diff(np.append(starts, len(merged))).astype(COUNT))
        if not keys:
            self.keys, self.counts = membership.EMPTY, np.empty(0, dtype=COUNT)
            return
        self.keys, self.counts = np.concatenate(keys), np.concatenate(counts)
        self._freeze()

    def _remove(self, arr: np.ndarray) -> None:
        """Every key of ``arr`` is counted (it was added), so its positions are exact hits."""
        if len(arr) == 0:
            return
        self.counts[np.searchsorted(self.keys, arr)] -= 1

    def _add(self, arr: np.ndarray) -> None:
        if len(arr) == 0:
            return
        pos = np.searchsorted(self.keys, arr)
        inside = pos < len(self.keys)
        hit = np.zeros(len(arr), dtype=bool)
        hit[inside] = self.keys[pos[inside]] == arr[inside]
        self.counts[pos[hit]] += 1
        fresh = ~hit
        if fresh.any():
            self.keys = np.insert(self.keys, pos[fresh], arr[fresh])
            self.counts = np.insert(self.counts, pos[fresh], np.ones(int(fresh.sum()), dtype=COUNT))
