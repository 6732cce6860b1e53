"""A toolset's schemas: what the log keeps, what the host rebuilds the toolset from."""

from __future__ import annotations

import pytest

from edge_agent.errors import ToolDefinitionError, ToolExecutionError
from edge_agent.skills.home.toolset import home_toolset
from edge_agent.tools import Toolset, execute, fingerprint
from tests.skills.thermostat_skill import read_sensor, set_temperature


def test_schemas_round_trip_into_a_toolset_that_validates_the_same_calls() -> None:
    original = Toolset("thermostat", [set_temperature, read_sensor])
    rebuilt = Toolset.from_schemas("thermostat", original.schemas())
    assert rebuilt.schemas() == original.schemas()
    assert rebuilt.fingerprint == original.fingerprint == fingerprint(original.schemas())
    args = {"room": "kitchen", "celsius": "21"}
    assert rebuilt.get("set_temperature").validate(args) == original.get(
        "set_temperature"
    ).validate(args)
    assert rebuilt.get("set_temperature").effect_of({}).value == "actuating"


def test_a_rebuilt_tool_never_runs_where_it_was_not_defined() -> None:
    rebuilt = Toolset.from_schemas("thermostat", Toolset("t", [read_sensor]).schemas())
    with pytest.raises(ToolExecutionError, match="runs where its toolset was defined"):
        execute(rebuilt.get("read_sensor"), {"name": "kitchen"})


def test_a_handler_factory_gives_rebuilt_tools_their_handlers() -> None:
    seen: list[str] = []
    rebuilt = Toolset.from_schemas(
        "t",
        Toolset("t", [read_sensor]).schemas(),
        handler=lambda name: lambda **a: seen.append(name),
    )
    execute(rebuilt.get("read_sensor"), {"name": "kitchen"})
    assert seen == ["read_sensor"]


def test_the_fingerprint_changes_with_any_schema_change() -> None:
    base = Toolset("t", [set_temperature, read_sensor])
    schemas = base.schemas()
    schemas[0]["parameters"]["properties"]["celsius"]["description"] = "Fahrenheit, really"
    assert fingerprint(schemas) != base.fingerprint
    assert Toolset("other name", [set_temperature, read_sensor]).fingerprint == base.fingerprint


def test_an_argument_dependent_effect_is_not_in_the_schema() -> None:
    home = home_toolset()
    assert "effect" not in home.schemas()[0]  # depends on what the call resolves to
    assert len(home.fingerprint) == 32


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"description": "no name"}, "needs a name"),
        ({"name": "x", "effect": "explosive"}, "unknown effect"),
    ],
)
def test_bad_schemas_are_typed_errors(schema: dict[str, object], problem: str) -> None:
    with pytest.raises(ToolDefinitionError, match=problem):
        Toolset.from_schemas("t", [schema])
