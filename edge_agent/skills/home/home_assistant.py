"""A real Home Assistant as the `home` toolset's backend.

The home is read from HA itself: states from `GET /api/states` (re-read when older than
`state_ttl_s`, and after every action), areas, floors (2024.4+), devices and the entity
registry with its aliases over the websocket (re-read every `registry_ttl_s`, and after HA was
unreachable). Calls run through HA so its own semantics apply: the intents this HA release
registers go to its intent API (`POST /api/intent/handle`), the rest become service calls
(`POST /api/services/<domain>/<service>`). Voice timers stay on the device, as an Assist
satellite keeps its own (HA 2024.1 has none).

When HA is down, restarting or refuses the token, each call fails with a typed tool error and
the next one tries again; reads for the prompt keep the last inventory read (or an empty one)
so a turn never hangs on a dead home.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from edge_agent.errors import EdgeAgentError, HomeTargetError, HomeUnavailableError
from edge_agent.skills.home.backend import HomeBackend, Target, resolve
from edge_agent.skills.home.hass_client import HassClient
from edge_agent.skills.home.intents import state_answer
from edge_agent.skills.home.inventory import Area, Entity, Floor, Inventory, MediaItem, Timer

logger = logging.getLogger(__name__)

# Intents Home Assistant 2024.1.6 registers that our toolset has (read from its source):
# homeassistant/components/{intent,light,weather,shopping_list,todo}/. HassClimateGetTemperature
# is registered too, but its answer names no entity, so it is read from the states instead.
HA_INTENTS = {
    "HassTurnOn", "HassTurnOff", "HassGetState", "HassNevermind", "HassLightSet",
    "HassGetWeather", "HassShoppingListAddItem", "HassListAddItem",
}  # fmt: skip
# ...of which these act on "name" or "area" and refuse a call naming neither (HA answers 500)
_TARGETED = {"HassTurnOn", "HassTurnOff", "HassGetState", "HassLightSet"}
_DONE = {
    "HassTurnOn": "turned on", "HassTurnOff": "turned off", "HassLightSet": "light set",
    "HassShoppingListAddItem": "add_item", "HassListAddItem": "add_item",
}  # fmt: skip
_REGISTRY_COMMANDS = [
    {"type": "config/area_registry/list"},
    {"type": "config/device_registry/list"},
    {"type": "config/entity_registry/list"},
    {"type": "config/floor_registry/list"},  # unknown before 2024.4: no floors
]


class HomeAssistantHome(HomeBackend):
    """The home as a real Home Assistant at `url` sees it, acted on through HA."""

    def __init__(
        self,
        url: str,
        token: SecretStr,
        *,
        timeout_s: float = 3.0,
        state_ttl_s: float = 1.0,
        registry_ttl_s: float = 300.0,
        retry_after_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,  # seam: error-path tests only
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = HassClient(url, token, timeout_s, transport)
        self.state_ttl_s = state_ttl_s
        self.registry_ttl_s = registry_ttl_s
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._lock = threading.RLock()  # tool handlers run in worker threads
        self._registry: dict[str, Any] | None = None
        self._registry_at = -float("inf")
        self._states_at = -float("inf")
        self._home: Inventory | None = None
        self._error: HomeUnavailableError | None = None
        self._failed_at = -float("inf")
        self._timers: list[Timer] = []

    @property
    def url(self) -> str:
        return self.client.url

    def close(self) -> None:
        """Close the HTTP connections (the websocket is never left open)."""
        self.client.close()

    # --- reading the home ---------------------------------------------------------------------

    @property
    def inventory(self) -> Inventory:
        """The home as last read; re-read when stale. Never raises: while HA is unreachable
        it is the last inventory read (empty before the first), tried again after
        `retry_after_s`."""
        with self._lock:
            try:
                self._refresh()
            except HomeUnavailableError as exc:
                logger.warning("reading the home: %s", exc)
            return self._home or Inventory(timers=list(self._timers))

    def read(self) -> Inventory:
        """The home read from HA now; raises `HomeUnavailableError` if HA does not answer."""
        with self._lock:
            self._refresh(force=True)
            assert self._home is not None
            return self._home

    @property
    def error(self) -> HomeUnavailableError | None:
        """Why the last read failed, while it stays failed."""
        return self._error

    def resolve(self, target: Target, speaker_area: str | None = None) -> list[Entity]:
        home = self.inventory
        if self._home is None and self._error is not None:
            raise self._error  # never read: "nothing matches" would be a lie
        return resolve(home, target, speaker_area)

    def _refresh(self, force: bool = False) -> None:
        now = self._clock()
        if not force and self._error is not None and now - self._failed_at < self.retry_after_s:
            raise self._error
        stale_states = force or self._home is None or now - self._states_at >= self.state_ttl_s
        try:
            if force or self._registry is None or now - self._registry_at >= self.registry_ttl_s:
                self._registry = self._read_registry()
                self._registry_at, stale_states = now, True
            if stale_states:
                states = self.client.get_json("/api/states")
                self._home = build_inventory(self._registry, states, self._timers)
                self._states_at = now
        except HomeUnavailableError as exc:
            self._error, self._failed_at = exc, now
            self._registry_at = -float("inf")  # HA may have restarted with another registry
            raise
        self._error = None

    def _read_registry(self) -> dict[str, Any]:
        areas, devices, entries, floors = self.client.websocket(_REGISTRY_COMMANDS)
        ids = [e["entity_id"] for e in entries or [] if not e.get("disabled_by")]
        # the list leaves aliases out; get_entries has them (extended entries)
        (extended,) = self.client.websocket(
            [{"type": "config/entity_registry/get_entries", "entity_ids": ids}]
        )
        return {
            "areas": areas or [],
            "devices": devices or [],
            "floors": floors or [],
            "entities": {k: v for k, v in (extended or {}).items() if v},
        }

    def _changed(self, entity_ids: list[str]) -> list[Entity]:
        """The entities' states after an action (read again from HA)."""
        with self._lock:
            self._error, self._states_at = None, -float("inf")  # HA just answered
            with contextlib.suppress(HomeUnavailableError):  # it acted, then went away
                self._refresh()
            home = self._home or Inventory()
        return [e for eid in entity_ids if (e := home.entity(eid)) is not None]

    # --- acting through HA --------------------------------------------------------------------

    def handle_intent(
        self, intent: str, slots: dict[str, Any], speaker_area: str | None = None
    ) -> dict[str, Any] | None:
        """Run the intent through HA's intent API; None when this release cannot take the call
        (not registered, a slot HA does not know, no name or area), so the caller runs it as
        service calls instead."""
        slots = {k: v for k, v in slots.items() if v is not None}
        if intent not in HA_INTENTS or "floor" in slots:
            return None
        slots = self._with_speaker_area(slots, speaker_area)
        if intent in _TARGETED and not (slots.get("name") or slots.get("area")):
            return None
        response = self.client.request(
            "POST", "/api/intent/handle", {"name": intent, "data": slots}
        )
        if response.status_code == 500:  # UnknownIntent / InvalidSlotInfo: HA cannot take it
            logger.info("Home Assistant could not take %s %s; using services", intent, slots)
            return None
        if response.status_code != 200:
            raise HomeTargetError(f"Home Assistant refused {intent} ({response.status_code})")
        answer = response.json()
        if _cannot_serve(answer):  # HA found the target, but its intent has no service for it
            logger.info("Home Assistant's %s cannot act on %s; using services", intent, slots)
            return None
        return self._intent_result(intent, slots, answer)

    def _with_speaker_area(self, slots: dict[str, Any], speaker_area: str | None) -> dict[str, Any]:
        """HA 2024.1's intent API knows no satellite area: name it when it narrows the call
        (two "Ceiling light"s, one here), as the simulated home resolves."""
        if not speaker_area or slots.get("area") or not slots.get("name"):
            return slots
        target = Target(name=slots["name"], domain=_as_list(slots.get("domain")))
        try:
            everywhere = resolve(self.inventory, target)
            here = resolve(self.inventory, target.model_copy(update={"area": speaker_area}))
        except EdgeAgentError:
            return slots
        return slots | {"area": speaker_area} if len(here) < len(everywhere) else slots

    def _intent_result(
        self, intent: str, slots: dict[str, Any], answer: dict[str, Any]
    ) -> dict[str, Any]:
        data = answer.get("data") or {}
        speech = ((answer.get("speech") or {}).get("plain") or {}).get("speech") or ""
        ids = [t["id"] for t in data.get("success") or [] if t.get("type") == "entity"]
        failed = [t.get("name") for t in data.get("failed") or []]
        # an IntentHandleError comes back as 200 with its message as the only speech
        if answer.get("response_type") == "error" or (speech and not data.get("success")):
            raise HomeTargetError(
                f"Home Assistant: {speech or data.get('code')}{self._hint(slots)}"
            )
        if intent == "HassNevermind":
            return {"done": "nothing"}
        changed = self._changed(ids)
        if intent == "HassGetState":
            return state_answer(changed, self.inventory, slots.get("state"))
        if intent == "HassGetWeather":
            (weather, *_) = changed or self.resolve(
                Target(name=slots.get("name"), domain=["weather"])
            )
            return {"name": weather.name, "condition": weather.state,
                    "temperature": weather.attributes.get("temperature")}  # fmt: skip
        result: dict[str, Any] = {"done": _DONE.get(intent, intent)}
        if "item" in slots:
            result |= {"list": slots.get("name", "Shopping List"), "item": slots["item"]}
        result["entities"] = [{"name": e.name, "state": e.state} for e in changed]
        if failed:
            result["failed"] = failed
        if speech:
            result["speech"] = speech
        return result

    def _hint(self, slots: dict[str, Any]) -> str:
        """What the home has instead, when the names a refused call used match nothing here
        (HA's own message lists no candidates, and the model needs them to try again)."""
        target = Target(
            name=slots.get("name"), area=slots.get("area"), domain=_as_list(slots.get("domain"))
        )
        try:
            resolve(self.inventory, target)
        except HomeTargetError as exc:
            return f" ({exc})"
        return ""

    def call_service(
        self, domain: str, service: str, entity_ids: list[str], data: dict[str, Any] | None = None
    ) -> list[Entity]:
        body = {"entity_id": entity_ids, **ha_service_data(domain, service, data or {})}
        response = self.client.request("POST", f"/api/services/{domain}/{service}", body)
        if response.status_code == 400:
            raise HomeTargetError(
                f"Home Assistant refused {domain}.{service} for {', '.join(entity_ids)}: "
                "the service or its data does not fit these entities"
            )
        if response.status_code != 200:
            raise HomeTargetError(f"Home Assistant answered {response.status_code} to "
                                  f"{domain}.{service}")  # fmt: skip
        return self._changed(entity_ids)

    def search_media(self, query: str, media_class: str | None = None) -> MediaItem | None:
        # HA 2024.1 has no media search: the player is asked for the query itself
        return MediaItem(title=query, media_class=media_class)

    # --- voice timers: kept on the device ----------------------------------------------------

    def timers(self) -> list[Timer]:
        return list(self._timers)

    def put_timer(self, timer: Timer) -> Timer:
        with self._lock:
            self._timers[:] = [t for t in self._timers if t.id != timer.id] + [timer]
        return timer

    def remove_timer(self, timer_id: str) -> None:
        with self._lock:
            self._timers[:] = [t for t in self._timers if t.id != timer_id]


def ha_service_data(domain: str, service: str, data: dict[str, Any]) -> dict[str, Any]:
    """The toolset's service data in HA's terms: the intents name a media class, HA's
    `play_media` takes it as `media_content_type`."""
    data = dict(data)
    if "media_class" in data:
        data["media_content_type"] = data.pop("media_class")
    return data


def build_inventory(
    registry: dict[str, Any] | None, states: list[dict[str, Any]], timers: list[Timer]
) -> Inventory:
    """HA's registries and states as the toolset's `Inventory` (what the simulator reads)."""
    registry = registry or {}
    entries: dict[str, Any] = registry.get("entities") or {}
    devices = {d["id"]: d for d in registry.get("devices") or []}
    entities = []
    for state in states:
        entry = entries.get(state["entity_id"]) or {}
        if entry.get("entity_category"):  # diagnostic/config entities: HA's intents skip them
            continue
        entities.append(_entity(state, entry, devices))
    return Inventory(
        floors=[
            Floor(id=f["floor_id"], name=f["name"], aliases=sorted(f.get("aliases") or []))
            for f in registry.get("floors") or []
        ],
        areas=[
            Area(
                id=a["area_id"],
                name=a["name"],
                floor=a.get("floor_id"),
                aliases=sorted(a.get("aliases") or []),
            )  # fmt: skip
            for a in registry.get("areas") or []
        ],
        entities=entities,
        timers=list(timers),
    )


def _entity(state: dict[str, Any], entry: dict[str, Any], devices: dict[str, Any]) -> Entity:
    attributes = dict(state.get("attributes") or {})
    object_id = state["entity_id"].split(".", 1)[-1]
    device = devices.get(str(entry.get("device_id"))) or {}
    return Entity(
        id=state["entity_id"],
        name=str(attributes.get("friendly_name") or object_id.replace("_", " ")),
        aliases=sorted(entry.get("aliases") or []),
        area=entry.get("area_id") or device.get("area_id"),
        device=device.get("name_by_user") or device.get("name"),
        state=str(state.get("state", "")),
        attributes=attributes,
    )


def _cannot_serve(answer: dict[str, Any]) -> bool:
    """HA 2024.1's turn on/off of a domain with neither turn_on nor an intent of its own (a
    valve: open_valve): the toolset's handler names the domain's service instead."""
    speech = str(((answer.get("speech") or {}).get("plain") or {}).get("speech") or "")
    no_success = not (answer.get("data") or {}).get("success")
    return no_success and (speech.startswith("Failed to call") or "does not support" in speech)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]
