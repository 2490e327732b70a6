"""A deterministic ``RandomSource`` for tests only.

The service draws all noise from ``actors.noise.OS_RANDOM`` (the kernel CSPRNG). Statistical
tests need reproducible draws instead, so they pass this seeded source through the samplers'
``rng`` argument. It wraps the stdlib Mersenne Twister, which is predictable from its output
and therefore must never be reachable from ``actors/`` (CI greps ``actors/`` for the import).
"""

from __future__ import annotations

import random


class SeededSource:
    """``randbelow`` backed by ``random.Random(seed)``: same seed, same draws."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def randbelow(self, n: int) -> int:
        """Uniform integer in [0, n); raises ValueError for n <= 0 like ``secrets.randbelow``."""
        if n <= 0:
            raise ValueError(f"randbelow needs n > 0, got {n}")
        return self._rng.randrange(n)
