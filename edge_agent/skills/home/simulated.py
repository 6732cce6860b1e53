"""A simulated home: the inventory plus a JSON state file that service calls really change.

The state file holds only what changes (each entity's state and attributes, the timers) keyed by
entity id, so editing the inventory later keeps the live state of the entities it still has.
It is written from the inventory on first use; delete it to reset the home.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge_agent.errors import HomeTargetError, InventoryError
from edge_agent.skills.home.backend import HomeBackend, fold
from edge_agent.skills.home.inventory import Entity, Inventory, MediaItem, Timer

STATE_VERSION = 1
SHOPPING_LIST = Entity(id="todo.shopping_list", name="Shopping List", state="0")

# (domain, service) -> the state afterwards; None keeps it. What is absent is unsupported.
_STATE_AFTER: dict[tuple[str, str], str | None] = {
    **{(d, "turn_on"): "on" for d in ("light", "switch", "fan", "input_boolean", "media_player")},
    **{(d, "turn_off"): "off" for d in ("light", "switch", "fan", "input_boolean", "media_player")},
    ("climate", "turn_on"): "heat",
    ("climate", "turn_off"): "off",
    ("climate", "set_temperature"): None,
    ("cover", "open_cover"): "open",
    ("cover", "close_cover"): "closed",
    ("cover", "set_cover_position"): None,
    ("valve", "open_valve"): "open",
    ("valve", "close_valve"): "closed",
    ("valve", "set_valve_position"): None,
    ("lock", "lock"): "locked",
    ("lock", "unlock"): "unlocked",
    ("scene", "turn_on"): None,
    ("script", "turn_on"): None,
    ("media_player", "media_pause"): "paused",
    ("media_player", "media_play"): "playing",
    ("media_player", "media_next_track"): "playing",
    ("media_player", "media_previous_track"): "playing",
    ("media_player", "volume_set"): None,
    ("media_player", "play_media"): "playing",
    ("vacuum", "start"): "cleaning",
    ("vacuum", "return_to_base"): "returning",
    ("todo", "add_item"): None,
    ("todo", "update_item"): None,
}
# service data copied into attributes as is (the fixtures' 0-100 conventions)
_PLAIN_DATA = ("brightness_pct", "color_name", "temperature", "volume_level", "media_class")


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
        if (domain, service) not in _STATE_AFTER:
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
        for key in _PLAIN_DATA:
            if key in data:
                entity.attributes[key] = data[key]
        special = _SPECIAL.get(service)
        if special:
            special(entity, data)
        new_state = _STATE_AFTER[(domain, service)]
        if new_state is not None:
            entity.state = new_state
        return entity.model_copy(deep=True)

    def _load(self, path: Path) -> None:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            for entity_id, live in saved.get("entities", {}).items():
                entity = self._home.entity(entity_id)
                if entity is not None:  # entities gone from the inventory are dropped
                    entity.state = str(live["state"])
                    entity.attributes = dict(live["attributes"])
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
                e.id: {"state": e.state, "attributes": e.attributes} for e in self._home.entities
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


def _set_position(entity: Entity, data: dict[str, Any]) -> None:
    position = int(data["position"])
    entity.attributes["position"] = position
    entity.state = "open" if position > 0 else "closed"


def _play_media(entity: Entity, data: dict[str, Any]) -> None:
    entity.attributes["media_title"] = data.get("media_content_id")


def _add_item(entity: Entity, data: dict[str, Any]) -> None:
    items = entity.attributes.setdefault("items", [])
    items.append({"summary": str(data["item"]), "status": "needs_action"})
    entity.state = str(sum(i["status"] == "needs_action" for i in items))


def _update_item(entity: Entity, data: dict[str, Any]) -> None:
    items = entity.attributes.get("items", [])
    match = next((i for i in items if fold(i["summary"]) == fold(str(data["item"]))), None)
    if match is None:
        raise HomeTargetError(f"{entity.name} has no item {data['item']!r}")
    match["status"] = data.get("status", "completed")
    entity.state = str(sum(i["status"] == "needs_action" for i in items))


_SPECIAL: dict[str, Callable[[Entity, dict[str, Any]], None]] = {
    "set_cover_position": _set_position,
    "set_valve_position": _set_position,
    "play_media": _play_media,
    "add_item": _add_item,
    "update_item": _update_item,
}
