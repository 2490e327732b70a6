"""Salt rotation must not re-open a counter run to an erased user (flippancy rule 6): journal ->
erase -> purge -> rotate -> the same user returns -> still frozen for the rest of the run."""

from __future__ import annotations

import msgspec
import pytest

from actors.privacy import counters, flippancy, mechanisms
from gateway import config as config_mod
from gateway import identity
from gateway.rotation import rotate
from journal import events as ev
from tests.support import day, ingest, running_system
from tests.support import settings as engine_settings

NOV = [day("2025-11-01") + i for i in range(30)]
SQRT = engine_settings(mau_mechanism="sqrt")


@pytest.fixture
def zero_noise(monkeypatch):
    monkeypatch.setattr(mechanisms, "draw", lambda cal, rng=None: 0)
    monkeypatch.setattr(counters, "draw_counter_noise", lambda plan, rng=None: [0] * plan.rows)


def pseudonyms(data, version: int) -> identity.Pseudonymizer:
    return identity.open_pseudonymizer(data, None, False, version)


async def test_an_erased_user_stays_out_of_the_run_after_purge_and_rotation(tmp_path, zero_noise):
    data = tmp_path / "data"
    users = ["ann", "bob", "cat", "dan", "eve"]
    async with running_system(data, SQRT) as system:
        ids = pseudonyms(data, system.journal.key_version)
        await ingest(system, [(ids.key(u), NOV[0], 1) for u in users])
        assert (await system.release(("mau", NOV[0], 30))).estimate == 5
        await system.erase(ids.key("cat"))
        await ingest(system, [(ids.key("cat"), NOV[2], 1)])  # comes back: not in this run
        assert (await system.release(("mau", NOV[2], 30))).estimate == 4
        await system._purge(system.erasure.book.outstanding())  # the tombstone keeps only a token

    cfg = config_mod.load(environ={"DATA_DIR": str(data), "MAU_MECHANISM": "sqrt"}, dotenv=None)
    out = await rotate(cfg)
    assert out["key_version"] == 1

    async with running_system(data, SQRT) as system:
        ids = pseudonyms(data, system.journal.key_version)
        # the same people under the new keys, and a newcomer
        await ingest(system, [(ids.key(u), NOV[4], 1) for u in [*users, "fay"]])
        # ann, bob, dan, eve still counted (their flips followed the rotation), fay enters, cat stays out
        assert (await system.release(("mau", NOV[4], 30))).estimate == 5
        await ingest(system, [(ids.key("cat"), NOV[9], 1)])
        assert (await system.release(("mau", NOV[9], 30))).estimate == 5  # still frozen, later in the run
        run = system.release_actor.book.run_for("mau", "2025-11")
        assert run is not None and len(run.blocked) == 1


async def test_rotation_is_refused_and_changes_nothing_while_a_run_with_one_way_tokens_is_in_progress(
    tmp_path, zero_noise, monkeypatch
):
    monkeypatch.setattr(flippancy, "TOKEN_SCHEME", "hmac")  # a run journaled before rule 6
    data = tmp_path / "data"
    async with running_system(data, SQRT) as system:
        ids = pseudonyms(data, system.journal.key_version)
        await ingest(system, [(ids.key(u), NOV[0], 1) for u in ("ann", "bob")])
        await system.release(("mau", NOV[0], 30))
        await system.erase(ids.key("ann"))
        await system._purge(system.erasure.book.outstanding())
        before = [r async for chunk in system.journal.read(0) for r in chunk]
    cfg = config_mod.load(environ={"DATA_DIR": str(data), "MAU_MECHANISM": "sqrt"}, dotenv=None)
    with pytest.raises(flippancy.CannotRekey, match="2025-11"):
        await rotate(cfg)
    assert not identity.keyring_path(data).with_name("keyring.new").exists()
    assert identity.load_rotations(data) == []
    async with running_system(data, SQRT) as system:
        assert system.journal.key_version == 0
        after = [r async for chunk in system.journal.read(0) for r in chunk]
    assert [msgspec.msgpack.encode(r.event) for r in after[: len(before)]] == [
        msgspec.msgpack.encode(r.event) for r in before
    ]
    assert not any(isinstance(r.event, ev.SaltRotated) for r in after)
