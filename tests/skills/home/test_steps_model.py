"""The issue's two compound requests with the real default model and the shipped home
adapter, through the runtime, on the simulated home: both entities change."""

import pytest

from edge_agent.runtime import open_runtime
from edge_agent.settings import load_settings
from edge_agent.skills.home.inventory import Inventory
from edge_agent.skills.home.simulated import SimulatedHome
from edge_agent.skills.home.toolset import home_toolset

pytestmark = pytest.mark.integration


def home_with(states: dict[str, str]) -> SimulatedHome:
    inventory = Inventory.default().model_copy(deep=True)
    for e in inventory.entities:
        if e.domain == "light" and e.area in ("kitchen_id", "living_room_id"):
            e.state = states[e.area]
    return SimulatedHome(inventory)


@pytest.fixture(scope="module")
def runtime():
    rt = open_runtime(load_settings(profile="generic-x86-64", threads=2, log_enabled=False))
    yield rt
    rt.close()


@pytest.mark.parametrize(
    ("request_", "start", "end"),
    [
        (
            "Turn on the kitchen light and then turn off the living room light",
            {"kitchen_id": "off", "living_room_id": "on"},
            {"light.kitchen_ceiling": "on", "light.living_room_lamp": "off"},
        ),
        (
            "turn on both the kitchen and living room lights",
            {"kitchen_id": "off", "living_room_id": "off"},
            {"light.kitchen_ceiling": "on", "light.living_room_lamp": "on"},
        ),
    ],
)
def test_both_parts_of_a_compound_request_change_the_home(runtime, request_, start, end):
    assert runtime.adapter_of("home") is not None  # the shipped adapter: one call per turn
    home = home_with(start)
    result = runtime.agent(home_toolset(backend=home)).run(request_)
    assert len(result.tool_calls) == 2 and result.outcome == "answered", result
    assert {k: home.inventory.entity(k).state for k in end} == end, result
