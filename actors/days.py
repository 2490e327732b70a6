"""Day actors: one per day that has data, each holding that day's exact membership.

Rules:
1. A day actor changes state only by applying journal records it is sent, in journal order
   (``ApplyOps``, ``EraseKeys``), and remembers the last seq it applied (``seen_seq``).
2. Reads (``GetView``) and snapshot barriers travel through the same mailbox, so a read sent
   after the committer dispatched seq S sees every record up to S -- that is how a release
   knows exactly which journal position it reflects.
3. Large folds run in a worker thread (numpy sorts release the GIL), so a day with millions of
   users does not stall the event loop; the mailbox keeps queueing (bounded) meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import numpy as np

from actors.runtime import Actor, Ask
from actors.sketches import Sketch, SketchKind
from actors.state.membership import Membership

THREAD_FOLD_OVER = 50_000  # fold in a worker thread beyond this many members (~5 ms inline)


@dataclass(slots=True)
class ApplyOps:
    seq: int
    keys: np.ndarray
    ops: np.ndarray


@dataclass(slots=True)
class EraseKeys:
    seq: int
    keys: np.ndarray


@dataclass(slots=True)
class GetView(Ask["DayView"]):
    with_sketch: bool


@dataclass(slots=True)
class Barrier(Ask[tuple[Membership, int]]):
    """Reply with (folded membership, seq) as of the dispatch position ``seq``."""

    seq: int


@dataclass(frozen=True, slots=True)
class DayView:
    day: int
    seen_seq: int
    members: np.ndarray  # sorted int64; never mutated (safe to use from a worker thread)
    sketch: Sketch | None  # the day's sketch when asked for (immutable, sketches interface rule 1)


class DayActor(Actor):
    kind = "day"

    def __init__(self, day: int, state: Membership, seen_seq: int, *, capacity: int, sketch: SketchKind) -> None:
        super().__init__(f"day-{day}", capacity)
        self.day = day
        self.state = state
        self.seen_seq = seen_seq
        self._kind = sketch
        self._sketch: tuple[np.ndarray, Sketch] | None = None  # (the members it was built from, sketch)

    async def handle(self, message: object) -> None:
        if isinstance(message, ApplyOps):
            await self._advance(self.state.apply(message.keys, message.ops), message.seq)
        elif isinstance(message, EraseKeys):
            await self._advance(self.state.erase(message.keys), message.seq)
        elif isinstance(message, GetView):
            message.answer(await self._view(message.with_sketch))
        elif isinstance(message, Barrier):
            await self._advance(await self._fold(self.state), max(self.seen_seq, message.seq))
            message.answer((self.state, self.seen_seq))
        else:
            raise TypeError(f"day actor cannot handle {type(message).__name__}")

    async def _advance(self, state: Membership, seq: int) -> None:
        if state.needs_fold():
            state = await self._fold(state)
        self.state, self.seen_seq = state, seq

    async def _fold(self, state: Membership) -> Membership:
        if not state.chunks:
            return state
        if len(state.base) > THREAD_FOLD_OVER:
            return await anyio.to_thread.run_sync(state.folded)
        return state.folded()

    async def _view(self, with_sketch: bool) -> DayView:
        self.state = await self._fold(self.state)
        members = self.state.base
        sketch = None
        if with_sketch:
            if self._sketch is None or self._sketch[0] is not members:
                # Rebuilt from the exact membership, never patched by subtraction (sketches
                # interface rule 2); a membership that did not change keeps its sketch.
                built = await anyio.to_thread.run_sync(self._kind.build, members)
                self._sketch = (members, built)
            sketch = self._sketch[1]
        return DayView(self.day, self.seen_seq, members, sketch)
