"""BFCL simple_python: loading, schema mapping, the split, BFCL's scoring rules, examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent.backends.fake import ScriptedBackend
from edge_agent.errors import DatasetError
from edge_agent.host.curate import Record
from edge_agent.host.examples import IGNORE, Tokenizer, build_example
from edge_agent.prompt import call_json, messages_for
from edge_agent.skills.bfcl.dataset import Row, in_test, json_schema, load, make_split, supported
from edge_agent.skills.bfcl.evaluate import evaluate
from edge_agent.skills.bfcl.score import check, score, standardize
from edge_agent.types import ToolCall
from tests.tinymodel import TinyModel

FIXTURES = Path(__file__).parents[1] / "fixtures" / "bfcl"


@pytest.fixture(scope="module")
def rows() -> dict[str, Row]:
    return {r.id: r for r in load(FIXTURES)}


def row(rows: dict[str, Row], n: int) -> Row:
    return rows[f"simple_python_{n}"]


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall(name=name, arguments=arguments)


# --- loading and the schema dialect -----------------------------------------------------------


def test_loads_question_function_and_allowed_values(rows: dict[str, Row]) -> None:
    assert len(rows) == 30
    first = row(rows, 0)
    assert first.question.startswith("Find the area of a triangle")
    assert first.name == "calculate_triangle_area"
    assert first.answer == {"base": [10], "height": [5], "unit": ["units", ""]}


def test_missing_folder_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="possible_answer"):
        load(tmp_path)


def test_a_row_with_two_functions_is_refused(tmp_path: Path) -> None:
    for name in ("BFCL_v4_simple_python.json", "possible_answer/BFCL_v4_simple_python.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((FIXTURES / name).read_bytes())
    question = json.loads((FIXTURES / "BFCL_v4_simple_python.json").read_text().splitlines()[0])
    question["function"] *= 2
    (tmp_path / "BFCL_v4_simple_python.json").write_text(json.dumps(question) + "\n")
    with pytest.raises(DatasetError, match="simple_python_0 is not a one-turn"):
        load(tmp_path)


def test_bfcl_types_map_to_json_schema() -> None:
    bfcl = {
        "type": "dict", "required": ["a"],
        "properties": {
            "a": {"type": "float", "optional": True},
            "b": {"type": "tuple", "items": {"type": "float"}},
            "c": {"type": "any", "description": "data"},
        },
    }  # fmt: skip
    assert json_schema(bfcl) == {
        "type": "object", "required": ["a"],
        "properties": {
            "a": {"type": "number"},
            "b": {"type": "array", "items": {"type": "number"}},
            "c": {"type": "string", "description": "data"},
        },
    }  # fmt: skip


def test_rows_become_one_tool_toolsets(rows: dict[str, Row]) -> None:
    props = row(rows, 83).tool.parameters_schema()["properties"]  # tuple of floats
    assert props["coord1"]["type"] == "array" and props["coord1"]["items"] == {"type": "number"}
    assert row(rows, 109).tool.parameters_schema()["properties"]["data"]["type"] == "string"
    assert row(rows, 1).toolset().names == ["math.factorial"]  # a dotted name stays as it is
    assert not supported(row(rows, 89))  # an object parameter has no flat Tool form
    assert sum(supported(r) for r in rows.values()) == 29


def test_label_is_the_first_allowed_value_and_leaves_optional_ones_out(
    rows: dict[str, Row],
) -> None:
    assert row(rows, 0).label().arguments == {"base": 10, "height": 5, "unit": "units"}
    assert row(rows, 182).label().arguments == {"case_number": "XYZ123"}  # year: ["", 2023]
    # required, yet "" is listed first upstream: the first real value is the label
    assert row(rows, 200).label().arguments["fuel_efficiency"] == 25.0
    # minimal: also leave out an optional one whose allowed values include "" further on
    assert row(rows, 0).label(minimal=True).arguments == {"base": 10, "height": 5}
    assert row(rows, 200).label(minimal=True).arguments == {
        "distance": 12000, "fuel_type": "gas", "fuel_efficiency": 25.0,
    }  # fmt: skip
    assert all(check(r, r.label()).exact for r in rows.values())
    assert all(check(r, r.label(minimal=True)).exact for r in rows.values())


# --- the split --------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_complete(rows: dict[str, Row]) -> None:
    a, b = make_split(rows.values()), make_split(reversed(list(rows.values())))
    ids = {part: sorted(r.id for r in getattr(a, part)) for part in ("train", "test")}
    assert ids == {part: sorted(r.id for r in getattr(b, part)) for part in ("train", "test")}
    assert not set(ids["train"]) & set(ids["test"])
    assert set(ids["train"]) | set(ids["test"]) | set(a.unsupported) == set(rows)
    assert a.unsupported == ["simple_python_89"]
    # a row's part depends on its id alone: a subset splits the same way
    first10 = list(rows.values())[:10]
    subset = make_split(first10)
    assert {r.id for r in subset.test} == set(ids["test"]) & {r.id for r in first10}


def test_split_fraction_and_seed() -> None:
    ids = [f"simple_python_{i}" for i in range(2000)]
    share = sum(in_test(i) for i in ids) / len(ids)
    assert 0.27 < share < 0.33
    assert [in_test(i) for i in ids] != [in_test(i, seed=1) for i in ids]


# --- scoring (BFCL's AST rules) ---------------------------------------------------------------


def test_wrong_function_and_no_call(rows: dict[str, Row]) -> None:
    verdict = check(row(rows, 11), call("calculate_area", base=10, height=5))
    assert (verdict.right_function, verdict.exact, verdict.error) == (
        False,
        False,
        "wrong_function",
    )
    assert check(row(rows, 11), None).error == "no_call"


def test_required_unknown_and_optional_parameters(rows: dict[str, Row]) -> None:
    triangle = row(rows, 0)
    assert check(triangle, call(triangle.name, base=10, height=5)).exact  # unit may be omitted
    assert check(triangle, call(triangle.name, base=10)).error == "missing_required"
    extra = call(triangle.name, base=10, height=5, color="red")
    assert check(triangle, extra).error == "unexpected_param"
    # root_type is optional in the schema, but the answer has no "": leaving it out fails
    quad = row(rows, 5)
    verdict = check(quad, call(quad.name, a=3, b=-11, c=-4))
    assert (verdict.right_function, verdict.exact, verdict.error) == (
        True,
        False,
        "missing_optional",
    )


def test_numbers_compare_numerically_with_bfcl_types(rows: dict[str, Row]) -> None:
    emissions = row(rows, 200)  # fuel_efficiency: float, allowed ["", 25.0]
    ok = call(emissions.name, distance=12000, fuel_type="gas", fuel_efficiency=25)
    assert check(emissions, ok).exact  # an int where a float is expected
    quad = row(rows, 3)  # a, b, c: integer
    assert check(quad, call(quad.name, a=1, b=-3, c=2)).exact
    assert check(quad, call(quad.name, a=1.0, b=-3, c=2)).error == "type"  # float for an int
    assert check(quad, call(quad.name, a=True, b=-3, c=2)).error == "type"  # a bool is no int
    assert check(quad, call(quad.name, a=1, b=3, c=2)).error == "value"
    distance = row(rows, 83)  # tuple of floats: ints inside it are not floats to BFCL
    coords = {"coord2": [34.0522, -118.2437], "unit": "miles"}
    assert check(distance, call(distance.name, coord1=[33.4484, -112.074], **coords)).exact
    assert check(distance, call(distance.name, coord1=[33, -112], **coords)).error == "type"


def test_strings_are_normalized_as_bfcl_does(rows: dict[str, Row]) -> None:
    assert standardize("Jan 28, 2021") == standardize("Jan.28,2021") == "jan282021"
    game = row(rows, 307)  # date allowed: "2021-01-28", "01/28/2021", "Jan.28,2021"
    teams = ["Lakers", "clippers"]
    assert check(game, call(game.name, teams=teams, date="JAN 28, 2021")).exact
    assert check(game, call(game.name, teams=teams, date="2021-01-29")).error == "value"
    # lists compare element-wise in order; either listed order is allowed
    assert check(game, call(game.name, teams=teams[::-1], date="2021-01-28")).exact
    assert not check(game, call(game.name, teams=["Lakers"], date="2021-01-28")).exact
    # an allowed value of another type than the schema's is compared as is ("variable")
    assert check(game, call(game.name, teams=teams, date="2021-01-28", venue=True)).exact
    assert check(game, call(game.name, teams=teams, date="2021-01-28", venue="x")).error == (
        "value"
    )


def test_report_counts_right_function_exact_and_errors(rows: dict[str, Row]) -> None:
    parts = [row(rows, 3), row(rows, 11)]
    predictions = {parts[0].id: parts[0].label(), parts[1].id: None}
    assert score(parts, predictions).summary() == {
        "n": 2, "right_function": 0.5, "exact": 0.5, "errors": {"no_call": 1},
    }  # fmt: skip


def test_evaluate_runs_one_constrained_request_per_row(rows: dict[str, Row]) -> None:
    parts = [row(rows, 3), row(rows, 11), row(rows, 0)]
    cut_off = '{"name": "calculate_triangle_area", "arguments": {"base": 1'
    backend = ScriptedBackend(
        [call_json(parts[0].label(), parts[0].toolset()), '{"answer": "it is 25"}', cut_off]
    )
    summary = evaluate(backend, parts, allow_answer=True).summary()
    assert (summary["n"], summary["exact"], summary["errors"]) == (3, 0.3333, {"no_call": 2})
    assert summary["unparsed"] == 1
    first = backend.requests[0]
    assert first.messages == messages_for(parts[0].question, parts[0].toolset())
    assert "algebra.quadratic_roots(a: int, b: int, c: int)" in first.messages[0].content
    assert len(first.json_schema["anyOf"]) == 2  # type: ignore[index]  # the call or an answer


# --- training examples ------------------------------------------------------------------------


def test_example_keeps_the_tool_in_the_prompt(tiny_model: TinyModel, rows: dict[str, Row]) -> None:
    r = row(rows, 200)
    tokenizer = Tokenizer(tiny_model.gguf_path)
    try:
        record = Record(id=r.id, request=r.question, call=r.label(), skill="bfcl")
        example = build_example(record, r.toolset(), tokenizer, adapted=False)
        messages = messages_for(r.question, r.toolset(), adapted=False)
        prompt = tokenizer.prompt(messages)
        answer = tokenizer.answer(call_json(r.label(), r.toolset()))
    finally:
        tokenizer.close()
    assert "calculate_emissions(distance: int" in messages[0].content
    assert example.input_ids == prompt + answer
    assert example.labels == [IGNORE] * len(prompt) + answer
    text = call_json(r.label(), r.toolset())  # the grammar's order: required, then optional
    assert text.index("fuel_efficiency") < text.index("efficiency_reduction")
