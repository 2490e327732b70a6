"""``theta``: Apache DataSketches theta sketches (KMV with nominal entries k = 2^lg_k).

Rules:
1. ``update()`` of datasketches 5.2 takes int, float or str -- never bytes -- and pseudonyms are
   signed int64 (an int >= 2^63 would be hashed as a double). ``update_theta_sketch`` has no
   ``serialize``: ``compact()`` first; day sketches are kept compact (immutable, interface rule 1).
2. Relative standard error ~ 1/sqrt(k) (1.56% at lg_k 12); exact below k distinct members.
3. Not a sensitivity-1 statistic: in estimation mode one user moves the estimate by about
   estimate/k (the evaluation measures it), so the noise calibrated for 1 gives no stated
   (eps, delta): releases say "not formally DP".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasketches as ds
import numpy as np

from actors.sketches.interface import BOUND_STD_DEVS, Sketch
from journal.events import SketchImpl

SEED = 9001  # library default; the hashed values are already secret HMAC pseudonyms
LG_K_RANGE = (5, 26)  # what update_theta_sketch accepts
GUARANTEE = (
    "not formally DP: the theta estimate's sensitivity is about estimate/k, not 1; "
    "use SKETCH_IMPL=set for the reference guarantee"
)


@dataclass(frozen=True, slots=True)
class Theta:
    sketch: ds.compact_theta_sketch
    lg_k: int

    def add(self, keys: np.ndarray) -> Theta:
        return _union([self, _build(keys, self.lg_k)], self.lg_k)

    def estimate(self) -> float:
        return float(self.sketch.get_estimate())

    def bounds(self) -> tuple[float, float]:
        return float(self.sketch.get_lower_bound(BOUND_STD_DEVS)), float(self.sketch.get_upper_bound(BOUND_STD_DEVS))

    def serialize(self) -> bytes:
        return bytes(self.sketch.serialize())


@dataclass(frozen=True)
class ThetaKind:
    lg_k: int
    impl: SketchImpl = "theta"
    exact: bool = False
    guarantee: str | None = GUARANTEE

    def __post_init__(self) -> None:
        lo, hi = LG_K_RANGE
        if not lo <= self.lg_k <= hi:
            raise ValueError(f"SKETCH_LG_K must be between {lo} and {hi} for theta, not {self.lg_k}")

    def build(self, members: np.ndarray) -> Theta:
        return _build(members, self.lg_k)

    def union(self, parts: Sequence[Sketch]) -> Theta:
        return _union(parts, self.lg_k)

    def deserialize(self, data: bytes) -> Theta:
        return Theta(ds.compact_theta_sketch.deserialize(data, SEED), self.lg_k)


def _build(keys: np.ndarray, lg_k: int) -> Theta:
    sketch = ds.update_theta_sketch(lg_k, 1.0, SEED)
    update = sketch.update
    for key in np.asarray(keys, dtype=np.int64).tolist():
        update(key)
    return Theta(sketch.compact(), lg_k)


def _union(parts: Sequence[Sketch], lg_k: int) -> Theta:
    union = ds.theta_union(lg_k, 1.0, SEED)
    for part in parts:
        if not isinstance(part, Theta):
            raise TypeError(f"cannot union a {type(part).__name__} into a theta sketch")
        union.update(part.sketch)
    return Theta(union.get_result(), lg_k)
