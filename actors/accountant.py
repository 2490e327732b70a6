"""The accountant actor: may we charge more, and what has been spent (the ledger is in
``actors/state/ledger.py``).

Rules:
1. The ledger changes only by applying journaled records fed in journal order.
2. **Accounting by the data a release reads.** A release is charged to every accounting period
   whose days it reads (``periods.periods_read``; a counter run: ``periods.counter_run_reads``).
   A quote admits it only if, for *every* such period, the tight composition
   (``accounting.compose_epsilon``: PLD) of everything already charged to the period *plus the
   new charge* stays within ``PERIOD_BUDGET_TOTAL`` (all metrics, revisions and counter runs
   together) and within the metric's sub-cap (``DAU_BUDGET_TOTAL``/``MAU_BUDGET_TOTAL``); and,
   when ``USER_EPSILON_LIMIT`` is set, the composition of every charge ever plus the new one stays
   within it. The first cap that would be exceeded is named in the refusal.
3. The release actor asks for a quote before it draws any noise and journals the charge in the
   same transaction as the release; nothing is charged on refusal. Only the release actor
   charges, one release at a time, so a quote cannot go stale.
4. What this makes true, for any user: everything published is (PERIOD_BUDGET_TOTAL, DELTA)-DP
   with respect to that user's activity within any one accounting period -- their activity there
   can only change releases that read its days, all charged to it. Activity spread over k periods
   is protected by the composition of the distinct charges reaching those k periods
   (``BudgetReport(last=k)``; ``GET /budget?periods=k``).
5. Composition can take ~0.05-0.3 s the first time a multiset of charges is seen, so it runs in a
   worker thread; results are memoised in ``accounting``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import anyio
import msgspec

from actors.privacy import accounting, mechanisms
from actors.privacy.accounting import Charge
from actors.runtime import Actor, Ask
from actors.settings import METRICS, EngineSettings
from actors.state import periods
from actors.state.ledger import Ledger, LedgerSnapshot
from journal.events import BudgetCharged, CounterStarted, Metric, Released

PERIOD_CAP = "PERIOD_BUDGET_TOTAL"
LIFETIME_CAP = "USER_EPSILON_LIMIT"


def statement(settings: EngineSettings) -> str:
    """The guarantee every release carries (README "Privacy statement", the issue's wording)."""
    return (
        f"for any user, everything published is ({settings.period_budget_total:g}, {settings.delta:g})-DP with "
        f"respect to that user's activity within any one accounting period ({settings.privacy_period}); activity "
        "spread over k periods is protected by the composition of those k periods' spends (GET /budget?periods=k)"
    )


def report_statement(settings: EngineSettings) -> str:
    """What ``GET /budget`` states: the bound in exact mode; with a sketch (``SKETCH_IMPL`` theta or
    hllpp) its releases are "not formally DP" (README claim 20), so the bound is only what the same
    releases would guarantee in exact mode, and the report says so."""
    if settings.sketch_impl == "set":
        return statement(settings)
    return (
        f"not formally DP (SKETCH_IMPL={settings.sketch_impl}): releases estimated by a sketch carry no "
        "(epsilon, delta) guarantee; the accounting here is what the same releases would guarantee in exact "
        f"mode (SKETCH_IMPL=set), where {statement(settings)}"
    )


def metric_cap_name(metric: Metric) -> str:
    return f"{metric.upper()}_BUDGET_TOTAL"


@dataclass(frozen=True)
class Quote:
    fits: bool
    metric: Metric
    period: str | None  # refused: the period whose cap would be exceeded (None: the lifetime limit)
    cap_name: str  # refused: which cap
    spent: float  # refused: the composition under that cap before the new charge
    after: float  # refused: ... and with it
    cap: float
    next_reset: str | None  # refused: first day of the next period (None: the lifetime limit)
    periods: tuple[str, ...]  # every period the release reads (and is charged to)
    remaining: float  # admitted: the least epsilon left under any cap it was checked against


class MetricSpend(msgspec.Struct, frozen=True):
    """One metric's share of a period (a sub-cap): epsilon at ``delta``, tight PLD composition."""

    epsilon_spent: float
    epsilon_cap: float
    epsilon_remaining: float
    delta: float
    charges: int


class CombinedSpend(msgspec.Struct, frozen=True):
    """Everything charged to the period (every metric, revision, counter run), composed together:
    the per-user bound for activity within the period, capped by ``PERIOD_BUDGET_TOTAL``."""

    epsilon_spent: float
    epsilon_cap: float
    epsilon_remaining: float
    delta: float
    charges: int


class PeriodBudget(msgspec.Struct, frozen=True):
    accounting_period: str
    metrics: dict[str, MetricSpend]
    combined: CombinedSpend


class Caps(msgspec.Struct, frozen=True):
    period_total: float
    dau: float
    mau: float
    user_epsilon_limit: float | None


class Composition(msgspec.Struct, frozen=True):
    """The guarantee of a user whose activity lies within ``periods``: every distinct charge that
    reaches any of them, each once, composed (rule 4)."""

    periods: list[str]
    epsilon: float
    delta: float
    charges: int
    meaning: str


class Lifetime(msgspec.Struct, frozen=True):
    epsilon_spent: float
    epsilon_limit: float | None
    delta: float
    charges: int


class BudgetReportOut(msgspec.Struct, frozen=True):
    delta: float
    statement: str
    caps: Caps
    periods: list[PeriodBudget]
    lifetime: Lifetime
    composition: Composition | None = None


@dataclass(slots=True)
class QuoteCharge(Ask[Quote]):
    metric: Metric
    reads: list[periods.Period]  # every period the release reads
    charge: Charge


@dataclass(slots=True)
class BudgetReport(Ask[BudgetReportOut]):
    period: str | None  # one period by label
    last: int | None  # the last k periods up to today's, and their composition
    today: int


@dataclass(slots=True)
class LedgerBarrier(Ask[LedgerSnapshot]):
    seq: int


@dataclass(frozen=True)
class LedgerView:
    """Copies of the multisets a quote needs, taken on the actor's task (the worker thread never
    sees the ledger move)."""

    period: dict[str, list[Charge]]
    metric: dict[str, list[Charge]]
    everything: list[Charge]


def decide(
    view: LedgerView, settings: EngineSettings, metric: Metric, reads: list[periods.Period], charge: Charge
) -> Quote:
    """Rule 2, pure."""
    s = settings
    labels = tuple(p.label for p in reads)
    remaining = math.inf
    for p in reads:
        for cap_name, cap, charges in (
            (PERIOD_CAP, s.period_budget_total, view.period[p.label]),
            (metric_cap_name(metric), s.cap(metric), view.metric[p.label]),
        ):
            ok, after = accounting.fits(charges, charge, cap, s.delta)
            if not ok:
                spent = accounting.compose_epsilon(charges, s.delta)
                return Quote(False, metric, p.label, cap_name, spent, after, cap, next_reset(p), labels, 0.0)
            remaining = min(remaining, cap - after)
    if s.user_epsilon_limit is not None:
        ok, after = accounting.fits(view.everything, charge, s.user_epsilon_limit, s.delta)
        if not ok:
            spent = accounting.compose_epsilon(view.everything, s.delta)
            return Quote(False, metric, None, LIFETIME_CAP, spent, after, s.user_epsilon_limit, None, labels, 0.0)
        remaining = min(remaining, s.user_epsilon_limit - after)
    return Quote(True, metric, None, "", 0.0, 0.0, 0.0, None, labels, max(0.0, remaining))


class AccountantActor(Actor):
    kind = "accountant"

    def __init__(self, ledger: Ledger, settings: EngineSettings, *, capacity: int) -> None:
        super().__init__("accountant", capacity)
        self.ledger = ledger
        self.settings = settings

    def apply_fed(self, item: tuple[int, BudgetCharged | Released | CounterStarted]) -> None:
        seq, event = item
        self.ledger.apply(seq, event)

    async def handle(self, message: object) -> None:
        if isinstance(message, QuoteCharge):
            message.answer(await self._quote(message))
        elif isinstance(message, BudgetReport):
            message.answer(await self._report(message))
        elif isinstance(message, LedgerBarrier):
            self.ledger.advance(message.seq)
            message.answer(self.ledger.snapshot())
        else:
            raise TypeError(f"accountant cannot handle {type(message).__name__}")

    async def _quote(self, q: QuoteCharge) -> Quote:
        view = LedgerView(
            {p.label: self.ledger.period_charges(p.label) for p in q.reads},
            {p.label: self.ledger.charges(q.metric, p.label) for p in q.reads},
            self.ledger.all_charges() if self.settings.user_epsilon_limit is not None else [],
        )
        return await anyio.to_thread.run_sync(decide, view, self.settings, q.metric, q.reads, q.charge)

    # -- reports ---------------------------------------------------------------------------

    async def _report(self, r: BudgetReport) -> BudgetReportOut:
        s = self.settings
        current = periods.period_of(r.today, s.privacy_period)
        if r.period:
            labels = [r.period]
        elif r.last:
            labels = [p.label for p in last_periods(current, r.last, s.privacy_period)]
        else:
            labels = sorted(set(self.ledger.periods()) | {current.label})
        composition = None
        if r.last:
            reaching = self.ledger.reaching(labels)
            epsilon = await self._compose(reaching)
            composition = Composition(
                labels,
                epsilon,
                s.delta,
                len(reaching),
                (
                    ("in exact mode (SKETCH_IMPL=set), " if s.sketch_impl != "set" else "")
                    + f"a user whose activity lies within these {len(labels)} period(s) is protected at "
                    f"({epsilon:.4g}, {s.delta:g})-DP by everything published so far (each release counted once)"
                    if reaching
                    else "nothing published so far reads these periods"
                ),
            )
        everything = self.ledger.all_charges()
        return BudgetReportOut(
            delta=s.delta,
            statement=report_statement(s),
            caps=Caps(s.period_budget_total, s.dau_budget_total, s.mau_budget_total, s.user_epsilon_limit),
            periods=[await self._period_report(p) for p in labels],
            lifetime=Lifetime(await self._compose(everything), s.user_epsilon_limit, s.delta, len(everything)),
            composition=composition,
        )

    async def _period_report(self, label: str) -> PeriodBudget:
        s = self.settings
        metrics: dict[str, MetricSpend] = {}
        for metric in METRICS:
            charges = self.ledger.charges(metric, label)
            spent = await self._compose(charges)
            cap = s.cap(metric)
            metrics[metric] = MetricSpend(spent, cap, max(0.0, cap - spent), s.delta, len(charges))
        both = self.ledger.period_charges(label)
        combined = await self._compose(both)
        total = s.period_budget_total
        return PeriodBudget(
            label, metrics, CombinedSpend(combined, total, max(0.0, total - combined), s.delta, len(both))
        )

    async def _compose(self, charges: list[Charge]) -> float:
        return await anyio.to_thread.run_sync(accounting.compose_epsilon, charges, self.settings.delta)


@dataclass(frozen=True)
class ScheduleFit:
    """What the configured schedule charges one accounting period, and whether it fits."""

    period: str  # a sample period of this length
    days: int
    charges: int
    epsilon: float  # everything together (the PERIOD_BUDGET_TOTAL composition)
    epsilon_dau: float
    epsilon_mau: float
    fits: bool
    cap: str  # the first cap it exceeds, "" when it fits


# One period of every length each kind has (a month: 28 to 31 days; a quarter: 90 to 92; ...).
SAMPLE_PERIODS = {
    "month": ("2025-02-01", "2024-02-01", "2025-04-01", "2025-01-01"),
    "week": ("2025-01-06",),
    "quarter": ("2025-01-01", "2024-01-01", "2025-04-01", "2025-07-01"),
    "year": ("2025-01-01", "2024-01-01"),
}


def schedule_fit(settings: EngineSettings) -> list[ScheduleFit]:
    """Pure: the charges the configured schedule puts on one period of each length -- every DAU
    and every default-window MAU of every day, each revised once at every ``REVISION_LAGS_DAYS``
    lag (revisions are Gaussian); with ``sqrt``/``tree``, one run per period instead of that
    metric's first publications -- counted by enumerating the releases that read the period
    (rule 2) and composed as a quote composes them."""
    s = settings
    revisions = len(s.revision_lags)
    out = []
    for first in SAMPLE_PERIODS[s.privacy_period]:
        period = periods.period_of(periods.parse_day(first), s.privacy_period)
        span = range(period.first_day - 400, period.last_day + 800)
        per_metric: dict[str, list[Charge]] = {}
        for metric in METRICS:
            window = 1 if metric == "dau" else s.mau_window_days
            reading = sum(1 for d in span if period in periods.periods_read(d, window, s.privacy_period))
            gaussian = mechanisms.calibrate("gaussian", s.epsilon(metric), s.delta).charge
            mechanism = s.mechanism(metric)
            if mechanism == "sqrt" or mechanism == "tree":
                later = {periods.period_of(d, s.privacy_period) for d in span}
                runs = [
                    _run_charge(s, metric, q.days)
                    for q in sorted(later, key=lambda q: q.first_day)
                    if period in periods.counter_run_reads(q, window, s.privacy_period)
                ]
                first_publications = runs
            else:
                own = mechanisms.calibrate(mechanism, s.epsilon(metric), s.delta).charge
                first_publications = [own] * reading
            per_metric[metric] = first_publications + [gaussian] * (reading * revisions)
        everything = per_metric["dau"] + per_metric["mau"]
        eps = accounting.compose_epsilon(everything, s.delta)
        eps_dau = accounting.compose_epsilon(per_metric["dau"], s.delta)
        eps_mau = accounting.compose_epsilon(per_metric["mau"], s.delta)
        cap = ""
        if eps > s.period_budget_total:
            cap = PERIOD_CAP
        elif eps_dau > s.dau_budget_total:
            cap = metric_cap_name("dau")
        elif eps_mau > s.mau_budget_total:
            cap = metric_cap_name("mau")
        out.append(ScheduleFit(period.label, period.days, len(everything), eps, eps_dau, eps_mau, not cap, cap))
    return out


def _run_charge(s: EngineSettings, metric: Metric, horizon: int) -> Charge:
    epsilon = s.counter_epsilon(metric) or accounting.default_counter_epsilon(horizon, s.epsilon(metric), s.delta)
    return Charge("gaussian_counter", accounting.gaussian_counter_multiplier(epsilon, s.delta))


def last_periods(current: periods.Period, k: int, kind: str) -> list[periods.Period]:
    """The ``k`` periods ending with ``current``, oldest first."""
    out = [current]
    while len(out) < k:
        out.append(periods.period_of(out[-1].first_day - 1, kind))
    return out[::-1]


def next_reset(period: periods.Period) -> str:
    return periods.iso(period.last_day + 1)
