"""JSON schema → GBNF grammar for llama.cpp, adding the integer bounds it leaves out.

llama-cpp-python's converter ignores ``minimum``/``maximum`` on integers, so an output could
parse yet fail validation. Bounded integers here become a digit-by-digit alternation that
only spells numbers inside the range. Its string characters also admit raw control
characters, which ``json.loads`` rejects; they are excluded here as llama.cpp's own
converter does.
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import RESERVED_NAMES, SchemaConverter

_BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_UNBOUNDED = 10**15 - 1  # far beyond anything a tool argument needs; keeps the rule small
_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    converter = _BoundedIntConverter(
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "schema")
    converter.visit(resolved, "")
    grammar: str = converter.format_grammar()
    return grammar.replace(_LOOSE_CHAR, _JSON_CHAR, 1)


class _BoundedIntConverter(SchemaConverter):
    def visit(self, schema: dict[str, Any], name: str) -> str:
        if schema.get("type") == "integer" and any(k in schema for k in _BOUND_KEYS):
            lo, hi = _bounds(schema)
            rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
            key: str = self._add_rule(rule_name, f"{int_range_gbnf(lo, hi)} space")
            return key
        visited: str = super().visit(schema, name)
        return visited


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
