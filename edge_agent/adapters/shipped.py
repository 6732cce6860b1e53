"""Adapters that ship inside the package, pinned by hash: what `run` uses out of the box.

Each ``data/adapters/NAME.json`` names its GGUF, the skill (toolset) it was trained for, the
base identity it belongs to and the file's sha256. An adapter is offered only for its skill
and its base; a file whose hash differs from the pin is refused, never loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from edge_agent.errors import InvalidAdapterError
from edge_agent.models.gguf import BaseModelIdentity


@dataclass(frozen=True)
class ShippedAdapter:
    name: str
    skill: str
    path: Path
    sha256: str
    base_identity: dict[str, Any]

    def fits(self, identity: BaseModelIdentity | None) -> bool:
        return identity is not None and identity.as_dict() == self.base_identity

    def verified_path(self) -> Path:
        actual = hashlib.sha256(self.path.read_bytes()).hexdigest()
        if actual != self.sha256:
            raise InvalidAdapterError(
                f"the shipped adapter {self.path.name} does not match its pinned sha256 "
                "(the installation is damaged); reinstall edge-agent"
            )
        return self.path


def shipped_adapters() -> list[ShippedAdapter]:
    folder = Path(str(files("edge_agent").joinpath("data/adapters")))
    found = []
    for meta_path in sorted(folder.glob("*.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        found.append(
            ShippedAdapter(
                name=meta["name"],
                skill=meta["skill"],
                path=folder / meta["file"],
                sha256=meta["sha256"],
                base_identity=meta["base_identity"],
            )
        )
    return found


def adapter_for(skill: str, identity: BaseModelIdentity | None) -> ShippedAdapter | None:
    """The shipped adapter trained for ``skill`` on this base model, if there is one."""
    return next((a for a in shipped_adapters() if a.skill == skill and a.fits(identity)), None)


def write_shipped(
    adapter: Path, dest: Path, *, name: str, skill: str, base_identity: dict[str, Any],
    provenance: dict[str, Any],
) -> Path:  # fmt: skip
    """Copy `adapter` to `dest` (in the package's data/adapters) with the JSON that pins it:
    what `shipped_adapters()` reads, plus how it was made (training, data, measured results)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(adapter.read_bytes())
    meta = provenance | {
        "name": name, "skill": skill, "file": dest.name, "base_identity": base_identity,
        "sha256": hashlib.sha256(dest.read_bytes()).hexdigest(),
    }  # fmt: skip
    dest.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return dest
