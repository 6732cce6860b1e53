"""Fixtures for the host's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sync_support import HostServer, make_cert


@pytest.fixture
def host(tmp_path: Path) -> Iterator[HostServer]:
    """A real ingest server (HTTPS, 127.0.0.1) over a fresh host folder."""
    server = HostServer(tmp_path / "host", make_cert(tmp_path)).start()
    yield server
    server.stop()
