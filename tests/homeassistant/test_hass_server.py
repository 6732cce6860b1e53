"""The fixture's HA is real: it started, onboarded an owner, and serves the virtual home in
every domain the home skill covers, each device in an area; reset() restores it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.homeassistant.support import HassServer, home_devices

pytestmark = pytest.mark.integration

DOMAINS = ("light", "switch", "fan", "cover", "valve", "lock", "climate", "media_player",
           "vacuum", "todo", "weather", "sensor")  # fmt: skip


def test_the_long_lived_token_reaches_the_api(hass: HassServer) -> None:
    assert hass.request("GET", "")["message"] == "API running."
    assert hass.request("GET", "config")["version"] == "2024.1.6"


def test_every_virtual_device_is_an_entity_in_its_area(hass: HassServer) -> None:
    for device in home_devices():
        entity_id = f"{device['domain']}.{device['id']}"
        assert hass.state(entity_id)["attributes"]["friendly_name"] == device["name"]
        assert hass.render(f"{{{{ area_name('{entity_id}') }}}}") == device["area"]


def test_every_domain_has_an_entity_with_an_area(hass: HassServer) -> None:
    in_areas = hass.render(
        "{% for s in states %}{% if area_id(s.entity_id) %}{{ s.domain }} {% endif %}{% endfor %}"
    ).split()
    assert set(DOMAINS) <= set(in_areas)


def test_sensors_measure_temperature_and_humidity(hass: HassServer) -> None:
    classes = {s["attributes"].get("device_class") for s in hass.states()}
    assert {"temperature", "humidity"} <= classes


def test_aliases_and_areas_are_in_the_registries(hass: HassServer) -> None:
    entry = hass.websocket("config/entity_registry/get", entity_id="valve.garden_valve")
    assert entry["aliases"] == ["Sprinkler"]
    areas = {a["name"] for a in hass.websocket("config/area_registry/list")}
    assert {d["area"] for d in home_devices()} <= areas


SERVICES: list[tuple[str, str, dict[str, Any], str, str, Any]] = [
    ("light", "turn_on", {"brightness": 10}, "light.living_room_lamp", "brightness", 10),
    ("fan", "set_percentage", {"percentage": 75}, "fan.ceiling_fan", "percentage", 75),
    ("cover", "set_cover_position", {"position": 40}, "cover.garage_door",
     "current_position", 40),
    ("valve", "set_valve_position", {"position": 30}, "valve.garden_valve",
     "current_position", 30),
    ("climate", "set_temperature", {"temperature": 23.5}, "climate.thermostat",
     "temperature", 23.5),
    ("media_player", "volume_set", {"volume_level": 0.7}, "media_player.living_room_tv",
     "volume_level", 0.7),
    ("media_player", "media_next_track", {}, "media_player.living_room_tv",
     "media_title", "Evening Blues"),
    ("media_player", "media_previous_track", {}, "media_player.living_room_tv",
     "media_title", "Night Piano"),
]  # fmt: skip


@pytest.mark.parametrize("case", SERVICES, ids=lambda c: f"{c[0]}.{c[1]}")
def test_services_change_the_device(
    hass: HassServer, case: tuple[str, str, dict[str, Any], str, str, Any]
) -> None:
    domain, service, data, entity_id, attribute, value = case
    hass.call_service(domain, service, {"entity_id": entity_id, **data})
    assert hass.state(entity_id)["attributes"][attribute] == value


@pytest.mark.parametrize(
    ("domain", "service", "entity_id", "state"),
    [
        ("lock", "unlock", "lock.front_door", "unlocked"),
        ("switch", "turn_on", "switch.coffee_maker", "on"),
        ("vacuum", "start", "vacuum.robot_vacuum", "cleaning"),
        ("vacuum", "return_to_base", "vacuum.robot_vacuum", "returning"),
        ("media_player", "media_pause", "media_player.living_room_tv", "paused"),
        ("valve", "open_valve", "valve.garden_valve", "open"),
    ],
)
def test_services_change_the_state(
    hass: HassServer, domain: str, service: str, entity_id: str, state: str
) -> None:
    hass.call_service(domain, service, {"entity_id": entity_id})
    assert hass.state(entity_id)["state"] == state


def test_reset_puts_every_device_back(hass: HassServer) -> None:
    before = {s["entity_id"]: (s["state"], s["attributes"]) for s in hass.states()}
    hass.call_service("light", "turn_on", {"entity_id": "all", "brightness": 3})
    hass.call_service("cover", "open_cover", {"entity_id": "all"})
    hass.call_service("todo", "add_item", {"entity_id": "todo.groceries", "item": "tea"})
    hass.call_service("shopping_list", "add_item", {"name": "pears"})
    hass.reset()
    after = {s["entity_id"]: (s["state"], s["attributes"]) for s in hass.states()}
    assert after == before
