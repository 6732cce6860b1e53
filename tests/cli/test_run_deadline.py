"""`edge-agent run` past turn_deadline_s: one readable line, exit 7 (AgentError), and the turn
is in the log all the same. The real runtime and log, on a ScriptedBackend (the test seam)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent import runtime
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.models.catalog import load_catalog
from edge_agent.models.plan import make_plan
from edge_agent.models.store import ModelStore
from edge_agent.settings import Settings
from tests.cli_support import run_cli

CALL = '{"name": "set_temperature", "arguments": {"room": "kitchen", "celsius": 21}}'


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch, edge_home: Path) -> ScriptedBackend:
    monkeypatch.setenv("EDGE_AGENT_LOG_KEY_SOURCE", "file")
    backend = ScriptedBackend([CALL, '{"answer": "done"}'])

    def open_runtime(settings: Settings) -> runtime.Runtime:
        plan = make_plan(settings, load_catalog(), ModelStore(settings.models_dir, offline=True))
        return runtime.Runtime(settings, plan, backend)

    monkeypatch.setattr(runtime, "open_runtime", open_runtime)
    (edge_home / "config").mkdir(parents=True, exist_ok=True)
    (edge_home / "config" / "config.toml").write_text(
        # a microsecond: spent before the first generation can start
        "turn_deadline_s = 0.000001\n"
        '[skills.heat]\npython = "tests.skills.thermostat_skill:skill"\n'
    )
    return backend


def test_a_turn_past_its_deadline_is_one_line_exit_7_and_logged(
    capsys: pytest.CaptureFixture[str], scripted: ScriptedBackend
) -> None:
    code, _, err = run_cli(capsys, "run", "set the kitchen to 21", "--tools", "heat")
    assert code == 7
    [line] = err.strip().splitlines()
    assert "past its deadline" in line and "turn_deadline_s" in line
    assert scripted.requests == []  # nothing generated, nothing ran
    code, out, err = run_cli(capsys, "log", "list", "--json")
    assert code == 0, err
    [row] = json.loads(out)
    assert row["request"] == "set the kitchen to 21" and row["outcome"] == "timeout"


def test_json_output_still_shows_the_timed_out_turn(
    capsys: pytest.CaptureFixture[str], scripted: ScriptedBackend
) -> None:
    code, out, err = run_cli(capsys, "run", "set the kitchen to 21", "--tools", "heat", "--json")
    assert code == 7 and len(err.strip().splitlines()) == 1
    assert json.loads(out)["outcome"] == "timeout"
