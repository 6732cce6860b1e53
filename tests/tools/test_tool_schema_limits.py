"""A tool's schema is held to the grammar's limits when the tool is defined (issue 13): a
toolset tool or a client's tool past one is a ToolDefinitionError naming it."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import Field

from edge_agent.errors import ToolDefinitionError
from edge_agent.tools import Tool, tool
from edge_agent.types import Effect


def from_schema(parameters: Any) -> Tool:
    return Tool.from_schema("t", "d", parameters, handler=print, effect=Effect.READ_ONLY)


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"type": "object", "properties": {"a": {"type": "string", "maxLength": 30000}}},
         "t: cannot constrain output to this JSON schema: #/properties/a/maxLength is 30000, "
         "over the limit of 512"),
        ({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"},
                                                 "maxItems": 30000}}},
         "#/properties/a/maxItems is 30000, over the limit of 128"),
        ({"type": "object", "properties": ["a"]}, "#/properties must be an object of schemas"),
        ({"type": "object", "properties": {"a": {"type": "integer"}}, "required": 5},
         "#/required must be a list of property names"),
    ],
)  # fmt: skip
def test_a_tool_schema_past_a_limit_or_malformed_is_a_definition_error(
    parameters: Any, named: str
) -> None:
    with pytest.raises(ToolDefinitionError) as exc:
        from_schema(parameters)
    assert named in str(exc.value)


def test_a_typed_function_past_a_limit_is_a_definition_error() -> None:
    def note(text: Annotated[str, Field(max_length=30000)]) -> str:
        """Writes a note."""
        return text

    with pytest.raises(ToolDefinitionError, match="maxLength is 30000, over the limit of 512"):
        tool(effect=Effect.READ_ONLY)(note)


def test_a_tool_within_the_limits_is_defined() -> None:
    ok = from_schema({"type": "object", "properties": {"a": {"type": "string", "maxLength": 512}}})
    assert ok.validate({"a": "x" * 512}) == {"a": "x" * 512}
