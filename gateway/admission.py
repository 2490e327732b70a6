"""Request bodies in memory: bounded in bytes, whatever clients send (``MAX_INFLIGHT_BODY_BYTES``).

Rules:
1. Every request body the public API reads is read through ``read_body`` under a
   ``BodyBudget.hold()``, never with ``request.read()`` (only a shard's internal cut route, which
   answers nobody but its gateway's key, reads its own). Its bytes are taken from the process's one budget as they
   arrive, and given back when the hold ends -- for ``POST /event`` once the request is answered,
   so its decoded batch (about 2.6 times the body) is covered while it waits for its commit.
   What requests hold is therefore bounded by the budget -- about 4 times it at the worst moment
   (a body, its copy while joined, its decoding) -- and not by how many clients send at once.
2. A body that does not fit -- announced (``Content-Length``) larger than what is free, or a
   chunk arriving while the budget is spent -- is answered 503 ``overloaded`` with
   ``Retry-After``, and nothing of it is kept (aiohttp reads and drops the rest). More than
   ``MAX_BODY_BYTES``: 413, before a byte is read when announced.
3. Bytes count as they arrive, not as announced: a slow sender (a byte at a time) holds only
   what it has sent, so slow clients cannot take the budget from the others. A body that stops
   arriving (no byte for ``BODY_IDLE_SECONDS``) is answered 408.
4. Below the handlers, a connection buffers at most twice ``READ_BUFSIZE`` of a body nobody reads
   (aiohttp's flow control pauses the socket; ``cli.serve`` passes it to the runner), and the
   process lifts its open-files limit at start (``cli.raise_open_files_limit``): a thousand
   connections cost file descriptors and those small buffers, not budget.

Why hand-written: aiohttp bounds one body (``client_max_size``), not the sum; anyio's
``CapacityLimiter`` counts borrowers: a count of requests admitted before their bodies arrive lets
slow senders hold every slot (rule 3), and one admitted after arrival leaves the bodies being
read unbounded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anyio
from aiohttp import web

BODY_IDLE_SECONDS = 30.0
READ_BUFSIZE = 64 * 1024
RETRY_AFTER_SECONDS = 1


class BodyTimeout(Exception):
    """No byte of the body arrived for ``BODY_IDLE_SECONDS`` (408)."""


class BodyBudgetSpent(Exception):
    """The bodies being served fill ``MAX_INFLIGHT_BODY_BYTES`` (503 + Retry-After)."""

    retry_after = RETRY_AFTER_SECONDS


class BodyBudget:
    """Bytes of request bodies held by the requests being served, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @property
    def free(self) -> int:
        return self.limit - self.used

    @contextlib.contextmanager
    def hold(self) -> Iterator[Hold]:
        """What one request takes; all of it is given back when the block ends (rule 1)."""
        hold = Hold(self)
        try:
            yield hold
        finally:
            self.used -= hold.bytes
            hold.bytes = 0


class Hold:
    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.bytes = 0

    def take(self, n: int) -> None:
        if n > self.budget.free:
            raise BodyBudgetSpent()
        self.budget.used += n
        self.bytes += n


async def read_body(request: web.Request, hold: Hold, max_bytes: int) -> bytes:
    """The whole body, its bytes taken into ``hold`` as they arrive (rules 2 and 3)."""
    announced = request.content_length
    if announced is not None:
        if announced > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=announced)
        if announced > hold.budget.free:
            raise BodyBudgetSpent()
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            with anyio.fail_after(BODY_IDLE_SECONDS):
                chunk = await request.content.readany()
        except TimeoutError:
            raise BodyTimeout() from None
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=size)
        hold.take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)
