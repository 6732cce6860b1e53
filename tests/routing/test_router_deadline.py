"""The router and a turn's deadline: a local attempt that ran past it is not escalated (no
teacher is asked), and a turn escalated in time keeps the same deadline on the teacher."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge_agent.agent import Agent, AgentConfig
from edge_agent.anonymize import Anonymizer
from edge_agent.errors import TurnTimeoutError
from edge_agent.routing.remote import RemoteClient, RemoteConfig
from edge_agent.routing.router import Router
from edge_agent.tools import Toolset
from tests.deadline_support import FakeClock, SlowModel
from tests.demo_tools import STATE, set_light
from tests.routing.routing_support import MemoryLog
from tests.teacher_support import StandInTeacher, stand_in_teacher

DEMO = Toolset("demo", [set_light], description="demo")
LOCAL = '{"name": "set_light", "arguments": {"name": "kitchen", "brightness": 40}}'


@pytest.fixture
def teacher() -> Iterator[StandInTeacher]:
    STATE.clear()
    with stand_in_teacher(("set_light", {"name": "kitchen", "brightness": 70})) as t:
        yield t


def teacher_first(teacher: StandInTeacher, seconds: float) -> tuple[Agent, MemoryLog]:
    cfg = RemoteConfig(url=teacher.url, model=teacher.model, retries=0, timeout_s=2)
    router = Router(RemoteClient(cfg, anonymizer=Anonymizer(b"s" * 32)))
    clock, log = FakeClock(), MemoryLog()
    config = AgentConfig(stop_after_call=True, turn_deadline_s=20)
    model = SlowModel([LOCAL], clock, seconds)
    agent = Agent(model, DEMO, config=config, log=log, router=router,
                  route_mode="teacher-first", clock=clock)  # fmt: skip
    return agent, log


def test_a_local_attempt_past_the_deadline_is_not_escalated(teacher: StandInTeacher) -> None:
    agent, log = teacher_first(teacher, seconds=25)
    with pytest.raises(TurnTimeoutError):
        agent.run("set the kitchen light to 70")
    assert teacher.requests == [] and STATE == {}
    [item] = log.items
    assert item.result.outcome == "timeout" and item.result.route == "local"


def test_a_turn_escalated_in_time_is_served_by_the_teacher(teacher: StandInTeacher) -> None:
    agent, log = teacher_first(teacher, seconds=1)
    result = agent.run("set the kitchen light to 70")
    assert result.route == "escalated" and STATE == {"kitchen": 70}
    assert log.items[0].result.outcome == "answered"
