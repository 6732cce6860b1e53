"""A tool's declared argument order is part of its schemas: it survives the sorted-key JSON
of sync and the host store, so a toolset rebuilt from the schemas alone writes a call's
arguments exactly as the device's grammar does, and the fingerprint tells two orders apart."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge_agent.errors import ToolDefinitionError
from edge_agent.prompt import call_json
from edge_agent.tools import ARGUMENT_ORDER, Tool, Toolset, fingerprint, tool
from edge_agent.types import Effect, ToolCall


@tool(effect=Effect.ACTUATING)
def set_dimmer(name: str, level: int = 100, fade_s: float = 0.0, color: str = "white") -> str:
    """Dims a light.

    Args:
        name: The light.
        level: Percent.
        fade_s: Seconds to fade over.
        color: Its colour.
    """
    return name


@tool(effect=Effect.ACTUATING)
def set_dimmer_sorted(
    name: str, color: str = "white", fade_s: float = 0.0, level: int = 100
) -> str:
    """Dims a light.

    Args:
        name: The light.
        color: Its colour.
        fade_s: Seconds to fade over.
        level: Percent.
    """
    return name


# A required argument declared after optional ones; its `required` list out of order too.
MOVE = Tool.from_schema(
    "move",
    "Moves a cover.",
    {
        "type": "object",
        "properties": {
            "zone": {"type": "string"},
            "speed": {"type": "integer"},
            "position": {"type": "integer"},
            "target": {"type": "string"},
        },
        "required": ["target", "position"],
    },
    handler=lambda **a: a,
    effect=Effect.ACTUATING,
)


def dimmer_set(*tools: Tool) -> Toolset:
    return Toolset("lights", tools or [set_dimmer, MOVE])


def through_the_store(schemas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the log's sync and the host store keep: canonical JSON, object keys sorted."""
    loaded: list[dict[str, Any]] = json.loads(json.dumps(schemas, sort_keys=True))
    return loaded


CALLS = [
    ToolCall(name="set_dimmer", arguments={"color": "red", "fade_s": 2, "level": 4, "name": "a"}),
    ToolCall(name="move", arguments={"target": "blind", "speed": 3, "zone": "s", "position": 50}),
]


def test_a_rebuilt_toolset_writes_calls_as_the_device_does() -> None:
    device = dimmer_set()
    host = Toolset.from_schemas("lights", through_the_store(device.schemas()))
    for call in CALLS:
        assert call_json(call, host) == call_json(call, device)
    assert call_json(CALLS[0], host).endswith(
        '{"name": "a", "level": 4, "fade_s": 2, "color": "red"}}'
    )
    assert call_json(CALLS[1], host).endswith(
        '{"position": 50, "target": "blind", "zone": "s", "speed": 3}}'
    )
    assert host.describe_compact() == device.describe_compact()
    assert host.fingerprint == device.fingerprint


def test_the_order_is_in_each_tools_schema() -> None:
    by_name = {s["name"]: s for s in dimmer_set().schemas()}
    assert by_name["set_dimmer"][ARGUMENT_ORDER] == ["name", "level", "fade_s", "color"]
    assert by_name["move"][ARGUMENT_ORDER] == ["zone", "speed", "position", "target"]


def test_the_fingerprint_changes_when_only_the_declared_order_changes() -> None:
    declared = dimmer_set(set_dimmer).schemas()
    alphabetical = dimmer_set(set_dimmer_sorted).schemas()
    alphabetical[0]["name"] = "set_dimmer"
    assert through_the_store(declared) != through_the_store(alphabetical)
    assert fingerprint(declared) != fingerprint(alphabetical)


def test_schemas_without_the_order_keep_the_order_they_are_given_in() -> None:
    """Older logs and a client's OpenAI function specs name no order: their properties' own
    order is the declared one (a device's log keeps it; the host guesses, see skill_data)."""
    schemas = dimmer_set().schemas()
    for s in schemas:
        del s[ARGUMENT_ORDER]
    rebuilt = Toolset.from_schemas("lights", schemas)
    assert call_json(CALLS[0], rebuilt) == call_json(CALLS[0], dimmer_set())
    assert [s[ARGUMENT_ORDER] for s in rebuilt.schemas()] == [
        s[ARGUMENT_ORDER] for s in dimmer_set().schemas()
    ]


@pytest.mark.parametrize(
    "order",
    [["name", "level", "fade_s"], ["name", "level", "fade_s", "color", "size"],
     ["name", "level", "level", "color"], "name level fade_s color", [1, 2, 3, 4]],
)  # fmt: skip
def test_an_order_that_does_not_name_each_argument_once_is_refused(order: Any) -> None:
    [schema] = dimmer_set(set_dimmer).schemas()
    schema[ARGUMENT_ORDER] = order
    with pytest.raises(ToolDefinitionError, match="argument order"):
        Toolset.from_schemas("lights", [schema])
