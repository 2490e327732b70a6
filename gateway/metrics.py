"""Prometheus metrics (prometheus_client, one registry per app).

Only aggregate, operator-facing numbers: request counts and latency per route, events ingested,
journal position, mailbox depths, releases, budget spent, actor crashes. Never anything per user.
(The journal position and ingest counts are not differentially private -- which is why they live
here, behind the API key, and never in a release response.)
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from actors.accountant import BudgetReportOut
from actors.system.facade import SystemStats

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the output and say nothing useful here
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("dpdau_http_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "dpdau_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events = Counter("dpdau_events_ingested", "Events acknowledged (durable)", registry=r)
        self.rejected = Counter("dpdau_requests_rejected", "Requests refused", ["reason"], registry=r)
        self.journal_seq = Gauge("dpdau_journal_seq", "Last journal sequence number", registry=r)
        self.pending = Gauge("dpdau_journal_pending_events", "Events waiting for group commit", registry=r)
        self.commit_groups = Gauge("dpdau_journal_commit_groups", "Group commits since start", registry=r)
        self.mailbox = Gauge("dpdau_mailbox_depth", "Messages waiting in actor mailboxes", ["actor"], registry=r)
        self.day_actors = Gauge("dpdau_day_actors", "Day actors running", registry=r)
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
        self.journal_seq.set(stats.journal_seq)
        self.pending.set(stats.pending_events)
        self.commit_groups.set(stats.commit_groups)
        self.day_actors.set(stats.day_actors)
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
