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


class IdempotencyConflict(Exception):
    """The same Idempotency-Key with a different batch (422)."""


class NotClosed(Refusal):
    def __init__(self, closes_at: str) -> None:
        super().__init__(f"the period closes at {closes_at}; nothing is released (or charged) before that")
        self.closes_at = closes_at


class BudgetExhausted(Refusal):
    def __init__(self, metric: str, period: str, spent: float, needed: float, cap: float, next_reset: str):
        super().__init__(
            f"{metric} budget for {period} would reach epsilon {needed:.4f} > cap {cap}; nothing was charged"
        )
        self.body = {
            "metric": metric,
            "accounting_period": period,
            "epsilon_spent": spent,
            "epsilon_after_release": needed,
            "epsilon_cap": cap,
            "next_reset": next_reset,
        }


class NothingToRevise(Refusal):
    pass
