"""``set``: the exact distinct count -- the sorted int64 member array itself. The default, and the
DP reference: the count has user-level sensitivity 1, so releases keep the mechanism's guarantee.
Its memory is the membership's (8 bytes per user-day); it has nothing to add beyond it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from actors.sketches.interface import Sketch
from actors.state import membership
from journal.events import SketchImpl


@dataclass(frozen=True, slots=True)
class ExactSet:
    members: np.ndarray  # sorted unique int64

    def add(self, keys: np.ndarray) -> ExactSet:
        return ExactSet(membership.union([self.members, np.unique(np.asarray(keys, dtype=np.int64))]))

    def estimate(self) -> float:
        return float(len(self.members))

    def bounds(self) -> tuple[float, float]:
        n = float(len(self.members))
        return n, n

    def serialize(self) -> bytes:
        return np.ascontiguousarray(self.members, dtype="<i8").tobytes()


@dataclass(frozen=True)
class SetKind:
    lg_k: int  # unused: an exact set has no size parameter
    impl: SketchImpl = "set"
    exact: bool = True
    guarantee: str | None = None

    def build(self, members: np.ndarray) -> ExactSet:
        return ExactSet(np.asarray(members, dtype=np.int64))

    def union(self, parts: Sequence[Sketch]) -> ExactSet:
        return ExactSet(membership.union([_members(p) for p in parts]))

    def deserialize(self, data: bytes) -> ExactSet:
        return ExactSet(np.frombuffer(data, dtype="<i8").astype(np.int64))


def _members(part: Sketch) -> np.ndarray:
    if not isinstance(part, ExactSet):
        raise TypeError(f"cannot union a {type(part).__name__} into an exact set")
    return part.members
