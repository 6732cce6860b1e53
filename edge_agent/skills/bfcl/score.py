"""BFCL's AST scoring of one call, as its official checker scores simple_python.

The rules (read from BFCL's checker and its data card, re-implemented here): the name must be
the function's; every required parameter present; no parameter the function or the answer
lacks; each value of the parameter's BFCL type (an int passes where a float is expected; a
bool is never an int) and among the allowed values; an answer parameter left out passes only
if ``""`` is allowed. Strings (also inside lists) compare after BFCL's normalization — case
folded, spaces and ``,./-_*^`` removed, ``'`` read as ``"`` — so "New York, NY" matches
"new york ny": BFCL does not compare strings case-sensitively. Numbers compare numerically
(``5 == 5.0``), lists in order. Where the allowed values are of another type than the schema
says (BFCL's "variable" answers, e.g. a name where an integer is declared), a value of the
allowed type is accepted and compared as is.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_agent.skills.bfcl.dataset import OPTIONAL, Row
from edge_agent.types import ToolCall

_PY_TYPES: dict[str, type] = {
    "string": str, "integer": int, "float": float, "boolean": bool,
    "array": list, "tuple": list, "dict": dict, "any": str,
}  # fmt: skip
_NESTED = ("array", "tuple")
_IGNORED = re.compile(r"[ ,./\-_*^]")


@dataclass(frozen=True)
class Verdict:
    right_function: bool
    exact: bool
    error: str = ""  # the first rule broken: no_call, wrong_function, missing_required, …
    detail: str = ""


PASS = Verdict(right_function=True, exact=True)


def standardize(text: str) -> str:
    return _IGNORED.sub("", text).lower().replace("'", '"')


def check(row: Row, call: ToolCall | None) -> Verdict:
    """Whether `call` is an acceptable answer to `row`, and if not, which rule it broke."""
    if call is None:
        return Verdict(False, False, "no_call", "the model answered in text")
    if call.name != row.name:
        return Verdict(False, False, "wrong_function", call.name)
    props: Mapping[str, Any] = row.parameters.get("properties", {})
    missing = [p for p in row.parameters.get("required", []) if p not in call.arguments]
    if missing:
        return _fail("missing_required", missing[0])
    for key, value in call.arguments.items():
        if key not in props or key not in row.answer:
            return _fail("unexpected_param", key)
        error = _check_value(value, props[key], row.answer[key])
        if error:
            return _fail(error, f"{key}={value!r}; allowed {row.answer[key]!r}")
    left_out = [k for k, v in row.answer.items() if k not in call.arguments and OPTIONAL not in v]
    return _fail("missing_optional", left_out[0]) if left_out else PASS


def _fail(error: str, detail: str) -> Verdict:
    return Verdict(True, False, error, detail)


def _check_value(value: Any, prop: Mapping[str, Any], allowed: Sequence[Any]) -> str:
    """'' if the value is of the parameter's type and allowed, else the kind of error."""
    kind = str(prop.get("type"))
    if kind == "float" and type(value) is int:
        value = float(value)
    if not _type_ok(value, _PY_TYPES.get(kind, object), allowed):
        return "type"
    if kind in _NESTED and not _items_ok(value, prop.get("items", {}), allowed):
        return "type"
    hint = _allowed_type(allowed)
    if hint is not None and hint is not _PY_TYPES.get(kind):
        return "" if value in allowed else "value"  # a "variable" answer: compared as is
    if isinstance(value, str):
        ok = standardize(value) in [standardize(a) for a in allowed if isinstance(a, str)]
    elif isinstance(value, list):
        ok = _standardized(value) in [_standardized(a) for a in allowed if isinstance(a, list)]
    else:
        ok = value in allowed
    return "" if ok else "value"


def _type_ok(value: Any, expected: type, allowed: Sequence[Any]) -> bool:
    return type(value) is expected or type(value) is _allowed_type(allowed)


def _items_ok(value: list[Any], items: Mapping[str, Any], allowed: Sequence[Any]) -> bool:
    """Every element of the parameter's item type, judged against some allowed list."""
    expected = _PY_TYPES.get(str(items.get("type")), object)
    return any(
        not isinstance(a, list) or all(_type_ok(v, expected, a) for v in value) for a in allowed
    )


def _allowed_type(allowed: Sequence[Any]) -> type | None:
    """The type of the first allowed value that is not the optional marker."""
    return next((type(a) for a in allowed if a != OPTIONAL), None)


def _standardized(values: list[Any]) -> list[Any]:
    return [standardize(v) if isinstance(v, str) else v for v in values]


@dataclass
class Report:
    n: int = 0
    right_function: int = 0
    exact: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, verdict: Verdict) -> None:
        self.n += 1
        self.right_function += verdict.right_function
        self.exact += verdict.exact
        if verdict.error:
            self.errors[verdict.error] += 1

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "right_function": round(self.right_function / self.n, 4) if self.n else 0.0,
            "exact": round(self.exact / self.n, 4) if self.n else 0.0,
            "errors": dict(sorted(self.errors.items())),
        }


def score(rows: Sequence[Row], predictions: Mapping[str, ToolCall | None]) -> Report:
    report = Report()
    for row in rows:
        report.add(check(row, predictions.get(row.id)))
    return report
