"""The three ways the server answers a chat: plain generation, the client's tools, a local toolset.

An OpenAI chat becomes a `GenerationRequest` here: system and developer messages are merged
into one system prompt, earlier tool calls are written the way the model is asked to write
them (``{"name": …, "arguments": …}``, see `prompt`) and tool results are fenced as data. The
client's tools go through the same `Tool.from_schema` → `Toolset` → `prompt.output_schema`
path as local tools, so the returned ``tool_calls`` are valid by construction.

Everything that touches the backend runs in the server's model thread, one request at a time.
"""

from __future__ import annotations

import functools
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
    ToolDefinitionError,
    ToolError,
    UnknownToolError,
    UnsupportedSchemaError,
)
from edge_agent.server.schemas import (
    APIError,
    ChatCompletionRequest,
    ChatMessage,
    FinishReason,
    FunctionCallIn,
    NamedToolChoice,
    ResponseFormat,
    ToolSpec,
)
from edge_agent.tools import Tool, Toolset
from edge_agent.types import AgentResult, Effect, Message, ToolCall, Usage

_NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0)
_SYSTEM_ROLES = ("system", "developer")


@dataclass
class Reply:
    """What one request produced, before it is dressed as an OpenAI response."""

    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    usage: Usage = _NO_USAGE
    turn: AgentResult | None = None  # set for local toolset models


@dataclass
class Chat:
    """A plain or client-tools request, translated for the backend."""

    generation: GenerationRequest
    toolset: Toolset | None  # the client's tools the output is constrained to, if any


# --- plain chat and client tools ---------------------------------------------------------------


def prepare_chat(req: ChatCompletionRequest, *, default_max_tokens: int) -> Chat:
    """Translate the request; APIError (400) for what the client got wrong."""
    toolset, schema = _constraint(req)
    generation = GenerationRequest(
        messages=backend_messages(req.messages, toolset),
        max_tokens=req.token_limit(default_max_tokens),
        temperature=0.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        seed=req.seed,
        stop=[] if toolset else req.stop_list(),  # a stop string would cut the call's JSON
        json_schema=schema,
    )
    return Chat(generation, toolset)


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
        raise APIError(400, str(exc), param=_schema_param(chat)) from None
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
    if chat.toolset is None:
        return Reply(text, finish_reason=done.finish_reason, usage=done.usage)
    return _tool_reply(text, chat.toolset, done)


def _tool_reply(text: str, toolset: Toolset, done: Done) -> Reply:
    try:
        parsed = prompt.parse_output(text)
        if isinstance(parsed, ToolCall):
            toolset.get(parsed.name).validate(parsed.arguments)
    except ToolError:
        # The grammar allows only valid calls, so this is an output cut short by max_tokens.
        return Reply(text, finish_reason=done.finish_reason, usage=done.usage)
    if isinstance(parsed, str):
        return Reply(parsed, finish_reason=done.finish_reason, usage=done.usage)
    return Reply(None, [parsed], "tool_calls", done.usage)


def _constraint(req: ChatCompletionRequest) -> tuple[Toolset | None, dict[str, Any] | None]:
    """The client's tools and the schema the output is held to (tool_choice decides both)."""
    choice = req.tool_choice
    if not req.tools or choice == "none":
        return None, response_schema(req.response_format)
    toolset = client_toolset(req.tools)
    if isinstance(choice, NamedToolChoice):
        try:
            toolset = toolset.subset([choice.function.name])
        except UnknownToolError as exc:
            raise APIError(400, str(exc), param="tool_choice") from None
    forced = choice == "required" or isinstance(choice, NamedToolChoice)
    schema = prompt.output_schema(toolset, allow_answer=not forced)
    return toolset, _checked(schema, "tools")  # each tool fits; all of them together may not


def response_schema(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    param = "response_format.json_schema.schema"
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise APIError(400, "response_format json_schema needs json_schema.schema", param=param)
    return _checked(fmt.json_schema.schema_, param)


def _checked(schema: dict[str, Any], param: str) -> dict[str, Any]:
    """The schema, if the backends can hold output to it; else a 400 naming the limit."""
    try:
        check_schema(schema)
    except UnsupportedSchemaError as exc:
        raise APIError(400, str(exc), param=param) from None
    return schema


def _schema_param(chat: Chat) -> str:
    return "response_format" if chat.toolset is None else "tools"


def client_toolset(tools: list[ToolSpec]) -> Toolset:
    """A toolset of the client's tools; APIError (400) names a schema it cannot constrain."""
    # Clients resend the same tools with every request; building their models is the cost.
    key = json.dumps([t.function.model_dump() for t in tools])
    try:
        return _cached_toolset(key)
    except ToolDefinitionError as exc:
        raise APIError(400, f"cannot use this tool definition: {exc}", param="tools") from None


@functools.lru_cache(maxsize=32)
def _cached_toolset(key: str) -> Toolset:
    return Toolset("client", [_client_tool(fn) for fn in json.loads(key)])


def _client_tool(fn: dict[str, Any]) -> Tool:
    # The client runs its own tools: the server only constrains and validates the calls.
    return Tool.from_schema(
        fn["name"], fn["description"], fn["parameters"], handler=_runs_on_client,
        effect=Effect.READ_ONLY,
    )  # fmt: skip


def _runs_on_client(**_: Any) -> None:
    raise ToolDefinitionError("a client tool runs on the client, never on the server")


# --- messages ----------------------------------------------------------------------------------


def backend_messages(messages: Sequence[ChatMessage], toolset: Toolset | None) -> list[Message]:
    """OpenAI messages as the backend takes them; system and developer messages go first."""
    system = [m.text() for m in messages if m.role in _SYSTEM_ROLES]
    if toolset is not None:
        system.append(prompt.system_prompt(toolset))
    head = [Message(role="system", content="\n\n".join(system))] if system else []
    rest = [(i, m) for i, m in enumerate(messages) if m.role not in _SYSTEM_ROLES]
    return head + [_message(i, m, toolset) for i, m in rest]


def _message(index: int, m: ChatMessage, toolset: Toolset | None) -> Message:
    if m.role == "tool":
        content = prompt.tool_result_content(_json_or_text(m.text()))
        return Message(role="tool", content=content, tool_call_id=m.tool_call_id)
    if m.role == "assistant" and m.tool_calls:
        calls = [_call_text(index, c.function, toolset) for c in m.tool_calls]
        return Message(role="assistant", content="\n".join(calls))
    if m.role == "assistant" and toolset is not None:
        return Message(role="assistant", content=prompt.answer_json(m.text()))
    return Message(role="user" if m.role == "user" else "assistant", content=m.text(), name=m.name)


def _call_text(index: int, fn: FunctionCallIn, toolset: Toolset | None) -> str:
    """An earlier call written exactly as the grammar makes the model write it."""
    name = fn.name
    try:
        args = json.loads(fn.arguments)
    except ValueError:
        where = f"messages[{index}].tool_calls"
        raise APIError(400, f"the arguments of {name} are not JSON", param=where) from None
    call = ToolCall(name=name, arguments=args if isinstance(args, dict) else {})
    try:
        return prompt.call_json(call, toolset) if toolset and name in toolset else _raw(call)
    except ToolError:
        return _raw(call)


def _raw(call: ToolCall) -> str:
    return prompt.dumps({"name": call.name, "arguments": call.arguments})


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
