"""The longest text a JSON schema's grammar lets the decoder write, and the tokens to budget.

The grammar (`_json_grammar`) writes JSON with at most one space after each ``{ [ , :`` and
value, enum values as ``json.dumps`` spells them, integers within their bounds and strings of
at most ``maxLength`` characters. Walking a capped schema (`_schema_limits.bounded_schema`)
the same way gives the longest output it can produce: the structure (punctuation, keys, enum
values, numbers: one token per character at worst) and the free text inside strings (counted
apart, as a string character of a script the model knows badly can take more than one token).
Where the grammar bounds nothing (an object that takes any key, a recursive ``$ref``) there is
no longest output: `longest_output` says None and the caller keeps its own ceiling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from re import _parser  # type: ignore[attr-defined]  # re's own parser: the widest match
from typing import Any

from edge_agent.backends._schema_limits import MAX_ITEMS, MAX_STRING_LENGTH

__all__ = ["OutputLength", "longest_output"]

TOKENS_PER_TEXT_CHAR = 2  # ASCII never takes more than 1; most other scripts fit in 2
_INTEGER_CHARS = 17  # "-" and the 16 digits the grammar's integral part allows
_NUMBER_CHARS = 52  # "-", 16 digits, ".", 16 digits, "e-", 16 digits
_FORMATS = frozenset({"date", "time", "date-time"})  # with uuid*: the formats the grammar spells
_FORMAT_CHARS = 40  # the longest of them: a date-time with fraction and offset
_SPACE = 1  # the grammar's optional space after a value or punctuation


@dataclass(frozen=True)
class OutputLength:
    structure: int  # characters of punctuation, keys, enum values, numbers
    text: int  # characters inside free strings

    def __add__(self, other: OutputLength) -> OutputLength:
        return OutputLength(self.structure + other.structure, self.text + other.text)

    def times(self, n: int) -> OutputLength:
        return OutputLength(self.structure * n, self.text * n)

    @property
    def tokens(self) -> int:
        """The most tokens this output can take: a character of structure is at most one."""
        return self.structure + TOKENS_PER_TEXT_CHAR * self.text


class _Unbounded(Exception):
    """The grammar lets this part of the output grow without end."""


def longest_output(schema: dict[str, Any]) -> OutputLength | None:
    """The longest output the grammar of `schema` (checked and capped) admits; None where it
    has no bound."""
    try:
        return _Longest(schema).of(schema, ())
    except _Unbounded:
        return None


def _chars(n: int) -> OutputLength:
    return OutputLength(n, 0)


class _Longest:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def of(self, node: dict[str, Any], refs: tuple[str, ...]) -> OutputLength:
        if "$ref" in node:
            return self._ref(node["$ref"], refs)
        branches = node.get("anyOf") or node.get("oneOf")
        if branches:
            return max((self.of(b, refs) for b in branches), key=lambda n: n.tokens)
        if "const" in node:  # spelled as json.dumps writes it, with no space after
            return _chars(len(json.dumps(node["const"])))
        if "enum" in node:
            return _chars(max(len(json.dumps(v)) for v in node["enum"]))
        kinds = node.get("type")
        if isinstance(kinds, list):
            alternatives = ({**node, "type": kind} for kind in kinds)
            return max((self.of(a, refs) for a in alternatives), key=lambda n: n.tokens)
        return self._typed(node, kinds, refs)

    def _typed(self, node: dict[str, Any], kind: Any, refs: tuple[str, ...]) -> OutputLength:
        if kind == "string":
            return _string(node)
        if kind == "integer":
            return _chars(_integer_chars(node) + _SPACE)
        if kind == "number":
            return _chars(_NUMBER_CHARS + _SPACE)
        if kind == "boolean":
            return _chars(len("false") + _SPACE)
        if kind == "null":
            return _chars(len("null") + _SPACE)
        if kind == "array" or (kind is None and ("items" in node or "prefixItems" in node)):
            return self._array(node, refs)
        if kind in ("object", None) and "properties" in node:
            return self._object(node, refs)
        raise _Unbounded  # any JSON value, any object: no longest one

    def _object(self, node: dict[str, Any], refs: tuple[str, ...]) -> OutputLength:
        if node.get("additionalProperties") is True or isinstance(
            node.get("additionalProperties"), dict
        ):
            raise _Unbounded
        props = node["properties"]
        total = _chars(2 * (1 + _SPACE))  # "{ " and "} "
        for key, sub in props.items():  # each as `"key": value, `
            total += _chars(len(json.dumps(key)) + _SPACE + 1 + _SPACE) + self.of(sub, refs)
        return total + _chars(max(len(props) - 1, 0) * (1 + _SPACE))

    def _array(self, node: dict[str, Any], refs: tuple[str, ...]) -> OutputLength:
        items = node.get("prefixItems") or node.get("items")
        if isinstance(items, list):  # a tuple: each item once
            inner = [self.of(item, refs) for item in items]
            count = len(inner)
            total = sum(inner[1:], inner[0]) if inner else _chars(0)
        else:
            count = int(node.get("maxItems", MAX_ITEMS))
            total = self.of(items, refs).times(count) if isinstance(items, dict) else _chars(0)
            if not isinstance(items, dict) and count:
                raise _Unbounded  # items of any kind
        return total + _chars(2 * (1 + _SPACE) + max(count - 1, 0) * (1 + _SPACE))

    def _ref(self, ref: str, refs: tuple[str, ...]) -> OutputLength:
        if ref in refs:
            raise _Unbounded  # a schema that contains itself nests without end
        target: Any = self.root
        for key in ref[2:].split("/"):
            target = target[key]
        return self.of(target, (*refs, ref))


def _string(node: dict[str, Any]) -> OutputLength:
    """Quotes and a space around at most ``maxLength`` characters; a pattern or a format
    spells its own widest match."""
    if "pattern" in node:
        widest = _parser.parse(node["pattern"]).getwidth()[1]
        if widest >= _parser.MAXREPEAT - 1:
            raise _Unbounded  # an open repetition (`.*`): the grammar spells no end
        return OutputLength(2 + _SPACE, widest)
    if node.get("format") in _FORMATS or str(node.get("format", "")).startswith("uuid"):
        return OutputLength(2 + _SPACE, _FORMAT_CHARS)
    return OutputLength(2 + _SPACE, int(node.get("maxLength", MAX_STRING_LENGTH)))


def _integer_chars(node: dict[str, Any]) -> int:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    if low is None or high is None:
        return _INTEGER_CHARS
    return max(len(str(int(low))), len(str(int(high))))
