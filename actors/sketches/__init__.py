"""Distinct-count summaries of per-day memberships (exact sorted arrays, theta sketches). Pure."""

from actors.sketches.summary import THETA_SEED, UnionSummary, build_theta, summarize

__all__ = ["THETA_SEED", "UnionSummary", "build_theta", "summarize"]
