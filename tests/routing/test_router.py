"""The router: local first, escalation on calibrated signals to a stand-in teacher on
127.0.0.1, the teacher's call through the same policy, offline fallback, calibration."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from edge_agent.agent import Agent, AgentConfig
from edge_agent.anonymize import Anonymizer
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.errors import ConfigError
from edge_agent.host.curate import drop_reason, record_from_interaction
from edge_agent.policy import Policy
from edge_agent.routing.calibration import calibrate, calibration_for, outcome, sweep
from edge_agent.routing.remote import RemoteClient, RemoteConfig
from edge_agent.routing.router import (
    Calibration,
    Calibrations,
    Router,
    SignalRecord,
    Thresholds,
    make_signals,
    nearest_distance,
    open_router,
    ungrounded,
)
from edge_agent.settings import Settings
from edge_agent.sync.redact import redact
from edge_agent.tools import Toolset, tool
from edge_agent.types import AgentResult, Effect, Interaction, Message, RouteSignals, ToolCall
from tests.demo_tools import STATE, set_light, unlock
from tests.routing.routing_support import ConfidenceBackend
from tests.teacher_support import StandInTeacher, stand_in_teacher, user_text


@tool(effect=Effect.ACTUATING)
def send_message(to: str, text: str) -> str:
    """Sends a message.

    Args:
        to: The address.
        text: What to say.
    """
    STATE["sent"] = (to, text)
    return "sent"


DEMO = Toolset("demo", [set_light, unlock, send_message], description="demo")
LOCAL = '{"name": "set_light", "arguments": {"name": "kitchen", "brightness": 40}}'
SURE, UNSURE = -0.05, -3.0
CALIBRATED = Calibration(
    model="scripted", adapter=None, toolset="demo", target_accuracy=0.9,
    thresholds=Thresholds(min_logprob=-1.0), met=True,
)  # fmt: skip


class MemoryLog:
    def __init__(self) -> None:
        self.items: list[Interaction] = []

    def record(self, result: AgentResult, *, messages: list[Message], tools: object = None) -> str:
        self.items.append(Interaction(result=result.model_copy(deep=True), messages=messages))
        return result.id


@pytest.fixture(autouse=True)
def clean_state() -> None:
    STATE.clear()


@pytest.fixture
def teacher() -> Iterator[StandInTeacher]:
    with stand_in_teacher(("set_light", {"name": "kitchen", "brightness": 70})) as t:
        yield t


def remote(teacher: StandInTeacher, **config: Any) -> RemoteClient:
    cfg = RemoteConfig(url=teacher.url, model=teacher.model, retries=0, timeout_s=2, **config)
    return RemoteClient(cfg, anonymizer=Anonymizer(b"s" * 32))


def agent(
    responses: Sequence[tuple[str, float]], router: Router, **kwargs: Any
) -> tuple[Agent, MemoryLog]:
    log = MemoryLog()
    config = AgentConfig(**({"stop_after_call": True} | kwargs.pop("config", {})))
    backend = ConfidenceBackend(responses)
    return Agent(backend, DEMO, config=config, log=log, router=router, **kwargs), log


# --- local first, escalate on calibrated signals --------------------------------------------


def test_a_confident_local_call_runs_locally(teacher: StandInTeacher) -> None:
    a, log = agent([(LOCAL, SURE)], Router(remote(teacher), calibration=CALIBRATED))
    result = a.run("set the kitchen light to 40")
    assert result.route == "local" and STATE == {"kitchen": 40}
    assert result.routing and result.routing.decision == "local"
    assert result.routing.signals.min_logprob == pytest.approx(SURE)
    assert teacher.requests == [] and log.items[0].result.route == "local"


def test_an_unsure_call_escalates_and_logs_the_teacher_label(teacher: StandInTeacher) -> None:
    a, log = agent([(LOCAL, UNSURE)], Router(remote(teacher), calibration=CALIBRATED))
    result = a.run("set the kitchen light to 70")
    assert result.route == "escalated" and result.model == "stand-in-teacher"
    assert STATE == {"kitchen": 70}  # the teacher's call ran; the local one never did
    routing = result.routing
    assert routing and "min log-prob" in routing.reason and routing.remote_bytes > 0
    assert routing.remote_usage and routing.remote_usage.prompt_tokens == 120
    [item] = log.items
    assert item.teacher_label and item.teacher_label.arguments["brightness"] == 70
    assert item.local_attempt and item.local_attempt.call
    assert item.local_attempt.call.arguments["brightness"] == 40
    # the flywheel's curate step keeps it, with the teacher's call as the label
    record = record_from_interaction(item)
    assert record.route == "escalated" and record.call == item.teacher_label
    assert drop_reason(record) is None
    again = Interaction.model_validate_json(item.model_dump_json())  # a log round trip
    assert again.local_attempt == item.local_attempt


def test_old_records_without_routing_still_read() -> None:
    old = {"result": {"request": "hi", "model": "m", "route": "local"}, "messages": []}
    item = Interaction.model_validate(old)
    assert item.result.routing is None and item.teacher_label is None
    assert item.local_attempt is None


def test_without_calibration_only_failures_escalate(teacher: StandInTeacher) -> None:
    a, _ = agent([(LOCAL, UNSURE)], Router(remote(teacher)))
    result = a.run("set the kitchen light to 40")
    assert result.route == "local" and "no calibration" in (result.routing.reason or "")  # type: ignore[union-attr]
    bad = '{"name": "set_light", "arguments": {"name": "kitchen", "brightness": 400}}'
    a, _ = agent([(bad, SURE), (bad, SURE)], Router(remote(teacher)))
    result = a.run("set the kitchen light to 70")
    assert result.route == "escalated" and STATE == {"kitchen": 70}
    assert result.routing and result.routing.signals.invalid and result.routing.signals.repaired


def test_a_calibration_for_another_adapter_is_not_used(teacher: StandInTeacher) -> None:
    other = CALIBRATED.model_copy(update={"adapter": "home-v2"})
    a, _ = agent([(LOCAL, UNSURE)], Router(remote(teacher), calibration=other))
    assert a.run("set the kitchen light to 40").route == "local"


def test_per_tool_rules_and_per_request_override(teacher: StandInTeacher) -> None:
    never = Router(remote(teacher), calibration=CALIBRATED, tools={"set_light": "never_remote"})
    a, _ = agent([(LOCAL, UNSURE)], never)
    assert a.run("set the kitchen light to 40").route == "local"
    always = Router(remote(teacher), calibration=CALIBRATED, tools={"set_light": "always_remote"})
    a, _ = agent([(LOCAL, SURE)], always)
    assert a.run("set the kitchen light to 70").route == "escalated"
    a, _ = agent([(LOCAL, SURE)], Router(remote(teacher), calibration=CALIBRATED))
    assert a.run("set the kitchen light to 70", route="remote").route == "escalated"
    a, _ = agent([(LOCAL, UNSURE)], Router(remote(teacher), calibration=CALIBRATED))
    assert a.run("set the kitchen light to 40", route="local").route == "local"
    plain = Agent(ScriptedBackend([]), DEMO)
    with pytest.raises(ConfigError, match="remote model"):
        plain.run("hi", route="remote")


# --- the teacher's answer goes through the same policy --------------------------------------


def test_a_remote_call_never_bypasses_the_policy(teacher: StandInTeacher) -> None:
    teacher.default = ("unlock", {"name": "front door"})
    deny = Policy(tools={"unlock": "deny"})
    a, _ = agent([(LOCAL, UNSURE)], Router(remote(teacher), calibration=CALIBRATED), policy=deny)
    result = a.run("unlock the front door")
    assert result.route == "escalated" and result.tool_calls[0].status == "denied"
    assert STATE == {}
    a, _ = agent([(LOCAL, UNSURE)], Router(remote(teacher), calibration=CALIBRATED))
    result = a.run("unlock the front door")  # dangerous: the default policy asks first
    assert result.outcome == "needs_confirmation" and STATE == {}


def test_a_confirmation_runs_the_call_the_user_confirmed(teacher: StandInTeacher) -> None:
    teacher.default = ("unlock", {"name": "front door"})
    router = Router(remote(teacher), calibration=CALIBRATED)
    a, _ = agent([(LOCAL, UNSURE)], router)
    first = a.run("unlock the door")
    assert first.outcome == "needs_confirmation" and STATE == {}
    teacher.default = ("unlock", {"name": "back door"})  # the teacher changes its mind
    asked = len(teacher.requests)
    # The user confirmed that very call ("front door" is not in the request: a blanket
    # confirmed=True would not cover it, only approving the call itself does).
    again = a.run("unlock the door", approved=first.tool_calls[0].call)
    assert again.route == "escalated" and STATE == {"front door": "unlocked"}
    assert len(teacher.requests) == asked  # replayed, not asked again


def test_the_executed_call_has_real_values_the_remote_saw_tags(teacher: StandInTeacher) -> None:
    def echo(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        tag = next(w for w in user_text(body).split() if w.startswith("<EMAIL_"))
        return "send_message", {"to": tag, "text": "hi"}

    teacher.default = echo
    call = '{"name": "send_message", "arguments": {"to": "maria@example.com", "text": "hi"}}'
    a, log = agent([(call, UNSURE)], Router(remote(teacher), calibration=CALIBRATED))
    result = a.run("send a message to maria@example.com saying hi")
    assert result.route == "escalated" and STATE["sent"] == ("maria@example.com", "hi")
    assert "maria@example.com" not in json.dumps(teacher.requests)
    # what sync would send scrubs the local attempt beside the teacher's label
    synced = redact(log.items[0], Anonymizer(b"s" * 32))
    assert "maria@example.com" not in synced.model_dump_json()


# --- faults and offline -----------------------------------------------------------------------


@pytest.mark.parametrize("fault", [503, "malformed", "unknown_tool", "wrong_model", "no_model"])
def test_remote_faults_fall_back_to_the_local_call(teacher: StandInTeacher, fault: Any) -> None:
    teacher.default = fault
    a, log = agent([(LOCAL, UNSURE)], Router(remote(teacher), calibration=CALIBRATED))
    result = a.run("set the kitchen light to 40")
    assert result.route == "local_fallback" and STATE == {"kitchen": 40}
    assert result.routing and result.routing.remote_error
    assert log.items[0].result.route == "local_fallback"


def test_offline_is_marked_queued_and_costs_nothing_after_the_first_failure() -> None:
    with stand_in_teacher() as gone:
        cfg = RemoteConfig(url=gone.url, model="teacher", retries=0, cooldown_s=60)
    router = Router(RemoteClient(cfg), calibration=CALIBRATED)
    a, log = agent([(LOCAL, UNSURE)] * 2, router)
    first = a.run("set the kitchen light to 40")
    assert first.route == "local_fallback" and first.routing and first.routing.queued
    t0 = time.perf_counter()
    second = a.run("set the kitchen light to 40")
    assert second.routing and "skipped" in (second.routing.remote_error or "")
    assert time.perf_counter() - t0 < 0.5 and STATE == {"kitchen": 40}
    assert [i.result.routing.queued for i in log.items] == [True, True]  # type: ignore[union-attr]
    record = record_from_interaction(log.items[0])
    assert record.route == "local_fallback" and drop_reason(record) == "awaiting_teacher"


def test_a_remote_call_still_invalid_after_repair_falls_back(teacher: StandInTeacher) -> None:
    teacher.default = ("set_light", {"name": "kitchen", "brightness": 900})
    a, _ = agent([(LOCAL, UNSURE)], Router(remote(teacher), calibration=CALIBRATED))
    result = a.run("set the kitchen light to 40")
    assert result.route == "local_fallback" and len(teacher.requests) == 2  # one repair
    assert STATE == {"kitchen": 40}


def test_a_remote_that_fails_after_acting_does_not_act_twice(teacher: StandInTeacher) -> None:
    teacher.script = [("set_light", {"name": "hall", "brightness": 10}), 503]
    a, _ = agent([(LOCAL, UNSURE)], Router(remote(teacher), calibration=CALIBRATED),
                 config={"stop_after_call": False})  # fmt: skip
    result = a.run("set the hall light to 10")
    assert STATE == {"hall": 10}  # the teacher's first call ran, the local one did not
    assert result.outcome == "failed" and result.failure == "remote_error"


def test_open_router_from_settings(tmp_path: Any) -> None:
    base = {"config_dir": tmp_path, "data_dir": tmp_path, "cache_dir": tmp_path}
    assert open_router(Settings(**base)) is None
    remote_cfg = {"remote_url": "http://127.0.0.1:9/v1", "remote_model": "m"}
    CALIBRATED.save(tmp_path / "route.json")
    router = open_router(Settings(**base, **remote_cfg, route_tools={"unlock": "never_remote"}))
    assert router and router.remote and router.calibrations.of("demo") == CALIBRATED
    assert router.tools == {"unlock": "never_remote"}
    offline = open_router(Settings(**base, **remote_cfg, offline=True))
    assert offline is not None and offline.remote is None
    result = agent([(LOCAL, UNSURE)], offline)[0].run("set the kitchen light to 40")
    assert result.route == "local_fallback" and result.routing and result.routing.queued
    assert "offline" in (result.routing.remote_error or "") and STATE == {"kitchen": 40}
    (tmp_path / "route.json").write_text("{broken")
    with pytest.raises(ConfigError, match="route calibrate"):
        open_router(Settings(**base, **remote_cfg))


# --- signals ----------------------------------------------------------------------------------


def test_signals_use_chosen_tokens_only() -> None:
    s = make_signals([0.0, -0.5, 0.0, -1.5], repaired=True)
    assert s.min_logprob == -1.5 and s.mean_logprob == -1.0 and s.chosen_tokens == 2
    forced = make_signals([0.0, 0.0])
    assert forced.min_logprob is None and not Thresholds(min_logprob=-1).escalates(forced)
    assert "repair" in (Thresholds(escalate_repaired=True).escalates(s) or "")
    assert "distance" in (Thresholds(max_distance=0.2).escalates(RouteSignals(distance=0.5)) or "")


def test_a_made_up_name_is_an_ungrounded_signal(teacher: StandInTeacher) -> None:
    schema = {"properties": {"name": {"type": "string"}, "domain": {"enum": ["light"]}}}
    shown = "turn on the Kitchen lights\n\nDevices: Kitchen Light (light)"
    assert not ungrounded(ToolCall(name="t", arguments={"name": "kitchen light"}), shown, schema)
    assert not ungrounded(ToolCall(name="t", arguments={"domain": "light", "x": 3}), shown, schema)
    assert ungrounded(ToolCall(name="t", arguments={"name": "garage light"}), shown, schema)
    assert ungrounded(ToolCall(name="t", arguments={"name": ["kitchen", "attic"]}), shown, schema)
    made_up = '{"name": "set_light", "arguments": {"name": "attic", "brightness": 40}}'
    a, _ = agent([(made_up, SURE)], Router(remote(teacher)))
    result = a.run("set the kitchen light to 40")
    assert result.routing and result.routing.signals.ungrounded
    reason = Thresholds(escalate_ungrounded=True).escalates(result.routing.signals)
    assert reason and "neither the request nor the context" in reason


class FakeEmbedder:
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([[1.0, 0.0] if "light" in t else [0.0, 1.0] for t in texts])


def test_distance_to_the_adapters_clusters_is_an_optional_signal(teacher: StandInTeacher) -> None:
    centroids = np.array([[2.0, 0.0]])
    assert nearest_distance(FakeEmbedder(), centroids, "a light") == pytest.approx(0.0)
    assert nearest_distance(FakeEmbedder(), centroids, "a poem") == pytest.approx(1.0)
    far = CALIBRATED.model_copy(update={"thresholds": Thresholds(max_distance=0.5)})
    router = Router(remote(teacher), calibration=far, embedder=FakeEmbedder(), centroids=centroids)
    a, _ = agent([(LOCAL, SURE)], router)
    result = a.run("write a poem")
    assert result.route == "escalated" and result.routing
    assert result.routing.signals.distance == pytest.approx(1.0)
    a, _ = agent([(LOCAL, SURE)], Router(remote(teacher), calibration=CALIBRATED))
    assert a.run("set the kitchen light to 40").routing.signals.distance is None  # type: ignore[union-attr]


# --- calibration ------------------------------------------------------------------------------


def synthetic(n: int = 60, seed: int = 0) -> list[SignalRecord]:
    """Right calls are confident, wrong ones mostly not: a signal worth calibrating."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        correct = bool(rng.random() < 0.8)
        lp = float(rng.normal(-0.3 if correct else -2.0, 0.5))
        mean = float(rng.normal(-0.1 if correct else -0.4, 0.2))
        signals = RouteSignals(min_logprob=lp, mean_logprob=mean, repaired=i % 17 == 0)
        out.append(SignalRecord(id=f"r{i}", signals=signals, correct=correct))
    return out


def escalations(records: list[SignalRecord]) -> Iterator[list[bool]]:
    """For every (min, mean) threshold pair: which records it escalates."""
    values = sorted({r.signals.min_logprob for r in records})  # type: ignore[type-var]
    means = sorted({r.signals.mean_logprob for r in records})  # type: ignore[type-var]
    for t_min, t_mean in itertools.product([-99.0, *values, 99.0], [-99.0, *means, 99.0]):
        yield [r.signals.min_logprob < t_min or r.signals.mean_logprob < t_mean  # type: ignore[operator]
               for r in records]  # fmt: skip


def brute_force(records: list[SignalRecord], target: float) -> float:
    """The best local share any (min, mean) threshold pair reaches at the target."""
    best = 0.0
    for esc in escalations(records):
        right = sum(r.correct and not e for r, e in zip(records, esc, strict=True)) + sum(esc)
        if right / len(records) >= target:
            best = max(best, 1 - sum(esc) / len(records))
    return best


@pytest.mark.parametrize("target", [0.9, 0.95, 0.99])
def test_calibration_maximises_local_share_at_the_target(target: float) -> None:
    records = synthetic()
    thresholds, met = calibrate(records, target)
    stats = outcome(records, thresholds)
    assert met and stats["accuracy"] >= target
    assert stats["local_share"] == pytest.approx(brute_force(records, target))
    assert stats["local_share"] > 0.3  # the signal is worth something


def best_accuracy(records: list[SignalRecord], remote_accuracy: float) -> float:
    """The best overall accuracy any (min, mean) threshold pair reaches."""
    best = 0.0
    for esc in escalations(records):
        right = sum(r.correct and not e for r, e in zip(records, esc, strict=True))
        best = max(best, (right + remote_accuracy * sum(esc)) / len(records))
    return best


def test_an_unreachable_target_says_so() -> None:
    """A remote right 90% of the time cannot lift the whole to 99%: calibration says so and
    falls back to the most accurate thresholds, which keep the confident right calls local."""
    records = synthetic()
    thresholds, met = calibrate(records, 0.99, remote_accuracy=0.9)
    stats = outcome(records, thresholds, 0.9)
    assert not met and stats["accuracy"] < 0.99
    assert stats["accuracy"] == pytest.approx(best_accuracy(records, 0.9))  # 0.975 here
    assert stats["local_accuracy"] == 1.0 and 0.5 < stats["local_share"] < 1.0


def test_the_curve_runs_from_all_local_to_all_escalated() -> None:
    points = sweep(synthetic(), "min_logprob")
    shares = [p["local_share"] for p in points]
    assert shares[0] == 1.0 and shares[-1] == 0.0 and points[-1]["accuracy"] == 1.0
    assert points[0]["accuracy"] == pytest.approx(sum(r.correct for r in synthetic()) / 60)


def test_calibration_file_round_trip(tmp_path: Any) -> None:
    records = synthetic()
    cal = calibration_for(records, 0.95, model="m", adapter="home", skill="home")
    cal.save(tmp_path / "route.json")
    again = Calibrations.load(tmp_path / "route.json").of("home")
    assert again == cal and again.stats["accuracy"] >= 0.95
    assert Calibrations.load(tmp_path / "missing.json") == Calibrations()


# --- the server -------------------------------------------------------------------------------


def test_the_server_routes_and_takes_a_per_request_override(teacher: StandInTeacher) -> None:
    import httpx

    from edge_agent.server.app import create_app, serve_in_thread

    a, _ = agent([(LOCAL, SURE), (LOCAL, SURE)], Router(remote(teacher), calibration=CALIBRATED))
    app = create_app(a.backend, toolsets={"demo": a}, model_name="base")
    ask = [{"role": "user", "content": "set the kitchen light to 70"}]
    body: dict[str, Any] = {"model": "edge-agent/demo", "messages": ask}
    with serve_in_thread(app) as url:
        first = httpx.post(f"{url}/chat/completions", json=body).json()["edge_agent"]
        body["edge_agent"] = {"route": "remote"}
        second = httpx.post(f"{url}/chat/completions", json=body).json()["edge_agent"]
    assert first["route"] == "local" and second["route"] == "escalated"
    assert STATE == {"kitchen": 70} and len(teacher.requests) == 1
