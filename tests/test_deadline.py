"""A turn's deadline (AgentConfig.turn_deadline_s), driven by ScriptedBackend (the named test
seam standing in for a model) on a clock that moves only when a test moves it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from edge_agent.agent import Agent, AgentConfig
from edge_agent.backends.base import Backend, Chunk, Done, GenerationRequest
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.errors import AgentError, TurnTimeoutError
from edge_agent.tools import Toolset, tool
from edge_agent.types import AgentResult, Effect
from tests.deadline_support import FakeClock, SlowModel
from tests.demo_tools import STATE, set_light

KITCHEN_40 = '{"name": "set_light", "arguments": {"name": "kitchen", "brightness": 40}}'
OUT_OF_RANGE = '{"name": "set_light", "arguments": {"name": "kitchen", "brightness": 400}}'


class StoppedAtDeadline(Backend):
    """Stands in for an engine whose decode loop reached the request's deadline: the text so
    far (here a whole, valid call) and then Done(finish_reason="deadline")."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.requests: list[GenerationRequest] = []

    def generate(self, request: GenerationRequest) -> Iterator[Chunk]:
        self.requests.append(request)
        yield Chunk(self.text, (1,))
        yield Done("", finish_reason="deadline")


CLOCK = FakeClock(1000.0)
RUNS: list[str] = []


@tool(effect=Effect.ACTUATING)
def open_valve(name: str) -> str:
    """Opens a water valve; takes half a minute.

    Args:
        name: The valve.
    """
    CLOCK.now += 30
    RUNS.append(name)
    return f"{name} open"


TOOLS = Toolset("demo", [set_light, open_valve], description="demo")


@pytest.fixture(autouse=True)
def clean_state() -> None:
    STATE.clear()
    RUNS.clear()
    CLOCK.now = 1000.0


def timed_out(agent: Agent, text: str) -> AgentResult:
    with pytest.raises(TurnTimeoutError) as raised:
        agent.run(text)
    assert isinstance(raised.value.result, AgentResult)
    return raised.value.result


def test_a_model_that_keeps_failing_is_stopped_by_the_deadline_and_the_turn_is_logged(
    edge_home: object,
) -> None:
    from edge_agent.logstore import open_log
    from edge_agent.settings import load_settings

    log = open_log(load_settings())
    model = SlowModel([OUT_OF_RANGE] * 10, CLOCK, seconds=5)
    config = AgentConfig(max_steps=10, repair_attempts=10, turn_deadline_s=12)
    agent = Agent(model, TOOLS, config=config, log=log, clock=CLOCK)
    result = timed_out(agent, "set the kitchen light to 400")
    assert len(model.requests) == 3  # 0-5 s, 5-10 s, 10-15 s; none started after 12 s
    assert result.outcome == "timeout" and result.steps == 3 and STATE == {}
    assert "15.0 s" in (result.error or "") and "raise turn_deadline_s" in (result.error or "")
    logged = log.get(result.id).result
    assert logged.outcome == "timeout" and logged.error == result.error
    log.close()


def test_the_error_is_an_agent_error_that_says_what_to_change() -> None:
    model = SlowModel([OUT_OF_RANGE] * 3, CLOCK, seconds=5)
    config = AgentConfig(max_steps=3, repair_attempts=3, turn_deadline_s=4)
    with pytest.raises(AgentError, match=r"past its deadline of 4 s; raise turn_deadline_s"):
        Agent(model, TOOLS, config=config, clock=CLOCK).run("set the kitchen light to 400")


def test_a_call_that_ran_is_not_repeated_and_stays_in_the_result() -> None:
    # the model would propose the valve again; the deadline passes while the valve opens
    valve = '{"name": "open_valve", "arguments": {"name": "garden"}}'
    model = ScriptedBackend([valve, valve, '{"answer": "done"}'])
    agent = Agent(model, TOOLS, config=AgentConfig(turn_deadline_s=10), clock=CLOCK)
    result = timed_out(agent, "open the garden valve")
    assert RUNS == ["garden"] and len(model.requests) == 1
    [call] = result.tool_calls
    assert call.status == "ok" and call.result == "garden open"


def test_no_call_starts_once_the_deadline_passed_during_its_generation() -> None:
    model = SlowModel([KITCHEN_40], CLOCK, seconds=25)
    agent = Agent(model, TOOLS, config=AgentConfig(turn_deadline_s=20), clock=CLOCK)
    result = timed_out(agent, "set the kitchen light to 40")
    assert STATE == {} and result.tool_calls == [] and result.steps == 1


def test_an_output_cut_at_the_deadline_is_never_acted_on() -> None:
    model = StoppedAtDeadline(KITCHEN_40)  # parses as a call, but the decoder was cut short
    agent = Agent(model, TOOLS, config=AgentConfig(turn_deadline_s=20))
    result = timed_out(agent, "set the kitchen light to 40")
    assert STATE == {} and result.tool_calls == [] and result.outcome == "timeout"
    # the backend got the turn's deadline as an instant on time.monotonic()
    [request] = model.requests
    assert request.deadline is not None and 0 < request.deadline - time.monotonic() <= 20


def test_without_a_deadline_the_turn_runs_as_long_as_it_takes() -> None:
    model = SlowModel([OUT_OF_RANGE, KITCHEN_40, '{"answer": "done"}'], CLOCK, seconds=3600)
    agent = Agent(model, TOOLS, config=AgentConfig(turn_deadline_s=None), clock=CLOCK)
    result = agent.run("set the kitchen light to 40")
    assert result.outcome == "answered" and STATE == {"kitchen": 40}
    assert all(r.deadline is None for r in model.requests)


def test_one_deadline_covers_every_step_of_a_compound_request() -> None:
    def split(text: str, area: str | None) -> list[str]:
        return [part.strip() for part in text.split(" and ")]

    tools = Toolset("demo", [set_light, open_valve], description="demo", split=split)
    valve = '{"name": "open_valve", "arguments": {"name": "garden"}}'
    model = ScriptedBackend([valve, KITCHEN_40])
    config = AgentConfig(turn_deadline_s=10, stop_after_call=True)
    agent = Agent(model, tools, config=config, clock=CLOCK)
    result = timed_out(agent, "open the garden valve and set the kitchen light to 40")
    # the first step's 30 s valve spent the request's deadline: the second never generated
    assert RUNS == ["garden"] and STATE == {} and len(model.requests) == 1
    assert result.request == "set the kitchen light to 40"
