"""The OpenAI wire format the server speaks: request and response models, and its error.

Requests ignore fields they do not know, as OpenAI's API does, so any OpenAI client works;
the fields that change what is generated are validated. Responses carry one extension,
``edge_agent``, with the local agent's turn (executed calls, outcome, confirmation id).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
)

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


# OpenAI's request metadata: string pairs; ``edge_agent_skill`` names the skill of the tools.
MetadataKey = Annotated[str, StringConstraints(max_length=64)]
Metadata = dict[MetadataKey, Annotated[str, StringConstraints(max_length=512)]]


class EdgeAgentOptions(_Lenient):
    """The ``edge_agent`` extension of a request: ``route`` for a local toolset model or the
    client's tools, ``confirm`` and ``area`` for a local toolset model."""

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
    metadata: Metadata | None = Field(None, max_length=16)
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


# --- the Responses API (/v1/responses) ---------------------------------------------------------


class InputText(_Lenient):
    type: Literal["input_text", "output_text", "text"]
    text: str


def _joined(content: str | list[InputText]) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)


class MessageItem(_Lenient):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputText]

    def text(self) -> str:
        return _joined(self.content)


class FunctionCallItem(_Lenient):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str = "{}"  # JSON text


class FunctionCallOutputItem(_Lenient):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputText]

    def text(self) -> str:
        return _joined(self.output)


def _item_type(value: Any) -> str | None:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("message", "function_call", "function_call_output") else None


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(
        _item_type,
        custom_error_type="input_item",
        custom_error_message="an item is a message, a function_call or a function_call_output",
    ),
]


def _as_items(value: Any) -> Any:
    """Text input is one user message."""
    return [{"role": "user", "content": value}] if isinstance(value, str) else value


class FunctionTool(_Lenient):
    """A function tool in the Responses API's flat shape."""

    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(_Lenient):
    type: Literal["function"]
    name: str


class TextFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    name: str = "response"
    schema_: dict[str, Any] | None = Field(None, alias="schema")


class TextOptions(_Lenient):
    format: TextFormat | None = None


class ResponsesRequest(_Lenient):
    model: str
    input: Annotated[
        list[InputItem], BeforeValidator(_as_items, json_schema_input_type=str | list[InputItem])
    ]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    text: TextOptions | None = None
    metadata: Metadata | None = Field(None, max_length=16)
    previous_response_id: str | None = Field(
        None, description="not kept here: send the whole conversation as input"
    )
    stream: bool = False
    parallel_tool_calls: bool | None = None
    user: str | None = None
    edge_agent: EdgeAgentOptions | None = None


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: ItemStatus = "completed"
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class OutputFunctionCall(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str  # JSON text
    status: ItemStatus = "completed"


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"] = "max_output_tokens"


class ResponseObject(BaseModel):
    """A response of the Responses API; ``edge_agent`` is the turn, as in chat completions."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete"]
    model: str
    output: list[OutputMessage | OutputFunctionCall]
    usage: ResponseUsage | None = None
    instructions: str | None = None
    tools: list[FunctionTool] = Field(default_factory=list)
    tool_choice: Literal["none", "auto", "required"] | NamedFunction = "auto"
    parallel_tool_calls: bool = False  # one call per turn
    metadata: dict[str, str] = Field(default_factory=dict)
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    previous_response_id: None = None
    incomplete_details: IncompleteDetails | None = None
    error: None = None
    edge_agent: TurnInfo | None = None
