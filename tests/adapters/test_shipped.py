"""The adapter shipped in the package: pinned by hash, offered only for its skill and base."""

import json
import shutil
from pathlib import Path

import pytest

from edge_agent.adapters.shipped import ShippedAdapter, adapter_for, shipped_adapters
from edge_agent.errors import InvalidAdapterError
from edge_agent.models.gguf import BaseModelIdentity


def smollm2() -> BaseModelIdentity:
    return BaseModelIdentity(**shipped_adapters()[0].base_identity)


def test_the_home_adapter_ships_pinned_for_smollm2():
    home = adapter_for("home", smollm2())
    assert home is not None and home.path.exists()
    assert home.verified_path() == home.path


def test_not_offered_for_another_skill_or_base():
    other = BaseModelIdentity(**(shipped_adapters()[0].base_identity | {"n_layer": 2}))
    assert adapter_for("system", smollm2()) is None
    assert adapter_for("home", other) is None
    assert adapter_for("home", None) is None


def test_a_file_that_does_not_match_its_pin_is_refused(tmp_path):
    home = adapter_for("home", smollm2())
    copy = tmp_path / "a.gguf"
    shutil.copy(home.path, copy)
    with copy.open("r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    tampered = ShippedAdapter(home.name, home.skill, copy, home.sha256, home.base_identity)
    with pytest.raises(InvalidAdapterError, match="pinned sha256"):
        tampered.verified_path()


@pytest.mark.integration
def test_run_uses_the_adapter_for_home_commands():
    from edge_agent.runtime import open_runtime
    from edge_agent.settings import load_settings

    with open_runtime(load_settings(threads=1)) as rt:
        result = rt.agent("home").run("turn on the kitchen light")
    assert result.adapter == "home"
    assert result.tool_calls[0].call.name == "HassTurnOn"
    assert result.tool_calls[0].status == "ok" and result.answer.startswith("Turned on")


def test_write_shipped_pins_the_copy_by_its_hash(tmp_path: Path) -> None:
    from edge_agent.adapters.shipped import write_shipped

    source = tmp_path / "trained.gguf"
    source.write_bytes(b"GGUF adapter bytes")
    provenance = {"metrics": {"exact": 0.9}}
    dest = write_shipped(source, tmp_path / "pkg" / "home-x.gguf", name="home", skill="home",
                         base_identity={"n_layer": 2}, provenance=provenance)  # fmt: skip
    meta = json.loads(dest.with_suffix(".json").read_text())
    assert (meta["file"], meta["skill"], meta["metrics"]) == ("home-x.gguf", "home", {"exact": 0.9})
    pinned = ShippedAdapter("home", "home", dest, meta["sha256"], meta["base_identity"])
    assert pinned.verified_path() == dest
    dest.write_bytes(b"GGUF adapter bytes, changed")
    with pytest.raises(InvalidAdapterError, match="pinned sha256"):
        pinned.verified_path()
