"""Domain answers that happen to be "no". Pure: raised by the actors, mapped to HTTP by the gateway.

A ``Refusal`` reaches the asker as an exception; the supervisor does not count it as a crash.
Each subclass carries what the caller needs to act on it (when the period closes, what the
budget would become, ...), and nothing derived from the data except through a release.
"""

from __future__ import annotations


class Refusal(Exception):
    """A domain answer that happens to be "no" (budget exhausted, period not closed, ...).
    Delivered to the asker as an exception; not a crash, not logged as one."""


class NotReady(Exception):
    """Replay has not finished; retry shortly (503)."""

    retry_after = 1


class ShardsUnavailable(Refusal):
    """A sharded release could not reach every shard at its cut (one is down, restarting, or not
    registered yet): nothing was published or charged; retry shortly (503)."""

    retry_after = 2


class IdempotencyConflict(Exception):
    """The same Idempotency-Key with a different batch (422)."""


class NotClosed(Refusal):
    def __init__(self, closes_at: str) -> None:
        super().__init__(f"the period closes at {closes_at}; nothing is released (or charged) before that")
        self.closes_at = closes_at


class BudgetExhausted(Refusal):
    """The release would push a period it reads over a cap (or the lifetime limit over its own).
    Raised before any noise is drawn; nothing is charged."""

    def __init__(
        self,
        metric: str,
        period: str | None,
        spent: float,
        needed: float,
        cap: float,
        next_reset: str | None,
        cap_name: str = "PERIOD_BUDGET_TOTAL",
    ) -> None:
        where = f"accounting period {period}" if period is not None else "all periods together"
        super().__init__(
            f"this {metric} release reads {where}, whose composition would reach epsilon {needed:.4f} > "
            f"{cap_name} {cap:g}; nothing was drawn or charged"
        )
        self.period, self.spent, self.cap, self.cap_name = period, spent, cap, cap_name
        self.body = {
            "metric": metric,
            "accounting_period": period,
            "cap": cap_name,
            "epsilon_spent": spent,
            "epsilon_after_release": needed,
            "epsilon_cap": cap,
            "next_reset": next_reset,
        }


class NothingToRevise(Refusal):
    pass
