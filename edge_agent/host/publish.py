"""The host's TUF repository of adapters: publish signed releases, keep the metadata fresh.

Layout of the repository folder (served read-only under ``/tuf`` by ``edge-agent host serve``)::

    config.json                       expiries, where the root key lives
    keys/{root,targets,snapshot,timestamp}.pem   Ed25519 private keys, 0600 (folder 0700)
    metadata/root.json, N.root.json   the root of trust (devices get it at enrollment)
    metadata/N.targets.json           every adapter: length, sha256, custom.release = the
                                      AdapterRelease as a JSON string (canonical JSON has no
                                      floats)
    metadata/N.snapshot.json          versions + hashes of targets.json
    metadata/timestamp.json           version + hash of the snapshot, the host's signing time
    targets/adapters/<skill>/<sha256>.<name>.gguf
    targets/embedders/<name>/<sha256>.{embedder.json,model.onnx,tokenizer.json}
                                      the embedder releases' centroids came from;
                                      custom.embedder = its name

Consistent snapshots are on: metadata is written under new versioned names and
``timestamp.json`` is replaced last, so a device reading during a publish sees the old
repository or the new one, never a mix. One key per role, threshold 1. Expiries
(``Expiries``): timestamp 1 day, snapshot 7, targets 30, root 365; ``refresh()`` re-signs the
timestamp every time and a role whose expiry is less than half its lifetime away, so running
it hourly (``host serve`` does) keeps devices updating.

All four keys sit on the host by default. Whoever holds the targets key decides what devices
install, so it (and the root key) can live off the ingest host: ``move_keys_offline(dir)``
moves both to `dir` (a USB stick, another machine). The host then holds only the snapshot and
timestamp keys and refreshes those; it warns instead of renewing root or targets. Targets are
signed where the keys are, on a copy of the repository: ``AdapterRepository(copy,
key_dir=dir).publish(…)`` (or ``sign_targets()`` to renew them) writes ``N.targets.json`` and
the new files and stops there (no online keys on the copy). Once those are brought into the
host's folder, its next ``refresh()`` verifies ``N.targets.json`` against the root's targets
key and signs a snapshot and a timestamp over it; a file the targets key did not sign is
ignored.
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from edge_agent.adapters.release import AdapterRelease
from edge_agent.adapters.updater import (
    EMBEDDER_FILES,
    EMBEDDERS_PREFIX,
    SIGNED_AT,
    embedder_target,
    release_custom,
    release_from_custom,
    require_safe_embedder,
    require_safe_names,
)
from edge_agent.errors import (
    AdapterMismatchError,
    AdapterVerificationError,
    EdgeAgentError,
    PublishError,
)
from edge_agent.lora.gguf import adapter_identity
from edge_agent.routing.embed import MODEL_FILE, TOKENIZER_FILE, EmbedderSpec, sha256_file

__all__ = ["AdapterRepository", "Expiries"]

log = logging.getLogger(__name__)

DAY_S = 86400.0
ROLES = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
_S = TypeVar("_S", Root, Timestamp, Snapshot, Targets)


@dataclass(frozen=True)
class Expiries:
    """How long each role's signature holds, in seconds."""

    root: float = 365 * DAY_S
    targets: float = 30 * DAY_S
    snapshot: float = 7 * DAY_S
    timestamp: float = 1 * DAY_S


class AdapterRepository:
    """A TUF repository folder made by ``init``; every method takes the folder's lock."""

    def __init__(
        self,
        folder: Path,
        *,
        clock: Callable[[], float] = time.time,
        key_dir: Path | None = None,
    ) -> None:
        """`key_dir`: where the root and targets keys are this time (the offline machine's
        copy of the repository), instead of where config.json says."""
        self.folder = Path(folder)
        self.metadata_dir = self.folder / "metadata"
        self.targets_dir = self.folder / "targets"
        config = _read_config(self.folder)
        self.expiries = Expiries(**config["expiries"])
        online = self.folder / "keys"
        self.root_key_dir = Path(key_dir or config["root_key_dir"])
        self.targets_key_dir = Path(key_dir or config.get("targets_key_dir", online))
        self._clock = clock

    @classmethod
    def init(
        cls,
        folder: Path,
        *,
        expiries: Expiries | None = None,
        root_key_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> AdapterRepository:
        """Create keys and version-1 metadata for an empty repository at `folder`."""
        folder = Path(folder)
        if (folder / "config.json").exists():
            raise PublishError(f"{folder} already holds an adapter repository; open it instead")
        keys_dir = folder / "keys"
        root_dir = Path(root_key_dir) if root_key_dir else keys_dir
        for d in {keys_dir, root_dir}:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            d.chmod(0o700)
        signers = {role: CryptoSigner.generate_ed25519() for role in ROLES}
        for role, signer in signers.items():
            _write_key((root_dir if role == Root.type else keys_dir) / f"{role}.pem", signer)
        config = {"expiries": asdict(expiries or Expiries()), "root_key_dir": str(root_dir)}
        (folder / "metadata").mkdir(exist_ok=True)
        (folder / "targets").mkdir(exist_ok=True)
        _write_atomic(folder / "config.json", json.dumps(config, indent=2).encode())
        repo = cls(folder, clock=clock)
        repo._write_initial(signers)
        return repo

    @classmethod
    def open_or_init(cls, folder: Path, **options: Any) -> AdapterRepository:
        if (Path(folder) / "config.json").exists():
            return cls(folder, clock=options.get("clock", time.time))
        return cls.init(folder, **options)

    # --- what the host does -------------------------------------------------------------------

    def publish(self, adapter_file: Path, release: AdapterRelease) -> str:
        """Sign `adapter_file` as `release`'s target; returns its target path."""
        try:
            require_safe_names(release)
        except AdapterVerificationError as exc:
            raise PublishError(str(exc)) from exc
        _require_matching_file(Path(adapter_file), release)
        with self._locked():
            self._signer(Targets.type)  # no key here: refuse before storing anything
            targets = self._current(Targets)
            if release.target_path in targets.signed.targets:
                raise PublishError(
                    f"{release.target_path} is already published; publish it as a new version"
                )
            info = TargetFile.from_file(release.target_path, str(adapter_file), ["sha256"])
            info.unrecognized_fields["custom"] = release_custom(release)
            self._store_target(Path(adapter_file), info)
            targets.signed.targets[info.path] = info
            self._commit_targets(targets)
        return release.target_path

    def publish_embedder(self, folder: Path) -> list[str]:
        """Sign an exported embedder folder's files as ``embedders/<name>/…``; their target
        paths. The same name with the same files again changes nothing; another file under
        a published name is refused (export it under a new name)."""
        folder = Path(folder)
        name = _checked_embedder(folder)
        with self._locked():
            self._signer(Targets.type)
            targets = self._current(Targets)
            signed = targets.signed
            infos = {f: self._embedder_file(signed, folder, name, f) for f in EMBEDDER_FILES}
            new = {f: i for f, i in infos.items() if i.path not in signed.targets}
            for file, info in new.items():
                self._store_target(folder / file, info)
                signed.targets[info.path] = info
            if new:
                self._commit_targets(targets)
        return [i.path for i in infos.values()]

    def refresh(self) -> int:
        """Re-sign the timestamp (and any role near expiry), snapshot targets signed on
        another machine; returns the timestamp's version."""
        with self._locked():
            self._renew_root_if_due()
            targets, snapshot = self._current(Targets), self._current(Snapshot)
            if self._due(targets.signed, self.expiries.targets) and self._key_or_warn(targets):
                return self._commit_targets(targets)
            if targets.signed.version != snapshot.signed.meta[f"{Targets.type}.json"].version:
                return self._commit_snapshot(snapshot, self._targets_meta(targets))
            if self._due(snapshot.signed, self.expiries.snapshot):
                return self._commit_snapshot(snapshot)
            return self._commit_timestamp(snapshot)

    def sign_targets(self) -> int:
        """Re-sign targets with a fresh expiry (and root, if due) where their keys are: the
        offline machine's copy. Returns the new targets version."""
        with self._locked():
            self._renew_root_if_due()
            targets = self._current(Targets)
            self._commit_targets(targets)
            return targets.signed.version

    def move_keys_offline(self, dest: Path) -> list[Path]:
        """Move the root and targets keys to `dest`: from now on this host signs snapshots and
        timestamps only. Returns the keys' new paths."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        dest.chmod(0o700)
        with self._locked():
            moves = [
                (self._key_path(role), dest / f"{role}.pem") for role in (Root.type, Targets.type)
            ]
            for source, target in moves:  # all checked before any is moved
                if not source.exists():
                    raise PublishError(f"there is no key at {source}; nothing was moved")
                if target.exists() and not target.samefile(source):
                    raise PublishError(f"{target} holds a key already; nothing was moved")
            moved = [_move_key(source, target) for source, target in moves]
            config = _read_config(self.folder)
            config |= {"root_key_dir": str(dest), "targets_key_dir": str(dest)}
            _write_atomic(self.folder / "config.json", json.dumps(config, indent=2).encode())
        self.root_key_dir = self.targets_key_dir = dest
        return moved

    def holds_online_keys(self) -> bool:
        """Whether this folder can sign snapshots and timestamps (the ingest host's can; an
        offline machine's copy cannot: what it signs waits for the host's refresh)."""
        return self._key_path(Snapshot.type).exists()

    def refresh_every(self, interval_s: float, stop: threading.Event) -> None:
        """`refresh()` every `interval_s` until `stop` is set (a failure is logged, not fatal)."""
        while not stop.wait(interval_s):
            try:
                self.refresh()
            except Exception:
                log.exception("re-signing the adapter repository failed; retrying later")

    def trusted_root(self) -> dict[str, Any]:
        """The root metadata devices must trust (what enrollment hands them)."""
        return dict(json.loads((self.metadata_dir / "root.json").read_bytes()))

    def releases(self) -> list[AdapterRelease]:
        """Every published release, by skill and version."""
        targets = self._current(Targets).signed.targets.values()
        found = [
            release_from_custom(t.custom)
            for t in targets
            if not t.path.startswith(EMBEDDERS_PREFIX)
        ]
        return sorted(found, key=lambda r: (r.skill, r.version))

    def latest(self, skill: str) -> AdapterRelease | None:
        """The skill's newest published release, or None."""
        found = [r for r in self.releases() if r.skill == skill]
        return found[-1] if found else None

    def adapter_file(self, release: AdapterRelease) -> Path:
        """Where this folder keeps a release's adapter (its name prefixed by its hash)."""
        info = self._current(Targets).signed.targets.get(release.target_path)
        if info is None:
            raise PublishError(f"{release.name} is not published in {self.folder}")
        return self.targets_dir / info.get_prefixed_paths()[0]

    def next_version(self, skill: str) -> int:
        return max((r.version for r in self.releases() if r.skill == skill), default=0) + 1

    def versions(self) -> dict[str, int]:
        """The current version of each top-level role."""
        targets, snapshot = self._current(Targets), self._current(Snapshot)
        return {
            Root.type: self._current(Root).signed.version,
            Targets.type: targets.signed.version,
            Snapshot.type: snapshot.signed.version,
            Timestamp.type: self._current(Timestamp).signed.version,
        }

    def _embedder_file(self, signed: Targets, folder: Path, name: str, file: str) -> TargetFile:
        """The target for one file; PublishError if the name already holds another file."""
        info = TargetFile.from_file(embedder_target(name, file), str(folder / file), ["sha256"])
        info.unrecognized_fields["custom"] = {"embedder": name}
        known = signed.targets.get(info.path)
        if known is not None and (known.length, known.hashes) != (info.length, info.hashes):
            raise PublishError(
                f"{info.path} is already published with other content; an embedder's files "
                "never change under its name: export it under a new name and publish that"
            )
        return info

    # --- signing and writing ------------------------------------------------------------------

    def _write_initial(self, signers: dict[str, CryptoSigner]) -> None:
        root = Root(expires=self._expiry(self.expiries.root), consistent_snapshot=True)
        for role, signer in signers.items():
            root.add_key(signer.public_key, role)
        root_md = Metadata(root)
        self._sign_and_write(root_md, signers[Root.type])
        with self._locked():
            targets = Metadata(Targets(expires=self._expiry(self.expiries.targets)))
            targets.signed.version = 0  # the commit below makes it version 1
            snapshot = Metadata(Snapshot(expires=self._expiry(self.expiries.snapshot)))
            snapshot.signed.version = 0
            self._commit_targets(targets, snapshot)

    def _commit_targets(self, targets: Metadata[Targets], snapshot: Any = None) -> int:
        signer = self._signer(Targets.type)  # before any change: the key may be offline
        targets.signed.version += 1
        targets.signed.expires = self._expiry(self.expiries.targets)
        meta = self._sign_and_write(targets, signer)
        if not self.holds_online_keys():  # signed offline: the host's refresh snapshots it
            return targets.signed.version
        return self._commit_snapshot(snapshot or self._current(Snapshot), meta)

    def _commit_snapshot(self, snapshot: Metadata[Snapshot], targets: Any = None) -> int:
        if targets is not None:
            snapshot.signed.meta[f"{Targets.type}.json"] = targets
        snapshot.signed.version += 1
        snapshot.signed.expires = self._expiry(self.expiries.snapshot)
        meta = self._sign_and_write(snapshot, self._signer(Snapshot.type))
        return self._commit_timestamp_to(meta)

    def _commit_timestamp(self, snapshot: Metadata[Snapshot]) -> int:
        data = (self.metadata_dir / f"{snapshot.signed.version}.snapshot.json").read_bytes()
        return self._commit_timestamp_to(_meta_file(snapshot.signed.version, data))

    def _commit_timestamp_to(self, snapshot_meta: MetaFile) -> int:
        path = self.metadata_dir / "timestamp.json"
        version = Metadata[Timestamp].from_file(str(path)).signed.version if path.exists() else 0
        now = self._clock()
        timestamp = Timestamp(
            version=version + 1,
            expires=self._expiry(self.expiries.timestamp),
            snapshot_meta=snapshot_meta,
            unrecognized_fields={SIGNED_AT: datetime.fromtimestamp(now, UTC).isoformat()},
        )
        self._sign_and_write(Metadata(timestamp), self._signer(Timestamp.type))
        return timestamp.version

    def _sign_and_write(self, md: Metadata[Any], signer: CryptoSigner) -> MetaFile:
        """Sign and write under the names consistent snapshots need; timestamp.json last."""
        md.sign(signer)  # replaces the old signatures
        data = md.to_bytes(JSONSerializer(compact=False))
        role, version = md.signed.type, md.signed.version
        if role == Timestamp.type:
            _write_atomic(self.metadata_dir / "timestamp.json", data)
        else:
            _write_atomic(self.metadata_dir / f"{version}.{role}.json", data)
        if role == Root.type:
            _write_atomic(self.metadata_dir / "root.json", data)
        return _meta_file(version, data)

    def _renew_root_if_due(self) -> None:
        root = self._current(Root)
        if not self._due(root.signed, self.expiries.root):
            return
        key = self.root_key_dir / f"{Root.type}.pem"
        if not key.exists():
            log.warning(
                "root.json expires %s and the root key is not at %s: plug it in and run "
                "`edge-agent host serve` (or refresh) before then",
                root.signed.expires,
                key,
            )
            return
        root.signed.version += 1
        root.signed.expires = self._expiry(self.expiries.root)
        self._sign_and_write(root, _read_key(key))

    def _store_target(self, source: Path, info: TargetFile) -> None:
        dest = self.targets_dir / info.get_prefixed_paths()[0]
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)

    def _current(self, role: type[_S]) -> Metadata[_S]:
        """The newest signed metadata of `role`, followed from timestamp.json; for targets, a
        newer one signed elsewhere (by the root's targets key) that awaits its snapshot."""
        if role is Timestamp or role is Root:
            name = f"{role.type}.json"
        else:
            timestamp = self._current(Timestamp).signed
            version = timestamp.snapshot_meta.version
            if role is Targets:
                version = self._current(Snapshot).signed.meta[f"{Targets.type}.json"].version
                staged = self._staged_targets(version)
                if staged is not None:
                    return staged  # type: ignore[return-value]  # _S is Targets here
            name = f"{version}.{role.type}.json"
        try:
            return Metadata[_S].from_file(str(self.metadata_dir / name))
        except (OSError, ValueError) as exc:
            raise PublishError(
                f"{self.metadata_dir / name}: cannot be read ({exc}); restore the repository "
                "from a backup"
            ) from exc

    def _staged_targets(self, known: int) -> Metadata[Targets] | None:
        """The newest ``N.targets.json`` above version `known` that the targets key signed."""
        root = Metadata[Root].from_file(str(self.metadata_dir / "root.json"))
        names = (p.name for p in self.metadata_dir.glob("*.targets.json"))
        versions = sorted(int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit())
        for version in reversed([v for v in versions if v > known]):
            path = self.metadata_dir / f"{version}.{Targets.type}.json"
            try:
                md = Metadata[Targets].from_file(str(path))
                root.verify_delegate(Targets.type, md)
            except (OSError, ValueError, RepositoryError) as exc:
                log.warning("ignoring %s: not signed by this repository's targets key (%s)",
                            path, exc)  # fmt: skip
                continue
            if md.signed.version == version:
                return md
        return None

    def _targets_meta(self, targets: Metadata[Targets]) -> MetaFile:
        version = targets.signed.version
        return _meta_file(version, (self.metadata_dir / f"{version}.targets.json").read_bytes())

    def _key_or_warn(self, targets: Metadata[Targets]) -> bool:
        """Whether the targets key is here to renew `targets`; if not, say where to do it."""
        if self._key_path(Targets.type).exists():
            return True
        log.warning(
            "targets.json expires %s and the targets key is not at %s: re-sign it where the "
            "key is (`edge-agent host sign-targets --repo COPY --keys DIR`) and bring the new "
            "N.targets.json here before then",
            targets.signed.expires,
            self._key_path(Targets.type),
        )
        return False

    def _key_path(self, role: str) -> Path:
        folder = {Root.type: self.root_key_dir, Targets.type: self.targets_key_dir}
        return folder.get(role, self.folder / "keys") / f"{role}.pem"

    def _signer(self, role: str) -> CryptoSigner:
        path = self._key_path(role)
        if role == Targets.type and not path.exists():
            raise PublishError(
                f"the targets key is not at {path} (kept offline?): sign on the machine that "
                "holds it, with a copy of this repository: `edge-agent host publish … --repo "
                "COPY --keys DIR`, then bring the new files here"
            )
        return _read_key(path)

    def _expiry(self, seconds: float) -> datetime:
        return datetime.fromtimestamp(self._clock() + seconds, UTC)

    def _due(self, signed: Signed, lifetime_s: float) -> bool:
        return signed.expires.timestamp() - self._clock() < lifetime_s / 2

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time across processes (a publish and the serve loop's refresh)."""
        with (self.folder / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((folder / "config.json").read_text()))
    except FileNotFoundError as exc:
        raise PublishError(
            f"{folder} is not an adapter repository: `edge-agent host serve` creates one"
        ) from exc
    except (OSError, ValueError) as exc:
        raise PublishError(f"{folder / 'config.json'} is damaged ({exc})") from exc


def _require_matching_file(path: Path, release: AdapterRelease) -> None:
    """Only a LoRA adapter GGUF whose header names the release's base may be published."""
    found = adapter_identity(path).as_dict()  # InvalidAdapterError if it is not one
    if found != release.base_identity:
        raise AdapterMismatchError(
            f"{path}: its header names base {found}, the release says {release.base_identity}; "
            "publish it with the identity its header carries"
        )


def _checked_embedder(folder: Path) -> str:
    """The embedder's name, once its folder is whole: the spec reads, the files match it."""
    try:
        spec = EmbedderSpec.read(folder)
        require_safe_embedder(spec.name)
    except EdgeAgentError as exc:
        raise PublishError(f"{folder} cannot be published as an embedder: {exc}") from exc
    expected = {MODEL_FILE: spec.sha256, TOKENIZER_FILE: spec.tokenizer_sha256}
    for file, digest in expected.items():
        path = folder / file
        if not path.is_file() or (digest is not None and sha256_file(path) != digest):
            raise PublishError(
                f"{path} is missing or does not match the sha256 in embedder.json: "
                "re-export it with `edge-agent host embedder export`"
            )
    return spec.name


def _move_key(source: Path, target: Path) -> Path:
    if not target.exists():  # else it is the same file (checked by the caller)
        _write_key_bytes(target, source.read_bytes())
        source.unlink()
    return target


def _write_key(path: Path, signer: CryptoSigner) -> None:
    _write_key_bytes(path, signer.private_bytes)


def _write_key_bytes(path: Path, pem: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never over a key
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())


def _read_key(path: Path) -> CryptoSigner:
    try:
        return CryptoSigner(load_pem_private_key(path.read_bytes(), None))
    except (OSError, ValueError) as exc:
        raise PublishError(f"{path}: cannot load the signing key ({exc})") from exc


def _meta_file(version: int, data: bytes) -> MetaFile:
    return MetaFile(version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
