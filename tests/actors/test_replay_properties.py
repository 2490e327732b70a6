"""The event-sourcing invariants, on hypothesis-generated streams through the real system:

live state == full replay == snapshot + tail replay == compacted replay == brute-force model,
replaying twice changes nothing, and idempotent retries are not applied twice. Purges run in the
middle of the stream too, and "crash" images of the data directory are taken at the moments a
``kill -9`` could hit (after a purge committed, before its snapshots were replaced): the newest
valid snapshot + tail of every image equals the full replay of that image and the live state at
that instant, and a kept snapshot is usable exactly while no rewrite happened after it. The streams
include scheduled publications (a fake clock moved a day per ``tick``), refusals and the
schedule's recorded start.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import tempfile
from pathlib import Path

import anyio
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.erasure import purge_erased
from actors.refusals import BudgetExhausted
from actors.state import periods
from actors.state.world import World, WorldSnapshot
from actors.system import restore_world
from journal import compaction, location
from journal.location import JournalSpec
from journal.snapshots import _HEADER, SnapshotStore
from tests import pg
from tests.support import FakeClock, Model, crash_image_and_state, day, ingest, running_system, sqlite_spec
from tests.support import settings as engine_settings

BASE = day("2025-03-20")  # long closed: releases are allowed
USERS = st.integers(1, 8)
ROW = st.tuples(USERS, st.integers(0, 20), st.sampled_from([0, 1, 1]))
OPS = st.one_of(
    st.tuples(st.just("batch"), st.lists(ROW, min_size=1, max_size=12), st.booleans()),
    st.tuples(st.just("erase"), USERS),
    st.tuples(st.just("snapshot")),
    st.tuples(st.just("release"), st.sampled_from(["dau", "mau"]), st.integers(0, 20)),
    st.tuples(st.just("purge"), st.booleans()),  # True: "crash" after the purge committed
    st.tuples(st.just("crash")),
    st.tuples(st.just("tick")),
)


def snapshot_epoch(path: Path) -> int:
    """The journal epoch a snapshot file says it was taken at (its header). Not the journal's
    epoch after ``snapshot()`` returns: a background shredding can commit in between."""
    return int(_HEADER.unpack_from(path.read_bytes())[5])


def canonical(snap: WorldSnapshot, *, with_erasure_status: bool = True) -> dict:
    out = {
        "days": {d.day: np.frombuffer(d.members, dtype="<i8").tolist() for d in snap.days if len(d.members)},
        "ingest": sorted((k, n, a, b) for k, n, a, b, _ in snap.ingest.entries),
        "releases": [(r.release_id, r.estimate, r.lower_95, r.upper_95) for r in snap.releases.releases],
        "runs": sorted(
            (
                r.started.run_id,
                np.frombuffer(r.counted, dtype="<i8").tolist(),
                np.frombuffer(r.flip_keys, dtype="<i8").tolist(),
                list(r.flip_counts),
                r.z,
                r.pending_exits,
                np.frombuffer(r.blocked, dtype="<i8").tolist(),
            )
            for r in snap.releases.runs
        ),
        "ledger": [c.charge_id for c in snap.ledger.charges],
        "schedule": (
            snap.releases.start,
            [r.refusal_id for r in snap.releases.refusals],
            [r.scheduled_lag for r in snap.releases.releases],
        ),
    }
    if with_erasure_status:
        out["erasures"] = sorted((e.erasure_id, e.key, e.purged_at) for e in snap.erasures.entries)
    else:
        out["erasures"] = sorted(e.erasure_id for e in snap.erasures.entries)
    return out


async def check_image(image: JournalSpec, live: dict, engine) -> None:
    journal = await image.open()
    try:
        full, _ = await restore_world(journal, None, engine, use_snapshot=False)
        restored, _ = await restore_world(journal, image.snapshot_store(), engine)
        assert canonical(full.snapshot()) == live
        assert canonical(restored.snapshot()) == live
    finally:
        await journal.close()


async def scenario(ops, workdir: Path, spec: JournalSpec) -> None:
    model = Model()
    retries: list[tuple[str, list, tuple]] = []
    kept: list[tuple[Path, int]] = []  # (copy of a snapshot, journal epoch when it was taken)
    images: list[tuple[JournalSpec, dict]] = []
    # exercise the counter state, the schedule (with revisions) and its refusals too
    engine = engine_settings(
        w_bound=2,
        mau_mechanism="sqrt",
        release_schedule="daily",
        schedule_poll_seconds=3600.0,
        revision_lags_days="1",
        dau_budget_total=1.0,
        purge_delay_seconds=1e9,  # the fake clock moves days; purges happen only where the stream says
    )
    clock = FakeClock(f"{periods.iso(BASE + 21)}T12:00")
    async with running_system(spec, engine, clock=clock) as system:
        # The boot's first schedule tick journals RELEASE_START in the background; let it land,
        # or a crash image and the live state captured just after it could straddle that commit.
        with anyio.fail_after(60):
            while system.release_actor.book.start is None:
                await anyio.sleep(0.01)
        for i, op in enumerate(ops):
            if op[0] == "batch":
                rows = [(u, BASE + d, o) for u, d, o in op[1]]
                key = f"req-{i}" if op[2] else None
                receipt, replayed = await ingest(system, rows, key)
                assert not replayed
                for u, d, o in rows:
                    model.apply(u, d, o)
                if key:
                    retries.append((key, rows, (receipt.first_seq, receipt.last_seq)))
            elif op[0] == "erase":
                await system.erase(op[1])
                model.erase(op[1])
            elif op[0] == "snapshot":
                path = await system.snapshot()
                kept.append((workdir / f"kept-{i}.snap", snapshot_epoch(path)))
                shutil.copyfile(path, kept[-1][0])
            elif op[0] == "purge":
                outstanding = system.erasure.book.outstanding()
                targets = [compaction.PurgeTarget(e.erasure_id, e.key, e.seq, e.requested_at) for e in outstanding]
                if op[1] and targets:  # the process dies after the commit, before the snapshots
                    await system.committer.run_job(lambda journal, t=targets: purge_erased(journal, t))
                    image, at_crash = await crash_image_and_state(system, workdir / f"image-{i}")
                    images.append((image, canonical(at_crash)))
                    await system._replace_snapshots()
                else:
                    await system._purge(outstanding)
            elif op[0] == "crash":
                image, at_crash = await crash_image_and_state(system, workdir / f"image-{i}")
                images.append((image, canonical(at_crash)))
            elif op[0] == "tick":
                clock.now += dt.timedelta(days=1)
                await system.scheduler.tick()
            else:
                window = 1 if op[1] == "dau" else 30
                with contextlib.suppress(BudgetExhausted):
                    await system.release((op[1], BASE + op[2], window))
        # idempotent retries: same answer, nothing applied twice
        head = system.journal.head
        for key, rows, seqs in retries:
            receipt, replayed = await ingest(system, rows, key)
            assert replayed and (receipt.first_seq, receipt.last_seq) == seqs
        assert system.journal.head == head
        live = canonical(await system.collect())

    for image, at_crash in images:
        await check_image(image, at_crash, engine)

    journal = await spec.open()
    try:
        # The epoch the journal ended at: a finished counter run's secret is shredded by a
        # background job that may still run between ``collect`` and the shutdown.
        final_epoch = journal.epoch
        full, _ = await restore_world(journal, None, engine, use_snapshot=False)
        assert canonical(full.snapshot()) == live
        assert full.counts() == model.counts()

        again = World()
        async for records in journal.read(0):
            for rec in records:
                again.apply(rec)
        async for records in journal.read(0):  # replaying twice is idempotent
            for rec in records:
                again.apply(rec)
        assert canonical(again.snapshot()) == live

        for n, (copy, epoch) in enumerate(kept):
            alone = workdir / f"alone-{n}"
            alone.mkdir()
            shutil.copyfile(copy, alone / "snapshot-0.snap")
            tail, from_seq = await restore_world(journal, SnapshotStore(alone), engine)
            assert (from_seq is not None) == (epoch == final_epoch)  # usable iff no rewrite since
            assert canonical(tail.snapshot()) == live

        targets = [
            compaction.PurgeTarget(e.erasure_id, e.key, e.seq, e.requested_at)
            for e in full.erasures.entries.values()
            if e.key is not None
        ]
        if targets:
            await purge_erased(journal, targets)
            compacted, _ = await restore_world(journal, None, engine, use_snapshot=False)
            assert canonical(compacted.snapshot(), with_erasure_status=False) == {
                **live,
                "erasures": canonical(full.snapshot(), with_erasure_status=False)["erasures"],
            }
            assert compacted.counts() == model.counts()
    finally:
        await journal.close()


@given(st.lists(OPS, min_size=1, max_size=14))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_live_equals_replay_equals_snapshot_tail_equals_compacted(ops):
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(scenario, ops, Path(tmp), sqlite_spec(Path(tmp) / "data"))


@given(st.lists(OPS, min_size=1, max_size=14))
@settings(
    max_examples=15,  # each example is a fresh database, and a purge is VACUUM FULL + CHECKPOINT
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_live_equals_replay_equals_snapshot_tail_equals_compacted_on_postgresql(pg_server, ops):
    """The same invariants on the PostgreSQL journal; a crash image there is the data directory
    plus a copy of the database taken in the same exclusive job (``tests.support.crash_image``)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = pg.fresh_database(pg_server)
        anyio.run(scenario, ops, Path(tmp), location.parse(url, Path(tmp) / "data"))
