"""BFCL simple_python rows: questions, possible answers, their tools, labels and the split.

A BFCL function is written in BFCL's own schema dialect (``dict``, ``float``, ``tuple``,
``any``, an ``optional`` marker); `json_schema` maps it to the JSON schema `Tool.from_schema`
takes. ``any`` becomes a string because BFCL's checker reads an ``any`` value as a Python
``str``. Functions with object-typed parameters (6 of 400) cannot be a `Tool`, which takes
flat arguments: they are `unsupported` and left out of training and evaluation alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from edge_agent.errors import DatasetError, ToolDefinitionError
from edge_agent.tools import Tool, Toolset
from edge_agent.types import Effect, ToolCall

CATEGORY = "simple_python"
QUESTIONS = f"BFCL_v4_{CATEGORY}.json"
ANSWERS = f"possible_answer/BFCL_v4_{CATEGORY}.json"
SPLIT_SEED = 20251216  # the date of the data snapshot; changing it changes every measurement
TEST_FRACTION = 0.3
OPTIONAL = ""  # in a list of allowed values: the parameter may be left out

_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": "string"}
_DROPPED_KEYS = {"optional"}  # BFCL's own marker; `required` already says it


@dataclass(frozen=True)
class Row:
    """One question, the one function offered, and the allowed values of each parameter."""

    id: str
    question: str
    function: dict[str, Any]  # as BFCL wrote it: the scorer reads its types
    answer: dict[str, list[Any]]  # parameter -> allowed values ("" = may be left out)

    @property
    def name(self) -> str:
        return str(self.function["name"])

    @property
    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = self.function.get("parameters", {})
        return params

    @cached_property
    def tool(self) -> Tool:
        """The function as a tool (ToolDefinitionError if the schema has no `Tool` form)."""
        return Tool.from_schema(
            self.name, self.function.get("description", ""), json_schema(self.parameters),
            handler=_never_run, effect=Effect.READ_ONLY,
        )  # fmt: skip

    def toolset(self) -> Toolset:
        return Toolset("bfcl", [self.tool])

    def label(self, *, minimal: bool = False) -> ToolCall:
        """The expected call: each parameter's first allowed value; an optional one is left out
        where "" is its first allowed value (``minimal``: wherever "" is allowed at all). A
        required one always takes its first real value: BFCL has required ones listing ""."""
        required = set(self.parameters.get("required", []))
        args = {}
        for key, allowed in self.answer.items():
            values = [v for v in allowed if v != OPTIONAL]
            omit = OPTIONAL in allowed if minimal else allowed[0] == OPTIONAL
            if values and (key in required or not omit):
                args[key] = values[0]
        return ToolCall(name=self.name, arguments=args)


def _never_run(**_: Any) -> None:
    raise ToolDefinitionError("a BFCL function is only scored, never run")


def json_schema(bfcl: Mapping[str, Any]) -> dict[str, Any]:
    """BFCL's schema dialect as JSON schema: its type names mapped, its own keys dropped."""
    out: dict[str, Any] = {}
    for key, value in bfcl.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "type":
            out[key] = _TYPES.get(value, value)
        elif key == "items":
            out[key] = json_schema(value)
        elif key == "properties":
            out[key] = {name: json_schema(prop) for name, prop in value.items()}
        else:
            out[key] = value
    return out


def supported(row: Row) -> bool:
    """Whether the row's function can be a `Tool` (flat arguments)."""
    try:
        _ = row.tool
    except ToolDefinitionError:
        return False
    return True


# --- loading ----------------------------------------------------------------------------------


def load(folder: str | Path) -> list[Row]:
    """The rows of a BFCL data folder (questions file + ``possible_answer/``), in file order."""
    folder = Path(folder)
    questions = _read_jsonl(folder / QUESTIONS)
    answers = {a["id"]: a for a in _read_jsonl(folder / ANSWERS)}
    return [_row(q, answers) for q in questions]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"cannot read BFCL file {path}: {exc}; point --data at a BFCL data folder "
            f"holding {QUESTIONS} and {ANSWERS}"
        ) from exc


def _row(question: dict[str, Any], answers: Mapping[str, dict[str, Any]]) -> Row:
    row_id = question.get("id", "?")
    try:
        (turn,) = question["question"]
        user = [m["content"] for m in turn if m["role"] == "user"]
        (function,) = question["function"]
        ((name, allowed),) = answers[row_id]["ground_truth"][0].items()
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(
            f"BFCL row {row_id} is not a one-turn, one-function, one-call row ({exc!r}); "
            f"only the {CATEGORY} category is supported"
        ) from exc
    if name != function.get("name") or len(user) != 1:
        raise DatasetError(f"BFCL row {row_id}: answer {name!r} does not match its function")
    return Row(id=row_id, question=user[0], function=function, answer=dict(allowed))


# --- the split --------------------------------------------------------------------------------


@dataclass
class Split:
    train: list[Row] = field(default_factory=list)
    test: list[Row] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # ids left out of both parts

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "test": len(self.test),
                "unsupported": len(self.unsupported)}  # fmt: skip


def in_test(row_id: str, *, seed: int = SPLIT_SEED, fraction: float = TEST_FRACTION) -> bool:
    """A row's part from a hash of its id alone: adding rows never moves another row."""
    digest = hashlib.sha256(f"{seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def make_split(
    rows: Iterable[Row], *, seed: int = SPLIT_SEED, fraction: float = TEST_FRACTION
) -> Split:
    """~`fraction` of rows to test, the rest to train; rows without a `Tool` form to neither."""
    split = Split()
    for row in rows:
        if not supported(row):
            split.unsupported.append(row.id)
        elif in_test(row.id, seed=seed, fraction=fraction):
            split.test.append(row)
        else:
            split.train.append(row)
    return split
