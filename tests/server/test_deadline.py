"""The server on a turn past its deadline: 504 in OpenAI's error shape, never a 500, and it
serves the next request. A real uvicorn on 127.0.0.1 driven by the openai client; the model is
a ScriptedBackend (the test seam) whose generations take time on the agent's fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from edge_agent.agent import Agent, AgentConfig
from edge_agent.server.app import create_app, serve_in_thread
from edge_agent.tools import Toolset
from tests.deadline_support import FakeClock, SlowModel
from tests.demo_tools import STATE, set_light

DEMO = Toolset("demo", [set_light], description="lights")
OUT_OF_RANGE = '{"name": "set_light", "arguments": {"name": "kitchen", "brightness": 400}}'


@pytest.fixture
def url() -> Iterator[str]:
    STATE.clear()
    clock = FakeClock()
    model = SlowModel([OUT_OF_RANGE] * 2 + ['{"answer": "hello"}'], clock, seconds=10)
    config = AgentConfig(max_steps=4, repair_attempts=4, turn_deadline_s=15)
    agents = {"demo": Agent(model, DEMO, config=config, clock=clock)}
    with serve_in_thread(create_app(model, toolsets=agents, model_name="base")) as base:
        yield base


def test_a_turn_past_its_deadline_answers_504_in_openais_shape(url: str) -> None:
    body = {"model": "edge-agent/demo", "messages": [{"role": "user", "content": "kitchen 400"}]}
    response = httpx.post(f"{url}/chat/completions", json=body, timeout=10)
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "turn_timeout" and "turn_deadline_s" in error["message"]
    assert STATE == {}


def test_the_openai_client_sees_a_5xx_and_the_server_serves_the_next_request(url: str) -> None:
    with openai.OpenAI(base_url=url, api_key="none", max_retries=0) as client:
        messages = [{"role": "user", "content": "kitchen 400"}]
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(
                model="edge-agent/demo",
                messages=messages,
                stream=True,  # type: ignore[arg-type]
            )
        assert raised.value.status_code == 504
        again = client.chat.completions.create(
            model="edge-agent/demo",
            messages=[{"role": "user", "content": "hi"}],  # type: ignore[list-item]
        )
    assert again.choices[0].message.content == "hello"
