"""The OpenAI wire format the server speaks: request and response models, and its error.

Requests ignore fields they do not know, as OpenAI's API does, so any OpenAI client works;
the fields that change what is generated are validated. Responses carry one extension,
``edge_agent``, with the local agent's turn (executed calls, outcome, confirmation id).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.types import AgentResult, Outcome, ToolOutcome

FinishReason = Literal["stop", "length", "tool_calls"]


class APIError(Exception):
    """An HTTP error in OpenAI's shape. Never leaves the server: it becomes the response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(error=ErrorDetail(message=message, type=type, param=param, code=code))


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


# --- requests ----------------------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class FunctionCallIn(_Lenient):
    name: str
    arguments: str = "{}"  # JSON text, as OpenAI sends it


class ToolCallIn(_Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class FunctionDef(_Lenient):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ToolSpec(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionDef


class FunctionName(_Lenient):
    name: str


class NamedToolChoice(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionName


class JsonSchemaFormat(_Lenient):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(None, alias="schema")


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class EdgeAgentOptions(_Lenient):
    """The ``edge_agent`` extension of a request (local toolset models only)."""

    confirm: str | None = Field(None, description="a confirmation id to approve and re-run")
    area: str | None = Field(None, description="the speaker's area, e.g. 'Kitchen'")
    route: Literal["auto", "local", "remote"] = Field(
        "auto", description="the local model, the remote one, or the router's choice"
    )


class ChatCompletionRequest(_Lenient):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    response_format: ResponseFormat | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request: one model context")
    user: str | None = None
    edge_agent: EdgeAgentOptions | None = None

    def token_limit(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


# --- responses ---------------------------------------------------------------------------------


class FunctionCallOut(BaseModel):
    name: str
    arguments: str  # JSON text: OpenAI clients json.loads it


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ToolCallDelta(ToolCallOut):
    index: int = 0


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)


class TurnInfo(BaseModel):
    """The ``edge_agent`` extension of a response: what the local agent did in this turn."""

    turn_id: str
    outcome: Outcome
    tool_calls: list[ToolOutcome]
    confirmation_id: str | None = None
    error: str | None = None
    failure: str | None = None
    steps: int
    adapter: str | None = None
    latency_ms: float
    route: Literal["local", "escalated", "local_fallback"] = "local"

    @classmethod
    def of(cls, result: AgentResult) -> TurnInfo:
        return cls(turn_id=result.id, **result.model_dump(include=_TURN_FIELDS))


_TURN_FIELDS = {
    "outcome", "tool_calls", "confirmation_id", "error", "failure", "steps", "adapter",
    "latency_ms", "route",
}  # fmt: skip


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: UsageOut
    system_fingerprint: str | None = None
    edge_agent: TurnInfo | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: UsageOut | None = None
    edge_agent: TurnInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "edge-agent"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
