"""Scoped API keys: who may call which route.

Rules:
1. Three scopes. ``read``: releases, ``/budget``, ``/releases``, ``/series`` (what a reader of the
   published numbers needs). ``ingest``: ``POST /event``, ``POST /erasure``, ``GET /erasure/{id}``.
   ``admin``: revisions, non-default MAU windows, maintenance, ``/metrics``, the audit log,
   detailed ``/readyz``. Keys: ``READ_API_KEY`` grants read, ``INGEST_API_KEY`` ingest,
   ``ADMIN_API_KEY`` admin and read, ``API_KEY`` every scope.
2. Every route declares its scope when it is registered (``route``); a route registered without
   one needs ``admin`` (deny by default). ``open`` routes (``/healthz``, the dashboard's static
   files) need no key; ``any`` routes (``/readyz``, ``/openapi.json``) need a valid key of any
   scope. A handler that needs more than its route's scope for some requests (a non-default MAU
   window) calls ``require``.
3. No key sent, or a key no setting holds: 401. A valid key without the scope: 403 naming the
   scope and the settings that grant it. Keys are compared in constant time: SHA-256 of the
   presented key against SHA-256 of every configured key, all of them, every time.
4. No key configured at all: every route is open, and the server says so loudly at start-up
   (``warn_if_open``: a banner on stderr, or an error-level JSON log line in production); it is
   for a laptop, never for a network.
5. ``request[CLIENT]`` names the caller without the key (a truncated keyed hash of it, or
   ``open``): idempotency keys are scoped by it, so one client cannot probe another's batches.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import structlog
from aiohttp import web

from gateway.config import GatewaySettings
from gateway.errors import Handler, error_response

log = structlog.get_logger("gateway")

Scope = Literal["read", "ingest", "admin"]
RouteScope = Literal["read", "ingest", "admin", "any", "open"]
SCOPES: tuple[Scope, ...] = ("read", "ingest", "admin")
HEADER = "X-API-Key"
GRANTS: dict[str, frozenset[Scope]] = {
    "read_api_key": frozenset({"read"}),
    "ingest_api_key": frozenset({"ingest"}),
    "admin_api_key": frozenset({"admin", "read"}),
    "api_key": frozenset(SCOPES),
}
CLIENT = web.RequestKey("client", str)
SCOPES_KEY = web.RequestKey("scopes", frozenset)
ROUTE_SCOPES = web.AppKey("route_scopes", dict)  # (METHOD, canonical path) -> RouteScope


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


@dataclass(frozen=True)
class Keyring:
    """The configured keys, as digests, with what each grants and the client label it yields."""

    entries: tuple[tuple[bytes, frozenset[Scope], str], ...]

    @classmethod
    def from_settings(cls, gw: GatewaySettings) -> Keyring:
        merged: dict[bytes, set[Scope]] = {}
        for setting, scopes in GRANTS.items():
            key = getattr(gw, setting)
            if key:
                merged.setdefault(_digest(key), set()).update(scopes)
        return cls(
            tuple(
                (d, frozenset(s), "k" + hmac.digest(b"dpdau-client", d, "sha256")[:8].hex()) for d, s in merged.items()
            )
        )

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def scopes_of(self, presented: str) -> tuple[frozenset[Scope], str] | None:
        """Constant time over the keyring (rule 3): every entry is compared, whatever matches."""
        probe = _digest(presented)
        found: tuple[frozenset[Scope], str] | None = None
        for digest, scopes, client in self.entries:
            if hmac.compare_digest(probe, digest):
                found = (scopes, client)
        return found

    def granting(self, scope: Scope) -> list[str]:
        return [s.upper() for s, grants in GRANTS.items() if scope in grants]


KEYRING = web.AppKey("keyring", Keyring)


def key_for(gw: GatewaySettings, scope: Scope) -> str | None:
    """The configured key a client (``dpdau``) should send for ``scope``: the narrowest first."""
    for setting, grants in GRANTS.items():
        key = getattr(gw, setting)
        if key and scope in grants:
            return str(key)
    return None


def route(app: web.Application, method: str, path: str, handler: Handler, scope: RouteScope) -> None:
    """Register a route with its scope (rule 2)."""
    registered = app.router.add_route(method, path, handler)
    canonical = registered.resource.canonical if registered.resource is not None else path
    app.setdefault(ROUTE_SCOPES, {})[(method.upper(), canonical)] = scope


def route_scope(app: web.Application, method: str, path: str) -> RouteScope:
    scopes: dict[tuple[str, str], RouteScope] = app.get(ROUTE_SCOPES, {})
    if method.upper() == "HEAD":
        method = "GET"
    return scopes.get((method.upper(), path), "admin")


def _canonical(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def forbidden(keyring: Keyring, scope: Scope) -> web.Response:
    settings = " or ".join(keyring.granting(scope))
    return error_response(
        403,
        "forbidden",
        f"this request needs the {scope!r} scope; this key does not have it (keys with it: {settings})",
        extra={"scope": scope},
    )


class Forbidden(Exception):
    def __init__(self, scope: Scope) -> None:
        super().__init__(scope)
        self.scope = scope


def require(request: web.Request, scope: Scope) -> None:
    """For a handler whose request needs more than its route's scope (rule 2)."""
    if scope not in request.get(SCOPES_KEY, frozenset()):
        raise Forbidden(scope)


def has_scope(request: web.Request, scope: Scope) -> bool:
    return scope in request.get(SCOPES_KEY, frozenset())


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    keyring = request.app[KEYRING]
    path = _canonical(request)
    needed: RouteScope = "open" if path is None else route_scope(request.app, request.method, path)
    if not keyring.enabled:
        request[SCOPES_KEY] = frozenset(SCOPES)
        request[CLIENT] = "open"
    elif needed != "open":
        presented = request.headers.get(HEADER)
        granted = keyring.scopes_of(presented) if presented else None
        if granted is None:
            return error_response(
                401,
                "unauthorized",
                f"missing or unknown {HEADER}",
                extra={"scope": None if needed == "any" else needed},
            )
        scopes, client = granted
        if needed != "any" and needed not in scopes:
            return forbidden(keyring, needed)
        request[SCOPES_KEY] = scopes
        request[CLIENT] = client
    else:
        request[SCOPES_KEY] = frozenset()
        request[CLIENT] = "open"
    try:
        return await handler(request)
    except Forbidden as exc:
        return forbidden(keyring, exc.scope)


def warn_if_open(gw: GatewaySettings, write: Callable[[str], object] = sys.stderr.write) -> Keyring:
    """Rule 4 (and unreachable scopes): said loudly, on stderr and in the log."""
    keyring = Keyring.from_settings(gw)
    if not keyring.enabled and gw.production:  # production logs are JSON lines: no banner, an error
        log.error("auth_disabled", detail="no API key configured; every route is open to anyone who can reach it")
        return keyring
    if not keyring.enabled:
        banner = (
            "\n" + "!" * 78 + "\n"
            "!! NO API KEY IS CONFIGURED: every route -- ingest, erasure, revisions, metrics -- is open\n"
            "!! to anyone who can reach this address. Set READ_API_KEY, INGEST_API_KEY and\n"
            "!! ADMIN_API_KEY (or API_KEY for all scopes) before exposing it beyond this machine.\n" + "!" * 78 + "\n"
        )
        write(banner)
        log.warning("auth_disabled", detail="no API key configured; every route is open")
        return keyring
    granted = set().union(*(s for _, s, _ in keyring.entries))
    for scope in SCOPES:
        if scope not in granted:
            log.warning(
                "scope_unreachable",
                scope=scope,
                detail=f"no configured key grants {scope!r}; its routes answer 403 (set {' or '.join(keyring.granting(scope))})",
            )
    return keyring
