"""Request ids and metrics (outermost, so refusals are counted too), and API-key auth."""

from __future__ import annotations

import hmac
import itertools
import os
import time

import structlog
from aiohttp import web

from gateway import dashboard
from gateway.appkeys import CONFIG, METRICS
from gateway.errors import Handler, error_response

log = structlog.get_logger("gateway")
OPEN_PATHS = frozenset({"/healthz"})
_ids = itertools.count(1)
_PREFIX = os.urandom(4).hex()  # request ids: unique per process start, no syscall per request


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = request.headers.get("X-Request-Id") or f"{_PREFIX}-{next(_ids)}"
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


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    expected = request.app[CONFIG].gateway.api_key
    if expected and request.path not in OPEN_PATHS and not dashboard.is_open(request.path):
        given = request.headers.get("X-API-Key", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return error_response(401, "unauthorized", "missing or wrong X-API-Key")
    return await handler(request)
