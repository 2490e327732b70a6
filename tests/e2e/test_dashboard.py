"""The dashboard in a real headless Chromium against the real server with a year of simulated data:
the charts draw one vertex per released day, the refused and revised days are marked (a lane and
its label are drawn only when the lane has a mark), and every number shown equals the API's. A screenshot is saved under the test's temp dir.

A second server runs the default configuration (only ``RELEASE_START`` set, two years back, no
key): the schedule publishes every day of the two years with nothing refused, the page draws all
of them, and its screenshot is the README's. Set ``DPDAU_SCREENSHOT_TO`` to copy that screenshot
somewhere (that is how the README's one was made).

Chromium is the Debian package ``chromium`` (``.ci/run`` installs it and sets
``DPDAU_REQUIRE_BROWSER=1``, so there the test cannot be skipped).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser

import pytest

from eval.simulate import realistic_stream
from tests.support import ServerProcess, clear_of_utc_midnight

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
KEY = "dashboard-test-key"  # API_KEY: every scope
READ_KEY = "dashboard-read-key"  # READ_API_KEY: what a reader of the published numbers gets
DAYS = 365
DEFAULT_DAYS = 730  # the default-configuration server: two years of days on one page


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.text_parts: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self.text_parts) + "".join(c.text for c in self.children)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        out = []
        for n in self.walk():
            if tag is not None and n.tag != tag:
                continue
            if all(
                (v in n.attrs.get(k.rstrip("_").replace("_", "-"), "").split())
                if k == "class_"
                else n.attrs.get(k.replace("_", "-")) == v
                for k, v in attrs.items()
            ):
                out.append(n)
        return out

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]


class DomBuilder(HTMLParser):
    VOID = frozenset({"meta", "link", "input", "br", "img", "hr", "source", "area", "base", "col", "embed", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs}, self.stack[-1])
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}, self.stack[-1]))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].text_parts.append(data)


def parse(html: str) -> Node:
    builder = DomBuilder()
    builder.feed(html)
    return builder.root


def chromium(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def number(text: str) -> int:
    return int(text.replace(",", "").replace("\u2212", "-").strip())


def vertices(d: str) -> int:
    """Coordinate pairs in an SVG path made of M and L commands."""
    return len(re.findall(r"[ML]\s*-?[\d.]+,-?[\d.]+", d))


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(what)


def ingest_year(server: ServerProcess, first: dt.date, n_days: int = DAYS) -> int:
    """A year (or n_days) of the evaluation's realistic-churn stream, in journal order, erasures included."""
    stream = realistic_stream(20251009, n_users=2500, n_days=n_days, start=first)
    days = [(first + dt.timedelta(days=int(i))).isoformat() for i in range(n_days)]
    cuts = [*stream.erased_pos.tolist(), stream.n_events]
    start, sent = 0, 0
    for k, cut in enumerate(cuts):
        for lo in range(start, cut, 20_000):
            hi = min(cut, lo + 20_000)
            batch = [
                {"user_id": f"user-{u}", "op": "+" if o else "-", "day": days[d]}
                for u, d, o in zip(stream.user[lo:hi].tolist(), stream.day[lo:hi].tolist(), stream.op[lo:hi].tolist())
            ]
            status, body, _ = server.http.post("/event", {"events": batch}, timeout=120)
            assert status == 200, body
            sent += len(batch)
        start = cut
        if k < len(stream.erased_user):
            status, _, _ = server.http.post("/erasure", {"user_id": f"user-{int(stream.erased_user[k])}"})
            assert status == 202
    return sent


def require_chromium() -> None:
    if CHROMIUM is None:
        if os.environ.get("DPDAU_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required here (DPDAU_REQUIRE_BROWSER=1): apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium); .ci/run installs it and requires it")


@pytest.fixture(scope="module")
def year_server(tmp_path_factory):
    """REVISION_LAGS_DAYS=7 at the default caps: revisions, and refusals of the MAU days they leave no budget for."""
    require_chromium()
    tmp = tmp_path_factory.mktemp("dashboard")
    data = tmp / "data"
    today = clear_of_utc_midnight(30)  # the module counts exactly DAYS closed days
    first = today - dt.timedelta(days=DAYS)
    env = {"API_KEY": KEY, "READ_API_KEY": READ_KEY, "RELEASE_START": first.isoformat(), "REVISION_LAGS_DAYS": "7"}
    with ServerProcess(data, {**env, "RELEASE_SCHEDULE": "on-demand"}) as server:
        ingest_year(server, first)
    server = ServerProcess(data, {**env, "RELEASE_SCHEDULE": "daily"}).start()
    try:
        for metric in ("dau", "mau"):  # the schedule catches up a year by itself
            wait_until(
                lambda m=metric: server.http.get(f"/series?metric={m}")[1].get("total") == DAYS,
                timeout=900,
                what=f"{metric} catch-up",
            )
        slots = 2 * DAYS - 7  # per metric: every first publication, and the lag-7 revision of each day old enough

        def schedule_done() -> bool:
            cfg = server.http.get("/config")[1]
            return all(cfg["scheduled"][m] + cfg["refused"][m] >= slots for m in ("dau", "mau"))

        wait_until(schedule_done, timeout=900, what="the revisions")
        yield server, tmp
    finally:
        server.__exit__()


def api(server: ServerProcess, path: str):
    status, body, _ = server.http.get(path, timeout=120)
    assert status == 200, (path, body)
    return body


def test_dashboard_draws_the_published_year_and_shows_the_api_numbers(year_server):
    server, tmp = year_server
    url = f"http://127.0.0.1:{server.port}/#key={KEY}"
    out = chromium("--window-size=1440,1000", "--virtual-time-budget=60000", "--dump-dom", url)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = parse(out.stdout)
    assert dom.one("body").attrs.get("data-loaded") == "true", out.stdout[:3000]

    series = {m: api(server, f"/series?metric={m}&limit=1000") for m in ("dau", "mau")}
    drawn_lanes = {}
    for metric, page in series.items():
        points = page["points"]
        assert len(points) == page["total"] == DAYS
        released = [p for p in points if p["status"] == "released"]
        refused = [p for p in points if p["status"] == "refused"]
        revised = [p for p in released if p["revision"] > 0]
        box = dom.one("div", id=f"chart-{metric}")
        svg = box.one("svg")
        line = svg.one("path", class_="line")
        assert vertices(line.attrs["d"]) == len(released) == int(svg.attrs["data-points"])
        assert len(svg.find_all("line", class_="mark-refused")) == len(refused)
        assert sorted(n.attrs["data-day"] for n in svg.find_all("line", class_="mark-refused")) == [
            p["day"] for p in refused
        ]
        assert len(svg.find_all("line", class_="mark-revised")) == len(revised) > 0
        # a lane and its label are drawn exactly when the API has a day for it, revised above refused
        lanes = [name for name, days in (("revised", revised), ("refused", refused)) if days]
        labels = svg.find_all("text", class_="lane-label")
        assert [n.text for n in labels] == lanes
        assert [g.attrs["class"] for g in svg.find_all("g", class_="lane")] == [f"lane {name}" for name in lanes]
        assert [float(n.attrs["y"]) for n in labels] == sorted(float(n.attrs["y"]) for n in labels)
        drawn_lanes[metric] = lanes
        legend = [
            li for li in dom.one("section", aria_labelledby=f"h-{metric}").find_all("li") if "data-lane" in li.attrs
        ]
        assert [li.attrs["data-lane"] for li in legend if "hidden" not in li.attrs] == lanes  # the key too
        # the card shows the latest release exactly
        card = dom.one("article", id=f"card-{metric}")
        latest = released[-1]
        assert number(card.one(data_field="estimate").text) == latest["estimate"]
        assert number(card.one(data_field="lower_95").text) == latest["lower_95"]
        assert number(card.one(data_field="upper_95").text) == latest["upper_95"]
        # the data table: one row per day, the API's values
        rows = [r for r in dom.one("details", id=f"data-{metric}").find_all("tr") if "data-day" in r.attrs]
        assert [r.attrs["data-day"] for r in rows] == [p["day"] for p in points]
        for row, p in zip(rows, points):
            cells = {c.attrs["data-col"]: c.text for c in row.find_all("td")}
            assert cells["status"] == p["status"]
            assert cells["estimate"] == ("" if p["estimate"] is None else str(p["estimate"]))
            assert cells["lower_95"] == ("" if p["lower_95"] is None else str(p["lower_95"]))
            assert cells["revision"] == ("" if p["revision"] is None else str(p["revision"]))
    assert any(p["status"] == "refused" for p in series["dau"]["points"] + series["mau"]["points"])
    assert drawn_lanes["mau"] == ["revised", "refused"], drawn_lanes  # MAU days are revised and refused here

    # budget bars: spent and cap per period and metric, as /budget says
    budget = api(server, "/budget")
    bars = {(g.attrs["data-period"], g.attrs["data-metric"]): g for g in dom.find_all("g", class_="budget-bar")}
    expected = {}
    for period in budget["periods"]:
        for metric, m in period["metrics"].items():
            expected[(period["accounting_period"], metric)] = (m["epsilon_spent"], m["epsilon_cap"])
        c = period["combined"]
        expected[(period["accounting_period"], "combined")] = (c["epsilon_spent"], c["epsilon_cap"])
    assert set(bars) == set(expected)
    for k, (spent, cap) in expected.items():
        assert float(bars[k].attrs["data-spent"]) == pytest.approx(spent, rel=1e-12)
        assert float(bars[k].attrs["data-cap"]) == pytest.approx(cap, rel=1e-12)

    # configuration shown = /config
    cfg = api(server, "/config")
    shown = {n.attrs["data-config"]: n.text for n in dom.find_all("dd") if "data-config" in n.attrs}
    assert shown["DAU"] == f"{cfg['dau_mechanism']}, ε {cfg['epsilon_dau']} per release"
    assert f"{cfg['mau_window_days']}-day window" in shown["MAU"]
    assert shown["δ"] == str(cfg["delta"]) or float(shown["δ"]) == cfg["delta"]
    assert shown["Revisions"] == "at 7 days"
    assert str(cfg["period_budget_total"]) in shown["Cap per period"]

    # erasure receipts: this key has every scope, so the admin panel shows the exact counts
    counts = api(server, "/erasures/summary")
    shown_counts = {n.attrs["data-status"]: number(n.text) for n in dom.find_all("span", class_="n")}
    assert shown_counts == counts and sum(counts.values()) > 0

    shot = tmp / "dashboard.png"
    out = chromium("--window-size=1440,1500", "--virtual-time-budget=60000", f"--screenshot={shot}", url)
    assert out.returncode == 0 and shot.stat().st_size > 20_000, out.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dashboard_without_a_key_asks_for_one_and_shows_no_number(year_server):
    server, _ = year_server
    out = chromium("--virtual-time-budget=20000", "--dump-dom", f"http://127.0.0.1:{server.port}/dashboard/")
    assert out.returncode == 0, out.stderr[-2000:]
    dom = parse(out.stdout)
    assert "hidden" not in dom.one("form", id="keyform").attrs
    assert "401" in dom.one("p", id="status").text
    assert dom.one("div", id="chart-dau").children == []
    for card in dom.find_all("article", class_="card"):
        assert not re.search(
            r"\d", card.one(data_field="estimate").text if card.find_all(data_field="estimate") else ""
        )


def test_a_read_key_sees_the_series_but_not_the_erasure_counts(year_server):
    server, _ = year_server
    url = f"http://127.0.0.1:{server.port}/dashboard/#key={READ_KEY}"
    out = chromium("--virtual-time-budget=60000", "--dump-dom", url)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = parse(out.stdout)
    assert dom.one("body").attrs.get("data-loaded") == "true"
    released = [p for p in api(server, "/series?metric=dau")["points"] if p["status"] == "released"]
    assert int(dom.one("div", id="chart-dau").one("svg").attrs["data-points"]) == len(released)
    panel = dom.one("section", id="erasures")
    assert panel.find_all("span", class_="n") == []  # no count at all
    note = panel.one("p", id="erasures-hidden").text
    assert "admin key" in note and "403" in note


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    """The default configuration, as `make run` has it (no key, no revisions, the default caps and
    mechanisms); only RELEASE_START is set, to where a service started two years ago would have
    recorded it."""
    require_chromium()
    tmp = tmp_path_factory.mktemp("dashboard-default")
    data = tmp / "data"
    first = clear_of_utc_midnight(30) - dt.timedelta(days=DEFAULT_DAYS)  # exactly DEFAULT_DAYS closed days
    env = {"RELEASE_START": first.isoformat()}
    with ServerProcess(data, {**env, "RELEASE_SCHEDULE": "on-demand"}) as server:
        ingest_year(server, first, DEFAULT_DAYS)
    server = ServerProcess(data, {**env, "RELEASE_SCHEDULE": "daily"}).start()
    try:

        def schedule_done() -> bool:
            cfg = server.http.get("/config")[1]
            return all(cfg["scheduled"][m] + cfg["refused"][m] >= DEFAULT_DAYS for m in ("dau", "mau"))

        wait_until(schedule_done, timeout=900, what="the two years' catch-up")
        yield server, tmp
    finally:
        server.__exit__()


def test_the_default_configuration_publishes_two_years_with_nothing_refused_and_draws_every_day(default_server):
    server, tmp = default_server
    cfg = api(server, "/config")
    assert cfg["revision_lags_days"] == [] and cfg["release_schedule"] == "daily"
    assert (cfg["dau_mechanism"], cfg["mau_mechanism"], cfg["mau_window_days"]) == ("gaussian", "gaussian", 30)
    assert (cfg["dau_budget_total"], cfg["mau_budget_total"], cfg["period_budget_total"]) == (3.0, 5.0, 5.5)
    url = f"http://127.0.0.1:{server.port}/"
    out = chromium("--window-size=1440,1000", "--virtual-time-budget=60000", "--dump-dom", url)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = parse(out.stdout)
    assert dom.one("body").attrs.get("data-loaded") == "true", out.stdout[:3000]
    for metric in ("dau", "mau"):
        page = api(server, f"/series?metric={metric}&limit=1000")
        points = page["points"]
        assert len(points) == page["total"] == DEFAULT_DAYS
        assert all(p["status"] == "released" and p["revision"] == 0 for p in points)  # the schedule fits
        svg = dom.one("div", id=f"chart-{metric}").one("svg")
        assert vertices(svg.one("path", class_="line").attrs["d"]) == DEFAULT_DAYS == int(svg.attrs["data-points"])
        assert svg.find_all("line", class_="mark-refused") == [] and svg.find_all("line", class_="mark-revised") == []
        # nothing revised or refused: no lane is drawn, and no label names one
        assert svg.find_all("text", class_="lane-label") == [] and svg.find_all("g", class_="lane") == []
        legend = [
            li for li in dom.one("section", aria_labelledby=f"h-{metric}").find_all("li") if "data-lane" in li.attrs
        ]
        assert len(legend) == 2 and all("hidden" in li.attrs for li in legend)  # nor does the legend
        assert not {"revised", "refused"} & {n.text.strip() for n in svg.find_all("text")}
        card = dom.one("article", id=f"card-{metric}")
        assert number(card.one(data_field="estimate").text) == points[-1]["estimate"]
    budget = api(server, "/budget")
    assert len(budget["periods"]) >= DEFAULT_DAYS // 31
    bars = {(g.attrs["data-period"], g.attrs["data-metric"]) for g in dom.find_all("g", class_="budget-bar")}
    for period in budget["periods"]:
        c = period["combined"]
        assert 0 < c["epsilon_spent"] <= c["epsilon_cap"] == 5.5
        assert (period["accounting_period"], "combined") in bars
    shown = {n.attrs["data-config"]: n.text for n in dom.find_all("dd") if "data-config" in n.attrs}
    assert shown["Revisions"] == "none"
    # no key is configured, so every scope is open, as with `make run`: the erasure panel shows the counts
    counts = api(server, "/erasures/summary")
    assert {n.attrs["data-status"]: number(n.text) for n in dom.find_all("span", class_="n")} == counts

    shot = tmp / "dashboard.png"
    out = chromium("--window-size=1440,1500", "--virtual-time-budget=60000", f"--screenshot={shot}", url)
    assert out.returncode == 0 and shot.stat().st_size > 20_000, out.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("DPDAU_SCREENSHOT_TO"):  # how the README's screenshot is made
        shutil.copyfile(shot, os.environ["DPDAU_SCREENSHOT_TO"])
