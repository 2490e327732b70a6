"""Request ids and metrics (outermost, so refusals are counted too). Auth is ``gateway/auth.py``.

A request id is random (unless the client sent one): a counter would tell any caller how many
requests -- single-event ingests included -- arrived between two of its own."""

from __future__ import annotations

import os
import time

import structlog
from aiohttp import web

from gateway.appkeys import METRICS
from gateway.errors import Handler

log = structlog.get_logger("gateway")


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    given = request.headers.get("X-Request-Id", "")
    request_id = given if 0 < len(given) <= 128 and given.isascii() and given.isprintable() else os.urandom(8).hex()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await handler(request)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    route = _route(request)
    request.app[METRICS].observe(route, request.method, response.status, time.perf_counter() - started)
    if response.status >= 500:
        log.warning("request_failed", route=route, status=response.status, request_id=request_id)
    response.headers["X-Request-Id"] = request_id
    return response
