"""Local retrieval of the entities a request is about, and the prompt's context block."""

from __future__ import annotations

import pytest

from edge_agent.skills.home import Inventory, context_block, retrieve
from edge_agent.skills.home.inventory import Entity, inventory_from_fixtures


@pytest.fixture(scope="module")
def home() -> Inventory:
    return Inventory.default()


def names(entities: list[Entity]) -> list[str]:
    return [e.name for e in entities]


def test_kitchen_light_finds_the_kitchen_lights(home: Inventory) -> None:
    found = names(retrieve("turn on the kitchen light", home, k=4))
    assert {"Kitchen cabinets", "Kitchen ceiling", "Kitchen countertop"} <= set(found)


def test_exact_name_ranks_first(home: Inventory) -> None:
    assert names(retrieve("is the front door locked", home))[0] == "Front Door"
    assert names(retrieve("set bedroom lamp to 50%", home))[0] == "Bedroom Lamp"


def test_device_class_words_find_covers(home: Inventory) -> None:
    found = names(retrieve("open the curtains in the living room", home, k=2))
    assert found == ["Curtain Left", "Curtain Right"]


def test_speaker_area_breaks_ties_toward_here(home: Inventory) -> None:
    found = names(retrieve("lights off", home, area="Living Room", k=6))
    assert {"Living Room Lamp", "Play Corner"} <= set(found)
    elsewhere = names(retrieve("lights off", home, area="Bedroom", k=3))
    assert "Bedroom Lamp" in elsewhere


def test_typo_still_matches(home: Inventory) -> None:
    assert names(retrieve("what does the thermostst say", home, k=2))[0] == "Thermostat"


def test_apostrophes_do_not_match_everything(home: Inventory) -> None:
    assert "Trader Joes" not in names(retrieve("what's the temperature in the office", home))


def test_unrelated_request_retrieves_nothing(home: Inventory) -> None:
    assert retrieve("zzz qqq", home) == []


def test_context_block_exact_text() -> None:
    inventory = inventory_from_fixtures(
        {
            "areas": [{"name": "Kitchen", "id": "kitchen"}],
            "entities": [
                {"name": "Kitchen Light", "id": "light.k", "area": "kitchen", "state": "on"},
                {
                    "name": "Blind",
                    "id": "cover.b",
                    "area": "kitchen",
                    "state": "closed",
                    "attributes": {"device_class": "blind"},
                },
                {
                    "name": "Oven temp",
                    "id": "sensor.o",
                    "state": "180",
                    "attributes": {"unit_of_measurement": "°C", "device_class": "temperature"},
                },
            ],
        }
    )
    block = context_block("open the kitchen blind", "Kitchen", inventory)
    assert block == (
        "Speaker area: Kitchen\n"
        "Devices:\n"
        "- Blind (cover blind, Kitchen): closed\n"
        "- Kitchen Light (light, Kitchen): on"
    )
    assert context_block("oven temperature", None, inventory, k=1) == (
        "Speaker area: unknown\nDevices:\n- Oven temp (sensor temperature): 180 °C"
    )
    assert context_block("zzz", None, inventory).endswith("Devices:\n- none match")


def test_context_block_is_deterministic_and_respects_k(home: Inventory) -> None:
    first = context_block("turn off the lights", "Kitchen", home, k=3)
    assert first == context_block("turn off the lights", "Kitchen", home.model_copy(deep=True), k=3)
    assert len(first.splitlines()) == 2 + 3
