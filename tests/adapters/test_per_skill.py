"""Adapters per skill on the device: it pulls the skills it runs (a skill configured later is
pulled by the next round), canaries each on that skill's own logged turns with its own
scorer, and runs each skill's adapter on that skill's requests.

The scripted backend answers by the active adapter (a fake at the backend seam); the last
test runs the real thing: a signed TUF repository over HTTPS and llama.cpp on the tiny model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.adapters.canary import CanaryRules, check_for_updates, run_canary
from edge_agent.adapters.installed import InstalledAdapters
from edge_agent.adapters.release import AdapterRelease, CanaryCall
from edge_agent.adapters.subject import canary_subject
from edge_agent.errors import ConfigError
from edge_agent.lora.gguf import export_lora_gguf
from edge_agent.models.gguf import BaseModelIdentity
from edge_agent.runtime import Runtime
from edge_agent.skills.skill import Skill
from edge_agent.tools import Toolset, register_toolset
from edge_agent.tools.registry import _unregister_toolset
from edge_agent.types import ToolCall
from tests import demo_tools
from tests.adapters.test_canary import ByAdapter, LocalSource, call, log_turn
from tests.tinymodel import TinyLora, TinyModel

LIGHTS, DOORS = "lights", "doors"
LIGHTS_CANARY = [
    CanaryCall(text=f"set the {room} light to {pct}", name="set_light",
               arguments={"name": room, "brightness": pct})
    for room, pct in [("kitchen", 30), ("hall", 50), ("den", 70)]
]  # fmt: skip
DOORS_CANARY = [
    CanaryCall(text=f"unlock the {door}", name="unlock", arguments={"name": door})
    for door in ("front door", "back door")
]
SERVER = {"up": False}  # the doors skill's tool server, for the skill that cannot be built


def same_tool(got: ToolCall | None, gold: ToolCall | None) -> bool:
    """The lights skill's own scorer: the right tool is enough."""
    return (got and got.name) == (gold and gold.name)


def lights_tools(_settings: object = None) -> Toolset:
    return Toolset(LIGHTS, [demo_tools.set_light])


def doors_tools(_settings: object = None) -> Toolset:
    return Toolset(DOORS, [demo_tools.unlock])


lights_skill = Skill(LIGHTS, toolset=lights_tools, scorer=same_tool)


def flaky_doors(_settings: object) -> Toolset:
    """A skill whose tool server is down until the test brings it up."""
    if not SERVER["up"]:
        raise ConfigError("MCP server 'doors' cannot be reached: connection refused")
    return doors_tools()


LIGHTS_CONFIG = {LIGHTS: {"python": "tests.adapters.test_per_skill:lights_skill"}}


@pytest.fixture(autouse=True)
def doors_registered() -> Iterator[None]:
    """`doors` is a skill this Python process knows; a device runs it once configured."""
    register_toolset(DOORS, doors_tools())
    SERVER["up"] = False
    yield
    _unregister_toolset(DOORS)


@pytest.fixture(scope="module")
def files(
    tiny_lora: TinyLora, identity: BaseModelIdentity, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("per-skill")
    names = {f"{LIGHTS}-v1": 1.0, f"{DOORS}-v1": 2.0, f"{LIGHTS}-v2": 3.0}
    return {
        name: export_lora_gguf(tiny_lora.state, alpha=tiny_lora.alpha * scale,
                               identity=identity, path=folder / f"{name}.gguf")
        for name, scale in names.items()
    }  # fmt: skip


def release(identity: BaseModelIdentity, skill: str, version: int = 1) -> AdapterRelease:
    canary = LIGHTS_CANARY if skill == LIGHTS else DOORS_CANARY
    return AdapterRelease(name=f"{skill}-v{version}", skill=skill, version=version,
                          base_identity=identity.as_dict(), canary=canary)  # fmt: skip


def right(calls: list[CanaryCall]) -> dict[str, str]:
    return {c.text: call(c.name, **c.arguments) for c in calls}


def device(tiny_model: TinyModel, backend: Any, **settings: Any) -> Runtime:
    """A device on the scripted backend with its sealed log; runs `lights` unless told."""
    from edge_agent.cli._common import plan_for
    from edge_agent.settings import load_settings

    settings.setdefault("skills", LIGHTS_CONFIG)
    loaded = load_settings(model=str(tiny_model.gguf_path), tools="none", **settings)
    return Runtime(loaded, plan_for(loaded)[0], backend)


@pytest.fixture
def world(tiny_model, identity, files):
    backend = ByAdapter(identity, {f"{LIGHTS}-v1": right(LIGHTS_CANARY),
                                   f"{DOORS}-v1": right(DOORS_CANARY)})  # fmt: skip
    source = LocalSource(files, [release(identity, LIGHTS), release(identity, DOORS)])
    rt = device(tiny_model, backend)
    yield rt, backend, InstalledAdapters(rt.settings.adapters_dir), source
    rt.close()


def actions(report: Any) -> list[tuple[str, str]]:
    return [(o.release, o.action) for o in report.outcomes]


# --- which skills a device pulls ----------------------------------------------------------------


def test_a_device_pulls_the_skills_it_runs_and_skips_the_others_with_a_reason(
    world, tiny_model, caplog
):
    rt, backend, installed, source = world
    caplog.set_level("INFO", logger="edge_agent.adapters.canary")
    first = check_for_updates(source, installed, rt)
    assert actions(first) == [(f"{LIGHTS}-v1", "activated")]
    (skip,) = [s for s in first.skipped if s.startswith(f"{DOORS}-v1")]
    assert f"this device does not run {DOORS}" in skip and f"[skills.{DOORS}]" in skip
    assert skip in caplog.text
    assert source.downloads == [f"{LIGHTS}-v1"] and installed.history(DOORS) == []
    assert check_for_updates(source, installed, rt).outcomes == []  # still not run here

    configured = device(tiny_model, backend, skills=LIGHTS_CONFIG | {DOORS: {}})
    second = check_for_updates(source, installed, configured)
    assert actions(second) == [(f"{DOORS}-v1", "activated")]
    assert installed.active(DOORS).name == f"{DOORS}-v1"
    assert installed.active(LIGHTS).name == f"{LIGHTS}-v1"
    configured.close()


def test_naming_a_skill_the_device_does_not_run_says_why_and_pulls_nothing(world):
    rt, _, installed, source = world
    report = check_for_updates(source, installed, rt, skills=[DOORS])
    assert report.outcomes == [] and len(report.skipped) == 1
    assert "does not run doors" in report.skipped[0] and source.downloads == []


def test_a_skill_that_cannot_be_built_now_is_retried_not_rejected(world, tiny_model):
    rt, backend, installed, source = world
    doors = {DOORS: {"python": "tests.adapters.test_per_skill:flaky_doors"}}
    rt = device(tiny_model, backend, skills=LIGHTS_CONFIG | doors)
    down = check_for_updates(source, installed, rt, skills=[DOORS])
    (outcome,) = down.outcomes
    assert outcome.action == "failed" and "cannot check doors on this device now" in outcome.reason
    assert "connection refused" in outcome.reason
    assert source.downloads == [] and installed.history(DOORS) == []  # nothing to retry around
    SERVER["up"] = True
    assert actions(check_for_updates(source, installed, rt, skills=[DOORS])) == [
        (f"{DOORS}-v1", "activated")
    ]
    rt.close()


def test_a_candidate_a_round_left_undecided_is_tried_again(world, files):
    rt, _, installed, source = world
    installed.install(source.releases[0], files[f"{LIGHTS}-v1"])  # the round died here
    assert actions(check_for_updates(source, installed, rt)) == [(f"{LIGHTS}-v1", "activated")]


# --- the canary: the skill's own tools, turns and scorer ----------------------------------------


def test_the_canary_scores_only_the_skills_own_turns_with_its_own_scorer(world, files, identity):
    rt, backend, _, _ = world
    lights, doors = lights_tools(), doors_tools()
    for text, room in [("dim the den", "den"), ("hall at half", "hall"), ("porch off", "porch")]:
        log_turn(rt, lights, text, ToolCall(name="set_light", arguments={"name": room}))
    backend.answers[f"{LIGHTS}-v1"] |= {
        "dim the den": call("set_light", name="den"),
        "hall at half": call("set_light", name="hall", brightness=50),  # same tool: a hit
        "set the den light to 70": call("set_light", name="den", brightness=1),  # ditto
    }
    rt.load_adapter(f"{LIGHTS}-v1", files[f"{LIGHTS}-v1"])

    def canary() -> dict[str, Any]:
        subject = canary_subject(rt, LIGHTS, limit=32)
        report = run_canary(rt, release(identity, LIGHTS), f"{LIGHTS}-v1", subject=subject)
        return report.to_dict() | {"recent": [t.request for t in subject.recent]}

    before = canary()
    assert before["recent"] == ["porch off", "hall at half", "dim the den"]
    assert before["canary_new"] == {"hits": 3, "n": 3}  # exact_call would give 2
    assert (before["recent_new"], before["recent_old"]) == (
        {"hits": 2, "n": 3},
        {"hits": 0, "n": 3},
    )
    assert before["tools"] == "its own tools" and before["passed"]
    for text in ["dim the den", "hall at half", "porch off", "open up", "the back one"]:
        log_turn(rt, doors, text, ToolCall(name="unlock", arguments={"name": "front door"}))
    assert canary() == before


def test_a_skill_whose_tools_cannot_be_built_canaries_on_the_schemas_its_turns_logged(
    world, tiny_model
):
    rt, backend, installed, source = world
    down = {DOORS: {"mcp_url": "http://127.0.0.1:9/mcp", "mcp_timeout_s": 5}}  # nothing there
    rt = device(tiny_model, backend, skills=LIGHTS_CONFIG | down)
    log_turn(
        rt,
        doors_tools(),
        "open the front",
        ToolCall(name="unlock", arguments={"name": "front door"}),
    )
    backend.answers[f"{DOORS}-v1"]["open the front"] = call("unlock", name="front door")
    (outcome,) = check_for_updates(source, installed, rt, skills=[DOORS]).outcomes
    assert outcome.action == "activated", outcome.reason
    fingerprint = doors_tools().fingerprint
    assert outcome.canary.tools == f"the tools its turns logged ({fingerprint})"
    assert outcome.canary.recent_new.hits == 1 and outcome.canary.canary_new.hits == 2
    rt.close()


def test_a_client_skill_is_pulled_when_named_and_canaried_on_its_logged_schemas(
    world, tiny_model, identity, files
):
    rt, backend, installed, source = world
    tools = doors_tools()
    client = f"client-{tools.fingerprint[:12]}"
    rt = device(tiny_model, backend, skills=LIGHTS_CONFIG | {client: {}})
    log_turn(
        rt,
        Toolset(client, list(tools)),
        "open up",
        ToolCall(name="unlock", arguments={"name": "back door"}),
    )
    ours = release(identity, DOORS).model_copy(update={"name": f"{client}-v1", "skill": client})
    source.releases, source.files = [ours], {f"{client}-v1": files[f"{DOORS}-v1"]}
    backend.answers[f"{client}-v1"] = right(DOORS_CANARY[:1]) | {  # a tool it does not have:
        DOORS_CANARY[1].text: call("set_light", name="back door"),  # no valid call, a miss
        "open up": call("unlock", name="back door"),
    }
    (outcome,) = check_for_updates(source, installed, rt).outcomes
    assert outcome.action == "activated", outcome.reason
    assert outcome.canary.canary_new.hits == 1 and outcome.canary.recent_new.hits == 1
    assert outcome.canary.tools.startswith("the tools its turns logged")
    assert rt.adapter_of(client) == f"{client}-v1"
    rt.close()


# --- several skills on one base model -----------------------------------------------------------


def test_each_skill_runs_its_own_adapter_on_its_own_requests(world, tiny_model):
    rt, backend, installed, source = world
    rt = device(tiny_model, backend, skills=LIGHTS_CONFIG | {DOORS: {}})
    assert {a for _, a in actions(check_for_updates(source, installed, rt))} == {"activated"}
    backend.answers[f"{LIGHTS}-v1"]["dim the den"] = call("set_light", name="den")
    backend.answers[f"{DOORS}-v1"]["open the front"] = call("unlock", name="front door")
    backend.served.clear()
    lights, doors = rt.agent(LIGHTS), rt.agent(DOORS)
    for agent, text in [
        (lights, "dim the den"),
        (doors, "open the front"),
        (lights, "dim the den"),
    ]:
        agent.run(text)
    served = [(adapter, r.messages[1].content) for adapter, r in backend.served]
    assert [a for a, _ in served] == [f"{LIGHTS}-v1", f"{DOORS}-v1", f"{LIGHTS}-v1"]
    records = list(rt.log().interactions())[-3:]
    assert [(r.result.skill, r.result.adapter) for r in records] == [
        (LIGHTS, f"{LIGHTS}-v1"), (DOORS, f"{DOORS}-v1"), (LIGHTS, f"{LIGHTS}-v1"),
    ]  # fmt: skip
    rt.close()


def test_the_sync_loops_update_task_pulls_every_skill_the_device_runs(
    world, tiny_model, monkeypatch
):
    from edge_agent.adapters.canary import adapter_tasks

    _, backend, installed, source = world
    both = LIGHTS_CONFIG | {DOORS: {}}
    rt = device(tiny_model, backend, skills=both, adapters_auto_update=True)
    monkeypatch.setattr("edge_agent.adapters.canary.open_source", lambda *_: source)
    (task,) = adapter_tasks(rt)  # what `serve` hands its sync worker
    report = task(object())
    assert actions(report) == [(f"{DOORS}-v1", "activated"), (f"{LIGHTS}-v1", "activated")]
    assert (rt.adapter_of(LIGHTS), rt.adapter_of(DOORS)) == (f"{LIGHTS}-v1", f"{DOORS}-v1")
    rt.close()


# --- the real thing: a signed repository and llama.cpp -----------------------------------------


def test_two_skills_from_one_signed_repository_on_the_tiny_model(
    tmp_path, tiny_model, files, identity, monkeypatch
):
    from edge_agent.adapters.updater import AdapterUpdater
    from edge_agent.host.publish import AdapterRepository
    from edge_agent.runtime import open_runtime
    from edge_agent.settings import load_settings
    from edge_agent.sync.enrollment import pinned_context
    from tests.sync_support import HostServer, make_cert

    repo = AdapterRepository.init(tmp_path / "tuf")
    repo.publish(files[f"{LIGHTS}-v1"], release(identity, LIGHTS))
    repo.publish(files[f"{DOORS}-v1"], release(identity, DOORS))
    (tmp_path / "host").mkdir()
    host = HostServer(tmp_path / "host", make_cert(tmp_path / "tls"), {"tuf_dir": repo.folder})
    host.start()
    rules = CanaryRules(min_canary=0.0, tolerance=1.0)  # a random model: the verdict is not
    # what is tested here, which releases are pulled and which adapter serves whom is

    def pull(skills: dict[str, Any]) -> tuple[Runtime, Any]:
        settings = load_settings(model=str(tiny_model.gguf_path), tools="none", threads=1,
                                 skills=skills)  # fmt: skip
        rt = open_runtime(settings)
        with AdapterUpdater(tmp_path / "device", host.url, repo.trusted_root(),
                            ssl_context=pinned_context(host.cert.pem),
                            identity=rt.backend.identity) as source:  # fmt: skip
            report = check_for_updates(
                source, InstalledAdapters(settings.adapters_dir), rt, rules=rules
            )
        return rt, report

    try:
        rt, first = pull(LIGHTS_CONFIG)
        rt.close()
        assert actions(first) == [(f"{LIGHTS}-v1", "activated")]
        assert any("does not run doors" in s for s in first.skipped)
        rt, second = pull(LIGHTS_CONFIG | {DOORS: {}})
    finally:
        host.stop()
    assert actions(second) == [(f"{DOORS}-v1", "activated")]
    seen: list[str | None] = []
    generate = rt.backend.generate

    def spy(request: Any) -> Iterator[Any]:
        seen.append(rt.backend.active_adapter)  # what llama.cpp has applied right now
        yield from generate(request)

    monkeypatch.setattr(rt.backend, "generate", spy)
    with rt:
        for skill, text in [(LIGHTS, "dim the den"), (DOORS, "open the front"), (LIGHTS, "hall")]:
            seen.append(f"turn {skill}")
            rt.agent(skill).run(text)
        records = [(r.result.skill, r.result.adapter) for r in rt.log().interactions()][-3:]
    turns = json.dumps(seen)
    assert seen[0] == f"turn {LIGHTS}" and set(seen[1 : seen.index(f"turn {DOORS}")]) == {
        f"{LIGHTS}-v1"
    }, turns
    doors_part = seen[seen.index(f"turn {DOORS}") + 1 : seen.index(f"turn {LIGHTS}", 1)]
    assert doors_part and set(doors_part) == {f"{DOORS}-v1"}, turns
    assert records == [(LIGHTS, f"{LIGHTS}-v1"), (DOORS, f"{DOORS}-v1"), (LIGHTS, f"{LIGHTS}-v1")]
