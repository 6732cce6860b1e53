"""The gate's decision and its report; the full turn on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.host.curate import curate_split
from edge_agent.host.finetune import TrainConfig
from edge_agent.host.gate import decide, write_report
from edge_agent.host.pipeline import export_adapter, run_turn
from edge_agent.skills.home.dataset import Row, load_split
from edge_agent.skills.home.score import Report, score
from edge_agent.types import ToolCall
from tests.tinymodel import TinyLora


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    return load_split("test")[:20]


def report(rows: list[Row], right: int, wrong_tool: int = 0) -> Report:
    """The first `right` rows exactly right, the next `wrong_tool` calling another tool."""
    preds: dict[str, ToolCall | None] = {r.id: r.call() for r in rows[:right]}
    preds |= {r.id: ToolCall(name="HassNevermind") for r in rows[right : right + wrong_tool]}
    return score(preds, rows)


def test_promotes_a_clear_gain(rows: list[Row]) -> None:
    decision = decide({"home": report(rows, 15)}, {"home": report(rows, 10)}, margin=0.05)
    assert decision.promote and decision.candidate["exact"] == 0.75


def test_rejects_a_gain_under_the_margin(rows: list[Row]) -> None:
    decision = decide({"home": report(rows, 11)}, {"home": report(rows, 10)}, margin=0.1)
    assert not decision.promote and "margin" in decision.reason


def test_rejects_a_regressing_skill_and_lists_worse_intents(rows: list[Row]) -> None:
    candidate = {"home": report(rows[5:] + rows[:5], 19), "other": report(rows, 1)}
    incumbent = {"home": report(rows, 10), "other": report(rows, 2)}
    decision = decide(candidate, incumbent)
    assert not decision.promote and "other" in decision.reason
    changed = decide({"home": report(rows[10:] + rows[:10], 10)}, {"home": report(rows, 10)})
    assert changed.regressed_intents  # same total, different intents


def test_report_has_json_and_plot(rows: list[Row], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    new, old = report(rows, 15), report(rows, 5)
    path = write_report(tmp_path, decide({"home": new}, {"home": old}), new, old)
    data = json.loads(path.read_text())
    assert data["promote"] and set(data["per_intent"]) == set(new.per_intent)
    assert (tmp_path / "gate.png").read_bytes().startswith(b"\x89PNG")


def test_a_whole_turn_on_the_tiny_model(tiny_lora: TinyLora, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    tiny_model = tiny_lora.base
    # the incumbent is an adapter: the bare base's full tool list overflows the tiny context
    incumbent = export_adapter(tiny_lora.directory, tiny_model.gguf_path, tmp_path / "old.gguf")
    parts = {"train": load_split("train")[:2], "validation": [], "test": load_split("test")[:2]}
    curated = curate_split(parts)
    config = TrainConfig(rank=2, batch_size=2, max_steps=1, threads=1)
    result = run_turn(curated, tiny_model.gguf_path, tmp_path, config=config,
                      incumbent=incumbent, progress=False)  # fmt: skip
    assert result.adapter.exists() and (tmp_path / "gate.json").exists()
    assert set(result.summary["minutes"]) == {"train", "export", "gate", "total"}
