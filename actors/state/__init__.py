"""The state, pure: what replay builds and a snapshot holds. No I/O, no clock, no event loop.

Every book changes only by applying journaled records in journal order, and remembers the last
position it applied, so live actors, full replay and snapshot + tail all agree.

- ``membership.py``: one day's exact membership (sorted int64 + a short log of pending ops).
- ``periods.py``: days, windows, closing times, accounting periods.
- ``ledger.py``: the budget charges per (metric, period).
- ``release_book.py``: every published release and the state of every counter run; the
  schedule's recorded start and its refusals.
- ``schedule.py``: the publication schedule -- given the clock, the configuration, the start day
  and the book, what is due, in order (and why that depends on no data).
- ``erasure_book.py``: erasure receipts and who still awaits a purge.
- ``idempotency.py``: which Idempotency-Key produced which batch.
- ``routing.py``: which state each journal record changes -- the one table replay (``World``)
  and the live router (``actors/system/router.py``) both follow.
- ``world.py``: all of the above as one value: ``World.apply`` is replay; snapshots encode it.
"""
