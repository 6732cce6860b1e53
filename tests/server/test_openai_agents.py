"""A real agent framework as `serve`'s client: an `openai-agents` Agent with two function tools,
through both of its OpenAI models (Chat Completions and Responses), completes its loop — the
tool called once, its result sent back, then a final answer — within its turn limit.

Which model answers: in the first test the skill is configured ``route = "teacher-first"``
(no adapter yet), so the STAND-IN TEACHER (tests/teacher_support.py: a real HTTP server on
127.0.0.1, no large model) decides each turn: ``get_weather(city="Paris")``, then a sentence
from its result. The tiny llama runs in shadow on every turn (its attempt is logged beside
the teacher's). The last test has the device's own model decide (see there)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from edge_agent.agent import Agent as DeviceAgent
from edge_agent.agent import AgentConfig
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.runtime import Runtime, open_runtime
from edge_agent.server.app import create_app, serve_in_thread
from edge_agent.server.client_tools import ClientAgents
from edge_agent.settings import load_settings
from tests.server.client_support import ANSWER, SKILL, records, serving
from tests.teacher_support import StandInTeacher

MODELS = {"chat_completions": OpenAIChatCompletionsModel, "responses": OpenAIResponsesModel}


def two_tools(calls: list[str]) -> list[Any]:
    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city.

        Args:
            city: The city.
        """
        calls.append(f"get_weather({city})")
        return f"sunny, 21 C in {city}"

    @function_tool
    def set_alarm(hour: int, minute: int) -> str:
        """Set an alarm."""
        calls.append(f"set_alarm({hour}, {minute})")
        return "alarm set"

    return [get_weather, set_alarm]


async def run_agent(url: str, model: str, api: str, calls: list[str]) -> Any:
    client = AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    try:
        agent = Agent(
            name="assistant",
            instructions="You answer questions about the weather and set alarms.",
            tools=two_tools(calls),
            model=MODELS[api](model=model, openai_client=client),
            model_settings=ModelSettings(metadata={"edge_agent_skill": SKILL}),
        )
        return await Runner.run(agent, "What's the weather in Paris?", max_turns=4)
    finally:
        await client.close()


@pytest.mark.parametrize("api", list(MODELS))
def test_an_agents_sdk_loop_ends_with_an_answer_after_one_tool_call(
    device: Runtime, teacher: StandInTeacher, api: str
) -> None:
    set_tracing_disabled(True)  # nothing leaves 127.0.0.1
    calls: list[str] = []
    with serving(device) as url:
        result = asyncio.run(run_agent(url, device.model_name, api, calls))
    assert calls == ["get_weather(Paris)"]  # once, and never the other tool
    assert result.final_output == ANSWER
    assert len(teacher.requests) == 2  # the call, then the answer from its result
    assert "sunny, 21 C in Paris" in teacher.requests[1]["messages"][-1]["content"]
    logged = records(device)
    assert [r.result.route for r in logged] == ["escalated", "escalated"]
    assert [r.result.skill for r in logged] == [SKILL, SKILL]
    assert [r.result.prior_calls for r in logged] == [0, 1]
    assert logged[0].teacher_label is not None and logged[0].teacher_label.name == "get_weather"


# --- without a teacher: the device's own model decides ------------------------------------------

PARIS = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


@pytest.mark.parametrize("api", list(MODELS))
@pytest.mark.parametrize(
    ("script", "stop_after_call"),
    [([PARIS], True), ([PARIS, PARIS], False)],
    ids=["adapter", "repeat"],
)
def test_the_loop_ends_on_the_devices_model_too(
    api: str, script: list[str], stop_after_call: bool
) -> None:
    """A SCRIPTED backend stands in for the device's model. ``adapter``: a skill with a trained
    adapter stops after its call, so the client's result is the answer (nothing generated
    after it). ``repeat``: a base model proposes the call it already made; it is not sent to
    the client again, the turn answers from its result."""
    backend = ScriptedBackend(script)
    config = AgentConfig(stop_after_call=stop_after_call)
    clients = ClientAgents(lambda tools, skill: DeviceAgent(backend, tools, config=config))
    set_tracing_disabled(True)
    calls: list[str] = []
    with serve_in_thread(create_app(backend, model_name="base", client_agents=clients)) as url:
        result = asyncio.run(run_agent(url, "base", api, calls))
    assert calls == ["get_weather(Paris)"]
    assert result.final_output == "sunny, 21 C in Paris"
    assert len(backend.requests) == len(script)


@pytest.mark.integration
@pytest.mark.parametrize("api", list(MODELS))
def test_on_the_default_model_without_adapter_or_teacher_the_loop_ends(api: str) -> None:
    """The real default model (SmolLM2-135M), untrained for these tools and with no remote
    model: it may pick the wrong tool, but its loop ends after one call (before issue 14 it
    called set_alarm(12, 15) until the framework's turn limit)."""
    calls: list[str] = []
    set_tracing_disabled(True)
    with open_runtime(load_settings(log_key_source="file", threads=2)) as rt, serving(rt) as url:
        result = asyncio.run(run_agent(url, rt.model_name, api, calls))
        logged = records(rt)
    assert len(calls) == 1 and isinstance(result.final_output, str) and result.final_output
    assert [r.result.prior_calls for r in logged] == [0, 1]
    assert {r.result.skill for r in logged} == {SKILL}
