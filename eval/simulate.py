"""Synthetic activity streams and their exact truth.

Rules:
1. A ``Stream`` is what the service's journal would hold, as arrays in journal order: per event
   ``user`` (index, used as the pseudonym), ``day`` (the day the event is *about*, an index
   into the stream's days), ``op`` (1 = ``+``, 0 = ``-``) and ``arrival`` (the day during which
   it was journaled; ``day <= arrival``, non-decreasing). Erasures are separate arrays:
   ``erased_user``, ``erased_pos`` (the erasure is journaled just before event ``erased_pos``)
   and ``erased_day`` (the arrival day it belongs to), sorted by position.
2. Releases of day ``d`` happen once day ``d`` has closed, i.e. after every event and erasure
   whose arrival day is ``<= d`` and before any later one (a release
   reflects all data known at release time). The truth of a release is computed at that point.
3. The truth uses the membership semantics of ``actors.membership``: per (user, day) a boolean,
   ``+`` sets it, ``-`` clears it, repeats are idempotent, journal order decides; an erasure
   clears the user on every day; events journaled after it are new data.
   MAU(end, W) = number of users active on at least one of the W days ending at ``end``.
4. Everything is deterministic given the seed (numpy generators from ``eval.randomness``) and
   vectorised over users; the only Python loops are over days.

Streams:
* ``realistic_stream``: heterogeneous daily activity probability (Beta), weekend dip, churn
  (daily hazard) and return, duplicate ``+`` events, a few late events, occasional ``-``
  withdrawals (some late), and rare erasures (the erased user may come back as new data).
* ``adversarial_stream``: a realistic base plus flip-maximising users -- "edge" users active
  once every W + 1 days (single-day clusters separated by gaps of exactly W days, so their MAU
  membership drops for one day at the window edge and comes back: 2 flips per cluster),
  "togglers" who record a day and withdraw it the next day (MAU and DAU membership flip every
  day), DAU alternators (active every other day) -- and an erasure storm (a large fraction of
  all users erased on one day; half of them come back later as new data).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from actors.state import periods
from eval.randomness import numpy_rng

OP_PLUS = 1
OP_MINUS = 0
DEFAULT_START = dt.date(2025, 1, 1)


@dataclass(frozen=True)
class Stream:
    name: str
    n_users: int
    first_day: int  # service day number (days since 1970-01-01) of day index 0
    n_days: int
    user: np.ndarray  # int64, journal order
    day: np.ndarray  # int32 day index the event is about
    op: np.ndarray  # uint8 OP_PLUS / OP_MINUS
    arrival: np.ndarray  # int32 day index it was journaled on (non-decreasing)
    erased_user: np.ndarray  # int64
    erased_pos: np.ndarray  # int64, erasure journaled before event erased_pos
    erased_day: np.ndarray  # int32 arrival day of the erasure
    kind: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int8))  # per user: population
    kinds: tuple[str, ...] = ("realistic",)

    @property
    def n_events(self) -> int:
        return len(self.op)

    def date(self, index: int) -> dt.date:
        return periods.date_of(self.first_day + index)

    def fingerprint(self) -> str:
        """A short digest of the whole stream (for determinism tests and the summary)."""
        import hashlib

        h = hashlib.sha256()
        for a in (self.user, self.day, self.op, self.arrival, self.erased_user, self.erased_pos, self.erased_day):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    def validate(self) -> None:
        n = len(self.op)
        assert len(self.user) == len(self.day) == len(self.arrival) == n
        assert np.all(np.diff(self.arrival) >= 0), "arrival must be non-decreasing (journal order)"
        assert np.all(self.day <= self.arrival) and np.all(self.day >= 0)
        assert n == 0 or self.arrival[-1] < self.n_days
        assert np.all(np.diff(self.erased_pos) >= 0), "erasures must be in journal order"
        lo = np.searchsorted(self.arrival, self.erased_day, "left")
        hi = np.searchsorted(self.arrival, self.erased_day, "right")
        assert np.all((lo <= self.erased_pos) & (self.erased_pos <= hi)), "erasure outside its arrival day"


@dataclass(frozen=True)
class ChurnParams:
    """Knobs of the realistic workload (defaults: stationary population, DAU/MAU ~ 0.2)."""

    beta_a: float = 0.6  # daily activity probability ~ Beta(a, b): mean a / (a + b) ~ 0.23
    beta_b: float = 2.0
    weekend_factor: float = 0.7  # Saturday/Sunday activity multiplier
    initial_alive: float = 0.5  # = return / (churn + return): the alive share is stationary
    churn_hazard: float = 0.01  # daily probability that an active-phase user churns
    return_prob: float = 0.01  # daily probability that a churned user returns
    extra_events: float = 0.6  # duplicate '+' events per active user-day ~ Poisson(extra_events)
    late_prob: float = 0.03  # a '+' journaled 1-2 days after its day
    withdraw_prob: float = 0.01  # per active user-day: a '-' for it, journaled 0-6 days later
    erasure_rate: float = 0.002  # fraction of users erased once (uniform day)
    return_after_erasure: float = 0.5  # erased users who keep generating (new) data


# --------------------------------------------------------------------------------------------
# Activity matrices (users x days, boolean) -> journal
# --------------------------------------------------------------------------------------------


def _weekend_mask(first_day: int, n_days: int) -> np.ndarray:
    # 1970-01-01 was a Thursday (weekday 3).
    weekday = (np.arange(first_day, first_day + n_days) + 3) % 7
    return weekday >= 5


def _churn_activity(rng: np.random.Generator, n_users: int, first_day: int, n_days: int, p: ChurnParams) -> np.ndarray:
    prob = rng.beta(p.beta_a, p.beta_b, n_users)
    alive = rng.random(n_users) < p.initial_alive
    weekend = _weekend_mask(first_day, n_days)
    active = np.zeros((n_users, n_days), dtype=bool)
    for d in range(n_days):
        scale = p.weekend_factor if weekend[d] else 1.0
        active[:, d] = alive & (rng.random(n_users) < prob * scale)
        u = rng.random(n_users)
        alive = np.where(alive, u >= p.churn_hazard, u < p.return_prob)
    return active


@dataclass
class _Events:
    user: list = field(default_factory=list)
    day: list = field(default_factory=list)
    op: list = field(default_factory=list)
    arrival: list = field(default_factory=list)

    def add(self, user, day, op, arrival) -> None:
        self.user.append(np.asarray(user, dtype=np.int64))
        self.day.append(np.asarray(day, dtype=np.int32))
        self.op.append(np.broadcast_to(np.asarray(op, dtype=np.uint8), np.shape(user)).copy())
        self.arrival.append(np.asarray(arrival, dtype=np.int32))

    def arrays(self):
        cat = lambda xs, t: np.concatenate(xs).astype(t) if xs else np.empty(0, dtype=t)  # noqa: E731
        return cat(self.user, np.int64), cat(self.day, np.int32), cat(self.op, np.uint8), cat(self.arrival, np.int32)


def _activity_events(rng: np.random.Generator, active: np.ndarray, p: ChurnParams, ev: _Events) -> None:
    """'+' events for every active user-day (with duplicates and late copies) and withdrawals."""
    users, days = np.nonzero(active)
    copies = 1 + rng.poisson(p.extra_events, len(users))
    u = np.repeat(users, copies)
    d = np.repeat(days, copies)
    late = rng.random(len(u)) < p.late_prob
    lag = np.where(late, rng.integers(1, 3, len(u)), 0)
    ev.add(u, d, OP_PLUS, d + lag)
    wd = rng.random(len(users)) < p.withdraw_prob
    ev.add(users[wd], days[wd], OP_MINUS, days[wd] + rng.integers(0, 7, int(wd.sum())))


def _assemble(
    name: str,
    rng: np.random.Generator,
    ev: _Events,
    n_users: int,
    first_day: int,
    n_days: int,
    erased_user: np.ndarray,
    erased_day: np.ndarray,
    kind: np.ndarray,
    kinds: tuple[str, ...],
) -> Stream:
    user, day, op, arrival = ev.arrays()
    # Data of an erased user about days up to the erasure but journaled after it (late events
    # in flight) is dropped: a user erased on day e sends nothing more about days <= e.
    if len(erased_user):
        last_erasure = np.full(n_users, -1, dtype=np.int64)
        np.maximum.at(last_erasure, erased_user, erased_day)
        e = last_erasure[user]
        keep = ~((e >= 0) & (day <= e) & (arrival > e))
        user, day, op, arrival = user[keep], day[keep], op[keep], arrival[keep]
    keep = arrival < n_days
    user, day, op, arrival = user[keep], day[keep], op[keep], arrival[keep]
    # Journal order: by arrival day; within a day the '+' events in random order, then the '-'.
    order = np.lexsort((rng.random(len(op)), (op == OP_MINUS), arrival))
    user, day, op, arrival = user[order], day[order], op[order], arrival[order]
    # Erasures are journaled at the end of their arrival day (after its activity).
    eorder = np.argsort(erased_day, kind="stable")
    erased_user, erased_day = erased_user[eorder].astype(np.int64), erased_day[eorder].astype(np.int32)
    erased_pos = np.searchsorted(arrival, erased_day, "right").astype(np.int64)
    stream = Stream(
        name=name,
        n_users=n_users,
        first_day=first_day,
        n_days=n_days,
        user=user,
        day=day,
        op=op,
        arrival=arrival,
        erased_user=erased_user,
        erased_pos=erased_pos,
        erased_day=erased_day,
        kind=kind,
        kinds=kinds,
    )
    stream.validate()
    return stream


def _erase(active: np.ndarray, users: np.ndarray, days: np.ndarray, gone: np.ndarray) -> None:
    """Erased users who do not come back (``gone``) generate no activity after their erasure."""
    after = np.arange(active.shape[1])[None, :] > days[gone][:, None]
    active[users[gone]] &= ~after


def realistic_stream(
    seed: int,
    *,
    n_users: int = 20_000,
    n_days: int = 120,
    start: dt.date = DEFAULT_START,
    params: ChurnParams = ChurnParams(),
) -> Stream:
    rng = numpy_rng(seed, f"stream:realistic:{n_users}:{n_days}")
    first_day = periods.day_of(start)
    active = _churn_activity(rng, n_users, first_day, n_days, params)
    n_erased = round(params.erasure_rate * n_users)
    erased_user = rng.choice(n_users, n_erased, replace=False).astype(np.int64)
    erased_day = rng.integers(0, n_days, n_erased).astype(np.int32)
    _erase(active, erased_user, erased_day, rng.random(n_erased) >= params.return_after_erasure)
    ev = _Events()
    _activity_events(rng, active, params, ev)
    return _assemble(
        "realistic",
        rng,
        ev,
        n_users,
        first_day,
        n_days,
        erased_user,
        erased_day,
        np.zeros(n_users, dtype=np.int8),
        ("realistic",),
    )


ADVERSARIAL_KINDS = ("realistic", "edge", "toggler", "dau_alternator")


def adversarial_stream(
    seed: int,
    *,
    n_users: int = 20_000,
    n_days: int = 120,
    start: dt.date = DEFAULT_START,
    window: int = 30,
    edge_fraction: float = 0.10,
    toggler_fraction: float = 0.05,
    alternator_fraction: float = 0.05,
    storm_day: int | None = None,
    storm_fraction: float = 0.2,
    storm_return: float = 0.5,
    params: ChurnParams = ChurnParams(erasure_rate=0.0),
) -> Stream:
    """Realistic base + flip-maximising users + an erasure storm (see the module docstring)."""
    rng = numpy_rng(seed, f"stream:adversarial:{n_users}:{n_days}:{window}")
    first_day = periods.day_of(start)
    n_edge = round(edge_fraction * n_users)
    n_tog = round(toggler_fraction * n_users)
    n_alt = round(alternator_fraction * n_users)
    n_base = n_users - n_edge - n_tog - n_alt
    base = _churn_activity(rng, n_base, first_day, n_days, params)
    days = np.arange(n_days)
    # Edge users: one active day every W + 1 days -> in the window W days, out for one day.
    phase = rng.integers(0, window + 1, n_edge)
    edge = (days[None, :] - phase[:, None]) % (window + 1) == 0
    # Togglers: '+' on every other day, each withdrawn the next day (events added below).
    tphase = rng.integers(0, 2, n_tog)
    tog = (days[None, :] + tphase[:, None]) % 2 == 0
    # DAU alternators: active every other day.
    aphase = rng.integers(0, 2, n_alt)
    alt = (days[None, :] + aphase[:, None]) % 2 == 0
    active = np.vstack([base, edge, np.zeros_like(tog), alt])
    kind = np.repeat(np.arange(4, dtype=np.int8), [n_base, n_edge, n_tog, n_alt])
    # Erasure storm on one day (default: 5/8 into the stream, inside an evaluated month).
    storm = n_days * 5 // 8 if storm_day is None else storm_day
    n_storm = round(storm_fraction * n_users)
    erased_user = rng.choice(n_users, n_storm, replace=False).astype(np.int64)
    erased_day = np.full(n_storm, storm, dtype=np.int32)
    gone = rng.random(n_storm) >= storm_return
    _erase(active, erased_user, erased_day, gone)
    tog_users = n_base + n_edge + np.arange(n_tog)
    tog_alive = np.ones(n_tog, dtype=bool)
    tog_alive[np.isin(tog_users, erased_user[gone])] = False
    ev = _Events()
    _activity_events(rng, active, params, ev)
    tu, td = np.nonzero(tog)
    tu_global = tog_users[tu]
    keep = ~(~tog_alive[tu] & (td > storm))
    tu_global, td = tu_global[keep], td[keep]
    ev.add(tu_global, td, OP_PLUS, td)
    ev.add(tu_global, td, OP_MINUS, td + 1)
    return _assemble(
        "adversarial",
        rng,
        ev,
        n_users,
        first_day,
        n_days,
        erased_user,
        erased_day,
        kind,
        ADVERSARIAL_KINDS,
    )


# --------------------------------------------------------------------------------------------
# Exact truth at release time
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Truth:
    window: int
    dau: np.ndarray  # int64 [n_days]: exact DAU at the release of each day
    mau: np.ndarray  # int64 [n_days]: exact MAU(end = day, W = window) at its release
    dau_members: np.ndarray  # bool [n_days, n_users]
    mau_members: np.ndarray  # bool [n_days, n_users]
    erased_by_day: list[np.ndarray]  # users erased with arrival day d (journal order)
    window_days: dict[int, np.ndarray]  # end -> bool [W, n_users]: each window day at that release

    def members(self, metric: str) -> np.ndarray:
        return self.dau_members if metric == "dau" else self.mau_members

    def counts(self, metric: str) -> np.ndarray:
        return self.dau if metric == "dau" else self.mau


def _apply_segment(flat: np.ndarray, n_days: int, user, day, op) -> None:
    if len(op) == 0:
        return
    keys = user.astype(np.int64) * n_days + day
    # The last op per (user, day) wins (rule 3): first occurrence in the reversed segment.
    uniq, idx = np.unique(keys[::-1], return_index=True)
    flat[uniq] = op[::-1][idx].astype(bool)


def exact_truth(stream: Stream, window: int = 30, keep_windows: tuple[int, ...] | list[int] = ()) -> Truth:
    """Exact DAU/MAU at every release (rules 2 and 3), plus the member sets the counters need."""
    n, D = stream.n_users, stream.n_days
    state = np.zeros((n, D), dtype=bool)
    flat = state.reshape(-1)
    dau = np.zeros(D, dtype=np.int64)
    mau = np.zeros(D, dtype=np.int64)
    dau_m = np.zeros((D, n), dtype=bool)
    mau_m = np.zeros((D, n), dtype=bool)
    erased_by_day: list[np.ndarray] = []
    keep = {int(k) for k in keep_windows}
    windows: dict[int, np.ndarray] = {}
    bounds = np.searchsorted(stream.arrival, np.arange(D + 1), "left")
    ebounds = np.searchsorted(stream.erased_day, np.arange(D + 1), "left")
    for d in range(D):
        lo, hi = int(bounds[d]), int(bounds[d + 1])
        e_lo, e_hi = int(ebounds[d]), int(ebounds[d + 1])
        pos = lo
        for e in range(e_lo, e_hi):  # erasures of this day, in journal order
            p = int(stream.erased_pos[e])
            _apply_segment(flat, D, stream.user[pos:p], stream.day[pos:p], stream.op[pos:p])
            pos = p
            state[stream.erased_user[e], :] = False
        _apply_segment(flat, D, stream.user[pos:hi], stream.day[pos:hi], stream.op[pos:hi])
        erased_by_day.append(stream.erased_user[e_lo:e_hi].copy())
        dau_m[d] = state[:, d]
        mau_m[d] = state[:, max(0, d - window + 1) : d + 1].any(axis=1)
        dau[d] = int(dau_m[d].sum())
        mau[d] = int(mau_m[d].sum())
        if d in keep:
            block = np.zeros((window, n), dtype=bool)
            first = d - window + 1
            for i in range(window):
                if first + i >= 0:
                    block[i] = state[:, first + i]
            windows[d] = block
    return Truth(window, dau, mau, dau_m, mau_m, erased_by_day, windows)


def membership_flips(members: np.ndarray, days: slice | None = None) -> np.ndarray:
    """Per user: how often the membership changes over the given days, starting from 'not a member'.

    This is the flippancy of the Jain et al. reduction for one run over those days.
    """
    m = members if days is None else members[days]
    padded = np.vstack([np.zeros((1, m.shape[1]), dtype=bool), m])
    return (padded[1:] != padded[:-1]).sum(axis=0)


def calendar_months(first_day: int, n_days: int, first_index: int = 0) -> list[tuple[periods.Period, slice]]:
    """Calendar months wholly inside days [0, n_days) (index 0 = ``first_day``) that start at
    or after index ``first_index``, with their index slices."""
    out = []
    d = 0
    while d < n_days:
        period = periods.period_of(first_day + d, "month")
        a = period.first_day - first_day
        b = period.last_day - first_day
        if a >= max(first_index, 0) and b < n_days:
            out.append((period, slice(a, b + 1)))
        d = b + 1
    return out


def month_slices(stream: Stream, first_index: int = 0) -> list[tuple[periods.Period, slice]]:
    """Calendar months wholly inside the stream and starting at or after ``first_index``."""
    return calendar_months(stream.first_day, stream.n_days, first_index)
