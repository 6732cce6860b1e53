"""`edge-agent route calibrate --skill NAME --from-log`: any skill's thresholds from the
device's own log (its teacher-labelled shadow attempts, scored by the skill's own scorer),
stored beside other skills'. A real runtime (the tiny llama in llama.cpp) says which adapter
the skill runs now; the log is the real sealed log, written with crafted turns."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edge_agent.cli._common import plan_for
from edge_agent.logstore import open_log
from edge_agent.routing.calibration import calibration_for
from edge_agent.routing.router import Calibrations, SignalRecord
from edge_agent.settings import load_settings
from edge_agent.types import (
    AgentResult,
    Effect,
    LocalAttempt,
    RouteSignals,
    Routing,
    ToolCall,
    ToolOutcome,
)
from tests.cli_support import run_cli
from tests.skills import thermostat_skill
from tests.tinymodel import TinyModel


def within_half_a_degree(got: ToolCall | None, gold: ToolCall | None) -> bool:
    """The heat skill's scorer: a setting half a degree off is as good."""
    if got is None or gold is None:
        return got is gold
    close = abs(got.arguments["celsius"] - gold.arguments["celsius"]) <= 0.5
    return got.name == gold.name and close


# the skill config.toml names (python = "tests.cli.test_route_calibrate:HEAT")
HEAT = dataclasses.replace(thermostat_skill.skill, name="heat", scorer=within_half_a_degree)


@pytest.fixture
def device(edge_home: Path, tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The heat skill configured, a sealed log with a key file; the model flags."""
    monkeypatch.setenv("EDGE_AGENT_LOG_KEY_SOURCE", "file")
    (edge_home / "config").mkdir(parents=True, exist_ok=True)
    config = '[skills.heat]\npython = "tests.cli.test_route_calibrate:HEAT"\n'
    (edge_home / "config" / "config.toml").write_text(config)
    return ["--model", str(tiny_model.gguf_path), "--threads", "1"]


def shadow_turn(model: str, logprob: float, celsius: float, adapter: str | None) -> AgentResult:
    local = ToolCall(name="set_temperature", arguments={"room": "kitchen", "celsius": celsius})
    teacher = ToolCall(name="set_temperature", arguments={"room": "kitchen", "celsius": 21})
    routing = Routing(
        decision="remote", reason="teacher-first: no promoted adapter for heat",
        signals=RouteSignals(min_logprob=logprob, mean_logprob=logprob, chosen_tokens=4),
        local_attempt=LocalAttempt(model=model, adapter=adapter, call=local),
    )  # fmt: skip
    ran = ToolOutcome(call=teacher, effect=Effect.ACTUATING, status="ok")
    return AgentResult(
        request="kitchen to 21", model="teacher", skill="heat", route="escalated",
        routing=routing, tool_calls=[ran],
    )  # fmt: skip


def write_log(flags: list[str]) -> None:
    """20 sure attempts right by heat's scorer, 5 unsure wrong ones, by the bare model the
    device runs; 4 sure wrong ones by an adapter heat no longer runs."""
    settings = load_settings(model=flags[1])
    model = plan_for(settings)[0].entry.name
    turns = [shadow_turn(model, -0.1 - i / 100, 21.4, None) for i in range(20)]
    turns += [shadow_turn(model, -2.0 - i / 10, 26.0, None) for i in range(5)]
    turns += [shadow_turn(model, -0.01, 30.0, "heat-v1") for _ in range(4)]
    with open_log(settings) as log:
        for turn in turns:
            log.record(turn)


def test_calibrate_any_skill_from_its_shadow_attempts_in_the_log(
    capsys: pytest.CaptureFixture[str], device: list[str]
) -> None:
    home = [SignalRecord(id="r", correct=True, signals=RouteSignals(min_logprob=-0.5))]
    before = calibration_for(home, 0.9, model="m", adapter="home-v1", skill="home")
    before.save(load_settings().route_path)
    write_log(device)
    args = ["route", "calibrate", "--skill", "heat", "--from-log", "--target", "0.98"]
    code, out, err = run_cli(capsys, *args, *device, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["pairs"] == {"used": 25, "skipped": 4, "other_adapter": 4, "unusable": 0}
    assert data["skill"] == "heat" and data["adapter"] is None and data["split"] == "log"
    assert data["met"] and data["stats"]["local_share"] == 0.8
    assert data["stats"]["local_accuracy"] == 1.0  # the 20 right by heat's scorer stay local
    saved = Calibrations.load(load_settings().route_path)
    assert saved.of("home") == before  # another skill's thresholds are left as they were
    heat = saved.of("heat")
    assert heat is not None and heat.thresholds.model_dump() == data["thresholds"]

    code, out, err = run_cli(capsys, *args, *device)
    assert code == 0, err
    assert "heat (the bare " in out and "log pairs: 25 used, 4 skipped (4 by another" in out
    code, out, _ = run_cli(capsys, "route", "report", "--json", "--skill", "heat")
    assert code == 0 and list(json.loads(out)["calibration"]) == ["heat"]


def test_a_skill_without_a_calibration_set_or_log_pairs_is_one_line(
    capsys: pytest.CaptureFixture[str], device: list[str]
) -> None:
    code, _, err = run_cli(capsys, "route", "calibrate", "--skill", "heat", *device)
    assert code == 2 and "no calibration set of its own" in err and "--from-log" in err
    assert err.count("\n") == 1
    with open_log(load_settings()) as log:
        log.record(AgentResult(request="kitchen to 21", model="m", skill="heat"))
    code, _, err = run_cli(capsys, "route", "calibrate", "--skill", "heat", "--from-log", *device)
    assert code == 2 and "no shadow attempt of heat" in err and err.count("\n") == 1
    assert not load_settings().route_path.exists()
