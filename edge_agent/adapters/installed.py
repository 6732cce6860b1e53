"""Adapters installed on this device, per skill, and which one each skill runs.

One JSON state file (``state.json``, written atomically: temp file, fsync, ``os.replace``)
beside a store of the installed GGUFs. Each entry keeps the signed release, the file's
sha256 and a status::

    candidate ──canary passes──► active ──another becomes active──► known_good
        └──────canary fails────► rejected ◄──rolled back── active

At most one entry per skill is active; none active means the skill runs the adapter shipped
in the package (the baseline known good) or, without one, the bare base model. Rolling back
rejects the active entry and activates the known good one that was active most recently.
A damaged state file is moved aside (``state.json.corrupt-<time>``) and the device goes back
to its shipped adapters rather than stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from edge_agent.adapters.release import AdapterRelease
from edge_agent.errors import AdapterError, AdapterMismatchError, InvalidAdapterError
from edge_agent.lora.gguf import adapter_identity

log = logging.getLogger(__name__)

Status = Literal["candidate", "active", "known_good", "rejected"]
STATE_FORMAT = 1
_CHUNK = 1 << 20


class InstalledAdapter(BaseModel):
    """One installed release: where its file is, what it hashed to, how it fared."""

    release: AdapterRelease
    file: str  # the file's name in the store folder
    sha256: str
    size: int
    installed_at: float
    changed_at: float  # when the status last changed: orders the known good ones
    status: Status = "candidate"
    reason: str | None = None  # why it was rejected or rolled back
    canary: dict[str, Any] | None = None  # the canary's numbers, when one ran

    @property
    def name(self) -> str:
        return self.release.name

    @property
    def skill(self) -> str:
        return self.release.skill


class _State(BaseModel):
    format: int = STATE_FORMAT
    adapters: list[InstalledAdapter] = Field(default_factory=list)

    def find(self, name: str) -> InstalledAdapter | None:
        return next((a for a in self.adapters if a.name == name), None)

    def of(self, skill: str) -> list[InstalledAdapter]:
        return [a for a in self.adapters if a.skill == skill]

    def active(self, skill: str) -> InstalledAdapter | None:
        return next((a for a in self.of(skill) if a.status == "active"), None)


class InstalledAdapters:
    """The adapter store of one device: ``state_dir/state.json`` and ``state_dir/store/``.

    Safe to share between threads, and between processes (the CLI beside a running server):
    every change reads, edits and rewrites the state under a file lock.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.store_dir = self.state_dir / "store"
        self.state_path = self.state_dir / "state.json"
        self.recovered: Path | None = None  # where a damaged state file was moved, if one was
        self._lock = threading.Lock()

    # -- reading ----------------------------------------------------------------------------

    def active(self, skill: str) -> InstalledAdapter | None:
        """The installed adapter the skill runs; None: the shipped one (or none at all)."""
        return self._read().active(skill)

    def get(self, name: str) -> InstalledAdapter:
        found = self._read().find(name)
        if found is None:
            raise AdapterError(
                f"no adapter named {name!r} is installed; `edge-agent adapters list` shows them"
            )
        return found

    def history(self, skill: str) -> list[InstalledAdapter]:
        """The skill's installed adapters, oldest install first."""
        return sorted(self._read().of(skill), key=lambda a: a.installed_at)

    def listing(self) -> list[InstalledAdapter]:
        """Every installed adapter, by skill, then version."""
        return sorted(self._read().adapters, key=lambda a: (a.skill, a.release.version))

    def path_of(self, entry: InstalledAdapter) -> Path:
        return self.store_dir / entry.file

    def verified_path(self, entry: InstalledAdapter) -> Path:
        """The entry's file, after checking it still hashes to what was installed."""
        path = self.path_of(entry)
        try:
            actual = _sha256(path)
        except OSError as exc:
            raise InvalidAdapterError(
                f"the installed adapter {entry.name} cannot be read ({exc}); "
                f"`edge-agent adapters rollback {entry.skill}` goes back to the last known good"
            ) from exc
        if actual != entry.sha256:
            raise InvalidAdapterError(
                f"the installed adapter {entry.name} no longer matches its sha256 (damaged on "
                f"disk); `edge-agent adapters rollback {entry.skill}` goes back to the last "
                "known good, `edge-agent adapters pull` fetches it again"
            )
        return path

    # -- changing ---------------------------------------------------------------------------

    def install(
        self, release: AdapterRelease, path: Path, *, sha256: str | None = None
    ) -> InstalledAdapter:
        """Copy a verified download into the store as a candidate; returns its entry.

        ``sha256``: what the signed release says the file hashes to (checked when given). The
        copy is hashed again, so what the store holds is byte for byte what was verified.
        Installing the same release again returns the existing entry."""
        source_sha = _sha256(Path(path))
        if sha256 is not None and source_sha != sha256.lower():
            raise InvalidAdapterError(
                f"{path}: sha256 {source_sha} is not the {sha256} the release {release.name} "
                "was signed with; nothing installed, pull it again"
            )
        _require_release_base(Path(path), release)
        with self._changing() as state:
            existing = state.find(release.name)
            if existing is not None:
                return _same_file(existing, source_sha)
            entry = self._copy_in(release, Path(path), source_sha)
            state.adapters.append(entry)
            return entry

    def activate(
        self, name: str, *, canary: dict[str, Any] | None = None, force: bool = False
    ) -> InstalledAdapter:
        """Make ``name`` its skill's active adapter (the previous one becomes known good).
        A rejected adapter needs ``force``."""
        with self._changing() as state:
            entry = _find(state, name)
            if entry.status == "rejected" and not force:
                raise AdapterError(
                    f"{name} was rejected ({entry.reason}); pass --force to use it anyway"
                )
            self.verified_path(entry)
            _retire(state.active(entry.skill))
            _set(entry, "active", None)
            entry.canary = canary if canary is not None else entry.canary
            return entry.model_copy()

    def use(self, skill: str, name: str | None, *, force: bool = False) -> InstalledAdapter | None:
        """Run ``name`` for ``skill`` from now on; None (or the shipped adapter's name, which
        the caller maps to None): back to the shipped adapter."""
        if name is not None:
            entry = self.get(name)
            if entry.skill != skill:
                raise AdapterError(f"{name} is an adapter for {entry.skill}, not {skill}")
            return self.activate(name, force=force)
        with self._changing() as state:
            _retire(state.active(skill))
        return None

    def reject(
        self, name: str, reason: str, *, canary: dict[str, Any] | None = None
    ) -> InstalledAdapter:
        """Mark ``name`` rejected; if it was active, the skill falls back as ``rollback``."""
        with self._changing() as state:
            entry = _find(state, name)
            was_active = entry.status == "active"
            _set(entry, "rejected", reason)
            entry.canary = canary if canary is not None else entry.canary
            if was_active:
                _restore_known_good(state, entry.skill)
            return entry.model_copy()

    def rollback(self, skill: str, reason: str = "rolled back") -> InstalledAdapter | None:
        """Reject the skill's active adapter and go back to the last known good one; returns
        what is active now (None: the shipped adapter, or no adapter)."""
        with self._changing() as state:
            current = state.active(skill)
            if current is None:
                raise AdapterError(
                    f"nothing to roll back: {skill} already runs its shipped adapter "
                    "(or none); `edge-agent adapters list` shows what is installed"
                )
            _set(current, "rejected", reason)
            restored = _restore_known_good(state, skill)
            return restored.model_copy() if restored else None

    # -- state file -------------------------------------------------------------------------

    def _read(self) -> _State:
        with self._lock:
            return self._load()

    @contextlib.contextmanager
    def _changing(self) -> Iterator[_State]:
        """Read, edit and write the state under the thread lock and a file lock."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._lock, (self.state_dir / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                state = self._load()
                yield state
                self._save(state)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _load(self) -> _State:
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _State()
        try:
            state = _State.model_validate_json(text)
            if state.format != STATE_FORMAT:
                raise ValueError(f"format {state.format}, expected {STATE_FORMAT}")
            return state
        except (ValidationError, ValueError) as exc:
            return self._recover(exc)

    def _recover(self, exc: Exception) -> _State:
        aside = self.state_path.with_name(f"{self.state_path.name}.corrupt-{int(time.time())}")
        with contextlib.suppress(OSError):
            os.replace(self.state_path, aside)
            self.recovered = aside
        log.warning(
            "adapter state %s is damaged (%s); moved to %s, running the shipped adapters",
            self.state_path, str(exc)[:200], aside,
        )  # fmt: skip
        return _State()

    def _save(self, state: _State) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.write(json.dumps(state.model_dump(mode="json"), indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)  # a crash leaves the old state or the new, never half

    def _copy_in(self, release: AdapterRelease, path: Path, sha: str) -> InstalledAdapter:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        name = f"{release.skill}--{release.name}.gguf"
        tmp = self.store_dir / f".{name}.part"
        try:
            with path.open("rb") as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
                dst.flush()
                os.fsync(dst.fileno())
            if _sha256(tmp) != sha:
                raise InvalidAdapterError(
                    f"the copy of {release.name} in {self.store_dir} does not hash like its "
                    "download (disk trouble?); nothing installed, pull it again"
                )
            os.replace(tmp, self.store_dir / name)
        finally:
            tmp.unlink(missing_ok=True)
        now = time.time()
        size = (self.store_dir / name).stat().st_size
        return InstalledAdapter(
            release=release, file=name, sha256=sha, size=size, installed_at=now, changed_at=now
        )


def _find(state: _State, name: str) -> InstalledAdapter:
    entry = state.find(name)
    if entry is None:
        raise AdapterError(
            f"no adapter named {name!r} is installed; `edge-agent adapters list` shows them"
        )
    return entry


def _set(entry: InstalledAdapter, status: Status, reason: str | None) -> None:
    entry.status = status
    entry.reason = reason
    entry.changed_at = time.time()


def _retire(entry: InstalledAdapter | None) -> None:
    """The active adapter steps down: it worked, so it stays a known good one."""
    if entry is not None:
        _set(entry, "known_good", None)


def _restore_known_good(state: _State, skill: str) -> InstalledAdapter | None:
    good = [a for a in state.of(skill) if a.status == "known_good"]
    latest = max(good, key=lambda a: a.changed_at, default=None)
    if latest is not None:
        _set(latest, "active", None)
    return latest


def _same_file(existing: InstalledAdapter, sha: str) -> InstalledAdapter:
    if existing.sha256 != sha:
        raise InvalidAdapterError(
            f"another file is already installed as {existing.name}; a release name must "
            "never be reused: the host must publish it under a new name"
        )
    return existing.model_copy()


def _require_release_base(path: Path, release: AdapterRelease) -> None:
    """The file's own header must name the base the release claims (the GGUF is parsed by
    our bounded reader; llama.cpp never sees a file that fails here)."""
    found = adapter_identity(path).as_dict()
    if found != release.base_identity:
        raise AdapterMismatchError(
            f"{release.name}: the file was exported for another base model than its release "
            "says; nothing installed"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()
