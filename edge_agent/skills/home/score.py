"""Score tool calls against the Home Assistant rows: right tool, exact call, per-slot P/R/F1.

Values compare after normalization: strings case-folded with spacing collapsed, numbers (and
numeric strings) as numbers, lists as sets. Upstream a list-valued slot lists accepted
alternatives, so a single predicted value matches if it is one of them. A missing or null
argument is an absent slot. Slots filled from the row's context (the speaker's area) are
required like any other: the model gets that area in its prompt.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, computed_field

from edge_agent.types import ToolCall

if TYPE_CHECKING:
    from edge_agent.skills.home.dataset import Row

_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def normalize(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = " ".join(value.split()).casefold()
        return float(text) if _NUMBER.fullmatch(text) else text
    if isinstance(value, list | tuple | set | frozenset):
        return frozenset(normalize(v) for v in value)
    return value


def values_match(expected: Any, predicted: Any) -> bool:
    if isinstance(expected, bool) != isinstance(predicted, bool):
        return False  # True == 1 in Python, not in a tool call
    want, got = normalize(expected), normalize(predicted)
    if isinstance(want, frozenset) and not isinstance(got, frozenset):
        return got in want  # one of the accepted alternatives
    if isinstance(got, frozenset) and not isinstance(want, frozenset):
        return got == frozenset({want})
    return bool(want == got)


def arguments(call: ToolCall | None) -> dict[str, Any]:
    return {k: v for k, v in (call.arguments if call else {}).items() if v is not None}


def call_matches(expected: Mapping[str, Any], name: str, call: ToolCall | None) -> bool:
    """Right tool and exactly the expected slots with matching values."""
    if call is None or call.name != name:
        return False
    got = arguments(call)
    return got.keys() == expected.keys() and all(values_match(expected[k], got[k]) for k in got)


class SlotScore(BaseModel):
    support: int = 0  # expected occurrences
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def precision(self) -> float:
        return _ratio(self.true_positives, self.true_positives + self.false_positives)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def recall(self) -> float:
        return _ratio(self.true_positives, self.true_positives + self.false_negatives)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return _ratio(2 * p * r, p + r)


class RowScore(BaseModel):
    id: str
    intent: str
    predicted: str | None  # the called tool, None for no call
    right_tool: bool
    exact: bool


class IntentScore(BaseModel):
    n: int = 0
    right_tool: int = 0
    exact: int = 0


class Report(BaseModel):
    n: int
    function_accuracy: float  # right tool
    exact_match: float  # right tool and arguments
    no_call: int  # rows answered without a call
    slot_precision: float
    slot_recall: float
    slot_f1: float
    per_slot: dict[str, SlotScore] = Field(default_factory=dict)
    per_intent: dict[str, IntentScore] = Field(default_factory=dict)
    rows: list[RowScore] = Field(default_factory=list)


def score(predictions: Mapping[str, ToolCall | None], rows: Sequence[Row]) -> Report:
    """Score predicted calls (by row id; a missing id is no call) on the rows.

    Slot counts include rows whose tool is wrong: a slot is credited if its name and value
    match, whatever the tool.
    """
    per_slot: dict[str, SlotScore] = defaultdict(SlotScore)
    per_intent: dict[str, IntentScore] = defaultdict(IntentScore)
    results = [_score_row(row, predictions.get(row.id), per_slot) for row in rows]
    for result in results:
        counts = per_intent[result.intent]
        counts.n += 1
        counts.right_tool += result.right_tool
        counts.exact += result.exact
    total = SlotScore()
    for s in per_slot.values():
        total.true_positives += s.true_positives
        total.false_positives += s.false_positives
        total.false_negatives += s.false_negatives
    return Report(
        n=len(rows),
        function_accuracy=_ratio(sum(r.right_tool for r in results), len(rows)),
        exact_match=_ratio(sum(r.exact for r in results), len(rows)),
        no_call=sum(r.predicted is None for r in results),
        slot_precision=total.precision,
        slot_recall=total.recall,
        slot_f1=total.f1,
        per_slot=dict(sorted(per_slot.items())),
        per_intent=dict(sorted(per_intent.items())),
        rows=results,
    )


def _score_row(row: Row, call: ToolCall | None, per_slot: dict[str, SlotScore]) -> RowScore:
    got = arguments(call)
    for slot in row.slots.keys() | got.keys():
        counts = per_slot[slot]
        hit = slot in row.slots and slot in got and values_match(row.slots[slot], got[slot])
        counts.support += slot in row.slots
        counts.true_positives += hit
        counts.false_positives += slot in got and not hit
        counts.false_negatives += slot in row.slots and not hit
    return RowScore(
        id=row.id,
        intent=row.intent,
        predicted=call.name if call else None,
        right_tool=call is not None and call.name == row.intent,
        exact=call_matches(row.slots, row.intent, call),
    )


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0
