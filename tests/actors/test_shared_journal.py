"""Several systems sharing one PostgreSQL journal (the processes of ``dpdau serve --workers N``,
here two ``ActorSystem``s with their own data directories in one test process, on a real server):
each follows what the others commit (``Committer`` rule 7) and ends with the state a brute-force
model of the whole journal gives; an Idempotency-Key is journaled once whoever receives it;
concurrent coordinators publish a key once and never overspend a period (release rule 4);
an erasure is purged once."""

from __future__ import annotations

import random
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import numpy as np
import pytest

from actors.privacy import accounting, mechanisms
from actors.refusals import BudgetExhausted
from actors.state.release_book import ReleaseKey
from actors.system import ActorSystem
from journal import events as ev
from journal import location
from tests.support import FakeClock, Model, day, ingest, running_system
from tests.support import settings as engine_settings

BASE = day("2025-03-02")  # long closed


async def all_records(system: ActorSystem) -> list[ev.StoredRecord]:
    out = []
    async for records in system.journal.read(0):
        out.extend(records)
    return out


async def followed(systems: list[ActorSystem], timeout: float = 60) -> int:
    """Wait until every system has dispatched everything committed (condition, not a sleep)."""
    head = await systems[0].journal.refresh_head()
    with anyio.fail_after(timeout):
        while any(s.committer.dispatched_seq < head for s in systems):
            for s in systems:
                s.committer.follow()
            await anyio.sleep(0.01)
    return head


def members(system: ActorSystem) -> dict[int, list[int]]:
    return {
        d: sorted(int(k) for k in a.state.folded().base) for d, a in system.router.days.items() if len(a.state.folded())
    }


async def two_systems(stack: AsyncExitStack, url: str, tmp: Path, **engine) -> list[ActorSystem]:
    return [
        await stack.enter_async_context(
            running_system(location.parse(url, tmp / f"data-{i}"), engine_settings(**engine))
        )
        for i in range(2)
    ]


async def test_writers_follow_each_other_and_agree_with_the_model(pg_url, tmp_path):
    rng = random.Random(9)
    model = Model()
    async with AsyncExitStack() as stack:
        systems = await two_systems(stack, pg_url, tmp_path)
        receipts: dict[str, tuple[int, int]] = {}

        async def client(n: int) -> None:
            for i in range(25):
                rows = [
                    (rng.randint(1, 40), BASE + rng.randint(0, 5), rng.choice([0, 1, 1]))
                    for _ in range(rng.randint(1, 30))
                ]
                key = f"c{n}-{i}"
                receipt, _ = await ingest(systems[(n + i) % 2], rows, key)
                receipts[key] = (receipt.first_seq, receipt.last_seq)
                if rng.random() < 0.1:
                    await systems[i % 2].erase(rows[0][0])

        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(client, n)
        head = await followed(systems)
        for rec in await all_records(systems[0]):
            if isinstance(rec.event, ev.ActivityBatchRecorded):
                for k, d, o in zip(rec.event.key_array(), rec.event.day_array(), rec.event.op_array()):
                    model.apply(int(k), int(d), int(o))
            elif isinstance(rec.event, ev.UserErased) and rec.event.key is not None:
                model.erase(rec.event.key)
        expected = {d: sorted(k for k, dd in model.active if dd == d) for d in sorted({d for _, d in model.active})}
        assert members(systems[0]) == members(systems[1]) == expected
        assert all(s.committer.followed_records > 0 for s in systems)  # each dispatched the other's records
        # a retry reaching the *other* writer is answered from the first record, and writes nothing
        for key, seqs in list(receipts.items())[:10]:
            for s in systems:
                first = await s.journal.idempotent_record(key)
                assert first is not None and (first.seq, first.last_seq) == seqs
                rows = list(
                    zip(
                        first.event.key_array().tolist(),
                        first.event.day_array().tolist(),
                        first.event.op_array().tolist(),
                    )
                )
                receipt, replayed = await ingest(s, rows, key)
                assert replayed and (receipt.first_seq, receipt.last_seq) == seqs
        assert await systems[0].journal.refresh_head() == head


async def test_one_idempotency_key_sent_to_both_at_once_is_journaled_once(pg_url, tmp_path):
    async with AsyncExitStack() as stack:
        systems = await two_systems(stack, pg_url, tmp_path)
        rows = [(7, BASE, 1), (8, BASE, 1)]
        for attempt in range(20):
            answers: list[tuple[int, int, bool]] = []

            async def send(s: ActorSystem, key: str = f"same-{attempt}", answers: list = answers) -> None:
                receipt, replayed = await ingest(s, rows, key)
                answers.append((receipt.first_seq, receipt.last_seq, replayed))

            async with anyio.create_task_group() as tg:
                for s in systems:
                    tg.start_soon(send, s)
            assert len({(a, b) for a, b, _ in answers}) == 1  # both answered with the one record
            assert sorted(r for _, _, r in answers) == [False, True]
        batches = [r for r in await all_records(systems[0]) if isinstance(r.event, ev.ActivityBatchRecorded)]
        assert len(batches) == 20


async def test_coordinators_in_two_processes_publish_each_key_once(pg_url, tmp_path):
    async with AsyncExitStack() as stack:
        systems = await two_systems(stack, pg_url, tmp_path)
        await ingest(systems[0], [(k, BASE + d, 1) for k in range(1, 30) for d in range(4)])
        await followed(systems)
        keys = [ReleaseKey.dau(BASE + d) for d in range(4)] + [ReleaseKey.mau(BASE + 3, 30)]
        answers: dict[ReleaseKey, set[str]] = {k: set() for k in keys}

        async def ask(s: ActorSystem, key: ReleaseKey) -> None:
            answers[key].add((await s.release(key)).release_id)

        async with anyio.create_task_group() as tg:
            for key in keys:
                for s in systems * 3:
                    tg.start_soon(ask, s, key)
        assert all(len(ids) == 1 for ids in answers.values())  # every asker got the same record
        released = [r.event for r in await all_records(systems[0]) if isinstance(r.event, ev.Released)]
        charges = [r.event for r in await all_records(systems[0]) if isinstance(r.event, ev.BudgetCharged)]
        assert len(released) == len(keys) == len(charges)  # one release, one charge per key


@pytest.mark.parametrize("limit", [None, 50.0])
async def test_coordinators_in_two_processes_never_overspend_a_period(pg_url, tmp_path, limit):
    """A cap that fits exactly four DAU releases; both systems race to release eight days of the
    same month (and revise them): exactly four charges land, and their composition fits."""
    eps = 0.3
    one = mechanisms.calibrate("gaussian", eps, 1e-6).charge
    cap = (accounting.compose_epsilon([one] * 4, 1e-6) + accounting.compose_epsilon([one] * 5, 1e-6)) / 2
    async with AsyncExitStack() as stack:
        systems = await two_systems(
            stack, pg_url, tmp_path, period_budget_total=cap, dau_budget_total=cap, user_epsilon_limit=limit
        )
        await ingest(systems[1], [(k, BASE + d, 1) for k in range(1, 10) for d in range(8)])
        await followed(systems)
        refused = 0

        async def ask(s: ActorSystem, d: int) -> None:
            nonlocal refused
            try:
                if d % 3 == 0:
                    await s.release(ReleaseKey.dau(BASE + d))
                    await s.revise(ReleaseKey.dau(BASE + d))
                else:
                    await s.release(ReleaseKey.dau(BASE + d))
            except BudgetExhausted:
                refused += 1

        async with anyio.create_task_group() as tg:
            for d in range(8):
                for s in systems:
                    tg.start_soon(ask, s, d)
        charges = [r.event for r in await all_records(systems[0]) if isinstance(r.event, ev.BudgetCharged)]
        assert len(charges) == 4 and refused > 0
        spent = accounting.compose_epsilon(
            [accounting.Charge(c.mechanism, c.parameter, c.sensitivity) for c in charges], 1e-6
        )
        assert spent <= cap


async def test_an_erasure_is_purged_once_with_two_purgers(pg_url, tmp_path):
    async with AsyncExitStack() as stack:
        systems = await two_systems(stack, pg_url, tmp_path)
        await ingest(systems[0], [(5, BASE, 1), (6, BASE, 1), (5, BASE + 1, 1)])
        receipt = await systems[1].erase(5)
        await followed(systems)
        entries = [s.erasure.book.entries[receipt.erasure_id] for s in systems]
        async with anyio.create_task_group() as tg:
            for s, entry in zip(systems, entries):
                tg.start_soon(s._purge, [entry])
        await followed(systems)
        records = await all_records(systems[0])
        audits = [r.event for r in records if isinstance(r.event, ev.ErasurePurged)]
        assert len(audits) == 1 and audits[0].events_removed == 2
        assert all(s.erasure.book.entries[receipt.erasure_id].purged_at is not None for s in systems)
        assert not any(
            5 in np.frombuffer(r.event.keys, "<i8") for r in records if isinstance(r.event, ev.ActivityBatchRecorded)
        )


async def test_counter_runs_in_two_processes_start_once_and_step_once(pg_url, tmp_path):
    """``MAU_MECHANISM=sqrt`` with two whole-state workers: both race through the same month's
    days; one run is started (one charge), each step t is journaled once, each day released once."""
    async with AsyncExitStack() as stack:
        systems = await two_systems(stack, pg_url, tmp_path, mau_mechanism="sqrt")
        await ingest(systems[0], [(k, BASE + d, 1) for k in range(1, 30) for d in range(8) if (k + d) % 3])
        await followed(systems)
        answers: dict[int, set[str]] = {d: set() for d in range(8)}

        async def ask(s: ActorSystem, d: int) -> None:
            answers[d].add((await s.release(ReleaseKey.mau(BASE + d, 30))).release_id)

        async with anyio.create_task_group() as tg:
            for d in (7, 2, 5, 0, 3, 6, 1, 4):
                for s in systems:
                    tg.start_soon(ask, s, d)
        records = await all_records(systems[0])
        started = [r.event for r in records if isinstance(r.event, ev.CounterStarted)]
        steps = [r.event.t for r in records if isinstance(r.event, ev.CounterStepped)]
        released = [r.event for r in records if isinstance(r.event, ev.Released)]
        assert len(started) == 1 and len([r for r in records if isinstance(r.event, ev.BudgetCharged)]) == 1
        assert steps == list(range(1, BASE + 8 - started[0].first_day + 1))  # every step once, in order
        assert len(released) == len(steps) and all(len(ids) == 1 for ids in answers.values())


async def test_two_schedulers_publish_each_slot_once(pg_url, tmp_path):
    """``RELEASE_SCHEDULE=daily`` in two processes at once (release rule 4): every due slot is
    published by one of them, never twice, and the schedule's start is recorded once."""
    clock = FakeClock("2025-03-01T12:00")
    async with AsyncExitStack() as stack:
        systems = [
            await stack.enter_async_context(
                running_system(
                    location.parse(pg_url, tmp_path / f"data-{i}"),
                    engine_settings(release_schedule="daily", schedule_poll_seconds=3600.0, revision_lags_days="1"),
                    clock=clock,
                )
            )
            for i in range(2)
        ]
        await ingest(systems[0], [(k, day("2025-03-01") + d, 1) for k in range(1, 20) for d in range(5)])
        for when in ("2025-03-03T12:00", "2025-03-06T12:00"):
            clock.set(when)
            async with anyio.create_task_group() as tg:
                for s in systems:
                    tg.start_soon(s.scheduler.tick)
        records = await all_records(systems[0])
        starts = [r for r in records if isinstance(r.event, ev.ReleaseStartRecorded)]
        slots = [
            (r.event.metric, r.event.day if r.event.metric == "dau" else r.event.end, r.event.scheduled_lag)
            for r in records
            if isinstance(r.event, ev.Released)
        ]
        assert len(starts) == 1 and slots and len(slots) == len(set(slots))
        assert {lag for _, _, lag in slots} == {0, 1}  # first publications and their revisions
