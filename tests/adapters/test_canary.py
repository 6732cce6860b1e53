"""The canary and the update round: a pulled adapter goes live only if it does not regress.

Unit tests drive a scripted backend that answers by its active adapter; the integration test
runs the real SmolLM2 with the shipped home adapter as the "new release".
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.adapters.canary import (
    CanaryRules,
    Request,
    adapter_tasks,
    check_for_updates,
    propose,
)
from edge_agent.adapters.installed import InstalledAdapters
from edge_agent.adapters.release import AdapterRelease, CanaryCall
from edge_agent.backends.base import GenerationRequest
from edge_agent.backends.fake import ScriptedBackend
from edge_agent.errors import AdapterVerificationError, EnrollmentError, HostUnreachableError
from edge_agent.lora.gguf import export_lora_gguf
from edge_agent.models.gguf import BaseModelIdentity
from edge_agent.prompt import messages_for
from edge_agent.tools import Toolset, register_toolset
from edge_agent.tools.registry import _unregister_toolset
from edge_agent.types import AgentResult, Effect, Message, ToolCall, ToolOutcome
from tests import demo_tools
from tests.tinymodel import TinyLora, TinyModel

SKILL = "canarydemo"
CANARY = [
    CanaryCall(text=f"set the {room} light to {pct}", name="set_light",
               arguments={"name": room, "brightness": pct}, context=f"Lights: {room}")
    for room, pct in [("kitchen", 30), ("hall", 50), ("bedroom", 10), ("porch", 90), ("den", 70)]
]  # fmt: skip


def call(tool: str, **arguments: object) -> str:
    return json.dumps({"name": tool, "arguments": arguments})


def right(c: CanaryCall) -> str:
    return call(c.name, **c.arguments)


def wrong(c: CanaryCall) -> str:
    return call(c.name, name=c.arguments["name"], brightness=1)


class ByAdapter(ScriptedBackend):
    """Answers each request by the active adapter: {adapter: {request text: output}}; a
    request it has no answer for gets a plain answer (no call)."""

    def __init__(self, identity: BaseModelIdentity, answers: dict[str | None, dict[str, str]]):
        super().__init__([])
        self._identity = identity
        self.answers = answers
        self.served: list[tuple[str | None, GenerationRequest]] = []

    @property
    def identity(self) -> BaseModelIdentity:
        return self._identity

    def generate(self, request: GenerationRequest) -> Iterator:  # type: ignore[override]
        text = request.messages[1].content.split("\n\n")[0]
        script = self.answers.get(self.active_adapter, {})
        self._responses = [script.get(text, '{"answer": "I cannot"}')]
        self.served.append((self.active_adapter, request))
        yield from super().generate(request)


class LocalSource:
    """The AdapterSource contract over real files: what the TUF updater returns, minus TUF."""

    def __init__(self, files: dict[str, Path], releases: list[AdapterRelease]) -> None:
        self.files = files
        self.releases = releases
        self.down = False
        self.refuse: set[str] = set()
        self.downloads: list[str] = []

    def refresh(self) -> list[AdapterRelease]:
        if self.down:
            raise HostUnreachableError("cannot reach https://127.0.0.1:9: connection refused")
        return list(self.releases)

    def latest(self, skill: str) -> AdapterRelease | None:
        mine = [r for r in self.releases if r.skill == skill]
        return max(mine, key=lambda r: r.version, default=None)

    def download(self, release: AdapterRelease) -> Path:
        self.downloads.append(release.name)
        if release.name in self.refuse:
            raise AdapterVerificationError(f"hash/length: {release.name} failed verification")
        return self.files[release.name]


@pytest.fixture(scope="module")
def files(
    tiny_lora: TinyLora, identity: BaseModelIdentity, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("releases")
    return {
        f"{SKILL}-v{v}": export_lora_gguf(
            tiny_lora.state, alpha=tiny_lora.alpha * v, identity=identity, path=folder / f"{v}.gguf"
        )
        for v in (1, 2, 3)
    }


@pytest.fixture(autouse=True)
def demo_toolset() -> Iterator[Toolset]:
    tools = Toolset(SKILL, [demo_tools.set_light, demo_tools.unlock])
    register_toolset(SKILL, tools)
    yield tools
    _unregister_toolset(SKILL)


def release(identity: BaseModelIdentity, version: int, canary=CANARY, **extra) -> AdapterRelease:
    return AdapterRelease(
        name=f"{SKILL}-v{version}", skill=SKILL, version=version,
        base_identity=identity.as_dict(), canary=list(canary), **extra,
    )  # fmt: skip


def make_runtime(tiny_model: TinyModel, backend):
    """A device that runs the demo skill, with its sealed log."""
    from edge_agent.cli._common import plan_for
    from edge_agent.runtime import Runtime
    from edge_agent.settings import load_settings

    settings = load_settings(model=str(tiny_model.gguf_path), tools=SKILL)
    return Runtime(settings, plan_for(settings)[0], backend)


def log_turn(rt, tools: Toolset, text: str, label: ToolCall | None, context=None) -> None:
    """A turn of `tools`' skill the teacher answered with `label`, as the agent logs it."""
    outcomes = [ToolOutcome(call=label, effect=Effect.ACTUATING, status="ok")] if label else []
    result = AgentResult(request=text, model="tiny", skill=tools.name, route="escalated",
                         toolset=tools.fingerprint, tool_calls=outcomes)  # fmt: skip
    messages = messages_for(text, tools, context=context)
    rt.log().record(result, messages=messages, tools=tools.schemas())


@pytest.fixture
def world(tiny_model, identity, files):
    """A runtime on the scripted backend, its installed store and a source of v1..v3."""
    backend = ByAdapter(identity, {})
    rt = make_runtime(tiny_model, backend)
    source = LocalSource(files, [release(identity, 1)])
    yield rt, backend, InstalledAdapters(rt.settings.adapters_dir), source
    rt.close()


def answers(calls=CANARY, fn=right) -> dict[str, str]:
    return {c.text: fn(c) for c in calls}


# --- pass and activate, regress and reject ----------------------------------------------------


def test_a_release_that_passes_its_canary_becomes_active_live_and_on_disk(world):
    rt, backend, installed, source = world
    backend.answers = {f"{SKILL}-v1": answers()}  # the bare base model answers nothing
    report = check_for_updates(source, installed, rt)
    (outcome,) = report.outcomes
    assert outcome.action == "activated", outcome.reason
    canary = outcome.canary
    assert (canary.canary_new.hits, canary.canary_old.hits, canary.canary_new.n) == (5, 0, 5)
    assert canary.incumbent is None and canary.recent_new is None
    assert installed.active(SKILL).name == f"{SKILL}-v1"
    assert installed.active(SKILL).canary["canary_new"] == {"hits": 5, "n": 5}
    assert rt.adapter_of(SKILL) == f"{SKILL}-v1"
    # the device's own prompts: the adapted one with the candidate, the tool list without
    by = {adapter: req for adapter, req in backend.served}
    tools = rt.toolset(SKILL)
    assert by[f"{SKILL}-v1"].messages == messages_for(
        CANARY[-1].text, tools, context=CANARY[-1].context, adapted=True
    )
    assert by[None].messages[0].content.endswith(tools.describe_compact())
    assert by[f"{SKILL}-v1"].json_schema is not None  # constrained as the agent does it


def test_a_release_that_regresses_is_rejected_and_the_known_good_one_stays(world, identity):
    rt, backend, installed, source = world
    backend.answers = {
        f"{SKILL}-v1": answers(),
        f"{SKILL}-v2": answers(CANARY[:4]) | answers(CANARY[4:], wrong),  # 4/5: above the floor
    }
    check_for_updates(source, installed, rt)
    source.releases.append(release(identity, 2))
    (outcome,) = check_for_updates(source, installed, rt).outcomes
    assert outcome.action == "rejected"
    assert "fell from 5/5 (100%) to 4/5 (80%)" in outcome.reason
    assert installed.active(SKILL).name == f"{SKILL}-v1"
    assert installed.get(f"{SKILL}-v2").status == "rejected"
    assert rt.adapter_of(SKILL) == f"{SKILL}-v1"


def test_under_the_floor_it_is_rejected_without_measuring_the_current_one(world):
    rt, backend, installed, source = world
    backend.answers = {f"{SKILL}-v1": answers(CANARY[:2]) | answers(CANARY[2:], wrong)}
    (outcome,) = check_for_updates(source, installed, rt).outcomes
    assert outcome.action == "rejected" and "under the 50% required" in outcome.reason
    assert outcome.canary.canary_old is None
    assert {adapter for adapter, _ in backend.served} == {f"{SKILL}-v1"}
    assert installed.active(SKILL) is None and rt.adapter_of(SKILL) is None


def test_fewer_exact_calls_on_the_skills_recent_turns_is_a_regression(world, identity):
    rt, backend, installed, source = world
    tools = rt.toolset(SKILL)
    log_turn(rt, tools, "dim the attic light", ToolCall(name="set_light",
             arguments={"name": "attic", "brightness": 100}), context="Lights: attic")  # fmt: skip
    log_turn(rt, tools, "unlock the front door", ToolCall(name="unlock",
             arguments={"name": "front door"}))  # fmt: skip
    backend.answers = {
        f"{SKILL}-v1": answers() | {"dim the attic light": call("set_light", name="attic"),
                                   "unlock the front door": call("unlock", name="front door")},
        f"{SKILL}-v2": answers() | {"unlock the front door": call("unlock", name="back door")},
    }  # fmt: skip
    (first,) = check_for_updates(source, installed, rt).outcomes
    assert (first.canary.recent_new.hits, first.canary.recent_old.hits) == (2, 0)
    source.releases.append(release(identity, 2))
    (outcome,) = check_for_updates(source, installed, rt).outcomes
    assert outcome.action == "rejected"
    assert f"exact match on 2 recent turns of {SKILL} fell from 2/2 (100%) to 0/2 (0%)" in (
        outcome.reason
    )
    assert outcome.canary.canary_new.hits == outcome.canary.canary_old.hits == 5
    assert rt.adapter_of(SKILL) == f"{SKILL}-v1"
    # the context block it was asked with is replayed with it
    attic = [
        r for a, r in backend.served if a == f"{SKILL}-v2" and "attic" in r.messages[1].content
    ]
    assert attic[-1].messages[1].content == "dim the attic light\n\nLights: attic"


def test_a_small_drop_within_tolerance_passes(world, identity):
    rt, backend, installed, source = world
    backend.answers = {f"{SKILL}-v1": answers(), f"{SKILL}-v2": answers(CANARY[:4])}
    check_for_updates(source, installed, rt)
    source.releases.append(release(identity, 2))
    rules = CanaryRules(tolerance=0.25)
    (outcome,) = check_for_updates(source, installed, rt, rules=rules).outcomes
    assert outcome.action == "activated", outcome.reason
    assert [a.status for a in installed.history(SKILL)] == ["known_good", "active"]


def test_a_release_without_a_canary_set_is_rejected(world, identity):
    rt, _, installed, source = world
    source.releases = [release(identity, 1, canary=[])]
    (outcome,) = check_for_updates(source, installed, rt).outcomes
    assert outcome.action == "rejected" and "no canary set" in outcome.reason


# --- what the round tries, and faults ---------------------------------------------------------


def test_a_host_that_is_down_is_reported_not_raised(world):
    rt, _, installed, source = world
    source.down = True
    report = check_for_updates(source, installed, rt)
    assert isinstance(report.error, HostUnreachableError) and report.outcomes == []
    assert "host: cannot reach" in report.lines()[-1]


def test_a_download_that_fails_verification_installs_nothing_and_is_retried(world):
    rt, backend, installed, source = world
    backend.answers = {f"{SKILL}-v1": answers()}
    source.refuse = {f"{SKILL}-v1"}
    (outcome,) = check_for_updates(source, installed, rt).outcomes
    assert outcome.action == "failed" and isinstance(outcome.error, AdapterVerificationError)
    assert installed.listing() == [] and backend.served == []
    source.refuse = set()
    assert check_for_updates(source, installed, rt).outcomes[0].action == "activated"


def test_only_the_newest_release_for_this_base_is_tried_and_never_twice(world, identity):
    rt, backend, installed, source = world
    other = identity.as_dict() | {"n_layer": 99}
    source.releases = [
        release(identity, 1),
        release(identity, 2),
        release(identity, 3).model_copy(update={"base_identity": other}),
    ]
    backend.answers = {}  # v2 answers nothing: rejected
    first = check_for_updates(source, installed, rt)
    assert [o.release for o in first.outcomes] == [f"{SKILL}-v2"]
    assert any("another base model" in s for s in first.skipped)
    second = check_for_updates(source, installed, rt)
    assert second.outcomes == [] and source.downloads == [f"{SKILL}-v2"]
    assert check_for_updates(source, installed, rt, skills=["elsewhere"]).skipped == []


def test_a_file_the_backend_refuses_is_rejected(world, tiny_model, tmp_path, identity):
    rt, _, installed, source = world
    broken = tmp_path / "broken.gguf"
    shutil.copy(source.files[f"{SKILL}-v1"], broken)
    source.files = {f"{SKILL}-v1": broken}

    def refuse(name: str, path: Path) -> None:
        from edge_agent.errors import InvalidAdapterError

        raise InvalidAdapterError(f"llama.cpp could not load the adapter {path.name}")

    rt.backend.load_adapter = refuse  # type: ignore[method-assign]
    (outcome,) = check_for_updates(source, installed, rt).outcomes
    assert outcome.action == "rejected" and "could not load" in outcome.reason
    assert installed.get(f"{SKILL}-v1").status == "rejected"


# --- the dry run and the log ------------------------------------------------------------------


def test_propose_validates_the_call_and_never_runs_it(world, demo_toolset):
    rt, backend, _, _ = world
    backend.answers = {None: {"open up": call("unlock", name="front door"),
                              "bad": call("unlock", name="garage")}}  # fmt: skip
    demo_tools.STATE.clear()
    made = propose(rt.pinned_backend, demo_toolset, None, Request("open up"))
    assert made.name == "unlock" and made.arguments == {"name": "front door"}
    assert propose(rt.pinned_backend, demo_toolset, None, Request("bad")) is None
    assert demo_tools.STATE == {}


def test_recent_turns_are_the_skills_own_newest_first_one_per_request(world, demo_toolset):
    from edge_agent.adapters.subject import logged_turns
    from edge_agent.skills.skill import Skill

    rt, _, _, _ = world
    other = Toolset("elsewhere", [demo_tools.set_light])
    light = ToolCall(name="set_light", arguments={"name": "den"})
    log_turn(rt, demo_toolset, "dim the den", light, context="Lights: den")
    log_turn(rt, demo_toolset, "Dim the den!", light, context="Lights: den")  # the same request
    log_turn(rt, demo_toolset, "hall please", None)  # answered in words by the teacher
    log_turn(rt, other, "not mine", light)
    went_on = AgentResult(request="and the porch", model="tiny", skill=SKILL, route="escalated")
    result = [Message(role="assistant", content=call("set_light", name="porch")),
              Message(role="tool", content='{"speech": "porch set to 100%"}')]  # fmt: skip
    rt.log().record(went_on, messages=messages_for("and the porch", demo_toolset) + result)
    skill = Skill(SKILL, toolset=None)
    found = logged_turns(rt.log(), skill, limit=8)
    assert [(t.request, t.context) for t in found.turns] == [
        ("hall please", None),
        ("Dim the den!", "Lights: den"),
    ]
    assert found.turns[0].call is None and found.fingerprint == demo_toolset.fingerprint
    assert [t.request for t in logged_turns(rt.log(), skill, limit=1).turns] == ["hall please"]
    assert logged_turns(None, skill, limit=8).turns == []


def test_the_sync_task_runs_only_when_enabled_and_never_raises(world, monkeypatch):
    rt, _, _, _ = world
    assert adapter_tasks(rt) == []
    monkeypatch.setattr(rt.settings, "adapters_auto_update", True)
    (task,) = adapter_tasks(rt)
    report = task(object())  # not enrolled: reported, not raised
    assert isinstance(report.error, EnrollmentError)


# --- the real model ---------------------------------------------------------------------------


@pytest.mark.integration
def test_smollm2_activates_the_home_adapter_and_rejects_it_with_wrong_labels():
    from edge_agent.adapters.shipped import adapter_for, shipped_adapters
    from edge_agent.runtime import open_runtime
    from edge_agent.settings import load_settings
    from edge_agent.skills.home.dataset import load_split
    from edge_agent.skills.home.retrieve import context_block

    home = shipped_adapters()[0]
    rows = {r.id: r for r in load_split("test")}
    chosen = [rows[i] for i in HOME_CANARY_IDS]
    canary = [
        CanaryCall(text=r.sentence, name=r.intent, arguments=r.slots,
                   context=context_block(r.sentence, r.speaker_area, r.inventory()))
        for r in chosen
    ]  # fmt: skip
    swapped = [c.model_copy(update={"name": "HassNevermind", "arguments": {}}) for c in canary]

    def published(version: int, calls: list[CanaryCall]) -> AdapterRelease:
        return AdapterRelease(name=f"home-v{version}", skill="home", version=version,
                              base_identity=home.base_identity, canary=calls)  # fmt: skip

    settings = load_settings(threads=1, log_enabled=False)
    with open_runtime(settings) as rt:
        assert adapter_for("home", rt.backend.identity) is not None
        installed = InstalledAdapters(settings.adapters_dir)
        files = {"home-v1": home.path, "home-v2": home.path}
        source = LocalSource(files, [published(1, canary)])
        rules = CanaryRules.from_settings(settings)
        (good,) = check_for_updates(source, installed, rt, rules=rules).outcomes
        assert good.action == "activated", good.reason
        assert good.canary.canary_new.value >= 0.5 and good.canary.incumbent == "home"
        assert rt.adapter_of("home") == "home-v1"
        source.releases.append(published(2, swapped))
        (bad,) = check_for_updates(source, installed, rt, rules=rules).outcomes
        assert bad.action == "rejected" and "required" in bad.reason
        assert rt.adapter_of("home") == "home-v1" and installed.active("home").name == "home-v1"
        assert rt.agent("home").adapter == "home-v1"  # what the next turn runs


# Short test-split commands the shipped adapter answered right here (short: the test stays fast).
HOME_CANARY_IDS = [
    "HassTurnOff/domain_only.yaml#0.3",
    "HassTurnOn/domain_only.yaml#0.11",
    "HassLightSet/name_brightness.yaml#0.1",
    "homeassistant_HassStartTimer.yaml#0.0",
    "HassTurnOff/domain_only.yaml#0.8",
]
