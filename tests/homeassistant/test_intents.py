"""HA 2024.1.6's own intent handlers (POST /api/intent/handle) on the virtual home, and the
intent list INTENTS.md records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_agent.skills.home.dataset import intent_definitions
from tests.homeassistant.support import HassError, HassServer

pytestmark = pytest.mark.integration

_DOC = (Path(__file__).parent / "INTENTS.md").read_text()


def _documented(heading: str) -> set[str]:
    block = _DOC.split(heading, 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"Hass\w+", block))


def test_intents_md_lists_exactly_the_intents_ha_registers(hass: HassServer) -> None:
    assert set(hass.intents()) == _documented("Registered:\n")


def test_intents_md_says_which_of_our_intents_ha_handles(hass: HassServer) -> None:
    ours = set(intent_definitions())
    handled = _documented("Handled by 2024.1.6 (9):")
    assert ours & set(hass.intents()) == handled
    assert _documented("Not in 2024.1.6 (24)") == ours - handled


def test_turn_on_by_alias_turns_the_light_on(hass: HassServer) -> None:
    assert hass.state("light.kitchen_light")["state"] == "off"
    reply = hass.handle_intent("HassTurnOn", {"name": "Counter Lights"})
    assert reply["response_type"] == "action_done"
    assert [t["id"] for t in reply["data"]["success"]] == ["light.kitchen_light"]
    assert hass.state("light.kitchen_light")["state"] == "on"


def test_turn_off_by_area_and_device_class_closes_only_the_blinds(hass: HassServer) -> None:
    slots = {"area": "Living Room", "device_class": "blind"}
    hass.handle_intent("HassTurnOff", slots)
    assert hass.state("cover.living_room_blinds")["attributes"]["current_position"] == 0
    assert hass.state("light.living_room_lamp")["state"] == "on"


def test_light_set_brightness_is_a_percentage(hass: HassServer) -> None:
    hass.handle_intent("HassLightSet", {"area": "Bedroom", "brightness": 20})
    light = hass.state("light.bedroom_light")
    assert (light["state"], light["attributes"]["brightness"]) == ("on", 51)


def test_light_set_color_by_name(hass: HassServer) -> None:
    hass.handle_intent("HassLightSet", {"name": "Kitchen Light", "color": "red"})
    assert hass.state("light.kitchen_light")["attributes"]["hs_color"] == [0.0, 100.0]


def test_shopping_list_add_item(hass: HassServer) -> None:
    hass.handle_intent("HassShoppingListAddItem", {"item": "apples"})
    assert [i["name"] for i in hass.shopping_list()] == ["apples"]
    assert hass.state("todo.shopping_list")["state"] == "1"


def test_list_add_item_by_list_alias(hass: HassServer) -> None:
    hass.handle_intent("HassListAddItem", {"item": "eggs", "name": "Grocery List"})
    assert hass.state("todo.groceries")["state"] == "3"


def test_an_unknown_name_is_answered_not_failed(hass: HassServer) -> None:
    reply = hass.handle_intent("HassTurnOn", {"name": "Swimming Pool"})
    assert "No entities matched" in reply["speech"]["plain"]["speech"]


def test_an_intent_newer_than_2024_1_is_a_server_error(hass: HassServer) -> None:
    with pytest.raises(HassError, match="500"):
        hass.handle_intent("HassMediaPause", {"name": "Living Room TV"})


def test_ha_own_sentence_matcher_understands_a_command(hass: HassServer) -> None:
    reply = hass.converse("turn on the counter lights")
    assert reply["response"]["response_type"] == "action_done"
    assert hass.state("light.kitchen_light")["state"] == "on"
