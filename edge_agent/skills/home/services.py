"""What each Home Assistant service does to an entity's state and attributes (HA 2024.1.6).

Read from HA's own code: the service layers that convert the data (`light.turn_on` turns
`brightness_pct` into `brightness` 0-255 and a colour name into RGB, shown as hue/saturation at
full value on an HS light; brightness 0 is off), the entity base classes that derive the state
(a cover or valve is `closed` at position 0, a fan `off` at 0 %, a to-do list's state counts
open items; a light shows no brightness or colour while off). What an integration chooses is
chosen as HA's demo platforms or common devices do, and is what the conformance test's
virtual devices do: a fan turned on without a speed runs at its own `on_percentage` (the demo:
67 %), a player's next/previous walks its playlist round, `turn_on` leaves it `idle`. What a
device remembers while off (a light's brightness and colour) is kept in the entity's `memory`,
which is no HA attribute.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from typing import Any

from edge_agent.errors import HomeTargetError, ToolArgumentsError
from edge_agent.skills.home.inventory import Entity

Effect = Callable[[Entity, dict[str, Any]], None]

FAN_ON_PERCENTAGE = 67  # HA's demo fan: turned on without a speed (3 speeds, the middle one)
LIGHT_ON_BRIGHTNESS = 180  # HA's demo light: brightness before anything set it
# The colour names people say, as CSS defines them (HA's colour table is CSS's, plus a few).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0), "green": (0, 128, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
    "orange": (255, 165, 0), "purple": (128, 0, 128), "pink": (255, 192, 203),
    "white": (255, 255, 255), "cyan": (0, 255, 255), "magenta": (255, 0, 255),
    "violet": (238, 130, 238), "brown": (165, 42, 42), "gold": (255, 215, 0),
    "lime": (0, 255, 0), "teal": (0, 128, 128), "indigo": (75, 0, 130),
    "turquoise": (64, 224, 208), "lavender": (230, 230, 250), "coral": (255, 127, 80),
    "crimson": (220, 20, 60), "salmon": (250, 128, 114), "navy": (0, 0, 128),
    "aqua": (0, 255, 255), "maroon": (128, 0, 0), "olive": (128, 128, 0),
    "silver": (192, 192, 192), "gray": (128, 128, 128), "grey": (128, 128, 128),
    "black": (0, 0, 0), "beige": (245, 245, 220), "ivory": (255, 255, 240),
}  # fmt: skip
_LIGHT_ON_ONLY = ("brightness", "hs_color", "rgb_color")  # None while off, as HA shows them
_COLOR_MODES = ("hs", "rgb", "rgbw", "rgbww", "xy")


def _set_state(value: str) -> Effect:
    def effect(entity: Entity, data: dict[str, Any]) -> None:
        entity.state = value

    return effect


def _keep(entity: Entity, data: dict[str, Any]) -> None:
    """Scenes and scripts run; their own state does not change."""


# --- lights -----------------------------------------------------------------------------------


def rgb_of(color: str) -> tuple[int, int, int]:
    """A colour name as RGB (HA's `color_name_to_rgb`); unknown names are the caller's error."""
    rgb = COLORS.get(color.replace(" ", "").casefold())
    if rgb is None:
        raise ToolArgumentsError(f"unknown colour {color!r}; known: {', '.join(sorted(COLORS))}")
    return rgb


def _light_on(entity: Entity, data: dict[str, Any]) -> None:
    brightness = data.get("brightness")
    if data.get("brightness_pct") is not None:
        brightness = round(255 * float(data["brightness_pct"]) / 100)
    if brightness is not None and int(brightness) == 0:  # HA: brightness 0 is turn_off
        _light_off(entity, {})
        return
    memory = entity.memory
    for key in _LIGHT_ON_ONLY:  # what it shows now is what it remembers
        if entity.attributes.get(key) is not None:
            memory[key] = entity.attributes[key]
    if brightness is not None:
        memory["brightness"] = int(brightness)
    rgb = data.get("rgb_color")
    if data.get("color_name") is not None:
        rgb = rgb_of(str(data["color_name"]))
    mode = _color_mode(entity, wants_color=rgb is not None)
    if rgb is not None:
        _remember_color(memory, mode, tuple(int(c) for c in rgb))
    entity.state = "on"
    entity.attributes["brightness"] = memory.setdefault("brightness", LIGHT_ON_BRIGHTNESS)
    entity.attributes["color_mode"] = mode
    for key in ("hs_color", "rgb_color"):
        if key in memory:
            entity.attributes[key] = list(memory[key])


def _color_mode(entity: Entity, wants_color: bool) -> str:
    """The light's mode (its only supported one, as HA's single-mode lights); a colour asked of
    a light without one is refused, as HA's HassLightSet fails that entity."""
    modes = list(entity.attributes.get("supported_color_modes") or [])
    coloured = [m for m in modes if m in _COLOR_MODES]
    if wants_color and modes and not coloured:
        raise HomeTargetError(f"{entity.name} cannot change colour")
    if coloured:
        return str(coloured[0])
    if modes:
        return str(modes[0])
    return "rgb" if wants_color or "rgb_color" in entity.memory else "brightness"


def _remember_color(memory: dict[str, Any], mode: str, rgb: tuple[int, ...]) -> None:
    """An HS light keeps hue and saturation and shows them at full value (HA's conversions)."""
    if mode == "hs":
        hue, sat, _ = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
        memory["hs_color"] = [round(hue * 360, 3), round(sat * 100, 3)]
        memory["rgb_color"] = hs_to_rgb(memory["hs_color"])
    else:
        memory["rgb_color"] = list(rgb)


def hs_to_rgb(hs: list[float]) -> list[int]:
    """HA's `color_hs_to_RGB`: hue 0-360 and saturation 0-100 at full value."""
    return [int(c * 255) for c in colorsys.hsv_to_rgb(hs[0] / 360, hs[1] / 100, 1.0)]  # truncated


def _light_off(entity: Entity, data: dict[str, Any]) -> None:
    for key in (*_LIGHT_ON_ONLY, "color_mode", "xy_color"):
        if key in entity.attributes:
            if entity.attributes[key] is not None and key in _LIGHT_ON_ONLY:
                entity.memory[key] = entity.attributes[key]
            entity.attributes[key] = None
    entity.state = "off"


# --- fans -------------------------------------------------------------------------------------


def _fan_percentage(entity: Entity, data: dict[str, Any]) -> None:
    percentage = int(data["percentage"])
    entity.attributes["percentage"] = percentage
    entity.state = "on" if percentage > 0 else "off"


def _fan_on(entity: Entity, data: dict[str, Any]) -> None:
    """Without a speed, the device's own ("on_percentage" in its memory; HA's demo: 67)."""
    percentage = data.get("percentage")
    if percentage is None:
        percentage = entity.memory.get("on_percentage", FAN_ON_PERCENTAGE)
    _fan_percentage(entity, {"percentage": percentage})


def _fan_off(entity: Entity, data: dict[str, Any]) -> None:
    _fan_percentage(entity, {"percentage": 0})


# --- covers and valves: the state follows the position ----------------------------------------


def _position(entity: Entity, data: dict[str, Any]) -> None:
    position = int(data["position"])
    if not 0 <= position <= 100:
        raise ToolArgumentsError(f"position {position} is not between 0 and 100")
    entity.attributes["current_position"] = position
    entity.state = "closed" if position == 0 else "open"


def _moved_to(position: int, state: str) -> Effect:
    """Open or close; a cover or valve that reports its position reports the new one."""

    def effect(entity: Entity, data: dict[str, Any]) -> None:
        if "current_position" in entity.attributes:
            entity.attributes["current_position"] = position
        entity.state = state

    return effect


# --- climate ----------------------------------------------------------------------------------


def _climate_temperature(entity: Entity, data: dict[str, Any]) -> None:
    entity.attributes["temperature"] = float(data["temperature"])
    if data.get("hvac_mode"):
        _hvac_mode(entity, {"hvac_mode": data["hvac_mode"]})


def _hvac_mode(entity: Entity, data: dict[str, Any]) -> None:
    mode = str(data["hvac_mode"])
    modes = entity.attributes.get("hvac_modes")
    if modes and mode not in modes:
        raise HomeTargetError(f"{entity.name} has no mode {mode!r}; modes: {', '.join(modes)}")
    if entity.state not in ("off", ""):
        entity.memory["hvac_mode"] = entity.state
    entity.state = mode


def _climate_on(entity: Entity, data: dict[str, Any]) -> None:
    """Back to the mode it had before it was turned off (heat when it never had one)."""
    _hvac_mode(entity, {"hvac_mode": entity.memory.get("hvac_mode", "heat")})


def _climate_off(entity: Entity, data: dict[str, Any]) -> None:
    _hvac_mode(entity, {"hvac_mode": "off"})


# --- media players ----------------------------------------------------------------------------


def _volume(entity: Entity, data: dict[str, Any]) -> None:
    level = float(data["volume_level"])
    if not 0.0 <= level <= 1.0:  # HA's schema: a fraction of the maximum
        raise ToolArgumentsError(f"volume_level {level} is not between 0 and 1")
    entity.attributes["volume_level"] = level


def _track(step: int) -> Effect:
    """Next (+1) or previous (-1) title of the playlist, round it as a queue on repeat."""

    def effect(entity: Entity, data: dict[str, Any]) -> None:
        playlist, attributes = entity.playlist, entity.attributes
        if not playlist:  # nothing queued: only the track number moves
            attributes["media_track"] = max(1, int(attributes.get("media_track") or 1) + step)
            return
        now = entity.memory.get("track")
        if now is None:
            title = attributes.get("media_title")
            now = playlist.index(title) if title in playlist else 0
        now = (int(now) + step) % len(playlist)
        entity.memory["track"] = now
        attributes["media_title"] = playlist[now]
        for key, value in (("media_content_id", playlist[now]), ("media_track", now + 1)):
            if key in attributes:
                attributes[key] = value

    return effect


def _play_media(entity: Entity, data: dict[str, Any]) -> None:
    entity.attributes["media_title"] = data.get("media_content_id")
    entity.attributes["media_content_id"] = data.get("media_content_id")
    entity.attributes["media_content_type"] = data.get("media_content_type", "music")
    entity.state = "playing"


def _mute(entity: Entity, data: dict[str, Any]) -> None:
    entity.attributes["is_volume_muted"] = bool(data["is_volume_muted"])


# --- to-do lists: the state is the number of items still to do --------------------------------


def _count(entity: Entity) -> None:
    items = entity.attributes.get("items", [])
    entity.state = str(sum(i["status"] == "needs_action" for i in items))


def _add_item(entity: Entity, data: dict[str, Any]) -> None:
    items = entity.attributes.setdefault("items", [])
    items.append({"summary": str(data["item"]), "status": "needs_action"})
    _count(entity)


def _update_item(entity: Entity, data: dict[str, Any]) -> None:
    wanted = " ".join(str(data["item"]).split()).casefold()
    items = entity.attributes.get("items", [])
    match = next((i for i in items if " ".join(i["summary"].split()).casefold() == wanted), None)
    if match is None:
        raise HomeTargetError(f"{entity.name} has no item {data['item']!r}")
    match["status"] = data.get("status", "completed")
    if data.get("rename"):
        match["summary"] = str(data["rename"])
    _count(entity)


def _remove_item(entity: Entity, data: dict[str, Any]) -> None:
    wanted = {" ".join(str(i).split()).casefold() for i in _listed(data["item"])}
    items = entity.attributes.get("items", [])
    entity.attributes["items"] = [
        i for i in items if " ".join(i["summary"].split()).casefold() not in wanted
    ]
    _count(entity)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


_SWITCHES = ("switch", "input_boolean")
SERVICES: dict[tuple[str, str], Effect] = {
    **{(d, "turn_on"): _set_state("on") for d in _SWITCHES},
    **{(d, "turn_off"): _set_state("off") for d in _SWITCHES},
    ("light", "turn_on"): _light_on,
    ("light", "turn_off"): _light_off,
    ("fan", "turn_on"): _fan_on,
    ("fan", "turn_off"): _fan_off,
    ("fan", "set_percentage"): _fan_percentage,
    ("cover", "open_cover"): _moved_to(100, "open"),
    ("cover", "close_cover"): _moved_to(0, "closed"),
    ("cover", "set_cover_position"): _position,
    ("valve", "open_valve"): _moved_to(100, "open"),
    ("valve", "close_valve"): _moved_to(0, "closed"),
    ("valve", "set_valve_position"): _position,
    ("lock", "lock"): _set_state("locked"),
    ("lock", "unlock"): _set_state("unlocked"),
    ("climate", "turn_on"): _climate_on,
    ("climate", "turn_off"): _climate_off,
    ("climate", "set_temperature"): _climate_temperature,
    ("climate", "set_hvac_mode"): _hvac_mode,
    ("scene", "turn_on"): _keep,
    ("script", "turn_on"): _keep,
    ("media_player", "turn_on"): _set_state("idle"),  # on, nothing playing
    ("media_player", "turn_off"): _set_state("off"),
    ("media_player", "media_play"): _set_state("playing"),
    ("media_player", "media_pause"): _set_state("paused"),
    ("media_player", "media_stop"): _set_state("idle"),
    ("media_player", "media_next_track"): _track(+1),
    ("media_player", "media_previous_track"): _track(-1),
    ("media_player", "volume_set"): _volume,
    ("media_player", "volume_mute"): _mute,
    ("media_player", "play_media"): _play_media,
    ("vacuum", "start"): _set_state("cleaning"),
    ("vacuum", "pause"): _set_state("paused"),
    ("vacuum", "stop"): _set_state("idle"),
    ("vacuum", "return_to_base"): _set_state("returning"),
    ("todo", "add_item"): _add_item,
    ("todo", "update_item"): _update_item,
    ("todo", "remove_item"): _remove_item,
}


def apply(entity: Entity, service: str, data: dict[str, Any]) -> None:
    """Run `<entity's domain>.<service>` with `data` on the entity, in place."""
    effect = SERVICES.get((entity.domain, service))
    if effect is None:
        raise HomeTargetError(f"{entity.domain} entities do not support {service!r}")
    effect(entity, data)
