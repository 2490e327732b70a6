"""Pseudonym shards on a real PostgreSQL journal (``actors/system/cuts.py``, ``topology.py``): two
shards and a gateway as ``ActorSystem``s in one process, the gateway reaching the shards through
an in-process ``ShardClient`` (the HTTP route is tested end to end in tests/e2e). Every user lives
in exactly one shard; the sum of the shards' shares at a cut is the exact count of the whole
journal at the cut's position; erasures after the cut are subtracted; a shard restarted past a
cut refuses it; each shard's snapshot holds its own users only."""

from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import numpy as np
import pytest

from actors.refusals import ShardsUnavailable
from actors.state.release_book import ReleaseKey
from actors.state.world import World
from actors.system import ActorSystem
from actors.system.cuts import CutUnavailable
from actors.system.topology import Topology, shard_name
from journal import events as ev
from journal import location
from tests.support import Model, day, ingest, running_system
from tests.support import settings as engine_settings

BASE = day("2025-03-02")  # long closed


class InProcess:
    """A ShardClient over the shards' CutBooks in this process ("mem://i" addresses)."""

    def __init__(self) -> None:
        self.shards: dict[str, ActorSystem] = {}

    async def count(self, address: str, cut_id: str, seq: int) -> int:
        return await self._book(address).count(cut_id, seq)

    async def among(self, address: str, cut_id: str, seq: int, keys: Sequence[int]) -> int:
        return await self._book(address).among(cut_id, seq, np.array(keys, dtype=np.int64))

    def _book(self, address: str):
        try:
            return self.shards[address].cut_book()
        except (KeyError, CutUnavailable) as exc:
            raise ShardsUnavailable(f"{address}: {exc!r}") from None


async def start_shard(stack: AsyncExitStack, url: str, tmp: Path, client: InProcess, i: int, n: int = 2) -> ActorSystem:
    topology = Topology(name=shard_name(i, n), shard=(i, n), address=f"mem://{i}")
    system = await stack.enter_async_context(
        running_system(location.parse(url, tmp / "data"), engine_settings(), topology=topology)
    )
    client.shards[f"mem://{i}"] = system
    return system


async def deployment(stack: AsyncExitStack, url: str, tmp: Path) -> tuple[ActorSystem, list[ActorSystem], InProcess]:
    client = InProcess()
    shards = [await start_shard(stack, url, tmp, client, i) for i in range(2)]
    gateway = await stack.enter_async_context(
        running_system(
            location.parse(url, tmp / "data"), engine_settings(), topology=Topology(shards=2), shard_client=client
        )
    )
    for s in shards:  # registered before the first release asks for them
        await s.journal.register(s.member())
    return gateway, shards, client


def model_at(records: list[ev.StoredRecord], seq: int) -> Model:
    model = Model()
    for rec in records:
        if rec.seq > seq:
            break
        if isinstance(rec.event, ev.ActivityBatchRecorded):
            for k, d, o in zip(rec.event.key_array(), rec.event.day_array(), rec.event.op_array()):
                model.apply(int(k), int(d), int(o))
        elif isinstance(rec.event, ev.UserErased) and rec.event.key is not None:
            model.erase(rec.event.key)
    return model


async def all_records(system: ActorSystem) -> list[ev.StoredRecord]:
    out = []
    async for records in system.journal.read(0):
        out.extend(records)
    return out


async def test_the_shards_sum_to_the_exact_count_at_the_cut(pg_url, tmp_path):
    rng = random.Random(3)
    async with AsyncExitStack() as stack:
        gateway, shards, _ = await deployment(stack, pg_url, tmp_path)

        async def traffic() -> None:
            for i in range(60):
                rows = [(rng.randint(1, 300), BASE + rng.randint(0, 9), rng.choice([0, 1, 1, 1])) for _ in range(20)]
                await ingest(gateway, rows, f"t-{i}")
                if i % 7 == 0:
                    await gateway.erase(rng.randint(1, 300))

        cuts = []

        async def count_meanwhile() -> None:
            for end in range(3, 10):
                for window in (1, 3, 30):
                    days = range(BASE + end - window + 1, BASE + end + 1)
                    summary, seen, _ = await gateway.release_actor._count(days, gateway.settings.sketch)
                    cuts.append((days, seen, summary.exact))

        async with anyio.create_task_group() as tg:
            tg.start_soon(traffic)
            tg.start_soon(count_meanwhile)
        records = await all_records(gateway)
        for days, seen, exact in cuts:  # each count is the whole journal's, exactly at its cut
            model = model_at(records, seen)
            assert exact == len({k for k, d in model.active if d in days}), (days, seen)
        assert len({seen for _, seen, _ in cuts}) > 3  # the cuts fell between different records
        # every user lives in exactly one shard, and together they hold everyone
        await followed([gateway, *shards])
        held = [await members_of(s) for s in shards]
        assert held[0] and held[1] and not held[0] & held[1]
        assert held[0] | held[1] == model_at(records, records[-1].last_seq).active


async def members_of(system: ActorSystem) -> set[tuple[int, int]]:
    """(key, day) of every member, once every dispatched record is applied (a barrier)."""
    _, days, _ = await system.router.barrier()
    return {(int(k), d) for d, m in days.items() for k in m.base}


async def followed(systems: list[ActorSystem], timeout: float = 60) -> None:
    head = await systems[0].journal.refresh_head()
    with anyio.fail_after(timeout):
        while any(s.committer.dispatched_seq < head for s in systems):
            for s in systems:
                s.committer.follow()
            await anyio.sleep(0.01)


async def test_an_erasure_after_the_cut_is_subtracted_from_the_release(pg_url, tmp_path):
    async with AsyncExitStack() as stack:
        gateway, _, _ = await deployment(stack, pg_url, tmp_path)
        await ingest(gateway, [(k, BASE, 1) for k in range(1, 51)])
        summary, seen, among = await gateway.release_actor._count(range(BASE, BASE + 1), gateway.settings.sketch)
        assert summary.exact == 50
        await gateway.erase(7)
        await gateway.erase(9999)  # nobody
        await ingest(gateway, [(7, BASE, 1), (51, BASE, 1)])  # after the cut: not in it
        assert await among(np.array([7, 9999, 51], dtype=np.int64)) == 1
        # and through the release path: the erasure lands between the cut and the commit
        release = await gateway.release(ReleaseKey.dau(BASE))
        assert release.seen_seq > seen


async def test_releases_over_shards_are_published_once_and_survive_a_shard_restart(pg_url, tmp_path):
    async with AsyncExitStack() as stack:
        gateway, shards, client = await deployment(stack, pg_url, tmp_path)
        await ingest(gateway, [(k, BASE + d, 1) for k in range(1, 40) for d in range(5)])
        first = await gateway.release(ReleaseKey.mau(BASE + 4, 30))
        assert await gateway.release(ReleaseKey.mau(BASE + 4, 30)) == first  # from the book, free
        # A cut the shard 0 process took is gone when it restarts from its snapshot: refused, not guessed.
        (marked,) = await gateway.committer.append(
            [ev.CutMarked(cut_id="c1", first_day=BASE, last_day=BASE, marked_at=0.0)]
        )
        await shards[0].snapshot()
        await followed([gateway, *shards])
        await stack.aclose()
    async with AsyncExitStack() as stack:
        client = InProcess()
        shard0 = await start_shard(stack, pg_url, tmp_path, client, 0)
        assert shard0.restored_from is not None and shard0.restored_from >= marked.seq
        with pytest.raises(CutUnavailable):
            await shard0.cut_book().count("c1", marked.seq)
        # each shard's snapshot holds only its own users
        world = World()
        async for records in shard0.journal.read(0):
            for rec in records:
                world.apply(rec)
        mine = {k for k, _ in await members_of(shard0)}
        everyone = {int(k) for m in world.days.values() for k in m.folded().base}
        assert mine and mine < everyone


async def test_a_missing_shard_is_503_and_nothing_is_charged(pg_url, tmp_path):
    async with AsyncExitStack() as stack:
        gateway, shards, client = await deployment(stack, pg_url, tmp_path)
        await ingest(gateway, [(k, BASE, 1) for k in range(1, 10)])
        del client.shards["mem://1"]
        with pytest.raises(ShardsUnavailable) as refused:
            await gateway.release(ReleaseKey.dau(BASE))
        # cuts rule 6: the refusal names the shard's index; its address (which the client's
        # failure names) stays out of what a reader is told
        assert "shard 1 of 2 unreachable" in str(refused.value)
        assert "mem://" not in str(refused.value)
        records = await all_records(gateway)
        assert not [r for r in records if isinstance(r.event, (ev.BudgetCharged, ev.Released))]
        client.shards["mem://1"] = shards[1]
        assert (await gateway.release(ReleaseKey.dau(BASE))).metric == "dau"


def test_every_kind_of_process_keeps_its_snapshots_apart():
    """Topology rule 3: the snapshot directory says what its files hold."""
    import argparse

    from gateway import config as config_mod
    from gateway.cli import serve_topology
    from gateway.workers import worker_name

    cfg = config_mod.load({"JOURNAL_URL": "postgresql://u@127.0.0.1:5/db"}, dotenv=None)

    def topology(**flags) -> Topology:
        args = argparse.Namespace(**{"workers": 1, "shard": None, "shards": None, "advertise": None, **flags})
        return serve_topology(args, cfg)

    names = {
        "single": topology().name,
        "worker": worker_name(topology(workers=2), 1),
        "gateway": topology(shards=2).name,
        "gateway worker": worker_name(topology(workers=2, shards=2), 1),
        "shard": topology(shard="0/2").name,
        "other layout": topology(shard="0/4").name,
    }
    assert len(set(names.values())) == len(names), names
    assert names["single"] == "" and names["shard"] == "shard-0of2"
