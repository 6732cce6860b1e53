"""The generic gate measure: the device's agent step over a skill's rebuilt tools, the logged
context in the prompt, the proposed call held (never run) and scored by the skill's scorer."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.backends.fake import ScriptedBackend
from edge_agent.host.evaluate import ANSWER, evaluate_skill, run_rows
from edge_agent.host.pipeline import export_adapter
from edge_agent.skills.skill import LabeledTurn
from edge_agent.tools import Toolset
from edge_agent.types import ToolCall
from tests.host.flywheel_support import thermostat
from tests.tinymodel import TinyLora, make_tiny_llama

SET = ToolCall(name="set_temperature", arguments={"room": "hall", "celsius": 20})
READ = ToolCall(name="read_sensor", arguments={"name": "hall"})


def rows() -> list[LabeledTurn]:
    return [
        LabeledTurn("r1", "set the hall to 20", "Rooms: hall, attic", SET, teacher=True),
        LabeledTurn("r2", "set the hall to 20 again", None, SET, teacher=True),
        LabeledTurn("r3", "what does the hall read", None, READ, teacher=True),
        LabeledTurn("r4", "how are you", None, None, teacher=True),
        LabeledTurn("r5", "read the hall", None, READ, teacher=True),
    ]


def rebuilt() -> Toolset:
    """The host's view: schemas only; running a tool would raise."""
    return Toolset.from_schemas("thermostat", thermostat().schemas())


def test_scores_each_proposed_call_with_the_skills_scorer_and_runs_nothing() -> None:
    backend = ScriptedBackend([
        '{"name": "set_temperature", "arguments": {"room": "Hall", "celsius": 20.0}}',  # exact
        '{"name": "set_temperature", "arguments": {"room": "hall", "celsius": 21}}',  # tool only
        '{"answer": "it reads 20"}',  # no call where one was due
        '{"answer": "fine"}',  # the label is an answer too: right
        "not json at all",  # no valid call: the turn fails
    ])  # fmt: skip
    evaluation = run_rows(backend, rebuilt(), rows())
    report = evaluation.report
    assert (report.n, report.failed, report.no_call) == (5, 1, 2)
    assert [r.exact for r in report.rows] == [True, False, False, True, False]
    assert [r.right_tool for r in report.rows] == [True, True, False, True, False]
    assert report.exact_match == pytest.approx(2 / 5)
    assert report.function_accuracy == pytest.approx(3 / 5)
    assert report.per_intent["set_temperature"].exact == 1
    assert report.per_intent[ANSWER].n == 1 and report.per_intent["read_sensor"].n == 2
    assert evaluation.predictions["r1"] == ToolCall(
        id=evaluation.predictions["r1"].id, name="set_temperature",  # type: ignore[union-attr]
        arguments={"room": "Hall", "celsius": 20.0})  # fmt: skip


def test_a_custom_scorer_decides_exactness() -> None:
    backend = ScriptedBackend(['{"name": "read_sensor", "arguments": {"name": "attic"}}'])
    same_tool = lambda got, gold: (got and got.name) == (gold and gold.name)  # noqa: E731
    report = run_rows(backend, rebuilt(), rows()[2:3], same_tool).report
    assert report.exact_match == 1.0


def test_the_logged_context_and_the_adapted_prompt_reach_the_model() -> None:
    backend = ScriptedBackend(['{"answer": "x"}'])
    backend.load_adapter("candidate", Path("unused.gguf"))
    run_rows(backend, rebuilt(), rows()[:1], adapter="candidate")
    system, user = backend.requests[0].messages
    assert user.content == "set the hall to 20\n\nRooms: hall, attic"
    assert "thermostat" in system.content and "set_temperature(" not in system.content


def test_runs_the_tiny_model_through_llama_cpp_with_and_without_an_adapter(
    tiny_lora: TinyLora, tmp_path: Path
) -> None:
    model = make_tiny_llama(tmp_path, context=2048).gguf_path
    adapter = export_adapter(tiny_lora.directory, tiny_lora.base.gguf_path, tmp_path / "a.gguf")
    bare = evaluate_skill(model, None, rebuilt(), rows(), n_ctx=2048, threads=1)
    adapted = evaluate_skill(model, adapter, rebuilt(), rows(), n_ctx=2048, threads=1)
    for evaluation in (bare, adapted):
        assert evaluation.report.n == 5 and len(evaluation.predictions) == 5
        assert evaluation.summary()["n"] == 5
