"""What one process is in a deployment of several: which keys it holds, how its releases count.

Rules:
1. A *pseudonym partition* is the journal's (``JournalBackend.partition_count`` of them, fixed
   when the journal is created); a user lives in exactly one. Shard ``I`` of ``N`` holds the
   partitions ``p`` with ``p % N == I`` -- so every user lives in exactly one shard, whatever
   ``N <= partition_count`` is chosen.
2. Three kinds of process, all the same ``ActorSystem``:
   - *whole* (the default; every SQLite process, ``dpdau serve [--workers N]`` on PostgreSQL
     without shards): holds every partition's per-day state and counts its releases locally;
   - *gateway* (``--shards N``): holds no per-day state (the activity it reads has no keys:
     positions and idempotency only) and counts each release by asking the ``N`` shards for
     their exact share at one consistent cut (``actors/system/cuts.py``);
   - *shard* (``--shard I/N``): holds its partitions' per-day state, never writes the journal,
     and answers cut queries on its internal route. Its releases are not asked for.
3. ``name`` keeps processes that share a ``DATA_DIR`` apart: the lock file and the snapshot
   directory are per name, and the name says what the snapshots hold -- "" or ``worker-<i>``
   every partition, ``gateway-of<N>[-<i>]`` none, ``shard-<I>of<N>`` one shard's -- so a
   snapshot is never loaded by a process that holds something else (it would start without, or
   with someone else's, users).
"""

from __future__ import annotations

from dataclasses import dataclass

from journal.backend import JournalError


@dataclass(frozen=True)
class Topology:
    name: str = ""  # "" the single process; "worker-1", "shard-0of2", ...
    shard: tuple[int, int] | None = None  # (I, N): this process is shard I of N
    shards: int | None = None  # gateway: the N shards its releases sum over
    address: str | None = None  # a shard's internal base URL, as coordinators reach it

    def __post_init__(self) -> None:
        if self.shard is not None:
            index, count = self.shard
            if not 0 <= index < count:
                raise ValueError(f"shard {index}/{count}: the index must be in 0..{count - 1}")
        if self.shard is not None and self.shards is not None:
            raise ValueError("a process is either a shard (--shard I/N) or a gateway over shards (--shards N)")

    @property
    def kind(self) -> str:
        return "shard" if self.shard is not None else "gateway" if self.shards is not None else "whole"

    @property
    def layout(self) -> int | None:
        """How many shards the deployment has (None: not sharded)."""
        return self.shard[1] if self.shard is not None else self.shards

    @property
    def writes(self) -> bool:
        """Shards only read the journal; everything else takes requests and writes."""
        return self.shard is None

    def partitions(self, partition_count: int) -> frozenset[int] | None:
        """What this process reads of the activity (rule 1; ``Committer`` rule 7): None = all."""
        if self.shard is not None:
            index, count = self.shard
            if count > partition_count:
                raise JournalError(
                    f"--shard {index}/{count}: the journal has {partition_count} partitions, so at most "
                    f"{partition_count} shards (JOURNAL_URL ?partitions= when the journal is created)"
                )
            return frozenset(p for p in range(partition_count) if p % count == index)
        if self.shards is not None:
            return frozenset()
        return None


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N), or ValueError naming the form."""
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or int(count) < 1 or int(index) >= int(count):
        raise ValueError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    return int(index), int(count)


def shard_name(index: int, count: int) -> str:
    return f"shard-{index}of{count}"
