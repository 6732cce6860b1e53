"""SimulatedHome's services change states and attributes as Home Assistant 2024.1.6 does
(read from HA's service layers, entity base classes and demo platforms)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import HomeTargetError, ToolArgumentsError
from edge_agent.skills.home import SimulatedHome
from edge_agent.skills.home.inventory import Entity, inventory_from_fixtures

HOME: dict[str, Any] = {
    "areas": [{"id": "kitchen", "name": "Kitchen"}],
    "entities": [
        {"id": "light.lamp", "name": "Lamp", "area": "kitchen", "state": "off"},
        {"id": "fan.ceiling", "name": "Ceiling Fan", "state": "off"},
        {"id": "valve.main", "name": "Main Valve", "state": "closed",
         "attributes": {"position": "0"}},
        {"id": "cover.garage", "name": "Garage Door", "state": "closed"},
        {"id": "lock.front", "name": "Front Door", "state": "locked"},
        {"id": "climate.hall", "name": "Thermostat", "state": "heat",
         "attributes": {"temperature": 20, "hvac_modes": ["off", "heat", "cool"]}},
        {"id": "media_player.radio", "name": "Radio", "state": "playing",
         "attributes": {"volume_level": "50", "media_track": 1, "media_title": "One"},
         "playlist": ["One", "Two", "Three"]},
        {"id": "vacuum.rover", "name": "Rover", "state": "docked"},
        {"id": "todo.chores", "name": "Chores", "state": "0"},
    ],
}  # fmt: skip


@pytest.fixture
def home() -> SimulatedHome:
    return SimulatedHome(inventory_from_fixtures(HOME))


def call(home: SimulatedHome, service: str, entity_id: str, **data: Any) -> Entity:
    (entity,) = home.call_service(entity_id.partition(".")[0], service, [entity_id], data)
    return entity


def test_fixture_units_become_home_assistant_units(home: SimulatedHome) -> None:
    valve, radio = home.inventory.entity("valve.main"), home.inventory.entity("media_player.radio")
    assert valve is not None and valve.attributes == {"current_position": 0}
    assert radio is not None and radio.attributes["volume_level"] == 0.5


def test_valve_open_close_and_position_move_current_position(home: SimulatedHome) -> None:
    opened = call(home, "open_valve", "valve.main")
    assert (opened.state, opened.attributes["current_position"]) == ("open", 100)
    half = call(home, "set_valve_position", "valve.main", position=40)
    assert (half.state, half.attributes["current_position"]) == ("open", 40)
    shut = call(home, "set_valve_position", "valve.main", position=0)
    assert (shut.state, shut.attributes["current_position"]) == ("closed", 0)
    with pytest.raises(ToolArgumentsError, match="between 0 and 100"):
        call(home, "set_valve_position", "valve.main", position=140)


def test_a_cover_without_position_gets_none_from_open_or_close(home: SimulatedHome) -> None:
    opened = call(home, "open_cover", "cover.garage")
    assert opened.state == "open" and "current_position" not in opened.attributes
    assert call(home, "close_cover", "cover.garage").state == "closed"


def test_fan_on_sets_a_percentage_and_off_zero(home: SimulatedHome) -> None:
    on = call(home, "turn_on", "fan.ceiling")
    assert (on.state, on.attributes["percentage"]) == ("on", 67)  # HA's demo fan
    fan = home.inventory.entity("fan.ceiling")
    assert fan is not None
    fan.memory["on_percentage"] = 50  # a device's own speed for "on"
    assert call(home, "turn_on", "fan.ceiling").attributes["percentage"] == 50
    assert call(home, "turn_on", "fan.ceiling", percentage=30).attributes["percentage"] == 30
    off = call(home, "turn_off", "fan.ceiling")
    assert (off.state, off.attributes["percentage"]) == ("off", 0)
    assert call(home, "set_percentage", "fan.ceiling", percentage=0).state == "off"


def test_light_brightness_is_0_to_255_color_rgb_and_remembered_while_off(
    home: SimulatedHome,
) -> None:
    lamp = call(home, "turn_on", "light.lamp", brightness_pct=50, color_name="Red")
    assert (lamp.state, lamp.attributes["brightness"]) == ("on", 128)
    assert lamp.attributes["rgb_color"] == [255, 0, 0]
    off = call(home, "turn_off", "light.lamp")
    assert (off.state, off.attributes["brightness"], off.attributes["rgb_color"]) == (
        "off", None, None,
    )  # fmt: skip
    again = call(home, "turn_on", "light.lamp")
    assert (again.attributes["brightness"], again.attributes["rgb_color"]) == (128, [255, 0, 0])
    assert call(home, "turn_on", "light.lamp", brightness_pct=0).state == "off"
    with pytest.raises(ToolArgumentsError, match="unknown colour"):
        call(home, "turn_on", "light.lamp", color_name="plaid")


def test_a_fresh_light_turns_on_at_the_demo_brightness(home: SimulatedHome) -> None:
    assert call(home, "turn_on", "light.lamp").attributes["brightness"] == 180


def test_an_hs_light_shows_hue_and_saturation_at_full_value_and_white_lights_refuse_colour(
    home: SimulatedHome,
) -> None:
    lamp = home.inventory.entity("light.lamp")
    assert lamp is not None
    lamp.attributes |= {"supported_color_modes": ["hs"], "hs_color": None, "rgb_color": None}
    green = call(home, "turn_on", "light.lamp", color_name="green")  # CSS green: 0, 128, 0
    assert green.attributes["color_mode"] == "hs"
    assert (green.attributes["hs_color"], green.attributes["rgb_color"]) == (
        [120.0, 100.0], [0, 255, 0],
    )  # fmt: skip
    lamp.attributes["supported_color_modes"] = ["brightness"]
    with pytest.raises(HomeTargetError, match="cannot change colour"):
        call(home, "turn_on", "light.lamp", color_name="red")


def test_media_volume_is_a_fraction_and_tracks_walk_the_playlist_round(
    home: SimulatedHome,
) -> None:
    assert (
        call(home, "volume_set", "media_player.radio", volume_level=0.25).attributes["volume_level"]
        == 0.25
    )
    with pytest.raises(ToolArgumentsError, match="between 0 and 1"):
        call(home, "volume_set", "media_player.radio", volume_level=50)
    nxt = call(home, "media_next_track", "media_player.radio")
    assert (nxt.attributes["media_track"], nxt.attributes["media_title"]) == (2, "Two")
    call(home, "media_next_track", "media_player.radio")
    wrapped = call(home, "media_next_track", "media_player.radio")  # a queue on repeat
    assert (wrapped.attributes["media_track"], wrapped.attributes["media_title"]) == (1, "One")
    back = call(home, "media_previous_track", "media_player.radio")
    assert (back.attributes["media_track"], back.attributes["media_title"]) == (3, "Three")
    assert call(home, "turn_on", "media_player.radio").state == "idle"
    assert call(home, "media_pause", "media_player.radio").state == "paused"
    assert call(home, "media_play", "media_player.radio").state == "playing"


def test_lock_vacuum_and_climate_states(home: SimulatedHome) -> None:
    assert call(home, "unlock", "lock.front").state == "unlocked"
    assert call(home, "lock", "lock.front").state == "locked"
    assert call(home, "start", "vacuum.rover").state == "cleaning"
    assert call(home, "return_to_base", "vacuum.rover").state == "returning"
    warm = call(home, "set_temperature", "climate.hall", temperature=22.5, hvac_mode="cool")
    assert (warm.state, warm.attributes["temperature"]) == ("cool", 22.5)
    assert call(home, "turn_off", "climate.hall").state == "off"
    assert call(home, "turn_on", "climate.hall").state == "cool"  # the mode it had
    with pytest.raises(HomeTargetError, match="no mode 'dry'"):
        call(home, "set_hvac_mode", "climate.hall", hvac_mode="dry")


def test_todo_items_add_complete_remove_and_the_state_counts_open_ones(
    home: SimulatedHome,
) -> None:
    call(home, "add_item", "todo.chores", item="Dishes")
    assert call(home, "add_item", "todo.chores", item="Laundry").state == "2"
    done = call(home, "update_item", "todo.chores", item="dishes", status="completed")
    assert done.state == "1"
    assert done.attributes["items"] == [
        {"summary": "Dishes", "status": "completed"},
        {"summary": "Laundry", "status": "needs_action"},
    ]
    assert call(home, "remove_item", "todo.chores", item="Laundry").state == "0"


def test_a_failed_call_changes_nothing(home: SimulatedHome) -> None:
    call(home, "turn_on", "light.lamp", brightness_pct=20)
    with pytest.raises(ToolArgumentsError):
        call(home, "turn_on", "light.lamp", brightness_pct=90, color_name="plaid")
    lamp = home.inventory.entity("light.lamp")
    assert lamp is not None and lamp.attributes["brightness"] == 51
    with pytest.raises(HomeTargetError, match="do not support 'start'"):
        home.call_service("light", "start", ["light.lamp"])


def test_what_a_light_remembers_survives_the_state_file(tmp_path: Path) -> None:
    path = tmp_path / "home.json"
    first = SimulatedHome(inventory_from_fixtures(HOME), state_path=path)
    call(first, "turn_on", "light.lamp", brightness_pct=40)
    call(first, "turn_off", "light.lamp")
    again = SimulatedHome(inventory_from_fixtures(HOME), state_path=path)
    assert call(again, "turn_on", "light.lamp").attributes["brightness"] == 102
