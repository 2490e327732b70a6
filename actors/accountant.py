"""The accountant actor: may we charge more, and what has been spent (the ledger is in
``actors/state/ledger.py``).

Rules:
1. The ledger changes only by applying journaled ``BudgetCharged`` records fed in journal order.
2. A quote composes the period's charges *plus the new one* with ``accounting.compose_epsilon``
   (PLD, tight) and compares with the cap. The release actor asks for a quote before it draws any
   noise and journals the charge in the same transaction as the release; nothing is charged on
   refusal. Only the release actor charges, one release at a time, so a quote cannot go stale.
3. DAU and MAU are capped separately (``DAU_BUDGET_TOTAL``, ``MAU_BUDGET_TOTAL``) and reported
   both separately and composed together (the per-user worst case across both metrics).
4. Composition can take ~0.1-0.3 s the first time a multiset of charges is seen, so it runs in a
   worker thread; results are memoised in ``accounting``.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from actors.privacy import accounting
from actors.privacy.accounting import Charge
from actors.runtime import Actor, Ask
from actors.settings import EngineSettings
from actors.state import periods
from actors.state.ledger import METRICS, Ledger
from journal.events import BudgetCharged


@dataclass(frozen=True)
class Quote:
    fits: bool
    metric: str
    period: str
    spent: float  # before the new charge
    after: float  # with the new charge
    cap: float
    next_reset: str  # first day of the next accounting period


@dataclass(slots=True)
class QuoteCharge(Ask):
    metric: str = ""
    period: periods.Period | None = None
    charge: Charge | None = None


@dataclass(slots=True)
class BudgetReport(Ask):
    period: str | None = None  # None = every period with charges, plus the current one
    today: int = 0


@dataclass(slots=True)
class LedgerBarrier(Ask):
    seq: int = 0


class AccountantActor(Actor):
    kind = "accountant"

    def __init__(self, ledger: Ledger, settings: EngineSettings, *, capacity: int) -> None:
        super().__init__("accountant", capacity)
        self.ledger = ledger
        self.settings = settings

    def apply_fed(self, item: tuple[int, BudgetCharged]) -> None:
        seq, event = item
        self.ledger.apply(seq, event)

    async def handle(self, message: object) -> None:
        if isinstance(message, QuoteCharge):
            message.reply.set_result(await self._quote(message))
        elif isinstance(message, BudgetReport):
            message.reply.set_result(await self._report(message))
        elif isinstance(message, LedgerBarrier):
            self.ledger.advance(message.seq)
            message.reply.set_result(self.ledger.snapshot())
        else:
            raise TypeError(f"accountant cannot handle {type(message).__name__}")

    async def _quote(self, q: QuoteCharge) -> Quote:
        assert q.period is not None and q.charge is not None
        s = self.settings
        charges = self.ledger.charges(q.metric, q.period.label)
        spent = await anyio.to_thread.run_sync(accounting.compose_epsilon, charges, s.delta)
        ok, after = await anyio.to_thread.run_sync(accounting.fits, charges, q.charge, s.cap(q.metric), s.delta)
        return Quote(ok, q.metric, q.period.label, spent, after, s.cap(q.metric), next_reset(q.period))

    async def _report(self, r: BudgetReport) -> dict:
        labels = (
            [r.period]
            if r.period
            else sorted(set(self.ledger.periods()) | {periods.period_of(r.today, self.settings.privacy_period).label})
        )
        return {"delta": self.settings.delta, "periods": [await self._period_report(p) for p in labels]}

    async def _period_report(self, label: str) -> dict:
        s = self.settings
        out: dict = {"accounting_period": label, "metrics": {}}
        both: list[Charge] = []
        for metric in METRICS:
            charges = self.ledger.charges(metric, label)
            both += charges
            spent = await anyio.to_thread.run_sync(accounting.compose_epsilon, charges, s.delta)
            cap = s.cap(metric)
            out["metrics"][metric] = {
                "epsilon_spent": spent,
                "epsilon_cap": cap,
                "epsilon_remaining": max(0.0, cap - spent),
                "delta": s.delta,
                "charges": len(charges),
            }
        combined = await anyio.to_thread.run_sync(accounting.compose_epsilon, both, s.delta)
        out["combined"] = {"epsilon_spent": combined, "delta": s.delta, "charges": len(both)}
        return out


def next_reset(period: periods.Period) -> str:
    return periods.iso(period.last_day + 1)
