"""``dpdau serve --workers N``: N gateway processes on one address, in front of one shared journal.

Rules:
1. Only on a journal several processes can share (PostgreSQL); ``cli.serve_topology`` refuses
   anything else with one line and exit code 2 before this module runs.
2. The parent binds HOST:PORT first (``SO_REUSEPORT``, never listening itself) so a busy port is a
   configuration error at once, then forks the workers before it has started a thread or an event
   loop. Each worker binds its own ``SO_REUSEPORT`` socket on the same address -- the kernel
   spreads new connections over the listening ones -- and runs the whole server (``cli.serve``) as
   ``worker-<i>`` (``gateway-of<N>-<i>`` over shards): its own lock file and snapshot directory
   in ``DATA_DIR`` (``location`` rule 2)
   and its own ``ActorSystem``, which follows the other workers through the journal
   (``groupcommit`` rule 7). What a worker holds is its ``Topology``: the whole per-day state
   (``--workers`` alone) or none (``--shards N``: the shards hold it).
3. A worker listens only once its state is ready, so a worker that (re)starts never receives a
   connection it cannot serve.
4. The parent only supervises. SIGTERM/SIGINT are passed to every worker, which stops gracefully
   (commit, dispatch, snapshot); the parent exits when all have. A worker that dies otherwise
   (``kill -9``, a crash) is started again after ``RESTART_SECONDS``; one that exits with 2 (a
   configuration error) stops them all with 2, and one that keeps dying at start stops them all
   with 1.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from types import FrameType

import anyio
import structlog

from actors.system.topology import Topology
from gateway import config as config_mod

log = structlog.get_logger("gateway.workers")
RESTART_SECONDS = 0.5
EARLY_DEATHS = 5  # a worker that dies this many times in a row within STARTUP_SECONDS of starting
STARTUP_SECONDS = 10.0


def supervise(cfg: config_mod.Config, topology: Topology, workers: int, grpc_port: int | None) -> int:
    from gateway import cli

    reserved = cli.bind(cfg.gateway.host, cfg.gateway.port, reuse_port=True)  # rule 2: busy port -> exit 2
    children: dict[int, int] = {}  # pid -> worker index
    started: dict[int, float] = {}
    early: dict[int, int] = {}
    stopping = False
    code = 0

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            reserved.close()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            structlog.contextvars.bind_contextvars(process=f"worker-{index}")
            mine = dataclasses.replace(topology, name=worker_name(topology, index))
            status = cli.guarded(lambda: _run(cfg, grpc_port, mine))
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        children[pid] = index
        started[index] = time.monotonic()

    def stop_all(signum: int = signal.SIGTERM) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("stopping_workers", signal=signal.Signals(signum).name, workers=len(children))
        stop_all(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for index in range(workers):
            start(index)
        log.info("workers_started", workers=workers, url=f"http://{cfg.gateway.host}:{cfg.gateway.port}")
        while children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid not in children:
                continue
            index = children.pop(pid)
            exit_code = os.waitstatus_to_exitcode(status)
            if stopping:
                continue
            if exit_code == 2:  # a configuration error: every worker would say the same
                log.error("worker_config_error", worker=index)
                code = 2
                stop_all()
                continue
            early[index] = early.get(index, 0) + 1 if time.monotonic() - started[index] < STARTUP_SECONDS else 1
            if early[index] >= EARLY_DEATHS:
                log.error("worker_keeps_dying", worker=index, exit_code=exit_code)
                code = 1
                stop_all()
                continue
            log.warning("worker_died_restarting", worker=index, exit_code=exit_code)
            time.sleep(RESTART_SECONDS)
            if not stopping:
                start(index)
    finally:
        reserved.close()
    return code


def worker_name(topology: Topology, index: int) -> str:
    """``worker-<i>`` (whole state) or ``gateway-of<N>-<i>``: a worker's snapshot directory must
    never be loaded by a process that holds something else (``topology`` rule 3)."""
    return f"{topology.name}-{index}" if topology.name else f"worker-{index}"


def _run(cfg: config_mod.Config, grpc_port: int | None, topology: Topology) -> int:
    from gateway import cli

    anyio.run(lambda: cli.serve(cfg, grpc_port, topology, reuse_port=True))
    return 0
