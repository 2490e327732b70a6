"""The OpenAPI 3.1 document, generated from the same Structs the handlers encode and decode.

``OPERATIONS`` lists every route the app registers; a test fails if a route exists in one
and not the other, and another validates live responses against these schemas.

Security is not written here by hand: ``document(app)`` declares, per operation, exactly what
``gateway/auth.py`` enforces for this app's configuration -- the route's scope as the
requirement's role (OpenAPI 3.1 allows roles for apiKey schemes), ``[]`` for open routes, and no
requirement at all when no key is configured (then every route is open, and the document says so).

Every status a route can answer is declared, from what the route does rather than route by route
(``_answers``): a route that reads or writes the actor system can answer 503 (replay not finished,
queue or mailbox full, the journal unreachable) with ``Retry-After``; a route that journals
(ingest, erasure, a revision, the first request for a release) can answer 507 (the journal's disk
is full) with ``Retry-After``; a route with a body can answer 400 (not JSON), 408 (the body
stopped arriving), 413 (too large) and 422 (not the schema), and 503 when the bodies in flight
fill ``MAX_INFLIGHT_BODY_BYTES`` (``gateway/admission.py``). Parameters carry the limits the
handlers enforce (the configured window maximum included), so a request the document calls valid
is never answered 400 -- which schemathesis checks against the live server in CI
(``tests/e2e/test_openapi_fuzz.py``). An undeclared method is answered 405 with ``Allow`` (``gateway/errors.py``).
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from actors.accountant import BudgetReportOut
from actors.settings import EngineSettings
from gateway import auth
from gateway.appkeys import CONFIG
from gateway.config import GatewaySettings
from gateway.schemas import (
    BatchIn,
    BudgetRefusedOut,
    ErasureAuditPage,
    ErasureIn,
    ErasureOut,
    ErasureSummaryOut,
    ErrorOut,
    EventIn,
    IngestOut,
    NotClosedOut,
    ReadyOut,
    ReleaseConfigOut,
    ReleaseOut,
    ReleasePage,
    ReviseIn,
    SeriesPage,
)

_REF = "#/components/schemas/{name}"
_SCHEMAS, _COMPONENTS = msgspec.json.schema_components(
    [
        EventIn,
        BatchIn,
        ErasureIn,
        ReviseIn,
        IngestOut,
        ErrorOut,
        NotClosedOut,
        BudgetRefusedOut,
        ReleaseOut,
        ReleasePage,
        ErasureOut,
        SeriesPage,
        ReleaseConfigOut,
        ErasureSummaryOut,
        ErasureAuditPage,
        ReadyOut,
        BudgetReportOut,
    ],
    ref_template=_REF,
)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF.format(name=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json(_ref("ErrorOut"), "Error: `error` is a code, `detail` says what is wrong")
_RETRY_AFTER = {
    "Retry-After": {
        "required": True,
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 0},
    }
}
_UNAVAILABLE = {
    **_json(_ref("ErrorOut"), "Not now: replay not finished, queue or mailbox full, or the journal unreachable"),
    "headers": _RETRY_AFTER,
}
_FULL = {
    **_json(_ref("ErrorOut"), "The journal's storage is full: nothing of the request was stored"),
    "headers": _RETRY_AFTER,
}
# The refusals of a release (gateway/errors.py builds these bodies from the same Structs).
_NOT_CLOSED = _json(
    _ref("NotClosedOut"),
    "period_not_closed: the day (MAU: the window's last day) has not closed; nothing released or charged",
)
_BUDGET_REFUSED = _json(
    _ref("BudgetRefusedOut"),
    "budget_exhausted: a cap the release reads cannot afford it; refused before any noise, nothing charged. "
    "A period's cap never resets: a release that reads a spent period stays refused",
)
_OBJECT = {"type": "object"}
# A date the service takes (actors/state/periods.py DAY_RANGE: 1970-01-01 .. 9998-12-31).
_DAY = {
    "type": "string",
    "format": "date",
    "pattern": "^(19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-",
}
# Printable ASCII, 1-255 characters (gateway/app.py idempotency_key)
_IDEMPOTENCY_KEY = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"}
_WINDOW = {"type": "integer", "minimum": 1}  # maximum: MAX_WINDOW_DAYS, set per app (document)


def _OR_NULL(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/event"): {
        "summary": "Ingest one event or a batch; answers after the events are durable",
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": _IDEMPOTENCY_KEY,
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": [_ref("EventIn"), _ref("BatchIn")]}}},
        },
        "responses": {
            "200": _json(_ref("IngestOut"), "Durably journaled"),
            "409": _json(_ref("ErrorOut"), "A day more than FUTURE_DAYS_ALLOWED ahead of today (nothing stored)"),
        },
    },
    ("get", "/dau/{day}"): {
        "summary": "The DAU release for a closed day (created and charged on first request)",
        "parameters": [{"name": "day", "in": "path", "required": True, "schema": _DAY}],
        "responses": {
            "200": _json(_ref("ReleaseOut"), "Release"),
            "400": _ERROR,
            "409": _NOT_CLOSED,
            "429": _BUDGET_REFUSED,
            "503": _ERROR,
        },
    },
    ("get", "/mau"): {
        "summary": "The MAU release for the window of `window` days ending on `end` (a window other than "
        "MAU_WINDOW_DAYS needs the admin scope: each one spends budget on every period it reads)",
        "parameters": [
            {"name": "end", "in": "query", "required": True, "schema": _DAY},
            {"name": "window", "in": "query", "required": False, "schema": _WINDOW},
        ],
        "responses": {
            "200": _json(_ref("ReleaseOut"), "Release"),
            "400": _ERROR,
            "409": _NOT_CLOSED,
            "429": _BUDGET_REFUSED,
            "503": _ERROR,
        },
    },
    ("post", "/erasure"): {
        "summary": "Erase a user from every day; returns a receipt",
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ErasureIn")}}},
        "responses": {"202": _json(_ref("ErasureOut"), "Accepted"), "400": _ERROR, "422": _ERROR, "503": _ERROR},
    },
    ("get", "/erasure/{erasure_id}"): {
        "summary": "Status of an erasure: pending, applied, purged",
        "parameters": [{"name": "erasure_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": _json(_ref("ErasureOut"), "Receipt"), "404": _ERROR},
    },
    ("get", "/budget"): {
        "summary": "Privacy budget spent and remaining per accounting period (all metrics together, and "
        "per metric), tight PLD composition; `periods=k` adds the composition over the last k periods",
        "parameters": [
            {"name": "period", "in": "query", "required": False, "schema": {"type": "string"}},
            {
                "name": "periods",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 120},  # app.MAX_BUDGET_PERIODS
            },
        ],
        "responses": {"200": _json(_ref("BudgetReportOut"), "Budget report"), "400": _ERROR},
    },
    ("get", "/releases"): {
        "summary": "The release log, paged",
        "parameters": [
            {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            {"name": "metric", "in": "query", "schema": {"enum": ["dau", "mau"]}},
        ],
        "responses": {"200": _json(_ref("ReleasePage"), "Page"), "400": _ERROR},
    },
    ("post", "/releases/revise"): {
        "summary": "Admin: re-release a past period with fresh noise, charged, labelled with its revision",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {  # ReviseIn, with what the handler requires per metric
                        "oneOf": [
                            {
                                "type": "object",
                                "properties": {
                                    "metric": {"const": "dau"},
                                    "day": _DAY,
                                    "end": _OR_NULL(_DAY),
                                    "window": _OR_NULL(_WINDOW),
                                },
                                "required": ["metric", "day"],
                                "additionalProperties": False,
                            },
                            {
                                "type": "object",
                                "properties": {
                                    "metric": {"const": "mau"},
                                    "day": _OR_NULL(_DAY),
                                    "end": _DAY,
                                    "window": _OR_NULL(_WINDOW),
                                },
                                "required": ["metric", "end"],
                                "additionalProperties": False,
                            },
                        ]
                    }
                }
            },
        },
        "responses": {
            "201": _json(_ref("ReleaseOut"), "New revision"),
            "404": _ERROR,
            # Only when LATENESS_HOURS or TIMEZONE changed since the release and moved its day's close later.
            "409": _NOT_CLOSED,
            "422": _ERROR,
            "429": _BUDGET_REFUSED,
        },
    },
    ("get", "/series"): {
        "summary": "The published series: per day in [from, to], the latest release (or the refusal), paged",
        "description": "Reader scope. DAU, or MAU of the default window (`MAU_WINDOW_DAYS`). Days without a "
        "release or refusal (not yet due, or before the schedule's start) are absent. JSON by default; "
        "`text/csv` with `format=csv` or `Accept: text/csv` (same columns as `SeriesPoint`, plus metric and "
        "window; `X-Total-Count` gives the total).",
        "parameters": [
            {"name": "metric", "in": "query", "required": True, "schema": {"enum": ["dau", "mau"]}},
            {"name": "from", "in": "query", "required": False, "schema": _DAY},
            {"name": "to", "in": "query", "required": False, "schema": _DAY},
            {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}},
        ],
        "responses": {
            "200": {
                "description": "Series page",
                "content": {
                    "application/json": {"schema": _ref("SeriesPage")},
                    "text/csv": {"schema": {"type": "string"}},
                },
            },
            "400": _ERROR,
            "503": _ERROR,
        },
    },
    ("get", "/config"): {
        "summary": "The release configuration: mechanisms, epsilon, delta, caps, window, schedule (no data)",
        "responses": {"200": _json(_ref("ReleaseConfigOut"), "Configuration"), "503": _ERROR},
    },
    ("get", "/erasures/summary"): {
        "summary": "Admin: erasure receipts by status (exact counts; not a release)",
        "responses": {"200": _json(_ref("ErasureSummaryOut"), "Counts by status"), "503": _ERROR},
    },
    ("get", "/"): {
        "summary": "Redirects to the dashboard",
        "responses": {"302": {"description": "Location: /dashboard/"}},
    },
    ("get", "/dashboard"): {
        "summary": "Redirects to the dashboard",
        "responses": {"302": {"description": "Location: /dashboard/"}},
    },
    ("get", "/dashboard/{name}"): {
        "summary": "The dashboard's static files (open: they hold no data; the page fetches the JSON routes)",
        "parameters": [
            {
                "name": "name",
                "in": "path",
                "required": True,
                "schema": {"enum": ["", "index.html", "dashboard.js", "dashboard.css", "favicon.svg"]},
            }
        ],
        "responses": {
            "200": {
                "description": "A static file",
                "content": {
                    "text/html": {"schema": {"type": "string"}},
                    "application/javascript": {"schema": {"type": "string"}},
                    "text/css": {"schema": {"type": "string"}},
                    "image/svg+xml": {"schema": {"type": "string"}},
                },
            },
            "404": _ERROR,
        },
    },
    ("get", "/audit/erasures"): {
        "summary": "Admin: the erasure audit log, with the number of events each purge removed",
        "parameters": [
            {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
        ],
        "responses": {"200": _json(_ref("ErasureAuditPage"), "Page"), "400": _ERROR},
    },
    ("get", "/metrics"): {
        "summary": "Prometheus metrics",
        "responses": {
            "200": {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}
        },
    },
    ("get", "/healthz"): {"summary": "Liveness", "responses": {"200": _json(_OBJECT, "Alive")}},
    ("get", "/readyz"): {
        "summary": "Readiness (journal replay finished); the reasons only for the admin scope",
        "responses": {"200": _json(_ref("ReadyOut"), "Ready"), "503": _json(_ref("ReadyOut"), "Not ready")},
    },
    ("get", "/openapi.json"): {"summary": "This document", "responses": {"200": _json(_OBJECT, "OpenAPI document")}},
}


# What each operation does, hence what it can answer besides its own statuses (module docstring).
_NO_SYSTEM = {
    ("get", "/healthz"),
    ("get", "/openapi.json"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/"),
    ("get", "/dashboard"),
    ("get", "/dashboard/{name}"),
}
_JOURNALS = {
    ("post", "/event"),
    ("post", "/erasure"),
    ("post", "/releases/revise"),
    ("get", "/dau/{day}"),
    ("get", "/mau"),
}
_BODY = {("post", "/event"), ("post", "/erasure"), ("post", "/releases/revise")}


def _answers(method: str, path: str, op: dict[str, Any], max_window: int) -> dict[str, Any]:
    responses = dict(op["responses"])
    if (method, path) not in _NO_SYSTEM:
        responses["503"] = _UNAVAILABLE
    if (method, path) in _JOURNALS:
        responses["507"] = _FULL
    if (method, path) in _BODY:
        responses.update({"400": _ERROR, "408": _ERROR, "413": _ERROR, "422": _ERROR})
    limited: dict[str, Any] = _limits({**op, "responses": responses}, max_window)
    return limited


def _limits(node: Any, max_window: int) -> Any:
    """The configured window maximum wherever a window is a parameter or a field."""
    if isinstance(node, dict):
        if node is _WINDOW:
            return {**_WINDOW, "maximum": max_window}
        return {k: _limits(v, max_window) for k, v in node.items()}
    if isinstance(node, list):
        return [_limits(v, max_window) for v in node]
    return node


def _secured(op: dict[str, Any], scope: auth.RouteScope, enabled: bool) -> dict[str, Any]:
    """The operation with the security ``gateway/auth.py`` enforces for it (module docstring)."""
    op = {**op, "x-scope": scope}
    if not enabled or scope == "open":
        return {**op, "security": []}
    roles = [] if scope == "any" else [scope]
    responses = {**op["responses"], "401": _ERROR}
    if scope != "any":
        responses["403"] = _ERROR
    return {**op, "security": [{"apiKey": roles}], "responses": responses}


def document(app: web.Application | None = None) -> dict[str, Any]:
    enabled = app is not None and app[auth.KEYRING].enabled
    max_window = app[CONFIG].engine.max_window_days if app is not None else EngineSettings().max_window_days
    max_batch = app[CONFIG].gateway.max_batch_events if app is not None else GatewaySettings().max_batch_events
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in OPERATIONS.items():
        scope = auth.route_scope(app, method, path) if app is not None else "admin"
        paths.setdefault(path, {})[method] = _secured(_answers(method, path, op, max_window), scope, enabled)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dp-dau-mau",
            "version": "0.1.0",
            "description": "DAU/MAU under user-level differential privacy. "
            + (
                "Scoped API keys in X-API-Key: read (READ_API_KEY), ingest (INGEST_API_KEY), admin "
                "(ADMIN_API_KEY, also read), every scope (API_KEY); each operation names its scope."
                if enabled
                else "No API key is configured on this server: every route is open."
            ),
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": _components(max_batch),
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "paths": paths,
    }


def _components(max_batch: int) -> dict[str, Any]:
    """The Structs' schemas, with the limits the handler adds to them: a batch holds 1 to
    MAX_BATCH_EVENTS events (``app.decode_events``)."""
    batch = _COMPONENTS["BatchIn"]
    events = {**batch["properties"]["events"], "minItems": 1, "maxItems": max_batch}
    event = _COMPONENTS["EventIn"]
    day = {**event["properties"]["day"], "pattern": _DAY["pattern"]}  # to_columns: no day before 1970
    return {
        **_COMPONENTS,
        "BatchIn": {**batch, "properties": {**batch["properties"], "events": events}},
        "EventIn": {**event, "properties": {**event["properties"], "day": day}},
    }


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS") or route.resource is None:
            continue
        out.add((route.method.lower(), route.resource.canonical))
    return out
