"""A client-tools turn (OpenAI ``tools=``) through the router: the teacher sees the conversation
the client sent (its instructions, the earlier messages, this turn's calls and their results)
with the client's tool specs, scrubbed; the local attempt's signals read the current request,
not an earlier message. The stand-in teacher is a real HTTP server on 127.0.0.1; the local
model is a scripted backend."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from edge_agent.agent import Agent, AgentConfig, Conversation
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.routing.remote import RemoteClient, RemoteConfig
from edge_agent.routing.router import Router
from edge_agent.server.client_tools import ClientRequest, conversation
from edge_agent.server.schemas import ChatMessage
from edge_agent.settings import RouteMode
from edge_agent.tools import Toolset
from tests.routing.routing_support import MemoryLog, remote_client
from tests.teacher_support import StandInTeacher, stand_in_teacher

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city."}},
    "required": ["city"],
    "additionalProperties": False,
}
MAIL = {
    "type": "object",
    "properties": {"to": {"type": "string"}, "text": {"type": "string"}},
    "required": ["to", "text"],
    "additionalProperties": False,
}
FUNCTIONS = [
    {"name": "get_weather", "description": "Current weather in a city.", "parameters": WEATHER},
    {"name": "send_mail", "description": "Send an e-mail.", "parameters": MAIL},
]
INSTRUCTIONS = "You are Ada, the assistant of ada.lovelace@example.com. Be brief."
DEVELOPER = "Use metric units."


def call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    function = {"name": name, "arguments": json.dumps(arguments)}
    return {"id": call_id, "type": "function", "function": function}


# What an OpenAI client sends: instructions, an earlier exchange (a call, its result, an
# answer), the request, and the call of this turn it ran since, with its result.
SENT: list[dict[str, Any]] = [
    {"role": "system", "content": INSTRUCTIONS},
    {"role": "developer", "content": DEVELOPER},
    {"role": "user", "content": "What's the weather in Oslo? Mail it to bob@example.com later."},
    {"role": "assistant", "content": None, "tool_calls": [call("c1", "get_weather", city="Oslo")]},
    {"role": "tool", "tool_call_id": "c1", "content": '{"celsius": 3}'},
    {"role": "assistant", "content": "3 degrees in Oslo."},
    {"role": "user", "content": "And in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [call("c2", "get_weather", city="Paris")]},
    {"role": "tool", "tool_call_id": "c2", "content": '{"celsius": 18}'},
]


def client_turn(messages: Sequence[dict[str, Any]]) -> tuple[Toolset, str, Conversation]:
    """The toolset, request and conversation the server makes of the client's request."""
    tools = Toolset("weather", Toolset.from_schemas("client", FUNCTIONS))
    request = ClientRequest(
        json.dumps(FUNCTIONS), [ChatMessage.model_validate(m) for m in messages], "weather"
    )
    text, talk = conversation(request, tools)
    return tools, text, talk


def client_agent(
    tools: Toolset, router: Router, local: list[str], *, adapter: str | None = None,
    mode: RouteMode = "teacher-first",
) -> Agent:  # fmt: skip
    """The agent `serve` makes for a client's tools: it delegates its calls to the client."""
    config = AgentConfig(delegate=True)
    return Agent(ScriptedBackend(local), tools, config=config, adapter=adapter, router=router,
                 route_mode=mode, log=MemoryLog())  # fmt: skip


@pytest.fixture
def teacher() -> Iterator[StandInTeacher]:
    with stand_in_teacher("18 degrees in Paris.") as t:
        yield t


def assert_teacher_saw_the_conversation(body: dict[str, Any]) -> None:
    messages = body["messages"]
    assert [m["role"] for m in messages] == [
        "system", "user", "assistant", "tool", "assistant", "user", "assistant", "tool",
    ]  # fmt: skip
    system = messages[0]["content"]
    assert system.startswith("You are Ada") and DEVELOPER in system  # the client's, first
    assert "You control the weather tools" in system  # then the device's contract
    assert "What's the weather in Oslo?" in messages[1]["content"]
    earlier = messages[2]["tool_calls"][0]
    assert earlier["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert messages[3]["tool_call_id"] == earlier["id"] and "3" in messages[3]["content"]
    assert messages[4]["content"] == "3 degrees in Oslo."  # words, not the agent's answer JSON
    assert messages[5]["content"] == "And in Paris?"
    this_turn = messages[6]["tool_calls"][0]
    assert json.loads(this_turn["function"]["arguments"]) == {"city": "Paris"}
    assert messages[7]["tool_call_id"] == this_turn["id"] and "18" in messages[7]["content"]
    specs = {t["function"]["name"]: t["function"] for t in body["tools"]}
    assert specs == {f["name"]: f for f in FUNCTIONS}  # the client's own tool specs


def trusted(teacher: StandInTeacher) -> Router:
    """A router to a teacher trusted with raw text (remote_anonymize off): what it reads is
    what the client sent."""
    config = RemoteConfig(url=teacher.url, model=teacher.model, retries=0, anonymize=False)
    return Router(RemoteClient(config))


def test_an_escalated_client_turn_reaches_the_teacher_whole(teacher: StandInTeacher) -> None:
    tools, text, talk = client_turn(SENT)
    agent = client_agent(tools, trusted(teacher), ['{"answer": "no idea"}'])
    result = agent.run(text, conversation=talk)
    assert result.route == "escalated" and result.answer == "18 degrees in Paris."
    (body,) = teacher.requests
    assert_teacher_saw_the_conversation(body)


def test_the_client_conversation_is_scrubbed_for_an_untrusted_teacher(
    teacher: StandInTeacher,
) -> None:
    tools, text, talk = client_turn(SENT)
    agent = client_agent(tools, Router(remote_client(teacher.url)), ['{"answer": "no idea"}'])
    assert agent.run(text, conversation=talk).route == "escalated"
    (body,) = teacher.requests
    messages = body["messages"]
    assert len(messages) == 8 and "Be brief." in messages[0]["content"]
    sent = json.dumps(body)
    assert "ada.lovelace@example.com" not in sent and "bob@example.com" not in sent
    assert "<EMAIL_" in messages[0]["content"]  # the instructions: scrubbed, not dropped
    assert "<EMAIL_" in messages[1]["content"]  # an earlier message too


def test_an_adapters_prompt_drops_the_history_the_teachers_keeps(teacher: StandInTeacher) -> None:
    tools, text, talk = client_turn(SENT)
    local = ['{"answer": "no idea"}']
    agent = client_agent(tools, trusted(teacher), local, adapter="weather-v1")
    result = agent.run(text, conversation=talk, route="remote")
    assert result.route == "escalated"
    local_prompt = agent.backend.requests[0].messages  # type: ignore[attr-defined]
    assert not any("Oslo" in m.content for m in local_prompt)  # trained on single requests
    assert INSTRUCTIONS not in local_prompt[0].content
    assert_teacher_saw_the_conversation(teacher.requests[0])


def test_a_client_turn_without_instructions_or_history_is_as_before(
    teacher: StandInTeacher,
) -> None:
    tools, text, talk = client_turn([{"role": "user", "content": "Weather in Rome?"}])
    teacher.default = ("get_weather", {"city": "Rome"})
    agent = client_agent(tools, trusted(teacher), ['{"answer": "?"}'])
    result = agent.run(text, conversation=talk)
    assert result.tool_calls[0].status == "delegated"
    assert result.tool_calls[0].call.arguments == {"city": "Rome"}
    messages = teacher.requests[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"].startswith("You control the weather tools")


# --- the signals read the current request ----------------------------------------------------


class RecordingEmbedder:
    """A stand-in embedder at the router's seam: one fixed vector per text, and a record of
    the texts it was asked about."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += texts
        return np.ones((len(texts), 2), dtype=np.float32)


@pytest.mark.parametrize(("city", "made_up"), [("Paris", False), ("Oslo", True)])
def test_the_signals_read_the_current_request_not_an_earlier_one(city: str, made_up: bool) -> None:
    # the request ("And in Paris?") with the earlier exchange before it, nothing run yet
    tools, text, talk = client_turn(SENT[:7])
    embedder = RecordingEmbedder()
    router = Router(None, embedder=embedder, centroids=[[1.0, 1.0]])
    local = json.dumps({"name": "get_weather", "arguments": {"city": city}})
    agent = client_agent(tools, router, [local], mode="local-first")
    result = agent.run(text, conversation=talk)
    assert result.routing is not None and result.tool_calls[0].status == "delegated"
    # a city only an earlier message named is not in what this request says
    assert result.routing.signals.ungrounded is made_up
    assert embedder.texts == ["And in Paris?"]
