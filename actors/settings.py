"""What the actors need to know from configuration, as plain data (loading is the gateway's job)."""

from __future__ import annotations

import datetime as dt
from functools import cached_property
from typing import Literal, get_args
from zoneinfo import ZoneInfo

import msgspec

from actors import sketches
from actors.sketches import SketchKind
from journal.events import CounterKind, MechanismName, Metric, SketchImpl

PeriodKind = Literal["month", "week", "quarter", "year"]
IndependentMechanism = Literal["gaussian", "laplace"]
MECHANISMS: tuple[MechanismName, ...] = get_args(MechanismName)
COUNTER_MECHANISMS: tuple[CounterKind, ...] = get_args(CounterKind)
METRICS: tuple[Metric, ...] = get_args(Metric)
ReleaseSchedule = Literal["daily", "on-demand"]


class EngineSettings(msgspec.Struct, frozen=True, kw_only=True, dict=True):
    # releases and privacy (README "Privacy statement"; product defaults)
    dau_mechanism: MechanismName = "gaussian"
    # gaussian: the evaluation (eval/, README "Evaluation") finds it has the lowest total error on
    # realistic churn at the default budget and W_BOUND 2 (counters lose to freezing bias).
    mau_mechanism: MechanismName = "gaussian"
    epsilon_dau: float = 0.3
    epsilon_mau: float = 0.5
    delta: float = 1e-6
    # Caps, epsilon at DELTA, per accounting period, over everything charged to the period (every
    # release reading its days: accounting rule in actors/accountant.py). PERIOD_BUDGET_TOTAL is the
    # per-user bound; the per-metric caps are sub-caps. Defaults: the default schedule (every DAU
    # and every 30-day MAU of every day) charges a 31-day month 31 DAU + 60 MAU releases, which
    # compose (PLD) to 5.185 (DAU alone 1.905, MAU alone 4.676); 28-day month 5.012. 5.5 leaves
    # room for 7 more MAU-sized releases (revisions, other windows) in a 31-day month. See README
    # "Privacy statement" and eval/experiments.py schedule_fit.
    period_budget_total: float = 5.5
    dau_budget_total: float = 3.0
    mau_budget_total: float = 5.0
    # Optional lifetime bound: refuse once the composition of every charge so far would exceed it.
    user_epsilon_limit: float | None = None
    # epsilon of one whole continual-counter run; None = what (days in period) independent
    # releases at the per-release epsilon compose to, i.e. the same monthly spend.
    counter_epsilon_dau: float | None = None
    counter_epsilon_mau: float | None = None
    w_bound: int = 2
    lattice_bits: int = 20
    mau_window_days: int = 30
    max_window_days: int = 366
    timezone: str = "UTC"
    lateness_hours: float = 0.0
    privacy_period: PeriodKind = "month"
    sketch_impl: SketchImpl = "set"  # a key of actors.sketches.SKETCHES: "set" (exact) | "theta" | "hllpp"
    sketch_lg_k: int = 12  # log2 of the sketch's size: theta nominal entries, HLL registers
    # the publication schedule (actors/state/schedule.py)
    release_schedule: ReleaseSchedule = "daily"  # "daily": published by the service at day close
    release_start: dt.date | None = None  # None: the recorded day of the first start (journal)
    revision_lags_days: str = ""  # e.g. "7" or "7,28": each period re-released once at each lag
    experiment_id: str | None = None  # a release's ``version``; unset: the release format version
    # runtime
    day_mailbox: int = 64
    control_mailbox: int = 1024
    max_pending_events: int = 1_000_000
    purge_delay_seconds: float = 300.0
    snapshot_every_events: int = 1_000_000
    snapshot_every_seconds: float = 300.0
    idempotency_keys_kept: int = 100_000
    schedule_poll_seconds: float = 60.0  # longest sleep of the schedule loop (clock jumps)

    def __post_init__(self) -> None:
        for metric, mech in (("DAU", self.dau_mechanism), ("MAU", self.mau_mechanism)):
            if mech not in MECHANISMS:
                raise ValueError(f"{metric}_MECHANISM must be one of {', '.join(MECHANISMS)}, not {mech!r}")
        if self.w_bound < 1 or self.w_bound % 2:
            # Even w freezes users at 0 (not counted), so an erasure's exit flip is always possible.
            raise ValueError("W_BOUND must be a positive even integer")
        if not 0 < self.delta < 1:
            raise ValueError("DELTA must be in (0, 1)")
        for name in ("epsilon_dau", "epsilon_mau", "period_budget_total", "dau_budget_total", "mau_budget_total"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.upper()} must be > 0")
        if self.user_epsilon_limit is not None and not self.user_epsilon_limit > 0:
            raise ValueError("USER_EPSILON_LIMIT must be > 0 (or unset)")
        sketches.kind(self.sketch_impl, self.sketch_lg_k)  # ValueError naming SKETCH_IMPL or SKETCH_LG_K
        if not 1 <= self.mau_window_days <= self.max_window_days:
            raise ValueError("MAU_WINDOW_DAYS must be between 1 and MAX_WINDOW_DAYS")
        try:
            ZoneInfo(self.timezone)
        except Exception:
            raise ValueError(f"TIMEZONE {self.timezone!r} is not a known IANA time zone") from None
        self.revision_lags  # noqa: B018 -- validates REVISION_LAGS_DAYS
        if self.experiment_id is not None and not (
            0 < len(self.experiment_id) <= 64 and self.experiment_id.isascii() and self.experiment_id.isprintable()
        ):
            raise ValueError("EXPERIMENT_ID must be 1-64 printable ASCII characters")
        if self.lateness_hours < 0:
            raise ValueError("LATENESS_HOURS must be >= 0")
        if not self.schedule_poll_seconds > 0:
            raise ValueError("SCHEDULE_POLL_SECONDS must be > 0")

    @cached_property
    def revision_lags(self) -> tuple[int, ...]:
        """REVISION_LAGS_DAYS as sorted distinct positive day counts (empty: no revisions)."""
        parts = [p.strip() for p in self.revision_lags_days.split(",") if p.strip()]
        if not all(p.isdigit() and 0 < int(p) <= 3660 for p in parts):
            raise ValueError(
                f"REVISION_LAGS_DAYS must be a comma-separated list of days in 1..3660, not {self.revision_lags_days!r}"
            )
        return tuple(sorted({int(p) for p in parts}))

    @property
    def scheduled(self) -> bool:
        return self.release_schedule == "daily"

    @cached_property
    def sketch(self) -> SketchKind:
        return sketches.kind(self.sketch_impl, self.sketch_lg_k)

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def mechanism(self, metric: Metric) -> MechanismName:
        return self.dau_mechanism if metric == "dau" else self.mau_mechanism

    def epsilon(self, metric: Metric) -> float:
        return self.epsilon_dau if metric == "dau" else self.epsilon_mau

    def cap(self, metric: Metric) -> float:
        return self.dau_budget_total if metric == "dau" else self.mau_budget_total

    def counter_epsilon(self, metric: Metric) -> float | None:
        return self.counter_epsilon_dau if metric == "dau" else self.counter_epsilon_mau
