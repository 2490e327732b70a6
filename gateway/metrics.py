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

Removed (each was an exact number about the data): events ingested and the journal position (a
count of events: one ``+`` per user-day gives DAU), events pending commit and commit groups (the
same, in flight), day actors (how many distinct days hold any activity).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

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
        self.releases = Gauge("dpdau_releases", "Releases in the release log", registry=r)
        self.crashes = Gauge(
            "dpdau_actor_crashes", "Actor crashes (each restarted from its last state)", ["actor"], registry=r
        )
        self.budget = Gauge(
            "dpdau_budget_epsilon_spent", "Epsilon spent (tight PLD composition)", ["metric", "period"], registry=r
        )
        self.ready = Gauge("dpdau_ready", "1 when replay has finished", registry=r)
        # The schedule's publications and refusals depend only on the clock, the configuration and
        # the budget (actors/state/schedule.py), so these are as public as the series itself.
        self.scheduled = Gauge(
            "dpdau_scheduled_releases", "Scheduled publications made (first + revisions)", ["metric"], registry=r
        )
        self.refused = Gauge(
            "dpdau_scheduled_refused",
            "Scheduled publications refused by the budget (never retried)",
            ["metric"],
            registry=r,
        )
        self.schedule_failures = Gauge(
            "dpdau_schedule_tick_failures", "Schedule ticks that failed (retried at the next wake-up)", registry=r
        )
        self.write_failures = Gauge(
            "dpdau_journal_write_failures",
            "Journal writes that failed, by kind (full, busy, failed); nothing of them was acknowledged",
            ["kind"],
            registry=r,
        )
        self.journal_unavailable = Gauge(
            "dpdau_journal_unavailable", "1 while the journal cannot be reached (writes refused with 503)", registry=r
        )
        self.found_after_failure = Gauge(
            "dpdau_journal_found_after_failure",
            "Failed journal writes that had committed after all (dispatched, never acknowledged)",
            registry=r,
        )
        self.journal_unsettled = Gauge(
            "dpdau_journal_unsettled",
            "Times the journal could not be read back (queued and new writes refused with 503 until it answered)",
            registry=r,
        )
        self.snapshot_failures = Gauge("dpdau_snapshot_failures", "Snapshot writes that failed", registry=r)
        self.snapshots_rejected = Gauge(
            "dpdau_snapshots_rejected", "Snapshot files refused at start (corrupt, truncated, foreign)", registry=r
        )
        for kind in ("full", "busy", "failed"):
            self.write_failures.labels(kind).set(0)
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
        for kind, n in stats.journal_write_failures.items():
            self.write_failures.labels(kind).set(n)
        self.journal_unavailable.set(1 if stats.journal_unavailable else 0)
        self.found_after_failure.set(stats.journal_found_after_failure)
        self.journal_unsettled.set(stats.journal_unsettled)
        self.snapshot_failures.set(stats.snapshot_failures)
        self.snapshots_rejected.set(stats.snapshots_rejected)
        self.releases.set(stats.releases)
        for actor, depth in stats.mailbox_depth.items():
            self.mailbox.labels(actor).set(depth)
        for metric, n in stats.scheduled.items():
            self.scheduled.labels(metric).set(n)
        for metric, n in stats.refused.items():
            self.refused.labels(metric).set(n)
        self.schedule_failures.set(stats.schedule_failures)
        for actor, n in stats.actor_crashes.items():
            self.crashes.labels(actor).set(n)
        for period in budget.periods if budget is not None else []:
            for metric, m in period.metrics.items():
                self.budget.labels(metric, period.accounting_period).set(m.epsilon_spent)
            self.budget.labels("combined", period.accounting_period).set(period.combined.epsilon_spent)

    def render(self) -> bytes:
        return generate_latest(self.registry)
