"""Seeded randomness for the evaluation (never used by the service).

Rules:
1. The service draws noise from ``actors.noise.OS_RANDOM`` only. Evaluation passes a
   ``SeededSource`` (an object with ``randbelow``) to the very same exact samplers, so the
   numbers it reports are those of the service's noise distributions, reproducibly.
2. Every consumer gets its own source, derived from (seed, label): results do not depend on
   the order in which experiments run, and adding an experiment does not shift the others.
3. Stream generation uses numpy generators derived the same way (``numpy_rng``).
"""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np

DEFAULT_SEED = 20251009


def resolve_seed(seed: int | None = None) -> int:
    """``seed`` if given, else env ``DEFAULT_SEED``, else the product default 20251009."""
    if seed is not None:
        return int(seed)
    return int(os.environ.get("DEFAULT_SEED", DEFAULT_SEED))


def _derive(seed: int, label: str) -> int:
    digest = hashlib.sha256(f"{int(seed)}:{label}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class SeededSource:
    """``randbelow`` backed by ``random.Random``: same (seed, label), same draws."""

    __slots__ = ("_rng",)

    def __init__(self, seed: int, label: str = "") -> None:
        self._rng = random.Random(_derive(seed, label))

    def randbelow(self, n: int) -> int:
        if n <= 0:
            raise ValueError(f"randbelow needs n > 0, got {n}")
        return self._rng.randrange(n)


def numpy_rng(seed: int, label: str) -> np.random.Generator:
    return np.random.default_rng(_derive(seed, label))
