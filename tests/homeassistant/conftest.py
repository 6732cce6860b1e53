"""The real Home Assistant for tests: `hass_server` (one per session), `hass` (reset first).

Skips with a reason naming scripts/install_hass.sh when HA's virtualenv is not installed
(CI installs it, so there they run). Tests elsewhere take both fixtures with
`from tests.homeassistant.conftest import hass, hass_server  # noqa: F401`: every importer
shares the one HA process (support.shared_hass).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.homeassistant.support import HassServer, hass_missing, shared_hass, stop_shared_hass


@pytest.fixture(scope="session")
def hass_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HassServer]:
    """HA 2024.1.6 on 127.0.0.1 with the virtual home, shared by the session's tests."""
    if reason := hass_missing():
        pytest.skip(reason)
    try:
        yield shared_hass(tmp_path_factory)
    finally:
        stop_shared_hass()


@pytest.fixture
def hass(hass_server: HassServer) -> HassServer:
    """The session's HA with every device back at its home.yaml state."""
    hass_server.reset()
    return hass_server
