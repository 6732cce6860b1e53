"""The fixture's HA is real: it started, onboarded an owner, and serves the virtual home."""

from __future__ import annotations

import pytest

from tests.homeassistant.support import HassServer, home_devices

pytestmark = pytest.mark.integration


def test_the_long_lived_token_reaches_the_api(hass: HassServer) -> None:
    assert hass.request("GET", "")["message"] == "API running."
    assert hass.request("GET", "config")["version"] == "2024.1.6"


def test_every_virtual_device_is_an_entity_in_its_area(hass: HassServer) -> None:
    for device in home_devices():
        entity_id = f"{device['domain']}.{device['id']}"
        assert hass.state(entity_id)["attributes"]["friendly_name"] == device["name"]
        assert hass.render(f"{{{{ area_name('{entity_id}') }}}}") == device["area"]
