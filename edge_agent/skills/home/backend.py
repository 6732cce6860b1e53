"""The contract between the `home` toolset and a home, and how a call's target is resolved.

`HomeBackend` is deliberately shaped like Home Assistant's own REST API: the states of the
entities (`inventory`), `call_service(domain, service, entity_ids, data)` (`POST
/api/services/<domain>/<service>`), media search, and the voice timers an Assist satellite keeps
itself. `SimulatedHome` implements it over a JSON state file; a backend for a real Home
Assistant (REST, with the area/floor registries read once) or MQTT implements the same six
methods and inherits target resolution.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from pydantic import BaseModel, Field

from edge_agent.errors import HomeTargetError
from edge_agent.skills.home.inventory import Area, Entity, Inventory, MediaItem, Timer

_MAX_LISTED = 12  # names listed back to the model when nothing matches


class Target(BaseModel):
    """What a call names: Home Assistant's `name`/`area`/`floor`/`domain`/`device_class` slots."""

    name: str | None = None
    area: str | None = None
    floor: str | None = None
    domain: list[str] = Field(default_factory=list)
    device_class: list[str] = Field(default_factory=list)


class HomeBackend(ABC):
    """A home the `home` toolset can read and act on."""

    @property
    @abstractmethod
    def inventory(self) -> Inventory:
        """Floors, areas and entities with their current state."""

    @abstractmethod
    def call_service(
        self, domain: str, service: str, entity_ids: list[str], data: dict[str, Any] | None = None
    ) -> list[Entity]:
        """Run a service (`light.turn_on`, `lock.unlock`, ...) on entities; their new states."""

    @abstractmethod
    def search_media(self, query: str, media_class: str | None = None) -> MediaItem | None:
        """The best media item for a search, or None."""

    @abstractmethod
    def timers(self) -> list[Timer]:
        """The voice timers, running and paused."""

    @abstractmethod
    def put_timer(self, timer: Timer) -> Timer:
        """Add a timer or replace the one with the same id."""

    @abstractmethod
    def remove_timer(self, timer_id: str) -> None:
        """Forget a timer (cancelled or finished)."""

    def resolve(self, target: Target, speaker_area: str | None = None) -> list[Entity]:
        """The entities a call means; raises `HomeTargetError` (told to the model) if none."""
        return resolve(self.inventory, target, speaker_area)


def fold(text: str) -> str:
    """Names compare case-insensitively and ignore extra whitespace, as Home Assistant does."""
    return " ".join(text.split()).casefold()


def find_area(inventory: Inventory, name: str) -> Area:
    wanted = fold(name)
    for area in inventory.areas:
        if wanted in {fold(area.name), fold(area.id), *map(fold, area.aliases)}:
            return area
    known = ", ".join(a.name for a in inventory.areas[:_MAX_LISTED]) or "none"
    raise HomeTargetError(f"no area named {name!r}; areas: {known}")


def areas_on_floor(inventory: Inventory, name: str) -> set[str]:
    wanted = fold(name)
    for floor in inventory.floors:
        if wanted in {fold(floor.name), fold(floor.id), *map(fold, floor.aliases)}:
            return {a.id for a in inventory.areas if a.floor == floor.id}
    known = ", ".join(f.name for f in inventory.floors[:_MAX_LISTED]) or "none"
    raise HomeTargetError(f"no floor named {name!r}; floors: {known}")


def has_name(entity: Entity, name: str) -> bool:
    """Its name, entity id, an alias, or its device's name ("Front Door Lock")."""
    wanted = fold(name)
    names = {fold(entity.name), fold(entity.id), *map(fold, entity.aliases)}
    return wanted in names or (entity.device is not None and wanted == fold(entity.device))


# A name said with its kind ("front door lock" for the lock "Front Door"): the word -> domain.
_KIND_SUFFIX = {
    "lock": "lock", "light": "light", "lights": "light", "lamp": "light", "fan": "fan",
    "switch": "switch", "valve": "valve", "vacuum": "vacuum", "thermostat": "climate",
    "blind": "cover", "blinds": "cover", "curtain": "cover", "curtains": "cover",
    "shade": "cover", "shades": "cover", "cover": "cover", "tv": "media_player",
    "speaker": "media_player",
}  # fmt: skip


def resolve(inventory: Inventory, target: Target, speaker_area: str | None = None) -> list[Entity]:
    """Home Assistant's matching (`intent.async_match_states`): every given constraint holds;
    name "all" is no name; a name is an entity's name, id, alias or its device's name; an area
    by name, id or alias; domain and device class.

    Where we differ from HA 2024.1.6, on purpose: floors (HA 2024.4+); device names and a name
    said with its kind ("front door lock") match; a name several entities share gives them all
    (2024.1.6 takes the first it finds; the toolset asks which one, as 2024.6+ does). Without
    an area or floor, the speaker's area breaks ties (several candidates, some of them in the
    speaker's area), as a satellite's area does in Home Assistant.
    """
    found = _filter(inventory, target) or _filter_by_kind_suffix(inventory, target)
    if not target.area and not target.floor and speaker_area and len(found) > 1:
        here = {a.id for a in inventory.areas if fold(a.name) == fold(speaker_area)}
        found = [e for e in found if e.area in here] or found
    if not found:
        raise HomeTargetError(_nothing_matches(inventory, target))
    return found


def _filter(inventory: Inventory, target: Target) -> list[Entity]:
    domains = {d.casefold() for d in target.domain}
    classes = {c.casefold() for c in target.device_class}
    name = None if target.name is None or fold(target.name) == "all" else target.name
    area_ids: set[str] | None = None
    if target.area:
        area_ids = {find_area(inventory, target.area).id}
    if target.floor:
        on_floor = areas_on_floor(inventory, target.floor)
        area_ids = on_floor if area_ids is None else area_ids & on_floor
    return [
        e
        for e in inventory.entities
        if (not domains or e.domain in domains)
        and (not classes or (e.device_class or "").casefold() in classes)
        and (name is None or has_name(e, name))
        and (area_ids is None or e.area in area_ids)
    ]


def _filter_by_kind_suffix(inventory: Inventory, target: Target) -> list[Entity]:
    """The entities `target` means when its name ends in their kind and nothing has the name."""
    words = fold(target.name or "").split()
    domain = _KIND_SUFFIX.get(words[-1]) if len(words) > 1 else None
    if domain is None or (target.domain and domain not in target.domain):
        return []
    rest = " ".join(words[:-1])
    return _filter(inventory, target.model_copy(update={"name": rest, "domain": [domain]}))


def _nothing_matches(inventory: Inventory, target: Target) -> str:
    asked = ", ".join(f"{k}={v!r}" for k, v in target.model_dump(exclude_defaults=True).items())
    pool = _filter(inventory, Target(domain=target.domain))
    if not pool:
        return f"nothing matches {asked}: the home has no {' or '.join(target.domain)} entities"
    names = sorted({e.name for e in pool})
    listed = ", ".join(names[:_MAX_LISTED]) + (", ..." if len(names) > _MAX_LISTED else "")
    return f"nothing in the home matches {asked or 'the request'}; candidates: {listed}"
