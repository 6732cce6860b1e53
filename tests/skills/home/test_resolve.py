"""Target resolution as Home Assistant's: names, aliases, device names, areas, floors, kinds;
and a vague action target spread over several areas is asked about, not acted on house-wide."""

from __future__ import annotations

from typing import Any

import pytest

from edge_agent.errors import HomeTargetError
from edge_agent.skills.home import SimulatedHome
from edge_agent.skills.home.backend import Target, resolve
from edge_agent.skills.home.intents import HomeIntents
from edge_agent.skills.home.inventory import inventory_from_fixtures
from edge_agent.skills.home.toolset import home_toolset
from edge_agent.tools import execute

HOME: dict[str, Any] = {
    "floors": [{"id": "up", "name": "Upstairs"}],
    "areas": [
        {"id": "kitchen", "name": "Kitchen", "aliases": ["Cookhouse"]},
        {"id": "bedroom", "name": "Bedroom", "floor": "up"},
        {"id": "office", "name": "Office"},
    ],
    "entities": [
        {"id": "light.kitchen", "name": "Kitchen Light", "area": "kitchen", "state": "on"},
        {"id": "light.ceiling_k", "name": "Ceiling", "area": "kitchen", "state": "on"},
        {"id": "light.ceiling_b", "name": "Ceiling", "area": "bedroom", "state": "on"},
        {"id": "lock.front", "name": "Front Door", "device": "Front Entrance",
         "state": "locked"},
        {"id": "lock.back", "name": "Back Door", "state": "locked"},
        {"id": "media_player.tv", "name": "TV", "area": "kitchen", "state": "paused"},
        {"id": "media_player.radio", "name": "Radio", "area": "bedroom", "state": "playing"},
        {"id": "switch.kettle", "name": "Kettle", "area": "kitchen", "state": "off"},
    ],
}  # fmt: skip


@pytest.fixture
def home() -> SimulatedHome:
    return SimulatedHome(inventory_from_fixtures(HOME))


def ids(home: SimulatedHome, **target: Any) -> list[str]:
    return [e.id for e in resolve(home.inventory, Target(**target))]


def states(home: SimulatedHome, *entity_ids: str) -> list[str]:
    return [e.state for i in entity_ids if (e := home.inventory.entity(i)) is not None]


def test_names_aliases_device_names_and_names_said_with_their_kind(home: SimulatedHome) -> None:
    assert ids(home, name="front entrance") == ["lock.front"]  # the device's name
    assert ids(home, name="Back Door Lock") == ["lock.back"]  # name + its kind
    assert ids(home, name="lock.back") == ["lock.back"]
    with pytest.raises(HomeTargetError, match="candidates"):
        ids(home, name="Back Door Light")  # a kind it is not


def test_area_by_alias_floor_domain_and_device_class(home: SimulatedHome) -> None:
    assert ids(home, area="cookhouse", domain=["light"]) == ["light.kitchen", "light.ceiling_k"]
    assert ids(home, floor="upstairs") == ["light.ceiling_b", "media_player.radio"]
    with pytest.raises(HomeTargetError, match="no area named"):
        ids(home, area="Attic")


def intents(home: SimulatedHome, request: str | None, area: str | None = None) -> HomeIntents:
    acting = HomeIntents(home, speaker_area=area)
    acting.request = request
    return acting


def test_a_vague_target_over_several_areas_is_asked_about(home: SimulatedHome) -> None:
    with pytest.raises(HomeTargetError, match="which light.*Bedroom, Kitchen"):
        intents(home, "turn off the light").turn_off(domain="light")
    lights = ("light.kitchen", "light.ceiling_k", "light.ceiling_b")
    assert states(home, *lights) == ["on", "on", "on"]
    # the speaker's area has none of them: still a question
    with pytest.raises(HomeTargetError, match="which light"):
        intents(home, "lights off", area="Office").turn_off(domain="light")


def test_the_speaker_area_or_a_named_area_resolves_it(home: SimulatedHome) -> None:
    intents(home, "turn off the lights", area="Bedroom").turn_off(domain="light")
    assert states(home, "light.kitchen", "light.ceiling_b") == ["on", "off"]
    intents(home, "kitchen lights off").turn_off(domain="light", area="Kitchen")
    assert states(home, "light.kitchen", "light.ceiling_k") == ["off", "off"]


@pytest.mark.parametrize(
    ("request_text", "area"),
    [
        ("turn off all the lights", "Bedroom"),  # "all" reaches past the speaker's area
        ("switch off every light", "Bedroom"),
        ("lights off in the whole house", None),
        (None, None),  # no request known (a direct API call): HA's intent semantics
    ],
)
def test_all_every_or_a_direct_api_call_acts_on_all(
    home: SimulatedHome, request_text: str | None, area: str | None
) -> None:
    intents(home, request_text, area=area).turn_off(domain="light")
    assert states(home, "light.kitchen", "light.ceiling_k", "light.ceiling_b") == ["off"] * 3


def test_a_shared_name_asks_which_unless_the_area_says(home: SimulatedHome) -> None:
    with pytest.raises(HomeTargetError, match="several devices are called 'Ceiling'"):
        intents(home, "turn off the ceiling").turn_off(name="Ceiling")
    intents(home, "turn off the ceiling", area="Kitchen").turn_off(name="Ceiling")
    assert states(home, "light.ceiling_k", "light.ceiling_b") == ["off", "on"]


def test_pause_means_what_plays_and_resume_what_is_paused(home: SimulatedHome) -> None:
    intents(home, "pause").media("media_pause")()
    assert states(home, "media_player.tv", "media_player.radio") == ["paused", "paused"]
    with pytest.raises(HomeTargetError, match="which media player"):
        intents(home, "resume").media("media_play")()  # now both are paused, in two areas


def test_set_volume_takes_a_percentage_and_stores_a_fraction(home: SimulatedHome) -> None:
    intents(home, "volume 50 on the tv").set_volume(name="TV", volume_level=50)
    tv = home.inventory.entity("media_player.tv")
    assert tv is not None and tv.attributes["volume_level"] == 0.5


def test_the_toolset_asks_and_the_policy_sees_no_reach(home: SimulatedHome) -> None:
    tools = home_toolset(backend=home)
    assert tools.context is not None
    tools.context("turn off the light", None)
    tool = tools.get("HassTurnOff")
    with pytest.raises(HomeTargetError, match="which light"):
        execute(tool, {"domain": "light"})
    assert tool.grounding.reach is not None and tool.grounding.reach({"domain": "light"}) == 0
    tools.context("turn off all the lights", None)
    assert tool.grounding.reach({"domain": "light"}) == 3


def test_check_target_asks_before_a_backend_runs_the_intent_itself(home: SimulatedHome) -> None:
    acting = intents(home, "turn off the ceiling")
    with pytest.raises(HomeTargetError, match="several devices are called 'Ceiling'"):
        acting.check_target("HassTurnOff", {"name": "Ceiling"})
    with pytest.raises(HomeTargetError, match="which light"):
        acting.check_target("HassLightSet", {"brightness": 20})
    acting.check_target("HassTurnOn", {"name": "Kettle"})
    acting.check_target("HassMediaPause", {})  # one player plays: it is the one meant
    acting.check_target("HassStartTimer", {"minutes": 5})  # no device target
    assert states(home, "light.ceiling_k", "light.ceiling_b", "switch.kettle") == ["on"] * 2 + [
        "off"
    ]
