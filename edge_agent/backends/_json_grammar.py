"""JSON schema → GBNF grammar for llama.cpp, adding what llama-cpp-python's converter lacks.

Its converter ignores ``minimum``/``maximum`` on integers, so an output could parse yet fail
validation. Bounded integers here become a digit-by-digit alternation that only spells
numbers inside the range. It spells a bounded repetition (``maxLength``, ``maxItems``) as
that many nested groups, which llama.cpp's recursive parser follows one stack frame per level
(30,000 levels crashed the process); here free strings and arrays use llama.cpp's own
``x{m,n}``, which it expands in a loop. A ``type`` list keeps the schema's other keywords in
each alternative. Its string characters also admit raw control characters, which
``json.loads`` rejects; they are excluded here as llama.cpp's own converter does. Schemas
arrive checked and capped (`_schema_limits.bounded_schema`); anything the converter still
cannot spell is an `UnsupportedSchemaError`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llama_cpp.llama_grammar import (
    PRIMITIVE_RULES,
    RESERVED_NAMES,
    STRING_FORMAT_RULES,
    SchemaConverter,
)

from edge_agent.errors import UnsupportedSchemaError

_BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_UNBOUNDED = 10**15 - 1  # far beyond anything a tool argument needs; keeps the rule small
_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'
_UUID = re.compile(r"^uuid[1-5]?$")


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    try:
        converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "schema")
        converter.visit(resolved, "")
        grammar: str = converter.format_grammar()
    except Exception as exc:  # the third-party converter refuses in many ways (assert, KeyError…)
        message = f"cannot constrain output to this JSON schema: {exc!r:.300}"
        raise UnsupportedSchemaError(message) from exc
    return grammar.replace(_LOOSE_CHAR, _JSON_CHAR, 1)


class _Converter(SchemaConverter):
    def visit(self, schema: dict[str, Any], name: str) -> str:
        rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
        if any(k in schema for k in ("$ref", "anyOf", "oneOf")):
            return str(super().visit(schema, name))
        if "const" in schema or "enum" in schema:  # before the type, which the base reads first
            return str(super().visit({k: v for k, v in schema.items() if k != "type"}, name))
        kind = schema.get("type")
        if isinstance(kind, list):
            return self._union(schema, kind, name, rule_name)
        if kind == "integer" and any(k in schema for k in _BOUND_KEYS):
            lo, hi = _bounds(schema)
            return str(self._add_rule(rule_name, f"{int_range_gbnf(lo, hi)} space"))
        if kind == "string" and _free_string(schema):
            return self._string(schema, rule_name)
        if kind == "array" and isinstance(schema.get("items"), dict):
            item = self.visit(schema["items"], f"{name}{'-' if name else ''}item")
            body = _repeat(item, *_limits(schema, "minItems", "maxItems"), sep='"," space')
            return str(self._add_rule(rule_name, f'"[" space {body} "]" space'))
        return str(super().visit(schema, name))

    def _string(self, schema: dict[str, Any], rule_name: str) -> str:
        """One shared rule per length range: llama.cpp expands ``{m,n}`` into n rules and
        re-parses the whole grammar on every reset, so each copy costs every request."""
        lo, hi = _limits(schema, "minLength", "maxLength")
        char = self._add_primitive("char", PRIMITIVE_RULES["char"])
        body = rf'"\"" {_repeat(char, lo, hi)} "\"" space'
        shared = str(self._add_rule(f"string-{lo}-{'' if hi is None else hi}", body))
        return str(self._add_rule("root", shared)) if rule_name == "root" else shared

    def _union(self, schema: dict[str, Any], kinds: list[str], name: str, rule_name: str) -> str:
        prefix = f"{name}-" if name else "alternative-"
        alternatives = [
            self.visit({**schema, "type": kind}, f"{prefix}{i}") for i, kind in enumerate(kinds)
        ]
        return str(self._add_rule(rule_name, " | ".join(alternatives)))


def _free_string(schema: dict[str, Any]) -> bool:
    """A string the base converter would spell as ``char*`` or nested groups."""
    fmt = str(schema.get("format", ""))
    known_format = bool(_UUID.match(fmt)) or f"{fmt}-string" in STRING_FORMAT_RULES
    return "pattern" not in schema and not known_format


def _limits(schema: dict[str, Any], low: str, high: str) -> tuple[int, int | None]:
    lo, hi = int(schema.get(low, 0)), schema.get(high)
    if hi is not None and int(hi) < lo:
        raise ValueError(f"{low} {lo} is above {high} {hi}")
    return lo, None if hi is None else int(hi)


def _repeat(item: str, lo: int, hi: int | None, sep: str = "") -> str:
    """``item`` lo to hi times (hi None: unbounded), separated by ``sep``, in llama.cpp's
    ``{m,n}``: one generated rule per count and no nesting for its parser to recurse into."""
    top = "" if hi is None else str(hi)
    if not sep:
        return f"{item}{{{lo},{top}}}"
    if hi == 0:
        return ""
    rest_top = "" if hi is None else str(hi - 1)
    rest = f"({sep} {item}){{{max(lo - 1, 0)},{rest_top}}}" if rest_top != "0" else ""
    return f"{item} {rest}" if lo > 0 else f"({item} {rest})?"


def _bounds(schema: dict[str, Any]) -> tuple[int, int]:
    lo, hi = -_UNBOUNDED, _UNBOUNDED
    if "minimum" in schema:
        lo = _ceil(schema["minimum"])
    if "exclusiveMinimum" in schema:
        lo = max(lo, _floor(schema["exclusiveMinimum"]) + 1)
    if "maximum" in schema:
        hi = _floor(schema["maximum"])
    if "exclusiveMaximum" in schema:
        hi = min(hi, _ceil(schema["exclusiveMaximum"]) - 1)
    lo, hi = max(lo, -_UNBOUNDED), min(hi, _UNBOUNDED)  # a wider bound would only grow the rule
    if lo > hi:
        raise ValueError(f"integer schema {schema} admits no value")
    return lo, hi


def _floor(x: float) -> int:
    return int(x // 1)


def _ceil(x: float) -> int:
    return -int(-x // 1)


def int_range_gbnf(lo: int, hi: int) -> str:
    """A GBNF expression matching exactly the decimal integers in [lo, hi]."""
    alternatives = []
    if lo < 0:
        negatives = _nonnegative_alternatives(max(1, -hi), -lo)
        alternatives.append('"-" (' + " | ".join(negatives) + ")")
    if hi >= 0:
        alternatives.extend(_nonnegative_alternatives(max(lo, 0), hi))
    return "(" + " | ".join(alternatives) + ")"


def _nonnegative_alternatives(lo: int, hi: int) -> list[str]:
    # Split by digit count so no alternative can spell a leading zero.
    alternatives = []
    for width in range(len(str(lo)), len(str(hi)) + 1):
        low = max(lo, 10 ** (width - 1) if width > 1 else 0)
        high = min(hi, 10**width - 1)
        alternatives.extend(_same_width(str(low), str(high)))
    return alternatives


def _same_width(a: str, b: str) -> list[str]:
    """Alternatives matching the equal-length digit strings from ``a`` to ``b``."""
    if a == b:
        return [f'"{a}"']
    rest = len(a) - 1
    any_rest = " [0-9]" * rest
    if a[0] == b[0]:
        return [f'"{a[0]}" {alt}' for alt in _same_width(a[1:], b[1:])]
    if a[1:] == "0" * rest and b[1:] == "9" * rest:
        return [f"[{a[0]}-{b[0]}]{any_rest}"]
    alternatives = [f'"{a[0]}" {alt}' for alt in _same_width(a[1:], "9" * rest)]
    if int(a[0]) + 1 <= int(b[0]) - 1:
        alternatives.append(f"[{int(a[0]) + 1}-{int(b[0]) - 1}]{any_rest}")
    alternatives.extend(f'"{b[0]}" {alt}' for alt in _same_width("0" * rest, b[1:]))
    return alternatives
