"""Tools: schemas from functions and data, validation, effects, execution, toolsets, registry."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import pytest
from llama_cpp.llama_grammar import json_schema_to_gbnf
from pydantic import Field

from edge_agent.backends._json_grammar import schema_to_gbnf
from edge_agent.errors import (
    ToolArgumentsError,
    ToolDefinitionError,
    ToolExecutionError,
    ToolTimeoutError,
    UnknownToolError,
    UnknownToolsetError,
)
from edge_agent.tools import (
    Tool,
    Toolset,
    available_toolsets,
    execute,
    get_toolset,
    register_toolset,
    tool,
)
from edge_agent.tools.registry import _unregister_toolset
from edge_agent.types import Effect


@tool(effect=Effect.ACTUATING, timeout_s=2.0)
def set_light(
    name: str,
    brightness: Annotated[int, Field(ge=0, le=100, description="Percent, 0-100")] = 100,
    color: Literal["red", "white"] | None = None,
    area: str | None = None,
) -> str:
    """Sets a light's brightness
    and color.

    Longer explanation that is not part of the description.

    Args:
        name: Name of the
            light to set.
        brightness: Overridden by the Annotated description.
        area (str): Area the light is in.

    Returns:
        A sentence.
    """
    return f"{name} at {brightness}% in {area}"


def _turn_off_effect(args: Mapping[str, Any]) -> Effect:
    return Effect.DANGEROUS if args.get("domain") in ("lock", "valve") else Effect.ACTUATING


TURN_OFF_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Name of a device"},
        "domain": {"type": "string", "enum": ["light", "lock", "valve"]},
        "position": {"type": "integer", "minimum": 0, "maximum": 100},
        "items": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "force": {"type": "boolean"},
    },
    "required": ["name"],
}


def _turn_off() -> Tool:
    return Tool.from_schema(
        "HassTurnOff",
        "Turns off a device",
        TURN_OFF_SCHEMA,
        handler=lambda **args: {"off": args["name"]},
        effect=_turn_off_effect,
    )


# --- schema from a function -------------------------------------------------------------------


def test_function_schema_is_closed_ordered_and_described() -> None:
    schema = set_light.parameters_schema()
    assert list(schema["properties"]) == ["name", "brightness", "color", "area"]
    assert schema["required"] == ["name"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["name"] == {"type": "string", "description": "Name of the light to set."}
    assert props["brightness"]["description"] == "Percent, 0-100"  # Annotated beats docstring
    assert (props["brightness"]["minimum"], props["brightness"]["maximum"]) == (0, 100)
    assert props["brightness"]["default"] == 100
    assert props["area"] == {"type": "string", "description": "Area the light is in."}


def test_optional_arguments_are_omitted_never_null() -> None:
    color = set_light.parameters_schema()["properties"]["color"]
    assert color == {"type": "string", "enum": ["red", "white"]}
    assert "null" not in str(set_light.parameters_schema())
    assert "title" not in set_light.parameters_schema()


def test_description_is_the_first_paragraph() -> None:
    assert set_light.name == "set_light"
    assert set_light.description == "Sets a light's brightness and color."


def test_name_override_and_argument_names_that_shadow_basemodel() -> None:
    @tool(effect=Effect.READ_ONLY, name="Lookup")
    def lookup(schema: str, json: int = 1, model_id: str = "m") -> str:
        """Looks up."""
        return f"{schema}{json}{model_id}"

    assert lookup.name == "Lookup"
    assert list(lookup.parameters_schema()["properties"]) == ["schema", "json", "model_id"]
    assert lookup.run({"schema": "s", "json": 2}) == "s2m"


@pytest.mark.parametrize(
    ("fn_source", "fragment"),
    [
        ("def f(*names: str) -> None: ...", "must be by keyword"),
        ("def f(**kw: str) -> None: ...", "must be by keyword"),
        ("def f(x) -> None: ...", "has no type"),
        ("class C(enum.Enum):\n    A = 'a'\ndef f(x: C) -> None: ...", "use Literal"),
    ],
)
def test_unsupported_signatures_are_rejected(fn_source: str, fragment: str) -> None:
    namespace: dict[str, Any] = {}
    exec("import enum\n" + fn_source, namespace)
    with pytest.raises(ToolDefinitionError, match=fragment):
        tool(effect=Effect.READ_ONLY)(namespace["f"])


def test_bad_tool_name_is_rejected() -> None:
    with pytest.raises(ToolDefinitionError, match="tool name"):
        tool(effect=Effect.READ_ONLY, name="has space")(lambda: None)


# --- validation -------------------------------------------------------------------------------


def test_validate_fills_defaults_and_leaves_out_unset_optionals() -> None:
    assert set_light.validate({"name": "lamp"}) == {"name": "lamp", "brightness": 100}
    assert set_light.validate({"name": "lamp", "area": None}) == {"name": "lamp", "brightness": 100}
    assert set_light.validate({"name": "lamp", "brightness": "40"})["brightness"] == 40


def test_validate_names_every_bad_field() -> None:
    with pytest.raises(ToolArgumentsError) as err:
        set_light.validate({"name": 3, "brightness": 150, "colour": "red"})
    message = str(err.value)
    assert message.startswith("invalid arguments for set_light:")
    assert "name: Input should be a valid string (got 3)" in message
    assert "brightness: Input should be less than or equal to 100 (got 150)" in message
    assert "colour: unknown argument (allowed: name, brightness, color, area)" in message


def test_validate_reports_missing_enum_and_non_object() -> None:
    with pytest.raises(ToolArgumentsError, match="name: required argument missing"):
        set_light.validate({})
    with pytest.raises(ToolArgumentsError, match=r"color: Input should be 'red' or 'white'"):
        set_light.validate({"name": "x", "color": "blue"})
    with pytest.raises(ToolArgumentsError, match="must be an object, got list"):
        set_light.validate(["lamp"])


def test_run_validates_before_calling() -> None:
    assert set_light.run({"name": "lamp", "area": "kitchen"}) == "lamp at 100% in kitchen"
    with pytest.raises(ToolArgumentsError):
        set_light.run({"brightness": 1})


# --- schema from data -------------------------------------------------------------------------


def test_schema_tool_round_trips_its_schema() -> None:
    schema = _turn_off().parameters_schema()
    assert list(schema["properties"]) == list(TURN_OFF_SCHEMA["properties"])  # type: ignore[call-overload]
    assert schema["required"] == ["name"]
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["domain"] == {"type": "string", "enum": ["light", "lock", "valve"]}
    assert props["position"] == {"type": "integer", "minimum": 0, "maximum": 100}
    assert props["items"] == {"type": "array", "items": {"type": "string"}, "maxItems": 2}
    assert props["name"]["description"] == "Name of a device"


def test_schema_tool_validates_like_its_schema() -> None:
    t = _turn_off()
    assert t.validate({"name": "door", "domain": "lock"}) == {"name": "door", "domain": "lock"}
    for bad, field in [
        ({"name": "d", "domain": "garage"}, "domain"),
        ({"name": "d", "position": 101}, "position"),
        ({"name": "d", "position": -1}, "position"),
        ({"name": "d", "items": ["a", "b", "c"]}, "items"),
        ({"name": "d", "items": [1]}, "items.0"),
        ({"name": "d", "force": "maybe"}, "force"),
        ({"name": "d", "extra": 1}, "extra"),
        ({"domain": "light"}, "name"),
    ]:
        with pytest.raises(ToolArgumentsError, match=rf"\b{field}: "):
            t.validate(bad)


def test_effect_is_a_function_of_the_call() -> None:
    t = _turn_off()
    assert t.effect_of(t.validate({"name": "hall", "domain": "light"})) is Effect.ACTUATING
    assert t.effect_of(t.validate({"name": "front", "domain": "lock"})) is Effect.DANGEROUS
    assert set_light.effect_of({"name": "x"}) is Effect.ACTUATING


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "array"}, "must be an object"),
        ({"properties": {"a": {"type": "string", "pattern": "x"}}}, "unsupported schema keywords"),
        ({"properties": {"a": {"type": "object"}}}, "unsupported type 'object'"),
        ({"properties": {"a": {"type": "array"}}}, "needs 'items'"),
        ({"properties": {"a": {"enum": []}}}, "empty enum"),
        ({"properties": {}, "required": ["a"]}, "not in properties"),
    ],
)
def test_unsupported_schemas_are_rejected(schema: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ToolDefinitionError, match=fragment):
        Tool.from_schema("T", "t", schema, handler=lambda: None, effect=Effect.READ_ONLY)


def test_schema_with_a_property_named_title_keeps_it() -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    t = Tool.from_schema("Note", "n", schema, handler=lambda **a: a, effect=Effect.ACTUATING)
    assert t.parameters_schema()["properties"] == {"title": {"type": "string"}}


# --- toolsets, call schema, grammar, prompt ---------------------------------------------------


def test_toolset_lookup_and_unknown_names() -> None:
    ts = Toolset("demo", [set_light, _turn_off()])
    assert ts.names == ["set_light", "HassTurnOff"]
    assert ts.get("HassTurnOff").name == "HassTurnOff"
    assert "set_light" in ts and len(ts) == 2
    with pytest.raises(UnknownToolError, match="did you mean HassTurnOff"):
        ts.get("HassTurnOf")
    with pytest.raises(UnknownToolError, match="it has: set_light, HassTurnOff"):
        ts.get("Weather")


def test_toolset_rejects_duplicates_and_subsets_in_order() -> None:
    with pytest.raises(ToolDefinitionError, match="two tools named 'set_light'"):
        Toolset("demo", [set_light, set_light])
    ts = Toolset("demo", [set_light, _turn_off()], description="d", prompt="p")
    sub = ts.subset(["HassTurnOff"])
    assert sub.names == ["HassTurnOff"] and sub.prompt == "p"
    with pytest.raises(UnknownToolError):
        ts.subset(["nope"])


def test_call_schema_is_a_union_of_name_and_arguments() -> None:
    schema = Toolset("demo", [set_light, _turn_off()]).call_schema()
    first, second = schema["anyOf"]
    assert first["properties"]["name"] == {"const": "set_light"}
    assert first["properties"]["arguments"] == set_light.parameters_schema()
    assert first["required"] == ["name", "arguments"]
    assert first["additionalProperties"] is False
    assert second["properties"]["name"] == {"const": "HassTurnOff"}
    with pytest.raises(ToolDefinitionError, match="no tools"):
        Toolset("empty", []).call_schema()


def test_call_schema_converts_to_gbnf() -> None:
    import json

    schema = Toolset("demo", [set_light, _turn_off()]).call_schema()
    for grammar in (json_schema_to_gbnf(json.dumps(schema)), schema_to_gbnf(schema)):
        assert "root ::=" in grammar
        assert '"\\"set_light\\""' in grammar and '"\\"HassTurnOff\\""' in grammar
        assert '"\\"red\\""' in grammar and '"\\"valve\\""' in grammar
        assert "null" not in grammar


def test_describe_compact_is_one_line_per_tool() -> None:
    ts = Toolset("demo", [set_light, _turn_off()])
    assert ts.describe_compact().splitlines() == [
        'set_light(name: str, brightness?: int 0..100, color?: "red"|"white", area?: str)'
        " — Sets a light's brightness and color.",
        'HassTurnOff(name: str, domain?: "light"|"lock"|"valve", position?: int 0..100,'
        " items?: list[str], force?: bool) — Turns off a device",
    ]


# --- execution --------------------------------------------------------------------------------


def test_execute_returns_the_result() -> None:
    assert execute(_turn_off(), {"name": "fan"}) == {"off": "fan"}


def test_execute_times_out_without_waiting_for_a_hung_tool() -> None:
    release = threading.Event()
    hung = Tool.from_schema(
        "Hang", "hangs", {}, handler=lambda: release.wait(10), effect=Effect.READ_ONLY
    )
    start = time.monotonic()
    with pytest.raises(ToolTimeoutError, match="Hang did not finish within 0.2 s"):
        execute(hung, {}, timeout_s=0.2)
    assert time.monotonic() - start < 1.0
    release.set()


def test_execute_uses_the_tools_own_timeout() -> None:
    release = threading.Event()
    slow = Tool.from_schema(
        "Slow", "s", {}, handler=lambda: release.wait(10), effect=Effect.READ_ONLY, timeout_s=0.1
    )
    with pytest.raises(ToolTimeoutError, match="0.1 s"):
        execute(slow, {})
    release.set()


def test_execute_contains_exceptions() -> None:
    def boom() -> None:
        raise OSError("disk on fire")

    broken = Tool.from_schema("Boom", "b", {}, handler=boom, effect=Effect.READ_ONLY)
    with pytest.raises(ToolExecutionError, match="Boom failed: OSError: disk on fire") as err:
        execute(broken, {})
    assert isinstance(err.value.__cause__, OSError)


def test_execute_passes_tool_errors_through_for_the_model() -> None:
    def refuse() -> None:
        raise ToolExecutionError("no light named 'attic'; known: kitchen, hall")

    t = Tool.from_schema("Refuse", "r", {}, handler=refuse, effect=Effect.READ_ONLY)
    with pytest.raises(ToolExecutionError, match=r"^no light named 'attic'"):
        execute(t, {})


def test_execute_validates_before_running() -> None:
    calls: list[dict[str, Any]] = []
    t = Tool.from_schema(
        "Rec", "r", TURN_OFF_SCHEMA, handler=lambda **a: calls.append(a), effect=Effect.ACTUATING
    )
    with pytest.raises(ToolArgumentsError):
        execute(t, {"name": "x", "position": 500})
    assert calls == []


# --- registry ---------------------------------------------------------------------------------


@pytest.fixture
def demo_name() -> Iterator[str]:
    yield "demo-test"
    _unregister_toolset("demo-test")


def test_registry_builds_lazily_once(demo_name: str) -> None:
    built: list[int] = []

    def factory() -> Toolset:
        built.append(1)
        return Toolset(demo_name, [set_light])

    register_toolset(demo_name, factory)
    assert built == []
    assert demo_name in available_toolsets()
    assert get_toolset(demo_name) is get_toolset(demo_name)
    assert built == [1]


def test_registry_rejects_duplicates_and_unknown_names(demo_name: str) -> None:
    register_toolset(demo_name, Toolset(demo_name, [set_light]))
    with pytest.raises(ToolDefinitionError, match="already registered"):
        register_toolset(demo_name, Toolset(demo_name, [set_light]))
    with pytest.raises(ToolDefinitionError, match="already registered"):
        register_toolset("system", Toolset("system", [set_light]))
    with pytest.raises(UnknownToolsetError, match="no toolset named 'nope'; available: .*system"):
        get_toolset("nope")


def test_builtin_system_toolset_is_registered() -> None:
    assert {"home", "system"} <= set(available_toolsets())
    system = get_toolset("system")
    assert system.name == "system"
    assert all(t.effect_of({}) is Effect.READ_ONLY for t in system)
