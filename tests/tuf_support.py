"""An attacker's tools for the TUF tests: forge, re-sign and replay a repository's metadata,
with keys of its own or keys stolen from the host."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from edge_agent.host.publish import AdapterRepository


def stolen(repo: AdapterRepository, role: str) -> CryptoSigner:
    """The host's own key for `role`, as an attacker who broke into the host has it."""
    pem = (repo.folder / "keys" / f"{role}.pem").read_bytes()
    return CryptoSigner(load_pem_private_key(pem, None))


def own_key() -> CryptoSigner:
    return CryptoSigner.generate_ed25519()


def timestamp(repo: AdapterRepository) -> Metadata[Timestamp]:
    return Metadata[Timestamp].from_file(str(repo.metadata_dir / "timestamp.json"))


def snapshot(repo: AdapterRepository) -> Metadata[Snapshot]:
    version = timestamp(repo).signed.snapshot_meta.version
    return Metadata[Snapshot].from_file(str(repo.metadata_dir / f"{version}.snapshot.json"))


def targets(repo: AdapterRepository) -> Metadata[Targets]:
    version = snapshot(repo).signed.meta["targets.json"].version
    return Metadata[Targets].from_file(str(repo.metadata_dir / f"{version}.targets.json"))


def write(repo: AdapterRepository, md: Metadata[Any], key: CryptoSigner) -> MetaFile:
    """Sign `md` with `key` and put it where a device looks for it."""
    md.sign(key)
    data = md.to_bytes(JSONSerializer(compact=False))
    role = md.signed.type
    name = "timestamp.json" if role == "timestamp" else f"{md.signed.version}.{role}.json"
    (repo.metadata_dir / name).write_bytes(data)
    return MetaFile(md.signed.version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def forge_chain(
    repo: AdapterRepository,
    change_targets: Callable[[Targets], None],
    *,
    targets_key: CryptoSigner,
) -> None:
    """New targets (changed by `change_targets`, signed with `targets_key`), then snapshot and
    timestamp signed with the host's stolen online keys: everything but the targets key."""
    md = targets(repo)
    md.signed.version += 1
    change_targets(md.signed)
    snap = snapshot(repo)
    snap.signed.version += 1
    snap.signed.meta["targets.json"] = write(repo, md, targets_key)
    stamp = timestamp(repo)
    stamp.signed.version += 1
    stamp.signed.snapshot_meta = write(repo, snap, stolen(repo, "snapshot"))
    write(repo, stamp, stolen(repo, "timestamp"))


def target_file(repo: AdapterRepository, name: str) -> Path:
    """The hash-prefixed file the host serves for release `name`."""
    (found,) = repo.targets_dir.rglob(f"*.{name}.gguf")
    return found
