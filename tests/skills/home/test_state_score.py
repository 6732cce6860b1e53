"""State scoring: a call is right when it does to the home what the gold call does."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_agent import prompt
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.skills.home.dataset import load_split
from edge_agent.skills.home.inventory import Area, Entity, Inventory
from edge_agent.skills.home.state_score import evaluate_state, execute, same_effect, score_call
from edge_agent.skills.home.synth import Command
from edge_agent.skills.home.toolset import home_toolset
from edge_agent.types import ToolCall


def _home():
    return Inventory(
        areas=[Area(id="kitchen", name="Kitchen"), Area(id="bedroom", name="Bedroom")],
        entities=[
            Entity(id="light.kitchen_lamp", name="Kitchen Lamp", area="kitchen", state="off"),
            Entity(id="light.bedroom_lamp", name="Bedroom Lamp", area="bedroom", state="off"),
        ],
    )


def _call(tool, **arguments):
    return ToolCall(name=tool, arguments=arguments)


def test_the_gold_call_changes_the_home():
    before = execute(_call("HassGetCurrentDate"), _home())
    after = execute(_call("HassTurnOn", name="Kitchen Lamp"), _home())
    assert after.ok and after.state != before.state


def test_other_arguments_with_the_same_effect_count_and_a_different_effect_does_not():
    gold = execute(_call("HassTurnOn", name="Kitchen Lamp"), _home())
    by_area = execute(_call("HassTurnOn", area="Kitchen", domain="light"), _home())
    other = execute(_call("HassTurnOn", name="Bedroom Lamp"), _home())
    assert same_effect(by_area, gold)
    assert not same_effect(other, gold)


def test_questions_are_scored_by_their_answer():
    gold = execute(_call("HassGetState", name="Kitchen Lamp"), _home())
    wrong = execute(_call("HassGetState", name="Bedroom Lamp"), _home())
    assert same_effect(gold, gold) and not same_effect(wrong, gold)


def test_a_failing_call_never_counts():
    failed = execute(_call("HassTurnOn", name="Garage Door"), _home())
    assert not failed.ok and not same_effect(failed, failed)


def test_where_the_home_cannot_run_the_gold_call_exact_match_decides():
    item = SmallHomeCommand(slots={"name": "Garage Door"})  # not in this home
    right = score_call(item, _call("HassTurnOn", name="Garage Door"))
    wrong = score_call(item, _call("HassTurnOn", name="Kitchen Lamp"))
    assert (right.state, right.by_state) == (True, False)
    assert (wrong.state, wrong.by_state) == (False, False)


@dataclass
class SmallHomeCommand:  # a scoring item (state_score.Item) in the small home above
    id: str = "c1"
    sentence: str = "switch the kitchen lamp on"
    intent: str = "HassTurnOn"
    slots: dict = field(default_factory=lambda: {"name": "Kitchen Lamp"})
    speaker_area: str | None = None

    def inventory(self):
        return _home()

    def call(self):
        return ToolCall(name=self.intent, arguments=self.slots)


def test_score_call_reports_exact_and_state_apart():
    item = SmallHomeCommand()
    scored = score_call(item, _call("HassTurnOn", area="Kitchen", domain="light"))
    assert (scored.exact, scored.state) == (False, True)
    scored = score_call(item, _call("HassTurnOn", name="Kitchen Lamp"))
    assert (scored.exact, scored.state) == (True, True)
    scored = score_call(item, _call("HassTurnOff", name="Kitchen Lamp"))
    assert (scored.exact, scored.state) == (False, False)
    assert not score_call(item, None).state


def test_evaluate_state_runs_each_row_in_its_home_and_scores_both_ways():
    rows = load_split("test")[:12]
    ts = home_toolset()
    outputs = [prompt.call_json(r.call(), ts) for r in rows]
    outputs[0] = json.dumps({"name": "HassNevermind", "arguments": {}})  # wrong
    report = evaluate_state(ScriptedBackend(outputs), rows)
    summary = report.summary()
    assert summary["n"] == 12
    assert summary["exact"] == pytest.approx(11 / 12)
    runs = [execute(r.call(), r.inventory(), r.speaker_area, r.sentence).ok for r in rows]
    assert [r.state for r in report.rows] == [False] + [True] * 11  # unjudgeable: exact decides
    assert [r.by_state for r in report.rows] == runs
    assert not report.rows[0].state and not report.rows[0].exact
    assert sum(r["n"] for r in report.per_intent().values()) == 12
    assert summary["p50_ms"] > 0


@pytest.mark.integration
def test_the_shipped_adapter_through_llama_cpp_is_scored_both_ways(tmp_path):
    from edge_agent.backends.llama_cpp import LlamaCppBackend
    from edge_agent.models.catalog import load_catalog
    from edge_agent.models.store import ModelStore

    cmds = [
        Command(id="a", sentence="turn off the coffee maker", intent="HassTurnOff",
                slots={"name": "Coffee Maker"}, home="heldout-29", area="Kitchen"),
        Command(id="b", sentence="what time is it", intent="HassGetCurrentTime", slots={},
                home="heldout-29"),
    ]  # fmt: skip
    model = ModelStore(tmp_path / "models").ensure(load_catalog().default())
    shipped = (
        Path(__file__).resolve().parents[3] / "edge_agent/data/adapters/home-smollm2-135m.gguf"
    )
    with LlamaCppBackend(model, n_ctx=2048, n_threads=1) as backend:
        backend.load_adapter("home", shipped)
        backend.use_adapter("home")
        report = evaluate_state(backend, cmds, adapter="home")
    assert [r.id for r in report.rows] == ["a", "b"]
    assert all(r.latency_ms > 0 and r.predicted is not None for r in report.rows)
    assert all(r.state for r in report.rows if r.exact)  # an exact call does the same thing
    assert report.rows[1].exact  # no arguments to get wrong
