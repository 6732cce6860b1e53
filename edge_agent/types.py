"""Types shared across the device package: a message, a tool call, what came of it, an agent turn.

Kept in one module so the agent, the log, the server and the flywheel agree on one shape.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

Role = Literal["system", "user", "assistant", "tool"]


class Message(BaseModel):
    role: Role
    content: str
    name: str | None = None
    tool_call_id: str | None = None

    def to_template_dict(self) -> dict[str, str]:
        """The shape chat templates expect: unset optional keys are absent, not None."""
        return self.model_dump(exclude_none=True)


class Usage(BaseModel, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0  # prompt tokens served from the KV cache, not re-evaluated


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


# delegated: the client runs the tool (OpenAI ``tools=``); the turn ends with the call.
CallStatus = Literal[
    "ok", "error", "denied", "needs_confirmation", "timeout", "invalid", "delegated"
]


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
    "timeout",  # ran past turn_deadline_s: calls already run stay done, none runs after
]


class RouteSignals(BaseModel):
    """What the router reads from the local attempt. Log-probabilities are over the tokens
    the model chose; tokens a schema forced (jump-forward) carry no information and are left
    out. ``None``: no chosen token (the whole output was forced) or no embedder/centroids."""

    min_logprob: float | None = None
    mean_logprob: float | None = None
    chosen_tokens: int = 0
    repaired: bool = False  # the call was valid only after a repair
    # a free-text argument names words that neither the request nor the device's context hold
    ungrounded: bool = False
    invalid: bool = False  # no valid call: invalid after repair, or the step limit
    distance: float | None = None  # cosine distance to the adapter's nearest training cluster


class LocalAttempt(BaseModel):
    """The local model's own attempt at a turn the router escalated, kept beside the teacher's
    label so the flywheel sees both."""

    model: str
    adapter: str | None = None
    call: ToolCall | None = None  # validated, never executed
    answer: str | None = None
    error: str | None = None
    latency_ms: float = 0.0
    usage: Usage = Field(default_factory=lambda: Usage(prompt_tokens=0, completion_tokens=0))


class Routing(BaseModel):
    """How the router served a turn: what it read, what it decided and why, what the remote
    model cost. On ``AgentResult.routing``; None when no router ran (and in older logs)."""

    decision: Literal["local", "remote"]
    reason: str
    signals: RouteSignals = Field(default_factory=RouteSignals)
    remote_model: str | None = None
    remote_error: str | None = None  # why the remote did not serve it (the local call ran)
    local_attempt: LocalAttempt | None = None  # escalated turns: the SLM's call, not executed
    remote_usage: Usage | None = None  # tokens the remote reported for this turn
    remote_bytes: int = 0  # request bodies sent to the remote
    remote_ms: float | None = None
    queued: bool = False  # a local best effort awaiting a teacher label (the remote was down)
    # a confident local turn also sent to the teacher, drawn with this chance (routing.audit)
    audit_share: float | None = None


class AgentResult(BaseModel):
    """One agent turn, as the Python API, the CLI's --json and the log see it."""

    id: str = Field(default_factory=lambda: new_id("turn"))
    request: str
    answer: str = ""
    tool_calls: list[ToolOutcome] = Field(default_factory=list)
    outcome: Outcome = "answered"
    error: str | None = None
    # remote_error: the remote model failed after it had already acted; nothing ran twice.
    # repeated_call: the model proposed again a call that had failed in this turn.
    # tool_error: a call failed and the model was not asked again (retry_failed_calls).
    failure: (
        Literal[
            "invalid_call", "step_limit", "cancelled", "remote_error", "repeated_call", "tool_error"
        ]
        | None
    ) = None
    model: str
    adapter: str | None = None
    skill: str | None = None  # the skill the turn belongs to (its toolset's name)
    toolset: str | None = None  # fingerprint of the tool schemas the model saw (the log has them)
    route: Literal["local", "escalated", "local_fallback"] = "local"
    # calls a client ran before this turn (OpenAI tools=), their results in the prompt: the
    # turn continues an exchange, so it is no request → call row
    prior_calls: int = 0
    steps: int = 0
    latency_ms: float = 0.0
    timings: dict[str, float] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=lambda: Usage(prompt_tokens=0, completion_tokens=0))
    confirmation_id: str | None = None
    routing: Routing | None = None
    # a teacher's late label for the logged turn with this id (served locally while the
    # remote model was down); this record's calls are the label, nothing of it ran
    label_of: str | None = None


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

    @property
    def teacher_label(self) -> ToolCall | None:
        """The remote model's call on an escalated turn: the flywheel's label."""
        calls = self.result.tool_calls
        return calls[0].call if self.result.route == "escalated" and calls else None

    @property
    def local_attempt(self) -> LocalAttempt | None:
        """The local model's own attempt beside the teacher's label (escalated turns)."""
        return self.result.routing.local_attempt if self.result.routing else None
