"""The audit share: a random share of the confident local turns is labelled by a stand-in
teacher on 127.0.0.1 after the user has the local answer; the label is a teacher row and a
weighted calibration pair. Never for local-only skills, nor without a reachable teacher."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge_agent.agent import Agent
from edge_agent.logstore import LogStore
from edge_agent.routing.audit import AuditShare
from edge_agent.routing.calibration import calibrate, log_pairs, outcome
from edge_agent.routing.labels import LabelQueue, skill_audited
from edge_agent.routing.report import skill_report
from edge_agent.routing.router import Router, SignalRecord, Thresholds, open_router
from edge_agent.settings import RouteMode, Settings, SkillConfig
from edge_agent.skills.skill import Skill, exact_call, labeled_turn
from edge_agent.types import AgentResult, Interaction, RouteSignals
from tests.demo_tools import STATE
from tests.logstore_support import Clock, make_config
from tests.routing.routing_support import DEMO, LOCAL, demo_agent, remote_client
from tests.teacher_support import StandInTeacher, stand_in_teacher

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


def audit_router(url: str | None, share: float, seed: int = 0, **kwargs: Any) -> Router:
    remote = remote_client(url) if url else None
    return Router(remote, audit=AuditShare(share), rng=random.Random(seed), **kwargs)


def serve(
    store: LogStore, router: Router, n: int, mode: RouteMode = "local-first", **kwargs: Any
) -> list[AgentResult]:
    """`n` turns the router serves locally (no calibration for the bare model: only failures
    escalate), each logged as the agent logs it."""
    agent: Agent = demo_agent([LOCAL] * n, router, mode, store)
    return [agent.run(f"set the kitchen light for maria{i}@example.com", **kwargs)
            for i in range(n)]  # fmt: skip


def label_round(store: LogStore, teacher: StandInTeacher, clock: Clock) -> Any:
    clock.advance(0.001)
    return LabelQueue(store, remote_client(teacher.url), lambda _i: DEMO, clock=clock).round()


def split(store: LogStore) -> tuple[list[Interaction], list[Interaction]]:
    items = list(store.interactions())
    return [i for i in items if not i.result.label_of], [i for i in items if i.result.label_of]


def test_every_audited_turn_is_served_locally_then_labelled_as_a_teacher_row(
    store: LogStore, teacher: StandInTeacher, clock: Clock
) -> None:
    served = serve(store, audit_router(teacher.url, 1.0), 3)
    assert [r.route for r in served] == ["local"] * 3 and STATE == {"kitchen": 40}
    assert not teacher.requests  # the user's turn never waited for the teacher
    assert all(r.routing and r.routing.queued and r.routing.audit_share == 1.0 for r in served)

    report = label_round(store, teacher, clock)
    assert (report.waiting, report.labelled, report.stopped) == (3, 3, None)
    assert "example.com" not in json.dumps(teacher.requests)  # anonymized like an escalation
    assert STATE == {"kitchen": 40}  # the teacher's call ran nowhere: the local one had
    originals, labels = split(store)
    assert [label.result.label_of for label in labels] == [r.id for r in served]
    label, first = labels[0], originals[0]
    routing = label.result.routing
    assert routing and routing.audit_share == 1.0 and routing.reason.startswith("audit:")
    assert routing.local_attempt and routing.local_attempt.call
    assert routing.local_attempt.call.arguments["brightness"] == 40
    assert routing.signals == first.result.routing.signals  # type: ignore[union-attr]
    row = labeled_turn(label)  # the host's labeler: a teacher row, like an escalation's
    assert row and row.teacher and row.call and row.call.arguments == TEACHER_CALL[1]
    assert row.request == first.result.request and row.context == labeled_turn(first).context  # type: ignore[union-attr]
    assert label_round(store, teacher, clock).waiting == 0 and len(teacher.requests) == 3


def test_a_share_of_zero_never_audits(
    store: LogStore, teacher: StandInTeacher, clock: Clock
) -> None:
    served = serve(store, audit_router(teacher.url, 0.0), 4)
    assert not any(r.routing and r.routing.queued for r in served)
    assert label_round(store, teacher, clock).waiting == 0 and not teacher.requests


def test_the_share_is_drawn_from_the_routers_seeded_randomness(
    store: LogStore, teacher: StandInTeacher
) -> None:
    served = serve(store, audit_router(teacher.url, 0.3, seed=7), 40)
    draws = random.Random(7)
    expected = [draws.random() < 0.3 for _ in range(40)]  # one draw per confident turn
    assert [bool(r.routing and r.routing.audit_share) for r in served] == expected
    assert 0 < sum(expected) < 40


def test_turns_kept_on_the_device_on_purpose_are_never_audited(
    store: LogStore, teacher: StandInTeacher, clock: Clock
) -> None:
    local_only = serve(store, audit_router(teacher.url, 1.0), 2, "local-only")
    asked_local = serve(store, audit_router(teacher.url, 1.0), 2, route="local")
    ruled = serve(store, audit_router(teacher.url, 1.0, tools={"set_light": "never_remote"}), 2)
    assert all(r.route == "local" for r in local_only + asked_local + ruled)
    assert not any(r.routing and r.routing.queued for r in local_only + asked_local + ruled)
    assert label_round(store, teacher, clock).waiting == 0 and not teacher.requests


def test_a_skill_made_local_only_since_its_audit_is_not_sent() -> None:
    skills = {"demo": Skill("demo", None, route="local-only"), "other": Skill("other", None)}
    audited = skill_audited(lambda name: skills[name])
    assert not audited("demo") and audited("other") and not audited(None)


def test_no_reachable_teacher_no_audit_and_the_turn_never_fails(
    store: LogStore, teacher: StandInTeacher, clock: Clock
) -> None:
    offline = serve(store, audit_router(None, 1.0), 2)  # offline, or no remote configured
    assert [r.route for r in offline] == ["local"] * 2
    assert not any(r.routing and r.routing.queued for r in offline)

    router = audit_router(teacher.url, 1.0)
    assert router.remote is not None
    router.remote.breaker.failure("down a moment ago")  # the breaker skips the teacher
    skipped = serve(store, router, 2)
    assert not any(r.routing and r.routing.queued for r in skipped)

    dead = audit_router("http://127.0.0.1:9/v1", 1.0)  # drawn, then the teacher is gone
    t0 = time.perf_counter()
    drawn = serve(store, dead, 1)
    assert time.perf_counter() - t0 < 1.0 and drawn[0].outcome == "answered"
    assert drawn[0].routing and drawn[0].routing.queued and STATE == {"kitchen": 40}
    clock.advance(0.001)
    gone = LabelQueue(store, dead.remote, lambda _i: DEMO, clock=clock).round()
    assert gone.stopped and (gone.waiting, gone.labelled) == (1, 0)
    assert label_round(store, teacher, clock).labelled == 1  # the link is back: labelled


def test_calibration_and_the_report_count_audited_pairs(
    store: LogStore, teacher: StandInTeacher, clock: Clock
) -> None:
    served = serve(store, audit_router(teacher.url, 0.25, seed=3), 12)
    audited = [r for r in served if r.routing and r.routing.audit_share]
    assert audited
    label_round(store, teacher, clock)
    items = list(store.interactions())
    pairs = log_pairs(items, "demo", exact_call, model=served[0].model, adapter=None)
    assert (pairs.used, pairs.audited, pairs.unusable) == (len(audited), len(audited), 0)
    assert all(r.weight == 4.0 and not r.correct for r in pairs.records)  # 40 is not 70
    total = skill_report(items)["demo"]["total"]
    assert (total["local"], total["audited"], total["labelled"]) == (12, len(audited),
                                                                     len(audited))  # fmt: skip
    assert total["audit_agreement"] == 0.0 and total["queued"] == 0


def test_a_late_label_without_an_audit_is_still_no_pair(
    store: LogStore, teacher: StandInTeacher, clock: Clock
) -> None:
    """Turns served while the teacher was down are labelled too, but their labels carry no
    signals: calibration leaves them out as before."""
    agent = demo_agent([LOCAL], Router(None), "teacher-first", store)
    assert agent.run("set the kitchen light").route == "local_fallback"
    assert label_round(store, teacher, clock).labelled == 1
    pairs = log_pairs(store.interactions(), "demo", exact_call, model="scripted", adapter=None)
    assert (pairs.used, pairs.unusable) == (0, 1)


def pair(i: int, logprob: float, correct: bool, weight: float = 1.0) -> SignalRecord:
    signals = RouteSignals(min_logprob=logprob, mean_logprob=logprob, chosen_tokens=4)
    return SignalRecord(id=str(i), signals=signals, correct=correct, weight=weight)


def test_an_audited_pair_weighs_for_the_confident_turns_not_drawn() -> None:
    """20 unsure attempts the teacher answered (escalations), all right; one confident
    attempt audited at 2 % and wrong: it stands for 50 confident turns, so the confident
    region is wrong, and the thresholds must stop trusting it."""
    unsure = [pair(i, -2.0 - i / 100, True) for i in range(20)]
    unweighted = calibrate([*unsure, pair(99, -0.1, False)], 0.95)[0]
    assert outcome([*unsure, pair(99, -0.1, False)], unweighted)["local_share"] == 1.0
    weighted = [*unsure, pair(99, -0.1, False, weight=50.0)]
    thresholds, met = calibrate(weighted, 0.95)
    stats = outcome(weighted, thresholds)
    assert met and stats["accuracy"] == 1.0 and stats["local_share"] == 0.0
    kept = outcome(weighted, Thresholds(min_logprob=-1.0))  # the audited one stays local
    assert kept["local_share"] == 50 / 70 and kept["accuracy"] == 20 / 70


def test_settings_give_the_share_per_skill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_AGENT_ROUTE_AUDIT_SHARE")  # the suite turns audits off
    settings = Settings(
        route_audit_share=0.1, remote_url="http://127.0.0.1:9/v1", remote_model="t",
        skills={"demo": SkillConfig(route_audit_share=0.5), "quiet": SkillConfig()},
        data_dir=tmp_path,
    )  # fmt: skip
    share = AuditShare.from_settings(settings)
    assert (share.of("demo"), share.of("quiet"), share.of("other")) == (0.5, 0.1, 0.1)
    router = open_router(settings)
    assert router is not None and router.audit == share
    router.close()
    assert Settings().route_audit_share == 0.02
    with pytest.raises(ValidationError):
        SkillConfig(route_audit_share=1.5)
    zero = AuditShare(0.0, {"demo": 1.0})
    assert zero.draw("other", random.Random(0)) is None and zero.draw("demo", random.Random(0))


def test_the_hosts_curation_keeps_the_teachers_label_over_the_audited_local_call(
    store: LogStore, teacher: StandInTeacher, clock: Clock
) -> None:
    from edge_agent.host.curate import Record, dedupe

    serve(store, audit_router(teacher.url, 1.0), 1)
    label_round(store, teacher, clock)
    rows = [labeled_turn(item) for item in store.interactions()]
    records = [Record(id=r.id, request=r.request, context=r.context, call=r.call,
                      route="escalated" if r.teacher else "local", skill="demo")
               for r in rows if r is not None]  # fmt: skip
    assert sorted(r.route for r in records) == ["escalated", "local"]  # 40 and 70: they differ
    dropped: dict[str, int] = {}
    (kept,) = dedupe(records, dropped)
    assert kept.route == "escalated" and kept.call and kept.call.arguments == TEACHER_CALL[1]
    assert dropped == {"overruled": 1}
