"""The system wiring: everything that connects the pure state, the actors and the journal.

- ``facade.py``: ``ActorSystem``, the one object the gateway talks to (lifecycle + entry points).
- ``boot.py``: ``restore_world`` (snapshot + tail replay), over any journal backend.
- ``router.py``: committed journal records -> actors, in journal order.
- ``ingest.py``: a request's batch -> one journal record, exactly once per Idempotency-Key.
- ``snapshotting.py``: live snapshots without a global pause; replace-all after purges.
- ``loops.py``: background loops (the journal's housekeeping, periodic snapshots, following
  other processes' commits, the registry heartbeat).
- ``scheduler.py``: the schedule loop (``RELEASE_SCHEDULE=daily``): publishes what is due.
- ``maintenance.py``: offline replay / snapshot / restore / compact on a stopped data directory.
- ``topology.py``: what one process of a deployment holds (every partition, none, or a shard's).
- ``cuts.py``: the consistent cut over shards -- a shard's ``CutBook``, a gateway's ``ShardCounter``.
"""

from actors.system.boot import restore_world
from actors.system.facade import ActorSystem

__all__ = ["ActorSystem", "restore_world"]
