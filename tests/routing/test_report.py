"""The per-skill, per-day routing report: numbers on crafted records, and its picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_agent.routing.report import plot_report, reason_kind, skill_report
from edge_agent.types import (
    AgentResult,
    Effect,
    Interaction,
    LocalAttempt,
    Routing,
    ToolCall,
    ToolOutcome,
)

DAY = 86_400.0
T0 = 1_750_000_000.0 + 12 * 3600  # a fixed day, around noon
RIGHT = {"name": "kitchen", "brightness": 70}
WRONG = {"name": "kitchen", "brightness": 40}
REASONS = {
    "teacher": "teacher-first: no promoted adapter for demo",
    "unsure": "min log-prob -2.000 < -1.000",
    "failed": "the local attempt failed: no valid call",
    "sure": "the local attempt is confident",
}


def call(arguments: dict[str, Any] | None) -> ToolCall | None:
    return None if arguments is None else ToolCall(name="set_light", arguments=arguments)


def record(
    ts: float, route: str, why: str, *, ran: dict[str, Any] | None = None,
    shadow: dict[str, Any] | None | bool = False, sent: int = 0, queued: bool = False,
    label_of: str | None = None, skill: str = "demo",
) -> Interaction:  # fmt: skip
    """A logged turn: `ran` the call that ran (the teacher's on an escalated turn), `shadow`
    the small model's attempt kept beside it (False: none kept)."""
    status = "delegated" if label_of else "ok"
    outcomes = [ToolOutcome(call=c, effect=Effect.ACTUATING, status=status)
                for c in [call(ran)] if c is not None]  # fmt: skip
    attempt = None if shadow is False else LocalAttempt(model="slm", call=call(shadow or None))
    decision = "local" if why == "sure" else "remote"
    routing = Routing(decision=decision, reason=REASONS[why], local_attempt=attempt,
                      remote_bytes=sent, queued=queued)  # fmt: skip
    result = AgentResult(request="set the kitchen light", model="m", skill=skill, route=route,
                         tool_calls=outcomes, routing=routing, label_of=label_of)  # fmt: skip
    return Interaction(result=result, recorded_at=ts)


def crafted() -> list[Interaction]:
    day0 = [record(T0 + i, "escalated", "teacher", ran=RIGHT, shadow=s, sent=1000)
            for i, s in enumerate([RIGHT, RIGHT, WRONG])]  # fmt: skip
    waiting = record(T0 + DAY + 3, "local_fallback", "unsure", ran=WRONG, queued=True)
    labelled = record(T0 + DAY + 4, "local_fallback", "unsure", ran=RIGHT, queued=True)
    day1 = [
        record(T0 + DAY + 1, "local", "sure", ran=RIGHT),
        record(T0 + DAY + 2, "local", "sure", ran=RIGHT),
        waiting, labelled,
        record(T0 + DAY + 5, "escalated", "failed", ran=RIGHT, shadow=None, sent=1000),
        record(T0 + DAY + 6, "escalated", "teacher", ran={"name": "kitchen", "brightness": 70.0},
               sent=500, label_of=labelled.id),
    ]  # fmt: skip
    return day0 + day1


def test_per_skill_per_day_numbers() -> None:
    report = skill_report(crafted())
    assert list(report) == ["demo"]
    day0, day1 = report["demo"]["days"]
    assert day0 | {"day": None} == {
        "day": None, "turns": 3, "local": 0, "escalated": 3, "local_share": 0.0, "queued": 0,
        "labelled": 0, "local_accuracy": None, "audited": 0, "audit_agreement": None,
        "shadowed": 3, "shadow_agreement": 0.6667,
        "labels": 0, "teacher_bytes": 3000, "reasons": {"teacher-first": 3},
    }  # fmt: skip
    assert day1["turns"] == 5 and day1["local"] == 4 and day1["local_share"] == 0.8
    # the late label matches the local call (70 == 70.0 after normalization)
    assert (day1["labelled"], day1["local_accuracy"], day1["queued"]) == (1, 1.0, 1)
    assert (day1["shadowed"], day1["shadow_agreement"]) == (1, 0.0)  # the SLM had no call
    assert day1["labels"] == 1 and day1["teacher_bytes"] == 1500
    assert day1["reasons"] == {"min log-prob": 2, "the local attempt failed": 1}
    total = report["demo"]["total"]
    assert (total["turns"], total["local_share"], total["shadow_agreement"]) == (8, 0.5, 0.5)
    assert total["teacher_bytes"] == 4500 and total["reasons"]["teacher-first"] == 3
    assert day0 != day1 and day1["day"] > day0["day"]


def test_each_skill_is_scored_by_its_own_scorer_and_can_be_picked() -> None:
    items = crafted() + [record(T0, "escalated", "teacher", ran=RIGHT, shadow=WRONG,
                                skill="lenient")]  # fmt: skip
    report = skill_report(items, scorer_for=lambda s: (lambda a, b: True) if s == "lenient"
                          else (lambda a, b: False))  # fmt: skip
    assert report["lenient"]["total"]["shadow_agreement"] == 1.0
    assert report["demo"]["total"]["shadow_agreement"] == 0.0
    assert list(skill_report(items, skill="lenient")) == ["lenient"]


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("teacher-first: no promoted adapter for x", "teacher-first"),
        ("min log-prob -2.100 < -1.000", "min log-prob"),
        ("distance to the training clusters 0.412 > 0.300", "distance to the training clusters"),
        ("the routing policy sends unlock to the remote model", "the routing policy sends "
         "unlock to the remote model"),
    ],
)  # fmt: skip
def test_reasons_count_up_without_their_particulars(reason: str, kind: str) -> None:
    assert reason_kind(reason) == kind


def test_the_picture_is_a_png(tmp_path: Path) -> None:
    items = crafted() + [record(T0, "escalated", "teacher", ran=RIGHT, shadow=WRONG,
                                skill="lenient")]  # fmt: skip
    png = plot_report(tmp_path / "out" / "report.png", skill_report(items))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
