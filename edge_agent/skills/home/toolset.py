"""The ``home`` toolset: one tool per Home Assistant intent, acting on a `HomeBackend`.

Tool names are intent names and argument names are slot names (from the vendored
`intents.yaml`, in its order), so a call can be scored against the HA test sentences directly.
Types narrow what HA defines: percentages are integers 0-100, durations non-negative integers,
domain / device_class / state / media_class enums of Home Assistant's values. The effect of a
call depends on what it resolves to: turning on or off a lock, a valve, an alarm or a garage
door, gate or door cover is dangerous.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_agent.errors import HomeTargetError, HomeUnavailableError
from edge_agent.skills.home.backend import HomeBackend, fold
from edge_agent.skills.home.dataset import intent_definitions
from edge_agent.skills.home.intents import (
    ACTS_ON,
    ACTS_ON_DOMAIN,
    DANGEROUS_COVERS,
    DANGEROUS_DOMAINS,
    HomeIntents,
    is_dangerous,
)
from edge_agent.skills.home.inventory import Area, Entity, Floor, Inventory
from edge_agent.skills.home.retrieve import context_block
from edge_agent.skills.home.simulated import SimulatedHome
from edge_agent.skills.home.steps import home_splitter
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
    except (HomeTargetError, HomeUnavailableError):  # judge what it asked for
        named = {str(args.get("domain")), str(args.get("device_class"))}
        risky = named & (DANGEROUS_DOMAINS | DANGEROUS_COVERS)
        return Effect.DANGEROUS if risky else Effect.ACTUATING
    return Effect.DANGEROUS if any(map(is_dangerous, entities)) else Effect.ACTUATING


# --- grounding: what a request must say for an actuating call to count as asked for ---------
# A word of the call's direction and none of the other's: "turn", "switch" say neither, and
# nouns ("timer", "list") name the object, not what to do with it (policy.grounding_problem).

_ON = ("on", "open", "activate", "enable", "start", "up", "raise", "illuminate")
_OFF = ("off", "close", "shut", "deactivate", "disable", "stop", "out", "lower")
_SET = ("set", "change", "make", "adjust")
_PAUSE = ("pause", "hold", "freeze", "stop")
_RESUME = ("resume", "unpause", "continue", "restart")
_MORE = ("add", "increase", "extend", "more", "longer")
_LESS = ("remove", "decrease", "subtract", "less", "take", "shorten", "reduce")
_CANCEL = ("cancel", "stop", "delete", "remove", "end")
_ADD = ("add", "put", "buy", "need")
_DONE = ("complete", "check", "remove", "done", "cross", "bought", "delete", "tick")
_NEXT = ("next", "skip", "forward")
_BACK = ("previous", "back", "last", "replay", "prior", "again")
_PLAY = ("resume", "unpause", "continue", "play")
_VOLUME = ("volume", "turn", "increase", "decrease", "raise", "lower", "louder", "quieter")
_POSITION = ("open", "close", "raise", "lower", "move", "increase", "decrease")

# intent -> (verbs: one must be said; opposites: none may be)
_DIRECTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # "lock" is no opposite: "unlock all locks" says both, and a lock call is confirmed anyway
    "HassTurnOn": ((*_ON, "lock", "run", "transition", "change"), _OFF),
    "HassTurnOff": ((*_OFF, "unlock"), _ON),
    "HassSetPosition": ((*_SET, *_POSITION), ()),
    "HassLightSet": ((*_SET, "turn", "dim", "brighten", "brightness", "color"), ()),
    "HassClimateSetTemperature": ((*_SET, "heat", "cool", "warm"), ()),
    "HassSetVolume": ((*_SET, *_VOLUME, "up", "down"), ()),
    "HassStartTimer": (("timer", "set", "start", "create", "remind", "countdown"),
                       (*_CANCEL, *_PAUSE, *_RESUME, *_MORE, *_LESS)),
    "HassCancelTimer": (_CANCEL, ()),
    "HassCancelAllTimers": (_CANCEL, ()),
    "HassIncreaseTimer": (_MORE, _LESS),
    "HassDecreaseTimer": (_LESS, _MORE),
    "HassPauseTimer": (_PAUSE, _RESUME),
    "HassUnpauseTimer": (_RESUME, _PAUSE),
    "HassMediaPause": (_PAUSE, _PLAY),
    "HassMediaUnpause": (_PLAY, _PAUSE),
    "HassMediaNext": (_NEXT, _BACK),
    "HassMediaPrevious": (_BACK, _NEXT),
    "HassMediaSearchAndPlay": (("play", "put", "start", "listen", "watch"), ("pause", "stop")),
    "HassShoppingListAddItem": (_ADD, _DONE),
    "HassListAddItem": (_ADD, _DONE),
    "HassShoppingListCompleteItem": (_DONE, _ADD),
    "HassListCompleteItem": (_DONE, _ADD),
    "HassVacuumStart": (("start", "clean", "vacuum", "run", "hoover"), ("return", "dock", "stop")),
    "HassVacuumReturnToBase": (("return", "dock", "send", "stop"), ("start", "clean")),
    "HassBroadcast": (("broadcast", "announce", "tell", "say"), ()),
}  # fmt: skip

# What the call acts on, which the request must name: the words of each given value.
_DEVICE = ("name", "area", "floor")
_TIMER = ("name", "area")
_TARGETS: dict[str, tuple[str, ...]] = {
    "HassLightSet": (*_DEVICE, "color"),
    "HassMediaSearchAndPlay": ("name", "area", "search_query"),
    "HassStartTimer": ("name", "conversation_command"),
    **{t: _TIMER for t in ("HassCancelAllTimers", "HassCancelTimer", "HassPauseTimer")},
    **{t: _TIMER for t in ("HassUnpauseTimer", "HassIncreaseTimer", "HassDecreaseTimer")},
    **{t: ("item",) for t in ("HassShoppingListAddItem", "HassShoppingListCompleteItem")},
    **{t: ("item", "name") for t in ("HassListAddItem", "HassListCompleteItem")},
    "HassBroadcast": ("message",),
}
_STARTS = ("start_hours", "start_minutes", "start_seconds")
_DURATION = ("hours", "minutes", "seconds")
_VALUES: dict[str, tuple[str, ...]] = {
    "HassLightSet": ("brightness",),
    "HassSetPosition": ("position",),
    "HassSetVolume": ("volume_level",),
    "HassClimateSetTemperature": ("temperature",),
    "HassStartTimer": _DURATION,  # "timer" is its verb only with the duration said
    **{t: _STARTS for t in ("HassCancelTimer", "HassPauseTimer", "HassUnpauseTimer")},
    **{t: (*_DURATION, *_STARTS) for t in ("HassIncreaseTimer", "HassDecreaseTimer")},
}

_NUMBERS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
]  # fmt: skip
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "light": ("lamp", "lights"),
    "tv": ("television",),
    **{str(i): (word,) for i, word in enumerate(_NUMBERS)},
    **{str(20 + 10 * i): (word,) for i, word in enumerate(_TENS)},
    "1": ("one", "min", "minimum", "lowest"),
    "30": ("thirty", "half"),
    "50": ("fifty", "half"),
    "100": ("hundred", "max", "maximum", "highest", "full"),
}
# Words a request uses for a kind of device (a domain or device class) its name lacks.
_KIND_WORDS: dict[str, tuple[str, ...]] = {
    "light": ("lamp", "lighting", "illuminate", "bulb"),
    "switch": ("plug", "outlet", "socket"),
    "outlet": ("plug", "socket"),
    "cover": ("curtain", "blind", "shade", "shutter", "window", "garage", "door", "awning"),
    "lock": ("door", "deadbolt"),
    "valve": ("water", "gas"),
    "climate": ("thermostat", "heating", "heat", "temperature", "temp", "ac", "air"),
    "media_player": ("tv", "television", "speaker", "music", "radio", "player", "stereo"),
    "tv": ("television",),
    "scene": ("mode",),
    "script": ("mode", "routine"),
    "vacuum": ("robot", "hoover"),
}


def grounding(intent: str, intents: HomeIntents | None = None) -> Grounding:
    """What a request must say for a call of `intent`, and how far the call reaches."""
    verbs, opposites = _DIRECTIONS.get(intent, ((), ()))
    return Grounding(
        verbs=verbs,
        opposites=opposites,
        targets=_TARGETS.get(intent, _DEVICE),
        kinds=("domain", "device_class"),
        values=_VALUES.get(intent, ()),
        synonyms=_SYNONYMS,
        aliases=_aliases(intents) if intents else None,
        reach=reach_rule(intent, intents) if intents else None,
    )


def _aliases(intents: HomeIntents) -> Callable[[str, str], list[str]]:
    """Other names of a call's value: the home's aliases of a device, area or floor."""

    def aliases(key: str, value: str) -> list[str]:
        if key in ("domain", "device_class"):
            return list(_KIND_WORDS.get(value, ()))
        home = intents.backend.inventory
        places: dict[str, Sequence[Floor | Area | Entity]] = {
            "area": home.areas, "floor": home.floors, "name": home.entities,
        }  # fmt: skip
        named = [
            p for p in places.get(key, ()) if fold(value) in {fold(p.name), *map(fold, p.aliases)}
        ]
        return [alias for p in named for alias in (p.name, *p.aliases)]

    return aliases


# How many entities a call acts on (the policy confirms a call that reaches too far).
def reach_rule(intent: str, intents: HomeIntents) -> Callable[[Mapping[str, Any]], int | None]:
    """The reach hook of an intent's tool: None for a call that names no target at all."""
    if intent in ACTS_ON:
        domains = ACTS_ON[intent]
        return lambda args: intents.reach(dict(args), domains) if _names_any(args) else None
    if intent in ACTS_ON_DOMAIN:
        return lambda args: intents.reach(dict(args), domain=ACTS_ON_DOMAIN[intent])
    if intent == "HassCancelAllTimers":
        return lambda args: intents.timers_reach(dict(args)) if args.get("area") else None
    return lambda args: 1  # one timer, one list item, one message


def _names_any(args: Mapping[str, Any]) -> bool:
    named = fold(str(args.get("name") or "all")) != "all"
    return named or any(args.get(k) for k in ("area", "floor", "domain", "device_class"))


def home_context(intents: HomeIntents) -> Callable[[str, str | None], str | None]:
    """The per-request context hook: remembers the speaker's area for the handlers and lists
    the devices that match the request (the model cannot infer domain/state from words)."""

    def context(request: str, area: str | None) -> str:
        intents.speaker_area = area
        intents.request = request  # "all"/"every" said, or a vague target to ask about
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
    timeout_s: float = 2.0,
) -> Toolset:
    """The home toolset on `backend`, or on a simulated home of `inventory` (default: HA's
    test home) persisted to `state_path` (in memory if None). `timeout_s` bounds each call."""
    home = backend or SimulatedHome(inventory, state_path)
    intents = HomeIntents(home, speaker_area)
    table = {
        name: _with_speech(intents.through_backend(name, fn))
        for name, fn in handlers(intents).items()
    }
    tools = [
        Tool.from_schema(
            name,
            " ".join(str(info["description"]).split()),
            parameters(name),
            handler=table[name],
            effect=effect_rule(name, intents),
            timeout_s=timeout_s,
            grounding=grounding(name, intents),
        )
        for name, info in intent_definitions().items()
    ]
    return Toolset(
        "home",
        tools,
        description="Smart home (Home Assistant intents)",
        prompt=PROMPT,
        context=home_context(intents),
        split=home_splitter(lambda: home.inventory),
    )


def toolset() -> Toolset:
    """The registry's default: Home Assistant's test home, in memory."""
    return home_toolset()
