"""The bounded-flippancy reduction against a per-user brute-force model."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.privacy import flippancy
from actors.privacy.flippancy import CounterRun
from journal.events import CounterStarted, CounterStepped, UserErased


def started(w: int = 2, horizon: int = 31) -> CounterStarted:
    return CounterStarted(
        run_id="r",
        metric="mau",
        accounting_period="2026-01",
        first_day=0,
        horizon=horizon,
        window=30,
        kind="sqrt",
        flip_bound=w,
        noise_multiplier=1.0,
        sensitivity=1.0,
        sensitivity_exact=True,
        sigma=1.0,
        lattice_bits=20,
        noise=[0] * horizon,
        epsilon=1.0,
        charge_id="c",
        budget_remaining=0.0,
        started_at=0.0,
        token_secret=b"s" * 32,
        token_scheme="prp64",
    )


class Brute:
    def __init__(self, w: int) -> None:
        self.w, self.s, self.f, self.owed, self.erased = w, {}, {}, 0, set()

    def step(self, members: set[int]) -> int:
        z = -self.owed
        self.owed = 0
        for u in set(self.s) | members:
            if u in self.erased:  # erased during this run: never counted again in it
                continue
            m, s = int(u in members), self.s.get(u, 0)
            if m != s and self.f.get(u, 0) < self.w:
                self.s[u], self.f[u] = m, self.f.get(u, 0) + 1
                z += m - s
        return z

    def erase(self, u: int) -> None:
        if self.s.get(u, 0) == 1:
            self.owed += 1
        self.s.pop(u, None)
        self.f.pop(u, None)
        self.erased.add(u)

    def counted(self) -> list[int]:
        return sorted(u for u, s in self.s.items() if s)


def do_step(run: CounterRun, members: np.ndarray, erased_between=()) -> int:
    proposal = flippancy.plan_step(run, members)
    erased = np.unique(np.array(list(erased_between), dtype=np.int64))
    entered, left, exits = flippancy.adjust_for_erasures(run, proposal, erased, 0)
    for u in erased.tolist():  # journal order: the erasures precede the step record
        flippancy.apply_erasure(run, u)
    step = flippancy.step_event(run, run.t, entered, left, exits, proposal.frozen)
    flippancy.apply_step(run, step)
    return step.z


steps = st.lists(
    st.tuples(st.sets(st.integers(0, 12)), st.sets(st.integers(0, 12), max_size=2)), min_size=1, max_size=25
)


@given(steps, st.sampled_from([2, 4]))
@settings(max_examples=300, deadline=None)
def test_matches_brute_force_including_erasures_during_a_step(sequence, w):
    run, brute = CounterRun(started(w)), Brute(w)
    for members, erased_between in sequence:
        # The step's membership was read before the erasures; they are journaled before it.
        live_members = members - erased_between
        arr = np.array(sorted(members), dtype=np.int64)
        z = do_step(run, arr, erased_between)
        for u in sorted(erased_between):
            brute.erase(u)
        assert z == brute.step(live_members)
        assert run.counted.tolist() == brute.counted()
        assert run.pending_exits == 0
    assert sum(run.z) == len(brute.counted())


def test_user_is_frozen_at_zero_after_w_flips():
    run = CounterRun(started(w=2))
    one = np.array([1], dtype=np.int64)
    none = np.empty(0, dtype=np.int64)
    assert [do_step(run, m) for m in (one, none, one, none, one)] == [1, -1, 0, 0, 0]
    assert run.counted.tolist() == [] and run.frozen_total == 2


def test_erasure_exit_is_never_blocked_and_the_user_cannot_reenter_the_run():
    run = CounterRun(started(w=2))
    one = np.array([1], dtype=np.int64)
    do_step(run, one)  # +1, f=1
    flippancy.apply_erasure(run, 1)
    assert run.pending_exits == 1 and run.counted.tolist() == [] and run.flip_keys.tolist() == []
    assert 1 not in run.blocked.tolist()  # a token, not the pseudonym
    assert do_step(run, np.empty(0, dtype=np.int64)) == -1  # the owed exit
    # erasing and returning must not reset the flip allowance: the contribution stays +1, -1
    assert [do_step(run, m) for m in (one, np.empty(0, dtype=np.int64), one)] == [0, 0, 0]
    assert run.counted.tolist() == [] and run.frozen_total == 2


def test_a_compacted_tombstone_blocks_by_token():
    run = CounterRun(started(w=2))
    token = int(flippancy.tokens(run.started.token_secret, np.array([7], dtype=np.int64))[0])
    flippancy.apply_erasure(run, None, anonymous_exits=0, token=token)
    assert do_step(run, np.array([7, 8], dtype=np.int64)) == 1  # 8 enters, 7 stays out
    assert run.counted.tolist() == [8]


def test_anonymous_exits_from_a_compacted_tombstone():
    run = CounterRun(started())
    flippancy.apply_erasure(run, None, anonymous_exits=2)
    assert do_step(run, np.empty(0, dtype=np.int64)) == -2


# -- the anonymous tombstone (rule 5): what the purge writes instead of the key ---------------

E = 3


def _step_event(run_id: str, t: int, entered=(), left=()):
    return CounterStepped(
        run_id=run_id,
        t=t,
        day=t,
        z=len(entered) - len(left),
        exits_consumed=0,
        entered=np.array(sorted(entered), dtype="<i8").tobytes(),
        left=np.array(sorted(left), dtype="<i8").tobytes(),
        frozen=0,
    )


def _tomb(key=E):
    return UserErased(erasure_id="er", key=key, requested_at=0.0)


def _run(run_id: str, horizon: int = 31, secret: bytes = b"s" * 32):
    return msgspec.structs.replace(started(horizon=horizon), run_id=run_id, token_secret=secret)


@pytest.mark.parametrize(
    "history, owed",
    [
        ([("r1", [E], [])], {"r1": 1}),  # counted when erased
        ([("r1", [E], []), ("r1", [], [E])], {}),  # entered then left: nothing owed
        ([("r1", [E], []), ("r1", [], [E]), ("r1", [E, 5], [])], {"r1": 1}),
        ([("r1", [5], [])], {}),  # never counted
        ([("r1", [E], []), ("r2", [E, 4], []), ("r2", [], [E, 5])], {"r1": 1}),
        ([("r1", [E], []), ("r2", [E], [])], {"r1": 1, "r2": 1}),
        ([], {}),
    ],
)
def test_exits_are_owed_iff_the_user_was_counted_at_the_tombstone(history, owed):
    t: dict[str, int] = {}
    records = []
    for run, entered, left in history:
        t[run] = t.get(run, 0) + 1
        records.append(_step_event(run, t[run], entered, left))
    anon = flippancy.anonymous_tombstone(_tomb(), records)
    assert anon.key is None and anon.erasure_id == "er" and anon.counter_exits == owed
    assert anon.blocked_tokens == {}  # no CounterStarted in the history: no secret known


def test_tokens_only_for_runs_in_progress_with_their_secret():
    history = [
        _run("open"),
        _run("finished", horizon=2),
        _run("shredded", secret=b""),
        _step_event("finished", 1, [E]),
        _step_event("finished", 2),
        _step_event("open", 1, [E]),
    ]
    anon = flippancy.anonymous_tombstone(_tomb(), history)
    token = int(flippancy.tokens(b"s" * 32, np.array([E], dtype=np.int64))[0])
    assert anon.blocked_tokens == {"open": token}
    assert anon.counter_exits == {"finished": 1, "open": 1}
    with pytest.raises(ValueError):
        flippancy.anonymous_tombstone(anon, history)


@settings(max_examples=150, deadline=None)
@given(
    memberships=st.lists(st.sets(st.integers(0, 5)), min_size=1, max_size=12),
    erased_after=st.integers(0, 11),
    w=st.sampled_from([2, 4]),
)
def test_the_anonymous_tombstone_leaves_the_run_where_the_keyed_one_does(memberships, erased_after, w):
    """Replay of the purged history + the anonymous tombstone == replay of the original history
    + the tombstone with its key: the purge changes no counter state (compaction's contract)."""
    horizon = 12
    start = msgspec.structs.replace(started(w=w, horizon=horizon), run_id="r")
    t0 = min(erased_after, len(memberships))
    run = CounterRun(start)
    steps = []
    for members in memberships[:t0]:
        m = np.array(sorted(members), dtype=np.int64)
        p = flippancy.plan_step(run, m)
        entered, left, consumed = flippancy.adjust_for_erasures(run, p, np.empty(0, dtype=np.int64), 0)
        step = flippancy.step_event(run, run.t + 1, entered, left, consumed, p.frozen)
        flippancy.apply_step(run, step)
        steps.append(step)

    keyed = CounterRun(start)
    for s in steps:
        flippancy.apply_step(keyed, s)
    flippancy.apply_erasure(keyed, E)

    anon = flippancy.anonymous_tombstone(_tomb(), [start, *steps])
    purged = CounterRun(start)
    for s in steps:
        e = np.frombuffer(s.entered, "<i8")
        lft = np.frombuffer(s.left, "<i8")
        flippancy.apply_step(
            purged, msgspec.structs.replace(s, entered=e[e != E].tobytes(), left=lft[lft != E].tobytes())
        )
    flippancy.apply_erasure(purged, None, anon.counter_exits.get("r", 0), anon.blocked_tokens.get("r"))

    assert purged.counted.tolist() == keyed.counted.tolist()
    assert purged.pending_exits == keyed.pending_exits
    assert purged.blocked.tolist() == keyed.blocked.tolist()
    assert purged.flip_keys.tolist() == keyed.flip_keys.tolist()
    assert purged.flip_counts.tolist() == keyed.flip_counts.tolist()
    # and from here on the two runs step identically
    for members in memberships[t0:]:
        m = np.array(sorted(members), dtype=np.int64)
        assert do_step(purged, m) == do_step(keyed, m)


# -- tokens follow their key through a salt rotation (rule 6) ---------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(INT64, min_size=1, max_size=50, unique=True), secret=st.binary(min_size=1, max_size=40))
def test_prp_tokens_are_a_permutation_the_secret_inverts(keys, secret):
    arr = np.array(keys, dtype=np.int64)
    toks = flippancy.tokens(secret, arr, "prp64")
    assert len(set(toks.tolist())) == len(keys)  # a permutation: never a collision
    assert [flippancy._unpermute(secret, t) for t in toks.tolist()] == keys
    other = flippancy.tokens(secret + b"x", arr, "prp64")
    assert (toks != other).sum() >= len(keys) - 1  # another run's secret: unrelated tokens


def test_hmac_tokens_of_old_runs_are_still_understood():
    old = msgspec.structs.replace(started(), token_scheme="hmac")
    mac = __import__("hmac").digest(b"s" * 32, (7).to_bytes(8, "little", signed=True), "sha256")
    assert int(flippancy.run_tokens(old, np.array([7]))[0]) == int.from_bytes(mac[:8], "little", signed=True)


def rotate_keys(keys: np.ndarray) -> np.ndarray:
    return (np.asarray(keys, dtype=np.int64) * np.int64(-7046029254386353131)) ^ np.int64(0x5BD1E995)


def test_a_rotated_purged_tombstone_still_blocks_the_same_user_under_the_new_key():
    run = _run("r1")
    anon = flippancy.anonymous_tombstone(_tomb(), [run, _step_event("r1", 1, [E])])
    rotated = flippancy.rekey_tombstone(anon, {"r1": run}, rotate_keys)
    new_key = int(rotate_keys(np.array([E]))[0])
    assert rotated.blocked_tokens == {"r1": int(flippancy.run_tokens(run, np.array([new_key]))[0])}
    assert rotated.counter_exits == anon.counter_exits and rotated.key is None
    live = CounterRun(run)
    flippancy.apply_erasure(live, None, 0, rotated.blocked_tokens["r1"])
    assert do_step(live, np.array([new_key, 8], dtype=np.int64)) == 1  # 8 enters; E (now new_key) stays out
    # a tombstone still awaiting its purge just has its key mapped
    assert flippancy.rekey_tombstone(_tomb(), {"r1": run}, rotate_keys).key == new_key


def test_rotation_cannot_follow_one_way_tokens_of_a_run_in_progress_but_ignores_shredded_ones():
    legacy = msgspec.structs.replace(_run("old"), token_scheme="hmac")
    anon = flippancy.anonymous_tombstone(_tomb(), [legacy])
    with pytest.raises(flippancy.CannotRekey, match="old"):
        flippancy.rekey_tombstone(anon, {"old": legacy}, rotate_keys)
    shredded = msgspec.structs.replace(legacy, token_secret=b"")
    assert flippancy.rekey_tombstone(anon, {"old": shredded}, rotate_keys) == anon
