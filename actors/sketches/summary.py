"""Distinct-count summaries of a set of pseudonyms: exact (sorted arrays) or theta (datasketches).

Rules:
1. A sketch is never "subtracted": theta A-not-B is useless when B is close to A (~49% error
   measured here). A day whose membership lost anyone is rebuilt from the exact membership,
   which every day actor keeps in both modes (8 bytes per user-day).
2. ``update()`` of datasketches 5.2 takes int, float or str -- never bytes -- and pseudonyms are
   signed int64 (an int >= 2^63 would be hashed as a double). ``update_theta_sketch`` has no
   ``serialize``: ``compact()`` first.
3. The union estimate is *not* a sensitivity-1 statistic: one user moves a theta estimate in
   estimation mode by about estimate/k. The release actor labels theta releases accordingly.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasketches as ds
import numpy as np

from actors.state import membership

THETA_SEED = 9001  # library default; the hashed values are already secret HMAC pseudonyms
BOUND_STD_DEVS = 3  # the sketch's own ~99.7% bounds; see releases for how they widen the CI


@dataclass(frozen=True)
class UnionSummary:
    exact: int  # |union| (exact arrays are always available, rule 1)
    estimate: float  # what the release reports before noise (== exact in set mode)
    lower: float
    upper: float
    members: np.ndarray  # the union itself (kept for erasure adjustment and the counter)


def build_theta(keys: np.ndarray, lg_k: int) -> ds.compact_theta_sketch:
    sketch = ds.update_theta_sketch(lg_k, 1.0, THETA_SEED)
    update = sketch.update
    for key in keys.tolist():
        update(key)
    return sketch.compact()


def summarize(
    days: list[np.ndarray], *, impl: str, lg_k: int, theta: list[ds.compact_theta_sketch | None] | None = None
) -> UnionSummary:
    """Union of the given days' member arrays; in theta mode also the theta union estimate."""
    members = membership.union(days)
    n = len(members)
    if impl == "set":
        return UnionSummary(n, float(n), float(n), float(n), members)
    theta = theta if theta is not None else [None] * len(days)
    sketches = [t if t is not None else build_theta(d, lg_k) for t, d in zip(theta, days)]
    union = ds.theta_union(lg_k, 1.0, THETA_SEED)
    for s in sketches:
        union.update(s)
    result = union.get_result()
    return UnionSummary(
        n,
        result.get_estimate(),
        result.get_lower_bound(BOUND_STD_DEVS),
        result.get_upper_bound(BOUND_STD_DEVS),
        members,
    )
