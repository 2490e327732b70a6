"""Everything a reader-scoped client can reach carries no exact count, no journal position, and
nothing that differs between a user who existed and one who never did (issue 7, section 4).

A real server with scoped keys; an ingest client runs a scripted workload (known exact counts,
a withdrawal, two erasures -- one of a user with events, one of a user who never existed -- and
their purge); then a reader collects every status, header and JSON value of every route it can
reach, allowed or refused, and every value is checked against the exact numbers of the workload.

The release values themselves (``estimate``, ``lower_95``, ``upper_95``) are the differentially
private publication: each equals its exact count with probability about 1/(sigma sqrt(2 pi)) by
design (3% at sigma 13), so they are not compared here (``tests/actors/test_release_engine.py``
checks that they do not equal the exact count more often than chance).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.support import Http, ServerProcess

pytestmark = pytest.mark.e2e

KEYS = {
    "READ_API_KEY": "reader-key-0123456789",
    "INGEST_API_KEY": "ingest-key-0123456789",
    "ADMIN_API_KEY": "admin-key-0123456789",
}
DAYS = ["2025-05-11", "2025-05-12", "2025-05-13", "2025-05-14"]
SIZES = [137, 149, 158, 167]  # users active per day: distinctive numbers, none a date part or a default
RELEASE_FIELDS = {"estimate", "lower_95", "upper_95"}
INT = re.compile(r"(?<![\w.])\d+(?![\w.])")  # whole integers in a string (not digits of a decimal or an id)


def flatten(value, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from flatten(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from flatten(v, f"{path}[{i}]")
    else:
        yield path, value


def test_a_reader_sees_no_exact_count_position_or_membership(tmp_path):
    env = {**KEYS, "PURGE_DELAY_SECONDS": "1", "SNAPSHOT_EVERY_SECONDS": "1"}
    with ServerProcess(tmp_path / "data", env) as server:
        base = f"http://127.0.0.1:{server.port}"
        ingest, reader, admin = (Http(base, KEYS[k]) for k in ("INGEST_API_KEY", "READ_API_KEY", "ADMIN_API_KEY"))

        # -- the workload (ingest scope), with its exact numbers -------------------------------
        active = {d: {f"user-{d}-{i}" if i >= 40 else f"regular-{i}" for i in range(n)} for d, n in zip(DAYS, SIZES)}
        active[DAYS[0]].add("alice")
        active[DAYS[2]].add("alice")
        batches, events = [], 0
        for d in DAYS:
            batch = [{"user_id": u, "op": "+", "day": d} for u in sorted(active[d])]
            status, body, _ = ingest.post("/event", {"events": batch}, headers={"Idempotency-Key": f"b-{d}"})
            assert status == 200 and body["ingested"] == len(batch)
            events += len(batch)
            batches.append(events)
        status, _, _ = ingest.post("/event", {"user_id": "regular-3", "op": "-", "day": DAYS[1]})  # a withdrawal
        events += 1
        batches.append(events)
        exact = {len(users) for users in active.values()}  # before the erasure and the withdrawal
        active[DAYS[1]].discard("regular-3")
        receipts = {}
        for who in ("alice", "never-existed-zz9"):
            status, receipt, headers = ingest.post("/erasure", {"user_id": who})
            assert status == 202
            receipts[who] = [(status, receipt, headers)]
        for users in active.values():
            users.discard("alice")
        exact |= {len(users) for users in active.values()}
        everyone = set().union(*active.values())
        exact |= {len(everyone), len(everyone) + 1, events, sum(SIZES), 2}  # users, events, erasures
        exact |= {2, 1}  # alice's events removed, and erasures of existing users -- (tiny: checked below)
        positions = set(batches)

        # both erasures move through the same statuses, and look the same at each step
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            latest = {who: ingest.get(f"/erasure/{r[0][1]['erasure_id']}") for who, r in receipts.items()}
            for who, answer in latest.items():
                receipts[who].append(answer)
            if all(a[1]["status"] == "purged" for a in latest.values()):
                break
            time.sleep(0.2)
        for (s1, b1, h1), (s2, b2, h2) in zip(receipts["alice"], receipts["never-existed-zz9"]):
            assert s1 == s2 and set(b1) == set(b2) and set(h1) == set(h2)  # every poll: the same shape
        # at the same stage (just requested; purged) the same values, byte for byte but ids and times
        for stage in (0, -1):
            (_, b1, h1), (_, b2, h2) = receipts["alice"][stage], receipts["never-existed-zz9"][stage]
            same = {"erasure_id", "requested_at", "purged_at"}
            assert {k: v for k, v in b1.items() if k not in same} == {k: v for k, v in b2.items() if k not in same}
            assert h1["Content-Length"] == h2["Content-Length"]
        assert receipts["alice"][-1][1]["status"] == receipts["never-existed-zz9"][-1][1]["status"] == "purged"

        head = admin.get("/readyz")[1]["journal_seq"]  # the admin scope may see it; the reader must not
        positions |= {head, head - 1, head + 1}

        # -- everything the reader can reach ---------------------------------------------------
        mau_exact = len(set().union(*active.values()))
        exact |= {mau_exact}
        reached = []
        for path in [
            *(f"/dau/{d}" for d in DAYS),
            f"/mau?end={DAYS[-1]}",
            f"/mau?end={DAYS[-1]}&window=7",  # another window: admin only
            "/budget",
            "/budget?periods=3",
            "/budget?period=2025-05",
            "/releases?limit=1000",
            "/series?metric=dau",
            "/series?metric=mau",
            "/config",
            "/readyz",
            "/healthz",
            "/openapi.json",
            "/metrics",
            "/audit/erasures",
            "/erasures/summary",
            "/erasure/" + receipts["alice"][0][1]["erasure_id"],
            "/dau/not-a-date",
            "/budget?periods=0",
            "/no-such-route",
        ]:
            reached.append((path, *reader.get(path)))
        for path, body in [("/event", {"user_id": "x", "op": "+", "day": DAYS[0]}), ("/erasure", {"user_id": "alice"})]:
            reached.append((path, *reader.post(path, body)))
        reached.append(("/releases/revise", *reader.post("/releases/revise", {"metric": "dau", "day": DAYS[0]})))
        # every position the journal passed through while the reader looked (its requests made releases)
        positions |= set(range(head, admin.get("/readyz")[1]["journal_seq"] + 2))

    statuses = {path: status for path, status, _, _ in reached}
    for path in (
        *(f"/dau/{d}" for d in DAYS),
        f"/mau?end={DAYS[-1]}",
        "/budget",
        "/budget?periods=3",
        "/releases?limit=1000",
    ):
        assert statuses[path] == 200, (path, statuses[path])
    for path in ("/series?metric=dau", "/config", "/readyz", "/healthz", "/openapi.json"):
        assert statuses[path] == 200, (path, statuses[path])
    for path in (
        "/metrics",
        "/audit/erasures",
        "/erasures/summary",
        f"/mau?end={DAYS[-1]}&window=7",
        "/event",
        "/erasure",
        "/releases/revise",
    ):
        assert statuses[path] == 403, (path, statuses[path])
    assert [b for p, s, b, _ in reached if p == "/readyz"] == [{"ready": True}]

    forbidden = {n for n in exact | positions if n >= 100}  # tiny numbers collide with any small field
    checked = 0
    for path, status, body, headers in reached:
        assert status not in forbidden, path
        values = [(f"header:{k}", v) for k, v in headers.items() if k.lower() != "date"]
        values += [(where, v) for where, v in flatten(body) if where.rsplit(".", 1)[-1] not in RELEASE_FIELDS]
        for where, value in values:
            checked += 1
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, int | float):
                assert value not in forbidden, (path, where, value)
            else:
                numbers = {int(m) for m in INT.findall(str(value))}
                assert not numbers & forbidden, (path, where, value, numbers & forbidden)
    assert checked > 500  # the sweep really looked at something
    # no position or count under a name that would carry one
    names = {where.rsplit(".", 1)[-1] for _, _, body, _ in reached for where, _ in flatten(body)}
    assert not names & {"journal_seq", "first_seq", "last_seq", "seen_seq", "events_removed", "exact", "count"}
