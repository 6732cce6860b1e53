"""The home's inventory: floors, areas, entities, timers and media, read from a fixtures file.

The file format is Home Assistant's intent-test fixtures (`tests/en/_fixtures.yaml`): entities
carry an `id` (`light.kitchen`) or a `domain`, an `area` by id, a `state` (or `{in, out}`:
spoken form and real value), and `attributes` (device_class, unit, ...). YAML or JSON.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from edge_agent.errors import InventoryError

HA_DATA = "data/home_assistant"
# libyaml where PyYAML was built with it: the same data ~7x faster (the vendored intents are
# read on every start); the pure-Python loader otherwise.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")  # hassil's optional part: "Trader Joe[']s"


class Floor(BaseModel):
    id: str
    name: str
    aliases: list[str] = Field(default_factory=list)


class Area(BaseModel):
    id: str
    name: str
    floor: str | None = None  # floor id
    aliases: list[str] = Field(default_factory=list)


class Entity(BaseModel):
    id: str  # entity_id, "<domain>.<object>"
    name: str
    aliases: list[str] = Field(default_factory=list)
    area: str | None = None  # area id
    device: str | None = None  # the name of its device ("Front Door Lock"), a name it answers to
    state: str = ""
    spoken_state: str | None = None  # how the state is said, when it differs ("normal" for off)
    attributes: dict[str, Any] = Field(default_factory=dict)
    # The simulation's own, no HA attributes: what a device remembers while off (a light's
    # brightness) and a media player's queue (`media_track` numbers its titles from 1).
    memory: dict[str, Any] = Field(default_factory=dict)
    playlist: list[str] = Field(default_factory=list)

    @property
    def domain(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def device_class(self) -> str | None:
        value = self.attributes.get("device_class")
        return str(value) if value is not None else None


class Timer(BaseModel):
    id: str
    name: str | None = None
    area: str | None = None  # area id
    start_hours: int = 0
    start_minutes: int = 0
    start_seconds: int = 0
    total_seconds_left: int = 0
    is_active: bool = True
    conversation_command: str | None = None  # stored, never executed by the simulation


class MediaItem(BaseModel):
    title: str
    media_class: str | None = None


class Inventory(BaseModel):
    """Everything the home knows about itself; the simulated home's live state overlays it."""

    floors: list[Floor] = Field(default_factory=list)
    areas: list[Area] = Field(default_factory=list)
    entities: list[Entity] = Field(default_factory=list)
    timers: list[Timer] = Field(default_factory=list)
    media: list[MediaItem] = Field(default_factory=list)

    @classmethod
    def default(cls) -> Inventory:
        """The fake home from Home Assistant's English intent tests (vendored)."""
        return load_inventory(vendored_path("tests_en/_fixtures.yaml"))

    def keep_words(self) -> set[str]:
        """Names in the home the anonymizer must keep: areas, floors, devices, media, timers.
        People (``person.*`` entities) are personal data and are left out on purpose."""
        names: set[str] = set()
        for area in self.areas:
            names.update([area.name, *area.aliases])
        for floor in self.floors:
            names.update([floor.name, *floor.aliases])
        for entity in self.entities:
            if entity.domain != "person":
                names.update([entity.name, *entity.aliases])
        names.update(m.title for m in self.media)
        names.update(t.name for t in self.timers if t.name)
        return names

    def area_by_id(self, area_id: str | None) -> Area | None:
        return next((a for a in self.areas if a.id == area_id), None)

    def floor_by_id(self, floor_id: str | None) -> Floor | None:
        return next((f for f in self.floors if f.id == floor_id), None)

    def area_name(self, area_id: str | None) -> str | None:
        area = self.area_by_id(area_id)
        return area.name if area else None

    def entity(self, entity_id: str) -> Entity | None:
        return next((e for e in self.entities if e.id == entity_id), None)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``, faster."""
    return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader


def vendored_path(relative: str) -> Path:
    return Path(str(resources.files("edge_agent").joinpath(HA_DATA, relative)))


def load_inventory(path: str | Path) -> Inventory:
    """Read a fixtures file (YAML or JSON) given by the user or vendored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InventoryError(f"cannot read inventory {path}: {exc}; fix or replace it") from exc
    if not isinstance(data, dict):
        raise InventoryError(f"inventory {path} must be a mapping with floors/areas/entities")
    return inventory_from_fixtures(data, source=str(path))


def inventory_from_fixtures(data: dict[str, Any], source: str = "fixtures") -> Inventory:
    try:
        return Inventory(
            floors=[_floor(f) for f in data.get("floors") or []],
            areas=[_area(a) for a in data.get("areas") or []],
            entities=_entities(data.get("entities") or []),
            timers=[_timer(i, t) for i, t in enumerate(data.get("timers") or [], 1)],
            media=[MediaItem.model_validate(m) for m in data.get("media") or []],
        )
    except (KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise InventoryError(f"inventory {source} is malformed: {exc!r}") from exc


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.casefold()).strip("_") or "unnamed"


def expand_name(template: str) -> tuple[str, list[str]]:
    """A hassil name template as (canonical name, aliases): optional parts left out, then in."""
    without = " ".join(_OPTIONAL.sub("", template).split())
    with_all = " ".join(_OPTIONAL.sub(r"\1", template).split())
    return without, [with_all] if with_all != without else []


def _floor(raw: dict[str, Any]) -> Floor:
    name = str(raw["name"])
    return Floor(id=str(raw.get("id") or slug(name)), name=name, aliases=raw.get("aliases") or [])


def _area(raw: dict[str, Any]) -> Area:
    name = str(raw["name"])
    return Area(
        id=str(raw.get("id") or slug(name)),
        name=name,
        floor=raw.get("floor"),
        aliases=raw.get("aliases") or [],
    )


def _entities(raws: list[dict[str, Any]]) -> list[Entity]:
    entities: list[Entity] = []
    seen: set[str] = set()
    for raw in raws:
        entity = _entity(raw)
        base, n = entity.id, 2
        while entity.id in seen:  # inline fixtures have no ids; same-named ones get a suffix
            entity.id, n = f"{base}_{n}", n + 1
        seen.add(entity.id)
        entities.append(entity)
    return entities


def _entity(raw: dict[str, Any]) -> Entity:
    name, aliases = expand_name(str(raw["name"]))
    entity_id = str(raw.get("id") or f"{raw['domain']}.{slug(name)}")
    state: Any = raw.get("state")
    spoken: Any = None
    if isinstance(state, dict):  # {in: what is said, out: the state value}
        state, spoken = state.get("out"), state.get("in")
    if state is None:
        state = raw.get("state_with_unit", "")
    device = raw.get("device")
    if isinstance(device, dict):  # {name: ...} as HA's device registry has it
        device = device.get("name")
    return Entity(
        id=entity_id,
        name=name,
        aliases=aliases + list(raw.get("aliases") or []),
        area=raw.get("area"),
        device=None if device is None else str(device),
        state=str(state),
        spoken_state=None if spoken is None else str(spoken),
        attributes=ha_attributes(entity_id.split(".", 1)[0], raw.get("attributes") or {}),
        playlist=[str(t) for t in raw.get("playlist") or []],
    )


def ha_attributes(domain: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Attributes in Home Assistant's units: the intent fixtures write a volume as a percentage
    ("50") and a cover's position as `position`; HA has `volume_level` 0..1 and
    `current_position`."""
    attributes = dict(raw)
    if domain in ("cover", "valve") and "position" in attributes:
        attributes["current_position"] = int(float(attributes.pop("position")))
    if domain == "media_player" and attributes.get("volume_level") is not None:
        level = float(attributes["volume_level"])
        attributes["volume_level"] = level / 100 if level > 1 else level
    return attributes


def _timer(index: int, raw: dict[str, Any]) -> Timer:
    fields = {k: v for k, v in raw.items() if k in Timer.model_fields and v not in ("", None)}
    fields.setdefault("id", f"timer_{index}")
    fields.setdefault("is_active", True)
    return Timer.model_validate(fields)
