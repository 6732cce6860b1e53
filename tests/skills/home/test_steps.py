"""The home splitter: which requests are several steps, and which only look like it."""

import time

import pytest

from edge_agent.skills.home.inventory import Area, Entity, Inventory
from edge_agent.skills.home.steps import home_splitter
from edge_agent.skills.home.toolset import home_toolset

HOME = Inventory.default().model_copy(deep=True)
HOME.areas.append(Area(id="hallway_id", name="Hallway"))
HOME.entities += [
    Entity(id="light.salt_and_pepper", name="Salt and Pepper Lamp", area="kitchen_id"),
    Entity(id="light.hallway", name="Hallway Light", area="hallway_id"),
]
split = home_splitter(lambda: HOME)

SPLITS = {
    # the two examples
    "Turn on the kitchen light and then turn off the living room light": [
        "Turn on the kitchen light", "turn off the living room light"],
    "turn on both the kitchen and living room lights": [
        "turn on the kitchen lights", "turn on the living room lights"],
    # sequencing words
    "turn on the kitchen light, then lock the front door": [
        "turn on the kitchen light", "lock the front door"],
    "turn on the kitchen light then lock the front door": [
        "turn on the kitchen light", "lock the front door"],
    "close the curtain left after that turn off the garage light": [
        "close the curtain left", "turn off the garage light"],
    "open the shade left and also turn on the ceiling fan": [
        "open the shade left", "turn on the ceiling fan"],
    "lock the front door; unlock the back door": ["lock the front door", "unlock the back door"],
    "Turn on the kitchen light. Then lock the front door.": [
        "Turn on the kitchen light.", "lock the front door."],
    "please turn off the garage light and set the thermostat to 20 degrees": [
        "please turn off the garage light", "set the thermostat to 20 degrees"],
    "add milk to my shopping list and turn off the kitchen lights": [
        "add milk to my shopping list", "turn off the kitchen lights"],
    "what is the temperature and turn on the ceiling fan": [
        "what is the temperature", "turn on the ceiling fan"],
    # a verb after a name the home knows, with no "and" (home-llm's wording)
    "Turn off Kitchen ceiling close Curtain Left and lock Front Door": [
        "Turn off Kitchen ceiling", "close Curtain Left", "lock Front Door"],
    # one verb over targets the home knows
    "lock the front and back doors": ["lock the front doors", "lock the back doors"],
    "turn off the lights in the kitchen and the hallway": [
        "turn off the lights in the kitchen", "turn off the lights in the hallway"],
    "turn on the kitchen, living room and garage lights": [
        "turn on the kitchen lights", "turn on the living room lights",
        "turn on the garage lights"],
    "turn on the kitchen, living room, and hallway lights": [
        "turn on the kitchen lights", "turn on the living room lights",
        "turn on the hallway lights"],
    "Turn on the Ceiling Fan and Garage Light": [
        "Turn on the Ceiling Fan", "Turn on the Garage Light"],
    "turn on the kitchen light and the living room lamp": [
        "turn on the kitchen light", "turn on the living room lamp"],
    "turn on the upstairs and basement lights": [
        "turn on the upstairs lights", "turn on the basement lights"],
    "turn on the lights and the fans": ["turn on the lights", "turn on the fans"],
    "set the kitchen and hallway lights to 50%": [
        "set the kitchen lights to 50%", "set the hallway lights to 50%"],
    "Turn off Bedroom Lamp and Garage Light and close Curtain Right": [
        "Turn off Bedroom Lamp", "Turn off Garage Light", "close Curtain Right"],
    "what's the weather like in London and Los Angeles": [
        "what's the weather like in London", "what's the weather like in Los Angeles"],
    "switch on the bedroom switch and switch off the kitchen switch": [
        "switch on the bedroom switch", "switch off the kitchen switch"],
    "turn on the bedroom lamp lock the front door": [
        "turn on the bedroom lamp", "lock the front door"],
}  # fmt: skip

WHOLE = [
    "turn on the kitchen light",
    "add milk and eggs to the shopping list",
    "set the lights to red and blue",
    "play rock and roll in the living room",
    "set a timer for 5 minutes and 30 seconds",
    "turn on the salt and pepper lamp",
    "turn on the light and set it to 50%",  # "it" points back: one request
    "open and close the blinds",  # a bare verb is no step
    "turn off the light then",
    "turn the light on and then off",
    "I'm cold and the heating is off",
    "turn on the lights in the kitchen and the attic",  # no attic in this home
    "add bread and butter to Trader Joes",
    "set the thermostat to 20 and then 22",
    "turn on the tv set",
    "start the rover and dance",
]


@pytest.mark.parametrize(("request_", "steps"), SPLITS.items())
def test_compound_requests_split_into_their_steps(request_, steps):
    assert split(request_, None) == steps


@pytest.mark.parametrize("request_", WHOLE)
def test_single_requests_and_lookalikes_stay_whole(request_):
    assert split(request_, None) == [request_]


def test_the_splitter_reads_the_homes_current_names():
    home = Inventory.default().model_copy(deep=True)
    inventory = [home]
    splitter = home_splitter(lambda: inventory[0])
    said = "turn off the lights in the kitchen and the attic"
    assert splitter(said, None) == [said]
    grown = home.model_copy(deep=True)
    grown.areas.append(Area(id="attic_id", name="Attic"))
    inventory[0] = grown
    assert len(splitter(said, None)) == 2


def test_the_home_toolset_splits():
    tools = home_toolset()
    assert tools.split is not None
    assert len(tools.split("lock the front and back doors", None)) == 2


def test_splitting_takes_microseconds():
    requests = [*SPLITS, *WHOLE] * 20
    t0 = time.perf_counter()
    for r in requests:
        split(r, None)
    per_request_us = (time.perf_counter() - t0) / len(requests) * 1e6
    assert per_request_us < 2000
