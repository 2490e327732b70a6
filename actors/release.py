"""The release actor: turns "what is DAU/MAU for this period?" into an immutable published record.

Rules:
1. No value leaves this module before its ``Released`` record is journaled: the reply is read
   back from the book after the commit that contains it (and its charge) was dispatched.
2. Noise is taken here and nowhere else, after the accountant has quoted the charge as
   affordable -- a refused release takes nothing and charges nothing. It is taken from the noise
   pool (``actors/noise_pool.py``), drawn there ahead of time through ``mechanisms``, so the time
   this actor takes does not depend on the noise's magnitude. The
   charge goes to every accounting period the release reads (``periods.periods_read``; a
   counter run: ``periods.counter_run_reads``), and the quote checks every one of them.
3. A key that already has a release is answered from the book, free. A revision is the only way
   to publish a period twice, and it is a fresh independent release, charged like any other.
4. Releases run one at a time (one mailbox) and are committed through
   ``Committer.append_charged``: under the journal's lock on every accounting period the release
   reads, after everything committed before the lock -- by any process sharing the journal --
   has been dispatched here. Inside, ``prepare`` re-checks what another coordinator may have done
   meanwhile (``_fed``: the same key released, the same slot refused, the same run started or
   stepped -> write nothing and answer from the book) and re-quotes the charge against every
   cap. So any number of coordinators, in any number of processes, publish a key once and never
   overspend a period; two concurrent first requests in one process produce one release too.
5. Every erasure that precedes a release in the journal is honoured by it, including erasures
   that arrive while the release is being computed: ``prepare`` sees every erasure dispatched
   before it and removes those users from the count (or, for a counter step, from the step's
   flips). Other late data simply waits for later releases (``seen_seq`` records the position
   the data was read at).
6. A counter run covers the accounting period's days in order; releasing day t first steps every
   earlier unreleased day of the run.
7. Scheduled publications (``PublishScheduled``, sent by ``actors/system/scheduler.py``) take the
   same paths as requests, one at a time through the same mailbox. A slot already done is
   skipped; a slot the budget cannot afford is journaled as ``ReleaseRefused`` -- nothing drawn,
   nothing charged -- and is never retried.
8. What a release reads is the union of its window's days at one journal position ``seen``:
   this process's day actors (``DayViews``), or -- in a gateway over shards -- the sum of every
   shard's exact share at a journaled cut (``actors/system/cuts.py``: a user lives in exactly
   one shard, so the sum is the exact count and the sensitivity stays 1). Noise and accounting
   happen here, once, on that count.
"""

from __future__ import annotations

import datetime as dt
import functools
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import anyio
import msgspec
import numpy as np

from actors import sketches
from actors.accountant import AccountantActor, Quote, QuoteCharge, statement
from actors.days import DayView
from actors.noise_pool import NoisePool
from actors.privacy import accounting, counters, flippancy, mechanisms
from actors.refusals import BudgetExhausted, NotClosed, NothingToRevise
from actors.runtime import Actor, Ask
from actors.settings import COUNTER_MECHANISMS, METRICS, EngineSettings, IndependentMechanism
from actors.state import periods, schedule
from actors.state.release_book import ReleaseBook, ReleaseKey, ReleaseSnapshot
from actors.state.schedule import Slot
from journal import events as ev
from journal.events import ChargePurpose, CounterKind, MechanismName, Metric
from journal.groupcommit import Committer

if TYPE_CHECKING:
    from actors.system.cuts import ShardCounter


class DayViews(Protocol):
    async def views(self, days: range, with_sketch: bool) -> tuple[list[DayView], int]: ...


@dataclass(slots=True)
class RequestRelease(Ask[ev.Released]):
    key: ReleaseKey


@dataclass(slots=True)
class RequestRevision(Ask[ev.Released]):
    key: ReleaseKey


@dataclass(slots=True)
class ReleaseBarrier(Ask[ReleaseSnapshot]):
    seq: int


@dataclass(frozen=True, slots=True)
class DueNow:
    """The answer to ``PlanSchedule``: the schedule's start day, what is due, when more will be."""

    start: int
    slots: list[Slot]
    next_due_at: dt.datetime


@dataclass(slots=True)
class PlanSchedule(Ask[DueNow]):
    """What the schedule says is due at ``now`` (``schedule.due`` over this actor's book). Journals
    ``ReleaseStartRecorded`` (today at ``now``) first if no start is recorded yet."""

    now: dt.datetime
    plan: schedule.Plan
    configured_start: int | None


@dataclass(slots=True)
class PublishScheduled(Ask[ev.Released | ev.ReleaseRefused | None]):
    """Publish one due slot; replies with the release, the refusal, or None when already done."""

    slot: Slot


UNION_CACHES = 2  # sliding unions kept: the default MAU window and the last other window asked for


class ReleaseActor(Actor):
    kind = "release"

    def __init__(
        self,
        book: ReleaseBook,
        settings: EngineSettings,
        *,
        capacity: int,
        committer: Committer,
        days: DayViews,
        accountant: AccountantActor,
        clock: Callable[[], dt.datetime],
        on_run_finished: Callable[[str], None] = lambda run_id: None,
        noise: NoisePool | None = None,
        shards: ShardCounter | None = None,
    ) -> None:
        super().__init__("release", capacity)
        self.noise = noise if noise is not None else NoisePool()
        self.book = book
        self.settings = settings
        self.committer = committer
        self.days = days
        self.accountant = accountant
        self.clock = clock
        self.on_run_finished = on_run_finished  # shreds the run's token secret (system task)
        self.shards = shards  # a gateway over shards counts through them (rule 8)
        self._plans: dict[str, counters.CounterPlan] = {}
        self._unions: dict[int, sketches.SlidingUnion] = {}  # window length -> its sliding union

    def apply_fed(self, item: tuple[int, object]) -> None:
        seq, event = item
        self.book.apply(seq, event)

    async def handle(self, message: object) -> None:
        if isinstance(message, RequestRelease):
            message.answer(await self._release(message.key))
        elif isinstance(message, RequestRevision):
            message.answer(await self._revise(message.key))
        elif isinstance(message, PublishScheduled):
            message.answer(await self._publish(message.slot))
        elif isinstance(message, PlanSchedule):
            message.answer(await self._plan_schedule(message))
        elif isinstance(message, ReleaseBarrier):
            self.book.advance(message.seq)
            message.answer(self.book.snapshot())
        else:
            raise TypeError(f"release actor cannot handle {type(message).__name__}")

    # -- entry points ----------------------------------------------------------------------

    async def _release(self, key: ReleaseKey, scheduled_lag: int | None = None) -> ev.Released:
        existing = self.book.latest(key)
        if existing is not None:
            return existing
        metric, day, window = key.metric, key.day, key.window
        self._check_closed(day)
        period = periods.period_of(day, self.settings.privacy_period)
        mechanism = self.settings.mechanism(metric)
        if (mechanism == "sqrt" or mechanism == "tree") and window == self._default_window(metric):
            await self._counter_release(metric, day, period, mechanism, scheduled_lag)
        else:
            await self._independent(key, _independent_of(mechanism), period, scheduled_lag)
        released = self.book.latest(key)
        assert released is not None
        return released

    async def _revise(self, key: ReleaseKey, scheduled_lag: int | None = None) -> ev.Released:
        if self.book.latest(key) is None and scheduled_lag is None:
            raise NothingToRevise(f"no release of {key.metric} for that period yet; request it first")
        self._check_closed(key.day)
        period = periods.period_of(key.day, self.settings.privacy_period)
        mechanism = _independent_of(self.settings.mechanism(key.metric))
        await self._independent(key, mechanism, period, scheduled_lag, revising=True)
        released = self.book.latest(key)
        assert released is not None
        return released

    async def _publish(self, slot: Slot) -> ev.Released | ev.ReleaseRefused | None:
        """One scheduled slot (rule 7). A revision slot whose first publication was refused is
        published as the period's first release: the schedule, not the data, decided to try."""
        if self.book.slot_done(slot.key, slot.lag):
            return None
        try:
            if slot.lag == 0:
                return await self._release(slot.key, scheduled_lag=0)
            return await self._revise(slot.key, scheduled_lag=slot.lag)
        except BudgetExhausted as exc:
            return await self._refuse(slot, exc)

    async def _refuse(self, slot: Slot, exc: BudgetExhausted) -> ev.ReleaseRefused | None:
        """Journal a scheduled slot's refusal -- once, whoever else is publishing (rule 4)."""
        reads = periods.periods_read(slot.day, slot.window, self.settings.privacy_period)

        async def prepare() -> list[ev.Event]:
            if self._fed(lambda e: _done_slot(e, slot.key, slot.lag)) or self.book.slot_done(slot.key, slot.lag):
                return []
            refused = ev.ReleaseRefused(
                refusal_id=uuid.uuid4().hex,
                metric=slot.metric,
                day=slot.day,
                window=slot.window,
                lag=slot.lag,
                accounting_period=exc.period,
                reason="budget_exhausted",
                epsilon_spent=exc.spent,
                epsilon_cap=exc.cap,
                cap_name=exc.cap_name,
                refused_at=self.clock().timestamp(),
            )
            return [refused]

        await self._commit_locked([p.label for p in reads], prepare)
        return self.book.refused.get((slot.key, slot.lag))

    async def _plan_schedule(self, ask: PlanSchedule) -> DueNow:
        if self.book.start is None:  # the first start with the schedule on: record its day

            async def prepare() -> list[ev.Event]:
                if self._fed(lambda e: isinstance(e, ev.ReleaseStartRecorded)):
                    return []  # another process recorded it first (rule 4)
                recorded = ev.ReleaseStartRecorded(
                    release_start=periods.today(ask.now, ask.plan.tz),
                    timezone=self.settings.timezone,
                    recorded_at=ask.now.timestamp(),
                )
                return [recorded]

            await self._commit_locked([SCHEDULE_LOCK], prepare)
        assert self.book.start is not None
        start = ask.configured_start if ask.configured_start is not None else self.book.start.release_start
        open_runs = [
            (r.started.metric, r.started.first_day + r.started.horizon - 1, r.started.window)
            for r in self.book.active_runs()
        ]
        slots = schedule.due(ask.now, ask.plan, start, lambda s: self.book.slot_done(s.key, s.lag), open_runs)
        return DueNow(start, slots, schedule.next_due_at(ask.now, ask.plan, start))

    def _check_closed(self, day: int) -> None:
        s = self.settings
        if not periods.is_closed(day, self.clock(), s.tz, s.lateness_hours):
            raise NotClosed(periods.closes_at(day, s.tz, s.lateness_hours).isoformat())

    def _window_union(self, views: list[DayView]) -> np.ndarray:
        """The union of the views' days, kept incrementally per window length (``SlidingUnion``:
        consecutive daily windows share all but a day). Runs in a worker thread; releases run
        one at a time (rule 4), so no two threads touch a cache."""
        if len(views) == 1:
            return views[0].members
        cache = self._unions.pop(len(views), None) or sketches.SlidingUnion()
        self._unions[len(views)] = cache  # most recently used last
        while len(self._unions) > UNION_CACHES:
            self._unions.pop(next(iter(self._unions)))
        return cache.union({v.day: v.members for v in views})

    def _default_window(self, metric: Metric) -> int:
        return 1 if metric == "dau" else self.settings.mau_window_days

    async def _quote(self, metric: Metric, reads: list[periods.Period], charge: accounting.Charge) -> Quote:
        quote: Quote = await self.accountant.ask(QuoteCharge(metric=metric, reads=reads, charge=charge))
        if not quote.fits:
            raise BudgetExhausted(
                metric, quote.period, quote.spent, quote.after, quote.cap, quote.next_reset, quote.cap_name
            )
        return quote

    async def _commit_locked(self, labels: list[str], prepare: Callable[[], Awaitable[list[ev.Event]]]) -> None:
        """Rule 4: commit what ``prepare`` decides under the lock on ``labels`` (accounting periods;
        with ``USER_EPSILON_LIMIT``, every release also takes one lifetime lock: that cap reads
        every period), then apply what was dispatched meanwhile."""
        locks = sorted({*labels, *([LIFETIME_LOCK] if self.settings.user_epsilon_limit is not None else [])})

        async def locked(_charges: list[ev.BudgetCharged]) -> list[ev.Event]:
            return await prepare()

        try:
            await self.committer.append_charged(locks, locked)
        finally:
            self.drain_feed()

    def _fed(self, conflict: Callable[[object], bool]) -> bool:
        """Did a record dispatched since the book was last brought up to date do it (rule 4)?"""
        return any(conflict(event) for _, event in self.feed)

    # -- independent releases (gaussian / laplace, and every revision) ---------------------

    async def _independent(
        self,
        key: ReleaseKey,
        mechanism: IndependentMechanism,
        period: periods.Period,
        scheduled_lag: int | None = None,
        *,
        revising: bool = False,
    ) -> None:
        s = self.settings
        metric, end, window = key.metric, key.day, key.window
        cal = mechanisms.calibrate(mechanism, s.epsilon(metric), s.delta)
        reads = periods.periods_read(end, window, s.privacy_period)
        await self._quote(metric, reads, cal.charge)  # refuse before reading or drawing anything
        sketch = s.sketch  # set (exact), theta, hllpp: the registry's kind, never named here
        summary, seen, gone_among = await self._count(periods.window_days(end, window), sketch)
        noise_value = await self.noise.take(cal)  # rule 2: only after the quote; drawn ahead of time

        async def prepare() -> list[ev.Event]:
            if scheduled_lag is not None and self._fed(lambda e: _done_slot(e, key, scheduled_lag)):
                return []  # another coordinator published (or refused) this slot (rule 4)
            if not revising and self._fed(lambda e: _released_key(e) == key):
                return []  # another coordinator released it first: the book answers (rule 3)
            revision = len(self.book.by_key.get(key, ())) + sum(1 for _, e in self.feed if _released_key(e) == key)
            purpose: ChargePurpose = "revision" if revision else "release"
            quote = await self._quote(metric, reads, cal.charge)  # rule 4: under the lock, again
            erased, _ = pending_erasures(self.feed, None, after=seen)
            gone = await gone_among(erased) if len(erased) else 0  # by exact membership (rule 5)
            if summary.exact is not None:
                noisy = mechanisms.release_count(cal, summary.exact - gone, noise_value)
            else:
                noisy = mechanisms.release_sketch(
                    cal, summary.estimate - gone, summary.lower - gone, summary.upper - gone, noise_value
                )
            charge = self._charge_event(metric, period, reads, cal.charge, cal.epsilon, purpose)
            guarantee = sketch.guarantee or _independent_guarantee(s, cal, reads)
            return [
                charge,
                self._released(
                    key,
                    revision,
                    noisy,
                    mechanism,
                    cal.params,
                    cal.epsilon,
                    cal.delta,
                    charge.charge_id,
                    period,
                    quote.remaining,
                    guarantee,
                    seen,
                    scheduled_lag,
                ),
            ]

        await self._commit_locked([p.label for p in reads], prepare)

    async def _count(
        self, days: range, sketch: sketches.SketchKind
    ) -> tuple[sketches.UnionSummary, int, Callable[[np.ndarray], Awaitable[int]]]:
        """What a release reads (rule 8): the union of the window's days at one position ``seen``,
        and how to tell how many of some keys (erased after ``seen``) it holds."""
        if self.shards is not None:
            assert sketch.exact, "a sharded release counts exact sets (sketches are refused at start)"
            (marked,) = await self.committer.append(
                [
                    ev.CutMarked(
                        cut_id=uuid.uuid4().hex,
                        first_day=days.start,
                        last_day=days.stop - 1,
                        marked_at=self.clock().timestamp(),
                    )
                ]
            )
            cut = marked.event
            assert isinstance(cut, ev.CutMarked)
            exact, addresses = await self.shards.count(cut.cut_id, marked.seq)
            shards = self.shards

            async def among_shards(keys: np.ndarray) -> int:
                return await shards.among(addresses, cut.cut_id, marked.seq, keys)

            n = float(exact)
            return sketches.UnionSummary(n, n, n, exact), marked.seq, among_shards
        views, seen = await self.days.views(days, not sketch.exact)
        members = [v.members for v in views]
        # exact kind: the window's union, kept incrementally from one daily release to the next
        union = await anyio.to_thread.run_sync(self._window_union, views) if sketch.exact else None
        summary = await anyio.to_thread.run_sync(
            functools.partial(sketches.summarize, members, sketch, [v.sketch for v in views], members=union)
        )

        async def among_members(keys: np.ndarray) -> int:
            return sketches.present(members, keys)  # by exact membership (sketches interface rule 4)

        return summary, seen, among_members

    # -- continual counters ----------------------------------------------------------------

    async def _counter_release(
        self, metric: Metric, day: int, period: periods.Period, kind: CounterKind, scheduled_lag: int | None = None
    ) -> None:
        if self.shards is not None:  # refused at start too (gateway/cli.py): flip state is per user
            raise RuntimeError("continual counters (sqrt/tree) are not available over shards")
        run = self.book.run_for(metric, period.label)
        if run is None:
            await self._start_run(metric, period, kind)
            run = self.book.run_for(metric, period.label)
            assert run is not None
        target = period.index_of(day)
        while run.t < target:  # another process may step it too (rule 4): re-read each time
            await self._step(run, metric, period, scheduled_lag if run.t + 1 == target else None)

    async def run_plan(
        self, metric: Metric, period: periods.Period, kind: CounterKind
    ) -> tuple[float, counters.CounterPlan]:
        """The run epsilon and plan of ``metric``'s counter run over ``period`` (data-independent)."""
        s = self.settings
        configured = s.counter_epsilon(metric)
        if configured is not None:
            epsilon = configured
        else:
            epsilon = await anyio.to_thread.run_sync(
                accounting.default_counter_epsilon, period.days, s.epsilon(metric), s.delta
            )
        plan = await anyio.to_thread.run_sync(
            mechanisms.counter_plan, kind, period.days, s.w_bound, epsilon, s.delta, s.lattice_bits
        )
        return epsilon, plan

    async def plan_ahead(self, today: int) -> None:
        """Have the noise of the counter runs of this period and the next drawn ahead (noise pool
        rule 4), and the independent calibrations registered (rule 3)."""
        s = self.settings
        for metric in METRICS:
            mechanism = s.mechanism(metric)
            self.noise.register(mechanisms.calibrate(_independent_of(mechanism), s.epsilon(metric), s.delta))
            if mechanism == "sqrt" or mechanism == "tree":
                this = periods.period_of(today, s.privacy_period)
                for period in (this, periods.period_of(this.last_day + 1, s.privacy_period)):
                    _, plan = await self.run_plan(metric, period, mechanism)
                    self.noise.register_counter(plan)

    async def _start_run(self, metric: Metric, period: periods.Period, kind: CounterKind) -> None:
        s = self.settings
        epsilon, plan = await self.run_plan(metric, period, kind)
        charge = mechanisms.counter_charge(plan)
        reads = periods.counter_run_reads(period, self._default_window(metric), s.privacy_period)
        quote = await self._quote(metric, reads, charge)
        noise_vector = await self.noise.take_counter(plan)  # once per run, kept secret, drawn ahead
        nxt = periods.period_of(period.last_day + 1, s.privacy_period)
        self.noise.register_counter((await self.run_plan(metric, nxt, kind))[1])  # the next run's, ahead
        charged = self._charge_event(metric, period, reads, charge, epsilon, "counter_run")
        started = ev.CounterStarted(
            run_id=uuid.uuid4().hex,
            metric=metric,
            accounting_period=period.label,
            first_day=period.first_day,
            horizon=period.days,
            window=self._default_window(metric),
            kind=kind,
            flip_bound=plan.w,
            noise_multiplier=plan.noise_multiplier,
            sensitivity=plan.sensitivity,
            sensitivity_exact=plan.sensitivity_exact,
            sigma=plan.sigma,
            lattice_bits=plan.lattice_bits,
            noise=noise_vector,
            token_secret=secrets.token_bytes(32),  # OS randomness; shredded when the run ends
            token_scheme=flippancy.TOKEN_SCHEME,  # re-keyable by a salt rotation (flippancy rule 6)
            epsilon=epsilon,
            charge_id=charged.charge_id,
            budget_remaining=quote.remaining,
            started_at=self.clock().timestamp(),
        )
        self._plans[started.run_id] = plan

        async def prepare() -> list[ev.Event]:
            if self._fed(lambda e: isinstance(e, ev.CounterStarted) and _run_of(e) == (metric, period.label)):
                return []  # another coordinator started this period's run (rule 4)
            fresh = await self._quote(metric, reads, charge)
            return [charged, msgspec.structs.replace(started, budget_remaining=fresh.remaining)]

        await self._commit_locked([p.label for p in reads], prepare)

    def _plan(self, run: flippancy.CounterRun) -> counters.CounterPlan:
        plan = self._plans.get(run.run_id)
        if plan is None:
            st = run.started
            plan = counters.plan_counter(st.kind, st.horizon, st.flip_bound, st.noise_multiplier, st.lattice_bits)
            self._plans[run.run_id] = plan
        return plan

    async def _step(
        self, run: flippancy.CounterRun, metric: Metric, period: periods.Period, scheduled_lag: int | None = None
    ) -> None:
        t = run.t + 1
        day = period.first_day + t - 1
        window = run.started.window
        views, seen = await self.days.views(periods.window_days(day, window), False)
        members = await anyio.to_thread.run_sync(self._window_union, views)
        proposal = await anyio.to_thread.run_sync(flippancy.plan_step, run, members)
        plan = await anyio.to_thread.run_sync(self._plan, run)
        key = ReleaseKey(metric, day, window)
        revision = len(self.book.by_key.get(key, ()))
        reads = periods.counter_run_reads(period, window, self.settings.privacy_period)

        async def prepare() -> list[ev.Event]:
            if self._fed(lambda e: isinstance(e, ev.CounterStepped) and e.run_id == run.run_id):
                return []  # another coordinator took this step (rule 4): the caller looks again
            erased, exits = pending_erasures(self.feed, run.run_id)
            step = flippancy.finish_step(run, proposal, day, erased, exits)
            noisy = mechanisms.release_counter(plan, [*run.z, step.z], run.started.noise)
            st = run.started
            guarantee = (
                f"{statement(self.settings)}. This value is step {t} of a {st.kind} counter run over "
                f"{st.accounting_period}; the whole run is one ({st.epsilon:.4g}, {self.settings.delta:g})-DP event, "
                f"charged to every period its windows read; users whose membership would flip more than "
                f"{st.flip_bound} times are frozen (a bias, not a privacy loss)"
            )
            released = self._released(
                key,
                revision,
                noisy,
                st.kind,
                mechanisms.counter_params(plan, t),
                st.epsilon,
                self.settings.delta,
                st.charge_id,
                period,
                st.budget_remaining,
                guarantee,
                seen,
                scheduled_lag,
            )
            return [step, released]

        await self._commit_locked([p.label for p in reads], prepare)
        if run.t >= run.started.horizon:
            self.on_run_finished(run.run_id)

    # -- records ---------------------------------------------------------------------------

    def _charge_event(
        self,
        metric: Metric,
        period: periods.Period,
        reads: list[periods.Period],
        charge: accounting.Charge,
        epsilon: float,
        purpose: ChargePurpose,
    ) -> ev.BudgetCharged:
        return ev.BudgetCharged(
            charge_id=uuid.uuid4().hex,
            metric=metric,
            accounting_period=period.label,
            periods=[p.label for p in reads],
            mechanism=charge.mechanism,
            parameter=charge.parameter,
            sensitivity=charge.sensitivity,
            epsilon=epsilon,
            delta=self.settings.delta,
            charged_at=self.clock().timestamp(),
            purpose=purpose,
        )

    def _released(
        self,
        key: ReleaseKey,
        revision: int,
        noisy: mechanisms.Noisy,
        mechanism: MechanismName,
        params: ev.NoiseParams,
        epsilon: float,
        delta: float,
        charge_id: str,
        period: periods.Period,
        remaining: float,
        guarantee: str,
        seen: int,
        scheduled_lag: int | None = None,
    ) -> ev.Released:
        metric, end, window = key
        return ev.Released(
            release_id=uuid.uuid4().hex,
            metric=metric,
            day=end if metric == "dau" else None,
            end=end if metric == "mau" else None,
            window=window if metric == "mau" else None,
            revision=revision,
            estimate=noisy.estimate,
            lower_95=noisy.lower,
            upper_95=noisy.upper,
            mechanism=mechanism,
            noise=params,
            epsilon_used=epsilon,
            delta=delta,
            charge_id=charge_id,
            accounting_period=period.label,
            sketch_impl=self.settings.sketch_impl if mechanism not in COUNTER_MECHANISMS else "set",
            guarantee=guarantee,
            budget_remaining=remaining,
            seen_seq=seen,
            released_at=self.clock().timestamp(),
            scheduled_lag=scheduled_lag,
            experiment_id=self.settings.experiment_id,
            format_version=ev.RELEASE_FORMAT,
        )


def _independent_of(mechanism: MechanismName) -> IndependentMechanism:
    """Counter metrics release revisions and non-default windows with the Gaussian mechanism."""
    return "laplace" if mechanism == "laplace" else "gaussian"


def _independent_guarantee(settings: EngineSettings, cal: mechanisms.Calibrated, reads: list[periods.Period]) -> str:
    delta = "" if cal.mechanism == "laplace" else f", {cal.delta:g}"
    return (
        f"{statement(settings)}. This release alone is ({cal.epsilon:g}{delta})-DP and is charged to "
        f"{', '.join(p.label for p in reads)} (every period whose days it reads), composed tightly (PLD)"
    )


LIFETIME_LOCK = "~lifetime"  # rule 4: the lock every release takes when USER_EPSILON_LIMIT is set
SCHEDULE_LOCK = "~schedule"  # the schedule's start is recorded once


def _released_key(event: object) -> ReleaseKey | None:
    if not isinstance(event, ev.Released):
        return None
    if event.metric == "dau":
        assert event.day is not None
        return ReleaseKey.dau(event.day)
    assert event.end is not None and event.window is not None
    return ReleaseKey.mau(event.end, event.window)


def _done_slot(event: object, key: ReleaseKey, lag: int) -> bool:
    """Does this record publish or refuse the schedule's slot (key, lag)?"""
    if isinstance(event, ev.ReleaseRefused):
        return (event.metric, event.day, event.window, event.lag) == (key.metric, key.day, key.window, lag)
    if _released_key(event) != key:
        return False
    assert isinstance(event, ev.Released)
    return lag == 0 or event.scheduled_lag == lag  # as ``ReleaseBook.slot_done``


def _run_of(event: ev.CounterStarted) -> tuple[str, str]:
    return event.metric, event.accounting_period


def pending_erasures(
    feed: Iterable[tuple[int, object]], run_id: str | None, *, after: int = 0
) -> tuple[np.ndarray, int]:
    """Keys erased (after position ``after``), and anonymous counter exits owed to ``run_id``,
    among fed-but-unapplied records."""
    keys: list[int] = []
    exits = 0
    for seq, event in feed:
        if isinstance(event, ev.UserErased) and seq > after:
            if event.key is not None:
                keys.append(event.key)
            if run_id is not None:
                exits += event.counter_exits.get(run_id, 0)
    return np.unique(np.array(keys, dtype=np.int64)), exits
