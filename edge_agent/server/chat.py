"""How the server answers a chat without tools of its own: plain generation, or a local toolset.

An OpenAI chat becomes a `GenerationRequest` here: system and developer messages are merged
into one system prompt, earlier tool calls are written the way the model is asked to write
them (``{"name": …, "arguments": …}``, see `prompt`) and tool results are fenced as data. A
chat with the client's own tools is an agent turn (`client_tools`).

Everything that touches the backend runs in the server's model thread, one request at a time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from edge_agent import prompt
from edge_agent.agent import Agent, RouteOverride
from edge_agent.backends import check_schema
from edge_agent.backends.base import Backend, Chunk, Done, GenerationRequest
from edge_agent.errors import (
    ContextLengthError,
    UnsupportedSchemaError,
)
from edge_agent.server.schemas import (
    APIError,
    ChatCompletionRequest,
    ChatMessage,
    FinishReason,
    FunctionCallIn,
    ResponseFormat,
)
from edge_agent.types import AgentResult, Message, ToolCall, Usage

_NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0)
_SYSTEM_ROLES = ("system", "developer")


@dataclass
class Reply:
    """What one request produced, before it is dressed as an OpenAI response."""

    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    usage: Usage = _NO_USAGE
    turn: AgentResult | None = None  # set for agent turns (local toolsets, client tools)


@dataclass
class Chat:
    """A plain request (no tools, or ``tool_choice`` none), translated for the backend."""

    generation: GenerationRequest


# --- plain chat --------------------------------------------------------------------------------


def prepare_chat(req: ChatCompletionRequest, *, default_max_tokens: int) -> Chat:
    """Translate the request; APIError (400) for what the client got wrong."""
    generation = GenerationRequest(
        messages=backend_messages(req.messages),
        max_tokens=req.token_limit(default_max_tokens),
        temperature=0.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        seed=req.seed,
        stop=req.stop_list(),
        json_schema=response_schema(req.response_format),
    )
    return Chat(generation)


def stream_chat(backend: Backend, chat: Chat, cancel: threading.Event) -> Iterator[Chunk]:
    """The backend's stream, checked against the prompt's size first; stops when cancelled."""
    check_fits(backend, chat.generation.messages)
    stream = backend.generate(chat.generation)
    try:
        for chunk in stream:
            if cancel.is_set():
                return
            yield chunk
    except UnsupportedSchemaError as exc:  # within the limits, yet the engine cannot use it
        raise APIError(400, str(exc), param="response_format") from None
    finally:
        if isinstance(stream, Generator):
            stream.close()  # now, not at garbage collection: frees the backend for the next one


def complete_chat(backend: Backend, chat: Chat, cancel: threading.Event) -> Reply:
    parts: list[str] = []
    done: Done | None = None
    for chunk in stream_chat(backend, chat, cancel):
        parts.append(chunk.text)
        done = chunk if isinstance(chunk, Done) else None
    text = "".join(parts)
    if done is None:  # cancelled: nobody is waiting for this
        return Reply(text)
    return Reply(text, finish_reason=finish_of(done), usage=done.usage)


def finish_of(done: Done) -> FinishReason:
    """OpenAI has no "deadline": a generation cut short there is truncated, as at max_tokens."""
    return "length" if done.finish_reason == "deadline" else done.finish_reason


def response_schema(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    param = "response_format.json_schema.schema"
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise APIError(400, "response_format json_schema needs json_schema.schema", param=param)
    try:
        check_schema(fmt.json_schema.schema_)
    except UnsupportedSchemaError as exc:
        raise APIError(400, str(exc), param=param) from None
    return fmt.json_schema.schema_


# --- messages ----------------------------------------------------------------------------------


def backend_messages(messages: Sequence[ChatMessage]) -> list[Message]:
    """OpenAI messages as the backend takes them; system and developer messages go first."""
    system = [m.text() for m in messages if m.role in _SYSTEM_ROLES]
    head = [Message(role="system", content="\n\n".join(system))] if system else []
    rest = [(i, m) for i, m in enumerate(messages) if m.role not in _SYSTEM_ROLES]
    return head + [_message(i, m) for i, m in rest]


def _message(index: int, m: ChatMessage) -> Message:
    if m.role == "tool":
        content = prompt.tool_result_content(_json_or_text(m.text()))
        return Message(role="tool", content=content, tool_call_id=m.tool_call_id)
    if m.role == "assistant" and m.tool_calls:
        calls = [_call_text(index, c.function) for c in m.tool_calls]
        return Message(role="assistant", content="\n".join(calls))
    return Message(role="user" if m.role == "user" else "assistant", content=m.text(), name=m.name)


def _call_text(index: int, fn: FunctionCallIn) -> str:
    """An earlier call, as the agent writes calls."""
    try:
        args = json.loads(fn.arguments)
    except ValueError:
        where = f"messages[{index}].tool_calls"
        raise APIError(400, f"the arguments of {fn.name} are not JSON", param=where) from None
    return prompt.dumps({"name": fn.name, "arguments": args if isinstance(args, dict) else {}})


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- local toolsets ----------------------------------------------------------------------------


def run_turn(
    agent: Agent,
    text: str,
    *,
    area: str | None,
    approved: ToolCall | None,
    cancel: threading.Event,
    route: RouteOverride = "auto",
) -> Reply:
    result = agent.run(text, area=area, approved=approved, cancel=cancel, route=route)
    return Reply(turn_message(result), usage=result.usage, turn=result)


def turn_message(result: AgentResult) -> str:
    """The assistant message of a turn: the answer, a confirmation request, or the failure."""
    if result.outcome == "needs_confirmation":
        held = result.tool_calls[-1]
        call = f"{held.call.name}({prompt.dumps(held.call.arguments)})"
        return (
            f"{call} needs your confirmation ({held.error}). To go ahead, send "
            f'{{"edge_agent": {{"confirm": "{result.confirmation_id}"}}}} with the next request.'
        )
    if result.outcome == "failed":
        return f"Sorry, I could not do that: {result.error}"
    return result.answer


def last_user_text(messages: Sequence[ChatMessage]) -> str:
    """The request a local toolset acts on: the last user message (an agent turn is one)."""
    for m in reversed(messages):
        if m.role == "user" and m.text().strip():
            return m.text()
    raise APIError(400, "a local toolset model needs a user message", param="messages")


# --- context size ------------------------------------------------------------------------------


@runtime_checkable
class CountsTokens(Protocol):
    """A backend that can say how long a prompt is (LlamaCppBackend can)."""

    @property
    def n_ctx(self) -> int: ...

    def tokenize_prompt(self, messages: Sequence[Message]) -> list[int]: ...


def check_agent_fits(backend: Backend, agent: Agent) -> None:
    """Refuse a toolset whose fixed prompt alone fills the context. Checked once per agent:
    counting the home toolset's prompt costs ~5 ms, too much for every request (a longer
    request is still refused by the backend itself)."""
    adapted = agent.adapter is not None
    check_fits(backend, prompt.messages_for("", agent.toolset, adapted=adapted))


def check_fits(backend: Backend, messages: Sequence[Message]) -> None:
    """Refuse a prompt the context cannot hold, rather than let tool schemas be cut off."""
    if not isinstance(backend, CountsTokens):
        return
    n = len(backend.tokenize_prompt(messages))
    if n >= backend.n_ctx:
        raise ContextLengthError(
            f"the prompt (system prompt and tool schemas included) is {n} tokens but the "
            f"model's context holds {backend.n_ctx}; shorten the conversation, send fewer "
            "tools, or start the server with a larger context size"
        )
