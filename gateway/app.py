"""The aiohttp application: thin translators between HTTP and the actor system.

Rules:
1. Handlers validate (schemas.py), pseudonymise (identity.py) and call one ``ActorSystem``
   coroutine; they hold no state and make no decision the actors own.
2. Every error leaves as JSON ``{"error": code, "detail": text, ...}`` with a 4xx/5xx status; a
   bad request changes nothing and the server keeps serving (middlewares.py).
3. The actor system's lifetime is the app's (``cleanup_ctx``): started before the first request
   is served, stopped gracefully -- commit, dispatch, snapshot -- after the last.
4. What the process is in a deployment (``actors/system/topology.py``) decides its routes: a shard
   serves only health, readiness, metrics and the internal cut route (``internal.py``); every
   other process serves the public API, and a gateway over shards counts through them.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import io
from collections.abc import AsyncIterator, Callable

import msgspec
import numpy as np
from aiohttp import web
from multidict import MultiMapping

from actors.state import periods
from actors.state.periods import EPOCH_ORDINAL
from actors.state.release_book import ReleaseKey
from actors.system import ActorSystem
from actors.system.boot import utcnow
from actors.system.topology import Topology
from gateway import auth, dashboard, openapi
from gateway.admission import BodyBudget, read_body
from gateway.appkeys import BODIES, CONFIG, INTERNAL_KEY, METRICS, PSEUDONYMS, SYSTEM, TOPOLOGY
from gateway.config import Config
from gateway.errors import BadRequest, error_middleware
from gateway.identity import Pseudonymizer, open_pseudonymizer
from gateway.internal import CutAnswer, HttpShardClient, authorised, decode_query, internal_key
from gateway.metrics import Metrics
from gateway.middleware import observe_middleware
from gateway.schemas import (
    SERIES_COLUMNS,
    BatchIn,
    ErasureAuditPage,
    ErasureIn,
    ErasureSummaryOut,
    EventIn,
    IngestOut,
    ReadyOut,
    ReleaseConfigOut,
    ReleasePage,
    ReviseIn,
    SeriesPage,
    erasure_audit_out,
    erasure_out,
    release_out,
    series_point,
)
from journal import events as ev

_top_level = msgspec.json.Decoder(dict[str, msgspec.Raw])
_batch = msgspec.json.Decoder(BatchIn)
_single = msgspec.json.Decoder(EventIn)
_erasure = msgspec.json.Decoder(ErasureIn)
_revise = msgspec.json.Decoder(ReviseIn)


def json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status, content_type="application/json", headers=headers)


def create_app(
    config: Config, clock: Callable[[], dt.datetime] = utcnow, topology: Topology | None = None
) -> web.Application:
    """The app; ``clock`` is the system's one clock (tests drive the schedule with a fake one);
    ``topology``: what this process is in a deployment of several (rule 4)."""
    app = web.Application(
        client_max_size=config.gateway.max_body_bytes,
        middlewares=[observe_middleware, error_middleware, auth.auth_middleware],
    )
    app[CONFIG] = config
    app[TOPOLOGY] = topology = topology or Topology()
    app[METRICS] = Metrics(process=topology.name or "main", kind=topology.kind)
    app[BODIES] = BodyBudget(config.gateway.max_inflight_body_bytes)  # admission.py
    app[auth.KEYRING] = auth.warn_if_open(config.gateway)
    app.cleanup_ctx.append(functools.partial(_actor_system, clock=clock))
    if topology.kind == "shard":  # rule 4: health, metrics and the cut route only
        auth.route(app, "POST", "/internal/cut", post_internal_cut, "open")  # its own key (internal.py)
        auth.route(app, "GET", "/metrics", get_metrics, "admin")
        auth.route(app, "GET", "/healthz", get_healthz, "open")
        auth.route(app, "GET", "/readyz", get_readyz, "any")
        return app
    # Every route with its scope (gateway/auth.py rule 2); /openapi.json documents the same table.
    auth.route(app, "POST", "/event", post_event, "ingest")
    auth.route(app, "GET", "/dau/{day}", get_dau, "read")
    auth.route(app, "GET", "/mau", get_mau, "read")  # a non-default window needs admin (handler)
    auth.route(app, "POST", "/erasure", post_erasure, "ingest")
    auth.route(app, "GET", "/erasure/{erasure_id}", get_erasure, "ingest")
    auth.route(app, "GET", "/budget", get_budget, "read")
    auth.route(app, "GET", "/releases", get_releases, "read")
    auth.route(app, "POST", "/releases/revise", post_revise, "admin")
    auth.route(app, "GET", "/series", get_series, "read")
    auth.route(app, "GET", "/config", get_config, "read")
    auth.route(app, "GET", "/erasures/summary", get_erasure_summary, "admin")
    auth.route(app, "GET", "/audit/erasures", get_erasure_audit, "admin")
    auth.route(app, "GET", "/metrics", get_metrics, "admin")
    auth.route(app, "GET", "/healthz", get_healthz, "open")
    auth.route(app, "GET", "/readyz", get_readyz, "any")  # details for admin only
    auth.route(app, "GET", "/openapi.json", get_openapi, "any")
    dashboard.add_routes(app)  # open: static files that hold no data
    return app


async def _actor_system(app: web.Application, clock: Callable[[], dt.datetime] = utcnow) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    topology = app[TOPOLOGY]
    spec = dataclasses.replace(cfg.journal, role=topology.name)
    gw = cfg.gateway
    key = internal_key(cfg.data_dir, gw.hash_salt_secret, gw.production) if topology.layout is not None else ""
    app[INTERNAL_KEY] = key
    client = HttpShardClient(key) if topology.kind == "gateway" else None
    with spec.lock():
        system = ActorSystem(cfg.engine, spec, clock=clock, topology=topology, shard_client=client)
        async with system.running():
            if topology.kind == "shard":  # holds no secret it does not need: no pseudonyms here
                app[SYSTEM] = system
                yield
                return
            app[PSEUDONYMS] = open_pseudonymizer(
                cfg.data_dir,
                cfg.gateway.hash_salt_secret,
                cfg.gateway.production,
                system.journal.key_version,
                cfg.gateway.pseudonym_cache,
            )
            app[SYSTEM] = system
            try:
                yield
            finally:
                if client is not None:
                    await client.close()


# -- ingest --------------------------------------------------------------------------------


def decode_events(body: bytes, cfg: Config) -> list[EventIn]:
    try:
        top = _top_level.decode(body)
        if "events" in top:
            events = _batch.decode(body).events
            if not events:
                raise BadRequest(422, "empty_batch", "the batch holds no events", "$.events")
        else:
            events = [_single.decode(body)]
    except msgspec.DecodeError as exc:
        raise BadRequest.from_msgspec(exc) from None
    if len(events) > cfg.gateway.max_batch_events:
        raise BadRequest(
            413,
            "batch_too_large",
            f"{len(events)} events; at most {cfg.gateway.max_batch_events} per request",
            "$.events",
        )
    return events


def to_columns(
    events: list[EventIn], cfg: Config, pseudonyms: Pseudonymizer, now: dt.datetime
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, bytes]]]:
    gw = cfg.gateway
    prefix = "$.events" if len(events) > 1 else "$"
    days = np.fromiter((e.day.toordinal() for e in events), dtype=np.int64, count=len(events)) - EPOCH_ORDINAL
    early = np.flatnonzero(days < 0)
    if len(early):
        i = int(early[0])
        raise BadRequest(
            422,
            "day_out_of_range",
            f"{events[i].day} is outside the days this service takes ({periods.DAY_RANGE})",
            f"{prefix}[{i}].day" if len(events) > 1 else "$.day",
        )
    latest = _today(now, cfg) + gw.future_days_allowed
    late = np.flatnonzero(days > latest)
    if len(late):
        i = int(late[0])
        # 409, not 422: the request is well-formed and schema-valid; it conflicts with today's date
        # (like a release of a day that has not closed), and will be accepted once that day comes.
        raise BadRequest(
            409,
            "day_in_future",
            f"{events[i].day} is more than {gw.future_days_allowed} day(s) ahead of today in {cfg.engine.timezone}",
            f"{prefix}[{i}].day" if len(events) > 1 else "$.day",
        )
    metadata: list[tuple[int, bytes]] = []
    for i, e in enumerate(events) if any(e.metadata is not None for e in events) else ():
        if e.metadata is not None:
            raw = msgspec.json.encode(e.metadata)
            if len(raw) > gw.max_metadata_bytes:
                where = f"{prefix}[{i}].metadata" if len(events) > 1 else "$.metadata"
                raise BadRequest(422, "metadata_too_large", f"{len(raw)} bytes; at most {gw.max_metadata_bytes}", where)
            metadata.append((i, raw))
    ops = np.fromiter((e.op == "+" for e in events), dtype=np.uint8, count=len(events))
    keys = pseudonyms.keys([e.user_id for e in events])
    return keys, days.astype(np.int32), ops, metadata


_today_cache: tuple[int, dt.datetime, dt.datetime, str] | None = None


def _today(now: dt.datetime, cfg: Config) -> int:
    """Today in TIMEZONE, recomputed only when ``now`` leaves the cached day (a zone conversion
    per request showed up in the ingest profile)."""
    global _today_cache
    tz = cfg.engine.tz
    cached = _today_cache
    if cached is None or not cached[1] <= now < cached[2] or cached[3] != cfg.engine.timezone:
        day = periods.today(now, tz)
        cached = _today_cache = (day, periods.closes_at(day - 1, tz), periods.closes_at(day, tz), cfg.engine.timezone)
    return cached[0]


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise BadRequest(400, "invalid_idempotency_key", "Idempotency-Key must be 1-255 printable ASCII characters")
    return key


async def post_event(request: web.Request) -> web.Response:
    """Answers the count the client sent and an opaque receipt -- never a journal position (a
    position counts every event ever ingested, exactly). Idempotency keys are scoped by the
    calling key (auth rule 5)."""
    app = request.app
    cfg = app[CONFIG]
    key = idempotency_key(request)
    scoped = None if key is None else f"{request[auth.CLIENT]}:{key}"
    with app[BODIES].hold() as hold:  # admission.py rule 1: held until the commit answers
        events = decode_events(await read_body(request, hold, cfg.gateway.max_body_bytes), cfg)
        system = app[SYSTEM]
        keys, days, ops, metadata = to_columns(events, cfg, app[PSEUDONYMS], system.clock())
        receipt, replayed = await system.ingest(keys, days, ops, metadata, idempotency_key=scoped)
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return json(IngestOut(receipt.ingested, receipt.receipt), headers=headers)


# -- releases ------------------------------------------------------------------------------


def parse_day(text: str | None, field: str) -> int:
    if not text:
        raise BadRequest(400, "missing_parameter", f"{field} is required (YYYY-MM-DD)", field)
    try:
        return periods.parse_day(text)
    except ValueError as exc:
        raise BadRequest(400, "invalid_date", str(exc), field) from None


def parse_window(text: str | None, cfg: Config) -> int:
    if text is None:
        return cfg.engine.mau_window_days
    if not text.isdigit() or not 1 <= int(text) <= cfg.engine.max_window_days:
        raise BadRequest(
            400, "invalid_window", f"window must be an integer in 1..{cfg.engine.max_window_days}", "window"
        )
    return int(text)


async def get_dau(request: web.Request) -> web.Response:
    day = parse_day(request.match_info["day"], "day")
    released = await request.app[SYSTEM].release(ReleaseKey.dau(day))
    return json(release_out(released))


async def get_mau(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    end = parse_day(request.query.get("end"), "end")
    window = parse_window(request.query.get("window"), cfg)
    if window != cfg.engine.mau_window_days:
        auth.require(request, "admin")  # each extra window is more budget spent on every period it reads
    released = await request.app[SYSTEM].release(ReleaseKey.mau(end, window))
    return json(release_out(released))


async def post_revise(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    try:
        with request.app[BODIES].hold() as hold:
            body = _revise.decode(await read_body(request, hold, cfg.gateway.max_body_bytes))
    except msgspec.DecodeError as exc:
        raise BadRequest.from_msgspec(exc) from None
    if isinstance(body.window, float) and not body.window.is_integer():
        raise BadRequest(422, "validation_error", "window must be an integer", "$.window")
    if body.window is not None and body.window > cfg.engine.max_window_days:  # checked whatever the metric
        raise BadRequest(422, "invalid_window", f"window must be at most {cfg.engine.max_window_days}", "$.window")
    if body.metric == "dau":
        if body.day is None:
            raise BadRequest(422, "missing_field", "day is required for metric dau", "$.day")
        key = ReleaseKey.dau(body.day.toordinal() - EPOCH_ORDINAL)
    else:
        if body.end is None:
            raise BadRequest(422, "missing_field", "end is required for metric mau", "$.end")
        window = int(body.window or cfg.engine.mau_window_days)
        key = ReleaseKey.mau(body.end.toordinal() - EPOCH_ORDINAL, window)
    released = await request.app[SYSTEM].revise(key)
    return json(release_out(released), status=201)


async def get_releases(request: web.Request) -> web.Response:
    q = request.query
    offset, limit = _page(q)
    metric = q.get("metric")
    if metric not in (None, "dau", "mau"):
        raise BadRequest(400, "invalid_parameter", "metric must be dau or mau", "metric")
    page, total = request.app[SYSTEM].releases(offset, limit, metric)
    return json(ReleasePage([release_out(r) for r in page], total, offset, limit))


def _optional_day(text: str | None, field: str) -> int | None:
    return None if text is None else parse_day(text, field)  # "?to=" is not a date: 400


def _page(q: MultiMapping[str], default_limit: int = 100) -> tuple[int, int]:
    try:
        offset = int(q.get("offset", "0"))
        limit = int(q.get("limit", str(default_limit)))
    except ValueError:
        raise BadRequest(400, "invalid_parameter", "offset and limit must be integers") from None
    if offset < 0 or not 1 <= limit <= 1000:
        raise BadRequest(400, "invalid_parameter", "offset >= 0 and 1 <= limit <= 1000")
    return offset, limit


def _wants_csv(request: web.Request) -> bool:
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt not in ("json", "csv"):
            raise BadRequest(400, "invalid_parameter", "format must be json or csv", "format")
        return fmt == "csv"
    accept = request.headers.get("Accept", "")
    return "text/csv" in accept and "application/json" not in accept


async def get_series(request: web.Request) -> web.Response:
    """The published series: per day in [from, to], the latest release or the refusal."""
    q = request.query
    metric = q.get("metric")
    if metric not in ("dau", "mau"):
        raise BadRequest(400, "invalid_parameter", "metric is required: dau or mau", "metric")
    first = _optional_day(q.get("from"), "from")
    last = _optional_day(q.get("to"), "to")
    offset, limit = _page(q, default_limit=1000)
    as_csv = _wants_csv(request)
    system = request.app[SYSTEM]
    rows = system.series(metric, first, last)
    points = [series_point(day, r) for day, r in rows[offset : offset + limit]]
    window = 1 if metric == "dau" else request.app[CONFIG].engine.mau_window_days
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["metric", "window", *SERIES_COLUMNS])
        for p in points:
            writer.writerow([metric, window, *("" if v is None else v for v in msgspec.structs.astuple(p))])
        headers = {"X-Total-Count": str(len(rows)), "Content-Disposition": f'inline; filename="{metric}.csv"'}
        return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8", headers=headers)
    page = SeriesPage(
        metric,  # type: ignore[arg-type]
        window,
        points,
        len(rows),
        offset,
        limit,
        periods.iso(first) if first is not None else None,
        periods.iso(last) if last is not None else None,
    )
    return json(page)


async def get_config(request: web.Request) -> web.Response:
    """The release configuration (mechanisms, epsilon, delta, caps, window, schedule)."""
    e = request.app[CONFIG].engine
    info = request.app[SYSTEM].schedule_info()
    start = info.release_start
    return json(
        ReleaseConfigOut(
            dau_mechanism=e.dau_mechanism,
            mau_mechanism=e.mau_mechanism,
            epsilon_dau=e.epsilon_dau,
            epsilon_mau=e.epsilon_mau,
            delta=e.delta,
            period_budget_total=e.period_budget_total,
            dau_budget_total=e.dau_budget_total,
            mau_budget_total=e.mau_budget_total,
            user_epsilon_limit=e.user_epsilon_limit,
            w_bound=e.w_bound,
            mau_window_days=e.mau_window_days,
            privacy_period=e.privacy_period,
            timezone=e.timezone,
            lateness_hours=e.lateness_hours,
            sketch_impl=e.sketch_impl,
            release_schedule=e.release_schedule,
            release_start=periods.iso(start) if start is not None else None,
            release_start_source=info.release_start_source,
            revision_lags_days=info.revision_lags_days,
            version=e.experiment_id if e.experiment_id is not None else str(ev.RELEASE_FORMAT),
            version_of="experiment_id" if e.experiment_id is not None else "release_format",
            refused=info.refused,
            scheduled=info.scheduled,
        )
    )


async def get_erasure_summary(request: web.Request) -> web.Response:
    """Admin: erasure receipts by status. Exact, unprotected counts -- never on a reader's surface."""
    counts = await request.app[SYSTEM].erasure_counts()
    return json(ErasureSummaryOut(**counts))


MAX_BUDGET_PERIODS = 120


async def get_budget(request: web.Request) -> web.Response:
    q = request.query
    last = None
    if "periods" in q:
        text = q["periods"]
        if not text.isdigit() or not 1 <= int(text) <= MAX_BUDGET_PERIODS:
            raise BadRequest(
                400, "invalid_parameter", f"periods must be an integer in 1..{MAX_BUDGET_PERIODS}", "periods"
            )
        last = int(text)
    return json(await request.app[SYSTEM].budget(q.get("period"), last))


# -- erasure -------------------------------------------------------------------------------


async def post_erasure(request: web.Request) -> web.Response:
    try:
        with request.app[BODIES].hold() as hold:
            body = _erasure.decode(await read_body(request, hold, request.app[CONFIG].gateway.max_body_bytes))
    except msgspec.DecodeError as exc:
        raise BadRequest.from_msgspec(exc) from None
    key = request.app[PSEUDONYMS].key(body.user_id)
    receipt = await request.app[SYSTEM].erase(key)
    return json(erasure_out(receipt), status=202)


async def get_erasure(request: web.Request) -> web.Response:
    receipt = await request.app[SYSTEM].erasure_status(request.match_info["erasure_id"])
    if receipt is None:
        raise BadRequest(404, "unknown_erasure", "no erasure with that id")
    return json(erasure_out(receipt))


async def get_erasure_audit(request: web.Request) -> web.Response:
    """Admin: the erasure audit log, with how many events each purge removed. Kept out of the
    receipt, which must look the same for a user who existed and one who never did."""
    offset, limit = _page(request.query)
    entries, total = await request.app[SYSTEM].erasure_audit(offset, limit)
    return json(ErasureAuditPage([erasure_audit_out(e) for e in entries], total, offset, limit))


# -- operations ----------------------------------------------------------------------------


async def get_metrics(request: web.Request) -> web.Response:
    system = request.app[SYSTEM]
    stats = system.stats()
    budget = await system.budget() if system.ready else None
    metrics = request.app[METRICS]
    metrics.update(stats, budget)
    return web.Response(body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def get_healthz(request: web.Request) -> web.Response:
    return json({"status": "ok"})


async def get_readyz(request: web.Request) -> web.Response:
    """Readiness only, unless the caller has the admin scope: then why not, and the journal
    position (an exact count of events: operators only, for recovery checks)."""
    system = request.app.get(SYSTEM)
    failure = system.committer.failure if system is not None and system.ready else None
    # Not ready either while the journal cannot be reached (groupcommit rule 7: writes refused).
    unsettled = system.committer.unsettled if system is not None and system.ready else None
    ready = bool(system and system.ready and failure is None and unsettled is None)
    body = ReadyOut(ready)
    if auth.has_scope(request, "admin"):
        body = ReadyOut(
            ready,
            journal_seq=None if system is None else system.journal_seq(),
            replaying=system is None or not system.ready,
            writer_failed=None if failure is None else repr(failure),
            boot_failed=None if system is None or system.boot_error is None else repr(system.boot_error),
            restored_from_snapshot=None if system is None else system.restored_from is not None,
        )
    return json(body, status=200 if ready else 503, headers=None if ready else {"Retry-After": "1"})


async def post_internal_cut(request: web.Request) -> web.Response:
    """A shard's exact share of a cut (internal.py rules 1, 2): never reachable with an API key."""
    if not authorised(request, request.app[INTERNAL_KEY]):
        raise BadRequest(404, "not_found", "no such route")
    try:
        query = decode_query(await request.read())
    except msgspec.DecodeError as exc:
        raise BadRequest.from_msgspec(exc) from None
    cuts = request.app[SYSTEM].cut_book()
    if query.keys is None:
        count = await cuts.count(query.cut_id, query.seq)
    else:
        count = await cuts.among(query.cut_id, query.seq, np.array(query.keys, dtype=np.int64))
    return json(CutAnswer(count))


async def get_openapi(request: web.Request) -> web.Response:
    return json(openapi.document(request.app))
