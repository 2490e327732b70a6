"""The ledger: every charge journaled, grouped by (metric, accounting period). Pure.

Rules:
1. The ledger changes only by applying journaled ``BudgetCharged`` records (in journal order);
   so the accountant after a restart, a crash or a restore is exactly the one before it.
2. It holds no policy: what a period may still afford is the accountant actor's question
   (``actors/accountant.py``), answered with ``actors.privacy.accounting``.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec

from actors.privacy.accounting import Charge
from journal.events import BudgetCharged


class LedgerSnapshot(msgspec.Struct, frozen=True):
    applied_seq: int
    charges: list[BudgetCharged]


class Ledger:
    def __init__(self) -> None:
        self.applied_seq = 0
        self.records: list[BudgetCharged] = []
        self._by_period: dict[tuple[str, str], list[Charge]] = defaultdict(list)

    def apply(self, seq: int, event: BudgetCharged) -> None:
        if seq <= self.applied_seq:
            return
        self.applied_seq = seq
        self.records.append(event)
        self._by_period[(event.metric, event.accounting_period)].append(charge_of(event))

    def advance(self, seq: int) -> None:
        self.applied_seq = max(self.applied_seq, seq)

    def charges(self, metric: str, period: str) -> list[Charge]:
        return list(self._by_period.get((metric, period), ()))

    def periods(self) -> list[str]:
        return sorted({p for _, p in self._by_period})

    def snapshot(self) -> LedgerSnapshot:
        return LedgerSnapshot(self.applied_seq, list(self.records))

    @classmethod
    def restore(cls, snap: LedgerSnapshot) -> Ledger:
        ledger = cls()
        for event in snap.charges:
            ledger.records.append(event)
            ledger._by_period[(event.metric, event.accounting_period)].append(charge_of(event))
        ledger.applied_seq = snap.applied_seq
        return ledger


def charge_of(event: BudgetCharged) -> Charge:
    return Charge(event.mechanism, event.parameter, event.sensitivity)
