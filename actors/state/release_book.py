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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import msgspec
import numpy as np

from actors.privacy import flippancy
from actors.privacy.flippancy import CounterRun
from actors.state.membership import EMPTY
from journal.events import CounterStarted, CounterStepped, Metric, Released, UserErased


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


@dataclass
class ReleaseBook:
    applied_seq: int = 0

    def __post_init__(self) -> None:
        self.by_key: dict[ReleaseKey, list[Released]] = {}
        self.log: list[Released] = []
        self.runs: dict[str, CounterRun] = {}
        self.run_of_period: dict[tuple[str, str], str] = {}

    # -- applying --------------------------------------------------------------------------

    def apply(self, seq: int, event: object) -> None:
        if seq <= self.applied_seq:
            return
        self.applied_seq = seq
        if isinstance(event, Released):
            self.by_key.setdefault(key_of(event), []).append(event)
            self.log.append(event)
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
        )

    @classmethod
    def restore(cls, snap: ReleaseSnapshot) -> ReleaseBook:
        book = cls(snap.applied_seq)
        for event in snap.releases:
            book.by_key.setdefault(key_of(event), []).append(event)
            book.log.append(event)
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
