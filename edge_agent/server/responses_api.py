"""The Responses API (``POST /v1/responses``) over the same paths as Chat Completions.

A request is translated into a chat (instructions → a system message, message items →
messages, ``function_call`` → an assistant tool call, ``function_call_output`` → a tool
result, flat function tools → chat tools), answered as a chat is — plain generation, or the
client's tools through the agent, router and log — and the reply is dressed as a
``response``: a message item, or a ``function_call`` item the client runs. Streaming sends the
standard events: ``response.created``, ``response.in_progress``,
``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta`` / ``response.function_call_arguments.delta``, their
``….done``, ``response.output_item.done``, then ``response.completed`` (``response.incomplete``
when cut at ``max_output_tokens``). Nothing is stored: ``previous_response_id`` is refused;
send the whole conversation (the Agents SDK does by default).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from edge_agent import prompt
from edge_agent.backends.base import Done
from edge_agent.server.chat import Reply
from edge_agent.server.responses import turn_info
from edge_agent.server.schemas import (
    APIError,
    ChatCompletionRequest,
    ChatMessage,
    FunctionCallIn,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionDef,
    FunctionName,
    InputTokensDetails,
    MessageItem,
    NamedFunction,
    NamedToolChoice,
    OutputFunctionCall,
    OutputMessage,
    OutputText,
    ResponseFormat,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
    ToolCallIn,
    ToolSpec,
)
from edge_agent.server.streaming import TokenStream
from edge_agent.types import AgentResult, ToolCall, Usage

__all__ = ["ResponseEvents", "as_chat", "response_of"]


def as_chat(body: ResponsesRequest) -> ChatCompletionRequest:
    """The request as a chat completion request; APIError (400) for what cannot be one."""
    if body.previous_response_id is not None:
        raise APIError(
            400,
            "previous_response_id: this server keeps no responses; send the whole "
            "conversation as input (and leave previous_response_id out)",
            param="previous_response_id",
        )
    messages = _messages(body)
    if not messages:
        raise APIError(400, "input: the request has no input", param="input")
    return ChatCompletionRequest(
        model=body.model, messages=messages, tools=_tools(body), tool_choice=_choice(body),
        max_tokens=body.max_output_tokens, temperature=body.temperature, top_p=body.top_p,
        response_format=_format(body), metadata=body.metadata, edge_agent=body.edge_agent,
    )  # fmt: skip


def _messages(body: ResponsesRequest) -> list[ChatMessage]:
    head = [ChatMessage(role="system", content=body.instructions)] if body.instructions else []
    return head + [_message(item) for item in body.input]


def _message(item: MessageItem | FunctionCallItem | FunctionCallOutputItem) -> ChatMessage:
    if isinstance(item, FunctionCallItem):
        function = FunctionCallIn(name=item.name, arguments=item.arguments)
        call = ToolCallIn(id=item.call_id, function=function)
        return ChatMessage(role="assistant", tool_calls=[call])
    if isinstance(item, FunctionCallOutputItem):
        return ChatMessage(role="tool", tool_call_id=item.call_id, content=item.text())
    return ChatMessage(role=item.role, content=item.text())


def _tools(body: ResponsesRequest) -> list[ToolSpec] | None:
    if body.tools is None:
        return None
    return [
        ToolSpec(
            function=FunctionDef(
                name=t.name,
                description=t.description or "",
                parameters=t.parameters or {"type": "object", "properties": {}},
            )
        )  # fmt: skip
        for t in body.tools
    ]


def _choice(body: ResponsesRequest) -> Any:
    choice = body.tool_choice
    if isinstance(choice, NamedFunction):
        return NamedToolChoice(function=FunctionName(name=choice.name))
    return choice


def _format(body: ResponsesRequest) -> ResponseFormat | None:
    fmt = body.text.format if body.text else None
    if fmt is None:
        return None
    if fmt.type == "json_schema" and fmt.schema_ is None:
        raise APIError(400, "text.format json_schema needs a schema", param="text.format.schema")
    schema = {"name": fmt.name, "schema": fmt.schema_} if fmt.type == "json_schema" else None
    return ResponseFormat.model_validate({"type": fmt.type, "json_schema": schema})


# --- the response ------------------------------------------------------------------------------


def response_of(body: ResponsesRequest, reply: Reply) -> ResponseObject:
    """The whole reply as a finished response."""
    writer = ResponseEvents(body)
    return writer.response(_items(reply), reply.usage, reply.finish_reason == "length", reply.turn)


def _items(reply: Reply) -> list[OutputMessage | OutputFunctionCall]:
    items: list[OutputMessage | OutputFunctionCall] = []
    if reply.content or not reply.tool_calls:
        items.append(_text_item(reply.content or ""))
    items += [_call_item(call) for call in reply.tool_calls]
    return items


def _text_item(text: str, status: Any = "completed", item_id: str | None = None) -> OutputMessage:
    content = [OutputText(text=text)] if status == "completed" else []
    return OutputMessage(id=item_id or _id("msg"), status=status, content=content)


def _call_item(call: ToolCall) -> OutputFunctionCall:
    arguments = prompt.dumps(call.arguments)
    return OutputFunctionCall(id=_id("fc"), call_id=call.id, name=call.name, arguments=arguments)


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _usage(usage: Usage) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=usage.cached_prompt_tokens),
        output_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
    )


# --- streaming ---------------------------------------------------------------------------------


class ResponseEvents:
    """The server-sent events of one response; they share its id and creation time."""

    def __init__(self, body: ResponsesRequest) -> None:
        self.body = body
        self.id = _id("resp")
        self.created = int(time.time())
        self.sequence = 0

    def response(
        self,
        output: list[OutputMessage | OutputFunctionCall],
        usage: Usage | None = None,
        incomplete: bool = False,
        turn: AgentResult | None = None,
    ) -> ResponseObject:
        b = self.body
        status = "in_progress" if usage is None else "incomplete" if incomplete else "completed"
        return ResponseObject.model_validate({
            "id": self.id, "created_at": self.created, "status": status, "model": b.model,
            "output": output, "usage": _usage(usage) if usage else None,
            "instructions": b.instructions, "tools": b.tools or [],
            "tool_choice": b.tool_choice or "auto", "metadata": b.metadata or {},
            "temperature": b.temperature, "top_p": b.top_p,
            "max_output_tokens": b.max_output_tokens,
            "incomplete_details": {} if status == "incomplete" else None,
            "edge_agent": turn_info(turn),
        })  # fmt: skip

    def reply(self, reply: Reply) -> list[str]:
        """A decided reply (a call or an answer) as the whole event sequence."""
        events = self.opening()
        items = _items(reply)
        for index, item in enumerate(items):
            events += self._text(index, item) if isinstance(item, OutputMessage) else []
            events += self._call(index, item) if isinstance(item, OutputFunctionCall) else []
        incomplete = reply.finish_reason == "length"
        return events + self.closing(self.response(items, reply.usage, incomplete, reply.turn))

    async def tokens(self, stream: TokenStream) -> AsyncIterator[str]:
        """A streamed generation as text events, then the finished response."""
        item_id = _id("msg")
        try:
            for event in self.opening() + self._text_start(0, item_id):
                yield event
            parts: list[str] = []
            done: Done | None = None
            async for chunk in stream.chunks():
                if isinstance(chunk, Exception):
                    yield self.error(chunk)
                    return
                parts.append(chunk.text)
                done = chunk if isinstance(chunk, Done) else None
                if chunk.text:
                    yield self._text_delta(item_id, 0, chunk.text)
            for event in self._finish(item_id, "".join(parts), done):
                yield event
        finally:
            stream.cancel.set()  # the client went away, or we are done: stop generating

    def opening(self) -> list[str]:
        started = self.response([]).model_dump(mode="json")
        return [
            self.event("response.created", response=started),
            self.event("response.in_progress", response=started),
        ]

    def closing(self, response: ResponseObject) -> list[str]:
        kind = "response.incomplete" if response.status == "incomplete" else "response.completed"
        return [self.event(kind, response=response)]

    def error(self, exc: Exception) -> str:
        return self.event("error", code="server_error", message=str(exc), param=None)

    def event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        data = json.dumps(payload, default=_jsonable, ensure_ascii=False)
        return f"event: {kind}\ndata: {data}\n\n"

    def _text(self, index: int, item: OutputMessage) -> list[str]:
        text = item.content[0].text if item.content else ""
        delta = [self._text_delta(item.id, index, text)] if text else []
        return self._text_start(index, item.id) + delta + self._text_end(index, item)

    def _text_start(self, index: int, item_id: str) -> list[str]:
        return [
            self.event("response.output_item.added", output_index=index,
                       item=_text_item("", "in_progress", item_id)),
            self.event("response.content_part.added", item_id=item_id, output_index=index,
                       content_index=0, part=OutputText(text="")),
        ]  # fmt: skip

    def _text_delta(self, item_id: str, index: int, text: str) -> str:
        return self.event("response.output_text.delta", item_id=item_id, output_index=index,
                          content_index=0, delta=text, logprobs=[])  # fmt: skip

    def _text_end(self, index: int, item: OutputMessage) -> list[str]:
        part = item.content[0] if item.content else OutputText(text="")
        return [
            self.event("response.output_text.done", item_id=item.id, output_index=index,
                       content_index=0, text=part.text, logprobs=[]),
            self.event("response.content_part.done", item_id=item.id, output_index=index,
                       content_index=0, part=part),
            self.event("response.output_item.done", output_index=index, item=item),
        ]  # fmt: skip

    def _finish(self, item_id: str, text: str, done: Done | None) -> list[str]:
        item = _text_item(text, item_id=item_id)
        incomplete = done is not None and done.finish_reason == "length"
        usage = done.usage if done is not None else Usage(prompt_tokens=0, completion_tokens=0)
        return self._text_end(0, item) + self.closing(self.response([item], usage, incomplete))

    def _call(self, index: int, item: OutputFunctionCall) -> list[str]:
        started = item.model_copy(update={"arguments": "", "status": "in_progress"})
        return [
            self.event("response.output_item.added", output_index=index, item=started),
            self.event("response.function_call_arguments.delta", item_id=item.id,
                       output_index=index, delta=item.arguments),
            self.event("response.function_call_arguments.done", item_id=item.id,
                       output_index=index, name=item.name, arguments=item.arguments),
            self.event("response.output_item.done", output_index=index, item=item),
        ]  # fmt: skip


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON")
