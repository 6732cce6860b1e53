"""The Responses API (/v1/responses) of `serve`, driven by the official openai client against a
real uvicorn on 127.0.0.1: plain text (the scripted backend stands in for the model) and the
client's tools through the agent, router and log (the tiny llama, the stand-in teacher for a
teacher-first skill: see client_support)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from edge_agent.backends.fake import ScriptedBackend
from edge_agent.runtime import Runtime
from edge_agent.server.app import create_app, serve_in_thread
from edge_agent.tools import Toolset
from tests.server.client_support import ANSWER, FUNCTIONS, RESPONSES_TOOLS, SKILL, records, serving
from tests.teacher_support import StandInTeacher

FINGERPRINT = Toolset.from_schemas("client", FUNCTIONS).fingerprint
ASKED = "What's the weather in Paris?"
NAMED = {"metadata": {"edge_agent_skill": SKILL}}
TEXT_EVENTS = [
    "response.created", "response.in_progress", "response.output_item.added",
    "response.content_part.added", "response.output_text.delta", "response.output_text.done",
    "response.content_part.done", "response.output_item.done", "response.completed",
]  # fmt: skip
CALL_EVENTS = [
    "response.created", "response.in_progress", "response.output_item.added",
    "response.function_call_arguments.delta", "response.function_call_arguments.done",
    "response.output_item.done", "response.completed",
]  # fmt: skip


@contextmanager
def client_of(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=url, api_key="none", max_retries=0) as client:
        yield client


@contextmanager
def plain(responses: list[str]) -> Iterator[tuple[openai.OpenAI, ScriptedBackend]]:
    backend = ScriptedBackend(responses)
    with serve_in_thread(create_app(backend, model_name="base")) as url, client_of(url) as c:
        yield c, backend


# --- plain text ----------------------------------------------------------------------------------


def test_text_in_text_out_with_instructions() -> None:
    with plain(["Hello there, friend."]) as (client, backend):
        out = client.responses.create(model="base", input="Hi", instructions="Be brief.")
    assert out.status == "completed" and out.output_text == "Hello there, friend."
    assert out.id.startswith("resp_") and out.output[0].type == "message"
    assert out.usage is not None and out.usage.output_tokens == 3
    sent = backend.requests[0]
    assert [(m.role, m.content) for m in sent.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert sent.json_schema is None


def test_text_streams_token_by_token_in_the_standard_events() -> None:
    with plain(["one two three"]) as (client, _):
        events = list(client.responses.create(model="base", input="count", stream=True))
    kinds = [e.type for e in events]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["one", " two", " three"]  # each token as it came
    assert [k for i, k in enumerate(kinds) if k not in kinds[:i]] == TEXT_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == "one two three"


def test_max_output_tokens_leaves_an_incomplete_response() -> None:
    with plain(["one two three"]) as (client, backend):
        out = client.responses.create(model="base", input="count", max_output_tokens=2)
    assert out.status == "incomplete" and out.output_text == "one two"
    assert out.incomplete_details is not None
    assert backend.requests[0].max_tokens == 2


def test_a_json_schema_text_format_constrains_the_output() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    fmt = {"format": {"type": "json_schema", "name": "r", "schema": schema}}
    with plain(['{"ok": true}']) as (client, backend):
        out = client.responses.create(model="base", input="ok?", text=fmt)
    assert json.loads(out.output_text) == {"ok": True}
    assert backend.requests[0].json_schema == schema


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": []}, "input"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input.0"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, None),
        ({"input": "hi", "model": "nope"}, "model"),
    ],
    ids=["previous-response", "empty", "unknown-item", "non-function-tool", "unknown-model"],
)
def test_what_it_cannot_do_is_a_4xx_in_openai_shape(body: dict[str, Any], param: Any) -> None:
    backend = ScriptedBackend([])
    with serve_in_thread(create_app(backend, model_name="base")) as url:
        response = httpx.post(f"{url}/responses", json={"model": "base", **body})
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert error["message"] and (param is None or error["param"].startswith(param))
    assert backend.requests == []


# --- the client's tools --------------------------------------------------------------------------


def test_client_tools_are_a_logged_turn_and_its_call_a_function_call_item(
    device: Runtime, teacher: StandInTeacher
) -> None:
    with serving(device) as url, client_of(url) as client:
        out = client.responses.create(
            model=device.model_name,
            input=ASKED,
            tools=RESPONSES_TOOLS,
            **NAMED,
        )
    (item,) = out.output
    assert item.type == "function_call" and item.call_id.startswith("call_")
    assert (item.name, json.loads(item.arguments)) == ("get_weather", {"city": "Paris"})
    assert out.model_extra is not None and out.model_extra["edge_agent"]["route"] == "escalated"
    (sent,) = teacher.requests  # the client's tools reached the teacher
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather", "set_alarm"]
    (record,) = records(device)
    assert (record.result.skill, record.result.toolset) == (SKILL, FINGERPRINT)
    assert record.result.route == "escalated" and record.local_attempt is not None
    log = device.log()
    assert log is not None and [s["name"] for s in log.toolset_schemas(FINGERPRINT) or []] == [
        "get_weather", "set_alarm",
    ]  # fmt: skip


def test_a_function_call_output_gets_the_answer(device: Runtime, teacher: StandInTeacher) -> None:
    conversation = [
        {"role": "user", "content": ASKED},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"},
    ]  # fmt: skip
    with serving(device) as url, client_of(url) as client:
        out = client.responses.create(
            model=device.model_name,
            input=conversation,
            tools=RESPONSES_TOOLS,
            **NAMED,
        )
    assert out.output_text == ANSWER and [i.type for i in out.output] == ["message"]
    assert [m["role"] for m in teacher.requests[0]["messages"]][-1] == "tool"
    (record,) = records(device)
    assert record.result.prior_calls == 1


def test_a_decided_call_streams_as_function_call_events(device: Runtime) -> None:
    with serving(device) as url, client_of(url) as client:
        events = list(
            client.responses.create(
                model=device.model_name,
                input=ASKED,
                tools=RESPONSES_TOOLS,
                stream=True,
                **NAMED,
            )  # fmt: skip
        )
    assert [e.type for e in events] == CALL_EVENTS
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "Paris"}
    (item,) = events[-1].response.output
    assert item.type == "function_call" and item.name == "get_weather"
    assert len(records(device)) == 1


def test_tool_choice_none_is_plain_text() -> None:
    with plain(["No tools needed."]) as (client, backend):
        out = client.responses.create(
            model="base",
            input="hi",
            tools=RESPONSES_TOOLS,
            tool_choice="none",
        )
    assert out.output_text == "No tools needed." and backend.requests[0].json_schema is None
