"""The release book: every published number, and the state of every continual-counter run.

Rules:
1. A release is identified by its key (metric, day-or-end, window) and revision. The book only
   grows; the current value of a key is its latest revision. Nothing here ever re-draws or
   edits a published value.
2. The book changes only by applying journaled records in journal order (``Released``,
   ``CounterStarted``, ``CounterStepped``, ``UserErased``); replay, snapshot + tail, and the live
   actor all call the same ``apply``.
3. A finished run (all days of its horizon stepped) drops its per-user arrays: nothing can
   flip any more, and pseudonyms should not linger where they are no longer needed.
4. The book also holds what the publication schedule needs to know (``actors/state/schedule``):
   the recorded start of the schedule (``ReleaseStartRecorded``), which scheduled slots were
   published (``Released.scheduled_lag``) and which were refused (``ReleaseRefused``). A slot is
   done once either happened; the schedule never asks for it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import msgspec
import numpy as np

from actors.privacy import flippancy
from actors.privacy.flippancy import CounterRun
from actors.state.membership import EMPTY
from journal.events import (
    CounterStarted,
    CounterStepped,
    Metric,
    Released,
    ReleaseRefused,
    ReleaseStartRecorded,
    UserErased,
)


class ReleaseKey(NamedTuple):
    """What a release is *of*: a DAU day (window 1) or the MAU window of ``window`` days ending
    on ``day``. Equal to the plain tuple ``(metric, day, window)``."""

    metric: Metric
    day: int  # the DAU day, or the MAU window's last day
    window: int  # 1 for DAU

    @classmethod
    def dau(cls, day: int) -> ReleaseKey:
        return cls("dau", day, 1)

    @classmethod
    def mau(cls, end: int, window: int) -> ReleaseKey:
        return cls("mau", end, window)


def key_of(event: Released) -> ReleaseKey:
    if event.metric == "dau":
        if event.day is None:
            raise ValueError("a DAU release without a day")
        return ReleaseKey.dau(event.day)
    if event.end is None or event.window is None:
        raise ValueError("a MAU release without end/window")
    return ReleaseKey.mau(event.end, event.window)


SlotId = tuple[ReleaseKey, int]  # (key, lag): lag 0 = first publication, L = the revision at lag L days


class RunSnapshot(msgspec.Struct, frozen=True):
    started: CounterStarted
    counted: bytes
    flip_keys: bytes
    flip_counts: bytes
    z: list[int]
    pending_exits: int
    frozen_total: int
    blocked: bytes = b""


class ReleaseSnapshot(msgspec.Struct, frozen=True):
    applied_seq: int
    releases: list[Released]
    runs: list[RunSnapshot]
    start: ReleaseStartRecorded | None = None
    refusals: list[ReleaseRefused] = []


@dataclass
class ReleaseBook:
    applied_seq: int = 0

    def __post_init__(self) -> None:
        self.by_key: dict[ReleaseKey, list[Released]] = {}
        self.log: list[Released] = []
        self.runs: dict[str, CounterRun] = {}
        self.run_of_period: dict[tuple[str, str], str] = {}
        self.start: ReleaseStartRecorded | None = None
        self.refusals: list[ReleaseRefused] = []
        self.refused: dict[SlotId, ReleaseRefused] = {}
        self.scheduled: set[SlotId] = set()

    # -- applying --------------------------------------------------------------------------

    def apply(self, seq: int, event: object) -> None:
        if seq <= self.applied_seq:
            return
        self.applied_seq = seq
        if isinstance(event, Released):
            self._add_release(event)
        elif isinstance(event, ReleaseRefused):
            self._add_refusal(event)
        elif isinstance(event, ReleaseStartRecorded):
            if self.start is None:  # the first record wins; later ones would be a bug upstream
                self.start = event
        elif isinstance(event, CounterStarted):
            self.runs[event.run_id] = CounterRun(event)
            self.run_of_period[(event.metric, event.accounting_period)] = event.run_id
        elif isinstance(event, CounterStepped):
            run = self.runs[event.run_id]
            flippancy.apply_step(run, event)
            if run.t >= run.started.horizon:
                _drop_users(run)
        elif isinstance(event, UserErased):
            for run in self.active_runs():
                flippancy.apply_erasure(
                    run, event.key, event.counter_exits.get(run.run_id, 0), event.blocked_tokens.get(run.run_id)
                )

    def _add_release(self, event: Released) -> None:
        key = key_of(event)
        self.by_key.setdefault(key, []).append(event)
        self.log.append(event)
        if event.scheduled_lag is not None:
            self.scheduled.add((key, event.scheduled_lag))

    def _add_refusal(self, event: ReleaseRefused) -> None:
        self.refusals.append(event)
        self.refused[(ReleaseKey(event.metric, event.day, event.window), event.lag)] = event

    def advance(self, seq: int) -> None:
        self.applied_seq = max(self.applied_seq, seq)

    # -- reading ---------------------------------------------------------------------------

    def latest(self, key: ReleaseKey) -> Released | None:
        revisions = self.by_key.get(key)
        return revisions[-1] if revisions else None

    def run_for(self, metric: str, period: str) -> CounterRun | None:
        run_id = self.run_of_period.get((metric, period))
        return None if run_id is None else self.runs[run_id]

    def active_runs(self) -> list[CounterRun]:
        return [r for r in self.runs.values() if r.t < r.started.horizon]

    def slot_done(self, key: ReleaseKey, lag: int) -> bool:
        """Has the schedule's slot (key, lag) been published or refused (rule 4)? A first
        publication is also done when the period was released on request before the schedule
        reached it: asking again would return that same record."""
        if (key, lag) in self.refused or (key, lag) in self.scheduled:
            return True
        return lag == 0 and key in self.by_key

    def series(self, metric: str, window: int) -> dict[int, Released | ReleaseRefused]:
        """Per day (DAU day / MAU end, for ``window``): the latest release, or the refusal of its
        first publication when nothing was ever released for it."""
        out: dict[int, Released | ReleaseRefused] = {}
        for (key, lag), refusal in self.refused.items():
            if key.metric == metric and key.window == window and lag == 0:
                out[key.day] = refusal
        for key, revisions in self.by_key.items():
            if key.metric == metric and key.window == window and revisions:
                out[key.day] = revisions[-1]
        return out

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> ReleaseSnapshot:
        return ReleaseSnapshot(
            self.applied_seq,
            list(self.log),
            [
                RunSnapshot(
                    r.started,
                    r.counted.astype("<i8").tobytes(),
                    r.flip_keys.astype("<i8").tobytes(),
                    r.flip_counts.astype(np.uint8).tobytes(),
                    list(r.z),
                    r.pending_exits,
                    r.frozen_total,
                    r.blocked.astype("<i8").tobytes(),
                )
                for r in self.runs.values()
            ],
            self.start,
            list(self.refusals),
        )

    @classmethod
    def restore(cls, snap: ReleaseSnapshot) -> ReleaseBook:
        book = cls(snap.applied_seq)
        for event in snap.releases:
            book._add_release(event)
        for refusal in snap.refusals:
            book._add_refusal(refusal)
        book.start = snap.start
        for rs in snap.runs:
            run = CounterRun(
                rs.started,
                np.frombuffer(rs.counted, dtype="<i8").astype(np.int64),
                np.frombuffer(rs.flip_keys, dtype="<i8").astype(np.int64),
                np.frombuffer(rs.flip_counts, dtype=np.uint8).copy(),
                list(rs.z),
                rs.pending_exits,
                rs.frozen_total,
                np.frombuffer(rs.blocked, dtype="<i8").astype(np.int64),
            )
            book.runs[run.run_id] = run
            book.run_of_period[(rs.started.metric, rs.started.accounting_period)] = run.run_id
        return book


def _drop_users(run: CounterRun) -> None:
    """A finished run forgets its users and its token secret (rule 3 of flippancy: shredding;
    the journal copy is shredded by the release actor's job)."""
    run.started = msgspec.structs.replace(run.started, token_secret=b"")
    run.blocked = EMPTY
    run.counted = EMPTY
    run.flip_keys = EMPTY
    run.flip_counts = np.empty(0, dtype=np.uint8)
