"""In-process gateway: the real aiohttp app on a real 127.0.0.1 socket (aiohttp's TestServer)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from aiohttp.test_utils import TestClient, TestServer

from gateway import config as config_mod
from gateway.app import create_app


def make_config(tmp_path, **env):
    base = {
        "DATA_DIR": str(tmp_path / "data"),
        "PURGE_DELAY_SECONDS": "3600",
        "JOURNAL_SYNC": "NORMAL",
        "LOG_LEVEL": "warning",
        "RELEASE_SCHEDULE": "on-demand",  # schedule tests set "daily" (see tests/support.py)
    }
    base.update({k: str(v) for k, v in env.items()})
    return config_mod.load(environ=base, dotenv=None)


@asynccontextmanager
async def gateway(tmp_path, clock=None, **env):
    app = create_app(make_config(tmp_path, **env), **({"clock": clock} if clock is not None else {}))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        from gateway.appkeys import SYSTEM

        await app[SYSTEM].wait_ready()
        yield client
