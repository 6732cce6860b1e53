"""Route modes per skill: teacher-first (the remote answers until the skill has an adapter,
the SLM's own attempt logged in shadow), local-first, local-only; against a stand-in teacher
on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from edge_agent.agent import Agent
from edge_agent.settings import RouteMode
from tests.demo_tools import STATE
from tests.routing.routing_support import LOCAL, UNKNOWN, MemoryLog, demo_agent, router_to
from tests.teacher_support import StandInTeacher, stand_in_teacher


@pytest.fixture(autouse=True)
def clean_state() -> None:
    STATE.clear()


@pytest.fixture
def teacher() -> Iterator[StandInTeacher]:
    with stand_in_teacher(("set_light", {"name": "kitchen", "brightness": 70})) as t:
        yield t


def agent(
    responses: list[str], router: Any, mode: RouteMode, **kwargs: Any
) -> tuple[Agent, MemoryLog]:
    log = MemoryLog()
    return demo_agent(responses, router, mode, log, **kwargs), log


def test_teacher_first_without_an_adapter_sends_every_turn_to_the_teacher(
    teacher: StandInTeacher,
) -> None:
    a, log = agent([LOCAL] * 3, router_to(teacher.url), "teacher-first")
    results = [a.run("set the kitchen light to 70") for _ in range(3)]
    assert [r.route for r in results] == ["escalated"] * 3 and len(teacher.requests) == 3
    assert STATE == {"kitchen": 70}  # the teacher's call ran, never the shadow one
    for item in log.items:
        routing = item.result.routing
        assert routing and routing.reason == "teacher-first: no promoted adapter for demo"
        assert item.teacher_label and item.teacher_label.arguments["brightness"] == 70
        shadow = item.local_attempt
        assert shadow and shadow.call and shadow.call.arguments["brightness"] == 40
        assert shadow.model == "scripted" and shadow.latency_ms > 0


def test_teacher_first_with_an_adapter_is_local_first(teacher: StandInTeacher) -> None:
    a, _ = agent([LOCAL], router_to(teacher.url), "teacher-first", adapter="demo-v1")
    result = a.run("set the kitchen light to 40")
    assert result.route == "local" and teacher.requests == [] and STATE == {"kitchen": 40}
    assert result.routing and "no calibration" in result.routing.reason
    a, _ = agent([UNKNOWN, UNKNOWN], router_to(teacher.url), "teacher-first", adapter="demo-v1")
    assert a.run("set the kitchen light to 70").route == "escalated"  # failures still escalate


def test_local_only_never_contacts_the_teacher_even_on_failure(teacher: StandInTeacher) -> None:
    always = router_to(teacher.url, tools={"set_light": "always_remote"})
    a, log = agent([LOCAL, UNKNOWN, UNKNOWN], always, "local-only")
    assert a.run("set the kitchen light to 40").route == "local"
    failed = a.run("set the kitchen light to 70")
    assert failed.route == "local" and failed.outcome == "failed"
    assert failed.routing and failed.routing.reason == "local-only: demo never escalates"
    assert teacher.requests == [] and STATE == {"kitchen": 40}
    assert all(not i.result.routing.queued for i in log.items)  # type: ignore[union-attr]


def test_a_per_request_override_wins_over_the_mode(teacher: StandInTeacher) -> None:
    a, _ = agent([LOCAL], router_to(teacher.url), "local-only")
    assert a.run("set the kitchen light to 70", route="remote").route == "escalated"
    a, _ = agent([LOCAL], router_to(teacher.url), "teacher-first")
    assert a.run("set the kitchen light to 40", route="local").route == "local"
    assert len(teacher.requests) == 1


def test_a_never_remote_tool_stays_on_the_device_in_teacher_first(teacher: StandInTeacher) -> None:
    never = router_to(teacher.url, tools={"set_light": "never_remote"})
    a, _ = agent([LOCAL], never, "teacher-first")
    result = a.run("set the kitchen light to 40")
    assert result.route == "local" and teacher.requests == []
    assert result.routing and "keeps set_light on the device" in result.routing.reason


@pytest.mark.parametrize("opted_in", [True, False])
def test_teacher_first_with_the_teacher_down_serves_locally_and_queues(opted_in: bool) -> None:
    with stand_in_teacher() as gone:
        url = gone.url
    router = router_to(url)
    a, log = agent([LOCAL], router, "teacher-first", teacher_labels_offline=opted_in)
    result = a.run("set the kitchen light to 40")
    assert result.route == "local_fallback" and STATE == {"kitchen": 40}
    assert result.routing and result.routing.decision == "remote"
    assert result.routing.queued is opted_in and result.routing.remote_error
    assert log.items[0].result.routing.queued is opted_in  # type: ignore[union-attr]
