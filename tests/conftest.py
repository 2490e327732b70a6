"""Fixtures shared by every test package: the journal backends (SQLite, real PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from journal import location
from journal.location import JournalSpec
from tests import pg

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_server() -> pg.Server:
    srv = pg.server()
    if srv is None:
        if pg.required():
            pytest.fail(f"PostgreSQL is required here ({pg.ENV_REQUIRED}=1): {pg.unavailable_reason()}")
        pytest.skip(pg.unavailable_reason())
    return srv


@pytest.fixture
def pg_url(pg_server: pg.Server) -> str:
    """A fresh, empty database of the session's PostgreSQL."""
    return pg.fresh_database(pg_server)


def spec_for(backend: str, data_dir: Path, request: pytest.FixtureRequest) -> JournalSpec:
    if backend == "sqlite":
        return location.parse(None, data_dir, sqlite_synchronous="NORMAL", index_idle_seconds=0.2)
    url = request.getfixturevalue("pg_url")
    return location.parse(url, data_dir, index_idle_seconds=0.2)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def journal_spec(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> JournalSpec:
    """Where a test's journal lives, for each backend in turn."""
    return spec_for(backend, tmp_path / "data", request)
