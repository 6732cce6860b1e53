"""Fixtures for the host's tests: the ingest store on both engines (SQLite, a real PostgreSQL
server of the session) and real ingest servers over them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pg_support import PgServer, bindir
from tests.sync_support import HostServer, make_cert


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL cluster for the session (initdb + pg_ctl into a temporary folder)."""
    pytest.importorskip("psycopg", reason="the fleet extra (psycopg) is not installed")
    found = bindir()
    if found is None:
        pytest.skip("PostgreSQL's initdb is not installed: apt-get install postgresql")
    server = PgServer(found).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where an ingest store lives: a SQLite file, or a fresh database on the session's
    PostgreSQL server (dropped after the test)."""
    if request.param == "sqlite":
        yield str(tmp_path / "ingest.db")
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.database()
    yield url
    server.drop(url)


def store_options(store_url: str) -> dict[str, Any]:
    """The IngestConfig options that put a HostServer's store at `store_url`."""
    return {"database_url": store_url} if store_url.startswith("postgresql://") else {}


@pytest.fixture
def make_host(tmp_path: Path, store_url: str) -> Iterator[Callable[..., HostServer]]:
    """Starts real ingest servers (HTTPS, 127.0.0.1) over the test's store, with options;
    stops them after the test."""
    started: list[HostServer] = []

    def start(options: dict[str, Any] | None = None, name: str = "host") -> HostServer:
        all_options = {**store_options(store_url), **(options or {})}
        server = HostServer(tmp_path / name, make_cert(tmp_path, name), all_options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def host(make_host: Callable[..., HostServer]) -> HostServer:
    """A real ingest server (HTTPS, 127.0.0.1) over a fresh host folder, on each store."""
    return make_host()
