"""Distinct-count summaries of per-day memberships, behind one interface. Pure.

- ``interface.py``: the ``Sketch``/``SketchKind`` protocols (add, rebuild instead of remove,
  union, estimate, bounds, serialize), ``summarize`` (the union a release reads) and
  ``present`` (which erased users a release must still remove).
- ``exact.py`` (``set``, the default and the DP reference), ``theta.py`` (DataSketches theta),
  ``hll.py`` (``hllpp``: DataSketches HLL): one module per implementation.
- ``registry.py``: ``SKETCH_IMPL`` -> implementation, keyed by ``journal.events.SketchImpl``.
- ``window.py``: ``SlidingUnion``, the exact union of a window kept incrementally across releases.
"""

from actors.sketches.interface import BOUND_STD_DEVS, Sketch, SketchKind, UnionSummary, present, summarize
from actors.sketches.registry import SKETCHES, kind
from actors.sketches.window import SlidingUnion

__all__ = [
    "BOUND_STD_DEVS",
    "SKETCHES",
    "Sketch",
    "SketchKind",
    "SlidingUnion",
    "UnionSummary",
    "kind",
    "present",
    "summarize",
]
