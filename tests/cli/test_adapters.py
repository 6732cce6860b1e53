"""`edge-agent adapters list|pull|use|rollback`, on the tiny model and a local release source."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.adapters.installed import InstalledAdapters
from edge_agent.adapters.release import AdapterRelease, CanaryCall
from edge_agent.lora.gguf import export_lora_gguf
from edge_agent.models.gguf import BaseModelIdentity
from edge_agent.settings import config_file_path, load_settings
from edge_agent.tools import Toolset, register_toolset
from edge_agent.tools.registry import _unregister_toolset
from tests import demo_tools
from tests.adapters.test_canary import LocalSource
from tests.cli_support import run_cli
from tests.tinymodel import TinyLora

SKILL, OTHER = "clidemo", "clidoor"
CANARY = [
    CanaryCall(text="set the hall light to 40", name="set_light",
               arguments={"name": "hall", "brightness": 40}, context="Lights: hall"),
]  # fmt: skip


@pytest.fixture(autouse=True)
def demo_toolset() -> Iterator[None]:
    register_toolset(SKILL, Toolset(SKILL, [demo_tools.set_light, demo_tools.unlock]))
    register_toolset(OTHER, Toolset(OTHER, [demo_tools.set_light, demo_tools.unlock]))
    yield
    _unregister_toolset(SKILL)
    _unregister_toolset(OTHER)


@pytest.fixture(scope="module")
def files(
    tiny_lora: TinyLora, identity: BaseModelIdentity, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli-releases")
    names = {f"{SKILL}-v1": 1, f"{SKILL}-v2": 2, f"{OTHER}-v1": 3}
    return {
        name: export_lora_gguf(
            tiny_lora.state, alpha=tiny_lora.alpha * v, identity=identity, path=folder / f"{v}.gguf"
        )
        for name, v in names.items()
    }


def release(identity: BaseModelIdentity, version: int, skill: str = SKILL) -> AdapterRelease:
    return AdapterRelease(
        name=f"{skill}-v{version}", skill=skill, version=version,
        base_identity=identity.as_dict(), canary=CANARY,
    )  # fmt: skip


def installed() -> InstalledAdapters:
    return InstalledAdapters(load_settings().adapters_dir)


@pytest.fixture
def source(monkeypatch, files, identity) -> LocalSource:
    """The enrolled host, replaced by local files (the TUF path has its own tests), for a
    device that runs the demo skill."""
    monkeypatch.setenv("EDGE_AGENT_TOOLS", SKILL)
    src = LocalSource(files, [release(identity, 1)])
    monkeypatch.setattr("edge_agent.adapters.canary.open_source", lambda *_: src)
    enrollment = load_settings().enrollment_path
    enrollment.parent.mkdir(parents=True)
    enrollment.write_text("{}")  # `list` asks the host only when the device is enrolled
    return src


def test_list_shows_the_shipped_adapter_as_the_active_baseline(capsys):
    code, out, _ = run_cli(capsys, "adapters", "list", "--json", "--no-host")
    assert code == 0
    data = json.loads(out)
    (home,) = [a for a in data["shipped"] if a["skill"] == "home"]
    assert home["status"] == "active" and home["fits"] is True  # the default model's base
    assert data["installed"] == [] and data["available"] is None


def test_pull_activates_what_passes_and_list_shows_it(capsys, source, tiny_model, monkeypatch):
    monkeypatch.setenv("EDGE_AGENT_ADAPTERS_CANARY_MIN", "0")  # a random model scores 0
    model = ["--model", str(tiny_model.gguf_path), "--threads", "1"]
    code, out, err = run_cli(capsys, "adapters", "pull", SKILL, *model)
    assert code == 0, err
    assert out.startswith(f"{SKILL}-v1: activated: canary exact 0/1")
    assert installed().active(SKILL).name == f"{SKILL}-v1"
    code, out, _ = run_cli(capsys, "adapters", "list", "--json", *model)
    data = json.loads(out)
    assert [(a["name"], a["status"]) for a in data["installed"]] == [(f"{SKILL}-v1", "active")]
    assert data["available"] == [
        {"name": f"{SKILL}-v1", "skill": SKILL, "version": 1, "fits": True, "installed": True}
    ]
    code, out, _ = run_cli(capsys, "adapters", "pull", *model)
    assert code == 0
    assert out.splitlines() == [
        f"{SKILL}-v1: nothing newer than what is installed",
        "nothing new for this device",
    ]


def test_pull_rejected_by_the_canary_exits_4_and_keeps_the_current(capsys, source, tiny_model):
    code, out, err = run_cli(
        capsys, "adapters", "pull", "--model", str(tiny_model.gguf_path), "--threads", "1"
    )
    assert code == 4
    assert "rejected" in out and err.startswith(f"error: {SKILL}-v1 was rejected by its canary")
    assert "under the 50% required" in err and len(err.strip().splitlines()) == 1
    assert installed().active(SKILL) is None
    assert installed().get(f"{SKILL}-v1").status == "rejected"


def test_a_host_that_is_down_is_one_line_and_the_sync_exit_code(capsys, source, tiny_model):
    source.down = True
    code, _, err = run_cli(
        capsys, "adapters", "pull", "--model", str(tiny_model.gguf_path), "--threads", "1"
    )
    assert code == 9 and err.startswith("error: cannot reach")
    code, out, err = run_cli(capsys, "adapters", "list")
    assert code == 0 and "host: cannot reach" in err


def test_use_and_rollback(capsys, files, identity):
    store = installed()
    for v in (1, 2):
        store.install(release(identity, v), files[f"{SKILL}-v{v}"])
        store.activate(f"{SKILL}-v{v}")
    code, out, _ = run_cli(capsys, "adapters", "rollback", SKILL)
    assert (code, out.strip()) == (0, f"{SKILL} now runs {SKILL}-v1")
    code, _, err = run_cli(capsys, "adapters", "use", f"{SKILL}-v2")
    assert code == 4 and "--force" in err
    code, out, _ = run_cli(capsys, "adapters", "use", f"{SKILL}-v2", "--force")
    assert code == 0 and f"{SKILL} runs {SKILL}-v2" in out
    run_cli(capsys, "adapters", "rollback", SKILL)
    code, out, _ = run_cli(capsys, "adapters", "rollback", SKILL)
    assert out.strip() == f"{SKILL} now runs no adapter (the base model)"
    code, _, err = run_cli(capsys, "adapters", "rollback", SKILL)
    assert code == 4 and "nothing to roll back" in err
    code, out, _ = run_cli(capsys, "adapters", "list", "--no-host")
    assert f"installed  {SKILL}" in out and "(rolled back by the user)" in out


def test_use_the_shipped_name_goes_back_to_it(capsys, files, identity):
    home = release(identity, 1).model_copy(update={"name": "home-v1", "skill": "home"})
    installed().install(home, files[f"{SKILL}-v1"])
    installed().activate("home-v1")
    code, out, _ = run_cli(capsys, "adapters", "use", "home")
    assert code == 0 and "runs the shipped adapter home" in out
    assert installed().active("home") is None
    code, _, err = run_cli(capsys, "adapters", "use", "nope")
    assert code == 4 and "no adapter named 'nope'" in err


# --- adapters per skill -------------------------------------------------------------------------


def test_pull_skips_a_skill_this_device_does_not_run_until_it_is_configured(
    capsys, source, tiny_model, identity, monkeypatch
):
    monkeypatch.setenv("EDGE_AGENT_ADAPTERS_CANARY_MIN", "0")  # a random model scores 0
    source.releases.append(release(identity, 1, OTHER))
    model = ["--model", str(tiny_model.gguf_path), "--threads", "1"]
    code, out, err = run_cli(capsys, "adapters", "pull", *model)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{OTHER}-v1: not pulled: this device does not run {OTHER}")
    assert lines[1].startswith(f"{SKILL}-v1: activated") and len(lines) == 2
    assert source.downloads == [f"{SKILL}-v1"]
    config = config_file_path()
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"[skills.{OTHER}]\n")  # the device runs it from now on
    code, out, err = run_cli(capsys, "adapters", "pull", "--skill", OTHER, *model)
    assert code == 0, err
    assert out.splitlines()[-1].startswith(f"{OTHER}-v1: activated")
    assert installed().active(OTHER).name == f"{OTHER}-v1"


def test_list_shows_what_each_skill_runs_and_one_skill_with_skill(
    capsys, files, identity, tiny_model, monkeypatch
):
    monkeypatch.setenv("EDGE_AGENT_TOOLS", SKILL)
    store = installed()
    for name, rel in [
        (f"{SKILL}-v1", release(identity, 1)),
        (f"{OTHER}-v1", release(identity, 1, OTHER)),
    ]:
        store.install(rel, files[name])
        store.activate(name)
    model = ["--model", str(tiny_model.gguf_path), "--no-host"]
    code, out, _ = run_cli(capsys, "adapters", "list", "--json", *model)
    skills = {r["skill"]: r for r in json.loads(out)["skills"]}
    assert skills[SKILL] == {
        "skill": SKILL,
        "runs": f"{SKILL}-v1",
        "from": "installed",
        "device": True,
    }
    assert skills[OTHER]["runs"] == f"{OTHER}-v1" and skills[OTHER]["device"] is False
    assert skills["home"] == {
        "skill": "home",
        "runs": None,
        "from": "the base model",
        "device": False,
    }
    code, out, _ = run_cli(capsys, "adapters", "list", "--json", "--skill", OTHER, *model)
    data = json.loads(out)
    assert [r["skill"] for r in data["skills"]] == [OTHER] and data["shipped"] == []
    assert [r["name"] for r in data["installed"]] == [f"{OTHER}-v1"]
    code, out, _ = run_cli(capsys, "adapters", "list", *model)
    assert f"skill      {SKILL}  runs {SKILL}-v1 (installed)\n" in out
    assert f"runs {OTHER}-v1 (installed)  (not run by this device)" in out


def test_use_and_rollback_take_the_skill(capsys, files, identity, monkeypatch):
    store = installed()
    for v in (1, 2):
        store.install(release(identity, v), files[f"{SKILL}-v{v}"])
        store.activate(f"{SKILL}-v{v}")
    code, _, err = run_cli(capsys, "adapters", "use", f"{SKILL}-v1", "--skill", OTHER)
    assert code == 4 and f"is an adapter for {SKILL}, not {OTHER}" in err
    code, _, err = run_cli(capsys, "adapters", "rollback", SKILL, "--skill", OTHER)
    assert code == 2 and "give one of them" in err
    monkeypatch.setenv("EDGE_AGENT_TOOLS", "none")
    code, _, err = run_cli(capsys, "adapters", "rollback")
    assert code == 2 and "name the skill: --skill NAME (this device runs none)" in err
    code, out, _ = run_cli(capsys, "adapters", "rollback", "--skill", SKILL)
    assert (code, out.strip()) == (0, f"{SKILL} now runs {SKILL}-v1")
    code, out, _ = run_cli(capsys, "adapters", "use", f"{SKILL}-v2", "--skill", SKILL, "--force")
    assert code == 0 and f"{SKILL} runs {SKILL}-v2" in out
    monkeypatch.setenv("EDGE_AGENT_TOOLS", SKILL)  # one skill: it need not be named
    code, out, _ = run_cli(capsys, "adapters", "rollback")
    assert (code, out.strip()) == (0, f"{SKILL} now runs {SKILL}-v1")
