"""The skill contract's defaults: the exact-call scorer and the labeler of logged turns."""

from __future__ import annotations

import pytest

from edge_agent.skills.skill import LabeledTurn, exact_call, labeled_turn, normalize_arguments
from edge_agent.types import (
    AgentResult,
    Effect,
    Feedback,
    Interaction,
    Message,
    ToolCall,
    ToolOutcome,
)


def _call(name: str = "set_temperature", **arguments: object) -> ToolCall:
    return ToolCall(name=name, arguments=arguments)


@pytest.mark.parametrize(
    ("got", "gold", "same"),
    [
        (_call(room="Kitchen ", celsius=21.0), _call(room="kitchen", celsius=21), True),
        (_call(room="kitchen", celsius=21.5), _call(room="kitchen", celsius=21), False),
        (_call(room="kitchen", celsius=21, note=None), _call(room="kitchen", celsius=21), True),
        (_call("read_sensor", room="kitchen"), _call(room="kitchen"), False),
        (_call(flag=True), _call(flag=1), False),  # a boolean is not a number
        (_call(rooms=["A", "b"]), _call(rooms=["a", "B"]), True),
        (None, None, True),
        (None, _call(), False),
    ],
)
def test_exact_call_compares_normalized_arguments(
    got: ToolCall | None, gold: ToolCall | None, same: bool
) -> None:
    assert exact_call(got, gold) is same


def test_normalize_leaves_out_unset_and_folds_nested_values() -> None:
    assert normalize_arguments({"a": None, "b": {"c": " Big  Room", "d": 2.0}}) == {
        "b": {"c": "big room", "d": 2}
    }


def _turn(
    *,
    route: str = "local",
    status: str | None = "ok",
    outcome: str = "answered",
    rating: str | None = None,
    context: str | None = "Area: kitchen",
) -> Interaction:
    calls = []
    if status is not None:
        outcome_call = ToolOutcome(call=_call(room="kitchen", celsius=21), effect=Effect.ACTUATING,
                                   status=status)  # type: ignore[arg-type]  # fmt: skip
        calls.append(outcome_call)
    request = "make the kitchen 21 degrees"
    result = AgentResult(request=request, model="m", route=route, tool_calls=calls,  # type: ignore[arg-type]
                         outcome=outcome, skill="thermostat")  # type: ignore[arg-type]  # fmt: skip
    user = f"{request}\n\n{context}" if context else request
    feedback = Feedback(rating=rating) if rating else None  # type: ignore[arg-type]
    return Interaction(result=result, messages=[Message(role="user", content=user)],
                       feedback=feedback)  # fmt: skip


def test_labeled_turn_keeps_teacher_labels_and_local_calls_that_ran() -> None:
    teacher = labeled_turn(_turn(route="escalated"))
    assert isinstance(teacher, LabeledTurn)
    assert teacher.teacher and teacher.context == "Area: kitchen"
    assert teacher.call == _turn().result.tool_calls[0].call.model_copy(
        update={"id": teacher.call.id if teacher.call else ""}
    )
    local = labeled_turn(_turn(context=None))
    assert local is not None and not local.teacher and local.context is None
    delegated = labeled_turn(_turn(route="escalated", status="delegated"))  # the teacher's
    assert delegated is not None and delegated.teacher
    assert labeled_turn(_turn(status="delegated")) is None  # the SLM's, run by a client
    words = labeled_turn(_turn(route="escalated", status=None))  # the teacher answered in words
    assert words is not None and words.call is None


@pytest.mark.parametrize(
    "turn",
    [
        _turn(status="denied"),
        _turn(status="needs_confirmation", outcome="needs_confirmation"),
        _turn(status="error"),
        _turn(outcome="failed"),
        _turn(route="local_fallback"),
        _turn(route="escalated", rating="down"),
        _turn(status=None),  # a local answer in words proves nothing
    ],
)
def test_labeled_turn_drops_what_is_no_evidence(turn: Interaction) -> None:
    assert labeled_turn(turn) is None


def test_a_request_key_ignores_case_punctuation_and_spacing() -> None:
    a = LabeledTurn("1", "Make the kitchen  21 degrees!", None, None, teacher=True)
    b = LabeledTurn("2", "make the kitchen 21 degrees", None, None, teacher=True)
    assert a.key == b.key
