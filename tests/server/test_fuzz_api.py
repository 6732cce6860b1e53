"""Fuzzing `edge-agent serve` from its own OpenAPI document (issue 13: one request must not kill
the server). Schemathesis sends every operation valid and malformed requests (the coverage
phase's edge cases, then Hypothesis' positive and negative data), in process through the ASGI
app with its guard. No answer may be a 5xx or a crash, and every answer must be what the
document promises: the schema for a 2xx, OpenAI's error body for a 4xx."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, CheckFunction, GenerationMode, Response
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from edge_agent.agent import Agent
from edge_agent.backends.base import Chunk, GenerationRequest
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.server.app import create_app
from edge_agent.server.schemas import ChatCompletionChunk, ErrorBody, ResponseObject
from edge_agent.skills.home.toolset import home_toolset
from tests.fuzz_support import fuzz_settings, half, header_values, tallied

KEY = "fuzz-key"
VALID = {"Host": "localhost", "Authorization": f"Bearer {KEY}"}
MODELS = ["base", "edge-agent/home"]
# What the model says, in turn: a home call, an answer, plain text (not JSON: a tool request
# must cope with it too).
SCRIPT = [
    '{"name": "HassTurnOn", "arguments": {"area": "Kitchen", "domain": ["light"]}}',
    '{"answer": "The kitchen light is on."}',
    "Hello there, friend.",
]


class EndlessScript(ScriptedBackend):
    """The script again from the top whenever it runs out: a fuzzer sends any number."""

    def generate(self, request: GenerationRequest) -> Iterator[Chunk]:
        if not self._responses:
            self._responses = list(SCRIPT)
            self.requests.clear()  # a long run would keep every prompt otherwise
        return super().generate(request)


def device_app() -> FastAPI:
    """The app as `edge-agent serve` builds it, over a scripted model and the simulated home
    (in memory), with an API key."""
    backend = EndlessScript([])
    agents = {"home": Agent(backend, home_toolset())}
    return create_app(backend, toolsets=agents, model_name="base", api_key=KEY)


# Loaded when the module is (schemathesis' fixture-based loader breaks on pytest 9): the
# document as a client reads it, through the guard.
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all"},
        # A schema-valid request may still be refused with a 400 the schema cannot express: a
        # toolset model without user text, a tool schema no grammar can hold.
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", 400, 404]}},
    }
)
schema = schemathesis.openapi.from_asgi("/openapi.json", device_app(), config=CONFIG, headers=VALID)


@pytest.fixture
def app() -> FastAPI:
    """A fresh app for each test: schemathesis ends an app's lifespan (its model thread) when
    the test that started it ends."""
    return device_app()


def steer(case: Case) -> Case:
    """Make valid requests reach further: most to a served model (a random name is only ever
    a 404), a third of the chats streamed and half of the home ones with words to act on
    (generated data seldom does either). Chosen by a checksum of the request, so a failing
    case replays the same; malformed requests are left as they are."""
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return case
    for values, name in ((case.body, "model"), (case.path_parameters, "model_id")):
        if isinstance(values, dict) and isinstance(values.get(name), str):
            crc = zlib.crc32(repr(values).encode("utf-8", "surrogatepass"))
            values[name] = [*MODELS, values[name]][crc % 3]
            if name == "model":
                _chat(values, crc // 3)
    return case


def _chat(body: dict[str, Any], crc: int) -> None:
    body["stream"] = body.get("stream") or crc % 3 == 0
    chat = isinstance(body.get("messages"), list)  # a chat; else a Responses API request
    if body["model"] == "edge-agent/home" and crc // 3 % 2 and chat:
        body["messages"].append({"role": "user", "content": "turn on the kitchen light"})


# --- every operation, valid and malformed data -------------------------------------------------


@schema.parametrize()
@fuzz_settings()
def test_no_request_breaks_the_server_or_its_document(app: FastAPI, case: Case) -> None:
    checks: list[CheckFunction] = [stream_events_are_chunks]
    send = partial(steer(case).call_and_validate, headers=VALID, app=app, additional_checks=checks)
    tallied("data", case, VALID, send)


def stream_events_are_chunks(_: CheckContext, response: Response, case: Case) -> bool | None:
    """The document says only that each event has data (OpenAPI cannot name a JSON payload's
    schema there); each must be a chunk or an error in OpenAI's shape, and [DONE] the last."""
    if not any("text/event-stream" in v for v in response.headers.get("content-type", [])):
        return None
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    if case.path == "/v1/responses":
        return response_events_are_in_order(events)
    assert events and events[-1] == "[DONE]", f"the stream does not end with [DONE]: {events}"
    for data in events[:-1]:
        body = ErrorBody if data.startswith('{"error"') else ChatCompletionChunk
        body.model_validate_json(data)
    return True


TERMINAL = ("response.completed", "response.incomplete", "error")


def response_events_are_in_order(events: list[str]) -> bool:
    """A Responses stream: numbered events, from response.created to one terminal event
    that carries the finished response (or an error)."""
    payloads = [json.loads(data) for data in events]
    kinds = [p["type"] for p in payloads]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] in TERMINAL and not set(kinds[:-1]) & set(TERMINAL), kinds
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    if kinds[-1] != "error":
        ResponseObject.model_validate(payloads[-1]["response"])
    return True


# --- the guard: Host, Authorization, Content-Type ----------------------------------------------

LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
_VALUE = header_values()

# Half of each are good, so a quarter of the requests get past the guard.
HOSTS = half(
    st.sampled_from([*LOOPBACK, "LocalHost:8080", "[::1]:1", "127.0.0.1:80"]),
    st.sampled_from(["", "[::1", "localhost.", "localhost:x", "attacker.example"]) | _VALUE,
)
AUTHS = half(
    st.sampled_from([f"Bearer {KEY}", f"bearer  {KEY} "]),
    st.sampled_from([None, f"Basic {KEY}", KEY, f"Bearer {KEY}é", f"Bearer {KEY[:-1]}"])
    | _VALUE.map(lambda v: f"Bearer {v}")
    | _VALUE,
)
GUARD_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CONTENT_TYPES = st.one_of(
    st.none(), st.sampled_from(["application/json", "text/plain", "application/x+json"]), _VALUE
)


@schema.parametrize()
@schema.given(host=HOSTS, auth=AUTHS, content_type=CONTENT_TYPES)
@fuzz_settings()
def test_the_guard_refuses_bad_headers_in_openai_shape(
    app: FastAPI, case: Case, host: str, auth: str | None, content_type: str | None
) -> None:
    headers = {"Host": host, "Authorization": auth, "Content-Type": content_type}
    sent = {k: v for k, v in headers.items() if v is not None}  # None: the header is left out
    tallied("headers", case, sent, partial(_expect_guard, app, steer(case), sent))


def _expect_guard(app: FastAPI, case: Case, headers: dict[str, str]) -> Response:
    """Host first (403), then the key (401); past both, the request is the app's to judge."""
    response = case.call(headers=headers, app=app)
    case.validate_response(response, checks=GUARD_CHECKS)
    if not _loopback(headers["Host"]):
        assert response.status_code == 403, response.text
    elif not _authorized(headers.get("Authorization")):
        assert response.status_code == 401, response.text
    else:
        assert response.status_code not in (401, 403), response.text
    return response


def _loopback(host: str) -> bool:
    """The Host names a loopback address, with or without a port."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8080
        name = name[: name.find("]") + 1]
    else:
        head, colon, port = name.rpartition(":")
        name = head if colon and port.isdigit() else name
    return name in LOOPBACK


def _authorized(header: str | None) -> bool:
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and token.strip() == KEY


# --- found while fuzzing, past what the fuzzer sends ----------------------------------------------

LONE = "\udc80"  # sent as the JSON escape "\udc80": Python's parser takes it, UTF-8 cannot
CALL = {"name": f"f{LONE}", "arguments": "{not json"}


@pytest.mark.parametrize(
    "body",
    [
        # was a 500: the 400 about the arguments quoted the name, which JSON could not encode
        {
            "model": "base",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c", "function": CALL}]},
            ],
        },
        # reached the model (a tokenizer's UTF-8 encode raises) and the log
        {"model": "edge-agent/home", "messages": [{"role": "user", "content": f"hi {LONE}"}]},
        {"model": "base", "messages": [{"role": "user", "content": "hi"}], "user": LONE},
    ],
    ids=["tool-name", "user-text", "user-field"],
)
def test_text_that_is_not_unicode_is_a_400(app: FastAPI, body: dict[str, Any]) -> None:
    case = schema["/v1/chat/completions"]["POST"].Case(body=body, media_type="application/json")
    response = case.call(headers=VALID, app=app)
    case.validate_response(response, checks=GUARD_CHECKS)
    assert response.status_code == 400
    assert "surrogate" in response.json()["error"]["message"]


def test_a_remote_route_without_a_remote_model_is_a_400(app: FastAPI) -> None:
    """Was a 500 (the agent's ConfigError): the client asked for what this server lacks."""
    body: dict[str, Any] = {
        "model": "edge-agent/home",
        "messages": [{"role": "user", "content": "turn on the kitchen light"}],
        "edge_agent": {"route": "remote"},
    }
    case = schema["/v1/chat/completions"]["POST"].Case(body=body, media_type="application/json")
    response = case.call(headers=VALID, app=app)
    case.validate_response(response, checks=GUARD_CHECKS)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "edge_agent.route"
