"""A simulated home: the inventory plus a JSON state file that service calls really change,
as Home Assistant's services change a real home's (services.py; tests/homeassistant's
conformance test holds it to HA 2024.1.6).

The state file holds only what changes (each entity's state, attributes and memory, the
timers) keyed by entity id, so editing the inventory later keeps the live state of the
entities it still has. It is written from the inventory on first use; delete it to reset the home.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge_agent.errors import HomeTargetError, InventoryError
from edge_agent.skills.home.backend import HomeBackend, fold
from edge_agent.skills.home.inventory import Entity, Inventory, MediaItem, Timer
from edge_agent.skills.home.services import SERVICES, apply

STATE_VERSION = 1
SHOPPING_LIST = Entity(id="todo.shopping_list", name="Shopping List", state="0")


class SimulatedHome(HomeBackend):
    """Acts on an in-memory copy of the inventory and persists it to `state_path` if given."""

    def __init__(self, inventory: Inventory | None = None, state_path: str | Path | None = None):
        self._home = (inventory or Inventory.default()).model_copy(deep=True)
        if not any(
            e.domain == "todo" and fold(e.name) == "shopping list" for e in self._home.entities
        ):
            self._home.entities.append(SHOPPING_LIST.model_copy(deep=True))
        self._path = Path(state_path) if state_path else None
        self._lock = threading.RLock()  # tool handlers run in worker threads
        if self._path and self._path.exists():
            self._load(self._path)
        else:
            self._save()

    @property
    def inventory(self) -> Inventory:
        return self._home

    @property
    def state_path(self) -> Path | None:
        return self._path

    def call_service(
        self, domain: str, service: str, entity_ids: list[str], data: dict[str, Any] | None = None
    ) -> list[Entity]:
        if (domain, service) not in SERVICES:
            raise HomeTargetError(f"{domain} entities do not support {service!r}")
        with self._lock:
            changed = [self._apply(domain, service, eid, data or {}) for eid in entity_ids]
            self._save()
        return changed

    def search_media(self, query: str, media_class: str | None = None) -> MediaItem | None:
        wanted = fold(query)
        for item in self._home.media:
            if fold(item.title) == wanted and (
                media_class is None or item.media_class in (None, media_class)
            ):
                return item
        return None

    def timers(self) -> list[Timer]:
        return list(self._home.timers)

    def put_timer(self, timer: Timer) -> Timer:
        with self._lock:
            self._home.timers = [t for t in self._home.timers if t.id != timer.id] + [timer]
            self._save()
        return timer

    def remove_timer(self, timer_id: str) -> None:
        with self._lock:
            self._home.timers = [t for t in self._home.timers if t.id != timer_id]
            self._save()

    def _apply(self, domain: str, service: str, entity_id: str, data: dict[str, Any]) -> Entity:
        entity = self._home.entity(entity_id)
        if entity is None or entity.domain != domain:
            raise HomeTargetError(f"no {domain} entity {entity_id!r} in the home")
        changed = entity.model_copy(deep=True)  # a failed call leaves the entity as it was
        apply(changed, service, data)
        entity.state, entity.attributes, entity.memory = (
            changed.state,
            changed.attributes,
            changed.memory,
        )
        return changed.model_copy(deep=True)

    def _load(self, path: Path) -> None:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            for entity_id, live in saved.get("entities", {}).items():
                entity = self._home.entity(entity_id)
                if entity is not None:  # entities gone from the inventory are dropped
                    entity.state = str(live["state"])
                    entity.attributes = dict(live["attributes"])
                    entity.memory = dict(live.get("memory") or {})
            self._home.timers = [Timer.model_validate(t) for t in saved.get("timers", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise InventoryError(
                f"home state file {path} is unreadable ({exc!r}); delete it to reset the home"
            ) from exc

    def _save(self) -> None:
        if self._path is None:
            return
        state = {
            "version": STATE_VERSION,
            "entities": {
                e.id: {"state": e.state, "attributes": e.attributes, "memory": e.memory}
                for e in self._home.entities
            },
            "timers": [t.model_dump() for t in self._home.timers],
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh file each time, 0600 from birth: the home's state (locks, presence) is no
        # other user's business; the unique name keeps two processes off each other's file.
        tmp = self._path.with_name(f"{self._path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(state, indent=1, ensure_ascii=False))
            os.replace(tmp, self._path)  # atomic: a crash never leaves half a state file
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
