"""A client's own tools through `serve` (Chat Completions): a turn of the agent filed under a
skill, routed (the stand-in teacher answers a teacher-first skill) and logged. The official
openai client against a real uvicorn on 127.0.0.1; the tiny llama in llama.cpp (see
client_support for which model answers what)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from edge_agent import prompt
from edge_agent.agent import Agent
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.runtime import Runtime
from edge_agent.server.app import create_app, serve_in_thread
from edge_agent.server.client_tools import ClientAgents
from edge_agent.settings import Settings
from edge_agent.tools import Toolset
from tests.server.client_support import ANSWER, CHAT_TOOLS, FUNCTIONS, SKILL, records, serving
from tests.teacher_support import StandInTeacher

ASK = [{"role": "user", "content": "What's the weather in Paris?"}]
WEATHER_CALL = {
    "id": "call_paris",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
RESULT = [
    *ASK,
    {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
    {"role": "tool", "tool_call_id": "call_paris", "content": '{"sky": "sunny", "celsius": 21}'},
]
FINGERPRINT = Toolset.from_schemas("client", FUNCTIONS).fingerprint


def ask(url: str, model: str, messages: list[dict[str, Any]] = ASK, **kwargs: Any) -> Any:
    with openai.OpenAI(base_url=url, api_key="none", max_retries=0) as client:
        reply = client.chat.completions.create(
            model=model, messages=messages, tools=CHAT_TOOLS, **kwargs
        )
        # a stream is read while its client is open: closed first, its socket is gone
        return list(reply) if kwargs.get("stream") else reply


# --- the log -----------------------------------------------------------------------------------


def test_client_tools_are_logged_turns_of_their_fingerprints_skill(device: Runtime) -> None:
    with serving(device) as url:
        outs = [ask(url, device.model_name, extra_body={"edge_agent": {"route": "local"}})
                for _ in range(3)]  # fmt: skip
    for out in outs:  # the tiny model's call: valid by grammar, never run on the server
        assert out.choices[0].finish_reason == "tool_calls"
        (call,) = out.choices[0].message.tool_calls
        assert call.function.name in ("get_weather", "set_alarm")
        assert out.model_extra["edge_agent"]["tool_calls"][0]["status"] == "delegated"
    logged = records(device)
    assert len(logged) == 3
    for record, out in zip(logged, outs, strict=True):
        assert record.result.skill == f"client-{FINGERPRINT[:12]}"
        assert record.result.toolset == FINGERPRINT
        assert record.result.tool_calls[0].call.id == out.choices[0].message.tool_calls[0].id
        assert record.result.request == ASK[0]["content"]
    log = device.log()
    assert log is not None
    schemas = log.toolset_schemas(FINGERPRINT)
    assert schemas is not None and [s["name"] for s in schemas] == ["get_weather", "set_alarm"]
    assert schemas[0]["parameters"]["properties"]["city"]["type"] == "string"


@pytest.mark.parametrize("how", ["header", "metadata"])
def test_a_teacher_first_skill_escalates_and_the_teachers_call_is_the_clients(
    device: Runtime, teacher: StandInTeacher, how: str
) -> None:
    named: dict[str, Any] = (
        {"extra_headers": {"X-Edge-Agent-Skill": SKILL}}
        if how == "header"
        else {"metadata": {"edge_agent_skill": SKILL}}
    )
    with serving(device) as url:
        out = ask(url, device.model_name, **named)
    assert out.choices[0].finish_reason == "tool_calls"
    (call,) = out.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_weather", {"city": "Paris"},
    )  # fmt: skip
    assert out.model_extra["edge_agent"]["route"] == "escalated"
    (sent,) = teacher.requests  # the client's tools, as the client described them
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather", "set_alarm"]
    (record,) = records(device)
    assert (record.result.skill, record.result.route) == (SKILL, "escalated")
    assert record.result.toolset == FINGERPRINT
    assert record.teacher_label is not None and record.teacher_label.name == "get_weather"
    attempt = record.local_attempt  # the tiny model's own try, kept beside the label
    assert attempt is not None and attempt.model == device.model_name


def test_the_client_result_gets_an_answer_not_another_call(
    device: Runtime, teacher: StandInTeacher
) -> None:
    with serving(device) as url:
        out = ask(url, device.model_name, RESULT, extra_headers={"X-Edge-Agent-Skill": SKILL})
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].message.content == ANSWER and not out.choices[0].message.tool_calls
    roles = [m["role"] for m in teacher.requests[0]["messages"]]
    assert roles == ["system", "user", "assistant", "tool"]  # it saw the call and the result
    assert "sunny" in teacher.requests[0]["messages"][-1]["content"]
    (record,) = records(device)
    assert record.result.prior_calls == 1 and record.result.answer == ANSWER
    assert record.result.tool_calls == []


def test_a_decided_call_streams_as_tool_call_chunks(device: Runtime) -> None:
    with serving(device) as url:
        chunks = list(
            ask(url, device.model_name, stream=True, extra_headers={"X-Edge-Agent-Skill": SKILL})
        )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [call for d in deltas for call in d.tool_calls or []]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert len(records(device)) == 1


# --- what the client names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("named", "param"),
    [
        ({"metadata": {"edge_agent_skill": "Weather"}}, "metadata.edge_agent_skill"),
        ({"metadata": {"edge_agent_skill": "-weather"}}, "metadata.edge_agent_skill"),
        ({"metadata": {"edge_agent_skill": "w" * 65}}, "metadata.edge_agent_skill"),
        ({"extra_headers": {"X-Edge-Agent-Skill": "we ather"}}, "metadata.edge_agent_skill"),
        (
            {"metadata": {"edge_agent_skill": "a"}, "extra_headers": {"X-Edge-Agent-Skill": "b"}},
            "metadata",
        ),
        ({"metadata": {"edge_agent_skill": "home"}}, "metadata.edge_agent_skill"),  # its own tools
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ],
    ids=["upper", "leading-dash", "too-long", "space", "two-names", "home", "unknown-tool"],
)
def test_what_the_client_names_badly_is_a_400(named: dict[str, Any], param: str) -> None:
    backend = ScriptedBackend([])  # never asked
    clients = ClientAgents(lambda tools, skill: Agent(backend, tools), settings=Settings())
    app = create_app(backend, model_name="base", client_agents=clients)
    with serve_in_thread(app) as url, pytest.raises(openai.BadRequestError) as exc:
        ask(url, "base", **named)
    assert exc.value.body["param"] == param
    assert backend.requests == []


def test_agents_are_kept_per_skill_and_tool_set_the_recent_ones_only() -> None:
    built: list[tuple[str, str]] = []

    def make(tools: Toolset, skill: Any) -> Agent:
        built.append((skill.name, tools.fingerprint))
        return Agent(ScriptedBackend([]), tools)

    agents = ClientAgents(make, size=2)
    one, two = json.dumps(FUNCTIONS), json.dumps(FUNCTIONS[:1])
    first = agents.agent(one, None)
    assert agents.agent(one, None) is first and first.config.delegate
    assert agents.agent(one, "mine") is not first  # another skill: its own agent
    agents.agent(two, None)  # a third: the least recently used goes
    assert agents.agent(one, None) is not first
    assert [name for name, _ in built] == [f"client-{FINGERPRINT[:12]}", "mine",
                                           built[2][0], built[0][0]]  # fmt: skip


def test_the_clients_sampling_reaches_each_generation_of_its_turn() -> None:
    """temperature, top_p and seed apply to the agent's constrained generations; the budget
    stays the call schema's (a client's max_tokens would cut the JSON the grammar writes)."""
    backend = ScriptedBackend(['{"name": "get_weather", "arguments": {"city": "Paris"}}'])
    clients = ClientAgents(lambda tools, skill: Agent(backend, tools), settings=Settings())
    app = create_app(backend, model_name="base", client_agents=clients)
    with serve_in_thread(app) as url:
        reply = ask(url, "base", temperature=0.7, top_p=0.9, seed=5, max_tokens=4)
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    [sent] = backend.requests
    assert (sent.temperature, sent.top_p, sent.seed) == (0.7, 0.9, 5)
    assert sent.max_tokens == prompt.token_budget(sent.json_schema) > 4
