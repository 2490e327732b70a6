"""Which ``SKETCH_IMPL`` names which implementation: the registry, keyed by the ``SketchImpl``
literal of ``journal.events`` (the value every ``Released`` record carries). Pure.

Adding a sketch: one module implementing ``interface.SketchKind``/``Sketch``, its name in the
``SketchImpl`` literal, one line here. The settings validate ``SKETCH_IMPL`` and ``SKETCH_LG_K``
through ``kind``; nothing else in the service names a sketch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from actors.sketches.exact import SetKind
from actors.sketches.hll import HllKind
from actors.sketches.interface import SketchKind
from actors.sketches.theta import ThetaKind
from journal.events import SketchImpl

SKETCHES: Mapping[SketchImpl, Callable[[int], SketchKind]] = {
    "set": SetKind,
    "theta": ThetaKind,
    "hllpp": HllKind,
}


def kind(impl: SketchImpl, lg_k: int) -> SketchKind:
    """The configured implementation; ``ValueError`` naming the setting when it cannot be built."""
    factory = SKETCHES.get(impl)
    if factory is None:
        raise ValueError(f"SKETCH_IMPL must be one of {', '.join(SKETCHES)}, not {impl!r}")
    return factory(lg_k)
