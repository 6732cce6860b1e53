"""OpenAI responses from what the model produced: a whole ``chat.completion``, or
``chat.completion.chunk`` events for SSE (``data: {…}`` lines, then ``data: [DONE]``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterable

from fastapi.responses import StreamingResponse

from edge_agent import prompt
from edge_agent.backends.base import Chunk, Done
from edge_agent.server.chat import Reply, finish_of
from edge_agent.server.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    ErrorBody,
    ErrorDetail,
    FinishReason,
    FunctionCallOut,
    PromptTokensDetails,
    ToolCallDelta,
    ToolCallOut,
    TurnInfo,
    UsageOut,
)
from edge_agent.server.streaming import TokenStream
from edge_agent.types import AgentResult, ToolCall, Usage


def completion(model: str, reply: Reply) -> ChatCompletion:
    message = AssistantMessage(
        content=reply.content, tool_calls=[tool_call(c) for c in reply.tool_calls] or None
    )
    return ChatCompletion(
        model=model,
        choices=[Choice(message=message, finish_reason=reply.finish_reason)],
        usage=usage_out(reply.usage),
        edge_agent=turn_info(reply.turn),
    )


def tool_call(call: ToolCall) -> ToolCallOut:
    arguments = prompt.dumps(call.arguments)
    return ToolCallOut(id=call.id, function=FunctionCallOut(name=call.name, arguments=arguments))


def usage_out(usage: Usage) -> UsageOut:
    return UsageOut(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_prompt_tokens),
    )


def turn_info(turn: AgentResult | None) -> TurnInfo | None:
    return TurnInfo.of(turn) if turn is not None else None


def sse(events: AsyncIterator[str]) -> StreamingResponse:
    # no-cache and no proxy buffering: each event must reach the client as it is made.
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


class ChunkWriter:
    """The SSE events of one streamed response; they share its id, creation time and model."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def role(self) -> str:
        return self._event(Delta(role="assistant", content=""))

    def content(self, text: str) -> str:
        return self._event(Delta(content=text))

    def tool_calls(self, calls: list[ToolCall]) -> str:
        deltas = [ToolCallDelta(index=i, **tool_call(c).model_dump()) for i, c in enumerate(calls)]
        return self._event(Delta(tool_calls=deltas))

    def finish(self, reason: FinishReason, turn: AgentResult | None = None) -> str:
        return self._event(Delta(), finish=reason, turn=turn)

    def usage(self, usage: Usage) -> str:
        chunk = self._chunk([], usage=usage_out(usage))
        return _data(chunk.model_dump_json(exclude_none=True))

    def token(self, chunk: Chunk, *, include_usage: bool) -> list[str]:
        """The events of one backend chunk: its text, and the finish after the last one."""
        events = [self.content(chunk.text)] if chunk.text else []
        if isinstance(chunk, Done):
            events.append(self.finish(finish_of(chunk)))
            if include_usage:
                events.append(self.usage(chunk.usage))
        return events

    def error(self, exc: Exception) -> str:
        detail = ErrorDetail(message=str(exc), type="server_error")
        return _data(ErrorBody(error=detail).model_dump_json())

    @staticmethod
    def done() -> str:
        return _data("[DONE]")

    def _event(
        self, delta: Delta, *, finish: FinishReason | None = None, turn: AgentResult | None = None
    ) -> str:
        choice = ChunkChoice(delta=delta, finish_reason=finish)
        chunk = self._chunk([choice], turn=turn_info(turn))
        return _data(chunk.model_dump_json(exclude_none=True))

    def _chunk(
        self,
        choices: list[ChunkChoice],
        usage: UsageOut | None = None,
        turn: TurnInfo | None = None,
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage,
            edge_agent=turn,
        )  # fmt: skip


def reply_events(writer: ChunkWriter, reply: Reply, *, include_usage: bool) -> list[str]:
    """A finished reply as stream events: the whole content, or the whole call, in one delta."""
    events = [writer.role()]
    if reply.content:
        events.append(writer.content(reply.content))
    if reply.tool_calls:
        events.append(writer.tool_calls(reply.tool_calls))
    events.append(writer.finish(reply.finish_reason, reply.turn))
    if include_usage:
        events.append(writer.usage(reply.usage))
    return [*events, writer.done()]


async def token_events(
    writer: ChunkWriter, stream: TokenStream, *, include_usage: bool
) -> AsyncIterator[str]:
    """A streamed generation as chunk events, ending with [DONE]; an error mid-stream is
    reported as an event (the status line went out with the first chunk)."""
    try:
        yield writer.role()
        async for item in stream.chunks():
            if isinstance(item, Exception):
                yield writer.error(item)
                break
            for event in writer.token(item, include_usage=include_usage):
                yield event
        yield writer.done()
    finally:
        stream.cancel.set()  # the client went away, or we are done: either way, stop generating


async def iterate(events: Iterable[str]) -> AsyncIterator[str]:
    for event in events:
        yield event


def _data(payload: str) -> str:
    return f"data: {payload}\n\n"
