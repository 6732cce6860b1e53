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
from edge_agent.settings import load_settings
from edge_agent.tools import Toolset, register_toolset
from edge_agent.tools.registry import _unregister_toolset
from tests import demo_tools
from tests.adapters.test_canary import LocalSource
from tests.cli_support import run_cli
from tests.tinymodel import TinyLora

SKILL = "clidemo"
CANARY = [
    CanaryCall(text="set the hall light to 40", name="set_light",
               arguments={"name": "hall", "brightness": 40}, context="Lights: hall"),
]  # fmt: skip


@pytest.fixture(autouse=True)
def demo_toolset() -> Iterator[None]:
    register_toolset(SKILL, Toolset(SKILL, [demo_tools.set_light, demo_tools.unlock]))
    yield
    _unregister_toolset(SKILL)


@pytest.fixture(scope="module")
def files(
    tiny_lora: TinyLora, identity: BaseModelIdentity, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli-releases")
    return {
        f"{SKILL}-v{v}": export_lora_gguf(
            tiny_lora.state, alpha=tiny_lora.alpha * v, identity=identity, path=folder / f"{v}.gguf"
        )
        for v in (1, 2)
    }


def release(identity: BaseModelIdentity, version: int) -> AdapterRelease:
    return AdapterRelease(
        name=f"{SKILL}-v{version}", skill=SKILL, version=version,
        base_identity=identity.as_dict(), canary=CANARY,
    )  # fmt: skip


def installed() -> InstalledAdapters:
    return InstalledAdapters(load_settings().adapters_dir)


@pytest.fixture
def source(monkeypatch, files, identity) -> LocalSource:
    """The enrolled host, replaced by local files (the TUF path has its own tests)."""
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
    assert (code, out.strip()) == (0, "nothing new for this device")


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
