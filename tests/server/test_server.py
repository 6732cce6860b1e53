"""The OpenAI-compatible server: a real uvicorn on 127.0.0.1, driven by the openai client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from edge_agent import prompt
from edge_agent.agent import Agent
from edge_agent.backends.base import Backend, Chunk, Done, GenerationRequest
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.errors import ConfigError
from edge_agent.server.app import create_app, serve, serve_in_thread
from edge_agent.tools import Toolset
from edge_agent.types import Message, Usage
from tests.demo_tools import STATE, set_light, unlock

DEMO = Toolset("demo", [set_light, unlock], description="lights and doors")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city"],
        },
    },
}
WEATHER_CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


@pytest.fixture(autouse=True)
def clean_state() -> None:
    STATE.clear()


@contextmanager
def running(backend: Backend, **kwargs: Any) -> Iterator[str]:
    agents = {"demo": Agent(backend, DEMO)}
    app = create_app(backend, toolsets=agents, model_name="base", **kwargs)
    with serve_in_thread(app) as url:
        yield url


@contextmanager
def client_for(backend: Backend, **kwargs: Any) -> Iterator[openai.OpenAI]:
    with (
        running(backend, **kwargs) as url,
        openai.OpenAI(base_url=url, api_key=kwargs.get("api_key") or "none", max_retries=0) as c,
    ):
        yield c


def ask(client: openai.OpenAI, text: str, model: str = "base", **kwargs: Any) -> Any:
    messages = [{"role": "user", "content": text}]
    return client.chat.completions.create(model=model, messages=messages, **kwargs)


# --- models and plain chat ---------------------------------------------------------------------


def test_models_lists_the_base_model_and_each_toolset() -> None:
    with client_for(ScriptedBackend([])) as client:
        ids = [m.id for m in client.models.list()]
        assert ids == ["base", "edge-agent/demo"]
        assert client.models.retrieve("edge-agent/demo").id == "edge-agent/demo"


def test_plain_chat_passes_system_and_sampling_options() -> None:
    backend = ScriptedBackend(["Hello there, friend."])
    with client_for(backend) as client:
        out = client.chat.completions.create(
            model="base",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            ],
            max_completion_tokens=2,
            temperature=0.5,
            seed=7,
            stop=["\n"],
            frequency_penalty=0.1,  # a field the server ignores, as OpenAI ignores unknown ones
        )
    assert out.choices[0].message.content == "Hello there,"
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 2
    sent = backend.requests[0]
    assert [m.role for m in sent.messages] == ["system", "user"]
    assert (sent.max_tokens, sent.temperature, sent.seed, sent.stop) == (2, 0.5, 7, ["\n"])
    assert sent.json_schema is None


def test_response_format_json_schema_constrains_the_output() -> None:
    backend = ScriptedBackend(['{"ok": true}'])
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    with client_for(backend) as client:
        out = ask(
            client,
            "ok?",
            response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
        )
    assert json.loads(out.choices[0].message.content) == {"ok": True}
    assert backend.requests[0].json_schema == schema


# --- client tools ------------------------------------------------------------------------------


def test_client_tools_come_back_as_constrained_tool_calls() -> None:
    backend = ScriptedBackend([WEATHER_CALL])
    with client_for(backend) as client:
        out = ask(client, "weather in Paris?", tools=[WEATHER])
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    schema = backend.requests[0].json_schema
    names = [alt["properties"].get("name", {}).get("const") for alt in schema["anyOf"]]
    assert names == ["get_weather", None]  # the call, or a plain answer
    assert "get_weather(city: str, unit?" in backend.requests[0].messages[0].content


def test_tool_results_in_the_history_are_passed_back_as_data() -> None:
    backend = ScriptedBackend(['{"answer": "It is sunny in Paris."}'])
    history = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'},
    ]
    with client_for(backend) as client:
        out = client.chat.completions.create(model="base", messages=history, tools=[WEATHER])
    assert out.choices[0].message.content == "It is sunny in Paris."
    assert out.choices[0].finish_reason == "stop"
    roles = [(m.role, m.content) for m in backend.requests[0].messages[1:]]
    assert roles[1] == ("assistant", WEATHER_CALL)
    assert roles[2] == ("tool", prompt.tool_result_content({"sky": "sunny"}))


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_tool_choice_forces_a_call(choice: Any) -> None:
    backend = ScriptedBackend([WEATHER_CALL])
    with client_for(backend) as client:
        ask(client, "Paris", tools=[WEATHER], tool_choice=choice)
    schema = backend.requests[0].json_schema
    assert [alt["properties"]["name"]["const"] for alt in schema["anyOf"]] == ["get_weather"]


def test_tool_choice_none_is_plain_chat() -> None:
    backend = ScriptedBackend(["No tools needed."])
    with client_for(backend) as client:
        out = ask(client, "hi", tools=[WEATHER], tool_choice="none")
    assert out.choices[0].message.content == "No tools needed."
    assert backend.requests[0].json_schema is None


def test_a_tool_schema_that_cannot_be_constrained_is_a_400() -> None:
    nested = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"o": {"type": "object"}}}}}  # fmt: skip
    with client_for(ScriptedBackend([])) as client, pytest.raises(openai.BadRequestError) as exc:
        ask(client, "x", tools=[nested])
    assert exc.value.body["param"] == "tools"
    assert "unsupported type" in exc.value.body["message"]


# --- streaming ---------------------------------------------------------------------------------


def test_plain_chat_streams_tokens_then_done() -> None:
    backend = ScriptedBackend(["one two three"])
    with client_for(backend) as client:
        stream = ask(client, "count", stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    assert deltas == ["", "one", " two", " three", None]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert len({c.id for c in chunks}) == 1


def test_a_tool_call_streams_as_a_tool_call_delta() -> None:
    with client_for(ScriptedBackend([WEATHER_CALL])) as client:
        chunks = list(ask(client, "weather in Paris?", tools=[WEATHER], stream=True))
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.index, tc.function.name) for tc in calls] == [(0, "get_weather")]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_raw_sse_lines_end_with_done() -> None:
    with running(ScriptedBackend(["hi"])) as url:
        body = {"model": "base", "messages": [{"role": "user", "content": "x"}], "stream": True}
        with httpx.stream("POST", f"{url}/chat/completions", json=body) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = [ln for ln in r.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"


# --- local toolsets ----------------------------------------------------------------------------


def test_a_toolset_model_runs_the_agent_loop() -> None:
    backend = ScriptedBackend(
        ['{"name": "set_light", "arguments": {"name": "kitchen", "brightness": 40}}',
         '{"answer": "The kitchen light is at 40%."}']
    )  # fmt: skip
    with client_for(backend) as client:
        out = ask(client, "set the kitchen light to 40", model="edge-agent/demo")
    assert out.choices[0].message.content == "The kitchen light is at 40%."
    turn = out.model_extra["edge_agent"]
    assert turn["outcome"] == "answered" and turn["latency_ms"] > 0
    (executed,) = turn["tool_calls"]
    assert executed["call"]["arguments"] == {"name": "kitchen", "brightness": 40}
    assert executed["status"] == "ok"
    assert STATE == {"kitchen": 40}


def test_a_toolset_model_streams_its_answer_and_turn() -> None:
    backend = ScriptedBackend(['{"answer": "Nothing to do."}'])
    with client_for(backend) as client:
        chunks = list(ask(client, "hello", model="edge-agent/demo", stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Nothing to do."
    assert chunks[-1].model_extra["edge_agent"]["outcome"] == "answered"


def test_a_dangerous_call_waits_for_a_confirmation_id() -> None:
    call = '{"name": "unlock", "arguments": {"name": "front door"}}'
    backend = ScriptedBackend([call, '{"answer": "Unlocked."}'])
    with client_for(backend) as client:
        first = ask(client, "unlock the front door", model="edge-agent/demo")
        turn = first.model_extra["edge_agent"]
        assert turn["outcome"] == "needs_confirmation"
        assert first.choices[0].finish_reason == "stop"
        assert turn["confirmation_id"] in first.choices[0].message.content
        assert STATE == {}
        extra = {"edge_agent": {"confirm": turn["confirmation_id"]}}
        second = ask(client, "yes", model="edge-agent/demo", extra_body=extra)
        assert second.choices[0].message.content == "Unlocked."
        assert STATE == {"front door": "unlocked"}
        with pytest.raises(openai.BadRequestError) as exc:  # an id confirms once
            ask(client, "yes", model="edge-agent/demo", extra_body=extra)
    assert exc.value.code == "confirmation_not_found"
    # the confirmed call ran as held (not generated again); the model saw its result
    assert len(backend.requests) == 2 and backend.requests[1].messages[-1].role == "tool"


def test_confirmation_by_header_and_expiry() -> None:
    call = '{"name": "unlock", "arguments": {"name": "back door"}}'
    backend = ScriptedBackend([call, '{"answer": "Done."}', call])
    with client_for(backend, confirmation_ttl_s=0.3) as client:
        held = ask(client, "unlock the back door", model="edge-agent/demo")
        cid = held.model_extra["edge_agent"]["confirmation_id"]
        headers = {"X-Edge-Agent-Confirm": cid}
        ok = ask(client, "yes", model="edge-agent/demo", extra_headers=headers)
        assert ok.choices[0].message.content == "Done."
        late = ask(client, "unlock the back door", model="edge-agent/demo")
        time.sleep(0.4)
        late_id = late.model_extra["edge_agent"]["confirmation_id"]
        expired = {"edge_agent": {"confirm": late_id}}
        with pytest.raises(openai.BadRequestError):
            ask(client, "yes", model="edge-agent/demo", extra_body=expired)


def test_a_toolset_model_refuses_client_tools() -> None:
    with client_for(ScriptedBackend([])) as client, pytest.raises(openai.BadRequestError) as exc:
        ask(client, "x", model="edge-agent/demo", tools=[WEATHER])
    assert exc.value.body["param"] == "tools"


# --- auth and binding --------------------------------------------------------------------------


def test_an_api_key_is_required_on_every_route_when_set() -> None:
    with running(ScriptedBackend(["hi"]), api_key="s3cret") as url:
        with openai.OpenAI(base_url=url, api_key="nope", max_retries=0) as wrong:
            with pytest.raises(openai.AuthenticationError):
                wrong.models.list()
            with pytest.raises(openai.AuthenticationError):
                ask(wrong, "hi")
        r = httpx.get(f"{url}/models")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        with openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0) as right:
            assert ask(right, "hi").choices[0].message.content == "hi"


def test_serving_beyond_loopback_needs_an_api_key() -> None:
    app = create_app(ScriptedBackend([]))
    with pytest.raises(ConfigError, match="without an API key"):
        serve(app, host="0.0.0.0", port=1)
    with pytest.raises(ConfigError), serve_in_thread(app, host="192.168.1.10"):
        pass


# --- bad requests ------------------------------------------------------------------------------


def _post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    if isinstance(body, (bytes, str)):
        kwargs["content"] = body
        kwargs["headers"] = {"content-type": "application/json"}
    else:
        kwargs["json"] = body
    return httpx.post(f"{url}/chat/completions", **kwargs)


def _error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        ({"model": "base", "messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "base", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"model": "base", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"model": "base", "messages": [{"role": "user", "content": "x"}], "temperature": -1},
         "temperature"),
    ],
)  # fmt: skip
def test_malformed_requests_get_a_400_in_openai_shape(body: Any, param: str | None) -> None:
    with running(ScriptedBackend([])) as url:
        r = _post(url, body)
    assert r.status_code == 400
    error = _error(r)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_unknown_model_and_route_are_404s() -> None:
    with running(ScriptedBackend([])) as url:
        r = _post(url, {"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 404 and _error(r)["code"] == "model_not_found"
        assert "base, edge-agent/demo" in _error(r)["message"]
        r = httpx.get(f"{url}/nothing-here")
        assert r.status_code == 404 and _error(r)["code"] == "not_found"


class CountingBackend(ScriptedBackend):
    """A scripted backend that knows its context size, as LlamaCppBackend does."""

    n_ctx = 24

    def tokenize_prompt(self, messages: list[Message]) -> list[int]:
        return [0] * sum(len(m.content.split()) for m in messages)


def test_a_prompt_too_long_for_the_context_is_refused() -> None:
    backend = CountingBackend(["never"])
    with client_for(backend) as client:
        with pytest.raises(openai.BadRequestError) as exc:
            ask(client, "word " * 30)
        assert exc.value.code == "context_length_exceeded"
        with pytest.raises(openai.BadRequestError) as exc:
            ask(client, "hi", tools=[WEATHER])  # the tool schemas alone overflow it
        assert "tool schemas" in exc.value.body["message"]
        with pytest.raises(openai.BadRequestError):
            ask(client, "word " * 30, stream=True)  # refused before the stream starts
        with pytest.raises(openai.BadRequestError) as exc:
            ask(client, "hi", model="edge-agent/demo")  # the toolset's prompt alone overflows
        assert exc.value.code == "context_length_exceeded"
    assert backend.requests == []


# --- queueing and cancellation -----------------------------------------------------------------


class SlowBackend(Backend):
    """Streams `n` tokens `delay` seconds apart; records concurrency and streams cut short."""

    def __init__(self, n: int = 50, delay: float = 0.02) -> None:
        self.n, self.delay = n, delay
        self.active = 0
        self.most_active = 0
        self.finished: list[bool] = []  # one per stream: ran to the end or was closed

    def generate(self, request: GenerationRequest) -> Iterator[Chunk]:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        completed = False
        try:
            for i in range(self.n):
                time.sleep(self.delay)
                yield Chunk(f" t{i}", (i,))
            completed = True
            yield Done("", usage=Usage(prompt_tokens=1, completion_tokens=self.n))
        finally:
            self.active -= 1
            self.finished.append(completed)


def test_concurrent_requests_queue_for_the_one_model() -> None:
    backend = SlowBackend(n=5)
    with client_for(backend) as client:
        results: list[str] = []

        def one() -> None:
            results.append(ask(client, "x").choices[0].message.content)

        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [" t0 t1 t2 t3 t4"] * 3
    assert backend.most_active == 1


def _wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_client_that_goes_away_cancels_its_stream() -> None:
    backend = SlowBackend(n=200)
    with running(backend) as url:
        body = {"model": "base", "messages": [{"role": "user", "content": "x"}], "stream": True}
        with httpx.stream("POST", f"{url}/chat/completions", json=body) as r:
            next(r.iter_lines())  # generation has started
        assert _wait_for(lambda: backend.finished == [False])  # stopped long before 200 tokens
        backend.n = 2
        with openai.OpenAI(base_url=url, api_key="none", max_retries=0) as client:
            assert ask(client, "x").choices[0].message.content == " t0 t1"


def test_a_client_that_times_out_cancels_its_completion() -> None:
    backend = SlowBackend(n=200)
    with running(backend) as url:
        body = {"model": "base", "messages": [{"role": "user", "content": "x"}]}
        with pytest.raises(httpx.ReadTimeout):
            _post(url, body, timeout=0.3)
        assert _wait_for(lambda: backend.finished == [False])
        backend.n = 1
        assert _post(url, body).json()["choices"][0]["message"]["content"] == " t0"


# --- the real model ----------------------------------------------------------------------------


@pytest.mark.integration
def test_the_default_model_makes_a_valid_client_tool_call(tmp_path: Any) -> None:
    from edge_agent.backends.llama_cpp import LlamaCppBackend
    from edge_agent.models.catalog import load_catalog
    from edge_agent.models.store import ModelStore

    entry = load_catalog().default()
    path = ModelStore(tmp_path).ensure(entry)
    with LlamaCppBackend(path, n_ctx=2048) as backend, client_for(backend) as client:
        out = ask(client, "What is the weather in Paris?", tools=[WEATHER], tool_choice="required")
        (call,) = out.choices[0].message.tool_calls
        assert call.function.name == "get_weather"
        assert isinstance(json.loads(call.function.arguments)["city"], str)
        chunks = list(ask(client, "Say hello.", max_tokens=8, stream=True))
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
