"""Late teacher labels: turns served locally while the teacher was down, labelled from the
sealed log once a stand-in teacher on 127.0.0.1 answers again; bounded, once, opt-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent, Conversation
from edge_agent.logstore import LogStore
from edge_agent.routing.labels import MAX_TRIES, LabelQueue, label_queue, label_queued
from edge_agent.routing.router import Router
from edge_agent.skills.skill import labeled_turn
from edge_agent.tools import Toolset
from edge_agent.types import Interaction, Message
from tests.demo_tools import STATE
from tests.logstore_support import Clock, make_config
from tests.routing.routing_support import DEMO, LOCAL, demo_agent, remote_client, router_to
from tests.teacher_support import StandInTeacher, stand_in_teacher, user_text

DAY = 86_400.0
TEACHER_CALL = ("set_light", {"name": "kitchen", "brightness": 70})


@pytest.fixture(autouse=True)
def clean_state() -> None:
    STATE.clear()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[LogStore]:
    with LogStore(make_config(tmp_path), clock=clock) as s:
        yield s


@pytest.fixture
def teacher() -> Iterator[StandInTeacher]:
    with stand_in_teacher(TEACHER_CALL) as t:
        yield t


def offline_agent(store: LogStore, n: int, toolset: Toolset = DEMO, **kwargs: Any) -> Agent:
    """Teacher-first with the remote unreachable (offline): every turn local_fallback."""
    return demo_agent([LOCAL] * n, Router(None), "teacher-first", store, toolset, **kwargs)


def queue(store: LogStore, teacher: StandInTeacher, clock: Clock, **kwargs: Any) -> LabelQueue:
    return LabelQueue(store, remote_client(teacher.url), lambda _item: DEMO, clock=clock, **kwargs)


def labels(store: LogStore) -> list[Interaction]:
    return [i for i in store.interactions() if i.result.label_of]


def originals(store: LogStore) -> list[Interaction]:
    return [i for i in store.interactions() if not i.result.label_of]


def test_a_turn_served_while_the_teacher_was_down_is_labelled_once_it_returns(
    store: LogStore, teacher: StandInTeacher, clock: Clock
) -> None:
    teacher.script = [503]  # down for the first request; the breaker skips it for the second
    a = demo_agent([LOCAL] * 2, router_to(teacher.url), "teacher-first", store)
    served = [a.run(f"set the kitchen light for maria{i}@example.com") for i in range(2)]
    assert [r.route for r in served] == ["local_fallback"] * 2 and len(teacher.requests) == 1
    assert all(r.routing and r.routing.queued for r in served)

    clock.advance(0.1)
    report = queue(store, teacher, clock).round()
    assert (report.waiting, report.labelled, report.remaining) == (2, 2, 0)
    assert report.teacher_bytes > 0 and report.stopped is None
    assert len(teacher.requests) == 3 and "example.com" not in json.dumps(teacher.requests)
    assert STATE == {"kitchen": 40}  # the label ran nothing; the turns' own calls ran once
    first = originals(store)[0]
    got = labels(store)
    assert [g.result.label_of for g in got] == [r.id for r in served]
    label = got[0]
    assert label.result.route == "escalated" and label.result.model == teacher.model
    outcome = label.result.tool_calls[0]
    assert outcome.status == "delegated" and outcome.call.arguments == TEACHER_CALL[1]
    assert label.result.request == first.result.request and label.result.skill == "demo"
    assert label.result.toolset == DEMO.fingerprint
    assert [m.role for m in label.messages] == ["system", "user"]
    assert label.messages == first.messages[:2]
    routing = label.result.routing
    assert routing and routing.remote_bytes > 0 and routing.local_attempt
    assert routing.local_attempt.call and routing.local_attempt.call.arguments["brightness"] == 40
    # the default labeler keeps the label as a teacher row, and not the turn it labels
    row = labeled_turn(label)
    assert row and row.teacher and row.call == outcome.call and labeled_turn(first) is None

    again = queue(store, teacher, clock).round()  # a fresh queue: the log says what is done
    assert (again.waiting, again.labelled) == (0, 0) and len(teacher.requests) == 3
    assert len(labels(store)) == 2


def test_at_most_limit_per_round_oldest_first_opted_in_and_young_enough(
    store: LogStore, teacher: StandInTeacher, clock: Clock
) -> None:
    clock.advance(-8)  # too old by the time the teacher returns
    offline_agent(store, 1).run("set the kitchen light to 10")
    clock.advance(8)
    quiet = Toolset("quiet", DEMO, "opted out since")
    offline_agent(store, 1, quiet).run("set the kitchen light to 20")
    private = Toolset("private", DEMO, "opted out then")
    offline_agent(store, 1, private, teacher_labels_offline=False).run("set it to 30")
    a = offline_agent(store, 5)
    for i in range(5):
        clock.advance(0.001)
        a.run(f"set the kitchen light to {50 + i}")
    clock.advance(0.1)
    demo_turns = [i.id for i in originals(store) if i.result.skill == "demo"][1:]

    q = queue(store, teacher, clock, limit=2, opted_in=lambda skill: skill != "quiet")
    rounds = [q.round() for _ in range(4)]
    assert [(r.waiting, r.labelled) for r in rounds] == [(5, 2), (3, 2), (1, 1), (0, 0)]
    assert [i.result.label_of for i in labels(store)] == demo_turns
    assert len(teacher.requests) == 5


def test_an_unusable_answer_is_retried_a_few_times_and_a_dead_teacher_stops_the_round(
    store: LogStore, teacher: StandInTeacher, clock: Clock
) -> None:
    offline_agent(store, 3).run("set the kitchen light to 40")
    offline_agent(store, 3).run("set the kitchen light to 41")
    clock.advance(0.1)
    q = queue(store, teacher, clock)

    def bad_for_40(body: dict[str, Any]) -> Any:
        return ("LaunchMissiles", {}) if "to 40" in user_text(body) else TEACHER_CALL

    teacher.default = bad_for_40  # a call of a tool the skill does not have
    reports = [q.round() for _ in range(MAX_TRIES)]
    assert [(r.waiting, r.labelled, r.failed) for r in reports] == [(2, 1, 1)] + [(1, 0, 1)] * (
        MAX_TRIES - 1
    )
    given_up = q.round()
    assert (given_up.waiting, given_up.skipped, given_up.failed) == (1, 1, 0)
    assert len(teacher.requests) == MAX_TRIES + 1
    assert queue(store, teacher, clock).round().failed == 1  # a new process asks again
    teacher.default = TEACHER_CALL

    offline_agent(store, 1).run("set the kitchen light to 42")
    teacher.script = [503, 503]
    dead = queue(store, teacher, clock).round()
    assert dead.stopped and "503" in dead.stopped and dead.labelled == 0
    assert len(teacher.requests) == MAX_TRIES + 3  # one try, then the round stopped


def test_a_device_runtime_labels_its_configured_skills(
    monkeypatch: pytest.MonkeyPatch, teacher: StandInTeacher
) -> None:
    """The real runtime on a scripted backend: a skill configured teacher-first, its turn
    served offline, labelled by `label_queued` once the teacher answers."""
    from edge_agent.backends.fake import ScriptedBackend
    from edge_agent.cli._common import plan_for
    from edge_agent.runtime import Runtime
    from edge_agent.settings import load_settings

    skills = {"demo": {"python": "tests.routing.routing_support:DEMO", "route": "teacher-first"},
              "quiet": {"python": "tests.routing.routing_support:DEMO",
                        "route": "teacher-first", "teacher_labels_offline": False}}  # fmt: skip
    monkeypatch.setenv("EDGE_AGENT_SKILLS", json.dumps(skills))
    monkeypatch.setenv("EDGE_AGENT_LOG_KEY_SOURCE", "file")
    monkeypatch.setenv("EDGE_AGENT_REMOTE_URL", teacher.url)
    monkeypatch.setenv("EDGE_AGENT_REMOTE_MODEL", teacher.model)
    settings = load_settings(tools="demo", offline=True)
    done = '{"answer": "done"}'  # no adapter: the turn goes on after the call
    with Runtime(settings, plan_for(settings)[0], ScriptedBackend([LOCAL, done] * 2)) as rt:
        for skill in ("demo", "quiet"):
            served = rt.agent(skill).run("set the kitchen light to 70")
            assert served.route == "local_fallback" and served.skill == skill
        assert label_queued(rt).stopped  # offline: nothing to ask
    online = load_settings(tools="demo")
    with Runtime(online, plan_for(online)[0], ScriptedBackend([])) as rt:
        q = label_queue(rt, limit=5)
        assert q is not None
        report = q.round()
        assert (report.waiting, report.labelled) == (1, 1) and len(teacher.requests) == 1
        log = rt.log()
        assert log is not None
        [label] = [i for i in log.interactions() if i.result.label_of]
        assert label.result.skill == "demo" and label.result.tool_calls[0].status == "delegated"


def test_a_queued_turn_of_a_conversation_is_labelled_on_its_own_request(
    store: LogStore, teacher: StandInTeacher, clock: Clock
) -> None:
    earlier = [
        Message(role="user", content="dim the hall"),
        Message(role="assistant", content='{"answer": "done"}'),
    ]
    talk = Conversation("Answer briefly.", earlier)
    offline_agent(store, 1).run("set the kitchen light to 70", conversation=talk)
    clock.advance(0.1)
    assert queue(store, teacher, clock).round().labelled == 1
    messages = teacher.requests[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"].startswith("Answer briefly.\n\nYou control the demo tools")
    assert messages[1]["content"] == "dim the hall" and messages[2]["content"] == "done"
    assert messages[3]["content"].startswith("set the kitchen light to 70")
    (label,) = labels(store)
    assert label.result.tool_calls[0].call.arguments == TEACHER_CALL[1]


def test_a_runtime_without_a_remote_loads_no_remote_client() -> None:
    """Cold start (issue 16): with no remote model configured, the router is None before the
    remote client is imported or the skills' keep words are read."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from edge_agent.backends.fake import ScriptedBackend\n"
        "from edge_agent.cli._common import plan_for\n"
        "from edge_agent.runtime import Runtime\n"
        "from edge_agent.settings import load_settings\n"
        "settings = load_settings(tools='system')\n"
        "with Runtime(settings, plan_for(settings)[0], ScriptedBackend([])) as rt:\n"
        "    assert rt.router is None\n"
        "    assert 'edge_agent.routing.remote' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
