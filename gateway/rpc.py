"""A second transport: the same ``ActorSystem`` over gRPC, next to HTTP (``dpdau serve --grpc-port``).

The smallest working example of another transport over the system facade (HANDOFF "How to extend
to gRPC"). Methods ``/dpdau.v1.DpDau/{Ingest,Dau,Mau,Budget,Erase,ErasureStatus}``.

Rules:
1. Same facade, same rules as ``app.py``: validate with the HTTP schemas (``decode_events``,
   ``parse_day``, ``ErasureIn``), pseudonymise with the app's ``Pseudonymizer``, call one
   ``ActorSystem`` coroutine, answer the body the HTTP route answers. Nothing here decides what
   the actors own; a release read over gRPC is the very record HTTP returns (never re-drawn).
2. Messages are JSON (msgspec) -- gRPC prescribes no encoding. A ``.proto`` can replace the
   (de)serialisers in ``_method`` without touching a handler.
3. Errors are the HTTP error table (``errors.ERRORS``, ``BadRequest``) mapped to gRPC status
   codes (``STATUS``); the details are the same JSON error body; ``Retry-After`` becomes the
   trailing metadata ``retry-after``. Anything unmapped is logged and answered INTERNAL.
4. Scoped keys exactly as HTTP (``gateway/auth.py``): the metadata ``x-api-key`` must grant the
   method's scope (``SCOPES``; ``Mau`` of another window than ``MAU_WINDOW_DAYS`` needs admin);
   none or an unknown key is UNAUTHENTICATED, the wrong scope PERMISSION_DENIED naming the scope.
   Idempotency keys are scoped by the calling key, and ``Ingest`` answers the count sent and an
   opaque receipt, never a journal position.
5. Lifetime: ``attach`` adds a ``cleanup_ctx`` after the app's own, so the gRPC server starts once
   the actor system is up and stops (grace 5 s) before the system stops.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import msgspec
import structlog
from aiohttp import web

from actors.state.release_book import ReleaseKey
from gateway import auth
from gateway.app import decode_events, parse_day, to_columns
from gateway.appkeys import BODIES, CONFIG, PSEUDONYMS, SYSTEM
from gateway.config import ConfigError
from gateway.errors import BadRequest, mapping_for
from gateway.schemas import ErasureIn, ErrorOut, IngestOut, erasure_out, release_out

log = structlog.get_logger("gateway.rpc")
SERVICE = "dpdau.v1.DpDau"
GRPC_PORT = web.AppKey("grpc_port", int)

# HTTP status of the error table -> gRPC status code
STATUS: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.OUT_OF_RANGE,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,  # the journal's disk is full (journal/storage.py)
}


# method -> the scope it needs (auth rule 1), as the matching HTTP route
SCOPES: dict[str, auth.Scope] = {
    "Ingest": "ingest",
    "Dau": "read",
    "Mau": "read",
    "Budget": "read",
    "Erase": "ingest",
    "ErasureStatus": "ingest",
}
# (scopes, client) of the caller of the call being handled (each call runs in its own task)
_GRANTED: contextvars.ContextVar[tuple[frozenset[str], str]] = contextvars.ContextVar(
    "dpdau_granted", default=(frozenset(auth.SCOPES), "open")
)


class DayIn(msgspec.Struct, forbid_unknown_fields=True):
    day: str


class WindowIn(msgspec.Struct, forbid_unknown_fields=True):
    end: str
    window: int | None = None


class PeriodIn(msgspec.Struct, forbid_unknown_fields=True):
    period: str | None = None


class ErasureIdIn(msgspec.Struct, forbid_unknown_fields=True):
    erasure_id: str


Handler = Callable[[bytes, Any], Awaitable[object]]


def _decode(raw: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.DecodeError as exc:
        raise BadRequest.from_msgspec(exc) from None


def handlers(app: web.Application) -> dict[str, Handler]:
    """Method name -> handler(request bytes, context) returning the response body (rule 1)."""

    async def ingest(raw: bytes, context: Any) -> object:
        cfg, system = app[CONFIG], app[SYSTEM]
        idem = dict(context.invocation_metadata() or ()).get("idempotency-key")
        scoped = None if idem is None else f"{_caller(context)[1]}:{idem}"
        with app[BODIES].hold() as hold:  # as HTTP (admission.py); grpc has the message whole already
            hold.take(len(raw))
            events = decode_events(raw, cfg)
            keys, days, ops, metadata = to_columns(events, cfg, app[PSEUDONYMS], system.clock())
            receipt, replayed = await system.ingest(keys, days, ops, metadata, idempotency_key=scoped)
        if replayed:
            context.set_trailing_metadata((("idempotent-replayed", "true"),))
        return IngestOut(receipt.ingested, receipt.receipt)

    async def dau(raw: bytes, context: Any) -> object:
        day = parse_day(_decode(raw, DayIn).day, "day")
        return release_out(await app[SYSTEM].release(ReleaseKey.dau(day)))

    async def mau(raw: bytes, context: Any) -> object:
        body = _decode(raw, WindowIn)
        cfg = app[CONFIG].engine
        window = cfg.mau_window_days if body.window is None else body.window
        if not 1 <= window <= cfg.max_window_days:
            raise BadRequest(400, "invalid_window", f"window must be an integer in 1..{cfg.max_window_days}", "window")
        if window != cfg.mau_window_days and "admin" not in _caller(context)[0]:
            raise auth.Forbidden("admin")
        return release_out(await app[SYSTEM].release(ReleaseKey.mau(parse_day(body.end, "end"), window)))

    async def budget(raw: bytes, context: Any) -> object:
        return await app[SYSTEM].budget(_decode(raw, PeriodIn).period)

    async def erase(raw: bytes, context: Any) -> object:
        body = _decode(raw, ErasureIn)
        return erasure_out(await app[SYSTEM].erase(app[PSEUDONYMS].key(body.user_id)))

    async def erasure_status(raw: bytes, context: Any) -> object:
        found = await app[SYSTEM].erasure_status(_decode(raw, ErasureIdIn).erasure_id)
        if found is None:
            raise BadRequest(404, "unknown_erasure", "no erasure with that id")
        return erasure_out(found)

    return {
        "Ingest": ingest,
        "Dau": dau,
        "Mau": mau,
        "Budget": budget,
        "Erase": erase,
        "ErasureStatus": erasure_status,
    }


def _caller(context: Any) -> tuple[frozenset[str], str]:
    return _GRANTED.get()


def _error(exc: Exception) -> tuple[int, dict[str, Any], int | None]:
    """(HTTP status, JSON error body, retry-after) exactly as the HTTP error middleware answers."""
    if isinstance(exc, auth.Forbidden):
        return 403, msgspec.to_builtins(ErrorOut("forbidden", f"this call needs the {exc.scope!r} scope", None)), None
    if isinstance(exc, BadRequest):
        return exc.status, msgspec.to_builtins(ErrorOut(exc.code, exc.detail, exc.field)), None
    mapping = mapping_for(exc)
    if mapping is None:
        raise exc
    return mapping.status, msgspec.to_builtins(mapping.body(exc)), mapping.retry_after(exc)


def _method(app: web.Application, name: str, handler: Handler) -> grpc.RpcMethodHandler:
    async def behaviour(raw: bytes, context: Any) -> bytes:
        keyring = app[auth.KEYRING]
        if keyring.enabled:  # rule 4
            given = dict(context.invocation_metadata() or ()).get("x-api-key", "")
            granted = keyring.scopes_of(given) if given else None
            if granted is None:
                body = msgspec.to_builtins(ErrorOut("unauthorized", "missing or unknown x-api-key", None))
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, msgspec.json.encode(body).decode())
                raise AssertionError("unreachable: abort raises")
            scope = SCOPES[name]
            if scope not in granted[0]:
                body = {**msgspec.to_builtins(ErrorOut("forbidden", f"this call needs the {scope!r} scope", None))}
                body["scope"] = scope
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, msgspec.json.encode(body).decode())
            _GRANTED.set((frozenset(granted[0]), granted[1]))
        try:
            return msgspec.json.encode(await handler(raw, context))
        except Exception as exc:
            try:
                status, body, retry_after = _error(exc)
            except Exception:
                log.exception("unhandled_error", method=name, error=repr(exc))
                status, body, retry_after = 500, {"error": "internal_error", "detail": "unexpected error"}, None
            if retry_after is not None:
                context.set_trailing_metadata((("retry-after", str(retry_after)),))
            code = STATUS.get(status, grpc.StatusCode.INTERNAL)
            await context.abort(code, msgspec.json.encode(body).decode())
            raise  # unreachable: abort raises

    return grpc.unary_unary_rpc_method_handler(behaviour)  # bytes in, bytes out (rule 2)


def server(app: web.Application, host: str, port: int) -> tuple[Any, int]:
    """A grpc.aio server bound to host:port (0: any free port), not started; (server, port)."""
    srv = grpc.aio.server()
    methods = {name: _method(app, name, h) for name, h in handlers(app).items()}
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    try:
        bound = srv.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise ConfigError(f"--grpc-port {port}: cannot listen on {host} ({exc})") from None
    if bound == 0:  # older grpcio reports a failed bind as port 0
        raise ConfigError(f"--grpc-port {port}: cannot listen on {host}")
    return srv, bound


def attach(app: web.Application, host: str, port: int) -> None:
    """Serve gRPC on host:port for the app's lifetime (rule 5); the bound port is app[GRPC_PORT]."""

    async def grpc_server(app: web.Application) -> AsyncIterator[None]:
        srv, bound = server(app, host, port)
        app[GRPC_PORT] = bound
        await srv.start()
        log.info("grpc_listening", target=f"{host}:{bound}", service=SERVICE)
        try:
            yield
        finally:
            await srv.stop(grace=5)

    app.cleanup_ctx.append(grpc_server)
