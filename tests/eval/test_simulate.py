"""Streams of ``eval.simulate``: determinism, exact truth vs brute force, adversarial flippancy,
and the counter reduction of ``eval.releases`` vs an independent per-user model."""

from __future__ import annotations

import numpy as np
import pytest

from actors.state import periods
from eval import releases as rl
from eval import simulate
from eval.randomness import SeededSource
from eval.simulate import OP_MINUS, OP_PLUS, ChurnParams, Stream

SMALL = {"n_users": 400, "n_days": 70}
# Everything happens often: late events, withdrawals, erasures and returns.
BUSY = ChurnParams(late_prob=0.2, withdraw_prob=0.2, erasure_rate=0.15, churn_hazard=0.05, return_prob=0.05)


# ------------------------------------------------------------------------------------------
# Brute force: per-event replay of the journal with Python sets
# ------------------------------------------------------------------------------------------


def brute_truth(stream: Stream, window: int) -> tuple[list[int], list[int], list[set[int]]]:
    items = []  # (position, 0 = erasure before the event at that position / 1 = event, index, day)
    for e in range(len(stream.erased_user)):
        items.append((int(stream.erased_pos[e]), 0, e, int(stream.erased_day[e])))
    for i in range(stream.n_events):
        items.append((i, 1, i, int(stream.arrival[i])))
    items.sort()
    active: dict[tuple[int, int], bool] = {}
    dau, mau, mau_sets = [], [], []
    k = 0
    for d in range(stream.n_days):
        while k < len(items) and items[k][3] <= d:
            _, kind, idx, _ = items[k]
            if kind == 0:
                u = int(stream.erased_user[idx])
                for key in [key for key in active if key[0] == u]:
                    active[key] = False
            else:
                active[(int(stream.user[idx]), int(stream.day[idx]))] = stream.op[idx] == OP_PLUS
            k += 1
        dau.append(len({u for (u, day), on in active.items() if on and day == d}))
        members = {u for (u, day), on in active.items() if on and d - window < day <= d}
        mau.append(len(members))
        mau_sets.append(members)
    return dau, mau, mau_sets


def _arrays(rows):
    user, day, op, arrival = (np.array(c) for c in zip(*rows))
    return user.astype(np.int64), day.astype(np.int32), op.astype(np.uint8), arrival.astype(np.int32)


def test_hand_made_stream_truth() -> None:
    # user 0: '+' then '-' the same day; user 1: active day 0, withdrawn late (arrives day 2);
    # user 2: active day 1, erased at the end of day 2, returns on day 3 as new data.
    rows = [
        (0, 0, OP_PLUS, 0),
        (1, 0, OP_PLUS, 0),
        (0, 0, OP_MINUS, 0),
        (2, 1, OP_PLUS, 1),
        (1, 0, OP_MINUS, 2),
        (2, 3, OP_PLUS, 3),
    ]
    user, day, op, arrival = _arrays(rows)
    s = Stream(
        "hand",
        3,
        periods.day_of(simulate.DEFAULT_START),
        4,
        user,
        day,
        op,
        arrival,
        np.array([2], dtype=np.int64),
        np.array([5], dtype=np.int64),
        np.array([2], dtype=np.int32),
    )
    s.validate()
    t = simulate.exact_truth(s, window=2)
    assert t.dau.tolist() == [1, 1, 0, 1]
    assert t.mau.tolist() == [1, 2, 0, 1]
    assert brute_truth(s, 2)[:2] == (t.dau.tolist(), t.mau.tolist())
    assert t.erased_by_day[2].tolist() == [2]


@pytest.mark.parametrize("kind", ["realistic", "adversarial"])
@pytest.mark.parametrize("seed", [1, 2])
def test_exact_truth_matches_brute_force(kind: str, seed: int) -> None:
    if kind == "realistic":
        s = simulate.realistic_stream(seed, n_users=25, n_days=40, params=BUSY)
    else:
        s = simulate.adversarial_stream(
            seed,
            n_users=30,
            n_days=40,
            window=7,
            storm_fraction=0.3,
            params=ChurnParams(late_prob=0.2, withdraw_prob=0.2, erasure_rate=0.0),
        )
    assert len(s.erased_user) > 0 and (s.op == OP_MINUS).any() and (s.arrival > s.day).any()
    window = 7
    truth = simulate.exact_truth(s, window, keep_windows=[20, 39])
    dau, mau, sets = brute_truth(s, window)
    assert truth.dau.tolist() == dau
    assert truth.mau.tolist() == mau
    for d in range(s.n_days):
        assert set(np.flatnonzero(truth.mau_members[d]).tolist()) == sets[d]
    for end in (20, 39):  # the per-day blocks kept for the sketches union to the same MAU
        assert int(truth.window_days[end].any(axis=0).sum()) == mau[end]


@pytest.mark.parametrize("make", [simulate.realistic_stream, simulate.adversarial_stream])
def test_streams_are_deterministic_per_seed(make) -> None:
    a, b, c = make(7, **SMALL), make(7, **SMALL), make(8, **SMALL)
    assert a.fingerprint() == b.fingerprint()
    for x, y in zip((a.user, a.day, a.op, a.arrival, a.erased_user), (b.user, b.day, b.op, b.arrival, b.erased_user)):
        np.testing.assert_array_equal(x, y)
    assert a.fingerprint() != c.fingerprint()
    a.validate()
    c.validate()


def test_realistic_stream_shape() -> None:
    s = simulate.realistic_stream(3, n_users=2000, n_days=70)
    t = simulate.exact_truth(s)
    days = np.arange(40, 70)
    assert np.all(t.mau >= t.dau)
    ratio = t.dau[days].mean() / t.mau[days].mean()
    assert 0.1 < ratio < 0.5  # a plausible DAU/MAU
    weekend = simulate._weekend_mask(s.first_day, s.n_days)
    assert t.dau[days][weekend[days]].mean() < t.dau[days][~weekend[days]].mean()  # weekend dip
    assert (s.op == OP_MINUS).sum() > 0 and len(s.erased_user) > 0


def test_adversarial_stream_has_higher_mau_flippancy() -> None:
    kw = {"n_users": 1500, "n_days": 59}
    months = simulate.calendar_months(periods.day_of(simulate.DEFAULT_START), 59, 29)
    flips = {}
    for name, s in (
        ("realistic", simulate.realistic_stream(5, **kw)),
        ("adversarial", simulate.adversarial_stream(5, **kw)),
    ):
        t = simulate.exact_truth(s)
        flips[name] = np.concatenate([simulate.membership_flips(t.mau_members, sl) for _, sl in months])
    assert flips["adversarial"].mean() > 2 * flips["realistic"].mean()
    assert np.mean(flips["adversarial"] > 2) > 5 * np.mean(flips["realistic"] > 2)
    assert flips["adversarial"].max() >= 20  # togglers flip (almost) every day


def test_erasure_storm_is_one_day() -> None:
    s = simulate.adversarial_stream(1, n_users=1000, n_days=59, storm_fraction=0.2)
    assert len(s.erased_user) == 200 and len(set(s.erased_day.tolist())) == 1
    t = simulate.exact_truth(s)
    d = int(s.erased_day[0])
    assert not t.dau_members[d][s.erased_user].any()  # the release of the storm day excludes them


# ------------------------------------------------------------------------------------------
# The counter reduction vs an independent per-user model (Jain et al. steps 1-3)
# ------------------------------------------------------------------------------------------


def brute_counted(members: np.ndarray, erased_by_step: list[np.ndarray], w: int) -> list[int]:
    n = members.shape[1]
    s = np.zeros(n, dtype=bool)
    f = np.zeros(n, dtype=int)
    erased = np.zeros(n, dtype=bool)
    out = []
    for t in range(members.shape[0]):
        if t > 0:
            for u in erased_by_step[t]:
                s[u] = False  # the exit of a counted erased user is owed and paid in this step
                erased[u] = True  # and the user is not counted again in this run
        for u in range(n):
            if erased[u]:
                continue
            m = bool(members[t, u])
            if m != s[u] and f[u] < w:
                s[u] = m
                f[u] += 1
        out.append(int(s.sum()))
    return out


@pytest.mark.parametrize("metric", ["dau", "mau"])
@pytest.mark.parametrize("w", [2, 4])
def test_counter_trace_matches_per_user_model(metric: str, w: int) -> None:
    s = simulate.adversarial_stream(
        4, n_users=120, n_days=59, storm_fraction=0.3, params=ChurnParams(withdraw_prob=0.1, erasure_rate=0.0)
    )
    truth = simulate.exact_truth(s)
    period, sl = simulate.month_slices(s, 29)[0]
    trace = rl.counter_trace(s, truth, metric, period, w)
    expected = brute_counted(truth.members(metric)[sl], truth.erased_by_day[sl], w)
    assert trace.counted.tolist() == expected
    assert trace.truth.tolist() == truth.counts(metric)[sl].tolist()
    assert trace.bias.max() <= 0  # even w freezes at 0: counters only under-count
    if w == 2:
        assert trace.blocked_users > 0


def test_counter_releases_use_service_path() -> None:
    s = simulate.realistic_stream(2, n_users=300, n_days=59)
    truth = simulate.exact_truth(s)
    period, _ = simulate.month_slices(s, 29)[0]
    trace = rl.counter_trace(s, truth, "mau", period, 2)
    r1 = rl.counter_releases("sqrt", trace, 3.0, 1e-6, 3, SeededSource(1, "x"))
    r2 = rl.counter_releases("sqrt", trace, 3.0, 1e-6, 3, SeededSource(1, "x"))
    np.testing.assert_array_equal(r1.estimate, r2.estimate)  # seeded: reproducible
    assert np.all((r1.lower <= r1.estimate) & (r1.estimate <= r1.upper))
    assert np.abs(r1.noise).max() < 60  # noise std is a few users at run epsilon 3
