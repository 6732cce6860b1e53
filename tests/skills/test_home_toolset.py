"""The `home` toolset: one tool per intent, schemas that accept the dataset, effects, handlers."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import HomeTargetError, ToolArgumentsError
from edge_agent.policy import Policy, grounded
from edge_agent.skills.home import SimulatedHome
from edge_agent.skills.home.dataset import intent_definitions, load_rows, load_split
from edge_agent.skills.home.intents import HomeIntents
from edge_agent.skills.home.toolset import handlers, home_toolset
from edge_agent.tools import Toolset, execute, get_toolset
from edge_agent.types import Effect, ToolCall


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
    # HA's light service: 30 % is brightness round(255 * 0.3), a colour name an RGB colour
    assert (lamp.attributes["brightness"], lamp.attributes["rgb_color"]) == (76, [255, 0, 0])
    with pytest.raises(ToolArgumentsError, match="brightness or color"):
        run(tools, "HassLightSet", name="Bedroom Lamp")
    run(tools, "HassSetPosition", name="Bedroom Curtain", position=40)
    assert state(home, "cover.bedroom") == "open"
    run(tools, "HassSetVolume", name="TV", volume_level=20)
    assert home.inventory.entity("media_player.tv").attributes["volume_level"] == 0.2  # type: ignore[union-attr]
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


# --- grounding and reach: what the policy asks of each intent (issue 13) -------------------

KITCHEN_LIGHTS = {"area": "Kitchen", "domain": "light"}


@pytest.mark.parametrize(
    ("intent", "args", "speaker_area", "reach"),
    [
        ("HassTurnOff", KITCHEN_LIGHTS, None, 3),
        ("HassTurnOff", {"domain": "light"}, None, 7),  # every light of the house
        ("HassTurnOff", {"domain": "light"}, "Bedroom", 1),  # the speaker's area narrows it
        ("HassTurnOff", {"area": "Kitchen"}, None, 4),  # 3 lights and a switch, no sensor
        ("HassTurnOn", {}, None, None),  # names no target at all
        ("HassTurnOn", {"name": "all"}, None, None),
        ("HassTurnOn", {"name": "Nothing Here"}, None, 0),  # will fail; acts on nothing
        ("HassSetPosition", {"area": "Living Room", "position": 50}, None, 2),
        ("HassLightSet", {"brightness": 0}, None, 7),
        ("HassMediaPause", {}, None, 1),
        ("HassCancelAllTimers", {}, None, None),
        ("HassCancelAllTimers", {"area": "Kitchen"}, None, 1),
        ("HassCancelTimer", {"name": "pizza"}, None, 1),
        ("HassShoppingListAddItem", {"item": "apples"}, None, 1),
    ],
)
def test_reach_counts_what_a_call_acts_on(
    home: SimulatedHome,
    intent: str,
    args: dict[str, Any],
    speaker_area: str | None,
    reach: int | None,
) -> None:
    tool = home_toolset(backend=home, speaker_area=speaker_area).get(intent)
    assert tool.grounding.reach is not None
    assert tool.grounding.reach(tool.validate(args)) == reach


def _asked(request: str, intent: str, action: str, speaker: str | None = None, **args: Any) -> Any:
    return pytest.param((request, speaker, intent, args, action), id=f"{intent}: {request}")


@pytest.mark.parametrize(
    "case",
    [
        _asked("turn on the kitchen lights", "HassTurnOn", "allow", **KITCHEN_LIGHTS),
        _asked("turn on the kitchen lights", "HassTurnOff", "confirm", **KITCHEN_LIGHTS),
        _asked("kitchen lights off", "HassTurnOff", "allow", **KITCHEN_LIGHTS),
        _asked("lights off", "HassTurnOff", "allow", speaker="Kitchen", domain="light"),
        _asked("turn off all the lights", "HassTurnOff", "confirm", domain="light"),  # 7 lights
        _asked("turn off the kitchen lights", "HassTurnOff", "confirm", area="Kitchen"),
        _asked("turn on the kitchen lights", "HassTurnOn", "confirm", domain="fan"),
        _asked("open the curtain left", "HassTurnOn", "allow", name="Curtain Left"),
        _asked("open the curtains", "HassTurnOn", "allow", speaker="Living Room", domain="cover"),
        _asked("close the curtain left", "HassTurnOn", "confirm", name="Curtain Left"),
        _asked("set the bedroom lamp to max", "HassLightSet", "allow", name="Bedroom Lamp",
               brightness=100),
        _asked("set the bedroom lamp to max", "HassLightSet", "confirm", name="Bedroom Lamp",
               brightness=0),
        _asked("add 5 minutes to the pizza timer", "HassIncreaseTimer", "allow", name="pizza",
               minutes=5),
        _asked("add 5 minutes to the pizza timer", "HassDecreaseTimer", "confirm", name="pizza",
               minutes=5),
        _asked("pause the tv", "HassMediaPause", "allow", name="TV"),
        _asked("skip this song", "HassMediaPrevious", "confirm", speaker="Living Room"),
        _asked("cancel all kitchen timers", "HassCancelAllTimers", "allow", area="Kitchen"),
        _asked("cancel all timers", "HassCancelAllTimers", "confirm"),  # every timer
        _asked("how long is left on my timer?", "HassCancelTimer", "confirm"),
        _asked("add apples to my shopping list", "HassShoppingListAddItem", "allow",
               item="apples"),
        _asked("add apples to my shopping list", "HassShoppingListAddItem", "confirm",
               item="gift cards"),
        _asked("remove apples from my shopping list", "HassShoppingListAddItem", "confirm",
               item="apples"),
        _asked("broadcast that dinner is ready", "HassBroadcast", "allow",
               message="dinner is ready"),
        _asked("broadcast that dinner is ready", "HassBroadcast", "confirm",
               message="the code is 1234"),
        _asked("start a 5 minute timer", "HassStartTimer", "allow", minutes=5),
        _asked("set a 5 minute timer to open the door", "HassStartTimer", "confirm", minutes=5,
               conversation_command="unlock the front door"),
    ],
)  # fmt: skip
def test_the_policy_allows_what_the_request_asks_and_no_more(
    home: SimulatedHome, case: tuple[str, str | None, str, dict[str, Any], str]
) -> None:
    request, speaker_area, intent, args, action = case
    toolset = home_toolset(backend=home)
    assert toolset.context is not None
    toolset.context(request, speaker_area)  # as the agent does: sets the speaker's area
    tool = toolset.get(intent)
    call = ToolCall(name=intent, arguments=tool.validate(args))
    area = [speaker_area] if speaker_area else []
    decision = Policy().decide_call(call, tool, toolset.names, user_request=request, context=area)
    assert decision.action == action, decision.reason


def test_naming_an_object_asks_for_no_action(tools: Toolset) -> None:
    """ "timer", "list", "volume"... name what a request is about, not what to do with it."""
    request = "tell me about the pizza timer, my shopping list, the chores list and the tv"
    for row in {r.intent: r for r in load_rows()}.values():
        tool = tools.get(row.intent)
        call = ToolCall(name=row.intent, arguments=tool.validate(row.call().arguments))
        if tool.effect_of(call.arguments) is not Effect.READ_ONLY:
            assert not grounded(call, request, tool), row.intent


def test_ordinary_requests_are_rarely_sent_to_confirmation() -> None:
    """The gold calls of the HA test split: what the defence costs ordinary requests. Calls
    confirmed because they reach more than 3 entities ("all the lights") are counted apart:
    that is the rule, not a miss."""
    rows = load_split("test")
    counts: Counter[str] = Counter()
    for row in rows:
        toolset = home_toolset(inventory=row.inventory())
        assert toolset.context is not None
        toolset.context(row.sentence, row.speaker_area)
        tool = toolset.get(row.intent)
        call = ToolCall(name=row.intent, arguments=tool.validate(row.call().arguments))
        area = [row.speaker_area] if row.speaker_area else []
        decision = Policy().decide_call(
            call, tool, toolset.names, user_request=row.sentence, context=area
        )
        wide = "more than 3" in decision.reason or "names no target" in decision.reason
        dangerous = tool.effect_of(call.arguments) is Effect.DANGEROUS
        counts[decision.action + (":wide" if wide else ":dangerous" if dangerous else "")] += 1
    assert counts["deny"] == 0
    assert counts["confirm"] <= 3, counts  # not asked for in words we know: 3 of 150 today
    assert counts["allow"] >= 110, counts
