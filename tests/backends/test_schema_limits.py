"""JSON schemas are held to limits before they become a grammar (issue 13): a schema past one
is a typed error naming it, never a crashed process; free strings and arrays are capped; the
compiled grammars are a small LRU.

Crash-prone cases run in a subprocess: before the limits, llama.cpp died by SIGSEGV there.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.backends import bounded_schema, check_schema
from edge_agent.backends._json_grammar import schema_to_gbnf
from edge_agent.backends._llama_sampling import Grammar
from edge_agent.backends._schema_limits import MAX_ITEMS, MAX_STRING_LENGTH
from edge_agent.backends.llama_cpp import MAX_CACHED_SCHEMAS, LlamaCppBackend
from edge_agent.errors import UnsupportedSchemaError
from tests.backends.support import ask
from tests.tinymodel import TinyModel

CONSTRAIN = """
import json, sys
from edge_agent.backends import open_backend
from edge_agent.errors import EdgeAgentError
from tests.backends.support import ask

with open_backend(sys.argv[1], model_path=sys.argv[2], n_ctx=256, n_threads=1) as backend:
    for line in sys.stdin:
        print("schema", line.strip()[:80], flush=True)
        try:
            done = backend.complete(ask("x", max_tokens=8, json_schema=json.loads(line)))
            print("ok", repr(done.text), flush=True)
        except EdgeAgentError as exc:
            print("refused", type(exc).__name__, exc, flush=True)
"""


def constrain_in_subprocess(
    model: Path, schemas: list[Any], kind: str = "llama_cpp"
) -> subprocess.CompletedProcess[str]:
    """Constrain a short generation on a tiny model to each schema, in a child process: the
    result's returncode is negative when a signal (SIGSEGV, SIGABRT) killed it; any error
    but a typed one (EdgeAgentError) is a traceback and returncode 1."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CONSTRAIN), kind, str(model)],
        input="".join(json.dumps(s) + "\n" for s in schemas),
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[2],
    )


@pytest.fixture
def tiny(tiny_model: TinyModel) -> Iterator[LlamaCppBackend]:
    with LlamaCppBackend(tiny_model.gguf_path, n_ctx=256, n_threads=2) as backend:
        yield backend


# --- one request must not kill the process --------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "string", "maxLength": 30000}, "#/maxLength is 30000, over the limit of 512"),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 30000},
         "#/maxItems is 30000, over the limit of 128"),
        ({"type": "string", "pattern": "^a{0,30000}$"}, "is 30002, over the limit of 512"),
    ],
    ids=["maxLength", "maxItems", "pattern"],
)  # fmt: skip
def test_a_30000_long_bound_is_refused_not_a_segfault(
    tiny_model: TinyModel, schema: dict[str, Any], named: str
) -> None:
    run = constrain_in_subprocess(tiny_model.gguf_path, [schema])
    assert run.returncode == 0, f"died with {run.returncode}: {run.stderr[-500:]}"
    assert "refused UnsupportedSchemaError" in run.stdout and named in run.stdout


# --- every limit and malformation is named -------------------------------------------------------


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


def props(n: int) -> dict[str, Any]:
    return {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(n)}}


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "string", "maxLength": 513}, "#/maxLength is 513, over the limit of 512"),
        ({"type": "string", "minLength": 600}, "#/minLength is 600, over the limit of 512"),
        ({"type": "array", "items": {}, "maxItems": 129},
         "#/maxItems is 129, over the limit of 128"),
        ({"enum": list(range(1001))}, "#/enum is 1001, over the limit of 1000"),
        (props(129), "#/properties is 129, over the limit of 128"),
        ({"anyOf": [{"const": i} for i in range(129)]}, "#/anyOf is 129, over the limit of 128"),
        (nested(40), "nests deeper than 32 levels"),
        ({"enum": ["x" * 50_000] * 3}, "over the limit of 100000"),
        ({"type": "string", "pattern": "^(a{0,30}){0,30}$"},
         "(characters its repetitions spell) is 902"),
        ({"type": "string", "pattern": "^" + "(" * 40 + "a" + ")" * 40 + "$"}, "groups deeper"),
        ({"type": "string", "pattern": "^[a-$"}, "is not a regular expression"),
        ({"type": "integer", "maximum": math.inf}, "inf is not a JSON number"),
        ({"type": "number", "minimum": math.nan}, "nan is not a JSON number"),
        ({"$ref": "#/$defs/missing"}, "'#/$defs/missing' points at nothing"),
        ({"$ref": "https://example.com/schema"}, "must be a local reference"),
        ({"type": "object", "properties": [{"a": {}}]}, "#/properties must be an object"),
        ({"type": "object", "required": 5}, "#/required must be a list of property names"),
        ({"type": "object", "properties": {"a": 5}}, "#/properties/a is a int, not a schema"),
        ({"type": "frobnicate"}, "#/type must be one of"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength above maxLength"),
        ({"type": "array", "items": True}, "#/items is a bool, not a schema"),
        ([{"type": "string"}], "# is a list, not a schema object"),
    ],
)  # fmt: skip
def test_a_schema_past_a_limit_or_malformed_is_refused_naming_why(schema: Any, named: str) -> None:
    with pytest.raises(UnsupportedSchemaError, match="^cannot constrain output") as exc:
        check_schema(schema)
    assert named in str(exc.value)


def test_schemas_within_the_limits_pass_and_keep_their_meaning() -> None:
    ok = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": MAX_STRING_LENGTH},
            "tags": {"type": "array", "items": {"enum": list(range(1000))}, "maxItems": 128},
            "when": {"$ref": "#/$defs/date"},
            "code": {"type": "string", "pattern": r"^\d{1,3}(\.\d{1,3}){3}$"},
        },
        "$defs": {"date": {"type": "string", "format": "date"}},
    }
    check_schema(ok)
    check_schema(nested(15))  # 31 levels of JSON


def test_free_strings_and_arrays_are_capped_and_bounded_ones_kept() -> None:
    schema = {
        "type": "object",
        "properties": {
            "free": {"type": "string"},
            "short": {"type": "string", "maxLength": 5},
            "maybe": {"type": ["string", "null"]},
            "list": {"type": "array", "items": {"type": "string"}},
        },
    }
    props = bounded_schema(schema)["properties"]
    assert props["free"]["maxLength"] == MAX_STRING_LENGTH
    assert props["short"]["maxLength"] == 5
    assert props["maybe"]["maxLength"] == MAX_STRING_LENGTH
    assert props["list"]["maxItems"] == MAX_ITEMS
    assert props["list"]["items"]["maxLength"] == MAX_STRING_LENGTH
    assert "maxLength" not in schema["properties"]["free"]  # the caller's schema is untouched


def test_a_string_the_model_never_closes_ends_at_the_cap(tiny: LlamaCppBackend) -> None:
    """The grammar for a free string allows MAX_STRING_LENGTH characters, then only the quote
    (before: any number, so a runaway string ran to max_tokens)."""
    grammar = Grammar(tiny._vocab, schema_to_gbnf(bounded_schema({"type": "string"})))
    quote, letter = (tiny._encode_text(t, special=False)[0] for t in ('"', "a"))
    grammar.accept(quote)
    for _ in range(MAX_STRING_LENGTH):
        assert grammar.allows(letter)
        grammar.accept(letter)
    assert not grammar.allows(letter)
    assert grammar.allows(quote)
    grammar.close()


def test_the_backend_refuses_a_schema_past_a_limit_before_compiling(tiny: LlamaCppBackend) -> None:
    with pytest.raises(UnsupportedSchemaError, match="maxItems is 30000, over the limit of 128"):
        tiny.complete(ask("x", json_schema={"type": "array", "items": {}, "maxItems": 30000}))
    assert not tiny._grammars


def test_a_schema_the_converter_cannot_spell_is_a_typed_error(tiny: LlamaCppBackend) -> None:
    """Within every limit, but llama.cpp's converter handles only anchored patterns."""
    with pytest.raises(UnsupportedSchemaError, match="cannot constrain output"):
        tiny.complete(ask("x", json_schema={"type": "string", "pattern": "[a-z]+"}))


# --- grammar caches are LRU -----------------------------------------------------------------------


def test_compiled_grammars_are_a_small_lru(tiny: LlamaCppBackend) -> None:
    schemas = [{"enum": [f"value {i}"]} for i in range(MAX_CACHED_SCHEMAS + 9)]
    for schema in schemas:
        tiny.complete(ask("x", max_tokens=2, json_schema=schema))
    assert len(tiny._grammars) == MAX_CACHED_SCHEMAS
    assert len(tiny._automata) == MAX_CACHED_SCHEMAS
    newest = json.dumps(schemas[-1], sort_keys=True)
    oldest_kept = json.dumps(schemas[9], sort_keys=True)
    assert list(tiny._grammars)[0] == oldest_kept and list(tiny._grammars)[-1] == newest
    reused = tiny._grammars[oldest_kept]
    done = tiny.complete(ask("x", max_tokens=8, json_schema=schemas[9]))  # a hit: most recent now
    assert json.loads(done.text) == "value 9"
    assert tiny._grammars[oldest_kept] is reused and list(tiny._grammars)[-1] == oldest_kept
