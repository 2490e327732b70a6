"""Every failure leaves as JSON ``{"error": code, "detail": text, ...}``; nothing else escapes.

``ERRORS`` below is the whole mapping from what went wrong (an exception type) to what the
client sees (status, code, body, Retry-After). A body is ``ErrorOut``, or, for a refusal that
carries more (``period_not_closed``, ``budget_exhausted``), its own Struct in ``schemas.py``: the
body is converted to that Struct (validated) before it is sent, so it is exactly what
``/openapi.json`` declares. Refusals that are about load, not about the request, carry
``Retry-After``. Anything not in the table is a bug: logged, answered 500.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from aiohttp import web

from actors.refusals import (
    BudgetExhausted,
    IdempotencyConflict,
    NotClosed,
    NothingToRevise,
    NotReady,
    ShardsUnavailable,
)
from actors.runtime import ActorStopped, MailboxFull
from actors.system.cuts import CutUnavailable
from gateway.admission import BODY_IDLE_SECONDS, BodyBudgetSpent, BodyTimeout
from gateway.schemas import BudgetRefusedOut, ErrorOut, NotClosedOut
from journal.groupcommit import Closed, Overloaded
from journal.storage import StorageFull, StorageUnavailable

log = structlog.get_logger("gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_FIELD = re.compile(r"- at `(\$[^`]*)`")


class BadRequest(Exception):
    def __init__(self, status: int, code: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.field = status, code, detail, field

    @classmethod
    def from_msgspec(cls, exc: msgspec.DecodeError) -> BadRequest:
        text = str(exc)
        match = _FIELD.search(text)
        if isinstance(exc, msgspec.ValidationError):
            return cls(422, "validation_error", text, match.group(1) if match else None)
        return cls(400, "invalid_json", text)


def error_response(
    status: int,
    code: str,
    detail: str,
    *,
    field: str | None = None,
    extra: dict[str, Any] | None = None,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = msgspec.to_builtins(ErrorOut(code, detail, field))
    body.update(extra or {})
    return json_error(status, body, retry_after=retry_after, headers=headers)


def json_error(
    status: int, body: object, *, retry_after: int | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.Response(body=msgspec.json.encode(body), status=status, content_type="application/json", headers=headers)


@dataclass(frozen=True)
class Mapping:
    """How one kind of failure is answered."""

    status: int
    code: str
    detail: Callable[[Any], str] = str
    retry_after: Callable[[Any], int | None] = lambda exc: None
    typed: type[msgspec.Struct] | None = None  # the body's Struct when it carries more than ErrorOut
    fields: Callable[[Any], dict[str, Any]] = lambda exc: {}  # its fields besides error and detail

    def body(self, exc: Any, field: str | None = None) -> msgspec.Struct:
        """The body for ``exc``. A typed body is converted, hence validated: a field missing, extra
        or of the wrong type is an error here, never a body that differs from its schema."""
        if self.typed is None:
            return ErrorOut(self.code, self.detail(exc), field)
        return msgspec.convert({"error": self.code, "detail": self.detail(exc), **self.fields(exc)}, self.typed)


ERRORS: dict[type[Exception], Mapping] = {
    NotClosed: Mapping(409, "period_not_closed", typed=NotClosedOut, fields=lambda e: {"closes_at": e.closes_at}),
    BudgetExhausted: Mapping(429, "budget_exhausted", typed=BudgetRefusedOut, fields=lambda e: e.body),
    NothingToRevise: Mapping(404, "no_release"),
    IdempotencyConflict: Mapping(
        422, "idempotency_key_reused", lambda e: "this Idempotency-Key was used with a different batch"
    ),
    Overloaded: Mapping(503, "overloaded", retry_after=lambda e: e.retry_after),
    # admission.py: the bodies being served fill MAX_INFLIGHT_BODY_BYTES; one stopped arriving.
    BodyBudgetSpent: Mapping(
        503,
        "overloaded",
        lambda e: "too many request bodies in flight (MAX_INFLIGHT_BODY_BYTES); retry shortly",
        retry_after=lambda e: e.retry_after,
    ),
    BodyTimeout: Mapping(
        408, "body_timeout", lambda e: f"no byte of the request body arrived for {BODY_IDLE_SECONDS:.0f} s"
    ),
    # The journal could not store the request (nothing of it was): its disk is full (507), or it
    # is busy, unreachable or failing (503). Both say when to try again.
    StorageFull: Mapping(507, "storage_full", retry_after=lambda e: e.retry_after),
    StorageUnavailable: Mapping(503, "storage_unavailable", retry_after=lambda e: e.retry_after),
    MailboxFull: Mapping(503, "overloaded", retry_after=lambda e: e.retry_after),
    NotReady: Mapping(503, "not_ready", retry_after=lambda e: e.retry_after),
    ShardsUnavailable: Mapping(503, "shards_unavailable", retry_after=lambda e: e.retry_after),
    CutUnavailable: Mapping(409, "cut_unavailable"),  # a shard's internal route (gateway/internal.py)
    Closed: Mapping(503, "shutting_down", lambda e: "the service is stopping; retry shortly", retry_after=lambda e: 2),
    ActorStopped: Mapping(
        503, "shutting_down", lambda e: "the service is stopping; retry shortly", retry_after=lambda e: 2
    ),
}

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def mapping_for(exc: Exception) -> Mapping | None:
    """The ``ERRORS`` entry of ``exc``'s nearest class that has one (HTTP and gRPC both ask)."""
    return next((ERRORS[cls] for cls in type(exc).__mro__ if cls in ERRORS), None)


def _mapped(exc: Exception) -> web.Response | None:
    mapping = mapping_for(exc)
    if mapping is None:
        return None
    field = "Idempotency-Key" if isinstance(exc, IdempotencyConflict) else None
    return json_error(mapping.status, mapping.body(exc, field), retry_after=mapping.retry_after(exc))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return error_response(exc.status, exc.code, exc.detail, field=exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, exc.reason.lower().replace(" ", "_"))
        # 405 says which methods the path has (RFC 9110 section 15.5.6): aiohttp put them in Allow.
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, exc.text or exc.reason, headers=allow)
    except Exception as exc:
        try:
            mapped = _mapped(exc)
        except msgspec.ValidationError as bad:  # a refusal's body does not fit its Struct: a bug
            log.exception("error_body_invalid", route=request.path, error=repr(exc), problem=str(bad))
            return error_response(500, "internal_error", "unexpected error; it has been logged")
        if mapped is not None:
            return mapped
        log.exception("unhandled_error", route=request.path, error=repr(exc))
        return error_response(500, "internal_error", "unexpected error; it has been logged")
