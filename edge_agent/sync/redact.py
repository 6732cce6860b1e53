"""What leaves the device: an interaction with every free-text field anonymized.

A pure transform. Ids, enums, numbers and tool names keep their values (the host needs the
structure to train on); text the user, the model or a tool wrote is scrubbed. A field added to
these types later is caught by a test that lists them, so it cannot leak unreviewed.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, Protocol

from edge_agent.sync import wire
from edge_agent.types import (
    AgentResult,
    Feedback,
    Interaction,
    Message,
    Routing,
    ToolCall,
    ToolOutcome,
)


class Scrubber(Protocol):
    """What the anonymizer offers (``edge_agent.anonymize.Anonymizer``)."""

    def scrub(self, text: str) -> str: ...

    def scrub_obj(self, obj: Any) -> Any: ...


def encoded(item: Interaction, scrubber: Scrubber) -> bytes:
    """The bytes of `item` in a sync batch: what leaves the device, as `edge-agent anonymize`
    prints it."""
    return wire.encode_record(redact(item, scrubber))


def redact(item: Interaction, scrubber: Scrubber) -> Interaction:
    """A copy of `item` that may leave the device."""
    return Interaction(
        result=_result(item.result, scrubber),
        messages=[_message(m, scrubber) for m in item.messages],
        feedback=_feedback(item.feedback, scrubber),
        recorded_at=item.recorded_at,
    )


def _result(result: AgentResult, s: Scrubber) -> AgentResult:
    return result.model_copy(
        update={
            "request": s.scrub(result.request),
            "answer": s.scrub(result.answer),
            "error": _opt(result.error, s),
            "tool_calls": [_outcome(o, s) for o in result.tool_calls],
            "model": _file_name(result.model),
            "adapter": _file_name(result.adapter),
            "routing": _routing(result.routing, s),
        }
    )


def _routing(routing: Routing | None, s: Scrubber) -> Routing | None:
    """The local attempt is model output like any call; signals and counts are numbers."""
    if routing is None:
        return None
    attempt = routing.local_attempt
    if attempt is not None:
        call = attempt.call and attempt.call.model_copy(
            update={"arguments": s.scrub_obj(attempt.call.arguments)}
        )
        attempt = attempt.model_copy(
            update={
                "call": call,
                "answer": _opt(attempt.answer, s),
                "error": _opt(attempt.error, s),
                "model": _file_name(attempt.model),
                "adapter": _file_name(attempt.adapter),
            }
        )
    update = {"reason": s.scrub(routing.reason), "remote_error": _opt(routing.remote_error, s)}
    return routing.model_copy(update=update | {"local_attempt": attempt})


def _outcome(outcome: ToolOutcome, s: Scrubber) -> ToolOutcome:
    call = ToolCall(
        id=outcome.call.id, name=outcome.call.name, arguments=s.scrub_obj(outcome.call.arguments)
    )
    return outcome.model_copy(
        update={
            "call": call,
            "result": s.scrub_obj(outcome.result),
            "error": _opt(outcome.error, s),
        }
    )


def _message(message: Message, s: Scrubber) -> Message:
    # A tool message's name is the tool's, kept like ToolCall.name; a user's may be theirs.
    name = message.name if message.role == "tool" else _opt(message.name, s)
    return message.model_copy(update={"content": s.scrub(message.content), "name": name})


def _feedback(feedback: Feedback | None, s: Scrubber) -> Feedback | None:
    if feedback is None:
        return None
    return feedback.model_copy(update={"comment": _opt(feedback.comment, s)})


def _opt(text: str | None, s: Scrubber) -> str | None:
    return None if text is None else s.scrub(text)


def _file_name(name: str | None) -> str | None:
    # A model given as a path names its owner's home folder (/home/alice/...); the file's
    # name is all the host needs.
    if name is None or ("/" not in name and "\\" not in name):
        return name
    return PurePath(name.replace("\\", "/")).name
