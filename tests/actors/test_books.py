"""The pure state machines behind the accountant, erasure, release and ingest actors."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from actors.privacy import accounting
from actors.state.erasure_book import ErasureBook, receipt, status_of
from actors.state.idempotency import IdempotencyIndex, batch_digest
from actors.state.ledger import Ledger
from actors.state.release_book import ReleaseBook, key_of
from journal import events as ev


def charge(metric="dau", period="2025-01", sigma=13.0, cid="c1", reads=None):
    return ev.BudgetCharged(
        charge_id=cid,
        metric=metric,
        accounting_period=period,
        periods=reads or [period],
        mechanism="discrete_gaussian",
        parameter=sigma,
        sensitivity=1.0,
        epsilon=0.3,
        delta=1e-6,
        charged_at=0.0,
        purpose="release",
    )


def released(rid, day=100, revision=0):
    return ev.Released(
        release_id=rid,
        metric="dau",
        day=day,
        revision=revision,
        estimate=5,
        lower_95=0,
        upper_95=10,
        mechanism="gaussian",
        noise=ev.NoiseParams(distribution="discrete_gaussian", sigma=13.0),
        epsilon_used=0.3,
        delta=1e-6,
        charge_id="c",
        accounting_period="1970-04",
        sketch_impl="set",
        guarantee="g",
        budget_remaining=1.0,
        seen_seq=1,
        released_at=0.0,
    )


def test_ledger_groups_charges_by_metric_and_period_and_skips_replayed_records():
    ledger = Ledger()
    ledger.apply(1, charge())
    ledger.apply(2, charge(metric="mau", cid="c2"))
    ledger.apply(2, charge(cid="dup"))  # at or below applied_seq: ignored
    ledger.apply(3, charge(period="2025-02", cid="c3"))
    assert [c.parameter for c in ledger.charges("dau", "2025-01")] == [13.0]
    assert ledger.periods() == ["2025-01", "2025-02"]
    restored = Ledger.restore(ledger.snapshot())
    assert restored.charges("mau", "2025-01") == ledger.charges("mau", "2025-01") and restored.applied_seq == 3
    assert accounting.compose_epsilon(restored.charges("dau", "2025-01"), 1e-6) > 0


def test_erasure_book_status_moves_pending_applied_purged_and_drops_the_key():
    book = ErasureBook()
    book.apply(5, ev.UserErased(erasure_id="e1", key=42, requested_at=100.0))
    entry = book.entries["e1"]
    assert status_of(entry, days_seen_seq=4, snapshots_clean_seq=0) == "pending"
    assert status_of(entry, days_seen_seq=5, snapshots_clean_seq=0) == "applied"
    assert [e.erasure_id for e in book.due(now=399.0, delay=300)] == [] and book.next_due(300) == 400.0
    assert [e.erasure_id for e in book.due(now=400.0, delay=300)] == ["e1"]
    book.apply(9, ev.ErasurePurged(erasure_id="e1", requested_at=100.0, purged_at=401.0, events_removed=3))
    assert entry.key is None and entry.purged_seq == 9 and book.awaiting_purge() == 0
    assert status_of(entry, 9, snapshots_clean_seq=8) == "applied"  # snapshots not rewritten yet
    assert receipt(entry, 9, snapshots_clean_seq=9).status == "purged"
    assert receipt(entry, 9, 9).events_removed == 3
    assert ErasureBook.restore(book.snapshot()).entries["e1"].purged_seq == 9


def test_release_book_keeps_every_revision_and_answers_the_latest():
    book = ReleaseBook()
    first, second = released("r1"), released("r2", revision=1)
    book.apply(3, first)
    book.apply(3, released("ignored"))  # replayed twice: ignored
    book.apply(7, second)
    assert key_of(first) == ("dau", 100, 1)
    assert book.latest(("dau", 100, 1)) is second and [r.release_id for r in book.log] == ["r1", "r2"]
    assert book.latest(("dau", 101, 1)) is None
    again = ReleaseBook.restore(book.snapshot())
    assert again.latest(("dau", 100, 1)) == second and again.applied_seq == 7


def test_idempotency_index_remembers_the_newest_keys_only():
    index = IdempotencyIndex(kept=2)
    keys, days, ops = np.array([1, 2]), np.array([10, 10]), np.array([1, 1], dtype=np.uint8)
    digest = batch_digest(keys, days, ops, [])
    for i, name in enumerate(["a", "b", "c"]):
        batch = ev.ActivityBatchRecorded.from_arrays(
            keys, days, ops, received_at=0.0, idempotency_key=name, request_digest=digest
        )
        index.apply(10 * i + 1, 10 * i + 2, batch)
    assert index.lookup("a") is None and index.lookup("c").first_seq == 21 and len(index) == 2
    assert batch_digest(keys, days, ops, []) != batch_digest(keys, days, ops, [(0, b"{}")])


def test_world_split_by_day_keeps_journal_order_within_a_day():
    from actors.state.world import split_by_day

    batch = ev.ActivityBatchRecorded.from_arrays(
        np.array([1, 2, 1, 3]), np.array([5, 6, 5, 5]), np.array([1, 1, 0, 1], dtype=np.uint8), received_at=0.0
    )
    got = {d: (k.tolist(), o.tolist()) for d, k, o in split_by_day(batch)}
    assert got == {5: ([1, 1, 3], [1, 0, 1]), 6: ([2], [1])}


@pytest.mark.parametrize(
    "bad",
    [
        {"dau_mechanism": "x"},
        {"w_bound": 3},
        {"delta": 0},
        {"sketch_impl": "hll"},
        {"sketch_impl": "hllpp", "sketch_lg_k": 3},
    ],
)
def test_engine_settings_refuse_nonsense(bad):
    from actors.settings import EngineSettings

    with pytest.raises(ValueError):
        EngineSettings(**bad)


def test_ledger_charges_a_release_to_every_period_it_reads_and_counts_it_once_across_them():
    ledger = Ledger()
    ledger.apply(1, charge(cid="d1"))  # DAU of a January day
    ledger.apply(2, charge(metric="mau", period="2025-02", cid="m1", reads=["2025-01", "2025-02"]))
    ledger.apply(3, charge(metric="mau", period="2025-02", cid="m2"))
    assert len(ledger.period_charges("2025-01")) == 2 and len(ledger.period_charges("2025-02")) == 2
    assert len(ledger.charges("mau", "2025-01")) == 1 and ledger.charges("dau", "2025-02") == []
    assert len(ledger.reaching(["2025-01", "2025-02"])) == 3  # m1 once, not twice
    assert len(ledger.all_charges()) == 3
    restored = Ledger.restore(ledger.snapshot())
    assert restored.period_charges("2025-01") == ledger.period_charges("2025-01")
    assert restored.reaching(["2025-01"]) == ledger.reaching(["2025-01"])


def test_ledger_completes_a_version_1_charge_from_the_release_it_paid_for():
    from actors.state import periods

    v1 = msgspec.msgpack.encode(
        {
            k: v
            for k, v in msgspec.to_builtins(charge(metric="mau", period="2025-02", cid="old")).items()
            if k not in ("periods", "periods_complete")
        }
    )
    old = ev.decode(ev.BudgetCharged.KIND, 1, v1)
    assert old.periods == ["2025-02"] and old.periods_complete is False
    ledger = Ledger()
    ledger.apply(1, old)
    assert ledger.period_charges("2025-01") == []  # only its own period until the release is seen
    window = msgspec.structs.replace(
        released("r"), metric="mau", day=None, end=periods.parse_day("2025-02-10"), window=30, charge_id="old"
    )
    ledger.apply(2, window)
    assert len(ledger.period_charges("2025-01")) == 1 and len(ledger.period_charges("2025-02")) == 1
    assert ledger.records[0].periods == ["2025-01", "2025-02"] and ledger.records[0].periods_complete
    assert Ledger.restore(ledger.snapshot()).period_charges("2025-01") == ledger.period_charges("2025-01")
