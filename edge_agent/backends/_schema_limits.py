"""The limits every JSON schema is held to before it becomes a grammar, and the caps it gets.

A schema reaches the decoder from a client (``response_format``, client tools) or a toolset.
llama.cpp's grammar parser recurses once per nesting level, and llama-cpp-python's converter
spelled ``maxLength: 30000`` as 30,000 nested groups: one request overflowed the stack and
killed the server. Huge enums, property lists or whole schemas cost memory and compile time.
``check_schema`` refuses anything malformed or past a limit with an `UnsupportedSchemaError`
that names it; ``bounded_schema`` also caps strings and arrays that set no bound, so a string
the model never closes ends after ``MAX_STRING_LENGTH`` characters instead of at max_tokens.
The llama.cpp and ONNX backends, `tools.schema` and the server all use these two.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from re import _parser  # type: ignore[attr-defined]  # re's own parser: quantifiers, nesting
from typing import Any

from edge_agent.errors import UnsupportedSchemaError

MAX_DEPTH = 32  # JSON nesting of the schema document (objects and lists)
MAX_SCHEMA_CHARS = 100_000  # the schema as JSON text
MAX_STRING_LENGTH = 512  # maxLength / minLength, a pattern's expansion, the cap of a free string
MAX_ITEMS = 128  # maxItems / minItems, and the cap of an array that sets none
MAX_ENUM = 1000  # enum values
MAX_PROPERTIES = 128  # properties of one object
MAX_BRANCHES = 128  # anyOf / oneOf / allOf / prefixItems entries, as OpenAI's 128 tools
MAX_PATTERN_CHARS = 512
_MAX_INT = 10**100  # past this an integer is no bound anyone means (and JSON tools choke)

_TYPES = frozenset({"string", "integer", "number", "boolean", "null", "object", "array"})
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_NUMBERS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_COUNTS = {
    "minLength": MAX_STRING_LENGTH, "maxLength": MAX_STRING_LENGTH,
    "minItems": MAX_ITEMS, "maxItems": MAX_ITEMS,
    "minProperties": MAX_PROPERTIES, "maxProperties": MAX_PROPERTIES,
}  # fmt: skip
_REPEATS = (_parser.MAX_REPEAT, _parser.MIN_REPEAT, _parser.POSSESSIVE_REPEAT)


def check_schema(schema: Any) -> None:
    """Refuse a schema that is malformed or past a limit; UnsupportedSchemaError names which."""
    _check_json(schema)
    size = len(json.dumps(schema))  # safe now: nesting is bounded
    if size > MAX_SCHEMA_CHARS:
        raise _error(f"it is {size} characters of JSON, over the limit of {MAX_SCHEMA_CHARS}")
    _Walk(schema).schema(schema, "#")


def bounded_schema(
    schema: dict[str, Any], *, max_string: int = MAX_STRING_LENGTH
) -> dict[str, Any]:
    """The checked schema with strings and arrays that set no bound capped: strings at
    `max_string` characters (at most the limit), arrays at the limit."""
    check_schema(schema)
    return _capped(schema, min(max_string, MAX_STRING_LENGTH))


def _error(detail: str) -> UnsupportedSchemaError:
    return UnsupportedSchemaError(f"cannot constrain output to this JSON schema: {detail}")


# --- the document: JSON values only, nested at most MAX_DEPTH deep -----------------------------


def _check_json(document: Any) -> None:
    todo: list[tuple[Any, int]] = [(document, 0)]
    while todo:
        value, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise _error(f"it nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise _error("an object has a key that is not a string")
            todo.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list | tuple):
            todo.extend((v, depth + 1) for v in value)
        else:
            _check_scalar(value)


def _check_scalar(value: Any) -> None:
    if value is None or isinstance(value, str | bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise _error(f"{value} is not a JSON number")
    if isinstance(value, int | float) and abs(value) >= _MAX_INT:
        raise _error("a number is too large (past 1e100)")
    if not isinstance(value, int | float):
        raise _error(f"a {type(value).__name__} is not a JSON value")


# --- the schema: each keyword the grammar reads has the type and size it needs -----------------


class _Walk:
    def __init__(self, root: Any) -> None:
        self.root = root

    def schema(self, node: Any, path: str) -> None:
        if not isinstance(node, dict):
            raise _error(f"{path} is {_kind(node)}, not a schema object")
        for key, value in node.items():
            check = _KEYWORDS.get(key)
            if check is not None:
                check(self, value, f"{path}/{key}")
        for low, high in (("minLength", "maxLength"), ("minItems", "maxItems")):
            if node.get(low, 0) > node.get(high, math.inf):
                raise _error(f"{path} has {low} above {high}")

    def schemas(self, value: Any, path: str, limit: int = MAX_BRANCHES) -> None:
        if not isinstance(value, list) or not value:
            raise _error(f"{path} must be a non-empty list of schemas")
        _at_most(len(value), limit, path)
        for i, item in enumerate(value):
            self.schema(item, f"{path}/{i}")

    def schema_map(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise _error(f"{path} must be an object of schemas")
        if path.endswith("/properties"):
            _at_most(len(value), MAX_PROPERTIES, path)
        for key, item in value.items():
            self.schema(item, f"{path}/{key}")

    def items(self, value: Any, path: str) -> None:
        if isinstance(value, list):
            self.schemas(value, path)
        else:
            self.schema(value, path)

    def additional(self, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            self.schema(value, path)

    def ref(self, value: Any, path: str) -> None:
        """Only a local pointer through object keys, as the grammar converter resolves it."""
        if not isinstance(value, str) or not value.startswith("#/"):
            raise _error(f"{path} must be a local reference like '#/$defs/Name'")
        target = self.root
        for key in value[2:].split("/"):
            if not isinstance(target, dict) or key not in target:
                raise _error(f"{path} {value!r} points at nothing")
            target = target[key]
        if not isinstance(target, dict):
            raise _error(f"{path} {value!r} points at {_kind(target)}, not a schema")


def _type(_: _Walk, value: Any, path: str) -> None:
    kinds = value if isinstance(value, list) and value else [value]
    if not all(isinstance(k, str) and k in _TYPES for k in kinds) or len(set(kinds)) < len(kinds):
        raise _error(f"{path} must be one of {', '.join(sorted(_TYPES))}, or a list of them")


def _enum(_: _Walk, value: Any, path: str) -> None:
    if not isinstance(value, list):
        raise _error(f"{path} must be a list of values")
    if not value:
        raise _error(f"{path} is empty: an empty enum admits no value")
    _at_most(len(value), MAX_ENUM, path)


def _required(_: _Walk, value: Any, path: str) -> None:
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise _error(f"{path} must be a list of property names")


def _string(_: _Walk, value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise _error(f"{path} must be a string")


def _number(_: _Walk, value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _error(f"{path} must be a number")


def _count(_: _Walk, value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _error(f"{path} must be a non-negative integer")
    _at_most(value, _COUNTS[path.rsplit("/", 1)[1]], path)


def _pattern(_: _Walk, value: Any, path: str) -> None:
    """A regular expression of bounded size: the grammar spells out each repetition."""
    _string(_, value, path)
    _at_most(len(value), MAX_PATTERN_CHARS, f"{path} (characters)")
    if _group_depth(value) > MAX_DEPTH:
        raise _error(f"{path} nests groups deeper than {MAX_DEPTH} levels")
    try:
        parsed = _parser.parse(value)
    except (re.error, RecursionError, OverflowError) as exc:
        raise _error(f"{path} is not a regular expression ({exc})") from None
    _at_most(_expansion(parsed), MAX_STRING_LENGTH, f"{path} (characters its repetitions spell)")


_KEYWORDS: dict[str, Callable[[_Walk, Any, str], None]] = {
    "type": _type, "enum": _enum, "required": _required, "pattern": _pattern,
    "format": _string, "$ref": _Walk.ref, "items": _Walk.items,
    "additionalProperties": _Walk.additional,
    **{key: _Walk.schema_map for key in _SCHEMA_MAPS},
    **{key: _Walk.schemas for key in _SCHEMA_LISTS},
    **{key: _number for key in _NUMBERS},
    **{key: _count for key in _COUNTS},
}  # fmt: skip


def _at_most(value: int, limit: int, path: str) -> None:
    if value > limit:
        raise _error(f"{path} is {value}, over the limit of {limit}")


def _kind(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _group_depth(pattern: str) -> int:
    """How deep parentheses nest (escapes skipped; brackets counted too: a safe overestimate)."""
    depth = deepest = 0
    escaped = False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


def _expansion(pattern: Any) -> int:
    """Characters the converter writes out for ``pattern``: a repetition {m,n} copies its body
    n times (m + 1 for an open one), everything else counts once plus what it contains."""
    total = 0
    for op, av in pattern:
        if op in _REPEATS:
            low, high, body = av
            copies = max(low, 1) if high == _parser.MAXREPEAT else high
            total += copies * _expansion(body)
        else:
            total += max(1, _nested(av))
    return total


def _nested(av: Any) -> int:
    if isinstance(av, _parser.SubPattern):
        return _expansion(av)
    if isinstance(av, list | tuple):
        return sum(_nested(x) for x in av)
    return 0


# --- caps --------------------------------------------------------------------------------------


def _capped(node: dict[str, Any], max_string: int) -> dict[str, Any]:
    out = dict(node)
    for key in _SCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            out[key] = {name: _capped(sub, max_string) for name, sub in node[key].items()}
    for key in (*_SCHEMA_LISTS, "items"):
        if isinstance(node.get(key), list):
            out[key] = [_capped(sub, max_string) for sub in node[key]]
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            out[key] = _capped(node[key], max_string)
    kinds = node.get("type")
    kinds = set(kinds) if isinstance(kinds, list) else {kinds}
    if "string" in kinds and "maxLength" not in node:
        out["maxLength"] = max(max_string, node.get("minLength", 0))
    if "array" in kinds and "maxItems" not in node:
        out["maxItems"] = MAX_ITEMS
    return out
