"""A throwaway PostgreSQL 15 cluster on 127.0.0.1, configured the way erasure needs it.

    .venv/bin/python -m scripts.pgcluster start /tmp/dpdau-pg --port 5433   # prints the JOURNAL_URL
    .venv/bin/python -m scripts.pgcluster stop /tmp/dpdau-pg

Used by the test fixture (``tests/pg.py``), the benchmark and the README. It only drives the
Debian binaries (``initdb``, ``pg_ctl``); as root it runs them as the ``postgres`` user through
``runuser`` (the server refuses to run as root). The settings are the ones the journal checks at
start (``journal/postgres.py``, ``ERASURE_SETTINGS``): no WAL recycling, no archiving, no WAL kept
for standbys -- so a purge's WAL switch + CHECKPOINT leaves no old segment behind.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "wal_recycle": "off",  # an old WAL segment is unlinked, never renamed and kept
    "archive_mode": "off",
    "wal_keep_size": "0",
    "fsync": "on",
    "synchronous_commit": "on",
    "shared_buffers": "256MB",
    "max_connections": "100",
    "log_min_messages": "warning",
}


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian layout), or PG_BIN, or None."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def url(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def start(directory: Path, port: int, *, settings: dict[str, str] | None = None) -> str:
    """initdb (if needed) + pg_ctl start; returns the URL. The server log is ``directory/server.log``,
    outside the data directory (``directory/data``), so the erasure byte-scan covers only data."""
    binaries = bin_dir()
    if binaries is None:
        raise RuntimeError("PostgreSQL binaries not found (install postgresql-15, or set PG_BIN)")
    directory = Path(directory).resolve()
    data = directory / "data"
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
        os.chmod(directory, 0o755)
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            _as_server_user(
                [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        conf = {**SERVER_SETTINGS, **(settings or {})}
        with open(data / "postgresql.auto.conf", "a") as fh:
            fh.write("".join(f"{k} = {v}\n" for k, v in conf.items()))
    subprocess.run(
        _as_server_user(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(directory / "server.log"),
                "-o",
                f"-p {port}",
                "-w",
                "-t",
                "120",
                "start",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return url(port)


def stop(directory: Path) -> None:
    """Stop by the postmaster's PID (the first line of ``postmaster.pid``)."""
    pidfile = Path(directory).resolve() / "data" / "postmaster.pid"
    if not pidfile.exists():
        return
    binaries = bin_dir()
    if binaries is not None:
        subprocess.run(
            _as_server_user([str(binaries / "pg_ctl"), "-D", str(pidfile.parent), "-m", "fast", "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pgcluster", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start")
    s.add_argument("directory", type=Path)
    s.add_argument("--port", type=int, default=5433)
    t = sub.add_parser("stop")
    t.add_argument("directory", type=Path)
    args = p.parse_args(argv)
    if args.command == "start":
        print(start(args.directory, args.port))
    else:
        stop(args.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
