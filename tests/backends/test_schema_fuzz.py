"""Random JSON schemas, within and past the limits, and plain junk, through the bound check
and the grammar builder (issue 13): each ends in success or a typed error. The risky part,
compiling each into a llama.cpp grammar (and ONNX guidance) and decoding a few constrained
tokens on the tiny model, runs in a child process that must never die by a signal.

Bounded for CI: 60 examples per property, no deadline, no example database on disk.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.backends import bounded_schema
from edge_agent.backends._json_grammar import schema_to_gbnf
from edge_agent.backends._jump_forward import Automaton
from edge_agent.errors import BackendError, ToolDefinitionError, UnsupportedSchemaError
from edge_agent.tools import Tool
from edge_agent.types import Effect
from tests.backends.test_onnx import build_tiny_onnx
from tests.backends.test_schema_limits import constrain_in_subprocess
from tests.tinymodel import TinyModel

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,  # nothing written under .hypothesis/
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TEXT = "abcxyz_ -<|>\"'\\\n{}[]^$"  # an explicit alphabet: no unicode tables cached on disk
NAMES = st.text(alphabet="abcp_", min_size=1, max_size=4)
TYPES = ["string", "integer", "number", "boolean", "null", "object", "array", "frobnicate"]

# Integers around each limit and far past it, and things that are no count at all.
COUNTS = st.one_of(
    st.integers(0, 20),
    st.sampled_from([127, 128, 129, 511, 512, 513, 999, 1000, 1001, 2000, 30000, 10**7, -1]),
    st.booleans(),
    st.floats(),
    st.text(alphabet=TEXT, max_size=3),
)
NUMBERS = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.inf, -math.inf, 1e300, 10**101, True, "5"]),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-100, 100) | st.floats() | st.text(TEXT, max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NAMES, inner, max_size=4),
    max_leaves=12,
)
PATTERNS = st.one_of(
    st.sampled_from([
        "^[a-z]+$", "^\\d{3}-\\d{4}$", "^(a|b){2,5}$", "^a{0,30000}$", "^(a{0,40}){0,40}$",
        "[a-z]+", "^(?=a)a$", "^a\\1$", "^[a-$", "^((((((((((a))))))))))$", "^.*$", "",
        "^" + "(" * 40 + "a" + ")" * 40 + "$",
    ]),
    st.text(alphabet="^$ab()[]{}0123456789,|*+?.\\-", max_size=16),
)  # fmt: skip
REFS = st.sampled_from(
    ["#/$defs/a", "#/$defs/b", "#/properties/p", "#", "#/nope", "https://x.test/s", "#/$defs"]
)


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def _object(n: int) -> dict[str, Any]:
    return {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(n)}}


LEAVES = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), max_size=3),
        "maxLength": COUNTS, "minLength": COUNTS, "pattern": PATTERNS,
        "format": st.sampled_from(["date", "time", "date-time", "uuid", "email", "x"]),
        "enum": st.lists(JSON, max_size=4) | st.builds(lambda n: list(range(n)), COUNTS.filter(
            lambda n: isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 3000)),
        "const": JSON, "minimum": NUMBERS, "maximum": NUMBERS,
        "exclusiveMinimum": NUMBERS, "exclusiveMaximum": NUMBERS,
    },
)  # fmt: skip
BIG = st.one_of(
    st.builds(_nested, st.integers(0, 60)),
    st.builds(_object, st.integers(100, 200)),
    st.builds(lambda n: {"anyOf": [{"const": i} for i in range(n)]}, st.integers(100, 200)),
)


def _branches(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["object", "array"]),
            "properties": st.dictionaries(NAMES, inner, max_size=4) | JSON,
            "required": st.lists(NAMES, max_size=3) | JSON,
            "additionalProperties": st.booleans() | inner,
            "items": inner | st.lists(inner, max_size=3) | JSON,
            "prefixItems": st.lists(inner, max_size=3),
            "minItems": COUNTS, "maxItems": COUNTS,
            "anyOf": st.lists(inner, max_size=3), "oneOf": st.lists(inner, max_size=3),
            "allOf": st.lists(inner, max_size=3),
            "$ref": REFS, "$defs": st.dictionaries(st.sampled_from("ab"), inner, max_size=2),
        },
    )  # fmt: skip


SCHEMAS = st.one_of(st.recursive(LEAVES, _branches, max_leaves=8), BIG, JSON)


def _through_the_builders(schema: Any) -> None:
    """Success or a typed error, never another exception (the test fails on one)."""
    try:
        bounded = bounded_schema(schema)
    except UnsupportedSchemaError:
        return
    with contextlib.suppress(UnsupportedSchemaError):
        schema_to_gbnf(bounded)
    with contextlib.suppress(ToolDefinitionError):
        Tool.from_schema("t", "d", schema, handler=print, effect=Effect.READ_ONLY)
    # Bounded in states: nested arrays built 2**depth of them (memory ran out at depth 15).
    with contextlib.suppress(BackendError):
        Automaton(bounded)


@FUZZ
@given(SCHEMAS)
def test_each_schema_passes_or_is_a_typed_error(schema: Any) -> None:
    _through_the_builders(schema)


def _sample(n: int) -> list[Any]:
    seen: list[Any] = []

    @settings(FUZZ, max_examples=n)
    @given(SCHEMAS)
    def collect(schema: Any) -> None:
        seen.append(schema)

    collect()
    return seen


def _assert_survives(model: Path, kind: str) -> None:
    schemas = [s for s in _sample(60) if isinstance(s, dict)]  # a request holds an object
    run = constrain_in_subprocess(model, schemas, kind)
    assert run.returncode >= 0, f"killed by signal {-run.returncode}: {run.stdout[-800:]}"
    assert run.returncode == 0, run.stderr[-2000:]
    answers = [ln.split(" ", 1)[0] for ln in run.stdout.splitlines() if not ln.startswith("schema")]
    assert len(answers) == len(schemas) and set(answers) <= {"ok", "refused"}
    assert "ok" in answers and "refused" in answers  # both sides of the limits were reached


def test_llama_cpp_never_dies_on_a_random_schema(tiny_model: TinyModel) -> None:
    _assert_survives(tiny_model.gguf_path, "llama_cpp")


def test_onnx_never_dies_on_a_random_schema(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyModel
) -> None:
    folder = build_tiny_onnx(tmp_path_factory.getbasetemp() / "onnx", tiny_model)
    _assert_survives(folder, "onnx")
