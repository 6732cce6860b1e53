"""Types shared across the device package: a tool call, what came of it, an agent turn.

Kept in one module so the agent, the log, the server and the flywheel agree on one shape.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from edge_agent.backends.base import Message, Usage


class Effect(StrEnum):
    """What a *call* does to the world (the same tool can differ by arguments: turning off a
    light actuates, turning off a lock or a valve is dangerous)."""

    READ_ONLY = "read_only"
    ACTUATING = "actuating"
    DANGEROUS = "dangerous"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class ToolCall(BaseModel):
    id: str = Field(default_factory=lambda: new_id("call"))
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


CallStatus = Literal["ok", "error", "denied", "needs_confirmation", "timeout", "invalid"]


class ToolOutcome(BaseModel):
    """One call and what happened to it."""

    call: ToolCall
    effect: Effect
    status: CallStatus
    result: Any = None
    error: str | None = None
    duration_ms: float = 0.0


Outcome = Literal[
    "answered",  # a final answer (possibly after tool calls)
    "needs_confirmation",  # stopped before a call the policy wants confirmed
    "failed",  # invalid output after repair, step limit, cancelled
]


class AgentResult(BaseModel):
    """One agent turn, as the Python API, the CLI's --json and the log see it."""

    id: str = Field(default_factory=lambda: new_id("turn"))
    request: str
    answer: str = ""
    tool_calls: list[ToolOutcome] = Field(default_factory=list)
    outcome: Outcome = "answered"
    error: str | None = None
    failure: Literal["invalid_call", "step_limit", "cancelled"] | None = None
    model: str
    adapter: str | None = None
    route: Literal["local", "escalated", "local_fallback"] = "local"
    steps: int = 0
    latency_ms: float = 0.0
    timings: dict[str, float] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=lambda: Usage(prompt_tokens=0, completion_tokens=0))
    confirmation_id: str | None = None


class Feedback(BaseModel):
    """What the user said about a turn, when they said anything."""

    rating: Literal["up", "down"] | None = None
    comment: str | None = None


class Interaction(BaseModel):
    """One logged turn: the agent's result plus what the log adds (the prompt messages the
    model saw, feedback, when it was recorded, whether the sync client has sent it)."""

    result: AgentResult
    messages: list[Message] = Field(default_factory=list)
    feedback: Feedback | None = None
    recorded_at: float = 0.0
    synced: bool = False

    @property
    def id(self) -> str:
        return self.result.id
