"""The interface every distinct-count summary implements, and the union a release reads. Pure.

Rules:
1. A ``Sketch`` is immutable once built: ``add`` returns a new sketch and leaves the old one
   alone, so a day actor can hand its cached sketch to a release computing in a worker thread.
2. Nothing is ever removed from a sketch by subtraction (theta A-not-B is useless when B is close
   to A: ~49% error measured here; HLL registers cannot forget). A day whose membership lost
   anyone is rebuilt from its exact membership with ``SketchKind.build`` -- every day actor keeps
   the exact sorted array in every mode (8 bytes per user-day), which is also what erasures,
   the counters and snapshots use.
3. ``SketchKind.exact`` says whether ``estimate()`` *is* the distinct count (bounds equal to it).
   Only an exact kind keeps the release at user-level sensitivity 1; an inexact kind carries the
   ``guarantee`` its releases state instead of the mechanism's, and its own ``bounds()``
   (``BOUND_STD_DEVS``) widen the published interval (``mechanisms.release_estimate``).
4. A release removes users erased while it was computing by their exact membership in the
   window's days (``present``), never by guesswork -- and without building the exact union: for
   an inexact kind ``summarize`` reads only the sketches, so a release costs the sketch union
   (a millisecond), not a merge of every member of the window (a second at 1M DAU, measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from actors.state import membership
from journal.events import SketchImpl

BOUND_STD_DEVS = 3  # the sketches' own bounds: ~99.7% for theta and HLL (their libraries' bounds)


class Sketch(Protocol):
    """The distinct-count state of one day (or the union of a window of days)."""

    def add(self, keys: np.ndarray) -> Sketch:
        """A sketch that also holds ``keys`` (signed int64 pseudonyms); this one is unchanged."""
        ...

    def estimate(self) -> float: ...

    def bounds(self) -> tuple[float, float]:
        """(lower, upper) on the distinct count at ``BOUND_STD_DEVS`` (the point, when exact)."""
        ...

    def serialize(self) -> bytes: ...


class SketchKind(Protocol):
    """A registered implementation (``registry.SKETCHES``), configured with its size ``lg_k``."""

    @property
    def impl(self) -> SketchImpl: ...

    @property
    def lg_k(self) -> int: ...

    @property
    def exact(self) -> bool: ...

    @property
    def guarantee(self) -> str | None:
        """What a release made from this kind states instead of the mechanism's guarantee
        (None: the mechanism's guarantee holds, rule 3)."""
        ...

    def build(self, members: np.ndarray) -> Sketch:
        """A sketch of the sorted unique ``members`` -- also how a removal is applied (rule 2)."""
        ...

    def union(self, parts: Sequence[Sketch]) -> Sketch: ...

    def deserialize(self, data: bytes) -> Sketch: ...


@dataclass(frozen=True)
class UnionSummary:
    estimate: float  # what the release reports before noise
    lower: float
    upper: float
    exact: int | None  # |union| for an exact kind (== estimate); None for a sketch (rule 4)


def summarize(
    days: Sequence[np.ndarray],
    kind: SketchKind,
    sketches: Sequence[Sketch | None] | None = None,
    *,
    members: np.ndarray | None = None,
) -> UnionSummary:
    """The window's union estimate and bounds from its days' sketches (``sketches``: the days'
    cached sketches where available, built here from the members otherwise). ``members``: for an
    exact kind, that union when the caller has it already (the release actor's ``SlidingUnion``)."""
    if kind.exact and members is not None:
        n = len(members)
        return UnionSummary(float(n), float(n), float(n), n)
    cached = list(sketches) if sketches is not None else [None] * len(days)
    parts = [s if s is not None else kind.build(d) for s, d in zip(cached, days, strict=True)]
    union = kind.union(parts)
    estimate = union.estimate()
    lower, upper = union.bounds()
    return UnionSummary(estimate, lower, upper, round(estimate) if kind.exact else None)


def present(days: Sequence[np.ndarray], keys: np.ndarray) -> int:
    """How many of ``keys`` (sorted unique) are members of at least one of ``days`` (rule 4)."""
    if len(keys) == 0:
        return 0
    hit = np.zeros(len(keys), dtype=bool)
    for members in days:
        hit |= membership.contains(members, keys)
    return int(hit.sum())
