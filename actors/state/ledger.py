"""The ledger: every charge journaled, and which accounting periods each one is charged to. Pure.

Rules:
1. The ledger changes only by applying journaled records in journal order (``BudgetCharged``;
   and, for version-1 charges only, the ``Released``/``CounterStarted`` they paid for -- rule 3);
   so the accountant after a restart, a crash or a restore is exactly the one before it.
2. A charge is one DP event (one release, one revision, one whole counter run) and is charged
   to *every* period whose days its release reads (``BudgetCharged.periods``,
   ``periods.periods_read``). It is one event however many periods it reaches: a composition
   over several periods counts it once (``reaching``).
3. A version-1 charge was recorded against the period of its last day only. The record it paid
   for says which days it read (a MAU window's ``end``/``window``, a run's first day, horizon and
   window), so the ledger completes its periods when that record is applied. Until then (only
   between the two records of one transaction) it counts for its own period.
4. It holds no policy: what a period may still afford is the accountant actor's question
   (``actors/accountant.py``), answered with ``actors.privacy.accounting``.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec

from actors.privacy.accounting import Charge
from actors.state import periods as periods_mod
from journal.events import BudgetCharged, CounterStarted, Released


class LedgerSnapshot(msgspec.Struct, frozen=True):
    applied_seq: int
    charges: list[BudgetCharged]


class Ledger:
    def __init__(self) -> None:
        self.applied_seq = 0
        self.records: list[BudgetCharged] = []  # journal order; v1 records completed in place
        self._charges: dict[str, Charge] = {}
        self._by_period: dict[str, list[str]] = defaultdict(list)  # period -> charge ids
        self._index: dict[str, int] = {}  # charge id -> position in ``records``

    # -- applying --------------------------------------------------------------------------

    def apply(self, seq: int, event: BudgetCharged | Released | CounterStarted) -> None:
        if seq <= self.applied_seq:
            return
        self.applied_seq = seq
        if isinstance(event, BudgetCharged):
            self._add(event)
        else:
            self._complete(event)

    def advance(self, seq: int) -> None:
        self.applied_seq = max(self.applied_seq, seq)

    def _add(self, event: BudgetCharged) -> None:
        if event.charge_id in self._index:  # defensive: a charge id is unique in the journal
            return
        self._index[event.charge_id] = len(self.records)
        self.records.append(event)
        self._charges[event.charge_id] = charge_of(event)
        for label in event.periods:
            self._by_period[label].append(event.charge_id)

    def _complete(self, event: Released | CounterStarted) -> None:
        """Rule 3: the periods a version-1 charge's release actually read."""
        at = self._index.get(event.charge_id)
        if at is None or self.records[at].periods_complete:
            return
        charged = self.records[at]
        kind = periods_mod.kind_of(charged.accounting_period)
        if isinstance(event, CounterStarted):
            last = event.first_day + event.horizon - 1
            read = periods_mod.periods_between(event.first_day - event.window + 1, last, kind)
        elif event.metric == "mau" and event.end is not None and event.window is not None:
            read = periods_mod.periods_read(event.end, event.window, kind)
        else:
            read = []
        labels = sorted({charged.accounting_period, *(p.label for p in read)})
        for label in labels:
            if label not in charged.periods:
                self._by_period[label].append(charged.charge_id)
        self.records[at] = msgspec.structs.replace(charged, periods=labels, periods_complete=True)

    # -- reading ---------------------------------------------------------------------------

    def charges(self, metric: str, period: str) -> list[Charge]:
        """Charges of ``metric`` charged to ``period`` (the per-metric sub-cap's multiset)."""
        return [self._charges[c] for c in self._by_period.get(period, ()) if self._metric(c) == metric]

    def period_charges(self, period: str) -> list[Charge]:
        """Everything charged to ``period``: every metric, revision and counter run."""
        return [self._charges[c] for c in self._by_period.get(period, ())]

    def reaching(self, labels: list[str] | set[str]) -> list[Charge]:
        """Every charge charged to at least one of ``labels``, each once (rule 2)."""
        ids = {c for label in labels for c in self._by_period.get(label, ())}
        return [self._charges[c] for c in sorted(ids, key=self._index.__getitem__)]

    def all_charges(self) -> list[Charge]:
        return [self._charges[r.charge_id] for r in self.records]

    def periods(self) -> list[str]:
        return sorted(label for label, ids in self._by_period.items() if ids)

    def _metric(self, charge_id: str) -> str:
        return self.records[self._index[charge_id]].metric

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> LedgerSnapshot:
        return LedgerSnapshot(self.applied_seq, list(self.records))

    @classmethod
    def restore(cls, snap: LedgerSnapshot) -> Ledger:
        ledger = cls()
        for event in snap.charges:
            ledger._add(event)
        ledger.applied_seq = snap.applied_seq
        return ledger


def charge_of(event: BudgetCharged) -> Charge:
    return Charge(event.mechanism, event.parameter, event.sensitivity)
