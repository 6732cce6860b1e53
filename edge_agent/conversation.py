"""What a turn's prompt is made of: a client's conversation around its request and the calls
of this turn it ran already (OpenAI ``tools=``), written as the model would have written them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent import prompt
from edge_agent.errors import ToolError
from edge_agent.tools import Toolset
from edge_agent.types import Message, ToolCall, ToolOutcome


@dataclass(frozen=True)
class Conversation:
    """What a client that runs its own tools sends around its request (OpenAI ``tools=``):
    its instructions, the exchanges before the request, and the calls of this turn it ran
    already with their results, so the turn continues after them. A call in ``prior`` is
    never proposed again: proposing it again answers from its result."""

    instructions: str = ""
    history: Sequence[Message] = ()  # before the request: earlier user/assistant/tool messages
    prior: Sequence[ToolOutcome] = ()  # this turn's calls the client ran, each with its result
    required: bool = False  # tool_choice "required": a call, not an answer
    tool: str | None = None  # tool_choice naming a tool: a call of that one
    temperature: float = 0.0  # the client's sampling; the grammar holds at any temperature
    top_p: float = 1.0
    seed: int | None = None


def turn_messages(
    text: str, toolset: Toolset, context: str | None, talk: Conversation, *, adapted: bool
) -> list[Message]:
    """The turn's prompt: the system prompt (after the client's instructions), the earlier
    exchanges, the request, then this turn's calls the client ran and their results. With an
    adapter, the prompt it was trained on: no instructions, no earlier exchanges."""
    system, user = prompt.messages_for(text, toolset, context=context, adapted=adapted)
    if talk.instructions and not adapted:
        system.content = f"{talk.instructions}\n\n{system.content}"
    history = [] if adapted else list(talk.history)
    done = [m for o in talk.prior for m in _exchange(o, toolset)]
    return [system, *history, user, *done]


def _exchange(outcome: ToolOutcome, toolset: Toolset) -> list[Message]:
    """A call and its result as the model sees them after it made the call."""
    return [
        Message(role="assistant", content=call_text(outcome.call, toolset)),
        Message(role="tool", content=prompt.tool_result_content(outcome.result, outcome.error)),
    ]


def call_text(call: ToolCall, toolset: Toolset) -> str:
    """A call written as the grammar makes the model write it; a call of a tool the toolset
    lacks (or with arguments it would not take), as it came."""
    try:
        return prompt.call_json(call, toolset)
    except ToolError:
        return prompt.dumps({"name": call.name, "arguments": call.arguments})
