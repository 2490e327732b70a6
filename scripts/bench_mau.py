"""Benchmark: the daily MAU release at scale -- 1M users/day x 30 days -- with baselines in the
same process.

    .venv/bin/python scripts/bench_mau.py                   # 1M users/day, 3M population
    .venv/bin/python scripts/bench_mau.py --users 200000    # quicker
    .venv/bin/python scripts/bench_mau.py --population 0    # disjoint days (30M distinct users)
    .venv/bin/python scripts/bench_mau.py --old-union       # the releases with the old union

What it measures (in-process ActorSystem on a real SQLite journal in a temp dir; the events are
journaled and dispatched exactly as ``POST /event`` does, minus HTTP and pseudonymisation):
- the scheduled daily MAU release, end to end -- quote, read the window through the day actors,
  union, noise, journal, answer: the first of the window (all 30 days ingested), then the next
  days (each right after that day's events arrived), with the time spent in the accountant's
  quote, the day views and the union;
- the union of the 30 day arrays alone, with the current ``membership.union`` and with the old
  one (a stable sort of the concatenation) as the same-run baseline, and the ratio; and the
  incremental union (``SlidingUnion``) sliding the window by one day, which is what the release
  actor does for consecutive daily releases.
Prints a table; the README's benchmark table copies it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.settings import EngineSettings  # noqa: E402
from actors.sketches import SlidingUnion  # noqa: E402
from actors.state import membership, periods  # noqa: E402
from actors.system import ActorSystem  # noqa: E402
from journal import location  # noqa: E402

CURRENT_UNION = membership.union


def old_union(arrays: list[np.ndarray]) -> np.ndarray:
    """The union as it was before (a stable sort of the concatenation): the baseline."""
    merged = np.sort(np.concatenate(arrays), kind="stable")
    return merged[np.concatenate(([True], merged[1:] != merged[:-1]))]


def best_of(n: int, fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    best, out = float("inf"), np.empty(0, dtype=np.int64)
    for _ in range(n):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def instrument(system: ActorSystem) -> dict[str, float]:
    """Seconds spent, per release, in the accountant's quote, the day views and the window union."""
    spent: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*args: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kw)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    actor: Any = system.release_actor
    window_union = actor._window_union

    def timed_union(views: Any) -> np.ndarray:
        started = time.perf_counter()
        try:
            return window_union(views)  # type: ignore[no-any-return]
        finally:
            spent["union"] = spent.get("union", 0.0) + time.perf_counter() - started

    actor._quote = timed("quote", actor._quote)
    views = timed("views", system.views)
    actor.days = type("TimedViews", (), {"views": staticmethod(views)})()
    actor._window_union = timed_union
    return spent


def use_old_union(system: ActorSystem) -> None:
    """The 'before': every release unions the whole window with the old stable sort."""
    actor: Any = system.release_actor
    actor._window_union = lambda views: old_union([v.members for v in views])


async def main(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    window = 30
    first = periods.day_of(dt.date(2026, 3, 1))
    days = [first + i for i in range(window + args.next_days)]
    population = rng.integers(-(2**63), 2**63 - 1, size=args.population, dtype=np.int64) if args.population else None

    def day_keys() -> np.ndarray:
        if population is None:
            return rng.integers(-(2**63), 2**63 - 1, size=args.users, dtype=np.int64)
        return rng.choice(population, size=args.users, replace=False)

    clock = Clock(dt.datetime.combine(periods.date_of(days[-1] + 1), dt.time(12), tzinfo=dt.UTC))
    engine = EngineSettings(
        release_schedule="on-demand",  # the benchmark makes the releases itself, timing them
        max_pending_events=max(1_000_000, args.batch),
        snapshot_every_events=10**12,
        snapshot_every_seconds=10**9,
        purge_delay_seconds=10**6,
    )
    with tempfile.TemporaryDirectory(prefix="bench-mau-") as tmp:
        spec = location.parse(
            None, tmp, sqlite_synchronous="NORMAL", index_every_events=10**12, index_idle_seconds=10**6
        )
        system = ActorSystem(engine, spec, clock=clock)
        async with system.running():
            await system.wait_ready()

            async def ingest_day(day: int) -> None:
                keys = day_keys()
                for i in range(0, len(keys), args.batch):
                    chunk = keys[i : i + args.batch]
                    ones = np.ones(len(chunk), dtype=np.uint8)
                    await system.ingest(chunk, np.full(len(chunk), day, dtype=np.int32), ones, [])

            started = time.perf_counter()
            for day in days[:window]:
                await ingest_day(day)
            print(f"ingested {window} days x {args.users:,} users in {time.perf_counter() - started:.1f} s", flush=True)
            await system.release(("dau", days[0], 1))  # as the service does at boot: the accountant warm

            if args.old_union:
                use_old_union(system)
            phases = instrument(system)
            timings: list[tuple[str, float, dict[str, float]]] = []
            for i, day in enumerate(days[window - 1 :]):
                if i:
                    await ingest_day(day)
                phases.clear()
                started = time.perf_counter()
                released = await system.release(("mau", day, window))
                what = "first of the window" if i == 0 else f"next day {i}, after its ingest"
                timings.append((what, time.perf_counter() - started, dict(phases)))

            views, _ = await system.views(periods.window_days(days[window], window), False)
            arrays = [v.members for v in views]
            new_s, new = best_of(3, lambda: CURRENT_UNION(arrays))
            old_s, old = best_of(3, lambda: old_union(arrays))
            assert np.array_equal(new, old)
            distinct = len(new)
            before, _ = await system.views(periods.window_days(days[window - 1], window), False)
            slides = []
            for _ in range(3):
                cache = SlidingUnion()
                cache.union({v.day: v.members for v in before})
                started = time.perf_counter()
                slid = cache.union({v.day: v.members for v in views})
                slides.append(time.perf_counter() - started)
            assert np.array_equal(slid, new)
            slide_s = min(slides)

    label = " (old union)" if args.old_union else ""
    print()
    print(f"MAU over {window} days x {args.users:,} users/day; {distinct:,} distinct users in the window")
    print(f"(population {args.population:,}; numpy {np.__version__}; last estimate {released.estimate:,})")
    print("| measure | seconds |")
    print("|---|---|")
    for what, total, ph in timings:
        parts = ", ".join(f"{k} {v:.3f}" for k, v in ph.items())
        print(f"| MAU release{label}, {what} | {total:.3f} ({parts}) |")
    print(f"| union of the 30 day arrays, current `membership.union` | {new_s:.3f} |")
    print(f"| union, old stable sort (same-run baseline) | {old_s:.3f} |")
    print(f"| speed-up of the union | {old_s / new_s:.2f}x |")
    print(f"| window slid by one day (`SlidingUnion`, what a daily release does) | {slide_s:.3f} |")
    print(f"| speed-up of the slide over the old union | {old_s / slide_s:.1f}x |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=1_000_000, help="active users per day")
    p.add_argument("--population", type=int, default=3_000_000, help="users to draw from (0: all distinct)")
    p.add_argument("--next-days", type=int, default=5, help="daily releases timed after the first")
    p.add_argument("--batch", type=int, default=500_000, help="events per journal record")
    p.add_argument("--seed", type=int, default=20251009, help="seed of the synthetic workload (not of any noise)")
    p.add_argument("--old-union", action="store_true", help="make the releases with the old union (the 'before')")
    anyio.run(main, p.parse_args())
