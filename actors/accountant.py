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
import msgspec

from actors.privacy import accounting
from actors.privacy.accounting import Charge
from actors.runtime import Actor, Ask
from actors.settings import METRICS, EngineSettings
from actors.state import periods
from actors.state.ledger import Ledger, LedgerSnapshot
from journal.events import BudgetCharged, Metric


@dataclass(frozen=True)
class Quote:
    fits: bool
    metric: Metric
    period: str
    spent: float  # before the new charge
    after: float  # with the new charge
    cap: float
    next_reset: str  # first day of the next accounting period


class MetricSpend(msgspec.Struct, frozen=True):
    """One metric's spend in one accounting period (epsilon at ``delta``, tight PLD composition)."""

    epsilon_spent: float
    epsilon_cap: float
    epsilon_remaining: float
    delta: float
    charges: int


class CombinedSpend(msgspec.Struct, frozen=True):
    """Every metric's charges of the period composed together: the per-user worst case."""

    epsilon_spent: float
    delta: float
    charges: int


class PeriodBudget(msgspec.Struct, frozen=True):
    accounting_period: str
    metrics: dict[str, MetricSpend]
    combined: CombinedSpend


class BudgetReportOut(msgspec.Struct, frozen=True):
    delta: float
    periods: list[PeriodBudget]


@dataclass(slots=True)
class QuoteCharge(Ask[Quote]):
    metric: Metric
    period: periods.Period
    charge: Charge


@dataclass(slots=True)
class BudgetReport(Ask[BudgetReportOut]):
    period: str | None  # None = every period with charges, plus the current one
    today: int


@dataclass(slots=True)
class LedgerBarrier(Ask[LedgerSnapshot]):
    seq: int


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
        s = self.settings
        charges = self.ledger.charges(q.metric, q.period.label)
        spent = await anyio.to_thread.run_sync(accounting.compose_epsilon, charges, s.delta)
        ok, after = await anyio.to_thread.run_sync(accounting.fits, charges, q.charge, s.cap(q.metric), s.delta)
        return Quote(ok, q.metric, q.period.label, spent, after, s.cap(q.metric), next_reset(q.period))

    async def _report(self, r: BudgetReport) -> BudgetReportOut:
        labels = (
            [r.period]
            if r.period
            else sorted(set(self.ledger.periods()) | {periods.period_of(r.today, self.settings.privacy_period).label})
        )
        return BudgetReportOut(self.settings.delta, [await self._period_report(p) for p in labels])

    async def _period_report(self, label: str) -> PeriodBudget:
        s = self.settings
        metrics: dict[str, MetricSpend] = {}
        both: list[Charge] = []
        for metric in METRICS:
            charges = self.ledger.charges(metric, label)
            both += charges
            spent = await anyio.to_thread.run_sync(accounting.compose_epsilon, charges, s.delta)
            cap = s.cap(metric)
            metrics[metric] = MetricSpend(spent, cap, max(0.0, cap - spent), s.delta, len(charges))
        combined = await anyio.to_thread.run_sync(accounting.compose_epsilon, both, s.delta)
        return PeriodBudget(label, metrics, CombinedSpend(combined, s.delta, len(both)))


def next_reset(period: periods.Period) -> str:
    return periods.iso(period.last_day + 1)
