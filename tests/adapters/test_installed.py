"""Installed adapters: the store and its state file, and the runtime that runs and swaps them."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from edge_agent.adapters.installed import InstalledAdapters
from edge_agent.adapters.release import AdapterRelease
from edge_agent.backends.base import GenerationRequest
from edge_agent.errors import AdapterError, AdapterMismatchError, InvalidAdapterError
from edge_agent.lora.gguf import export_lora_gguf
from edge_agent.models.gguf import BaseModelIdentity
from edge_agent.types import Message
from tests.tinymodel import TinyLora, TinyModel


@pytest.fixture(scope="module")
def lora_files(
    tiny_lora: TinyLora, identity: BaseModelIdentity, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """Three different adapter files for the tiny model (the same weights, other scales)."""
    folder = tmp_path_factory.mktemp("loras")
    return [
        export_lora_gguf(
            tiny_lora.state, alpha=tiny_lora.alpha * k, identity=identity, path=folder / f"{k}.gguf"
        )
        for k in (1, 2, 3)
    ]


def release(identity: BaseModelIdentity, version: int, skill: str = "demo") -> AdapterRelease:
    return AdapterRelease(
        name=f"{skill}-v{version}", skill=skill, version=version, base_identity=identity.as_dict()
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> InstalledAdapters:
    return InstalledAdapters(tmp_path / "adapters")


def install_active(store: InstalledAdapters, identity, files, *versions: int) -> None:
    for v in versions:
        store.install(release(identity, v), files[v - 1])
        store.activate(f"demo-v{v}")


# --- the store --------------------------------------------------------------------------------


def test_install_copies_the_file_and_keeps_it_across_restarts(store, identity, lora_files):
    entry = store.install(release(identity, 1), lora_files[0], sha256=sha256(lora_files[0]))
    assert entry.status == "candidate" and entry.sha256 == sha256(lora_files[0])
    copy = store.path_of(entry)
    assert copy.parent == store.store_dir and copy.read_bytes() == lora_files[0].read_bytes()
    again = InstalledAdapters(store.state_dir)  # a new process
    assert [a.name for a in again.listing()] == ["demo-v1"]
    assert again.verified_path(again.get("demo-v1")) == copy
    assert again.install(release(identity, 1), lora_files[0]).installed_at == entry.installed_at
    assert not list(store.state_dir.glob("*.tmp")) and not list(store.store_dir.glob(".*part"))


def test_a_hash_that_differs_from_the_signed_one_installs_nothing(store, identity, lora_files):
    with pytest.raises(InvalidAdapterError, match="sha256"):
        store.install(release(identity, 1), lora_files[0], sha256="0" * 64)
    assert store.listing() == []
    assert not store.store_dir.exists() or not any(store.store_dir.iterdir())


def test_a_file_for_another_base_than_its_release_says_is_refused(store, identity, lora_files):
    other = release(identity, 1).model_copy(
        update={"base_identity": identity.as_dict() | {"n_layer": 30}}
    )
    with pytest.raises(AdapterMismatchError):
        store.install(other, lora_files[0])
    assert store.listing() == []


def test_a_release_name_is_never_reused_for_another_file(store, identity, lora_files):
    store.install(release(identity, 1), lora_files[0])
    with pytest.raises(InvalidAdapterError, match="never be reused"):
        store.install(release(identity, 1), lora_files[1])


def test_a_damaged_store_file_is_caught_before_use(store, identity, lora_files):
    entry = store.install(release(identity, 1), lora_files[0])
    with store.path_of(entry).open("r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01" if f.read(1) == b"\x00" else b"\x00")
    with pytest.raises(InvalidAdapterError, match="no longer matches"):
        store.verified_path(entry)
    with pytest.raises(InvalidAdapterError):
        store.activate("demo-v1")
    assert store.active("demo") is None


# --- active, use, rollback --------------------------------------------------------------------


def test_activating_retires_the_previous_one_as_known_good(store, identity, lora_files):
    install_active(store, identity, lora_files, 1, 2)
    assert store.active("demo").name == "demo-v2"
    assert {a.name: a.status for a in store.history("demo")} == {
        "demo-v1": "known_good",
        "demo-v2": "active",
    }


def test_rollback_walks_back_through_known_good_to_the_shipped_baseline(
    store, identity, lora_files
):
    install_active(store, identity, lora_files, 1, 2, 3)
    store.use("demo", "demo-v1")  # v1 became active again last: it is the latest known good
    store.use("demo", "demo-v3")
    assert store.rollback("demo").name == "demo-v1"
    assert store.get("demo-v3").status == "rejected"
    assert store.rollback("demo").name == "demo-v2"
    assert store.rollback("demo") is None  # back to the shipped adapter (or none)
    with pytest.raises(AdapterError, match="nothing to roll back"):
        store.rollback("demo")
    assert [a.status for a in store.history("demo")] == ["rejected"] * 3


def test_a_rejected_adapter_is_used_only_when_forced(store, identity, lora_files):
    store.install(release(identity, 1), lora_files[0])
    store.reject("demo-v1", "canary exact match fell")
    with pytest.raises(AdapterError, match="--force"):
        store.use("demo", "demo-v1")
    assert store.use("demo", "demo-v1", force=True).status == "active"


def test_use_none_goes_back_to_the_shipped_adapter(store, identity, lora_files):
    install_active(store, identity, lora_files, 1)
    assert store.use("demo", None) is None
    assert store.active("demo") is None and store.get("demo-v1").status == "known_good"
    with pytest.raises(AdapterError, match="not other"):
        store.use("other", "demo-v1")


def test_rejecting_the_active_one_restores_the_last_known_good(store, identity, lora_files):
    install_active(store, identity, lora_files, 1, 2)
    store.reject("demo-v2", "valid calls fell")
    assert store.active("demo").name == "demo-v1"
    assert store.get("demo-v2").reason == "valid calls fell"


@pytest.mark.parametrize("damage", ["{not json", '{"format": 99, "adapters": []}', "[1, 2]"])
def test_a_corrupt_state_file_is_moved_aside_and_the_device_runs_on(
    store, identity, lora_files, damage
):
    install_active(store, identity, lora_files, 1)
    store.state_path.write_text(damage)
    fresh = InstalledAdapters(store.state_dir)
    assert fresh.active("demo") is None and fresh.listing() == []
    assert fresh.recovered is not None and fresh.recovered.read_text() == damage
    fresh.install(release(identity, 2), lora_files[1])  # and it writes a good state again
    data = json.loads(fresh.state_path.read_text())
    assert [a["release"]["name"] for a in data["adapters"]] == ["demo-v2"]


# --- the runtime: which adapter runs, and swaps -----------------------------------------------


@pytest.fixture
def runtime(tiny_model: TinyModel):
    from edge_agent.runtime import open_runtime
    from edge_agent.settings import load_settings

    settings = load_settings(model=str(tiny_model.gguf_path), threads=1, log_enabled=False)
    with open_runtime(settings) as rt:
        yield rt


def test_the_runtime_runs_the_installed_active_adapter(runtime, identity, lora_files):
    store = InstalledAdapters(runtime.settings.adapters_dir)
    assert runtime.use_skill_adapter("demo") is None  # nothing installed, nothing shipped
    install_active(store, identity, lora_files, 1)
    assert runtime.use_skill_adapter("demo") == "demo-v1"
    assert runtime.backend.active_adapter == "demo-v1"
    store.path_of(store.get("demo-v1")).write_bytes(b"damaged")
    runtime._loaded.clear()  # as after a restart
    assert runtime.use_skill_adapter("demo") is None  # a damaged file is skipped, not fatal


def test_a_swap_waits_for_the_generation_in_flight_and_the_next_one_uses_it(runtime, lora_files):
    runtime.swap_adapter("demo", lora_files[0])
    view = runtime.skill_backend("demo")
    request = GenerationRequest(messages=[Message(role="user", content="hi")], max_tokens=64)
    events: dict[str, float] = {}
    started = threading.Event()
    failures: list[BaseException] = []

    def generate() -> None:
        try:
            for i, _chunk in enumerate(view.generate(request)):
                started.set()
                if i < 20:
                    time.sleep(0.005)  # a slow client keeps the generation in flight
            events["generated"] = time.perf_counter()
        except BaseException as exc:
            failures.append(exc)
            started.set()

    thread = threading.Thread(target=generate)
    thread.start()
    assert started.wait(10)
    events["asked"] = time.perf_counter()
    assert runtime.swap_adapter("demo", lora_files[1]) == lora_files[1].stem
    events["swapped"] = time.perf_counter()
    thread.join(10)
    assert not failures
    assert events["asked"] < events["generated"] <= events["swapped"]
    assert view.complete(request).finish_reason in ("stop", "length")
    assert runtime.backend.active_adapter == lora_files[1].stem


def test_agents_follow_a_swap_and_each_skill_keeps_its_adapter(runtime, lora_files):
    from edge_agent.tools import Toolset
    from tests.demo_tools import set_light, unlock

    runtime.swap_adapter("demo", lora_files[0])
    runtime.swap_adapter("other", lora_files[1])
    agent = runtime.agent(Toolset("demo", [set_light, unlock]))
    assert agent.adapter == lora_files[0].stem  # a live swap holds for agents built later
    hi = GenerationRequest(messages=[Message(role="user", content="hi")], max_tokens=4)
    runtime.skill_backend("other").complete(hi)
    assert runtime.backend.active_adapter == lora_files[1].stem
    agent.backend.complete(hi)  # each generation switches to its skill's adapter first
    assert runtime.backend.active_adapter == lora_files[0].stem
    assert runtime.swap_adapter("demo", None) is None
    assert agent.adapter is None and runtime.adapter_of("other") == lora_files[1].stem


def test_swapping_to_an_unknown_name_changes_nothing(runtime, lora_files):
    runtime.swap_adapter("demo", lora_files[0])
    with pytest.raises(AdapterError, match="no adapter named"):
        runtime.swap_adapter("demo", "nope")
    assert runtime.adapter_of("demo") == lora_files[0].stem
