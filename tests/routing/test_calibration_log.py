"""Calibration for any skill from the device's own log: escalated turns carrying the local
model's shadow attempt and its signals beside the teacher's call, the attempt right when the
skill's own scorer says so. Thresholds are stored per skill; the router applies a skill's own
thresholds to that skill's turns and leaves other skills' alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent, AgentConfig
from edge_agent.routing.calibration import calibration_for, log_pairs, outcome
from edge_agent.routing.router import Calibration, Calibrations, Router, Thresholds
from edge_agent.skills.skill import exact_call
from edge_agent.tools import Toolset
from edge_agent.types import (
    AgentResult,
    Effect,
    Interaction,
    LocalAttempt,
    RouteSignals,
    Routing,
    ToolCall,
    ToolOutcome,
)
from tests.routing.routing_support import DEMO, LOCAL, ConfidenceBackend, remote_client
from tests.skills.thermostat_skill import ROOMS, read_sensor, set_temperature
from tests.teacher_support import StandInTeacher, stand_in_teacher

SKILL, ADAPTER, MODEL = "thermostat", "thermostat-v2", "base"
THERMOSTAT = Toolset(SKILL, [set_temperature, read_sensor])
TEACHER = ("set_temperature", {"room": "kitchen", "celsius": 21})


def within_half_a_degree(got: ToolCall | None, gold: ToolCall | None) -> bool:
    """The thermostat skill's own scorer: a setting half a degree off is as good."""
    if got is None or gold is None:
        return got is gold
    same_room = got.arguments.get("room") == gold.arguments.get("room")
    close = abs(got.arguments.get("celsius", 99) - gold.arguments.get("celsius", -99)) <= 0.5
    return got.name == gold.name and same_room and close


def shadow_turn(
    i: int, logprob: float, celsius: float, *, adapter: str | None = ADAPTER,
    skill: str = SKILL, outcome: str = "answered",
) -> Interaction:  # fmt: skip
    """An escalated turn as the log keeps it: the teacher's call ran, the local model's
    attempt (`celsius`, chosen with `logprob`) beside it, never run."""
    local = ToolCall(name="set_temperature", arguments={"room": "kitchen", "celsius": celsius})
    routing = Routing(
        decision="remote", reason="teacher-first: no promoted adapter",
        signals=RouteSignals(min_logprob=logprob, mean_logprob=logprob / 2, chosen_tokens=6),
        local_attempt=LocalAttempt(model=MODEL, adapter=adapter, call=local, latency_ms=40.0),
    )  # fmt: skip
    teacher = ToolCall(name=TEACHER[0], arguments=TEACHER[1])
    result = AgentResult(
        request=f"kitchen to 21 please #{i}", model="stand-in-teacher", skill=skill,
        route="escalated", routing=routing, outcome=outcome,  # type: ignore[arg-type]
        tool_calls=[ToolOutcome(call=teacher, effect=Effect.ACTUATING, status="ok")],
    )  # fmt: skip
    return Interaction(result=result)


def crafted_log() -> list[Interaction]:
    """30 confident attempts, right by the skill's scorer (21.3 for 21: wrong as an exact
    call); 10 unsure ones, wrong; and what must not count: the previous adapter's confident
    wrong attempts, a turn the teacher failed, another skill's turns."""
    right = [shadow_turn(i, -0.1 - i / 100, 21.3) for i in range(30)]
    wrong = [shadow_turn(30 + i, -2.0 - i / 10, 25.0) for i in range(10)]
    stale = [shadow_turn(40 + i, -0.05, 30.0, adapter="thermostat-v1") for i in range(6)]
    failed = [shadow_turn(46, -0.05, 30.0, outcome="failed")]
    other = [shadow_turn(47 + i, -0.05, 30.0, skill="heating") for i in range(4)]
    return right + wrong + stale + failed + other


def test_log_pairs_of_the_active_adapter_scored_by_the_skill() -> None:
    pairs = log_pairs(crafted_log(), SKILL, within_half_a_degree, model=MODEL, adapter=ADAPTER)
    assert (pairs.used, pairs.other_attempts, pairs.unusable) == (40, 6, 1)
    assert pairs.skipped == 7  # another skill's turns are not this skill's to skip
    assert sum(r.correct for r in pairs.records) == 30
    exact = log_pairs(crafted_log(), SKILL, exact_call, model=MODEL, adapter=ADAPTER)
    assert not any(r.correct for r in exact.records)  # the skill's scorer decided, not exact
    bare = log_pairs(crafted_log(), SKILL, within_half_a_degree, model=MODEL, adapter=None)
    assert bare.used == 0 and bare.other_attempts == 46


def test_thresholds_from_the_log_separate_right_from_wrong_attempts() -> None:
    pairs = log_pairs(crafted_log(), SKILL, within_half_a_degree, model=MODEL, adapter=ADAPTER)
    # at 98 % not one of the 40 may be wrong and local: the thresholds must separate them
    cal = calibration_for(pairs.records, 0.98, model=MODEL, adapter=ADAPTER, skill=SKILL,
                          split="log")  # fmt: skip
    assert cal.met and cal.skill == SKILL and cal.split == "log"
    for record in pairs.records:  # right ones stay local, wrong ones escalate
        assert (cal.thresholds.escalates(record.signals) is None) is record.correct
    stats = outcome(pairs.records, cal.thresholds)
    assert stats["local_share"] == 0.75 and stats["accuracy"] == 1.0


# --- the router: each skill's own thresholds ---------------------------------------------------


@pytest.fixture
def teacher() -> Iterator[StandInTeacher]:
    ROOMS.clear()
    with stand_in_teacher(TEACHER) as t:
        yield t


def skill_agent(
    toolset: Toolset, router: Router, output: str, logprob: float, adapter: str | None
) -> Agent:
    backend = ConfidenceBackend([(output, logprob)], name=MODEL)
    config = AgentConfig(stop_after_call=True)
    return Agent(backend, toolset, config=config, adapter=adapter, router=router)


THERMO_CALL = json.dumps({"name": "set_temperature", "arguments": {"room": "kitchen",
                                                                   "celsius": 21.3}})  # fmt: skip
DEMO_CAL = Calibration(
    model=MODEL, adapter="demo-v1", toolset="demo", target_accuracy=0.9,
    thresholds=Thresholds(min_logprob=-5.0), met=True,
)  # fmt: skip


def calibrated_file(path: Path) -> Calibrations:
    """A calibration file that held demo's thresholds only (the one-calibration format),
    then the thermostat's, picked from the log."""
    path.write_text(DEMO_CAL.model_dump_json(), encoding="utf-8")  # a file from before
    pairs = log_pairs(crafted_log(), SKILL, within_half_a_degree, model=MODEL, adapter=ADAPTER)
    calibration_for(pairs.records, 0.98, model=MODEL, adapter=ADAPTER, skill=SKILL,
                    split="log").save(path)  # fmt: skip
    return Calibrations.load(path)


def test_the_router_applies_each_skills_own_thresholds(
    teacher: StandInTeacher, tmp_path: Path
) -> None:
    calibrations = calibrated_file(tmp_path / "route.json")
    assert set(calibrations.skills) == {"demo", SKILL}
    assert calibrations.of("demo") == DEMO_CAL  # untouched by the thermostat's calibration
    router = Router(remote_client(teacher.url), calibration=calibrations)

    def run(toolset: Toolset, output: str, logprob: float, adapter: str | None) -> Any:
        request = "set the kitchen to 21" if toolset is THERMOSTAT else "kitchen light to 40"
        return skill_agent(toolset, router, output, logprob, adapter).run(request)

    unsure = run(THERMOSTAT, THERMO_CALL, -1.2, ADAPTER)
    assert unsure.route == "escalated" and "log-prob" in unsure.routing.reason
    assert unsure.tool_calls[0].call.arguments == TEACHER[1] and ROOMS == {"kitchen": 21}
    sure = run(THERMOSTAT, THERMO_CALL, -0.2, ADAPTER)
    assert sure.route == "local" and ROOMS == {"kitchen": 21.3}
    # demo's own thresholds (-5.0) keep the same log-probability local
    assert run(DEMO, LOCAL, -1.2, "demo-v1").route == "local"
    assert run(DEMO, LOCAL, -6.0, "demo-v1").routing.decision == "remote"
    # another adapter of the thermostat: its thresholds say nothing of it
    other = run(THERMOSTAT, THERMO_CALL, -1.2, "thermostat-v3")
    assert other.route == "local" and "no calibration" in other.routing.reason
    assert len(teacher.requests) == 2  # the unsure thermostat turn, demo's -6.0
