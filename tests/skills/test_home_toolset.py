"""The `home` toolset: one tool per intent, schemas that accept the dataset, effects, handlers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import HomeTargetError, ToolArgumentsError
from edge_agent.skills.home import SimulatedHome
from edge_agent.skills.home.dataset import intent_definitions, load_rows
from edge_agent.skills.home.intents import HomeIntents
from edge_agent.skills.home.toolset import handlers, home_toolset
from edge_agent.tools import Toolset, execute, get_toolset
from edge_agent.types import Effect


@pytest.fixture
def home() -> SimulatedHome:
    return SimulatedHome()


@pytest.fixture
def tools(home: SimulatedHome) -> Toolset:
    return home_toolset(backend=home)


def run(tools: Toolset, tool: str, **args: Any) -> Any:
    return execute(tools.get(tool), args)


def state(home: SimulatedHome, entity_id: str) -> str:
    entity = home.inventory.entity(entity_id)
    assert entity is not None
    return entity.state


def test_registered_as_home_with_every_intent() -> None:
    toolset = get_toolset("home")
    assert toolset.name == "home"
    assert set(toolset.names) == set(intent_definitions()) == {r.intent for r in load_rows()}
    assert len(toolset) == 33 and toolset.prompt


def test_argument_names_are_slot_names_in_intents_yaml_order(tools: Toolset) -> None:
    for name, info in intent_definitions().items():
        schema = tools.get(name).parameters_schema()
        assert list(schema["properties"]) == list(info.get("slots") or {})
        required = [s for s, v in (info.get("slots") or {}).items() if v.get("required")]
        assert schema["required"] == required


def test_every_expected_call_in_the_dataset_validates(tools: Toolset) -> None:
    for row in load_rows():
        call = row.call()
        assert tools.get(call.name).validate(call.arguments) == call.arguments, row.id


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("HassLightSet", {"name": "Lamp", "brightness": 101}),
        ("HassSetVolume", {"volume_level": -1}),
        ("HassSetPosition", {"name": "x", "position": "half"}),
        ("HassStartTimer", {"minutes": 2.5}),
        ("HassTurnOn", {"domain": "toaster"}),
        ("HassGetState", {"name": "x", "state": "purple"}),
        ("HassMediaSearchAndPlay", {"search_query": "x", "media_class": "mixtape"}),
        ("HassTurnOn", {"device_class": "temperature"}),  # a sensor class: not for turning on
        ("HassBroadcast", {}),  # message is required
    ],
)
def test_schema_rejects_values_ha_does_not_define(
    tools: Toolset, name: str, args: dict[str, Any]
) -> None:
    with pytest.raises(ToolArgumentsError):
        tools.get(name).validate(args)


# --- effects ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "effect"),
    [
        ("HassTurnOff", {"name": "Bedroom Lamp"}, Effect.ACTUATING),
        ("HassTurnOff", {"name": "Front Door"}, Effect.DANGEROUS),  # unlocks
        ("HassTurnOn", {"name": "Front Door"}, Effect.DANGEROUS),
        ("HassTurnOn", {"name": "Main Valve"}, Effect.DANGEROUS),
        ("HassSetPosition", {"name": "Main Valve", "position": 50}, Effect.DANGEROUS),
        ("HassTurnOn", {"area": "Living Room", "domain": "cover"}, Effect.ACTUATING),
        ("HassTurnOn", {"domain": "cover", "device_class": "garage"}, Effect.DANGEROUS),
        ("HassTurnOn", {"area": "Attic", "domain": "lock"}, Effect.DANGEROUS),  # unresolved
        ("HassTurnOn", {"name": "Nothing Here"}, Effect.ACTUATING),
        ("HassGetState", {"name": "Front Door"}, Effect.READ_ONLY),
        ("HassTimerStatus", {}, Effect.READ_ONLY),
        ("HassLightSet", {"name": "Bedroom Lamp", "brightness": 5}, Effect.ACTUATING),
        ("HassStartTimer", {"minutes": 5}, Effect.ACTUATING),
    ],
)
def test_effect_depends_on_what_the_call_resolves_to(
    tools: Toolset, name: str, args: dict[str, Any], effect: Effect
) -> None:
    tool = tools.get(name)
    assert tool.effect_of(tool.validate(args)) is effect


def test_garage_door_cover_is_dangerous_by_device_class() -> None:
    from edge_agent.skills.home.inventory import inventory_from_fixtures

    inventory = inventory_from_fixtures(
        {
            "entities": [
                {"name": "Big Door", "id": "cover.big", "attributes": {"device_class": "garage"}}
            ]
        }
    )
    tool = home_toolset(inventory=inventory).get("HassTurnOn")
    assert tool.effect_of({"name": "Big Door"}) is Effect.DANGEROUS


# --- handlers act on the home -----------------------------------------------------------------


def test_turn_on_and_off_change_and_persist_state(tmp_path: Path) -> None:
    path = tmp_path / "home.json"
    tools = home_toolset(state_path=path)
    result = run(tools, "HassTurnOff", area="Kitchen", domain="light")
    assert {e["state"] for e in result["entities"]} == {"off"} and len(result["entities"]) == 3
    run(tools, "HassTurnOff", name="Front Door")
    reloaded = SimulatedHome(state_path=path)
    assert state(reloaded, "light.kitchen_ceiling") == "off"
    assert state(reloaded, "lock.front_door") == "unlocked"


def test_turn_on_maps_domains_to_their_services(tools: Toolset, home: SimulatedHome) -> None:
    run(tools, "HassTurnOn", area="Living Room", domain="cover", device_class="curtain")
    assert state(home, "cover.curtain_right") == "open"
    run(tools, "HassTurnOn", name="Back Door")
    assert state(home, "lock.back_door") == "locked"
    run(tools, "HassTurnOff", name="Main Valve")
    assert state(home, "valve.main_valve") == "closed"


def test_turn_on_a_sensor_is_refused_with_a_reason(tools: Toolset) -> None:
    with pytest.raises(HomeTargetError, match="can be turned on"):
        run(tools, "HassTurnOn", name="Furnace")
    with pytest.raises(HomeTargetError, match="candidates"):
        run(tools, "HassTurnOn", name="Disco Ball")


def test_light_set_position_volume_temperature(tools: Toolset, home: SimulatedHome) -> None:
    run(tools, "HassLightSet", name="Bedroom Lamp", brightness=30, color="red")
    lamp = home.inventory.entity("light.bedroom_lamp")
    assert lamp is not None and lamp.state == "on"
    assert (lamp.attributes["brightness_pct"], lamp.attributes["color_name"]) == (30, "red")
    with pytest.raises(ToolArgumentsError, match="brightness or color"):
        run(tools, "HassLightSet", name="Bedroom Lamp")
    run(tools, "HassSetPosition", name="Bedroom Curtain", position=40)
    assert state(home, "cover.bedroom") == "open"
    run(tools, "HassSetVolume", name="TV", volume_level=20)
    assert home.inventory.entity("media_player.tv").attributes["volume_level"] == 20  # type: ignore[union-attr]
    run(tools, "HassClimateSetTemperature", name="Office Thermostat", temperature=21.5)
    office = home.inventory.entity("climate.office_thermostat")
    assert office is not None and office.attributes["temperature"] == 21.5


def test_questions_read_without_changing(tools: Toolset, home: SimulatedHome) -> None:
    answer = run(tools, "HassGetState", name="Front Door", state="locked")
    assert answer == {"state": "locked", "matched": ["Front Door"], "unmatched": []}
    sensors = run(tools, "HassGetState", name="Outside Temperature")
    assert sensors["entities"] == [
        {"name": "Outside Temperature", "area": "Garage", "state": "42", "unit": "°F"}
    ]
    assert run(tools, "HassGetWeather", name="London")["condition"] == "rainy"
    temps = run(tools, "HassClimateGetTemperature", area="Office")
    assert temps == {"entities": [{"name": "Office Thermostat", "current_temperature": 1}]}
    assert state(home, "lock.front_door") == "locked"


def test_date_and_time_come_from_the_clock(home: SimulatedHome) -> None:
    intents = HomeIntents(home, now=lambda: datetime(2013, 9, 17, 1, 2))
    table = handlers(intents)
    assert table["HassGetCurrentDate"]() == {"date": "2013-09-17"}
    assert table["HassGetCurrentTime"]() == {"time": "01:02"}


def test_media_search_plays_or_says_not_found(tools: Toolset, home: SimulatedHome) -> None:
    run(tools, "HassMediaSearchAndPlay", search_query="the office", area="Living Room")
    tv = home.inventory.entity("media_player.tv")
    assert tv is not None and tv.state == "playing" and tv.attributes["media_title"] == "The Office"
    run(tools, "HassMediaPause")
    assert state(home, "media_player.tv") == "paused"
    with pytest.raises(HomeTargetError, match="no media found"):
        run(tools, "HassMediaSearchAndPlay", search_query="Does Not Exist")


def test_lists(tools: Toolset, home: SimulatedHome) -> None:
    run(tools, "HassShoppingListAddItem", item="apples")
    run(tools, "HassShoppingListCompleteItem", item="Apples")
    shopping = home.inventory.entity("todo.shopping_list")
    assert shopping is not None and shopping.attributes["items"][0]["status"] == "completed"
    run(tools, "HassListAddItem", item="milk", name="trader joe's")
    assert state(home, "todo.trader_joes") == "1"
    with pytest.raises(HomeTargetError, match="no item"):
        run(tools, "HassListCompleteItem", item="bread", name="Chores")


def test_timers_start_change_and_cancel(home: SimulatedHome) -> None:
    tools = home_toolset(backend=home, speaker_area="Kitchen")
    started = run(tools, "HassStartTimer", minutes=5, name="tea")
    assert started["timer"] == {"name": "tea", "seconds_left": 300, "active": True}
    tea = next(t for t in home.timers() if t.name == "tea")
    assert tea.area == "kitchen_id"
    run(tools, "HassPauseTimer", name="tea")
    run(tools, "HassIncreaseTimer", name="tea", minutes=1)
    status = run(tools, "HassTimerStatus", name="TEA")
    assert status == {"timers": [{"name": "tea", "seconds_left": 360, "active": False}]}
    run(tools, "HassDecreaseTimer", start_hours=1, minutes=5)
    hour = next(t for t in home.timers() if t.start_hours == 1)
    assert hour.total_seconds_left == 0  # 100 s left minus 5 min, floored at zero
    run(tools, "HassCancelTimer", name="tea")
    assert "tea" not in {t.name for t in home.timers()}
    with pytest.raises(HomeTargetError, match="no timer"):
        run(tools, "HassCancelTimer", name="tea")
    assert run(tools, "HassCancelAllTimers", area="Kitchen")["count"] == 1
    with pytest.raises(ToolArgumentsError):
        run(tools, "HassStartTimer", seconds=0)


def test_speaker_area_picks_here_for_a_domain_only_command(home: SimulatedHome) -> None:
    tools = home_toolset(backend=home, speaker_area="Bedroom")
    result = run(tools, "HassTurnOn", domain="light")
    assert [e["name"] for e in result["entities"]] == ["Bedroom Lamp"]
    assert state(home, "light.kitchen_ceiling") == "on"
