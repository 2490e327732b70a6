"""``dpdau``: serve the gateway, talk to it, and maintain a data directory.

Commands that talk to a running server (``ingest``, ``dau``, ``mau``, ``series``, ``erase``,
``erasure-status``, ``budget``, ``health``) use HTTP (``--url``, default ``http://$HOST:$PORT``; the
configured key that grants each command's scope is sent: ``READ_API_KEY``/``INGEST_API_KEY``/
``ADMIN_API_KEY``, else ``API_KEY``). Maintenance commands (``replay``, ``snapshot``, ``restore``, ``compact``,
``rotate-salt``) open ``DATA_DIR`` directly and refuse while a server holds it.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from gateway import config as config_mod
from gateway import logs
from gateway.auth import Scope, key_for
from journal import faults

if TYPE_CHECKING:
    from actors.system.topology import Topology


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_mod.load(
            host=getattr(args, "host", None), port=getattr(args, "port", None), data_dir=getattr(args, "data_dir", None)
        )
        if getattr(args, "uses_data_dir", False):
            config_mod.prepare_data_dir(cfg.data_dir)
    except config_mod.ConfigError as exc:
        return _fail(f"configuration error: {exc}", 2)
    try:  # a test hook; refused in production (journal/faults.py rule 2)
        faults.configure_from_env({**os.environ, "DPDAU_ENV": cfg.gateway.dpdau_env})
    except (faults.FaultsInProduction, ValueError) as exc:
        return _fail(f"configuration error: {exc}", 2)
    logs.configure(production=cfg.gateway.production, level=cfg.gateway.log_level)
    return guarded(lambda: args.func(args, cfg) or 0)


def guarded(run: Callable[[], int]) -> int:
    """Run a command; a failure the operator can act on becomes one line and an exit code."""
    try:
        return run()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line for the operator, not a traceback
        from gateway.identity import IdentityError
        from journal.backend import JournalError
        from journal.lock import DataDirBusy

        cause = _single_cause(exc)  # errors raised inside a task group arrive wrapped
        if isinstance(cause, JournalError):  # the journal cannot be used as configured
            return _fail(f"configuration error: {cause}", 2)
        if isinstance(cause, (config_mod.ConfigError, IdentityError)):  # the secret/keyring as configured
            return _fail(f"configuration error: {cause}", 2)
        # Exit 1, not 2: nothing is wrong with the configuration -- e.g. DATA_DIR held by another
        # dpdau (DataDirBusy) is a busy resource, and the same command works once it is free.
        if isinstance(cause, (DataDirBusy, ClientError, FileNotFoundError, ValueError, StartFailed)):
            return _fail(f"dpdau: {cause}", 1)
        raise


def _fail(line: str, code: int) -> int:
    print(line, file=sys.stderr)
    return code


def _single_cause(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


EPILOG = """\
Settings come from the environment (and ./.env): HOST, PORT, DATA_DIR, HASH_SALT_SECRET,
EPSILON_DAU, ... -- README "Configuration" lists every one. A bad setting stops with one line
naming it and exit code 2.

examples:
  dpdau serve --port 8000                     # what `make run` does
  dpdau ingest events.jsonl                   # stream a file to the running server
  dpdau dau 2026-11-02                        # the DP release of a closed day
  dpdau mau 2026-11-30 --window 7
  DATA_DIR=./data dpdau replay                # with the server stopped

`dpdau COMMAND --help` explains each command.
"""


def _examples(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="dpdau",
        description="Daily and monthly active users under user-level differential privacy: serve the HTTP API, "
        "talk to it, and maintain a data directory.",
        epilog=EPILOG,
        formatter_class=formatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str, description: str, *examples: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help_, description=description, epilog=_examples(*examples), formatter_class=formatter
        )

    s = command(
        "serve",
        "start the HTTP gateway",
        "Start the HTTP API on HOST:PORT with its journal and state in DATA_DIR; replays the journal "
        "(from the newest snapshot) before /readyz turns true. Stop it with Ctrl-C or SIGTERM.",
        "DATA_DIR=./data dpdau serve --host 127.0.0.1 --port 8000",
        "dpdau serve --port 8000 --grpc-port 50051       # HTTP and gRPC over the same system",
        "JOURNAL_URL=postgresql://... dpdau serve --workers 2             # two processes, one port",
        "JOURNAL_URL=postgresql://... dpdau serve --shard 0/2 --port 9100 # shard 0 of 2 (internal)",
        "JOURNAL_URL=postgresql://... dpdau serve --workers 2 --shards 2  # gateways over 2 shards",
    )
    s.add_argument("--host", help="address to bind (default $HOST, 127.0.0.1)")
    s.add_argument("--port", type=int, help="TCP port (default $PORT, 8000)")
    s.add_argument("--data-dir", help="journal, snapshots and secrets (default $DATA_DIR, ./data)")
    s.add_argument(
        "--grpc-port",
        type=int,
        help="also serve the same system over gRPC on HOST:GRPC_PORT (needs the 'grpc' extra; gateway/rpc.py)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gateway processes on HOST:PORT (SO_REUSEPORT), each following the others through the shared "
        "journal; needs JOURNAL_URL=postgresql://... (default 1)",
    )
    s.add_argument(
        "--shard",
        metavar="I/N",
        help="run as shard I of N: hold only the pseudonym partitions p with p %% N == I, answer the gateways' "
        "cut queries on HOST:PORT (internal), take no public requests; needs PostgreSQL",
    )
    s.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="run as a gateway over N shards: hold no per-day state, count every release through the shards "
        "registered in the journal; needs PostgreSQL",
    )
    s.add_argument(
        "--advertise",
        metavar="URL",
        help="a shard's address as the gateways reach it (default http://HOST:PORT)",
    )
    s.set_defaults(func=cmd_serve, uses_data_dir=True)

    def client(name: str, help_: str, description: str, *examples: str) -> argparse.ArgumentParser:
        c = command(name, help_, description + " Talks to a running server over HTTP.", *examples)
        c.add_argument("--url", help="server URL (default $DPDAU_URL, else http://$HOST:$PORT)")
        return c

    c = client(
        "ingest",
        "stream a JSONL or CSV file of events to the server",
        "Send events in batches (each with an Idempotency-Key, so a retried batch is never counted twice). "
        "JSONL: one {user_id, op, day[, metadata]} object per line; CSV: a header user_id,op,day[,metadata]. "
        "When the server answers 503 (overloaded) a batch is retried, waiting as its Retry-After asks, "
        "at most --retries times and --retry-for seconds in all; then the command stops and says how many "
        "events were ingested.",
        "dpdau ingest events.jsonl --batch 5000",
        "dpdau ingest events.csv --url http://10.0.0.5:8000 --retries 20 --retry-for 600",
    )
    c.add_argument("file", type=Path, help="a .jsonl file, or a .csv file with a header")
    c.add_argument("--batch", type=int, default=1000, help="events per request (default 1000)")
    c.add_argument("--retries", type=int, default=10, help="retries of one batch on 503 (default 10)")
    c.add_argument(
        "--retry-for", type=float, default=120.0, help="give up on a batch after this many seconds (default 120)"
    )
    c.set_defaults(func=cmd_ingest)
    c = client(
        "dau",
        "the DAU release of a day",
        "Print the differentially private daily-active-users release of DAY (YYYY-MM-DD); the first request "
        "after the day closed creates and charges it, later ones return the same record.",
        "dpdau dau 2026-11-02",
    )
    c.add_argument("day", help="YYYY-MM-DD")
    c.set_defaults(func=cmd_dau)
    c = client(
        "mau",
        "the MAU release of the window ending on END",
        "Print the monthly-active-users release of the window of --window days (default MAU_WINDOW_DAYS) "
        "ending on END.",
        "dpdau mau 2026-11-30",
        "dpdau mau 2026-11-30 --window 7",
    )
    c.add_argument("end", help="last day of the window, YYYY-MM-DD")
    c.add_argument("--window", type=int, help="window length in days")
    c.set_defaults(func=cmd_mau)
    c = client(
        "series",
        "the published series of a metric (every page), as JSON lines or CSV",
        "Print, per day, the latest release of METRIC (MAU: the default window) or the refusal of its "
        "scheduled publication, from GET /series, every page: one JSON object per line, or CSV with one header.",
        "dpdau series dau --from 2026-11-01 --to 2026-11-30",
        "dpdau series mau --csv > mau.csv",
    )
    c.add_argument("metric", choices=["dau", "mau"])
    c.add_argument("--from", dest="first", help="first day (YYYY-MM-DD)")
    c.add_argument("--to", dest="last", help="last day (YYYY-MM-DD)")
    c.add_argument("--csv", action="store_true", help="CSV with a header row instead of JSON lines")
    c.set_defaults(func=cmd_series)
    c = client(
        "erase",
        "erase a user (right to erasure)",
        "Remove USER_ID from every day now and purge its events from disk after PURGE_DELAY_SECONDS; "
        "prints the receipt with its erasure_id.",
        "dpdau erase alice",
    )
    c.add_argument("user_id")
    c.set_defaults(func=cmd_erase)
    c = client(
        "erasure-status",
        "status of an erasure",
        "Print an erasure receipt: pending -> applied (no state holds the user) -> purged (no byte left on disk).",
        "dpdau erasure-status 8f0c1d2e...",
    )
    c.add_argument("erasure_id")
    c.set_defaults(func=cmd_erasure_status)
    c = client(
        "budget",
        "privacy budget spent and remaining",
        "Print the privacy budget: epsilon spent, cap and remaining per metric and accounting period.",
        "dpdau budget",
        "dpdau budget --period 2026-11",
    )
    c.add_argument("--period", help="accounting period, e.g. 2026-11")
    c.set_defaults(func=cmd_budget)
    c = client(
        "health",
        "exit 0 if the server is alive (--ready: and has finished replaying)",
        "Ask /healthz (or /readyz with --ready) and exit 0 when it answers 200, 1 otherwise; prints nothing "
        "unless it fails. The Docker image's HEALTHCHECK runs it.",
        "dpdau health",
        "dpdau health --ready --url http://127.0.0.1:8000",
    )
    c.add_argument("--ready", action="store_true", help="ask /readyz: replay finished, accepting work")
    c.set_defaults(func=cmd_health)

    def offline(name: str, help_: str, description: str, *examples: str) -> argparse.ArgumentParser:
        o = command(
            name, help_, description + " Works on DATA_DIR directly; refuses while a server holds it.", *examples
        )
        o.add_argument("--data-dir", help="default $DATA_DIR, ./data")
        o.set_defaults(uses_data_dir=True)
        return o

    o = offline(
        "replay",
        "rebuild the state from the journal (ignoring snapshots) and print it",
        "Replay the whole journal from the first record and print what it rebuilt (days, user-days, releases, "
        "records by kind); always safe.",
        "DATA_DIR=./data dpdau replay",
    )
    o.set_defaults(func=cmd_replay)
    o = offline(
        "snapshot",
        "write a snapshot of the current state",
        "Restore the state and write a checksummed snapshot of it into DATA_DIR; --out also copies it (a backup).",
        "dpdau snapshot --out backup-2026-11-02.snap",
    )
    o.add_argument("--out", type=Path, help="also copy the snapshot file here")
    o.set_defaults(func=cmd_snapshot)
    o = offline(
        "restore",
        "restore from the newest valid snapshot (or install FILE first) + tail replay",
        "Check and install FILE (a snapshot of this journal) if given, then restore from the newest valid "
        "snapshot plus the journal's tail and print the result.",
        "dpdau restore",
        "dpdau restore backup-2026-11-02.snap",
    )
    o.add_argument("file", nargs="?", type=Path, help="a snapshot file written by `dpdau snapshot --out`")
    o.set_defaults(func=cmd_restore)
    o = offline(
        "compact",
        "purge every erased user's events now (do not wait for PURGE_DELAY_SECONDS)",
        "Rewrite every outstanding erasure's events out of the journal, rebuild the file and regenerate the "
        "snapshots; the receipts turn 'purged'.",
        "dpdau compact",
    )
    o.set_defaults(func=cmd_compact)
    o = offline(
        "rotate-salt",
        "replace the pseudonymisation secret without changing any count",
        "Draw a new secret into DATA_DIR/keyring and re-key every stored pseudonym in one transaction; "
        "back up DATA_DIR/keyring afterwards.",
        "DATA_DIR=./data dpdau rotate-salt",
    )
    o.set_defaults(func=cmd_rotate_salt)
    return p


# -- serve -----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    topology = serve_topology(args, cfg)
    if args.workers > 1:
        from gateway import workers

        return workers.supervise(cfg, topology, args.workers, args.grpc_port)
    anyio.run(serve, cfg, args.grpc_port, topology)
    return 0


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard one, as Go programs do at start: every
    connection is a file, and the usual soft default (1,024) would refuse connections long before
    memory or the body budget does (``gateway/admission.py`` rule 4). Returns the limit in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):  # a platform that refuses: keep what we were given
        return soft
    return wanted


def serve_topology(args: argparse.Namespace, cfg: config_mod.Config) -> Topology:
    """What ``dpdau serve`` is asked to be (``actors/system/topology.py``), or a ConfigError naming
    the flag or setting that makes it impossible (exit code 2, before anything starts)."""
    from actors.settings import COUNTER_MECHANISMS
    from actors.system.topology import Topology, parse_shard, shard_name

    several = args.workers > 1 or args.shard is not None or args.shards is not None
    if args.workers < 1:
        raise config_mod.ConfigError(f"--workers {args.workers}: at least 1")
    if several and cfg.journal.kind != "postgresql":
        what = f"--workers {args.workers}" if args.workers > 1 else "--shard" if args.shard else "--shards"
        raise config_mod.ConfigError(
            f"{what} needs a journal several processes can share: set JOURNAL_URL=postgresql://... "
            "(the SQLite journal is one process's file)"
        )
    if args.shard is not None and args.shards is not None:
        raise config_mod.ConfigError("--shard I/N and --shards N: a process is a shard or a gateway over shards")
    if args.shard is not None and args.workers > 1:
        raise config_mod.ConfigError("--shard with --workers: a shard is one process; start one per shard")
    if args.shards is not None and args.shards < 1:
        raise config_mod.ConfigError(f"--shards {args.shards}: at least 1")
    if args.shard is not None or args.shards is not None:
        e = cfg.engine
        for name, mechanism in (("DAU_MECHANISM", e.dau_mechanism), ("MAU_MECHANISM", e.mau_mechanism)):
            if mechanism in COUNTER_MECHANISMS:
                raise config_mod.ConfigError(
                    f"{name}={mechanism} with shards: the continual counters keep per-user flip state that is not "
                    "sharded; use gaussian or laplace"
                )
        if not e.sketch.exact:
            raise config_mod.ConfigError(
                f"SKETCH_IMPL={e.sketch_impl} with shards: shards count exact sets; use SKETCH_IMPL=set"
            )
    if args.shard is not None:
        try:
            index, count = parse_shard(args.shard)
        except ValueError as exc:
            raise config_mod.ConfigError(str(exc)) from None
        host = cfg.gateway.host if cfg.gateway.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        address = args.advertise or f"http://{host}:{cfg.gateway.port}"
        return Topology(name=shard_name(index, count), shard=(index, count), address=address)
    # A gateway's snapshots hold no per-day state: never in the directory a whole process loads.
    return Topology(name="" if args.shards is None else f"gateway-of{args.shards}", shards=args.shards)


async def serve(
    cfg: config_mod.Config,
    grpc_port: int | None = None,
    topology: Topology | None = None,
    *,
    reuse_port: bool = False,
) -> None:
    import structlog
    from aiohttp import web

    from gateway import admission
    from gateway.app import create_app
    from gateway.appkeys import SYSTEM

    log = structlog.get_logger("gateway")
    # The journal's database thread needs the GIL for each hop; the default 5 ms switch
    # interval puts a 5 ms floor under every commit whenever the event loop is busy.
    sys.setswitchinterval(0.0005)
    open_files = raise_open_files_limit()
    if cfg.gateway.production and not cfg.gateway.hash_salt_secret:  # identity.py refuses too, but later
        raise config_mod.ConfigError(
            "HASH_SALT_SECRET is required when DPDAU_ENV=production (it keys every pseudonym; "
            "keep it in your secret store and back it up)"
        )
    # Bind before the journal is opened or replayed: a port in use is a configuration error
    # found in milliseconds, not after a replay. Listening starts only once the state is ready.
    sock = bind(cfg.gateway.host, cfg.gateway.port, reuse_port=reuse_port)
    if grpc_port is not None and not reuse_port:  # checked before anything starts (grpc would say it later)
        try:
            bind(cfg.gateway.host, grpc_port, "--grpc-port").close()
        except config_mod.ConfigError:
            sock.close()
            raise
    app = create_app(cfg, topology=topology)
    if grpc_port is not None:
        try:
            from gateway import rpc
        except ImportError as exc:
            raise config_mod.ConfigError(f"--grpc-port needs grpcio: pip install -e '.[grpc]' ({exc})") from None
        rpc.attach(app, cfg.gateway.host, grpc_port)
    # read_bufsize: what a connection buffers of a body nobody reads yet (admission.py rule 4).
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=10, read_bufsize=admission.READ_BUFSIZE
    )
    try:
        await runner.setup()  # opens the journal: a layout it cannot hold raises here (facade)
        system = app[SYSTEM]
        if reuse_port:  # one of several workers: listen only once ready (workers.py rule 3)
            try:
                await system.wait_ready(timeout=24 * 3600)
            except RuntimeError:  # the boot failed: said below in one line (exit 2 for a journal error)
                if system.boot_error is None:
                    raise
        # The boot runs concurrently: once it has failed nothing can ever be served, so the
        # port is not opened and `listening` is never logged after `boot_failed` (an operator
        # reading the log must not take the server for up).
        if not system.boot_failed.is_set():
            site = web.SockSite(runner, sock, backlog=2048)
            try:
                await site.start()
            except OSError as exc:
                raise _bind_error(cfg.gateway.host, cfg.gateway.port, exc) from None
            if not system.boot_failed.is_set():  # it may have failed while the site started
                log.info(
                    "listening",
                    url=f"http://{cfg.gateway.host}:{cfg.gateway.port}",
                    data_dir=str(cfg.data_dir),
                    journal=cfg.journal.redacted,
                    open_files=open_files,
                )
            await _until_stopped(system.boot_failed, log)
    finally:
        await runner.cleanup()
        sock.close()
    if system.boot_error is not None:  # e.g. a journal only a newer dpdau can read: one line, exit 2
        from journal.backend import JournalError

        if isinstance(system.boot_error, JournalError):
            raise system.boot_error
        raise StartFailed(f"could not start: {system.boot_error!r}") from system.boot_error


class StartFailed(Exception):
    """The state could not be rebuilt; the log has the details (``boot_failed``)."""


async def _until_stopped(boot_failed: anyio.Event, log: Any) -> None:
    """Serve until SIGINT/SIGTERM -- or until the boot failed (nothing could ever be served)."""
    async with anyio.create_task_group() as tg:

        async def watch_boot() -> None:
            await boot_failed.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(watch_boot)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("stopping", signal=signal.Signals(signum).name)
                break
        tg.cancel_scope.cancel()


def bind(host: str, port: int, setting: str = "PORT", *, reuse_port: bool = False) -> socket.socket:
    """A socket bound to HOST:PORT, not yet listening (connections are refused, as before, until the
    state is ready), or a ConfigError naming the setting. ``reuse_port``: one of several workers'
    sockets on the same address (``gateway/workers.py``)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise config_mod.ConfigError(f"HOST {host!r} cannot be used: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)  # a listening server on the port makes this fail now; we listen once ready
    except OSError as exc:
        sock.close()
        raise _bind_error(host, port, exc, setting) from None
    return sock


def _bind_error(host: str, port: int, exc: OSError, setting: str = "PORT") -> config_mod.ConfigError:
    hint = "PORT / --port" if setting == "PORT" else setting
    if exc.errno == errno.EADDRINUSE:
        return config_mod.ConfigError(
            f"{setting} {port} is already in use on {host} (another dpdau?); stop it or choose another {hint}"
        )
    if exc.errno == errno.EACCES:
        return config_mod.ConfigError(f"{setting} {port} needs privileges to bind on {host}; choose a port above 1023")
    return config_mod.ConfigError(f"HOST {host!r} / {setting} {port}: cannot listen ({exc.strerror or exc})")


# -- client commands -------------------------------------------------------------------------


class ClientError(Exception):
    pass


def _url(args: argparse.Namespace, cfg: config_mod.Config) -> str:
    host = cfg.gateway.host
    if host in ("0.0.0.0", "::", ""):  # a server bound to every interface is reached on loopback
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return (args.url or os.environ.get("DPDAU_URL") or f"http://{host}:{cfg.gateway.port}").rstrip("/")


def _request(
    cfg: config_mod.Config,
    method: str,
    url: str,
    body: object | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
    *,
    scope: Scope = "read",
) -> tuple[int, dict[str, Any]]:
    status, payload, _ = _exchange(cfg, method, url, body, headers, timeout, scope=scope)
    return status, payload


def _exchange(
    cfg: config_mod.Config,
    method: str,
    url: str,
    body: object | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
    *,
    scope: Scope = "read",
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request, with the configured key that grants ``scope`` (gateway/auth.py rule 1)."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    key = key_for(cfg.gateway, scope)
    if key:
        hdrs["X-API-Key"] = key
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, _decode(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, _decode(exc.read()), dict(exc.headers)
    except urllib.error.URLError as exc:
        raise ClientError(f"cannot reach {url}: {exc.reason} (is `make run` running?)") from None
    except OSError as exc:  # a timeout or reset while reading the answer
        raise ClientError(f"no answer from {url}: {exc}") from None


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {"error": "not_json", "detail": raw[:200].decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


def _show(status: int, body: dict[str, Any]) -> int:
    print(json.dumps(body, indent=2))
    return 0 if status < 400 else 1


def cmd_dau(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    return _show(*_request(cfg, "GET", f"{_url(args, cfg)}/dau/{args.day}"))


def cmd_mau(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    window = f"&window={args.window}" if args.window else ""
    scope: Scope = "admin" if args.window and args.window != cfg.engine.mau_window_days else "read"
    return _show(*_request(cfg, "GET", f"{_url(args, cfg)}/mau?end={args.end}{window}", scope=scope))


def cmd_series(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    """Every page of ``GET /series``: one JSON object per day on stdout (or CSV with one header)."""
    from urllib.parse import urlencode

    query = {"metric": args.metric, "limit": "1000"}
    query.update({k: v for k, v in (("from", args.first), ("to", args.last)) if v})
    offset, header_done = 0, False
    while True:
        url = f"{_url(args, cfg)}/series?{urlencode({**query, 'offset': str(offset)})}"
        status, page = _request(cfg, "GET", url)
        if status >= 400:
            return _show(status, page)
        points = page["points"]
        if args.csv:
            writer = csv.writer(sys.stdout, lineterminator="\n")
            columns = ["metric", "window", *(points[0].keys() if points else ())]
            if not header_done and points:
                writer.writerow(columns)
                header_done = True
            for p in points:
                writer.writerow([page["metric"], page["window"], *("" if v is None else v for v in p.values())])
        else:
            for p in points:
                print(json.dumps({"metric": page["metric"], "window": page["window"], **p}))
        offset += len(points)
        if offset >= page["total"] or not points:
            return 0


def cmd_erase(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    return _show(*_request(cfg, "POST", f"{_url(args, cfg)}/erasure", {"user_id": args.user_id}, scope="ingest"))


def cmd_erasure_status(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    return _show(*_request(cfg, "GET", f"{_url(args, cfg)}/erasure/{args.erasure_id}", scope="ingest"))


def cmd_budget(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    period = f"?period={args.period}" if args.period else ""
    return _show(*_request(cfg, "GET", f"{_url(args, cfg)}/budget{period}"))


def cmd_health(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    url = f"{_url(args, cfg)}/{'readyz' if args.ready else 'healthz'}"
    status, body = _request(cfg, "GET", url, timeout=5)
    if status != 200:
        raise ClientError(f"{url} answered {status}: {body}")
    return 0


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """JSONL (one event object per line) or CSV with a header user_id,op,day[,metadata]."""
    with open(path, newline="", encoding="utf-8") as fh:
        if path.suffix.lower() == ".csv":
            for row in csv.DictReader(fh):
                event = {"user_id": row["user_id"], "op": row["op"], "day": row["day"]}
                if row.get("metadata"):
                    event["metadata"] = json.loads(row["metadata"])
                yield event
        else:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


class Retry:
    """When to retry a batch the server refused with 503: at most ``retries`` times and
    ``seconds`` in all, waiting what Retry-After asks (else 0.5 s, doubling, at most 30 s)."""

    def __init__(self, retries: int, seconds: float) -> None:
        self.retries, self.seconds = retries, seconds

    def wait(self, retry: int, elapsed: float, retry_after: str | None) -> float | None:
        """Seconds to wait before retry number ``retry`` (1-based), or None to give up."""
        if retry > self.retries:
            return None
        try:
            delay = max(0.0, float(retry_after)) if retry_after is not None else None
        except ValueError:  # an HTTP date, or garbage: fall back to our own backoff
            delay = None
        if delay is None:
            delay = min(30.0, 0.5 * 2 ** (retry - 1))
        return delay if elapsed + delay <= self.seconds else None


def cmd_ingest(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    url = f"{_url(args, cfg)}/event"
    tty = sys.stderr.isatty()
    sent, started = 0, time.monotonic()
    batch: list[dict[str, Any]] = []
    retry = Retry(args.retries, args.retry_for)

    def flush() -> None:
        nonlocal sent, batch
        key = f"ingest-{args.file.name}-{sent}-{len(batch)}-{os.getpid()}"
        first = time.monotonic()
        attempt = 1
        while True:
            status, body, headers = _exchange(
                cfg, "POST", url, {"events": batch}, {"Idempotency-Key": key}, scope="ingest"
            )
            if status != 503:
                break
            elapsed = time.monotonic() - first
            delay = retry.wait(attempt, elapsed, headers.get("Retry-After"))
            if delay is None:
                raise ClientError(
                    f"gave up on the batch starting at event {sent:,} after {attempt} attempt(s) in {elapsed:.1f} s: "
                    f"the server kept answering 503 ({body.get('error')}: {body.get('detail')}); "
                    f"{sent:,} events before it were ingested (limits: --retries {args.retries}, "
                    f"--retry-for {args.retry_for:g})"
                )
            # Backpressure: the same Idempotency-Key makes the retry safe (never counted twice).
            print(
                f"dpdau ingest: server busy (503 {body.get('error')}), retrying the batch at event {sent:,} "
                f"in {delay:g} s (retry {attempt} of at most {args.retries})",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(delay)
            attempt += 1
        if status >= 400:
            raise ClientError(f"batch starting at event {sent:,} refused ({status}): {body}")
        sent += len(batch)
        batch = []
        if tty:
            rate = sent / max(time.monotonic() - started, 1e-9)
            print(f"\r{sent:,} events sent ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)

    for event in read_events(args.file):
        batch.append(event)
        if len(batch) >= args.batch:
            flush()
    if batch:
        flush()
    if tty:
        print(file=sys.stderr)
    print(json.dumps({"ingested": sent, "seconds": round(time.monotonic() - started, 3)}))
    return 0


# -- maintenance (offline) -------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    from actors.system import maintenance

    print(json.dumps(anyio.run(maintenance.replay, cfg.engine, cfg.journal), indent=2))
    return 0


def cmd_snapshot(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    from actors.system import maintenance

    print(json.dumps(anyio.run(maintenance.snapshot, cfg.engine, cfg.journal, args.out), indent=2))
    return 0


def cmd_restore(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    from actors.system import maintenance

    print(json.dumps(anyio.run(maintenance.restore, cfg.engine, cfg.journal, args.file), indent=2))
    return 0


def cmd_compact(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    from actors.system import maintenance

    print(json.dumps(anyio.run(maintenance.compact, cfg.engine, cfg.journal), indent=2))
    return 0


def cmd_rotate_salt(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    from gateway import rotation

    print(json.dumps(anyio.run(rotation.rotate, cfg), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
