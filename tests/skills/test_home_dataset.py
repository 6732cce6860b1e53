"""The HA rows, the committed split (disjoint, complete, stratified, reproducible) and scoring."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from edge_agent.skills.home.dataset import (
    SPLITS,
    Row,
    deduplicate,
    load_rows,
    load_split,
    make_split,
    split_ids,
)
from edge_agent.skills.home.score import normalize, score, values_match
from edge_agent.types import ToolCall

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return load_rows()


def row(**fields: object) -> Row:
    base: dict[str, object] = {
        "id": "x#0.0", "sentence": "s", "intent": "HassTurnOn", "slots": {}, "context": {},
        "source_file": "tests/en/x.yaml", "fixtures": "tests/en/_fixtures.yaml",
    }  # fmt: skip
    return Row.model_validate(base | fields)


def test_rows_load_with_their_intents(rows: list[Row]) -> None:
    assert len(rows) == 1089
    assert len({r.intent for r in rows}) == 33
    assert len({r.id for r in rows}) == len(rows)


def test_expected_call_is_canonical(rows: list[Row]) -> None:
    by_id = {r.id: r for r in rows}
    timer = by_id["homeassistant_HassStartTimer.yaml#10.0"].call()
    assert timer.name == "HassStartTimer"
    assert timer.arguments["name"] == "pizza"  # alternatives ["pizza ", "pizza"] -> one, trimmed
    assert list(timer.arguments) == ["minutes", "name"]  # intents.yaml order, not the file's
    light = by_id["HassLightSet/name_brightness.yaml#0.0"].call()
    assert light.arguments == {"name": "Overhead Light", "brightness": 100}


def test_speaker_area_comes_from_context(rows: list[Row]) -> None:
    areas = Counter(r.speaker_area for r in rows)
    assert areas["Living Room"] > 100 and areas["Office"] == 4 and areas[None] > 800


# --- the split --------------------------------------------------------------------------------


def test_split_parts_are_disjoint_and_cover_the_deduplicated_rows(rows: list[Row]) -> None:
    parts = {name: set(split_ids(name)) for name in SPLITS}
    kept, duplicates, conflicting = deduplicate(rows)
    assert not parts["train"] & parts["test"]
    assert not parts["train"] & parts["validation"]
    assert not parts["validation"] & parts["test"]
    assert set().union(*parts.values()) == {r.id for r in kept}
    assert len(kept) + len(duplicates) + len(conflicting) == len(rows)


def test_no_sentence_appears_in_two_parts(rows: list[Row]) -> None:
    by_id = {r.id: r for r in rows}
    seen: dict[str, str] = {}
    for name in SPLITS:
        for i in split_ids(name):
            key = " ".join(by_id[i].sentence.casefold().split()).rstrip("?.!")
            assert seen.setdefault(key, name) == name, key


def test_conflicting_sentences_are_dropped_entirely(rows: list[Row]) -> None:
    _, _, conflicting = deduplicate(rows)
    sentences = {r.sentence.casefold() for r in rows if r.id in conflicting}
    assert {"lights off", "lights on", "play the office"} <= sentences
    kept = {i for name in SPLITS for i in split_ids(name)}
    assert not kept & set(conflicting)


def test_dedup_keeps_first_of_identical_labels_and_drops_conflicts() -> None:
    a = row(id="a#0.0", sentence="Lights on", slots={"domain": "light"})
    b = row(id="b#0.0", sentence="lights on!", slots={"domain": "LIGHT"})  # same label
    c = row(id="c#0.0", sentence="fan on", slots={"domain": "fan"})
    d = row(id="d#0.0", sentence="Fan on", slots={"domain": "fan", "area": "Kitchen"})
    kept, duplicates, conflicting = deduplicate([a, b, c, d])
    assert [r.id for r in kept] == ["a#0.0"]
    assert duplicates == ["b#0.0"] and conflicting == ["c#0.0", "d#0.0"]


def test_split_is_stratified_about_80_20_with_validation_from_train(rows: list[Row]) -> None:
    parts = {name: load_split(name, rows) for name in SPLITS}
    counts = {name: Counter(r.intent for r in part) for name, part in parts.items()}
    kept, _, _ = deduplicate(rows)
    total = Counter(r.intent for r in kept)
    for intent, n in total.items():
        if n >= 2:
            assert counts["train"][intent] >= 1, intent
            assert counts["test"][intent] >= 1, intent
    for intent in ("HassTurnOn", "HassGetState", "HassTurnOff"):
        assert counts["test"][intent] / total[intent] == pytest.approx(0.2, abs=0.02)
    held_out = len(parts["test"]) / len(kept)
    assert held_out == pytest.approx(0.2, abs=0.02)
    train_all = len(parts["train"]) + len(parts["validation"])
    assert len(parts["validation"]) / train_all == pytest.approx(0.09, abs=0.03)


def test_split_depends_on_the_seed(rows: list[Row]) -> None:
    assert make_split(rows, seed=1).test != make_split(rows, seed=2).test
    assert make_split(rows, seed=1).test == make_split(list(reversed(rows)), seed=1).test


def test_script_reproduces_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "make_ha_split.py"
    argv = [sys.executable, str(script), "--out", str(tmp_path)]
    done = subprocess.run(argv, check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    committed = ROOT / "edge_agent" / "data" / "ha_split"
    for name in SPLITS:
        assert (tmp_path / f"{name}.txt").read_bytes() == (committed / f"{name}.txt").read_bytes()
    check = subprocess.run([sys.executable, str(script), "--check"], check=False)
    assert check.returncode == 0


def test_script_check_fails_on_stale_files(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "make_ha_split.py"
    (tmp_path / "train.txt").write_text("nope\n")
    argv = [sys.executable, str(script), "--check", "--out", str(tmp_path)]
    check = subprocess.run(argv, check=False, capture_output=True)
    assert check.returncode == 1


# --- scoring ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "predicted", "same"),
    [
        ("Living Room", "living  room ", True),  # case-folding, spacing
        ("Kitchen", "Kitchens", False),
        (50, 50.0, True),  # numbers numeric
        (50, "50", True),
        (20.5, "20.50", True),
        (50, 51, False),
        (["pizza ", "pizza"], "Pizza", True),  # one of the accepted alternatives
        (["pizza"], "pasta", False),
        (["a", "b"], ["B", "a"], True),  # lists as sets
        (["a", "b"], ["a"], False),
        ("a", ["A"], True),
        ("a", ["a", "b"], False),
        (True, 1, False),
    ],
)
def test_value_normalization(expected: object, predicted: object, same: bool) -> None:
    assert values_match(expected, predicted) is same


def test_normalize_keeps_non_numbers_as_text() -> None:
    assert normalize("1.2.3") == "1.2.3" and normalize(" NaN ") == "nan"


def call(tool: str, **args: object) -> ToolCall:
    return ToolCall(name=tool, arguments=args)


def test_score_counts_tools_exact_calls_and_slots() -> None:
    rows = [
        row(id="r1", intent="HassTurnOn", slots={"area": "Kitchen", "domain": "light"}),
        row(id="r2", intent="HassLightSet", slots={"name": "Lamp", "brightness": 50}),
        row(id="r3", intent="HassTurnOff", slots={"name": "Fan"}),
        row(id="r4", intent="HassGetState", slots={"name": "Door"}),
    ]
    predictions = {
        "r1": call("HassTurnOn", area="kitchen", domain="light"),  # exact
        "r2": call("HassLightSet", name="lamp", brightness=40),  # right tool, wrong value
        "r3": call("HassTurnOn", name="Fan", area=None),  # wrong tool; null is absent
    }  # r4: no call
    report = score(predictions, rows)
    assert (report.n, report.no_call) == (4, 1)
    assert report.function_accuracy == 0.5
    assert report.exact_match == 0.25
    # slots: tp = area, domain, name(r2), name(r3) = 4; fp = brightness; fn = brightness, name(r4)
    assert report.slot_precision == pytest.approx(4 / 5)
    assert report.slot_recall == pytest.approx(4 / 6)
    assert report.slot_f1 == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))
    assert report.per_slot["brightness"].model_dump() == {
        "support": 1, "true_positives": 0, "false_positives": 1, "false_negatives": 1,
        "precision": 0.0, "recall": 0.0, "f1": 0.0,
    }  # fmt: skip
    assert report.per_intent["HassTurnOff"].model_dump() == {"n": 1, "right_tool": 0, "exact": 0}
    assert [r.exact for r in report.rows] == [True, False, False, False]


def test_extra_or_missing_argument_is_not_exact() -> None:
    rows = [row(id="r", intent="HassTurnOn", slots={"domain": "light", "area": "Living Room"})]
    assert score({"r": call("HassTurnOn", domain="light")}, rows).exact_match == 0.0
    extra = call("HassTurnOn", domain="light", area="Living Room", floor="First Floor")
    assert score({"r": extra}, rows).exact_match == 0.0
    assert (
        score({"r": call("HassTurnOn", domain="light", area="living room")}, rows).exact_match
        == 1.0
    )


def test_gold_calls_score_perfectly_on_the_test_split(rows: list[Row]) -> None:
    test = load_split("test", rows)
    report = score({r.id: r.call() for r in test}, test)
    assert report.exact_match == 1.0 and report.slot_f1 == 1.0
