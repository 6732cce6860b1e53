"""A schema past a limit or malformed is a 400 in OpenAI's shape (issue 13), whether it comes
as ``response_format`` or as a client tool: never a 500, a traceback or a dead server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from edge_agent.backends.fake import ScriptedBackend
from edge_agent.backends.llama_cpp import LlamaCppBackend
from tests.server.test_server import _error, _post, running
from tests.tinymodel import TinyModel

RESPONSE = "response_format.json_schema.schema"

LIMITS = [
    ({"type": "string", "maxLength": 30000}, "maxLength is 30000, over the limit of 512"),
    ({"type": "array", "items": {}, "maxItems": 30000}, "maxItems is 30000, over the limit of 128"),
    ({"enum": list(range(2000))}, "enum is 2000, over the limit of 1000"),
]  # fmt: skip
MALFORMED = [
    ({"$ref": "#/$defs/nothing"}, "points at nothing"),
    ({"type": "string", "pattern": "^(unclosed$"}, "is not a regular expression"),
    ({"type": "object", "properties": ["a", "b"]}, "must be an object of schemas"),
    ({"type": "object", "required": 5}, "must be a list of property names"),
    ({"type": "object", "properties": {"a": "string"}}, "is a str, not a schema object"),
]


def chat(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    return {"model": "base", "messages": [{"role": "user", "content": "x"}],
            "response_format": fmt, **extra}  # fmt: skip


def with_tool(parameters: dict[str, Any], n: int = 1) -> dict[str, Any]:
    tools = [{"type": "function", "function": {"name": f"f{i}", "parameters": parameters}}
             for i in range(n)]  # fmt: skip
    return {"model": "base", "messages": [{"role": "user", "content": "x"}], "tools": tools}


def tool_parameters(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"a": schema}, "required": ["a"]}


def assert_400(r: httpx.Response, param: str, named: str) -> None:
    assert r.status_code == 400, r.text
    error = _error(r)
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert named in error["message"]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running(ScriptedBackend(["{}"] * 100)) as url:
        yield url


@pytest.mark.parametrize(("schema", "named"), LIMITS + MALFORMED)
def test_a_response_format_past_a_limit_or_malformed_is_a_400(
    url: str, schema: dict[str, Any], named: str
) -> None:
    assert_400(_post(url, chat(schema)), RESPONSE, named)


@pytest.mark.parametrize(("schema", "named"), LIMITS + MALFORMED)
def test_a_client_tool_past_a_limit_or_malformed_is_a_400(
    url: str, schema: dict[str, Any], named: str
) -> None:
    assert_400(_post(url, with_tool(tool_parameters(schema))), "tools", named)


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"type": "object", "properties": ["a", "b"]}, "#/properties must be an object"),
        ({"type": "object", "required": 5}, "#/required must be a list of property names"),
        ({"type": "object", "properties": {"a": "string"}}, "#/properties/a is a str"),
        ({"type": "object", "properties": {}, "$ref": "#/$defs/a"}, "points at nothing"),
    ],
)
def test_malformed_tool_parameters_are_a_400(
    url: str, parameters: dict[str, Any], named: str
) -> None:
    assert_400(_post(url, with_tool(parameters)), "tools", named)


def test_a_bound_that_is_not_a_count_is_a_400(url: str) -> None:
    parameters = tool_parameters({"type": "integer"})
    r = _post(url, with_tool(parameters | {"additionalProperties": {"maxLength": 1e6}}))
    assert_400(r, "tools", "#/additionalProperties/maxLength must be a non-negative integer")


def test_a_non_finite_bound_is_a_400(url: str) -> None:
    body = json.dumps(chat({"type": "integer", "maximum": 1})).replace(
        '"maximum": 1', '"maximum": Infinity'
    )
    r = _post(url, body)
    assert r.status_code == 400 and _error(r)["message"]


def test_tools_within_the_limits_one_by_one_but_not_together_are_a_400(url: str) -> None:
    r = _post(url, with_tool(tool_parameters({"type": "integer"}), n=128))
    assert_400(r, "tools", "#/anyOf is 129, over the limit of 128")  # 128 calls and the answer


def test_a_schema_within_the_limits_still_works(url: str) -> None:
    r = _post(url, chat({"type": "object", "properties": {"s": {"type": "string"}}}))
    assert r.status_code == 200, r.text


# --- the real engine ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_url(tiny_model: TinyModel) -> Iterator[str]:
    with (
        LlamaCppBackend(tiny_model.gguf_path, n_ctx=256, n_threads=1) as backend,
        running(backend) as url,
    ):
        yield url


@pytest.mark.parametrize("stream", [False, True])
def test_a_schema_llama_cpp_cannot_spell_is_a_400_and_the_server_lives_on(
    tiny_url: str, stream: bool
) -> None:
    """Within every limit, but the grammar converter spells only anchored patterns."""
    unanchored = chat({"type": "string", "pattern": "[a-z]+"}, stream=stream)
    assert_400(_post(tiny_url, unanchored), "response_format", "cannot constrain output")
    assert_400(_post(tiny_url, chat({"type": "string", "maxLength": 30000})), RESPONSE, "30000")
    ok = chat({"type": "string", "maxLength": 4}, max_tokens=8)
    r = _post(tiny_url, ok)
    assert r.status_code == 200, r.text
    assert len(json.loads(r.json()["choices"][0]["message"]["content"])) <= 4
