"""The longest output a schema's grammar admits (issue 14, item 7: a generation budget derived
from the call schema). Checked two ways: against the longest instance built independently and
written with every optional space the grammar allows, and by decoding on the tiny model, whose
random weights run away in every string they may: each output ends complete within budget."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent import prompt
from edge_agent.backends import bounded_schema
from edge_agent.backends._output_length import TOKENS_PER_TEXT_CHAR, longest_output
from edge_agent.backends.base import GenerationRequest
from edge_agent.backends.llama_cpp import LlamaCppBackend
from edge_agent.tools import Tool, Toolset
from edge_agent.types import Effect, Message
from tests.tinymodel import TinyModel

FUZZ = settings(max_examples=80, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
NAMES = st.text(alphabet="abcdéz_", min_size=1, max_size=6)
LEAVES = st.one_of(
    st.just({"type": "string"}),
    st.integers(0, 40).map(lambda n: {"type": "string", "maxLength": n}),
    st.lists(st.text(alphabet="ab\"é ", max_size=7), min_size=1, max_size=4, unique=True).map(
        lambda values: {"enum": values}
    ),
    st.tuples(st.integers(-(10**6), 0), st.integers(0, 10**9)).map(
        lambda b: {"type": "integer", "minimum": b[0], "maximum": b[1]}
    ),
    st.sampled_from([{"type": "integer"}, {"type": "number"}, {"type": "boolean"},
                     {"type": "null"}, {"const": "on"}, {"type": "string", "format": "date"}]),
)  # fmt: skip
SCHEMAS = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.tuples(inner, st.integers(0, 3)).map(
            lambda t: {"type": "array", "items": t[0], "maxItems": t[1]}
        ),
        st.dictionaries(NAMES, inner, min_size=1, max_size=4).map(
            lambda props: {"type": "object", "properties": props, "additionalProperties": False}
        ),
        st.lists(inner, min_size=1, max_size=3).map(lambda alts: {"anyOf": alts}),
    ),
    max_leaves=8,
)


def widest(schema: dict[str, Any]) -> tuple[str, int]:
    """The longest text the grammar admits for a capped `schema`, with every optional space it
    allows, built here without the module's arithmetic; and the free-text characters in it."""
    if "anyOf" in schema:
        return max((widest(s) for s in schema["anyOf"]), key=lambda w: len(w[0]) + w[1])
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        return max((json.dumps(v) for v in values), key=len), 0  # no space after a constant
    kind = schema.get("type")
    if kind == "string":
        n = 40 if "format" in schema else schema["maxLength"]
        return '"' + "x" * n + '" ', n
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        digits = (
            "-" + "9" * 16 if low is None or high is None else max(str(low), str(high), key=len)
        )
        return digits + " ", 0
    simple = {"number": "-" + "9" * 16 + "." + "9" * 16 + "e-" + "9" * 16, "boolean": "false",
              "null": "null"}  # fmt: skip
    if kind in simple:
        return simple[kind] + " ", 0
    if kind == "array":
        item, text = widest(schema["items"])
        n = schema["maxItems"]
        return "[ " + ", ".join([item] * n) + "] ", text * n
    parts = [(json.dumps(k) + " : " + widest(s)[0], widest(s)[1]) for k, s in
             schema["properties"].items()]  # fmt: skip
    return "{ " + ", ".join(p for p, _ in parts) + "} ", sum(t for _, t in parts)


@FUZZ
@given(SCHEMAS)
def test_the_longest_output_is_the_widest_text_the_grammar_admits(schema: dict[str, Any]) -> None:
    capped = bounded_schema(schema)
    text, free = widest(capped)
    length = longest_output(capped)
    assert length is not None
    assert (length.structure + length.text, length.text) == (len(text), free)
    assert length.tokens == len(text) - free + TOKENS_PER_TEXT_CHAR * free


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},  # any keys
        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": True},
        {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "string"}}},
        {"type": "string", "pattern": "^a.*$"},
        {
            "$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}},
            "$ref": "#/$defs/n",
        },  # fmt: skip
    ],
)
def test_a_schema_that_bounds_nothing_has_no_longest_output(schema: dict[str, Any]) -> None:
    assert longest_output(bounded_schema(schema)) is None
    assert prompt.token_budget(schema) == prompt.FALLBACK_TOKENS


def test_patterns_and_references_count_their_widest_match() -> None:
    ref = {"$defs": {"code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3,5}$"}},
           "$ref": "#/$defs/code"}  # fmt: skip
    length = longest_output(bounded_schema(ref))
    assert length is not None and (length.structure, length.text) == (3, 8)  # "AB-12345"


def test_free_strings_get_the_agents_cap_and_a_set_bound_is_kept() -> None:
    tools = Toolset("notes", [note_tool()])
    schema = prompt.output_schema(tools, string_chars=20, answer_chars=30)
    call, answer = schema["anyOf"]
    props = call["properties"]["arguments"]["properties"]
    assert props["text"]["maxLength"] == 20 and props["title"]["maxLength"] == 8
    assert answer["properties"]["answer"]["maxLength"] == 30
    assert prompt.token_budget(schema, ceiling=10) == 10


def note_tool() -> Tool:
    return Tool.from_schema(
        "save_note", "Save a note.",
        {"type": "object", "properties": {"title": {"type": "string", "maxLength": 8},
                                          "text": {"type": "string"}},
         "required": ["text"]},
        handler=lambda **_: "saved", effect=Effect.ACTUATING,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tiny_model: TinyModel) -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(tiny_model.gguf_path, n_ctx=2048, n_threads=1)
    yield backend
    backend.close()


def test_a_random_model_ends_every_output_complete_within_its_budget(
    tiny: LlamaCppBackend,
) -> None:
    """The tiny model's random weights close a string only by chance, so some outputs run to
    the cap: each output still ends complete (the grammar closes the string at its cap) and
    parses, in no more tokens than the budget."""
    tools = Toolset("notes", [note_tool()])
    longest = 0
    for seed in range(8):
        schema = prompt.output_schema(tools, allow_answer=seed % 4 == 0, string_chars=24)
        budget = prompt.token_budget(schema)
        request = GenerationRequest(messages=[Message(role="user", content=f"note {seed}")],
                                    json_schema=schema, max_tokens=budget, temperature=1.0,
                                    seed=seed)  # fmt: skip
        done = tiny.complete(request)
        parsed = prompt.parse_output(done.text)
        assert done.finish_reason == "stop" and done.usage.completion_tokens <= budget
        if not isinstance(parsed, str):
            longest = max(longest, len(parsed.arguments["text"]))
    assert longest >= 24  # some string ran to its cap (bytes that are no UTF-8 count extra)
