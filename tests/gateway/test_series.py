"""GET /series (JSON and CSV, paged, refused days marked), GET /config, GET /erasures/summary,
the release contract fields, and the dashboard's static files -- over real HTTP."""

from __future__ import annotations

import csv
import io

import anyio
import msgspec

from gateway.appkeys import SYSTEM
from gateway.schemas import ErasureSummaryOut, ReleaseConfigOut, ReleaseOut, SeriesPage
from journal import events as ev
from tests.gateway.conftest import gateway
from tests.support import FakeClock

START = "2026-03-01"


def events(day: str, n: int, prefix: str = "u") -> dict:
    return {"events": [{"user_id": f"{prefix}{i}", "op": "+", "day": day} for i in range(n)]}


async def scheduled_gateway(tmp_path, clock, **env):
    """A gateway whose schedule publishes from START, with caps that refuse the 4th DAU and MAU."""
    base = {
        "RELEASE_SCHEDULE": "daily",
        "RELEASE_START": START,
        "SCHEDULE_POLL_SECONDS": "3600",
        "DAU_BUDGET_TOTAL": "0.62",
        "MAU_BUDGET_TOTAL": "1.2",
        "MAU_WINDOW_DAYS": "7",
    }
    return gateway(tmp_path, clock=clock, **{**base, **env})


async def test_series_serves_latest_release_per_day_with_refusals_marked_json_and_csv(tmp_path):
    clock = FakeClock("2026-03-01T12:00")
    async with await scheduled_gateway(tmp_path, clock) as client:
        system = client.app[SYSTEM]
        clock.set("2026-03-06T12:00")  # (events may not be ahead of the clock)
        for d in range(1, 7):
            assert (await client.post("/event", json=events(f"2026-03-0{d}", 10 + d))).status == 200
        clock.set("2026-03-07T01:00")  # 1..6 March closed
        await system.scheduler.tick()
        resp = await client.get("/series?metric=dau")
        assert resp.status == 200 and resp.content_type == "application/json"
        page = msgspec.json.decode(await resp.read(), type=SeriesPage)
        assert page.metric == "dau" and page.window == 1 and page.total == 6
        assert [p.day for p in page.points] == [f"2026-03-0{d}" for d in range(1, 7)]
        statuses = [p.status for p in page.points]
        assert "refused" in statuses and statuses[0] == "released"
        for p in page.points:
            if p.status == "refused":
                assert p.estimate is None and p.refusal_reason == "budget_exhausted" and p.refused_at
                assert p.accounting_period == "2026-03"
            else:
                dau = msgspec.json.decode(await (await client.get(f"/dau/{p.day}")).read(), type=ReleaseOut)
                assert (p.estimate, p.lower_95, p.upper_95, p.revision) == (
                    dau.estimate,
                    dau.lower_95,
                    dau.upper_95,
                    dau.revision,
                )
                assert p.release_id == dau.release_id and p.version == dau.version == str(ev.RELEASE_FORMAT)
        # a refused day stays refused: asking for it on request does not sneak past the cap
        refused_day = next(p.day for p in page.points if p.status == "refused")
        assert (await client.get(f"/dau/{refused_day}")).status == 429

        csv_resp = await client.get("/series?metric=dau&format=csv")
        assert csv_resp.status == 200 and csv_resp.content_type == "text/csv"
        assert csv_resp.headers["X-Total-Count"] == "6"
        rows = list(csv.DictReader(io.StringIO(await csv_resp.text())))
        assert [r["day"] for r in rows] == [p.day for p in page.points]
        assert [r["status"] for r in rows] == statuses
        for r, p in zip(rows, page.points):
            assert r["metric"] == "dau" and r["window"] == "1"
            assert r["estimate"] == ("" if p.estimate is None else str(p.estimate))
        negotiated = await client.get("/series?metric=mau", headers={"Accept": "text/csv"})
        assert negotiated.content_type == "text/csv"
        assert (await negotiated.text()).splitlines()[0].startswith("metric,window,day,status,estimate")

        mau = msgspec.json.decode(await (await client.get("/series?metric=mau")).read(), type=SeriesPage)
        assert mau.window == 7 and mau.total == 6


async def test_series_range_and_paging(tmp_path):
    clock = FakeClock("2026-03-01T12:00")
    async with await scheduled_gateway(tmp_path, clock, DAU_BUDGET_TOTAL="30", MAU_BUDGET_TOTAL="30") as client:
        clock.set("2026-03-11T00:00")  # 1..10 March
        await client.app[SYSTEM].scheduler.tick()
        whole = msgspec.json.decode(await (await client.get("/series?metric=dau")).read(), type=SeriesPage)
        assert whole.total == 10 and all(p.status == "released" for p in whole.points)
        ranged = msgspec.json.decode(
            await (await client.get("/series?metric=dau&from=2026-03-03&to=2026-03-05")).read(), type=SeriesPage
        )
        assert [p.day for p in ranged.points] == ["2026-03-03", "2026-03-04", "2026-03-05"]
        assert (ranged.first_day, ranged.last_day) == ("2026-03-03", "2026-03-05")
        pages = []
        for offset in range(0, 10, 4):
            body = await (await client.get(f"/series?metric=dau&offset={offset}&limit=4")).read()
            page = msgspec.json.decode(body, type=SeriesPage)
            assert page.total == 10 and page.limit == 4
            pages += page.points
        assert pages == whole.points


async def test_series_rejects_bad_parameters_with_a_named_error(tmp_path):
    async with gateway(tmp_path) as client:
        for query, field in [
            ("", "metric"),
            ("metric=wau", "metric"),
            ("metric=dau&from=2026-02-30", "from"),
            ("metric=dau&to=yesterday", "to"),
            ("metric=dau&format=xml", "format"),
            ("metric=dau&limit=0", None),
            ("metric=dau&offset=-1", None),
        ]:
            resp = await client.get(f"/series?{query}")
            body = await resp.json()
            assert resp.status == 400, query
            assert body["error"] in ("invalid_parameter", "invalid_date") and body["detail"], query
            if field:
                assert body["field"] == field, query
        empty = await client.get("/series?metric=mau")
        assert empty.status == 200 and (await empty.json())["points"] == []
        # from after to is an empty range, not an error: the document calls it valid (schemathesis)
        backwards = await client.get("/series?metric=dau&from=2026-03-05&to=2026-03-01")
        assert backwards.status == 200 and (await backwards.json())["points"] == []


async def test_release_records_carry_the_whole_contract(tmp_path):
    async with gateway(tmp_path, EXPERIMENT_ID="exp-42") as client:
        await client.post("/event", json=events("2025-04-02", 5))
        dau = await (await client.get("/dau/2025-04-02")).json()
        mau = await (await client.get("/mau?end=2025-04-02")).json()
        contract = {
            "day",
            "estimate",
            "lower_95",
            "upper_95",
            "epsilon_used",
            "delta",
            "mechanism",
            "sketch_impl",
            "budget_remaining",
            "version",
            "released_at",
            "revision",
        }
        assert contract <= set(dau) and contract | {"end", "window"} <= set(mau)
        assert dau["version"] == "exp-42" and dau["version_of"] == "experiment_id"
        assert dau["revision"] == 0 and dau["day"] == "2025-04-02"
        assert mau["day"] == mau["end"] == "2025-04-02" and mau["window"] == 30
        assert "scheduled_lag" not in dau  # made on request


async def test_config_is_the_release_configuration(tmp_path):
    clock = FakeClock("2026-03-04T12:00")
    async with await scheduled_gateway(tmp_path, clock, REVISION_LAGS_DAYS="7,3") as client:
        cfg = msgspec.json.decode(await (await client.get("/config")).read(), type=ReleaseConfigOut)
        assert (cfg.dau_mechanism, cfg.mau_mechanism, cfg.epsilon_dau, cfg.delta) == ("gaussian", "gaussian", 0.3, 1e-6)
        assert cfg.dau_budget_total == 0.62 and cfg.mau_window_days == 7
        assert cfg.release_schedule == "daily" and cfg.release_start == START
        assert cfg.release_start_source == "RELEASE_START" and cfg.revision_lags_days == [3, 7]
        assert cfg.version == str(ev.RELEASE_FORMAT) and cfg.version_of == "release_format"
    async with gateway(tmp_path / "b", RELEASE_SCHEDULE="daily") as client:
        with anyio.fail_after(30):  # the schedule's first tick records its start (a journal commit)
            while client.app[SYSTEM].schedule_info().release_start_source is None:
                await anyio.sleep(0.01)
        cfg = msgspec.json.decode(await (await client.get("/config")).read(), type=ReleaseConfigOut)
        assert cfg.release_start_source == "first_start" and cfg.release_start is not None


async def test_erasure_summary_counts_receipts_by_status(tmp_path):
    async with gateway(tmp_path) as client:
        await client.post("/event", json=events("2025-04-02", 3))
        for user in ("u0", "u1", "nobody"):
            assert (await client.post("/erasure", json={"user_id": user})).status == 202
        counts = msgspec.json.decode(await (await client.get("/erasures/summary")).read(), type=ErasureSummaryOut)
        assert counts.pending + counts.applied + counts.purged == 3 and counts.purged == 0


async def test_dashboard_files_are_open_and_data_routes_need_the_key(tmp_path):
    async with gateway(tmp_path, API_KEY="k-123") as client:
        root = await client.get("/", allow_redirects=False)
        assert root.status == 302 and root.headers["Location"] == "/dashboard/"
        page = await client.get("/")  # followed
        assert page.status == 200 and page.content_type == "text/html"
        html = await page.text()
        assert 'src="dashboard.js"' in html and 'id="chart-dau"' in html
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        for name, kind in [("dashboard.js", "application/javascript"), ("dashboard.css", "text/css")]:
            resp = await client.get(f"/dashboard/{name}")
            assert resp.status == 200 and resp.content_type == kind
        assert (await client.get("/dashboard/../journal.sqlite3")).status in (401, 404)
        assert (await client.get("/dashboard/secret")).status == 404
        for path in ("/series?metric=dau", "/config", "/erasures/summary"):
            assert (await client.get(path)).status == 401, path
            assert (await client.get(path, headers={"X-API-Key": "k-123"})).status == 200, path
