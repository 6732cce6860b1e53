"""`run` with a skill named in config.toml: the skill's tools, filed under its name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent import runtime
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.models.catalog import load_catalog
from edge_agent.models.plan import make_plan
from edge_agent.models.store import ModelStore
from tests.cli_support import run_cli
from tests.skills import thermostat_skill

CALL = '{"name": "set_temperature", "arguments": {"room": "kitchen", "celsius": 21}}'


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> ScriptedBackend:
    monkeypatch.setenv("EDGE_AGENT_LOG_KEY_SOURCE", "file")
    backend = ScriptedBackend([CALL, '{"answer": "done"}'])
    opened: list[object] = []

    def open_runtime(settings: object) -> runtime.Runtime:
        plan = make_plan(settings, load_catalog(), ModelStore(settings.models_dir, offline=True))  # type: ignore[attr-defined]
        opened.append(settings)
        return runtime.Runtime(settings, plan, backend)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime, "open_runtime", open_runtime)
    backend.opened = opened  # type: ignore[attr-defined]
    return backend


def _config(home: Path, text: str) -> None:
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text(text)


def test_a_config_skill_runs_from_the_cli_and_is_logged_under_its_name(
    capsys: pytest.CaptureFixture[str], scripted: ScriptedBackend, edge_home: Path
) -> None:
    _config(edge_home, '[skills.heat]\npython = "tests.skills.thermostat_skill:skill"\n')
    request = "set the kitchen temperature to 21"
    code, out, err = run_cli(capsys, "run", request, "--tools", "heat", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["skill"] == "heat" and result["toolset"]
    assert result["tool_calls"][0]["name"] == "set_temperature"
    assert thermostat_skill.ROOMS["kitchen"] == 21
    code, out, err = run_cli(capsys, "log", "list", "--json")
    assert code == 0, err
    assert [row["request"] for row in json.loads(out)] == [request]


def test_an_unknown_skill_fails_before_the_model_loads(
    capsys: pytest.CaptureFixture[str], scripted: ScriptedBackend
) -> None:
    code, _, err = run_cli(capsys, "run", "hello", "--tools", "nothing")
    assert code != 0
    assert "no skill named 'nothing'" in err and len(err.strip().splitlines()) == 1
    assert scripted.opened == []  # type: ignore[attr-defined]
