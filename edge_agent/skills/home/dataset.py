"""The Home Assistant intent sentences as evaluation rows, and the committed split.

Each row is evaluated in its own home: the shared `_fixtures.yaml`, or the entities its test
file declares inline (those replace the shared ones, as upstream), with per-test `timers` /
`media` overrides. Its context area is the speaker's area.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edge_agent.skills.home.inventory import (
    Inventory,
    inventory_from_fixtures,
    load_yaml,
    vendored_path,
)
from edge_agent.skills.home.score import normalize
from edge_agent.types import ToolCall

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")
SPLIT_SEED = 20250704  # the snapshot date; changing it changes every later measurement
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.1  # of what is left for training
_SHARED = "tests/en/_fixtures.yaml"


class Row(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str  # "<file>#<test>.<sentence>"
    sentence: str
    intent: str
    slots: dict[str, Any]
    context: dict[str, Any]
    response: str | None = None
    source_file: str
    fixtures: str

    @property
    def speaker_area(self) -> str | None:
        area = self.context.get("area")
        return str(area) if area else None

    @property
    def test_index(self) -> int:
        return int(self.id.rsplit("#", 1)[1].split(".", 1)[0])

    def call(self) -> ToolCall:
        """The expected call, canonical: arguments in the tool's order, alternatives as one."""
        order = slot_order(self.intent)
        names = sorted(self.slots, key=lambda s: (order.index(s) if s in order else len(order), s))
        return ToolCall(name=self.intent, arguments={s: _canonical(self.slots[s]) for s in names})

    def inventory(self) -> Inventory:
        """This row's home (a fresh copy; the toolset may change it)."""
        # the shared home has no per-test part (and a field record's id is no test id)
        index = 0 if self.fixtures == _SHARED else self.test_index
        return _fixtures(self.source_file, self.fixtures, index).model_copy(deep=True)


def load_rows(path: str | Path | None = None) -> list[Row]:
    """All rows, in file order (the vendored JSONL unless `path` is given)."""
    path = Path(path) if path else vendored_path("ha_intents_en_tests.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Row.model_validate_json(line) for line in lines if line.strip()]


def load_split(name: SplitName, rows: Sequence[Row] | None = None) -> list[Row]:
    """The rows of one part of the committed split, in id order."""
    ids = split_ids(name)
    by_id = {r.id: r for r in (rows if rows is not None else load_rows())}
    return [by_id[i] for i in ids]


def split_ids(name: SplitName) -> list[str]:
    text = resources.files("edge_agent").joinpath("data", "ha_split", f"{name}.txt").read_text()
    return [line for line in text.splitlines() if line]


@cache
def slot_order(intent: str) -> list[str]:
    """The intent's slots in intents.yaml order: the tool schema's and the grammar's order."""
    return list((intent_definitions()[intent].get("slots") or {}).keys())


@cache
def intent_definitions() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = load_yaml(vendored_path("intents.yaml").read_text())
    return data


def _canonical(value: Any) -> Any:
    # upstream lists accepted alternatives ("pizza ", "pizza"): the first, trimmed, is the label
    if isinstance(value, list):
        value = value[0]
    return value.strip() if isinstance(value, str) else value


@cache
def _fixtures(source_file: str, fixtures: str, test_index: int) -> Inventory:
    relative = source_file.removeprefix("tests/en/")
    if fixtures == _SHARED:
        return Inventory.default()
    data = dict(load_yaml(vendored_path(f"tests_en/{relative}").read_text()))
    test = data["tests"][test_index]
    data.update({k: test[k] for k in ("timers", "media", "entities", "areas") if k in test})
    return inventory_from_fixtures(data, source=relative)


# --- the split ------------------------------------------------------------------------------


@dataclass
class Split:
    train: list[str] = field(default_factory=list)
    validation: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # same sentence and label as a kept row
    conflicting: list[str] = field(default_factory=list)  # same sentence, different labels

    def part(self, name: SplitName) -> list[str]:
        return list(getattr(self, name))


def sentence_key(sentence: str) -> str:
    """Sentences that differ only in case, spacing or final punctuation are the same."""
    return " ".join(sentence.split()).casefold().rstrip("?.!")


def label_key(row: Row) -> str:
    slots = {k: repr(normalize(v)) for k, v in row.slots.items()}
    return json.dumps([row.intent, slots], sort_keys=True)


def deduplicate(rows: Iterable[Row]) -> tuple[list[Row], list[str], list[str]]:
    """(kept rows, duplicate ids, conflicting ids): per sentence the row with the smallest id,
    none if the labels differ."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[sentence_key(row.sentence)].append(row)
    kept, duplicates, conflicting = [], [], []
    for group in groups.values():
        if len({label_key(r) for r in group}) > 1:
            conflicting += [r.id for r in group]
            continue
        first, *others = sorted(group, key=lambda r: r.id)  # whatever order the rows came in
        kept.append(first)
        duplicates += [r.id for r in others]
    return kept, duplicates, conflicting


def _order(row_id: str, seed: int) -> str:
    # a hash, not random.shuffle: the same split on every Python version and platform
    return hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()


def _share(n: int, fraction: float) -> int:
    """How many of n go to the held-out part: about `fraction`, at least one, never all."""
    return 0 if n < 2 else min(n - 1, max(1, int(n * fraction + 0.5)))


def make_split(rows: Sequence[Row], seed: int = SPLIT_SEED) -> Split:
    """Deduplicate, then per intent: ~20 % test, ~10 % of the rest validation, the rest train."""
    kept, duplicates, conflicting = deduplicate(rows)
    by_intent: dict[str, list[str]] = defaultdict(list)
    for row in kept:
        by_intent[row.intent].append(row.id)
    split = Split(duplicates=sorted(duplicates), conflicting=sorted(conflicting))
    for ids in by_intent.values():
        ids.sort(key=lambda i: _order(i, seed))
        n_test = _share(len(ids), TEST_FRACTION)
        rest = ids[n_test:]
        n_val = _share(len(rest), VALIDATION_FRACTION) if len(rest) >= 10 else 0
        split.test += ids[:n_test]
        split.validation += rest[:n_val]
        split.train += rest[n_val:]
    for name in SPLITS:
        getattr(split, name).sort()
    return split
