"""Every failure leaves as JSON ``{"error": code, "detail": text, ...}``; nothing else escapes.

The table below is the whole mapping from what went wrong to what the client sees. Refusals
that are about load (not about the request) carry ``Retry-After``.
"""

from __future__ import annotations

import re

import msgspec
import structlog
from aiohttp import web

from actors.refusals import BudgetExhausted, IdempotencyConflict, NotClosed, NothingToRevise, NotReady
from actors.runtime import ActorStopped, MailboxFull
from gateway.schemas import ErrorOut
from journal.groupcommit import Closed, Overloaded

log = structlog.get_logger("gateway")

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
    extra: dict | None = None,
    retry_after: int | None = None,
) -> web.Response:
    body = msgspec.to_builtins(ErrorOut(code, detail, field))
    body.update(extra or {})
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(body=msgspec.json.encode(body), status=status, content_type="application/json", headers=headers)


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return error_response(exc.status, exc.code, exc.detail, field=exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(
            exc.status, _HTTP_CODES.get(exc.status, exc.reason.lower().replace(" ", "_")), exc.text or exc.reason
        )
    except NotClosed as exc:
        return error_response(409, "period_not_closed", str(exc), extra={"closes_at": exc.closes_at})
    except BudgetExhausted as exc:
        return error_response(429, "budget_exhausted", str(exc), extra=exc.body)
    except NothingToRevise as exc:
        return error_response(404, "no_release", str(exc))
    except IdempotencyConflict:
        return error_response(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different batch",
            field="Idempotency-Key",
        )
    except Overloaded as exc:
        return error_response(503, "overloaded", str(exc), retry_after=exc.retry_after)
    except MailboxFull as exc:
        return error_response(503, "overloaded", str(exc), retry_after=exc.retry_after)
    except NotReady as exc:
        return error_response(503, "not_ready", str(exc), retry_after=exc.retry_after)
    except (Closed, ActorStopped):
        return error_response(503, "shutting_down", "the service is stopping; retry shortly", retry_after=2)
    except Exception as exc:
        log.exception("unhandled_error", route=request.path, error=repr(exc))
        return error_response(500, "internal_error", "unexpected error; it has been logged")
