"""Prometheus metrics (prometheus_client, one registry per app), admin scope only.

Audited metric by metric: each is operational, and none equals a count of users or events that
a release protects, nor is any a per-day series. Kept:

- ``dpdau_http_requests_total{route,method,status}`` and the latency histogram per route: HTTP
  traffic, the same numbers a reverse proxy or access log in front of the service sees. They
  count requests, not events or users (a request carries 1 to 100,000 events of any users).
- ``dpdau_mailbox_depth{actor}``: messages waiting now, bounded by the mailbox capacity; a
  backpressure signal, transient, not cumulative.
- ``dpdau_actor_crashes{actor}``, ``dpdau_ready``: health.
- ``dpdau_process{process,kind}``: which process of a deployment answered (workers, shards): its
  name and kind come from the command line, never from the data.
- ``dpdau_releases``, ``dpdau_budget_epsilon_spent{metric,period}``: public already
  (``/releases``, ``/budget``): what was published and what it cost, per accounting period.
- ``dpdau_scheduled_releases{metric}``, ``dpdau_scheduled_refused{metric}``,
  ``dpdau_schedule_tick_failures``: the schedule's publications and refusals depend only on the
  clock, the configuration and the budget (``actors/state/schedule.py``): as public as ``/series``.
- ``dpdau_journal_write_failures{kind}``, ``dpdau_journal_found_after_failure``,
  ``dpdau_journal_unsettled``, ``dpdau_journal_unavailable``, ``dpdau_snapshot_failures``,
  ``dpdau_snapshots_rejected``: storage health (``journal/storage.py``). Counts of failed
  *operations* (a group commit, a read-back of the journal, a snapshot write, a snapshot file
  refused at start) and a 0/1 flag -- never of events or users:
  a group holds any number of requests, a request any number of events.

Running counts are Prometheus counters (``CumulativeCounts``: exposed as ``<name>_total``, so
``rate()``/``increase()`` apply); levels (``dpdau_ready``, ``dpdau_journal_unavailable``, mailbox
depths, budget spent) are gauges.

Removed (each was an exact number about the data): events ingested and the journal position (a
count of events: one ``+`` per user-day gives DAU), events pending commit and commit groups (the
same, in flight), day actors (how many distinct days hold any activity).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from actors.accountant import BudgetReportOut
from actors.system.facade import SystemStats

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the output and say nothing useful here
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, process: str = "main", kind: str = "whole") -> None:
        self.registry = r = CollectorRegistry()
        info = Gauge("dpdau_process", "This process in its deployment (topology)", ["process", "kind"], registry=r)
        info.labels(process, kind).set(1)
        self.requests = Counter("dpdau_http_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "dpdau_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.mailbox = Gauge("dpdau_mailbox_depth", "Messages waiting in actor mailboxes", ["actor"], registry=r)
        self.budget = Gauge(
            "dpdau_budget_epsilon_spent", "Epsilon spent (tight PLD composition)", ["metric", "period"], registry=r
        )
        self.ready = Gauge("dpdau_ready", "1 when replay has finished", registry=r)
        self.journal_unavailable = Gauge(
            "dpdau_journal_unavailable", "1 while the journal cannot be reached (writes refused with 503)", registry=r
        )
        self.cumulative = CumulativeCounts()
        r.register(self.cumulative)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Per-request accounting; label children are cached (``labels()`` costs a lock + dict)."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.latency.labels(route, method),
                self.requests.labels(route, method, str(status)),
            )
        children[0].observe(seconds)
        children[1].inc()

    def update(self, stats: SystemStats, budget: BudgetReportOut | None) -> None:
        self.ready.set(1 if stats.ready else 0)
        self.journal_unavailable.set(1 if stats.journal_unavailable else 0)
        for actor, depth in stats.mailbox_depth.items():
            self.mailbox.labels(actor).set(depth)
        self.cumulative.stats = stats
        for period in budget.periods if budget is not None else []:
            for metric, m in period.metrics.items():
                self.budget.labels(metric, period.accounting_period).set(m.epsilon_spent)
            self.budget.labels("combined", period.accounting_period).set(period.combined.epsilon_spent)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class CumulativeCounts(Collector):
    """The system's running counts, exposed as Prometheus *counters* (``<name>_total``), so that
    ``rate()`` and ``increase()`` work on them: they only grow while a process lives, and a restart
    resets the in-process ones to zero, which Prometheus reads as a counter reset. The numbers
    are read from the latest ``SystemStats`` (``update``, once per scrape); nothing is kept here.
    ``dpdau_releases``, ``dpdau_scheduled_*`` count the journal's releases (they survive restarts)."""

    def __init__(self) -> None:
        self.stats: SystemStats | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        if s is None:
            return

        def counter(name: str, doc: str, values: dict[str, int] | int, label: str | None = None) -> Metric:
            family = CounterMetricFamily(name, doc, labels=[label] if label else None)
            if isinstance(values, dict):
                for key, n in sorted(values.items()):
                    family.add_metric([key], n)
            else:
                family.add_metric([], values)
            return family

        yield counter("dpdau_releases", "Releases in the release log", s.releases)
        yield counter(
            "dpdau_actor_crashes", "Actor crashes (each restarted from its last state)", s.actor_crashes, "actor"
        )
        # The schedule's publications and refusals depend only on the clock, the configuration and
        # the budget (actors/state/schedule.py), so these are as public as the series itself.
        yield counter(
            "dpdau_scheduled_releases", "Scheduled publications made (first + revisions)", s.scheduled, "metric"
        )
        yield counter(
            "dpdau_scheduled_refused",
            "Scheduled publications refused by the budget (never retried)",
            s.refused,
            "metric",
        )
        yield counter(
            "dpdau_schedule_tick_failures",
            "Schedule ticks that failed (retried at the next wake-up)",
            s.schedule_failures,
        )
        failures = {"full": 0, "busy": 0, "failed": 0, **s.journal_write_failures}
        yield counter(
            "dpdau_journal_write_failures",
            "Journal writes that failed, by kind (full, busy, failed); nothing of them was acknowledged",
            failures,
            "kind",
        )
        yield counter(
            "dpdau_journal_found_after_failure",
            "Failed journal writes that had committed after all (dispatched, never acknowledged)",
            s.journal_found_after_failure,
        )
        yield counter(
            "dpdau_journal_unsettled",
            "Times the journal could not be read back (queued and new writes refused with 503 until it answered)",
            s.journal_unsettled,
        )
        yield counter("dpdau_snapshot_failures", "Snapshot writes that failed", s.snapshot_failures)
        yield counter(
            "dpdau_snapshots_rejected",
            "Snapshot files refused at start (corrupt, truncated, foreign)",
            s.snapshots_rejected,
        )
