"""The ``home`` toolset: one tool per Home Assistant intent, acting on a `HomeBackend`.

Tool names are intent names and argument names are slot names (from the vendored
`intents.yaml`, in its order), so a call can be scored against the HA test sentences directly.
Types narrow what HA defines: percentages are integers 0-100, durations non-negative integers,
domain / device_class / state / media_class enums of Home Assistant's values. The effect of a
call depends on what it resolves to: turning on or off a lock, a valve, an alarm or a garage
door, gate or door cover is dangerous.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edge_agent.errors import HomeTargetError
from edge_agent.skills.home.backend import HomeBackend
from edge_agent.skills.home.dataset import intent_definitions
from edge_agent.skills.home.intents import (
    DANGEROUS_COVERS,
    DANGEROUS_DOMAINS,
    HomeIntents,
    is_dangerous,
)
from edge_agent.skills.home.inventory import Inventory
from edge_agent.skills.home.retrieve import context_block
from edge_agent.skills.home.simulated import SimulatedHome
from edge_agent.tools import Grounding, Tool, Toolset
from edge_agent.types import Effect

PROMPT = (
    "You control a smart home. Call the one tool that does what the user asks. Use the names "
    "of devices, areas and floors as the home lists them. When a device command names no "
    "area, use the speaker's area."
)

DOMAINS = [
    "light", "switch", "fan", "cover", "lock", "valve", "climate", "media_player", "vacuum",
    "scene", "script", "input_boolean", "binary_sensor", "sensor", "person", "weather", "todo",
]  # fmt: skip
COVER_CLASSES = [
    "awning", "blind", "curtain", "damper", "door", "garage", "gate", "shade", "shutter", "window",
]  # fmt: skip
BINARY_SENSOR_CLASSES = [
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
    "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
    "tamper", "update", "vibration", "window",
]  # fmt: skip
SENSOR_CLASSES = [
    "apparent_power", "aqi", "area", "atmospheric_pressure", "battery", "carbon_dioxide",
    "carbon_monoxide", "conductivity", "current", "data_rate", "data_size", "date", "distance",
    "duration", "energy", "energy_distance", "energy_storage", "frequency", "gas", "humidity",
    "illuminance", "irradiance", "moisture", "monetary", "nitrogen_dioxide", "nitrogen_monoxide",
    "nitrous_oxide", "ozone", "ph", "pm1", "pm10", "pm25", "power", "power_factor",
    "precipitation", "precipitation_intensity", "pressure", "reactive_energy", "reactive_power",
    "signal_strength", "sound_pressure", "speed", "sulphur_dioxide", "temperature", "timestamp",
    "volatile_organic_compounds", "volatile_organic_compounds_parts", "voltage", "volume",
    "volume_flow_rate", "volume_storage", "water", "weight", "wind_direction", "wind_speed",
]  # fmt: skip
SWITCHED_CLASSES = ["outlet", "switch", "tv", "speaker", "receiver", "water", "gas"]
STATES = [
    "on", "off", "open", "closed", "opening", "closing", "locked", "unlocked", "locking",
    "unlocking", "jammed", "home", "not_home", "playing", "paused", "idle",
]  # fmt: skip
MEDIA_CLASSES = [
    "album", "app", "artist", "channel", "composer", "contributing_artist", "directory",
    "episode", "game", "genre", "image", "movie", "music", "playlist", "podcast", "season",
    "track", "tv_show", "url", "video",
]  # fmt: skip

_PERCENT = {"type": "integer", "minimum": 0, "maximum": 100}
_COUNT = {"type": "integer", "minimum": 0}
_SLOT_TYPES: dict[str, dict[str, Any]] = {
    "brightness": _PERCENT,
    "position": _PERCENT,
    "volume_level": _PERCENT,
    "temperature": {"type": "number"},
    **{k: _COUNT for k in ("hours", "minutes", "seconds")},
    **{f"start_{k}": _COUNT for k in ("hours", "minutes", "seconds")},
    "domain": {"type": "string", "enum": DOMAINS},
    "state": {"type": "string", "enum": STATES},
    "media_class": {"type": "string", "enum": MEDIA_CLASSES},
}
_ALL_CLASSES = sorted({*COVER_CLASSES, *BINARY_SENSOR_CLASSES, *SENSOR_CLASSES, *SWITCHED_CLASSES})
_ACTION_CLASSES = sorted({*COVER_CLASSES, *SWITCHED_CLASSES})
_ON_OFF = ("HassTurnOn", "HassTurnOff", "HassSetPosition")
_READ_ONLY = {
    "HassGetState", "HassClimateGetTemperature", "HassGetWeather", "HassGetCurrentDate",
    "HassGetCurrentTime", "HassTimerStatus", "HassNevermind", "HassRespond",
}  # fmt: skip


def parameters(intent: str) -> dict[str, Any]:
    """The JSON schema of an intent's slots, in intents.yaml order."""
    slots: dict[str, Any] = intent_definitions()[intent].get("slots") or {}
    props = {}
    for slot, info in slots.items():
        prop = dict(_SLOT_TYPES.get(slot, {"type": "string"}))
        if slot == "device_class":
            prop = {
                "type": "string",
                "enum": _ACTION_CLASSES if intent in _ON_OFF else _ALL_CLASSES,
            }
        props[slot] = prop | {"description": info.get("description", slot)}
    required = [s for s, info in slots.items() if info.get("required")]
    return {"type": "object", "properties": props, "required": required}


def handlers(intents: HomeIntents) -> dict[str, Callable[..., Any]]:
    """Intent name -> handler; every intent of intents.yaml has one."""
    i = intents
    return {
        "HassTurnOn": i.turn_on, "HassTurnOff": i.turn_off, "HassGetState": i.get_state,
        "HassNevermind": i.nevermind, "HassRespond": i.respond, "HassBroadcast": i.broadcast,
        "HassSetPosition": i.set_position, "HassGetCurrentDate": i.current_date,
        "HassGetCurrentTime": i.current_time, "HassLightSet": i.light_set,
        "HassClimateSetTemperature": i.set_temperature,
        "HassClimateGetTemperature": i.get_temperature,
        "HassShoppingListAddItem": i.shopping_add,
        "HassShoppingListCompleteItem": i.shopping_complete, "HassGetWeather": i.get_weather,
        "HassListAddItem": i.list_add, "HassListCompleteItem": i.list_complete,
        "HassVacuumStart": i.vacuum_start, "HassVacuumReturnToBase": i.vacuum_return,
        "HassMediaPause": i.media("media_pause"), "HassMediaUnpause": i.media("media_play"),
        "HassMediaNext": i.media("media_next_track"),
        "HassMediaPrevious": i.media("media_previous_track"), "HassSetVolume": i.set_volume,
        "HassMediaSearchAndPlay": i.search_and_play, "HassStartTimer": i.start_timer,
        "HassCancelAllTimers": i.cancel_all_timers, "HassCancelTimer": i.cancel_timer,
        "HassIncreaseTimer": i.increase_timer, "HassDecreaseTimer": i.decrease_timer,
        "HassPauseTimer": i.pause_timer, "HassUnpauseTimer": i.unpause_timer,
        "HassTimerStatus": i.timer_status,
    }  # fmt: skip


def effect_rule(
    intent: str, intents: HomeIntents
) -> Effect | Callable[[Mapping[str, Any]], Effect]:
    if intent in _READ_ONLY:
        return Effect.READ_ONLY
    if intent not in _ON_OFF:
        return Effect.ACTUATING
    return lambda args: call_effect(intents, args)


def call_effect(intents: HomeIntents, args: Mapping[str, Any]) -> Effect:
    """Dangerous if anything the call resolves to is; by the arguments when nothing resolves."""
    try:
        entities = intents.resolve(dict(args))
    except HomeTargetError:  # the call will fail; judge what it asked for
        named = {str(args.get("domain")), str(args.get("device_class"))}
        risky = named & (DANGEROUS_DOMAINS | DANGEROUS_COVERS)
        return Effect.DANGEROUS if risky else Effect.ACTUATING
    return Effect.DANGEROUS if any(map(is_dangerous, entities)) else Effect.ACTUATING


# What a request must say for an actuating call to count as asked for (policy.grounded):
# one of the verbs, and every word of the name / area / floor it targets.
_VERBS: dict[str, tuple[str, ...]] = {
    "HassTurnOn": ("turn", "on", "switch", "open", "start", "lock", "activate", "enable", "raise"),
    "HassTurnOff": ("turn", "off", "switch", "close", "shut", "stop", "unlock", "disable", "lower"),
    "HassLightSet": ("set", "make", "change", "turn", "dim", "brighten", "brightness", "color"),
    "HassSetPosition": ("set", "open", "close", "position", "raise", "lower", "move"),
    "HassClimateSetTemperature": ("set", "temperature", "degrees", "thermostat", "heat", "cool"),
    "HassStartTimer": ("timer", "set", "start", "remind", "countdown"),
    "HassCancelTimer": ("cancel", "stop", "timer", "delete", "remove"),
    "HassCancelAllTimers": ("cancel", "stop", "timer", "delete", "remove"),
    "HassIncreaseTimer": ("add", "increase", "extend", "more", "timer"),
    "HassDecreaseTimer": ("remove", "decrease", "subtract", "less", "take", "timer"),
    "HassPauseTimer": ("pause", "hold", "freeze", "timer"),
    "HassUnpauseTimer": ("resume", "unpause", "continue", "restart", "timer"),
    "HassMediaPause": ("pause", "stop", "hold"),
    "HassMediaUnpause": ("resume", "unpause", "continue", "play"),
    "HassMediaNext": ("next", "skip", "forward"),
    "HassMediaPrevious": ("previous", "back", "last", "replay", "prior"),
    "HassSetVolume": ("volume", "set", "louder", "quieter", "turn", "loud", "quiet"),
    "HassMediaSearchAndPlay": ("play", "put", "start", "listen", "watch"),
    "HassShoppingListAddItem": ("add", "put", "buy", "need", "list"),
    "HassListAddItem": ("add", "put", "buy", "need", "list"),
    "HassShoppingListCompleteItem": ("complete", "check", "remove", "done", "cross", "bought"),
    "HassListCompleteItem": ("complete", "check", "remove", "done", "cross", "bought"),
    "HassVacuumStart": ("start", "vacuum", "clean", "run"),
    "HassVacuumReturnToBase": ("return", "dock", "base", "home", "send", "stop"),
    "HassBroadcast": ("broadcast", "announce", "tell", "say"),
}
_SYNONYMS = {"light": ("lamp", "lights"), "tv": ("television",)}


def grounding(intent: str) -> Grounding:
    return Grounding(
        verbs=_VERBS.get(intent, ()), targets=("name", "area", "floor"), synonyms=_SYNONYMS
    )


def home_context(intents: HomeIntents) -> Callable[[str, str | None], str | None]:
    """The per-request context hook: remembers the speaker's area for the handlers and lists
    the devices that match the request (the model cannot infer domain/state from words)."""

    def context(request: str, area: str | None) -> str:
        intents.speaker_area = area
        return context_block(request, area, intents.backend.inventory)

    return context


def _with_speech(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Add a short spoken reply to an action's result, as HA's intents answer."""

    def speak(**args: Any) -> Any:
        result = handler(**args)
        if isinstance(result, dict) and "done" in result and "speech" not in result:
            names = [str(e.get("name")) for e in result.get("entities", []) if isinstance(e, dict)]
            done = str(result.get("done", "done"))
            result["speech"] = f"{done.capitalize()}: {', '.join(names)}" if names else done
        return result

    return speak


def home_toolset(
    inventory: Inventory | None = None,
    state_path: str | Path | None = None,
    backend: HomeBackend | None = None,
    speaker_area: str | None = None,
) -> Toolset:
    """The home toolset on `backend`, or on a simulated home of `inventory` (default: HA's
    test home) persisted to `state_path` (in memory if None)."""
    home = backend or SimulatedHome(inventory, state_path)
    intents = HomeIntents(home, speaker_area)
    table = {name: _with_speech(fn) for name, fn in handlers(intents).items()}
    tools = [
        Tool.from_schema(
            name,
            " ".join(str(info["description"]).split()),
            parameters(name),
            handler=table[name],
            effect=effect_rule(name, intents),
            timeout_s=2.0,
            grounding=grounding(name),
        )
        for name, info in intent_definitions().items()
    ]
    return Toolset(
        "home",
        tools,
        description="Smart home (Home Assistant intents)",
        prompt=PROMPT,
        context=home_context(intents),
    )


def toolset() -> Toolset:
    """The registry's default: Home Assistant's test home, in memory."""
    return home_toolset()
