"""``dpdau``: serve the gateway, talk to it, and maintain a data directory.

Commands that talk to a running server (``ingest``, ``dau``, ``mau``, ``erase``,
``erasure-status``, ``budget``) use HTTP (``--url``, default ``http://$HOST:$PORT``; ``API_KEY``
is sent when set). Maintenance commands (``replay``, ``snapshot``, ``restore``, ``compact``,
``rotate-salt``) open ``DATA_DIR`` directly and refuse while a server holds it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

from gateway import config as config_mod
from gateway import logs
from journal import faults


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_mod.load(
            host=getattr(args, "host", None), port=getattr(args, "port", None), data_dir=getattr(args, "data_dir", None)
        )
    except config_mod.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:  # a test hook; refused in production (journal/faults.py rule 2)
        faults.configure_from_env({**os.environ, "DPDAU_ENV": cfg.gateway.dpdau_env})
    except (faults.FaultsInProduction, ValueError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(production=cfg.gateway.production, level=cfg.gateway.log_level)
    try:
        return args.func(args, cfg) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line for the operator, not a traceback
        from gateway.identity import IdentityError
        from journal.backend import JournalError
        from journal.lock import DataDirBusy

        if isinstance(exc, JournalError):  # the journal cannot be used as configured
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, (IdentityError, DataDirBusy, ClientError, FileNotFoundError, ValueError)):
            print(f"dpdau: {exc}", file=sys.stderr)
            return 1
        raise


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dpdau", description="DAU/MAU under user-level differential privacy")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="start the HTTP gateway")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--data-dir")
    s.set_defaults(func=cmd_serve)

    def client(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_)
        c.add_argument("--url", help="server URL (default http://$HOST:$PORT)")
        return c

    c = client("ingest", "stream a JSONL or CSV file of events to the server")
    c.add_argument("file", type=Path)
    c.add_argument("--batch", type=int, default=1000)
    c.set_defaults(func=cmd_ingest)
    c = client("dau", "the DAU release of a day")
    c.add_argument("day")
    c.set_defaults(func=cmd_dau)
    c = client("mau", "the MAU release of the window ending on END")
    c.add_argument("end")
    c.add_argument("--window", type=int)
    c.set_defaults(func=cmd_mau)
    c = client("erase", "erase a user (right to erasure)")
    c.add_argument("user_id")
    c.set_defaults(func=cmd_erase)
    c = client("erasure-status", "status of an erasure")
    c.add_argument("erasure_id")
    c.set_defaults(func=cmd_erasure_status)
    c = client("budget", "privacy budget spent and remaining")
    c.add_argument("--period")
    c.set_defaults(func=cmd_budget)

    def offline(name: str, help_: str) -> argparse.ArgumentParser:
        o = sub.add_parser(name, help=help_)
        o.add_argument("--data-dir")
        return o

    o = offline("replay", "rebuild the state from the journal (ignoring snapshots) and print it")
    o.set_defaults(func=cmd_replay)
    o = offline("snapshot", "write a snapshot of the current state")
    o.add_argument("--out", type=Path, help="also copy the snapshot file here")
    o.set_defaults(func=cmd_snapshot)
    o = offline("restore", "restore from the newest valid snapshot (or install FILE first) + tail replay")
    o.add_argument("file", nargs="?", type=Path)
    o.set_defaults(func=cmd_restore)
    o = offline("compact", "purge every erased user's events now (do not wait for PURGE_DELAY_SECONDS)")
    o.set_defaults(func=cmd_compact)
    o = offline("rotate-salt", "replace the pseudonymisation secret without changing any count")
    o.set_defaults(func=cmd_rotate_salt)
    return p


# -- serve -----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    anyio.run(serve, cfg)
    return 0


async def serve(cfg: config_mod.Config) -> None:
    import structlog
    from aiohttp import web

    from gateway.app import create_app

    log = structlog.get_logger("gateway")
    # The journal's database thread needs the GIL for each hop; the default 5 ms switch
    # interval puts a 5 ms floor under every commit whenever the event loop is busy.
    sys.setswitchinterval(0.0005)
    app = create_app(cfg)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10)
    await runner.setup()
    try:
        site = web.TCPSite(runner, cfg.gateway.host, cfg.gateway.port, backlog=2048, reuse_address=True)
        await site.start()
        log.info(
            "listening",
            url=f"http://{cfg.gateway.host}:{cfg.gateway.port}",
            data_dir=str(cfg.data_dir),
            journal=cfg.journal.redacted,
        )
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("stopping", signal=signal.Signals(signum).name)
                break
    finally:
        await runner.cleanup()


# -- client commands -------------------------------------------------------------------------


class ClientError(Exception):
    pass


def _url(args: argparse.Namespace, cfg: config_mod.Config) -> str:
    return (args.url or os.environ.get("DPDAU_URL") or f"http://{cfg.gateway.host}:{cfg.gateway.port}").rstrip("/")


def _request(
    cfg: config_mod.Config, method: str, url: str, body: object | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if cfg.gateway.api_key:
        hdrs["X-API-Key"] = cfg.gateway.api_key
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except urllib.error.URLError as exc:
        raise ClientError(f"cannot reach {url}: {exc.reason} (is `make run` running?)") from None


def _show(status: int, body: dict[str, Any]) -> int:
    print(json.dumps(body, indent=2))
    return 0 if status < 400 else 1


def cmd_dau(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    return _show(*_request(cfg, "GET", f"{_url(args, cfg)}/dau/{args.day}"))


def cmd_mau(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    window = f"&window={args.window}" if args.window else ""
    return _show(*_request(cfg, "GET", f"{_url(args, cfg)}/mau?end={args.end}{window}"))


def cmd_erase(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    return _show(*_request(cfg, "POST", f"{_url(args, cfg)}/erasure", {"user_id": args.user_id}))


def cmd_erasure_status(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    return _show(*_request(cfg, "GET", f"{_url(args, cfg)}/erasure/{args.erasure_id}"))


def cmd_budget(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    period = f"?period={args.period}" if args.period else ""
    return _show(*_request(cfg, "GET", f"{_url(args, cfg)}/budget{period}"))


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


def cmd_ingest(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    url = f"{_url(args, cfg)}/event"
    tty = sys.stderr.isatty()
    sent, started = 0, time.monotonic()
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal sent, batch
        key = f"ingest-{args.file.name}-{sent}-{len(batch)}-{os.getpid()}"
        while True:
            status, body = _request(cfg, "POST", url, {"events": batch}, {"Idempotency-Key": key})
            if status != 503:
                break
            time.sleep(1)  # backpressure: the same Idempotency-Key makes the retry safe
        if status >= 400:
            raise ClientError(f"batch starting at event {sent} refused ({status}): {body}")
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
