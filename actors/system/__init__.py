"""The system wiring: everything that connects the pure state, the actors and the journal.

- ``facade.py``: ``ActorSystem``, the one object the gateway talks to (lifecycle + entry points).
- ``boot.py``: data-directory paths and ``restore_world`` (snapshot + tail replay).
- ``router.py``: committed journal records -> actors, in journal order.
- ``ingest.py``: a request's batch -> one journal record, exactly once per Idempotency-Key.
- ``snapshotting.py``: live snapshots without a global pause; replace-all after purges.
- ``loops.py``: background loops (indexer, periodic snapshots).
- ``maintenance.py``: offline replay / snapshot / restore / compact on a stopped data directory.
"""

from actors.system.boot import journal_path, restore_world, snapshot_store
from actors.system.facade import ActorSystem

__all__ = ["ActorSystem", "journal_path", "restore_world", "snapshot_store"]
