"""Device profiles with backend = "onnx" end to end: an ONNX model folder as a catalog entry,
the fit plan's backend choice and options, and the runtime, agent, router, server and CLI
running on the onnx backend (the tiny random llama, with a context long enough for the
`system` toolset's prompt, built as an fp32 ONNX folder)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edge_agent.agent import AgentConfig
from edge_agent.cli import main
from edge_agent.errors import InvalidModelFileError, ModelNotFoundError
from edge_agent.host.curate import curate_split
from edge_agent.host.finetune import TrainResult
from edge_agent.host.pipeline import export_adapter, export_onnx_adapter, run_turn
from edge_agent.lora.onnx import check_fits, read_onnx_adapter
from edge_agent.models.catalog import Catalog, load_catalog
from edge_agent.models.plan import entry_from_path, make_plan, resolve_device
from edge_agent.models.store import ModelStore
from edge_agent.runtime import Runtime, open_runtime
from edge_agent.settings import Settings, load_settings
from edge_agent.skills.home.dataset import load_split
from tests.backends.test_onnx import build_tiny_onnx
from tests.teacher_support import stand_in_teacher
from tests.tinymodel import TinyLora, TinyModel, make_tiny_llama

PROFILE = """\
name = "{name}"
description = "test device that runs ONNX on CPU"
threads = 1
backend = "{backend}"
execution_provider = "cpu"
fallback_to_cpu = false
preferred_quantizations = ["Q4_K_M", "F32"]
context_size = 2048

[detect]
arch = ["no-such-arch"]

[memory]
fraction = 0.9
reserve_mb = 0
"""
ONNX_OPTIONS = {"n_ctx", "n_threads", "execution_provider", "fallback_to_cpu"}


@pytest.fixture(scope="module")
def tiny_2k(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """conftest's tiny llama (same base identity), with room for a toolset's prompt (~660 of
    its tokens)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-2k"), context=2048)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_2k: TinyModel) -> Path:
    return build_tiny_onnx(tmp_path_factory.mktemp("onnx-2k"), tiny_2k)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two test profiles, tiny-onnx and tiny-llama, in the isolated environment (conftest)."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for name, backend in (("tiny-onnx", "onnx"), ("tiny-llama", "llama_cpp")):
        text = PROFILE.format(name=name, backend=backend)
        (profiles / f"{name}.toml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("EDGE_AGENT_PROFILES_DIR", str(profiles))
    monkeypatch.setenv("EDGE_AGENT_LOG_ENABLED", "false")
    return tmp_path


def settings_for(model: Path, profile: str = "tiny-onnx", **extra: Any) -> Settings:
    return load_settings(model=str(model), profile=profile, threads=1, **extra)


def plan_for(settings: Settings) -> Any:
    return make_plan(settings, load_catalog(), ModelStore(settings.models_dir))


@pytest.fixture
def runtime(home: Path, tiny_onnx: Path) -> Iterator[Runtime]:
    with open_runtime(settings_for(tiny_onnx)) as rt:
        yield rt


# --- an ONNX folder as a catalog entry ---------------------------------------------------------


def test_an_onnx_folder_is_described_from_its_configs(tiny_onnx: Path) -> None:
    entry = entry_from_path(tiny_onnx)
    assert (entry.name, entry.format, entry.backend) == ("tiny-onnx-fp32", "onnx", "onnx")
    assert entry.quantization == "ONNX_FP32"  # edge_agent.json's precision
    assert entry.base_model == "tiny-llama" and entry.family == "llama"
    on_disk = sum(f.stat().st_size for f in tiny_onnx.iterdir())
    assert entry.file_size_mb == pytest.approx(on_disk / 2**20)
    a = entry.arch
    assert (a.n_layer, a.n_embd, a.n_head, a.n_head_kv, a.head_dim) == (2, 64, 4, 2, 16)
    assert (a.n_ff, a.n_vocab, a.context_max) == (128, 299, 2048)
    # the builder's CPU graphs keep the KV cache in float32, whatever the profile asks
    assert entry.kv_cache_mb(256, "q4_0") == pytest.approx(2 * 2 * 256 * 2 * 16 * 4 / 2**20)


def test_a_builder_folder_without_edge_agent_json(tiny_onnx: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_onnx, tmp_path / "plain")
    (folder / "edge_agent.json").unlink()
    (folder / "config.json").write_text(json.dumps({"intermediate_size": 96}))
    entry = entry_from_path(folder)
    assert entry.quantization == "ONNX" and entry.base_model == "plain"
    assert entry.arch.n_ff == 96  # from config.json


def test_folders_that_are_not_onnx_models(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="folder without genai_config.json"):
        entry_from_path(tmp_path)
    broken = shutil.copytree(tiny_onnx, tmp_path / "broken")
    (broken / "genai_config.json").write_text('{"model": {"type": "llama"}}')
    with pytest.raises(InvalidModelFileError, match="does not describe the model's shape"):
        entry_from_path(broken)
    (broken / "genai_config.json").write_text("{not json")
    with pytest.raises(InvalidModelFileError, match="cannot be read as JSON"):
        entry_from_path(broken)


def test_catalog_onnx_quantizations_mean_onnx_folders() -> None:
    data = load_catalog().default().model_dump(exclude={"format"})
    entry = type(load_catalog().default()).model_validate(data | {"quantization": "ONNX_INT4"})
    assert entry.format == "onnx" and entry.backend == "onnx"
    assert load_catalog().default().backend == "llama_cpp"


def test_the_store_resolves_and_finds_onnx_folders(home: Path, tiny_onnx: Path) -> None:
    store = ModelStore(home / "models")
    resolved = store.resolve(str(tiny_onnx), load_catalog())
    assert resolved.path == tiny_onnx and resolved.entry is None
    entry = entry_from_path(tiny_onnx).model_copy(update={"sha256": "0" * 64})
    assert store.local_path(entry) == tiny_onnx and store.is_available(entry)
    assert store.ensure(entry) == tiny_onnx  # a folder has no single hash to check
    with pytest.raises(ModelNotFoundError, match="folder without genai_config.json"):
        store.resolve(str(home), load_catalog())


# --- the fit plan: backend and its options -----------------------------------------------------


def test_onnx_folder_on_an_onnx_profile(home: Path, tiny_onnx: Path) -> None:
    plan = plan_for(settings_for(tiny_onnx))
    assert plan.backend == "onnx" and plan.to_dict()["backend"] == "onnx"
    options = plan.backend_options()
    assert set(options) == ONNX_OPTIONS
    assert options == {
        "n_ctx": 2048,
        "n_threads": 1,
        "execution_provider": "cpu",
        "fallback_to_cpu": False,
    }
    assert not any("backend" in r for r in plan.reasons)


def test_a_gguf_on_an_onnx_profile_runs_on_llama_cpp(home: Path, tiny_2k: TinyModel) -> None:
    plan = plan_for(settings_for(tiny_2k.gguf_path))
    assert plan.backend == "llama_cpp"
    assert "n_gpu_layers" in plan.backend_options()
    assert "execution_provider" not in plan.backend_options()
    assert any("backend llama_cpp, not the profile's onnx" in r for r in plan.reasons)


def test_an_onnx_folder_on_a_llama_cpp_profile_runs_on_onnx(home: Path, tiny_onnx: Path) -> None:
    plan = plan_for(settings_for(tiny_onnx, profile="tiny-llama"))
    assert plan.backend == "onnx" and set(plan.backend_options()) == ONNX_OPTIONS
    assert any("backend onnx, not the profile's llama_cpp" in r for r in plan.reasons)


def test_among_one_size_the_profiles_backend_wins(home: Path, tiny_onnx: Path) -> None:
    onnx = entry_from_path(tiny_onnx)
    gguf = onnx.model_copy(update={"name": "same-gguf", "format": "gguf", "quantization": "F32"})
    catalog = Catalog([gguf, onnx])
    for profile, backend in (("tiny-onnx", "onnx"), ("tiny-llama", "llama_cpp")):
        settings = load_settings(profile=profile, threads=1)
        device = resolve_device(settings)
        plan = make_plan(settings, catalog, ModelStore(settings.models_dir), device)
        assert plan.backend == backend


# --- runtime, agent, router, server, CLI on the onnx backend ----------------------------------


def test_runtime_runs_an_agent_turn_on_onnx(runtime: Runtime) -> None:
    from edge_agent.backends.onnx import OnnxBackend

    assert isinstance(runtime.backend, OnnxBackend)
    assert runtime.backend.execution_provider == "cpu" and runtime.backend.n_ctx == 2048
    agent = runtime.agent("system", config=AgentConfig(max_tokens=48))
    first, second = agent.run("how warm is the CPU?"), agent.run("how warm is the CPU?")
    # the random tiny model answers (schema-constrained) rather than calling a tool
    assert (first.outcome, first.steps, first.model) == ("answered", 1, "tiny-onnx-fp32")
    assert first.answer and first.usage.completion_tokens > 0
    # the same prompt again: the onnx backend kept its KV cache for the shared prefix
    assert second.usage.cached_prompt_tokens >= first.usage.prompt_tokens - 1


def test_a_llama_cpp_profile_opens_an_onnx_folder_on_onnx(home: Path, tiny_onnx: Path) -> None:
    from edge_agent.backends.onnx import OnnxBackend

    with open_runtime(settings_for(tiny_onnx, profile="tiny-llama")) as rt:
        assert isinstance(rt.backend, OnnxBackend) and rt.plan.profile.backend == "llama_cpp"


def test_the_router_reads_onnx_logprobs(home: Path, tiny_onnx: Path) -> None:
    with stand_in_teacher(("SystemStatus", {})) as teacher:
        remote = {"remote_url": teacher.url, "remote_model": teacher.model}
        with open_runtime(settings_for(tiny_onnx, **remote)) as rt:
            assert rt.router is not None
            agent = rt.agent("system", config=AgentConfig(max_tokens=48))
            result = agent.run("how warm is the CPU?")
        # uncalibrated, the router escalates only failures: this answer stays local
        assert result.routing is not None and result.routing.decision == "local"
        assert result.route == "local" and teacher.requests == []
    low = result.routing.signals.min_logprob
    assert low is not None and math.isfinite(low) and low <= 0.0  # the onnx backend's logprobs
    assert result.routing.signals.chosen_tokens > 0


def test_the_server_serves_the_onnx_runtime(runtime: Runtime) -> None:
    from edge_agent.server.app import create_app, serve_in_thread

    agents = {"system": lambda: runtime.agent("system")}
    app = create_app(runtime.shared_backend(), toolsets=agents, model_name=runtime.model_name)
    with serve_in_thread(app) as url:
        models = httpx.get(f"{url}/models").json()
        messages = [{"role": "user", "content": "how warm is the CPU?"}]
        chat = {"model": "tiny-onnx-fp32", "max_tokens": 8, "messages": messages}
        plain = httpx.post(f"{url}/chat/completions", json=chat, timeout=60)
        turn = httpx.post(f"{url}/chat/completions", json=chat | {"model": "edge-agent/system"})
    assert {"tiny-onnx-fp32", "edge-agent/system"} <= {m["id"] for m in models["data"]}
    assert plain.status_code == 200, plain.text
    assert 0 < plain.json()["usage"]["completion_tokens"] <= 8
    assert turn.status_code == 200, turn.text
    assert turn.json()["choices"][0]["message"]["content"]  # the agent's answer


def test_cli_run_on_an_onnx_profile(
    home: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "how warm is the CPU?", "--model", str(tiny_onnx), "--profile", "tiny-onnx"]
    main([*args, "--tools", "system", "--threads", "1", "--json"])  # exits only on failure
    data = json.loads(capsys.readouterr().out)
    assert (data["model"], data["outcome"]) == ("tiny-onnx-fp32", "answered")
    assert data["usage"]["completion_tokens"] > 0


def test_cli_profile_shows_the_onnx_plan(
    home: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["profile", "--json", "--model", str(tiny_onnx), "--profile", "tiny-onnx"])
    data = json.loads(capsys.readouterr().out)
    assert (data["backend"], data["model"], data["quantization"]) == (
        "onnx",
        "tiny-onnx-fp32",
        "ONNX_FP32",
    )


# --- the flywheel: an .onnx_adapter for devices that run ONNX ---------------------------------


def test_the_onnx_adapter_holds_the_gguf_adapters_numbers(
    tiny_lora: TinyLora, tiny_onnx: Path, tmp_path: Path
) -> None:
    from edge_agent.backends.onnx import OnnxBackend

    gguf = export_adapter(tiny_lora.directory, tiny_lora.base.gguf_path, tmp_path / "home.gguf")
    onnx = export_onnx_adapter(gguf, tiny_lora.base.gguf_path, tmp_path / "home.onnx_adapter")
    tokens = [296, 40, 41, 42, 43]
    with OnnxBackend(tiny_onnx, n_ctx=64, n_threads=1) as backend:
        bare = backend.token_logits(tokens)
        backend.load_adapter("onnx", onnx)
        backend.load_adapter("gguf", gguf)  # converted on load by the backend itself
        backend.use_adapter("onnx")
        with_onnx = backend.token_logits(tokens)
        backend.use_adapter("gguf")
        with_gguf = backend.token_logits(tokens)
    assert np.abs(with_onnx - bare).max() > 1e-3  # the adapter changes the model
    np.testing.assert_allclose(with_onnx, with_gguf, atol=1e-5)


def test_a_flywheel_turn_writes_the_onnx_adapter_next_to_the_gguf(
    tiny_lora: TinyLora, tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    from edge_agent.host import pipeline

    # Training is test_host_gate's to cover: here the "trained" adapter is tiny_lora.
    trained = TrainResult(tiny_lora.directory, steps=1, seconds=1.0, tokens=1, train_loss=0.0)
    monkeypatch.setattr(pipeline, "_train", lambda *args: (trained, 512))
    (tmp_path / "turn").mkdir()  # the real _train makes it
    base = tiny_lora.base.gguf_path
    # the incumbent is an adapter: the bare base's full tool list overflows the tiny context
    incumbent = export_adapter(tiny_lora.directory, base, tmp_path / "old.gguf")
    parts = {"train": load_split("train")[:2], "validation": [], "test": load_split("test")[:2]}
    result = run_turn(curate_split(parts), base, tmp_path / "turn", incumbent=incumbent,
                      progress=False, onnx_adapter=True)  # fmt: skip
    assert result.onnx_adapter == tmp_path / "turn" / "home.onnx_adapter"
    assert result.summary["onnx_adapter"] == str(result.onnx_adapter)
    gate = json.loads((tmp_path / "turn" / "gate.json").read_text())
    assert gate["turn"]["onnx_adapter"] == str(result.onnx_adapter)
    shapes = read_onnx_adapter(result.onnx_adapter)
    slots = json.loads((tiny_onnx / "edge_agent.json").read_text())["lora_slots"]
    check_fits(shapes, {k: tuple(v) for k, v in slots.items()}, result.onnx_adapter)
    assert len(shapes) == 2 * len(slots)  # an A and a B for every projection


def test_host_train_targets_onnx_when_a_profile_runs_it(home: Path) -> None:
    from edge_agent.cli.host import _targets_onnx

    assert _targets_onnx(("tiny-llama", "tiny-onnx"))
    assert not _targets_onnx(("tiny-llama", "generic-x86-64"))
    assert not _targets_onnx(())
