"""The bounded-flippancy reduction (Jain, Kalemaj, Raskhodnikova, Sivakumar, Smith, NeurIPS 2023).

Rules:
1. Per continual-counter run (one metric, one accounting period) every user has a *counted*
   membership s_u (starts at 0) and a number of flips used f_u. At step t, with true membership
   m_u(t): if m_u(t) != s_u and f_u < w, s_u flips and f_u += 1; otherwise the user is frozen.
   With even w a user past the bound is frozen at 0 (not counted).
2. z_t = (number of 0->1 flips) - (number of 1->0 flips) - (anonymous exits owed by erasures).
   z is what the counter in ``counters.py`` releases prefix sums of.
3. An erasure removes the user from the run immediately: if counted, the exit is owed as an
   anonymous -1 (``pending_exits``) folded into the next step, and the user's per-user entries
   are forgotten. With even w a counted user always has a flip left, so the exit can never be
   blocked by the bound. The user may not re-enter *this run*: otherwise erasing and returning
   would reset the flip allowance and break the bound the sensitivity relies on. Instead of the
   pseudonym (which the purge removes from disk), the run remembers a token: the key under a
   keyed 64-bit permutation (``token_scheme`` "prp64", rule 6); the run secret lives in
   ``CounterStarted`` and is shredded when the run ends, after which no token links to anyone.
   Activity after an erasure counts again from the next run (the next accounting period) on, as
   a new user.
4. Everything here is pure and deterministic: ``plan_step`` proposes a step from a membership
   array, ``finish_step`` turns it into the journaled ``CounterStepped``, ``apply_step`` applies
   a journaled step. Live and replay both go through
   ``apply_step``/``apply_erasure`` in journal order, so they cannot disagree.
5. When the purge removes an erased user's pseudonym from the journal, what the runs still need
   from that erasure is decided here (``anonymous_tombstone``), not in ``journal/``: per run, the
   exit owed (the user was counted at the tombstone) and, per run still in progress whose secret
   is not shredded, the blocking token. ``journal.compaction`` only writes what it is given.
6. A salt rotation maps every key k to k' = HMAC(new secret, k); a returning user arrives as k'.
   So a token must follow its key through the rotation, or the user would re-enter the run with
   a fresh flip allowance (sensitivity 2.25 instead of 1.786 at T = 31, w = 2). A "prp64" token
   is a permutation of the key, so the rotation re-keys it without the key being stored:
   token' = P(k' ) = P(map(P^-1(token))) (``rekey_tombstone``). P is a balanced Feistel network
   (8 rounds, HMAC-SHA256 round function, keyed by the run secret; Luby-Rackoff): a PRP, so
   tokens never collide and reveal nothing without the secret -- the same exposure as a keyed
   hash, since whoever holds the run secret and a candidate key can test either. A run journaled
   with one-way "hmac" tokens (before this) cannot be re-keyed: rotation is refused, naming the
   run, until its secret is shredded at its end.

Privacy argument (why the counter's sensitivity is taken over alternating patterns): a user's
contribution to z is +1 at each 0->1 flip and -1 at each 1->0 flip of *their own* s_u, and
whether they flip depends only on their own events and f_u. So it alternates +1, -1, ... starting
at +1, with at most w non-zeros -- exactly the class ``counters.alternating_sensitivity``
maximises over. Removing a user's events removes that contribution and nothing else. The anonymous
exit of an erasure is the same user's final -1, only recorded without the identifier.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec
import numpy as np

from actors.state import membership
from actors.state.membership import EMPTY
from journal.events import CounterStarted, CounterStepped, TokenScheme, UserErased

TOKEN_SCHEME: TokenScheme = "prp64"  # what new runs use (rule 6)
_ROUNDS = 8
_MASK32 = 0xFFFF_FFFF
_MASK64 = 0xFFFF_FFFF_FFFF_FFFF
_DOMAIN = b"dpdau-run-token"


def _round(secret: bytes, i: int, half: int) -> int:
    mac = hmac.digest(secret, _DOMAIN + bytes([i]) + half.to_bytes(4, "little"), hashlib.sha256)
    return int.from_bytes(mac[:4], "little")


def _permute(secret: bytes, key: int) -> int:
    """Balanced Feistel network on 64 bits (rule 6): (L, R) -> (R, L ^ F_i(R)) for each round."""
    block = key & _MASK64
    left, right = block >> 32, block & _MASK32
    for i in range(_ROUNDS):
        left, right = right, left ^ _round(secret, i, right)
    out = (left << 32) | right
    return out - (1 << 64) if out >> 63 else out


def _unpermute(secret: bytes, token: int) -> int:
    block = token & _MASK64
    left, right = block >> 32, block & _MASK32
    for i in reversed(range(_ROUNDS)):
        left, right = right ^ _round(secret, i, left), left
    out = (left << 32) | right
    return out - (1 << 64) if out >> 63 else out


def _hmac_token(secret: bytes, key: int) -> int:
    mac = hmac.digest(secret, key.to_bytes(8, "little", signed=True), hashlib.sha256)
    return int.from_bytes(mac[:8], "little", signed=True)


def tokens(secret: bytes, keys: np.ndarray, scheme: TokenScheme = TOKEN_SCHEME) -> np.ndarray:
    """How a counter run remembers erased users without their pseudonyms (rules 3 and 6):
    ``CounterStarted.token_secret`` keys it, ``UserErased.blocked_tokens`` holds the results."""
    make = _permute if scheme == "prp64" else _hmac_token
    return np.array([make(secret, k) for k in np.asarray(keys, dtype=np.int64).tolist()], dtype=np.int64)


def run_tokens(started: CounterStarted, keys: np.ndarray) -> np.ndarray:
    return tokens(started.token_secret, keys, started.token_scheme)


class CannotRekey(ValueError):
    """A run in progress holds one-way ("hmac") tokens a salt rotation cannot follow (rule 6)."""


def rekey_tombstone(
    tombstone: UserErased, runs: dict[str, CounterStarted], mapping: Callable[[np.ndarray], np.ndarray]
) -> UserErased:
    """The tombstone after a salt rotation (rule 6): its key mapped, or -- once purged -- each
    blocking token re-keyed through its run's permutation. Tokens of runs whose secret is
    shredded link to no one and stay as they are."""
    if tombstone.key is not None:
        return msgspec.structs.replace(tombstone, key=int(mapping(np.array([tombstone.key], dtype=np.int64))[0]))
    blocked: dict[str, int] = {}
    for run_id, token in tombstone.blocked_tokens.items():
        started = runs.get(run_id)
        if started is None or not started.token_secret:
            blocked[run_id] = token
            continue
        if started.token_scheme != "prp64":
            raise CannotRekey(
                f"counter run {run_id} ({started.metric} {started.accounting_period}) keeps erased users out with "
                "one-way tokens that a salt rotation cannot re-key; rotate after the run's last day is released "
                "(its secret is then shredded)"
            )
        key = _unpermute(started.token_secret, token)
        new_key = int(mapping(np.array([key], dtype=np.int64))[0])
        blocked[run_id] = _permute(started.token_secret, new_key)
    return msgspec.structs.replace(tombstone, blocked_tokens=blocked)


@dataclass(frozen=True, slots=True)
class StepProposal:
    entered: np.ndarray
    left: np.ndarray
    frozen_keys: np.ndarray  # sorted: users whose membership changed but who may not flip (rule 1, 3)

    @property
    def frozen(self) -> int:
        return len(self.frozen_keys)


@dataclass
class CounterRun:
    started: CounterStarted
    counted: np.ndarray = field(default_factory=lambda: EMPTY)  # sorted keys with s_u = 1
    flip_keys: np.ndarray = field(default_factory=lambda: EMPTY)  # sorted keys with f_u > 0
    flip_counts: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint8))
    z: list[int] = field(default_factory=list)
    pending_exits: int = 0
    frozen_total: int = 0
    blocked: np.ndarray = field(default_factory=lambda: EMPTY)  # sorted tokens of erased users

    @property
    def t(self) -> int:
        return len(self.z)

    @property
    def run_id(self) -> str:
        return self.started.run_id

    def flips_of(self, keys: np.ndarray) -> np.ndarray:
        if len(self.flip_keys) == 0 or len(keys) == 0:
            return np.zeros(len(keys), dtype=np.uint8)
        i = np.searchsorted(self.flip_keys, keys)
        i[i == len(self.flip_keys)] = 0
        hit = self.flip_keys[i] == keys
        return np.where(hit, self.flip_counts[i], 0).astype(np.uint8)


def plan_step(run: CounterRun, members: np.ndarray) -> StepProposal:
    """Flips at the next step given the true membership (rule 1). Does not change ``run``."""
    w = run.started.flip_bound
    joining = membership.difference(members, run.counted)
    leaving = membership.difference(run.counted, members)
    allowed = run.flips_of(joining) < w
    if len(run.blocked) and len(joining):  # rule 3: erased during this run, frozen at 0
        allowed &= ~membership.contains(run.blocked, run_tokens(run.started, joining))
    # A counted user has used an odd number of flips, so with even w it always has one left.
    left_ok = run.flips_of(leaving) < w
    # After the step, exactly these users' counted membership differs from the truth.
    return StepProposal(
        entered=joining[allowed],
        left=leaving[left_ok],
        frozen_keys=membership.union([joining[~allowed], leaving[~left_ok]]),
    )


def adjust_for_erasures(
    run: CounterRun, proposal: StepProposal, erased: np.ndarray, exits: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Fold erasures journaled after the proposal's membership snapshot into the step.

    ``erased`` are keys erased since the snapshot (sorted unique); ``exits`` anonymous exits
    from compacted tombstones in the same interval. Returns (entered, left, exits_consumed).
    An erased key neither enters nor leaves here: if it was counted, its erasure (applied
    before this step in journal order) already owes its exit, which this step consumes.
    """
    entered = membership.difference(proposal.entered, erased)
    left = membership.difference(proposal.left, erased)
    counted_erased = int(membership.contains(run.counted, erased).sum()) if len(erased) else 0
    return entered, left, run.pending_exits + counted_erased + exits


def apply_step(run: CounterRun, step: CounterStepped) -> None:
    entered = np.frombuffer(step.entered, dtype="<i8").astype(np.int64)
    left = np.frombuffer(step.left, dtype="<i8").astype(np.int64)
    run.counted = membership.union([membership.difference(run.counted, left), entered])
    flipped = membership.union([entered, left])
    if len(flipped):
        _add_flips(run, flipped)
    run.pending_exits -= step.exits_consumed
    run.z.append(step.z)
    run.frozen_total += step.frozen


def _add_flips(run: CounterRun, flipped: np.ndarray) -> None:
    keys = np.concatenate([run.flip_keys, flipped])
    counts = np.concatenate([run.flip_counts, np.ones(len(flipped), dtype=np.uint8)])
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    uniq, start = np.unique(keys, return_index=True)
    run.flip_keys = uniq
    run.flip_counts = np.add.reduceat(counts, start).astype(np.uint8) if len(keys) else counts


def apply_erasure(run: CounterRun, key: int | None, anonymous_exits: int = 0, token: int | None = None) -> None:
    """Rule 3. ``key`` is None for a compacted tombstone, which carries its exit and token instead."""
    run.pending_exits += anonymous_exits
    if key is not None and run.started.token_secret:
        token = int(run_tokens(run.started, np.array([key], dtype=np.int64))[0])
    if token is not None:
        run.blocked = membership.union([run.blocked, np.array([token], dtype=np.int64)])
    if key is None:
        return
    probe = np.array([key], dtype=np.int64)
    if membership.contains(run.counted, probe)[0]:
        run.counted = membership.difference(run.counted, probe)
        run.pending_exits += 1
    if membership.contains(run.flip_keys, probe)[0]:
        keep = run.flip_keys != key
        run.flip_keys, run.flip_counts = run.flip_keys[keep], run.flip_counts[keep]


def finish_step(run: CounterRun, proposal: StepProposal, day: int, erased: np.ndarray, exits: int) -> CounterStepped:
    """The journaled step: ``proposal`` (from ``plan_step`` on the membership the step read) with
    the erasures journaled since folded in (``adjust_for_erasures``). The service calls it inside
    the journal writer (release actor rule 5); the evaluation calls the same function."""
    entered, left, consumed = adjust_for_erasures(run, proposal, erased, exits)
    return step_event(run, day, entered, left, consumed, proposal.frozen)


def step_event(
    run: CounterRun, day: int, entered: np.ndarray, left: np.ndarray, exits: int, frozen: int
) -> CounterStepped:
    return CounterStepped(
        run_id=run.run_id,
        t=run.t + 1,
        day=day,
        z=int(len(entered) - len(left) - exits),
        exits_consumed=int(exits),
        entered=np.ascontiguousarray(entered, dtype="<i8").tobytes(),
        left=np.ascontiguousarray(left, dtype="<i8").tobytes(),
        frozen=frozen,
    )


def anonymous_tombstone(tombstone: UserErased, history: Iterable[CounterStarted | CounterStepped]) -> UserErased:
    """The tombstone without its key, carrying what the runs still need from it (rule 5).

    ``history`` is every counter record before the tombstone, in journal order, as journaled
    (still holding the key). Exit owed to a run: the user's net flips in it are positive (it was
    counted when erased). Token: for every run that had not stepped its whole horizon at the
    tombstone and still has its secret, so the user cannot re-enter it (rule 3).
    """
    key = tombstone.key
    if key is None:
        raise ValueError("the tombstone is already anonymous")
    net: dict[str, int] = {}
    steps: dict[str, int] = {}
    runs: dict[str, CounterStarted] = {}
    for record in history:
        if isinstance(record, CounterStarted):
            runs[record.run_id] = record
            continue
        steps[record.run_id] = steps.get(record.run_id, 0) + 1
        entered = np.frombuffer(record.entered, dtype="<i8")
        left = np.frombuffer(record.left, dtype="<i8")
        flips = int((entered == key).sum()) - int((left == key).sum())
        if flips:
            net[record.run_id] = net.get(record.run_id, 0) + flips
    probe = np.array([key], dtype=np.int64)
    blocked = {
        run_id: int(run_tokens(started, probe)[0])
        for run_id, started in runs.items()
        if started.token_secret and steps.get(run_id, 0) < started.horizon
    }
    exits = {run_id: 1 for run_id, n in net.items() if n > 0}
    return msgspec.structs.replace(tombstone, key=None, counter_exits=exits, blocked_tokens=blocked)
