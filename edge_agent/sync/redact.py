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
    args = _Arguments(result.request, s)
    return result.model_copy(
        update={
            "request": s.scrub(result.request),
            "answer": s.scrub(result.answer),
            "error": _opt(result.error, s),
            "tool_calls": [_outcome(o, s, args) for o in result.tool_calls],
            "model": _file_name(result.model),
            "adapter": _file_name(result.adapter),
            "routing": _routing(result.routing, s, args),
        }
    )


class _Arguments:
    """Scrubs a call's arguments as the request they were copied from was scrubbed.

    A value is usually a span of the user's words ("Olvey" of "humidity in Olvey New
    Hampshire"); scrubbed alone, out of its sentence, a detector can judge it otherwise than
    in the request, and the host would train on a call naming words its request does not hold.
    So a value found verbatim in the request takes the request's findings: each part of it
    inside a finding becomes that finding's tag, the rest stays. Other values are scrubbed on
    their own; a value under a secret-like key is a secret whatever the request says."""

    def __init__(self, request: str, s: Scrubber) -> None:
        self.request, self.s = request, s
        findings = getattr(s, "findings", None)  # a bare Scrubber: each value on its own
        self.findings = findings(request) if findings is not None else None

    def __call__(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return {k: self._value(k, v) for k, v in arguments.items()}

    def _value(self, key: str, value: Any) -> Any:
        alone = self.s.scrub_obj({key: value})[key]
        if self.findings is None or not isinstance(value, str) or not value:
            return alone
        start = self.request.find(value)
        if start < 0 or alone != self.s.scrub(value):  # not copied, or a secret by its key
            return alone
        return self._as_in_request(value, start)

    def _as_in_request(self, value: str, start: int) -> str:
        end, out, pos = start + len(value), [], start
        for f in self.findings or ():
            if f.end <= start or f.start >= end:
                continue
            if f.start > pos:
                out.append(self.request[pos : f.start])
            tag = self.s.tag(f.type, f.value)  # type: ignore[attr-defined]
            if not out or out[-1] != tag:
                out.append(tag)
            pos = max(pos, f.end)
        out.append(self.request[pos:end] if pos < end else "")
        return "".join(out)


def _routing(routing: Routing | None, s: Scrubber, args: _Arguments) -> Routing | None:
    """The local attempt is model output like any call; signals and counts are numbers."""
    if routing is None:
        return None
    attempt = routing.local_attempt
    if attempt is not None:
        call = attempt.call and attempt.call.model_copy(
            update={"arguments": args(attempt.call.arguments)}
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


def _outcome(outcome: ToolOutcome, s: Scrubber, args: _Arguments) -> ToolOutcome:
    call = ToolCall(
        id=outcome.call.id, name=outcome.call.name, arguments=args(outcome.call.arguments)
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
