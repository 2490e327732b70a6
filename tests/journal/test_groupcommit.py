"""journal/groupcommit.py: one writer, group commit, ack after commit + dispatch, backpressure."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import anyio
import pytest

from journal import events as ev
from journal.events import StoredRecord
from journal.groupcommit import Closed, Committer, Overloaded
from journal.store import SqliteJournal as Journal
from tests.journal.helpers import batch, budget_charge, erased, read_all, refuse_kind


class Recorder:
    """A dispatch that remembers every call; optionally waits on a gate or raises."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.calls: list[list[StoredRecord]] = []
        self.delay = delay
        self.gate: anyio.Event | None = None
        self.entered = anyio.Event()
        self.raise_on_call: int | None = None  # 0-based call index that raises

    async def __call__(self, records: list[StoredRecord]) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await anyio.sleep(self.delay)
        index = len(self.calls)
        self.calls.append(list(records))
        if self.raise_on_call == index:
            raise DispatchBoom(f"dispatch call {index} failed")

    @property
    def records(self) -> list[StoredRecord]:
        return [r for call in self.calls for r in call]


class DispatchBoom(Exception):
    pass


@asynccontextmanager
async def running(journal: Journal, dispatch, **kw):
    committer = Committer(journal, dispatch, **kw)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(committer.run)
            try:
                yield committer
            except BaseException:
                tg.cancel_scope.cancel()
                raise
            await committer.drain_and_stop()


def assert_contiguous(records: list[StoredRecord]) -> None:
    for a, b in zip(records, records[1:]):
        assert b.seq == a.last_seq + 1


# -- group commit ------------------------------------------------------------------------------


async def test_many_concurrent_submits_share_few_transactions(journal):
    rec = Recorder()
    n = 60
    requests = [
        [batch([i * 100 + j for j in range(1 + i % 4)])] + ([erased(i, f"er-{i}")] if i % 5 == 0 else [])
        for i in range(n)
    ]
    results: dict[int, list[StoredRecord]] = {}
    async with running(journal, rec) as c:

        async def client(i: int) -> None:
            results[i] = await c.append(requests[i])

        async with anyio.create_task_group() as clients:
            for i in range(n):
                clients.start_soon(client, i)
    assert len(rec.calls) == c.stats.groups
    assert c.stats.groups < n  # group commit happened
    assert c.stats.events == sum(max(e.size, 1) for r in requests for e in r) == journal.head
    for i in range(n):
        got = results[i]
        assert [r.event for r in got] == requests[i]  # each future gets exactly its own records
        assert all(a is b for a, b in zip((r.event for r in got), requests[i]))
        assert_contiguous(got)
    everything = sorted((r for rs in results.values() for r in rs), key=lambda r: r.seq)
    assert_contiguous(everything)
    assert everything[0].seq == 1 and everything[-1].last_seq == journal.head
    # dispatch saw every record exactly once, in journal order
    assert [(r.seq, r.event) for r in rec.records] == [(r.seq, r.event) for r in everything]
    assert [(r.seq, r.event) for r in await read_all(journal)] == [(r.seq, r.event) for r in everything]
    assert c.dispatched_seq == journal.head
    assert c.pending_events == 0


async def test_synchronous_burst_is_one_group_in_submit_order(journal):
    rec = Recorder()
    async with running(journal, rec) as c:
        futs = [c.submit([batch([i, -i])]) for i in range(1, 21)]
        results = [await f for f in futs]
    assert len(rec.calls) == 1 and c.stats.groups == 1
    assert [r[0].seq for r in results] == list(range(1, 41, 2))
    assert [r[0].event.key_array().tolist() for r in results] == [[i, -i] for i in range(1, 21)]


async def test_groups_respect_max_group_events(journal):
    rec = Recorder()
    async with running(journal, rec, max_group_events=10) as c:
        futs = [c.submit([batch([i, i, i, i])]) for i in range(9)]
        big = c.submit([batch(list(range(25)))])  # larger than a group: goes alone, not refused
        for f in futs:
            await f
        await big
    sizes = [sum(r.last_seq - r.seq + 1 for r in call) for call in rec.calls]
    assert sizes == [8, 8, 8, 8, 4, 25]
    assert journal.head == 9 * 4 + 25


async def test_future_resolves_only_after_dispatch_saw_the_records(journal):
    rec = Recorder()
    rec.gate = anyio.Event()
    async with running(journal, rec) as c:
        fut = c.submit([batch([1, 2, 3])])
        await rec.entered.wait()
        await anyio.sleep(0.05)
        assert journal.head == 3  # committed ...
        assert not fut.done()  # ... but not acknowledged while dispatch has not returned
        assert rec.calls == []
        rec.gate.set()
        got = await fut
        assert rec.calls == [got]
        assert c.dispatched_seq == 3


# -- backpressure ------------------------------------------------------------------------------


async def test_overloaded_when_the_queue_bound_would_be_exceeded(journal):
    rec = Recorder()
    async with running(journal, rec, max_pending_events=10) as c:
        f1 = c.submit([batch([1, 2, 3, 4, 5, 6])])
        with pytest.raises(Overloaded) as info:
            c.submit([batch([7, 8, 9, 10, 11])])
        assert isinstance(info.value.retry_after, int) and 1 <= info.value.retry_after <= 30
        with pytest.raises(Overloaded):
            c.submit([erased(1)] * 5)  # control records count one event each
        f2 = c.submit([batch([12, 13]), erased(14), budget_charge()])  # 6 + 4 == 10: fits exactly
        assert c.pending_events == 10
        r1, r2 = await f1, await f2
        assert c.pending_events == 0
        # once drained, the same request is accepted
        r3 = await c.submit([batch([7, 8, 9, 10, 11])])
    assert [r.seq for r in r1 + r2 + r3] == [1, 7, 9, 10, 11]
    assert journal.head == 15
    written = [
        k for r in await read_all(journal, kinds=[ev.ActivityBatchRecorded.KIND]) for k in r.event.key_array().tolist()
    ]
    assert written == [1, 2, 3, 4, 5, 6, 12, 13, 7, 8, 9, 10, 11]  # the refused request was not written
    assert [r.seq for r in rec.records] == [1, 7, 9, 10, 11]


async def test_retry_after_is_clamped_and_follows_the_commit_rate(journal):
    c = Committer(journal, Recorder(), max_pending_events=10)
    c.submit([batch(list(range(10)))])  # no writer running: stays queued
    c.stats.recent_rate = 0.001
    with pytest.raises(Overloaded) as slow:
        c.submit([batch([1])])
    c.stats.recent_rate = 1e9
    with pytest.raises(Overloaded) as fast:
        c.submit([batch([1])])
    c.stats.recent_rate = 2.0  # 10 pending at 2 events/s: 5 s
    with pytest.raises(Overloaded) as mid:
        c.submit([batch([1])])
    assert (slow.value.retry_after, fast.value.retry_after, mid.value.retry_after) == (30, 1, 5)
    assert c.pending_events == 10


# -- exclusive work ----------------------------------------------------------------------------


async def test_append_prepared_runs_after_earlier_groups_are_dispatched_and_commits_alone(journal):
    rec = Recorder(delay=0.02)  # a slow consumer: the callback must still see everything
    observed = []

    def prepare():
        observed.append((len(rec.records), journal.head, c.dispatched_seq))
        return [budget_charge("prepared", purpose=str(len(rec.records)))]

    async with running(journal, rec, max_group_events=4) as c:
        earlier = [c.submit([batch([i, i])]) for i in range(5)]  # several groups
        prepared = asyncio.ensure_future(c.append_prepared(prepare))
        await asyncio.sleep(0)  # the prepared item is queued now
        later = c.submit([batch([99])])
        p = await prepared
        before = [r for f in earlier for r in await f]
        after = await later
    assert observed == [(5, 10, 10)]
    assert len(p) == 1 and p[0].seq == 11 and p[0].event.purpose == "5"
    assert after[0].seq == 12
    assert [r.seq for r in before] == [1, 3, 5, 7, 9]
    assert [call for call in rec.calls if any(r.seq == 11 for r in call)] == [p]  # alone in its dispatch


async def test_append_prepared_with_nothing_to_write(journal):
    rec = Recorder()
    async with running(journal, rec) as c:
        assert await c.append_prepared(lambda: []) == []
        assert (await c.append([batch([1])]))[0].seq == 1
    assert [len(call) for call in rec.calls] == [1]


async def test_append_prepared_callback_error_rejects_only_that_call(journal):
    rec = Recorder()

    def broken():
        raise LookupError("no such release")

    async with running(journal, rec) as c:
        with pytest.raises(LookupError):
            await c.append_prepared(broken)
        assert c.failure is None
        assert (await c.append([batch([1])]))[0].seq == 1


async def test_run_job_is_exclusive_and_its_records_are_dispatched(journal):
    rec = Recorder()
    job_started = anyio.Event()
    heads = []

    async def job(j: Journal) -> list[StoredRecord]:
        heads.append(j.head)
        job_started.set()
        await anyio.sleep(0.05)  # requests arriving meanwhile must wait
        heads.append(j.head)
        return await j.append([budget_charge("job"), erased(None, "er-job")])

    async with running(journal, rec) as c:
        first = await c.append([batch([1, 2])])
        job_task = asyncio.ensure_future(c.run_job(job))
        await job_started.wait()
        during = c.submit([batch([3])])
        await anyio.sleep(0.01)
        assert not during.done()
        job_records = await job_task
        during_records = await during
    assert heads == [2, 2]
    assert [r.seq for r in job_records] == [3, 4]
    assert during_records[0].seq == 5
    assert rec.calls == [first, job_records, during_records]
    assert c.dispatched_seq == journal.head == 5


# -- failures ----------------------------------------------------------------------------------


async def test_failing_job_rejects_its_future_and_the_committer_keeps_serving(journal):
    rec = Recorder()

    async def bad_job(j: Journal) -> list[StoredRecord]:
        async with j.transaction():
            await j.append_in_transaction([budget_charge("never")])
            raise RuntimeError("job failed")

    async with running(journal, rec) as c:
        await c.append([batch([1])])
        with pytest.raises(RuntimeError, match="job failed"):
            await c.run_job(bad_job)
        assert c.failure is None
        assert journal.head == 1 and await journal.count_rows() == 1
        after = await c.append([batch([2])])
    assert after[0].seq == 2
    assert [r.seq for r in rec.records] == [1, 2]


async def test_journal_write_failure_rejects_only_that_groups_futures(journal, db_dir):
    rec = Recorder()
    await refuse_kind(journal, db_dir, ev.BudgetCharged.KIND)
    async with running(journal, rec, max_group_events=1) as c:  # one request per group
        ok1 = c.submit([batch([1])])
        bad = c.submit([batch([2]), budget_charge()])
        ok2 = c.submit([batch([3])])
        r1 = await ok1
        with pytest.raises(Exception, match="refused"):
            await bad
        r2 = await ok2
        assert c.failure is None
        assert c.stats.failures == 1
        assert c.pending_events == 0
        r3 = await c.append([batch([4])])
    keys = [r.event.key_array().tolist() for r in await read_all(journal)]
    assert keys == [[1], [3], [4]]  # nothing of the failed group, not even its good batch
    assert [r.event for r in rec.records] == [r1[0].event, r2[0].event, r3[0].event]


async def test_a_failed_group_takes_down_its_whole_group_but_not_the_next(journal, db_dir):
    rec = Recorder()
    await refuse_kind(journal, db_dir, ev.BudgetCharged.KIND)
    async with running(journal, rec) as c:
        same_group = [c.submit([batch([1])]), c.submit([budget_charge()])]
        for f in same_group:
            with pytest.raises(Exception, match="refused"):
                await f
        assert c.failure is None
        await c.append([batch([2])])
    assert [r.event.key_array().tolist() for r in await read_all(journal)] == [[2]]
    assert [r.event.key_array().tolist() for r in rec.records] == [[2]]


async def test_after_a_failed_group_the_next_group_continues_the_seqs_densely(journal, db_dir):
    rec = Recorder()
    await refuse_kind(journal, db_dir, ev.BudgetCharged.KIND)
    async with running(journal, rec) as c:
        await c.append([batch([1, 2])])
        with pytest.raises(Exception, match="refused"):
            await c.append([batch([3]), budget_charge()])
        after = await c.append([batch([4])])
    assert after[0].seq == 3
    assert c.dispatched_seq == journal.head == 3


async def test_dispatch_failure_stops_the_committer(journal):
    rec = Recorder()
    rec.gate = anyio.Event()
    rec.raise_on_call = 0
    async with running(journal, rec) as c:
        first = c.submit([batch([1])])
        await rec.entered.wait()  # committed, dispatch in progress
        queued = c.submit([batch([2])])
        rec.gate.set()
        got = await first  # durable, so acknowledged
        assert got[0].seq == 1
        with pytest.raises(Closed):
            await queued
        assert isinstance(c.failure, DispatchBoom)
        with pytest.raises(Closed):
            c.submit([batch([3])])
        with pytest.raises(Closed):
            await c.run_job(lambda j: j.append([budget_charge()]))
        with pytest.raises(Closed):
            await c.append_prepared(lambda: [budget_charge()])
    assert journal.head == 1 and await journal.count_rows() == 1
    assert c.dispatched_seq == 0  # the failed dispatch is not counted as delivered
    assert c.pending_events == 0


async def test_job_that_commits_then_fails_does_not_silently_diverge(journal):
    rec = Recorder()

    async def job(j: Journal) -> list[StoredRecord]:
        await j.append([budget_charge("committed")])
        raise OSError("checkpoint failed after the commit")

    async with running(journal, rec) as c:
        with pytest.raises(OSError):
            await c.run_job(job)
        assert journal.head == 1  # the record is durable
        # either the committed records reached the actors, or the committer reports the divergence
        assert c.dispatched_seq == journal.head or c.failure is not None


async def test_drain_and_stop_commits_what_was_queued(journal):
    rec = Recorder(delay=0.01)
    stopped = anyio.Event()
    c = Committer(journal, rec, max_group_events=3)

    async def writer():
        await c.run()
        stopped.set()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            futs = [c.submit([batch([i])]) for i in range(1, 11)]
            await c.drain_and_stop()
            assert stopped.is_set()
            assert all(f.done() and not f.cancelled() and f.exception() is None for f in futs)
            with pytest.raises(Closed):
                c.submit([batch([11])])
    assert [f.result()[0].seq for f in futs] == list(range(1, 11))
    assert journal.head == 10 and len(rec.records) == 10
    assert c.info() == {"pending_events": 0, "dispatched_seq": 10, "head": 10}


async def test_a_cancelled_request_does_not_disturb_its_group(journal):
    rec = Recorder()
    async with running(journal, rec) as c:
        gone = c.submit([batch([1])])
        stays = c.submit([batch([2])])
        gone.cancel()
        got = await stays
        assert got[0].seq == 2
        assert c.failure is None
    # the cancelled request was already queued: it is written (a client retry is then idempotent)
    assert journal.head == 2
