"""The domain: pure state and privacy math, wrapped by actors, wired into one system.

Read it in this order (imports point downwards only; nothing here imports ``gateway``):

- ``privacy/`` (pure): noise samplers, mechanisms, continual counters, flippancy, accounting.
- ``sketches/`` (pure): distinct-count summaries of a day's (or a window's) members.
- ``state/`` (pure): the books that replay builds -- memberships, ledger, releases, erasures,
  idempotency -- and ``World``, which is all of them as one value.
- ``settings.py`` (plain data) and ``refusals.py`` (the "no" answers).
- ``runtime/``: the actor runtime on anyio (bounded mailboxes, feeds, supervision).
- The actors, each a thin async loop around a pure book: ``days.py`` (one per day),
  ``release.py`` (quote -> read -> noise -> journal -> answer), ``accountant.py``, ``erasure.py``;
  ``noise_pool.py`` draws release noise ahead of time, off the request path.
- ``system/``: the wiring -- boot, the router, ingest, snapshots, background loops, offline
  maintenance -- behind ``ActorSystem``, the facade the gateway calls.
"""
